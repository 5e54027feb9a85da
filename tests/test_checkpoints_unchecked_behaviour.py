"""Behaviour of the checkpoint reader / writer / registry / download cache and of the shared argument parsers that no
other test pins down (found by mutation testing): each test fails when the check it names is dropped or bent."""

from __future__ import annotations

import hashlib
import json
import os
import re

import click
import pytest
import torch

from stylegan_disentangle.checkpoints import download as dl
from stylegan_disentangle.checkpoints import load_network_pkl, registry, save_network_pkl
from stylegan_disentangle.checkpoints.download import cache_path_for_url, download_file
from stylegan_disentangle.checkpoints.registry import KnownCheckpoint, resolve_checkpoint
from stylegan_disentangle.checkpoints.writer import _OfficialLayoutPickler, describe_module
from stylegan_disentangle.errors import CheckpointError, DownloadError, UsageError
from tests.helpers import tiny_networks


def _dump(path, top):
    with open(path, "wb") as f:
        _OfficialLayoutPickler(f, protocol=4).dump(top)
    return path


def _module_state(described, dotted: str) -> dict:
    """The pickled `state` of the submodule at `dotted` (e.g. 'mapping.fc0') of a describe_module result."""
    for name in dotted.split(".") if dotted else []:
        described = described.meta["state"]["_modules"][name]
    return described.meta["state"]


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# --- rebuild.py -----------------------------------------------------------------------------------------------------

def test_an_unknown_persistence_format_version_is_refused_by_name(tmp_path):
    G = describe_module(tiny_networks("skip16")["G_ema"])
    G.meta["state"]["_modules"]["mapping"].meta["version"] = 5
    path = _dump(tmp_path / "old_format.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"old_format\.pkl: G_ema: persistence format version 5 is not "
                                              r"supported \(supported: \[6\]\)"):
        load_network_pkl(path)


def test_a_stylegan3_repo_generator_without_flat_arguments_is_told_by_its_synthesis_settings(tmp_path):
    """A StyleGAN3-repository Generator built with default synthesis options has no flat keyword arguments; its
    SynthesisNetwork's stored `num_fp16_res` (which StyleGAN2-ADA's never stores) still gives the flavour away."""
    from stylegan_disentangle.checkpoints.rebuild import detect_flavor
    from stylegan_disentangle.checkpoints.unpickler import restricted_load

    path = tmp_path / "net.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    with open(path, "rb") as f:
        G = restricted_load(f)["G_ema"]
    assert detect_flavor(G) == "sg2ada"  # synthesis_kwargs={...}: the StyleGAN2-ADA form
    G.state["_init_kwargs"] = {k: v for k, v in G.state["_init_kwargs"].items() if k != "synthesis_kwargs"}
    assert detect_flavor(G) == "sg2ada"  # named arguments only, nothing of the StyleGAN3 repository
    G.submodules["synthesis"].state["num_fp16_res"] = 4
    assert detect_flavor(G) == "sg3"


def test_non_persistent_buffers_in_a_file_are_skipped(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    state = _module_state(G, "mapping")
    state["_buffers"]["scratch"] = torch.zeros(3)
    state["_non_persistent_buffers_set"] = {"scratch"}
    loaded = load_network_pkl(_dump(tmp_path / "np.pkl", {"G_ema": G}))
    _same_weights(nets["G_ema"], loaded["G_ema"])


def test_a_tensor_of_the_wrong_shape_is_refused_by_name(tmp_path):
    nets = tiny_networks("skip16")
    G = describe_module(nets["G_ema"])
    expected = tuple(nets["G_ema"].mapping.fc0.weight.shape)
    _module_state(G, "mapping.fc0")["_parameters"]["weight"] = torch.nn.Parameter(torch.zeros(expected[0], 5))
    path = _dump(tmp_path / "shaped.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=re.escape(f"shaped.pkl: G_ema: mapping.fc0.weight has shape "
                                                        f"({expected[0]}, 5), expected {expected}")):
        load_network_pkl(path)


def test_an_unexpected_tensor_is_refused_by_name(tmp_path):
    G = describe_module(tiny_networks("skip16")["G_ema"])
    _module_state(G, "mapping.fc0")["_parameters"]["extra"] = torch.nn.Parameter(torch.zeros(2))
    path = _dump(tmp_path / "extra.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"extra\.pkl: G_ema: state dict does not match .*missing \[\], "
                                              r"unexpected \['mapping\.fc0\.extra'\]"):
        load_network_pkl(path)


def test_the_training_flag_of_each_network_is_restored(tmp_path):
    nets = tiny_networks("skip16")
    nets["G_ema"].train()  # (a snapshot taken mid-training); G and D stay in eval mode
    path = tmp_path / "flags.pkl"
    save_network_pkl(path, nets)
    loaded = load_network_pkl(path)
    assert all(m.training for m in loaded["G_ema"].modules())
    assert not any(m.training for m in loaded["G"].modules()) and not loaded["D"].training


def test_a_submodule_whose_class_differs_from_the_rebuilt_one_is_refused(tmp_path):
    G = describe_module(tiny_networks("skip16")["G_ema"])
    G.meta["state"]["_modules"]["mapping"].meta["class_name"] = "SynthesisNetwork"
    path = _dump(tmp_path / "renamed.pkl", {"G_ema": G})
    with pytest.raises(CheckpointError, match=r"renamed\.pkl: G_ema: mapping is a SynthesisNetwork in the checkpoint "
                                              r"but MappingNetwork when rebuilt"):
        load_network_pkl(path)


# --- writer.py ------------------------------------------------------------------------------------------------------

def test_saving_a_network_with_a_foreign_submodule_is_refused_and_writes_nothing(tmp_path):
    nets = tiny_networks("skip16")
    nets["G_ema"].mapping.fc1 = torch.nn.Linear(8, 8)
    path = tmp_path / "patched.pkl"
    with pytest.raises(CheckpointError, match=r"patched\.pkl: cannot write a Linear"):
        save_network_pkl(path, nets)
    assert list(tmp_path.iterdir()) == []


def test_saving_without_a_g_ema_network_is_refused(tmp_path):
    nets = tiny_networks("skip16")
    path = tmp_path / "no_ema.pkl"
    with pytest.raises(CheckpointError, match=r"no_ema\.pkl: save_network_pkl needs a dict with at least a 'G_ema'"):
        save_network_pkl(path, {"G": nets["G"], "D": nets["D"]})
    assert not path.exists()


def test_plain_data_keeps_its_tuples_and_lists(tmp_path):
    nets = tiny_networks("skip16")
    nets["training_set_kwargs"] = {"crop": (0.1, 0.2), "seeds": [1, 2], "nested": [(1, "a")]}
    nets["run"] = ("tag", 3)
    path = tmp_path / "data.pkl"
    save_network_pkl(path, nets)
    loaded = load_network_pkl(path)
    assert loaded["training_set_kwargs"] == {"crop": (0.1, 0.2), "seeds": [1, 2], "nested": [(1, "a")]}
    assert type(loaded["training_set_kwargs"]["crop"]) is tuple and type(loaded["run"]) is tuple
    assert type(loaded["training_set_kwargs"]["nested"][0]) is tuple and loaded["run"] == ("tag", 3)


# --- loader.py ------------------------------------------------------------------------------------------------------

def test_a_zip_archive_is_named_as_a_torch_save_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: this is a zip archive (torch.save format), "
                                                        "not a network pickle")):
        load_network_pkl(path)


def test_a_pickle_cut_short_is_reported_as_truncated(tmp_path):
    good = tmp_path / "good.pkl"
    save_network_pkl(good, tiny_networks("skip16"))
    path = tmp_path / "cut.pkl"
    data = good.read_bytes()
    for cut in (2, 3, len(data) // 2, len(data) - 1):  # wherever the cut falls, the data ran out
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut\.pkl: truncated network pickle \((EOF|Unpickling)Error"):
            load_network_pkl(path)


def test_a_g_ema_that_is_none_is_refused(tmp_path):
    nets = tiny_networks("skip16")
    path = _dump(tmp_path / "empty_ema.pkl", {"G": describe_module(nets["G"]), "G_ema": None})
    with pytest.raises(CheckpointError, match=r"empty_ema\.pkl: G_ema is a NoneType, not a network"):
        load_network_pkl(path)


def test_a_network_key_holding_plain_data_is_refused_by_name(tmp_path):
    nets = tiny_networks("skip16")
    path = _dump(tmp_path / "plain.pkl", {"G_ema": describe_module(nets["G_ema"]), "D": {"weights": [1, 2]}})
    with pytest.raises(CheckpointError, match=r"plain\.pkl: D is a dict, not a network"):
        load_network_pkl(path)


def test_a_file_with_only_g_ema_loads_with_every_official_key(tmp_path):
    nets = tiny_networks("skip16")
    loaded = load_network_pkl(_dump(tmp_path / "ema_only.pkl", {"G_ema": describe_module(nets["G_ema"])}))
    assert set(loaded) == {"G", "D", "G_ema", "training_set_kwargs", "augment_pipe"}
    assert loaded["G"] is None and loaded["D"] is None and loaded["training_set_kwargs"] is None
    _same_weights(nets["G_ema"], loaded["G_ema"])


@pytest.mark.parametrize("content", [b"hello, not a pickle", b"\x80\x04garbage"])
def test_a_local_file_that_cannot_be_loaded_is_never_deleted(tmp_path, content):
    """Only a download is dropped from the cache when it is no network pickle; a user's own file stays."""
    path = tmp_path / "mine.pkl"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"mine\.pkl"):
        load_network_pkl(path)
    assert path.read_bytes() == content


def _tiny_registry(tmp_path, monkeypatch, **record) -> KnownCheckpoint:
    fields = dict(name="tiny", flavour="sg2ada", resolution=16, c_dim=0, description="d",
                  url="https://example.com/tiny.pkl", sha256=None)
    fields.update(record)
    reg = tmp_path / f"reg-{len(list(tmp_path.glob('reg-*.json')))}.json"  # (the registry is cached by path)
    reg.write_text(json.dumps({"format_version": 1, "checkpoints": [fields]}))
    monkeypatch.setattr(registry, "REGISTRY_FILE", reg)
    return registry.get_checkpoint_info("tiny")


def test_a_known_name_whose_file_has_another_c_dim_is_refused(tmp_path, monkeypatch):
    entry = _tiny_registry(tmp_path, monkeypatch, c_dim=5)
    save_network_pkl(entry.local_path(tmp_path), tiny_networks("skip16"))  # 16 px as recorded, but c_dim 0
    with pytest.raises(CheckpointError, match=r"not the known checkpoint 'tiny': its generator has c_dim 0 \(the "
                                              r"record says 5\)"):
        load_network_pkl("tiny", cache_dir=tmp_path)
    _tiny_registry(tmp_path, monkeypatch, c_dim=0)
    assert load_network_pkl("tiny", cache_dir=tmp_path)["G_ema"].c_dim == 0


# --- registry.py ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "bad, problem",
    [
        (dict(c_dim=-1), "c_dim -1 is not a non-negative int"),
        (dict(c_dim=True), "c_dim True is not a non-negative int"),  # a JSON true is no class count
        (dict(resolution=True), "resolution True is not a power of two >= 4"),
        (dict(resolution=2), "resolution 2 is not a power of two >= 4"),
        (dict(resolution=1), "resolution 1 is not a power of two >= 4"),
        (dict(package_file="/etc/passwd", url=None), "must be a relative path inside the package"),
        (dict(package_file="synthetic/x.pkl"), "exactly one of url and package_file"),
    ],
)
def test_more_malformed_records_are_rejected(bad, problem):
    fields = dict(name="x", flavour="sg2ada", resolution=256, c_dim=0, description="d", url="https://e.com/x.pkl")
    fields.update(bad)
    with pytest.raises(CheckpointError, match=re.escape(problem)):
        KnownCheckpoint(**fields)


@pytest.mark.parametrize("record, words", [
    ({"name": "a", "flavour": "sg3", "url": "https://e.com/a.pkl"}, "entry 0 lacks one of"),
    ({"name": "a", "flavour": "sg3", "resolution": 64, "c_dim": 0, "description": "d", "url": "https://e.com/a.pkl",
      "mirror": "https://m.com/a.pkl"}, "entry 'a' has unknown ['mirror']"),
])
def test_a_registry_file_entry_with_missing_or_unknown_fields_is_refused(tmp_path, monkeypatch, record, words):
    reg = tmp_path / "reg.json"
    reg.write_text(json.dumps({"format_version": 1, "checkpoints": [record]}))
    monkeypatch.setattr(registry, "REGISTRY_FILE", reg)
    with pytest.raises(CheckpointError, match=re.escape(f"checkpoint registry {reg}: {words}")):
        registry.known_checkpoints()


def test_an_upper_case_url_scheme_is_downloaded(tmp_path, monkeypatch):
    calls = []

    def fake_download(url, *, cache_dir=None, sha256=None, progress=None):
        calls.append(url)
        return cache_path_for_url(url, cache_dir)

    monkeypatch.setattr(registry, "download_file", fake_download)
    url = "HTTPS://example.com/nets/net.pkl"
    assert resolve_checkpoint(url, cache_dir=tmp_path) == cache_path_for_url(url, tmp_path)
    assert calls == [url]


# --- download.py ----------------------------------------------------------------------------------------------------

BODY = bytes(range(256)) * 400 + b"end"  # 102403 bytes


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def scripted(file_server, monkeypatch):
    """conftest's file server serving BODY at `scripted.url`, read in small chunks (so that cuts fall mid-stream)."""
    monkeypatch.setattr(dl, "CHUNK_SIZE", 4096)
    file_server.files["/nets/model.pkl"] = BODY
    file_server.url = f"{file_server.base}/nets/model.pkl"
    return file_server


def _ranges(server) -> list[str | None]:
    """The Range header of each request the server received, in order."""
    return [rng for _, rng in server.requests]


def test_a_transfer_cut_again_and_again_completes_while_each_try_makes_progress(scripted, tmp_path):
    scripted.cut = 20_000
    scripted.script = ["cut"] * 20
    path = download_file(scripted.url, cache_dir=tmp_path, sha256=_sha(BODY), progress=False, retries=1)
    assert path.read_bytes() == BODY
    assert len(_ranges(scripted)) > 3  # several cut transfers, each resumed where the last one stopped
    offsets = [int(r.split("=")[1].rstrip("-")) if r else 0 for r in _ranges(scripted)]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets)


def test_retries_give_exactly_one_more_attempt_than_their_count(scripted, tmp_path):
    scripted.script = ["503"] * 10
    with pytest.raises(DownloadError, match=r"after 3 attempts: HTTP 503"):
        download_file(scripted.url, cache_dir=tmp_path, progress=False, retries=2)
    assert len(_ranges(scripted)) == 3
    assert not cache_path_for_url(scripted.url, tmp_path).exists()


def test_a_server_error_answered_once_is_retried(scripted, tmp_path):
    scripted.script = ["503"]
    path = download_file(scripted.url, cache_dir=tmp_path, sha256=_sha(BODY), progress=False, retries=1)
    assert path.read_bytes() == BODY and _ranges(scripted) == [None, None]


def test_a_stale_part_file_longer_than_the_download_is_discarded(scripted, tmp_path):
    final = cache_path_for_url(scripted.url, tmp_path)
    part = final.with_name(final.name + ".part")
    part.write_bytes(BODY + b"left over from another upload")
    stale = part.stat().st_size
    path = download_file(scripted.url, cache_dir=tmp_path, progress=False, retries=1)  # no checksum to catch it
    assert path.read_bytes() == BODY
    assert _ranges(scripted) == [f"bytes={stale}-", None]  # refused with a 416 that names the true size: restart


def test_a_resume_answered_with_another_range_starts_over(scripted, tmp_path):
    final = cache_path_for_url(scripted.url, tmp_path)
    part = final.with_name(final.name + ".part")
    part.write_bytes(BODY[:5000])
    scripted.script = ["wrong_range"]
    path = download_file(scripted.url, cache_dir=tmp_path, progress=False, retries=1)  # no checksum to catch it
    assert path.read_bytes() == BODY
    assert _ranges(scripted) == ["bytes=5000-", None]


class _FakeResponse:
    def __init__(self, announced: int, body: bytes) -> None:
        self.status_code, self.reason = 200, "OK"
        self.headers = {"Content-Length": str(announced)}
        self._body = body

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_content(self, chunk_size):
        yield self._body


@pytest.mark.parametrize("sent", [5, 20])
def test_a_body_of_another_length_than_announced_is_never_kept(tmp_path, monkeypatch, sent):
    """A stream that ends (or runs on) without a transport error, yet with another length than its Content-Length,
    is no complete file: nothing lands at the final name, and a .part longer than the file is not kept to resume."""

    class FakeSession:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def get(self, url, headers, stream, timeout):
            return _FakeResponse(10, b"x" * sent)

    monkeypatch.setattr(dl.requests, "Session", FakeSession)
    url = "https://example.com/short.pkl"
    with pytest.raises(DownloadError, match=rf"received {sent} of 10 bytes"):
        download_file(url, cache_dir=tmp_path, progress=False, retries=0)
    final = cache_path_for_url(url, tmp_path)
    part = final.with_name(final.name + ".part")
    assert not final.exists()
    assert part.exists() == (sent < 10)


def test_an_upper_case_digest_is_accepted(scripted, tmp_path):
    path = download_file(scripted.url, cache_dir=tmp_path, sha256=_sha(BODY).upper(), progress=False)
    assert path.read_bytes() == BODY


def test_a_cached_file_changed_in_place_with_the_same_size_is_downloaded_again(scripted, tmp_path):
    path = download_file(scripted.url, cache_dir=tmp_path, sha256=_sha(BODY), progress=False)
    path.write_bytes(b"\0" * len(BODY))  # same size: only the content and the modification time differ
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    again = download_file(scripted.url, cache_dir=tmp_path, sha256=_sha(BODY), progress=False)
    assert again == path and again.read_bytes() == BODY
    assert len(_ranges(scripted)) == 2


def test_a_url_that_is_not_http_is_refused_before_the_cache_is_touched(tmp_path):
    cache = tmp_path / "cache"
    for url in ("ftp://example.com/a.pkl", "file:///etc/passwd"):
        with pytest.raises(DownloadError, match=re.escape(f"not an http(s) URL: {url!r}")):
            download_file(url, cache_dir=cache)
    assert not cache.exists()


# --- cli_common.py, utils/script_args.py --------------------------------------------------------------------------

def test_the_seed_option_takes_exactly_the_unsigned_32_bit_range():
    from stylegan_disentangle.cli_common import SEED

    assert SEED.convert("0", None, None) == 0 and SEED.convert("4294967295", None, None) == 2**32 - 1
    for text in ("-1", "4294967296"):
        with pytest.raises(click.BadParameter):
            SEED.convert(text, None, None)


def test_fail_cleanly_turns_only_package_errors_into_one_line():
    from stylegan_disentangle.cli_common import fail_cleanly

    def broken():
        raise CheckpointError("x.pkl: corrupt network pickle")

    with pytest.raises(click.ClickException) as info:
        fail_cleanly(broken)
    assert info.value.format_message() == "x.pkl: corrupt network pickle" and info.value.exit_code == 1
    assert fail_cleanly(lambda: 7) == 7
    with pytest.raises(ZeroDivisionError):  # a bug stays a traceback
        fail_cleanly(lambda: 1 / 0)


@pytest.mark.parametrize("name, good, bad", [
    ("nonnegative_int", [("0", 0), ("7", 7)], ["-1", "1.5"]),
    ("seed_value", [("0", 0), ("4294967295", 2**32 - 1)], ["-1", "4294967296"]),
    ("finite_float", [("1.5", 1.5), ("-2", -2.0)], ["nan", "inf", "-inf", "x"]),
    ("int_list", [("3,,4", [3, 4]), (" 1, 2 ,", [1, 2])], ["", "1,x", "1.5"]),
    ("float_list", [("0.5, -1,", [0.5, -1.0])], ["1,nan", "inf", ","]),
])
def test_the_script_argument_types(name, good, bad):
    import argparse

    from stylegan_disentangle.utils import script_args

    convert = getattr(script_args, name)
    for text, value in good:
        assert convert(text) == value
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=re.escape(repr(text))):
            convert(text)


def test_run_script_exit_status_and_one_line_errors(capsys):
    from stylegan_disentangle.utils.script_args import run_script

    for result, status in ((None, 0), (3, 3), ("done", 0)):
        with pytest.raises(SystemExit) as info:
            run_script(lambda result=result: result)
        assert info.value.code == status

    def broken():
        raise CheckpointError("/x.pkl: the file is empty")

    with pytest.raises(SystemExit) as info:
        run_script(broken)
    assert info.value.code == 1
    assert capsys.readouterr().err == "error: /x.pkl: the file is empty\n"


# --- utils/ranges.py ------------------------------------------------------------------------------------------------

def test_seed_counts_up_to_the_limit_and_summed_over_the_ranges():
    from stylegan_disentangle.utils.ranges import MAX_SEEDS, parse_seeds

    assert len(parse_seeds(f"0-{MAX_SEEDS - 1}")) == MAX_SEEDS
    for spec in (f"0-{MAX_SEEDS}", f"0-{MAX_SEEDS // 2},{MAX_SEEDS}-{MAX_SEEDS + MAX_SEEDS // 2}"):
        with pytest.raises(UsageError, match="names more than 1,000,000 seeds"):
            parse_seeds(spec)


@pytest.mark.parametrize("spec, words", [
    ("1,5-4", "range '5-4' runs backwards"),
    ("1-2-3", "'1-2-3' is not N or N-M"),
    ("3x", "'3x' is not N or N-M"),
    ([-1], "seeds must be between 0 and 2**32 - 1"),
    ([2**32], "seeds must be between 0 and 2**32 - 1"),
    ("4294967296", "seeds must be between 0 and 2**32 - 1"),
])
def test_bad_seeds_are_refused_saying_why(spec, words):
    from stylegan_disentangle.utils.ranges import parse_seeds

    with pytest.raises(UsageError, match=re.escape(words)):
        parse_seeds(spec)


@pytest.mark.parametrize("spec, words", [
    ("0:1:0", "COUNT must be >= 1"),
    ("0:1:-2", "COUNT must be >= 1"),
    ("0:1:2.5", "must look like START:STOP:COUNT"),
    ("nan,1", "non-empty list of finite numbers"),
    ([1.0, float("inf")], "non-empty list of finite numbers"),
])
def test_bad_steps_are_refused_saying_why(spec, words):
    from stylegan_disentangle.utils.ranges import parse_steps

    with pytest.raises(UsageError, match=re.escape(words)):
        parse_steps(spec)


def test_steps_from_a_sequence_are_one_flat_float_array():
    from stylegan_disentangle.utils.ranges import parse_steps

    for spec in ([[-1, 1]], (0.5,), 2):
        steps = parse_steps(spec)
        assert steps.ndim == 1 and steps.dtype.name == "float64"
    assert parse_steps([[-1, 1]]).tolist() == [-1.0, 1.0] and parse_steps(2).tolist() == [2.0]
