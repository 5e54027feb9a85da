"""find-directions and edit end to end: through the CLI (click's CliRunner) and the script, on a tiny generator
written by the test and on the reference network ../shared/reference/sg2ada_orig_16.pkl (skipped when absent)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.checkpoints import load_network_pkl, save_network_pkl
from stylegan_disentangle.cli import main
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.latents import LatentBank, sample_latents
from stylegan_disentangle.networks import Discriminator, Generator
from stylegan_disentangle.utils import sha256_file
from tests.helpers import load_script

FAST = ["--effect-samples", "6", "--grid-steps", "5", "--batch-size", "64"]


@pytest.fixture(scope="module")
def tiny_pkl(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    kwargs = dict(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2),
                  synthesis_kwargs=dict(channel_base=256, channel_max=32))
    G = Generator(**kwargs).eval()
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32).eval()
    path = tmp_path_factory.mktemp("net") / "tiny.pkl"
    save_network_pkl(path, dict(G=G, G_ema=G, D=D, training_set_kwargs=None, augment_pipe=None))
    return path


def _run(args: list[str]):
    result = CliRunner().invoke(main, ["--quiet", *args], catch_exceptions=False)
    return result


def _check_run_dir(out: Path, pkl: Path, method: str, k: int) -> tuple[DirectionSet, dict]:
    for name in ["config.json", "report.json", "directions.npz", "directions.json", "edit_grid.png",
                 "cosine_similarity.png", "cosine_similarity.json", "label_effects.png", "label_effects.json",
                 "w_pca.png", "w_pca.npz", "bank/meta.json", "bank/w.npy"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    config = json.loads((out / "config.json").read_text())
    assert config["checkpoint_sha256"] == sha256_file(pkl) and config["args"]["seed"] == 0
    assert config["args"]["method"] == method and config["package_version"]
    ds = DirectionSet.load(out / "directions")
    assert len(ds) == k and ds.checkpoint_sha256 == sha256_file(pkl)
    assert len(list((out / "boundaries").glob("boundary_*.npy"))) == k
    report = json.loads((out / "report.json").read_text())
    assert [d["name"] for d in report["directions"]] == ds.names
    for d in report["directions"]:
        assert set(d["label_effects_rendered"]) == set(report["label_names"]) and d["std_w"] > 0
    return ds, report


def test_cli_pca_on_tiny_generator_writes_every_output(tiny_pkl, tmp_path):
    out = tmp_path / "pca"
    result = _run(["find-directions", str(tiny_pkl), "--method", "pca", "--samples", "150", "--outdir", str(out),
                   "--num-directions", "4", *FAST])
    assert result.exit_code == 0, result.output
    ds, report = _check_run_dir(out, tiny_pkl, "pca", 4)
    assert (out / "w_umap.png").is_file() and (out / "w_umap.npz").is_file()
    originals = [d["original_name"] for d in report["directions"]]
    assert originals == ["pc0", "pc1", "pc2", "pc3"]
    assert all(n == o or n.startswith(o + ":") for n, o in zip(ds.names, originals))  # 'pc1:+brightness'
    ratios = [d["explained_variance_ratio"] for d in report["directions"]]
    assert ratios == sorted(ratios, reverse=True) and 0 < sum(ratios) <= 1
    assert LatentBank.open(out / "bank").meta["count"] == 150
    # edit takes a direction by its finder's id ('pc1' for 'pc1:+brightness')
    result = _run(["edit", str(tiny_pkl), str(out), "--name", "pc1", "--steps", "-1,1", "--seeds", "0",
                   "--outdir", str(tmp_path / "e")])
    assert result.exit_code == 0, result.output
    assert ds.names[1] in result.output and (tmp_path / "e" / "config.json").is_file()


def test_cli_linear_huber_loss_reaches_the_estimator(tiny_pkl, tmp_path):
    out = tmp_path / "huber"
    result = _run(["find-directions", str(tiny_pkl), "--method", "linear", "--samples", "150", "--outdir", str(out),
                   "--no-umap", "--loss", "huber", *FAST])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "config.json").read_text())["args"]["method_kwargs"] == {"loss": "huber"}
    assert json.loads((out / "report.json").read_text())["params"]["loss"] == "huber"


def test_cli_linear_on_tiny_generator_and_edit_round_trip(tiny_pkl, tmp_path):
    out = tmp_path / "lin"
    result = _run(["find-directions", str(tiny_pkl), "--method", "linear", "--samples", "150", "--outdir", str(out),
                   "--no-umap", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    ds, _ = _check_run_dir(out, tiny_pkl, "linear", len(report["label_names"]))
    assert ds.names == report["label_names"]  # supervised: one direction per label, named after it
    assert "brightness" in ds.names and all("score" in d for d in report["directions"])
    assert not (out / "w_umap.png").exists()

    edit_out = tmp_path / "edit"
    result = _run(["edit", str(tiny_pkl), str(out / "directions"), "--name", "brightness", "--steps", "-2:2:3",
                   "--seeds", "0-2", "--outdir", str(edit_out)])
    assert result.exit_code == 0, result.output
    ws = np.load(edit_out / "ws_brightness.npy")
    assert ws.shape == (3, 3, 6, 16) and (edit_out / "edit_brightness.png").stat().st_size > 1000
    G = load_network_pkl(tiny_pkl)["G_ema"]
    base = sample_latents(G, [0, 1, 2]).ws.numpy()
    np.testing.assert_allclose(ws[1], base, atol=1e-6)  # step 0 = the official seeds' ws
    moved = (ws[2] - ws[1]).reshape(3, -1, 16)[:, 0] / (2 * ds.stds[ds.index("brightness")])
    np.testing.assert_allclose(moved, np.broadcast_to(ds["brightness"], (3, 16)), atol=1e-5)
    config = json.loads((edit_out / "config.json").read_text())
    assert config["args"]["seeds"] == [0, 1, 2] and config["args"]["step_unit"] == "sigma"
    # the run's folder itself names its set, as users pass it on
    result = _run(["edit", str(tiny_pkl), str(out), "--name", "brightness", "--steps", "-2:2:3",
                   "--seeds", "0-2", "--outdir", str(tmp_path / "edit_folder")])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "edit_folder" / "ws_brightness.npy"), ws)


def test_rerun_resumes_the_bank_and_reproduces_the_directions(tiny_pkl, tmp_path, monkeypatch):
    """A run killed while its bank fills resumes it on the rerun (only the missing chunks are sampled), and gives
    the directions of a run that was never interrupted."""
    from stylegan_disentangle.latents import bank as bank_module

    args = ["find-directions", str(tiny_pkl), "--samples", "160", "--outdir", str(tmp_path / "r"),
            "--num-directions", "3", "--no-umap", *FAST]
    straight = [*args[:5], str(tmp_path / "straight"), *args[6:]]
    assert _run(straight).exit_code == 0
    real, labelled = bank_module._run_labeler, []

    class Killed(Exception):  # (click turns a KeyboardInterrupt into an exit code)
        pass

    def killed_at_the_second_chunk(labeler, images, ws, n):
        labelled.append(n)
        if len(labelled) == 2:
            raise Killed
        return real(labeler, images, ws, n)

    monkeypatch.setattr(bank_module, "_run_labeler", killed_at_the_second_chunk)
    with pytest.raises(Killed):
        _run(args)
    assert json.loads((tmp_path / "r" / "bank" / "meta.json").read_text())["done"] == 64
    labelled.clear()
    monkeypatch.setattr(bank_module, "_run_labeler",
                        lambda lab, img, ws, n: labelled.append(n) or real(lab, img, ws, n))
    assert _run(args).exit_code == 0
    assert labelled == [64, 32]  # rows 64-159 only
    first, second = (DirectionSet.load(tmp_path / d / "directions") for d in ("straight", "r"))
    np.testing.assert_array_equal(first.vectors, second.vectors)
    assert first.names == second.names


def test_bad_inputs_give_clear_errors(tiny_pkl, tmp_path):
    bad_method = _run(["find-directions", str(tiny_pkl), "--method", "ica", "--outdir", str(tmp_path / "a")])
    assert bad_method.exit_code == 2 and "ica" in bad_method.output
    bad_lab = _run(["find-directions", str(tiny_pkl), "--labeler", "smile_net", "--outdir", str(tmp_path / "b")])
    assert bad_lab.exit_code == 1 and "unknown labeler 'smile_net'" in bad_lab.output
    no_lab = _run(["find-directions", str(tiny_pkl), "--method", "linear", "--labeler", "none",
                   "--outdir", str(tmp_path / "c")])
    assert no_lab.exit_code == 1 and "needs a labeler" in no_lab.output
    ds = DirectionSet(["a"], np.eye(1, 16, dtype=np.float32))
    ds.save(tmp_path / "set")
    no_name = _run(["edit", str(tiny_pkl), str(tmp_path / "set"), "--name", "b", "--outdir", str(tmp_path / "e")])
    assert no_name.exit_code == 1 and "no direction named 'b'" in no_name.output
    missing = _run(["edit", str(tiny_pkl), str(tmp_path / "nope"), "--name", "a", "--outdir", str(tmp_path / "e")])
    assert missing.exit_code == 1 and "does not exist" in missing.output
    (tmp_path / "a_folder").mkdir()
    no_set = _run(["edit", str(tiny_pkl), str(tmp_path / "a_folder"), "--name", "a", "--outdir", str(tmp_path / "e")])
    assert no_set.exit_code == 1 and "a_folder is a folder without a DirectionSet" in no_set.output
    class_on_unconditional = _run(["edit", str(tiny_pkl), str(tmp_path / "set"), "--name", "a", "--class", "3",
                                   "--outdir", str(tmp_path / "e")])
    assert class_on_unconditional.exit_code == 1, class_on_unconditional.output
    DirectionSet(["a"], np.eye(1, 8, dtype=np.float32)).save(tmp_path / "narrow")
    other_w_dim = _run(["edit", str(tiny_pkl), str(tmp_path / "narrow"), "--name", "a", "--outdir",
                        str(tmp_path / "e")])
    assert other_w_dim.exit_code == 1 and "Traceback" not in other_w_dim.output
    assert not (tmp_path / "e").exists()  # no refused edit left a folder or a config.json behind


def test_script_wrapper_runs_the_same_pipeline(tiny_pkl, tmp_path, capsys):
    module = load_script("find_directions")
    code = module.main([str(tiny_pkl), "--method", "closed-form", "--samples", "40", "--outdir", str(tmp_path / "s"),
                        "--num-directions", "3", "--no-umap", "--quiet", "--effect-samples", "4", "--grid-steps", "3"])
    assert code == 0
    ds = DirectionSet.load(tmp_path / "s" / "directions")
    assert ds.method == "closed_form" and len(ds) == 3 and ds.stds is not None
    assert "3 directions" in capsys.readouterr().out
    # another seed into the same folder: its bank is refused by name, or rebuilt with --overwrite-bank
    reseeded = [str(tiny_pkl), "--method", "closed-form", "--samples", "40", "--outdir", str(tmp_path / "s"),
                "--seed", "1", "--num-directions", "3", "--no-umap", "--quiet", "--effect-samples", "4",
                "--grid-steps", "3"]
    assert module.main(reseeded) == 1
    assert "made with other arguments (seed: 0 there vs 1 now)" in capsys.readouterr().err
    assert json.loads((tmp_path / "s" / "config.json").read_text())["args"]["seed"] == 0  # the results' own record
    assert module.main([*reseeded, "--overwrite-bank"]) == 0
    assert json.loads((tmp_path / "s" / "bank" / "meta.json").read_text())["seed"] == 1


@pytest.mark.parametrize("method", ["pca", "linear"])
def test_cli_on_reference_network(reference_dir, tmp_path, method):
    pkl = reference_dir / "sg2ada_orig_16.pkl"
    out = tmp_path / method
    result = _run(["find-directions", str(pkl), "--method", method, "--samples", "200", "--outdir", str(out),
                   "--num-directions", "4", "--no-umap", *FAST])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    k = 4 if method == "pca" else len(report["label_names"])
    ds, report = _check_run_dir(out, pkl, method, k)
    assert ds.w_dim == 32 and report["samples"] == 200


@pytest.mark.parametrize("pinned", [True, False])
def test_a_constant_label_warns_unless_the_labeler_pins_it(tiny_pkl, tmp_path, caplog, pinned):
    """A label the labeler fixes by construction (an empty value range, as the decomposer's tz with no z range) is
    dropped quietly; one that merely came out constant is dropped with a warning. Either way the report lists it."""
    from stylegan_disentangle.analysis.find_directions import run_find_directions
    from stylegan_disentangle.labels import labeler_from_callable

    def fn(images):
        return {"brightness": images.mean(dim=(1, 2, 3)), "fixed": torch.zeros(images.shape[0])}

    ranges = {"brightness": (-1.0, 1.0), "fixed": (0.0, 0.0) if pinned else (-1.0, 1.0)}
    lab = labeler_from_callable(fn, ["brightness", "fixed"], value_ranges=ranges)
    with caplog.at_level("INFO", logger="stylegan_disentangle.analysis.find_directions"):
        run_find_directions(tiny_pkl, method="linear", labeler=lab, samples=60, outdir=tmp_path / "o", umap=False,
                            effect_samples=2, grid_steps=3, progress=False)
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["constant_labels_ignored"] == ["fixed"]
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "'fixed'" in r.getMessage()]
    informed = [r for r in caplog.records if r.levelname == "INFO" and "fixed by the labeler" in r.getMessage()]
    assert (len(warned), len(informed)) == ((0, 1) if pinned else (1, 0))
