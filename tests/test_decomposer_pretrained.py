"""Official pretrained decomposers by name, by URL and as the official zip archive: downloaded from a local HTTP
server (conftest's `file_server`), extracted once into the cache, loaded with the registry's scalings; broken or
ambiguous archives are refused naming the archive."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import torch

from stylegan_disentangle.errors import CheckpointError
from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer, load_decomposer, load_unsup3d, pretrained
from stylegan_disentangle.labels.decomposer.pretrained import KnownDecomposer, known_decomposers

TINY = dict(image_size=32, nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)


def _checkpoint_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    dec = Unsup3DDecomposer(**TINY)
    dec.epoch = 30
    return dec.save(tmp_path / f"made{seed}.pth").read_bytes()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _same_weights(a: Unsup3DDecomposer, b: Unsup3DDecomposer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def _cache_files(cache: Path) -> list[Path]:
    return sorted(p for p in cache.rglob("*") if p.is_file())


def test_every_registry_entry_is_well_formed_and_its_scalings_build_a_decomposer():
    known = known_decomposers()
    assert {"unsup3d-celeba", "unsup3d-synface", "unsup3d-cat", "unsup3d-syncar"} <= set(known)
    for entry in known.values():
        assert entry.url.startswith("https://www.robots.ox.ac.uk/~vgg/research/unsup3d/data/pretrained_")
        assert entry.url.endswith(".zip") and entry.member.startswith("checkpoint")
        with torch.device("meta"):
            dec = Unsup3DDecomposer(nets=(), **entry.scalings)  # a misspelled scaling would raise here
        for key, value in entry.scalings.items():
            assert getattr(dec, key) == value
    assert known["unsup3d-cat"].scalings == {"z_translation_range": 0.1}
    assert known["unsup3d-syncar"].scalings == {"min_diff_light": 0.5}


@pytest.mark.parametrize("record, words", [
    (dict(url="http://example.org/a.zip"), "is not https"),
    (dict(member="../../etc/checkpoint030.pth"), "not a checkpoint file name"),
    (dict(name="Celeba"), "lower-case"),
    (dict(sha256="abc"), "64 lower-case hex"),
])
def test_a_bad_registry_record_is_refused(record, words):
    good = dict(name="x", url="https://example.org/a.zip", member="checkpoint030.pth", description="d")
    with pytest.raises(CheckpointError, match=words):
        KnownDecomposer(**{**good, **record})


def test_a_known_name_downloads_the_archive_once_and_loads_with_its_scalings(file_server, tmp_path, monkeypatch):
    data = _checkpoint_bytes(tmp_path)
    # as the `zip` tool writes an archive made on a Mac: a folder entry and AppleDouble shadows beside the file
    file_server.files["/pretrained_cat.zip"] = _zip({"pretrained_cat/": b"", "pretrained_cat/checkpoint100.pth": data,
                                                     "__MACOSX/pretrained_cat/._checkpoint100.pth": b"\x00\x05\x16",
                                                     "pretrained_cat/README.txt": b"notes"})
    real_download = pretrained.download_file
    official = known_decomposers()["unsup3d-cat"].url

    def local_download(url, **kwargs):  # the registry's https URL, served by the local server instead
        assert url == official
        return real_download(file_server.base + "/pretrained_cat.zip", **kwargs)

    monkeypatch.setattr(pretrained, "download_file", local_download)
    cache = tmp_path / "cache"
    dec = load_decomposer("unsup3d-cat", cache_dir=cache, progress=False)
    assert dec.z_translation_range == 0.1 and dec.epoch == 30
    assert _same_weights(dec, load_unsup3d(tmp_path / "made0.pth"))

    files = _cache_files(cache)
    extracted = [p for p in files if p.name.endswith("checkpoint100.pth")]
    assert len(extracted) == 1 and extracted[0].read_bytes() == data
    stamp = extracted[0].stat().st_mtime_ns
    again = load_decomposer("unsup3d-cat", cache_dir=cache, progress=False)
    assert _same_weights(dec, again)
    assert len(file_server.requests) == 1, "the second load must come from the cache"
    assert extracted[0].stat().st_mtime_ns == stamp, "the checkpoint is extracted once"


def test_an_url_of_a_zip_or_of_a_checkpoint_loads(file_server, tmp_path):
    data = _checkpoint_bytes(tmp_path)
    file_server.files["/a/pretrained_celeba.zip"] = _zip({"pretrained_celeba/checkpoint030.pth": data})
    file_server.files["/b/checkpoint030.pth"] = data
    want = load_unsup3d(tmp_path / "made0.pth")
    for path in ("/a/pretrained_celeba.zip", "/b/checkpoint030.pth"):
        dec = load_decomposer(file_server.base + path, cache_dir=tmp_path / "cache", progress=False)
        assert _same_weights(dec, want) and dec.z_translation_range == 0.0


def test_a_hand_downloaded_zip_loads_and_a_changed_one_is_extracted_again(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLEGAN_DISENTANGLE_CACHE", str(tmp_path / "cache"))
    archive = tmp_path / "pretrained_celeba.zip"
    archive.write_bytes(_zip({"pretrained_celeba/checkpoint030.pth": _checkpoint_bytes(tmp_path, seed=0)}))
    assert _same_weights(load_decomposer(archive), load_unsup3d(tmp_path / "made0.pth"))
    archive.write_bytes(_zip({"pretrained_celeba/checkpoint030.pth": _checkpoint_bytes(tmp_path, seed=1)}))
    assert _same_weights(load_decomposer(str(archive)), load_unsup3d(tmp_path / "made1.pth"))


def test_a_member_path_from_the_archive_never_decides_where_the_file_goes(tmp_path):
    archive = tmp_path / "in" / "evil.zip"
    archive.parent.mkdir()
    archive.write_bytes(_zip({"../../outside/checkpoint030.pth": _checkpoint_bytes(tmp_path)}))
    cache = tmp_path / "cache"
    path = pretrained.checkpoint_in_zip(archive, cache_dir=cache)
    assert path.parent == cache / "unsup3d" and path.name.endswith("checkpoint030.pth")
    assert not (tmp_path / "outside").exists()


@pytest.mark.parametrize("members, words", [
    ({"a/checkpoint010.pth": b"x", "a/checkpoint030.pth": b"y"}, r"exactly one checkpoint .* found 2; it holds "
                                                                 r"a/checkpoint010.pth, a/checkpoint030.pth"),
    ({"readme.txt": b"x"}, r"exactly one checkpoint .* found 0; it holds readme.txt"),
])
def test_an_archive_with_no_single_checkpoint_is_refused_listing_what_it_holds(tmp_path, members, words):
    archive = tmp_path / "many.zip"
    archive.write_bytes(_zip(members))
    with pytest.raises(CheckpointError, match=rf"many.zip: expected {words}"):
        load_decomposer(archive, cache_dir=tmp_path / "cache")


def test_a_truncated_archive_is_refused_naming_it_and_leaves_nothing_in_the_cache(tmp_path):
    whole = _zip({"pretrained_celeba/checkpoint030.pth": _checkpoint_bytes(tmp_path)})
    archive = tmp_path / "pretrained_celeba.zip"
    archive.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match=r"pretrained_celeba.zip: not a readable zip archive"):
        load_decomposer(archive, cache_dir=tmp_path / "cache")
    archive.write_bytes(whole[:-30] + whole[-30:].replace(b"PK", b"XX"))  # end record damaged
    with pytest.raises(CheckpointError, match=r"pretrained_celeba.zip"):
        load_decomposer(archive, cache_dir=tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


def test_a_damaged_member_is_refused_and_not_kept(tmp_path):
    data = _checkpoint_bytes(tmp_path)
    raw = bytearray(_zip({"checkpoint030.pth": data}))
    start = raw.index(b"checkpoint030.pth") + len("checkpoint030.pth") + 200
    raw[start:start + 64] = bytes(64)  # inside the deflated bytes: the CRC check fails
    archive = tmp_path / "bad.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"bad.zip"):
        load_decomposer(archive, cache_dir=tmp_path / "cache")
    assert _cache_files(tmp_path / "cache") == []


def test_the_official_reference_checkpoint_loads_from_its_zip(reference_dir, tmp_path):
    """The checkpoint the official trainer wrote (with its pickled metrics object), packed as the official archive."""
    ref = reference_dir / "unsup3d_small" / "checkpoint.pth"
    archive = tmp_path / "pretrained_small.zip"
    archive.write_bytes(_zip({"pretrained_small/checkpoint030.pth": ref.read_bytes()}))
    assert _same_weights(load_decomposer(archive, cache_dir=tmp_path / "cache"), load_unsup3d(ref))


def test_decompose_cli_takes_an_archive_url(file_server, tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from stylegan_disentangle.cli import main

    monkeypatch.setenv("STYLEGAN_DISENTANGLE_CACHE", str(tmp_path / "cache"))
    data = _checkpoint_bytes(tmp_path)
    file_server.files["/pretrained_small.zip"] = _zip({"pretrained_small/checkpoint030.pth": data})
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["decompose", "synthetic", "--seeds", "0-1", "--decomposer",
                                       file_server.base + "/pretrained_small.zip", "--outdir", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["seed"] for r in json.loads((out / "decomposition.json").read_text())["images"]] == [0, 1]


def test_list_decomposers_shows_every_name_and_which_archives_are_cached(tmp_path):
    import json

    from click.testing import CliRunner

    from stylegan_disentangle.checkpoints.download import cache_path_for_url
    from stylegan_disentangle.cli import main

    cached = cache_path_for_url(known_decomposers()["unsup3d-cat"].url, tmp_path)
    cached.write_bytes(b"an archive")
    result = CliRunner().invoke(main, ["list-decomposers", "--cache-dir", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == {"synthetic", *known_decomposers()}
    assert rows["synthetic"]["available"] and rows["unsup3d-cat"]["available"]
    assert not rows["unsup3d-celeba"]["available"] and rows["unsup3d-cat"]["scalings"] == {"z_translation_range": 0.1}
    table = CliRunner().invoke(main, ["list-decomposers", "--cache-dir", str(tmp_path)]).output
    line = next(row for row in table.splitlines() if row.startswith("unsup3d-cat "))
    assert " here " in line and "pretrained_cat.zip" in line


def test_an_error_page_saved_as_the_archive_is_removed_so_the_next_call_downloads_again(file_server, tmp_path):
    url = file_server.base + "/pretrained_celeba.zip"
    file_server.files["/pretrained_celeba.zip"] = b"<html>503 Service Unavailable</html>"
    cache = tmp_path / "cache"
    with pytest.raises(CheckpointError, match=r"not a readable zip archive.*removed from the cache"):
        load_decomposer(url, cache_dir=cache, progress=False)
    assert _cache_files(cache) == [] or all(p.suffix == ".lock" for p in _cache_files(cache))
    file_server.files["/pretrained_celeba.zip"] = _zip({"pretrained_celeba/checkpoint030.pth":
                                                        _checkpoint_bytes(tmp_path)})
    assert _same_weights(load_decomposer(url, cache_dir=cache, progress=False), load_unsup3d(tmp_path / "made0.pth"))


def test_code_in_a_checkpoint_inside_an_archive_is_refused_naming_the_archive(tmp_path):
    import os

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    dec = Unsup3DDecomposer(**TINY)
    state = {name: getattr(dec, name).state_dict() for name in dec.present_nets}
    torch.save({**state, "metrics_trace": Evil()}, tmp_path / "evil.pth")
    archive = tmp_path / "pretrained_evil.zip"
    archive.write_bytes(_zip({"pretrained_evil/checkpoint030.pth": (tmp_path / "evil.pth").read_bytes()}))
    with pytest.raises(CheckpointError, match=r"pretrained_evil\.zip: .*checkpoint030\.pth: refusing to load"):
        load_decomposer(archive, cache_dir=tmp_path / "cache")
    assert not marker.exists()
