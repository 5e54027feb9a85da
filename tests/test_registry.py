"""Registry of known checkpoints and `resolve_checkpoint` (no network: downloads are recorded, not made)."""

from __future__ import annotations

import json
import re

import pytest

from stylegan_disentangle.checkpoints import registry
from stylegan_disentangle.checkpoints.download import cache_path_for_url
from stylegan_disentangle.checkpoints.registry import (
    FLAVOURS,
    KnownCheckpoint,
    get_checkpoint_info,
    known_checkpoints,
    resolve_checkpoint,
)
from stylegan_disentangle.errors import CheckpointError

ADA = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/"
NGC = "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan2/versions/1/files/"


def _raw_records() -> list[dict]:
    return json.loads(registry.REGISTRY_FILE.read_text())["checkpoints"]


def test_every_entry_is_well_formed():
    for rec in _raw_records():
        assert (rec.get("url") is None) != (rec.get("package_file") is None), rec["name"]
        if rec.get("url") is not None:
            assert rec["url"].startswith("https://") and rec["url"].endswith(".pkl"), rec["name"]
        assert rec["flavour"] in FLAVOURS
        res = rec["resolution"]
        assert isinstance(res, int) and res >= 4 and res & (res - 1) == 0, rec["name"]
        assert isinstance(rec["c_dim"], int) and rec["c_dim"] >= 0
        assert rec["description"].strip()
        assert rec["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", rec["sha256"]), rec["name"]


def test_names_are_unique_and_all_load():
    names = [rec["name"] for rec in _raw_records()]
    assert len(names) == len(set(names))
    assert list(known_checkpoints()) == names


def test_official_sets_are_present_with_their_urls_and_resolutions():
    known = known_checkpoints()
    ada = {"ffhq": 1024, "metfaces": 1024, "afhqcat": 512, "afhqdog": 512, "afhqwild": 512, "cifar10": 32,
           "brecahad": 512}
    for name, res in ada.items():
        assert known[name].url == f"{ADA}{name}.pkl" and known[name].resolution == res
        assert known[name].flavour == "sg2ada"
    sg3_files = ["stylegan2-ffhq-1024x1024", "stylegan2-ffhqu-1024x1024", "stylegan2-ffhq-512x512",
                 "stylegan2-ffhq-256x256", "stylegan2-ffhqu-256x256", "stylegan2-metfaces-1024x1024",
                 "stylegan2-metfacesu-1024x1024", "stylegan2-afhqv2-512x512", "stylegan2-celebahq-256x256",
                 "stylegan2-lsundog-256x256", "stylegan2-brecahad-512x512", "stylegan2-cifar10-32x32"]
    for name in sg3_files:
        entry = known[name]
        assert entry.url == f"{NGC}{name}.pkl" and entry.flavour == "sg3"
        assert entry.resolution == int(re.search(r"-(\d+)x\1$", name).group(1))
    assert known["cifar10"].c_dim == 10 and known["stylegan2-cifar10-32x32"].c_dim == 10
    assert known["ffhq"].c_dim == 0


def test_records_are_frozen():
    entry = get_checkpoint_info("ffhq")
    with pytest.raises(AttributeError):
        entry.resolution = 256


def test_lookup_is_case_insensitive():
    assert get_checkpoint_info("FFHQ") == get_checkpoint_info(" ffhq ") == known_checkpoints()["ffhq"]


def test_unknown_name_lists_close_matches():
    with pytest.raises(CheckpointError) as info:
        get_checkpoint_info("ffhq-1024x1024")
    message = str(info.value)
    assert "'ffhq-1024x1024'" in message and "stylegan2-ffhq-1024x1024" in message
    assert "list-checkpoints" in message


@pytest.mark.parametrize(
    "bad, problem",
    [
        (dict(flavour="sg4"), "flavour"),
        (dict(resolution=300), "power of two"),
        (dict(url="http://example.com/a.pkl"), "https"),
        (dict(url=None), "exactly one"),
        (dict(package_file="../outside.pkl", url=None), "inside the package"),
        (dict(sha256="abc"), "sha256"),
        (dict(name="Bad Name"), "name"),
    ],
)
def test_malformed_records_are_rejected(bad, problem):
    fields = dict(name="x", flavour="sg2ada", resolution=256, c_dim=0, description="d", url="https://e.com/x.pkl")
    fields.update(bad)
    with pytest.raises(CheckpointError, match=problem):
        KnownCheckpoint(**fields)


def test_registry_file_with_duplicate_names_is_rejected(tmp_path, monkeypatch):
    rec = dict(name="a", flavour="sg3", resolution=64, c_dim=0, description="d", url="https://e.com/a.pkl", sha256=None)
    bad = tmp_path / "reg.json"
    bad.write_text(json.dumps({"format_version": 1, "checkpoints": [rec, rec]}))
    monkeypatch.setattr(registry, "REGISTRY_FILE", bad)
    with pytest.raises(CheckpointError, match=r"reg\.json.*twice"):
        known_checkpoints()


def test_resolve_existing_local_path(tmp_path):
    pkl = tmp_path / "net.pkl"
    pkl.write_bytes(b"data")
    assert resolve_checkpoint(pkl) == pkl
    assert resolve_checkpoint(str(pkl)) == pkl


def test_local_file_wins_over_a_registry_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ffhq").write_bytes(b"mine")
    assert resolve_checkpoint("ffhq").read_bytes() == b"mine"


def test_resolve_missing_path_names_it_and_hints_at_list(tmp_path):
    missing = tmp_path / "nope" / "net.pkl"
    with pytest.raises(CheckpointError) as info:
        resolve_checkpoint(missing)
    assert str(missing) in str(info.value) and "list-checkpoints" in str(info.value)


def test_resolve_directory_is_an_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a file"):
        resolve_checkpoint(tmp_path)


def test_resolve_misspelt_name_suggests_the_right_one():
    with pytest.raises(CheckpointError, match="'metfaces'"):
        resolve_checkpoint("metface")


class _RecordingDownload:
    """Stands in for download_file: records the arguments, returns the would-be cache path."""

    def __init__(self):
        self.calls = []

    def __call__(self, url, *, cache_dir=None, sha256=None, progress=None):
        self.calls.append(dict(url=url, cache_dir=cache_dir, sha256=sha256, progress=progress))
        return cache_path_for_url(url, cache_dir)


def test_resolve_name_downloads_with_the_recorded_sha256(tmp_path, monkeypatch):
    fake = _RecordingDownload()
    monkeypatch.setattr(registry, "download_file", fake)
    entry = get_checkpoint_info("ffhq")
    path = resolve_checkpoint("ffhq", cache_dir=tmp_path, progress=False)
    assert fake.calls == [dict(url=entry.url, cache_dir=tmp_path, sha256=entry.sha256, progress=False)]
    assert path == entry.local_path(tmp_path)


def test_resolve_url_downloads_without_a_checksum(tmp_path, monkeypatch):
    fake = _RecordingDownload()
    monkeypatch.setattr(registry, "download_file", fake)
    url = "https://example.com/some/net.pkl"
    resolve_checkpoint(url, cache_dir=tmp_path)
    assert fake.calls == [dict(url=url, cache_dir=tmp_path, sha256=None, progress=None)]


def test_package_file_entries_resolve_inside_the_package(tmp_path, monkeypatch):
    records = [
        dict(name="shipped", flavour="synthetic", resolution=64, c_dim=0, description="d",
             package_file="checkpoints/known_checkpoints.json", sha256=None),
        dict(name="lost", flavour="synthetic", resolution=64, c_dim=0, description="d",
             package_file="synthetic/data/does-not-exist.pkl", sha256=None),
    ]
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"format_version": 1, "checkpoints": records}))
    monkeypatch.setattr(registry, "REGISTRY_FILE", reg)
    shipped = resolve_checkpoint("shipped")
    assert shipped.samefile(registry.PACKAGE_ROOT / "checkpoints" / "known_checkpoints.json")
    assert get_checkpoint_info("shipped").is_available()
    with pytest.raises(CheckpointError, match="does-not-exist.pkl.*reinstall"):
        resolve_checkpoint("lost")


def test_is_available_reflects_the_cache(tmp_path):
    entry = get_checkpoint_info("cifar10")
    assert not entry.is_available(tmp_path)
    entry.local_path(tmp_path).write_bytes(b"x")
    assert entry.is_available(tmp_path)


def test_cli_list_checkpoints_table_marks_cached_entries(tmp_path):
    from click.testing import CliRunner

    from stylegan_disentangle.cli import main

    get_checkpoint_info("metfaces").local_path(tmp_path).write_bytes(b"x")
    result = CliRunner().invoke(main, ["list-checkpoints", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["name", "flavour", "res", "c_dim", "cached", "url"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(known_checkpoints())
    assert rows["metfaces"][1:5] == ["sg2ada", "1024", "0", "yes"]
    assert rows["ffhq"][4] == "no" and rows["ffhq"][5] == get_checkpoint_info("ffhq").url


def test_cli_list_checkpoints_json(tmp_path):
    from click.testing import CliRunner

    from stylegan_disentangle.cli import main

    result = CliRunner().invoke(main, ["list-checkpoints", "--json", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == list(known_checkpoints())
    ffhq = next(r for r in rows if r["name"] == "ffhq")
    assert ffhq["cached"] is False and ffhq["sha256"] == get_checkpoint_info("ffhq").sha256
    assert ffhq["local_path"] == str(get_checkpoint_info("ffhq").local_path(tmp_path))
