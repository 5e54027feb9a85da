"""`stylegan-disentangle info / generate / demo` on networks the tests write themselves."""

from __future__ import annotations

import json

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from stylegan_disentangle.checkpoints import save_network_pkl
from stylegan_disentangle.cli import main
from stylegan_disentangle.utils.ranges import parse_seeds, parse_steps
from tests.helpers import tiny_networks


@pytest.fixture
def tiny_pkl(tmp_path):
    path = tmp_path / "tiny.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    return path


def test_info_reports_the_network(tiny_pkl):
    result = CliRunner().invoke(main, ["info", str(tiny_pkl), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["resolution"] == 16 and info["num_ws"] == 6 and info["z_dim"] == 8 and info["architecture"] == "skip"
    assert info["flavor"] == "sg2ada" and len(info["sha256"]) == 64
    assert info["parameters"]["G_ema"] > 0 and info["fp16_resolutions"] == []
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.latents import generator_fingerprint

    assert info["generator_fingerprint"] == generator_fingerprint(load_network_pkl(tiny_pkl)["G_ema"])


def test_info_describes_a_decomposer_and_the_network_it_was_trained_on(tmp_path, tiny_pkl):
    """A trained decomposer's checkpoint (given where a network is expected, or with --decomposer) is described:
    its nets, settings and `trained_on`, which equals `info`'s fingerprint of the network it was trained on."""
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.labels.decomposer.trainer import train_decomposer

    G = load_network_pkl(tiny_pkl)["G_ema"]
    train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, progress=False,
                     decomposer_kwargs=dict(image_size=32, nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16,
                                            zdim_conf=32))
    ckpt = tmp_path / "run" / "checkpoint.pth"
    network = json.loads(CliRunner().invoke(main, ["info", str(tiny_pkl), "--json"]).output)
    for args in (["info", str(ckpt), "--json"], ["info", "--decomposer", str(ckpt), "--json"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        info = json.loads(result.output)
        assert info["trained_on"] == network["generator_fingerprint"] and info["epoch"] == 1
        assert info["image_size"] == 32 and sorted(info["nets"]) == ["netA", "netC", "netD", "netL", "netV"]
        assert info["nets"]["netL"]["nf"] == 8 and info["nets"]["netL"]["parameters"] > 0
        assert info["settings"]["fov"] == 10.0 and info["path"] == str(ckpt) and len(info["sha256"]) == 64
    # neither a network nor a decomposer: both readings are named
    (tmp_path / "noise.pth").write_bytes(b"garbage")
    result = CliRunner().invoke(main, ["info", str(tmp_path / "noise.pth")])
    assert result.exit_code == 1
    assert "nor is it a W-space model file or an Unsup3D decomposer checkpoint" in result.output


def test_generate_writes_one_png_per_seed_and_a_grid(tmp_path, tiny_pkl):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["generate", str(tiny_pkl), "--seeds", "3-5", "--trunc", "0.7", "--grid",
                                       "--outdir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "grid.png", "seed0003.png", "seed0004.png", "seed0005.png"]
    img = np.asarray(Image.open(out / "seed0004.png"))
    assert img.shape == (16, 16, 3) and img.std() > 0
    config = json.loads((out / "config.json").read_text())
    assert config["seeds"] == [3, 4, 5] and config["truncation_psi"] == 0.7


def test_generate_is_deterministic_per_seed(tmp_path, tiny_pkl):
    runner = CliRunner()
    runner.invoke(main, ["generate", str(tiny_pkl), "--seeds", "0-2", "--outdir", str(tmp_path / "a")])
    runner.invoke(main, ["generate", str(tiny_pkl), "--seeds", "2", "--outdir", str(tmp_path / "b")])
    assert (tmp_path / "a" / "seed0002.png").read_bytes() == (tmp_path / "b" / "seed0002.png").read_bytes()


def test_conditional_network_needs_a_class(tmp_path):
    path = tmp_path / "cond.pkl"
    save_network_pkl(path, tiny_networks("resnet_cond16"))
    runner = CliRunner()
    result = runner.invoke(main, ["generate", str(path), "--seeds", "0", "--outdir", str(tmp_path / "o")])
    assert result.exit_code != 0 and "conditional" in result.output
    result = runner.invoke(main, ["generate", str(path), "--seeds", "0", "--class", "9",
                                  "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "pass --class between 0 and 2 (got 9)" in result.output
    result = runner.invoke(main, ["generate", str(path), "--seeds", "0", "--class", "2",
                                  "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output


def test_decompose_on_a_conditional_network_records_each_images_class(tmp_path):
    """Without --class each seed keeps the class the bank would draw for it; with --class every image has that
    one; both are in the JSON, and a class out of range is an error naming it."""
    import torch

    from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
    from stylegan_disentangle.latents import z_from_seeds

    path = tmp_path / "cond.pkl"
    save_network_pkl(path, tiny_networks("resnet_cond16"))
    torch.manual_seed(0)
    Unsup3DDecomposer(image_size=32, nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16).save(
        tmp_path / "dec.pth")
    runner = CliRunner()
    base = ["decompose", str(path), "--seeds", "0-5", "--decomposer", str(tmp_path / "dec.pth")]
    runs = {}
    for tag, extra in (("drawn", []), ("fixed", ["--class", "2"])):
        result = runner.invoke(main, [*base, "--outdir", str(tmp_path / tag), *extra])
        assert result.exit_code == 0, result.output
        runs[tag] = json.loads((tmp_path / tag / "decomposition.json").read_text())["images"]
    _, drawn = z_from_seeds(range(6), 8, c_dim=3)
    assert [r["class"] for r in runs["drawn"]] == drawn.tolist() and len(set(drawn.tolist())) > 1
    assert [r["class"] for r in runs["fixed"]] == [2] * 6
    result = runner.invoke(main, [*base, "--class", "3", "--outdir", str(tmp_path / "bad")])
    assert result.exit_code == 1 and "class_idx must be in [0, 3), got 3" in result.output
    assert not (tmp_path / "bad").exists()


def test_bad_checkpoint_gives_a_message_not_a_traceback(tmp_path):
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04garbage")
    result = CliRunner().invoke(main, ["info", str(bad)])
    assert result.exit_code == 1
    assert "broken.pkl" in result.output and "Traceback" not in result.output


def test_demo_runs_without_shared_data(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.synthetic.checkpoint import SYNTHETIC_CHECKPOINT

    with caplog.at_level("INFO", logger="stylegan_disentangle"):
        result = CliRunner().invoke(main, ["demo", "--outdir", "d", "--device", "cpu", "--three-d-samples", "1000"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "images" / "grid.png").stat().st_size > 0
    if SYNTHETIC_CHECKPOINT.is_file():  # the shipped checkpoint: the oracle, decomposer and 3D-coupled steps too
        assert len(DirectionSet.load(tmp_path / "d" / "directions" / "directions")) == 19
        assert (tmp_path / "d" / "decompose" / "decomposition.png").stat().st_size > 0
        found = DirectionSet.load(tmp_path / "d" / "three_d_coupled" / "directions")
        assert found.method == "3d-coupled" and {"yaw", "light_azimuth"} <= set(found.names)
        assert (tmp_path / "d" / "three_d_coupled" / "footprint_sheet.png").stat().st_size > 0
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert not [m for m in warnings if "constant over the bank" in m], warnings  # the decomposer's pinned tz
        # a rerun after an upgrade that ships another decomposer: its stale bank is rebuilt, not refused
        meta_path = tmp_path / "d" / "three_d_coupled" / "bank" / "meta.json"
        meta = json.loads(meta_path.read_text())
        meta["labelers"][0]["fingerprint"] = "0" * 64
        meta_path.write_text(json.dumps(meta))
        again = CliRunner().invoke(main, ["demo", "--outdir", "d", "--device", "cpu", "--three-d-samples", "1000"])
        assert again.exit_code == 0, again.output
        assert json.loads(meta_path.read_text())["labelers"][0]["fingerprint"] != "0" * 64


def test_range_parsers():
    assert parse_seeds("0-3,10") == [0, 1, 2, 3, 10]
    assert parse_steps("-3:3:7").tolist() == [-3, -2, -1, 0, 1, 2, 3]
    assert parse_steps("-1,0.5").tolist() == [-1, 0.5]
    for bad in ("a-b", "5-2", "", "0-100000000000", "0-4294967295"):  # (the last two: before a range is built)
        with pytest.raises(ValueError):
            parse_seeds(bad)
    with pytest.raises(ValueError):
        parse_steps("1:2")


@pytest.mark.parametrize("command", [["generate", "--seeds", "0"], ["make-videos", "--count", "1"],
                                     ["find-directions", "--samples", "10"]])
def test_a_device_this_machine_lacks_is_a_clean_cli_error(tmp_path, tiny_pkl, monkeypatch, command):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same answer wherever the tests run
    name, *options = command
    result = CliRunner().invoke(main, [name, str(tiny_pkl), *options, "--outdir", str(tmp_path / "o"),
                                       "--device", "cuda"])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output  # a usage error
    assert "CUDA is not available" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def _device_commands() -> list[str]:
    return sorted(name for name, cmd in main.commands.items() if any(p.name == "device" for p in cmd.params))


def test_every_command_shares_the_checked_device_option():
    from stylegan_disentangle.cli_common import _device_callback

    names = _device_commands()
    assert {"generate", "demo", "find-directions", "edit", "decompose", "train-decomposer", "export-augmentation",
            "train-model", "make-videos", "transfer-structure", "transfer-motion"} <= set(names)
    for name in names:
        (option,) = [p for p in main.commands[name].params if p.name == "device"]
        assert option.callback is _device_callback and option.default == "auto", name


@pytest.mark.parametrize("name", _device_commands())
@pytest.mark.parametrize("device, words", [("cuda", "CUDA is not available"), ("gpu0", "unknown device 'gpu0'"),
                                           ("meta", "cannot run the networks here")])
def test_every_command_refuses_a_device_before_reading_its_other_arguments(monkeypatch, name, device, words):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, [name, "--device", device])  # required arguments missing: --device comes first
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "Invalid value for '--device'" in result.output and words in result.output, result.output
    assert "Traceback" not in result.output


def test_the_device_option_hands_the_command_a_torch_device(tmp_path, tiny_pkl):
    result = CliRunner().invoke(main, ["generate", str(tiny_pkl), "--seeds", "0", "--outdir", str(tmp_path / "o"),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(next((tmp_path / "o").glob("*.json")).read_text())
    assert record["device"] == "cpu"


def _float_options() -> list[tuple[str, str]]:
    return sorted((name, p.name) for name, cmd in main.commands.items() for p in cmd.params
                  if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType))


def test_every_float_option_refuses_nan_and_inf():
    """A NaN truncation or learning rate would otherwise run to the end and write black images or a broken model."""
    from stylegan_disentangle.cli_common import FINITE_FLOAT

    options = _float_options()
    assert ("generate", "truncation_psi") in options and ("train-model", "lr") in options
    for name, param in options:
        (option,) = [p for p in main.commands[name].params if p.name == param]
        assert option.type is FINITE_FLOAT, (name, param)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_truncation_is_a_usage_error(tmp_path, tiny_pkl, value):
    result = CliRunner().invoke(main, ["generate", str(tiny_pkl), "--seeds", "0", f"--trunc={value}",
                                       "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 2 and "is not a finite number" in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_every_seed_option_takes_an_unsigned_32_bit_integer():
    from stylegan_disentangle.cli_common import SEED

    seeded = [name for name, cmd in main.commands.items() for p in cmd.params if p.name == "seed"]
    assert {"find-directions", "train-model", "export-augmentation", "project"} <= set(seeded)
    for name in seeded:
        (option,) = [p for p in main.commands[name].params if p.name == "seed"]
        assert option.type is SEED, name
    result = CliRunner().invoke(main, ["find-directions", "synthetic", "--seed", "-1", "--outdir", "x"])
    assert result.exit_code == 2 and "--seed" in result.output and "Traceback" not in result.output


def test_the_scripts_refuse_bad_sizes_while_parsing_and_print_package_errors_as_one_line():
    import argparse
    import subprocess
    import sys

    from stylegan_disentangle.utils.script_args import positive_int, seed_value
    from tests.helpers import load_script

    methods = load_script("bench_methods")

    assert positive_int("3") == 3 and seed_value("0") == 0
    for convert, text in ((positive_int, "0"), (positive_int, "-5"), (seed_value, "-1"), (seed_value, "x")):
        with pytest.raises(argparse.ArgumentTypeError, match="must be"):
            convert(text)
    script = methods.__file__
    bad = subprocess.run([sys.executable, script, "--samples", "-5"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--samples: must be an integer >= 1" in bad.stderr and "Traceback" not in bad.stderr
    missing = subprocess.run([sys.executable, script, "--pkl", "/nonexistent.pkl", "--samples", "10"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and missing.stderr.startswith("error: /nonexistent.pkl"), missing.stderr


def test_info_shows_an_official_snapshots_numpy_settings_as_plain_values(tmp_path):
    """An official snapshot's training_set_kwargs hold numpy scalars in an EasyDict (max_size np.int64, xflip
    np.bool_): `info` prints them as plain values and its JSON holds numbers and booleans, not their reprs."""
    from tests.official_fixtures import write_official_pickle

    path = write_official_pickle(tmp_path / "snapshot.pkl", tiny_networks("skip16"))
    info = json.loads(CliRunner().invoke(main, ["info", str(path), "--json"]).output)
    kwargs = info["training_set_kwargs"]
    assert kwargs["max_size"] == 70000 and kwargs["resolution"] == 16 and kwargs["xflip"] is False
    text = CliRunner().invoke(main, ["info", str(path)])
    assert text.exit_code == 0, text.output
    assert "'max_size': 70000" in text.output and "np." not in text.output
    keys = [line.split()[0] for line in text.output.splitlines()]
    assert "generator_fingerprint" in keys and "training_set_kwargs" in keys  # every key stands apart from its value


@pytest.mark.parametrize(("flags", "disabled"), [([], None), (["--quiet"], True)])
def test_generate_shows_a_progress_bar_over_the_seeds(tiny_pkl, tmp_path, monkeypatch, flags, disabled):
    """One step per image (a 1024x1024 image is seconds on a CPU); off with --quiet, else tqdm's own choice (a
    terminal only)."""
    import tqdm.auto

    seen: list[dict] = []

    def spy(iterable, **kwargs):
        seen.append({**kwargs, "items": list(iterable)})
        return iter(seen[-1]["items"])

    monkeypatch.setattr(tqdm.auto, "tqdm", spy)
    result = CliRunner().invoke(main, [*flags, "generate", str(tiny_pkl), "--seeds", "3-5", "--outdir",
                                       str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert len(seen) == 1 and seen[0]["items"] == [3, 4, 5] and seen[0]["disable"] is disabled
    assert seen[0]["unit"] == "image"
