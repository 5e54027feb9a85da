"""`train-model`, `make-videos`, `transfer-structure`, `transfer-motion` on a tiny network the test writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylegan_disentangle import __version__
from stylegan_disentangle.checkpoints import load_network_pkl, save_network_pkl
from stylegan_disentangle.cli import main
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.latents import generator_fingerprint
from tests.helpers import tiny_networks

NUM_WS, W_DIM, RES = 6, 8, 16  # the skip16 tiny network


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("models_cli")
    pkl, other = root / "tiny.pkl", root / "other.pkl"
    save_network_pkl(pkl, tiny_networks("skip16"))
    save_network_pkl(other, tiny_networks("skip16", seed=1))
    vectors = np.linalg.qr(np.random.default_rng(0).standard_normal((W_DIM, 4)))[0].T.astype(np.float32)
    DirectionSet(names=["yaw", "smile", "skin", "hair"], vectors=vectors).save(root / "dirs")
    dirs = ["--structure-dirs", str(root / "dirs"), "--structure-names", "yaw,smile", "--appearance-dirs",
            str(root / "dirs"), "--appearance-names", "skin,hair", "--pool", "300", "--device", "cpu"]
    runner = CliRunner()
    videos = runner.invoke(main, ["make-videos", str(pkl), "--outdir", str(root / "videos"), "--count", "2",
                                  "--frames", "4", *dirs])
    assert videos.exit_code == 0, videos.output
    train = runner.invoke(main, ["--quiet", "train-model", "appearance-structure", str(pkl), "--outdir",
                                 str(root / "model"), "--frames", "4", "--steps", "4", "--batch-size", "16",
                                 "--val-every", "2", "--preview-every", "2", "--app-dim", "4", "--struct-dim", "2",
                                 "--hidden", "8", *dirs])
    assert train.exit_code == 0, train.output
    return root, pkl, other


def _png(path):
    return np.asarray(Image.open(path))


def test_make_videos_writes_clips_and_strips(setup):
    root, _, _ = setup
    clips = np.load(root / "videos" / "clips.npy")
    assert clips.shape == (2, 4, NUM_WS, W_DIM) and np.isfinite(clips).all()
    upscale = 64 // RES
    assert _png(root / "videos" / "clips.png").shape == (2 * (RES * upscale + 2 * upscale) - 2 * upscale,
                                                         4 * (RES * upscale + 2 * upscale) - 2 * upscale, 3)


def test_train_model_writes_its_run_directory(setup):
    root, _, _ = setup
    run = root / "model"
    for name in ("model.pt", "checkpoint.pt", "log.jsonl", "config.json", "clips.png", "preview.png",
                 "previews/step000002.png", "previews/step000004.png"):
        assert (run / name).is_file(), name
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "appearance-structure" and config["steps"] == 4 and config["video"] == "directions"
    # the default model has a motion decoder learned from covariance-metric clips, and a linear structure code
    assert config["motion_metric"] == "covariance"
    assert config["model_config"]["motion_weight"] == 1.0 and config["model_config"]["linear_structure"] is True


def test_transfer_structure_writes_strip_and_ws(setup, tmp_path):
    root, pkl, _ = setup
    result = CliRunner().invoke(main, ["transfer-structure", str(root / "model" / "model.pt"), str(pkl),
                                       "--target-seeds", "0-3", "--source-seeds", "5-8", "--outdir", str(tmp_path),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("target_ws", "source_ws", "result_ws"):
        assert np.load(tmp_path / f"{name}.npy").shape == (4, NUM_WS, W_DIM)
    png = _png(tmp_path / "transfer.png")  # a titled figure: 4 rows (pairs) of 3 columns (target | source | result)
    assert png.shape[0] > png.shape[1] > 3 * RES
    record = json.loads((tmp_path / "config.json").read_text())
    assert record["source_seeds"] == [5, 6, 7, 8] and record["version"] == __version__
    assert record["generator_sha256"] == generator_fingerprint(load_network_pkl(pkl)["G_ema"])


def test_transfer_modes_from_the_cli(setup, tmp_path):
    root, pkl, _ = setup
    results = {}
    for mode in ("auto", "motion", "residual", "direct"):
        out = tmp_path / mode
        result = CliRunner().invoke(main, ["transfer-structure", str(root / "model" / "model.pt"), str(pkl),
                                           "--target-seeds", "0-2", "--source-seeds", "5-7", "--outdir", str(out),
                                           "--mode", mode, "--device", "cpu"])
        assert result.exit_code == 0, result.output
        results[mode] = np.load(out / "result_ws.npy")
        assert json.loads((out / "config.json").read_text())["mode"] == mode
    np.testing.assert_array_equal(results["auto"], results["motion"])  # the motion decoder is the default
    assert np.abs(results["motion"] - results["residual"]).max() > 1e-4
    assert np.abs(results["residual"] - results["direct"]).max() > 1e-4


def test_transfer_motion_writes_strip_and_ws(setup, tmp_path):
    root, pkl, _ = setup
    result = CliRunner().invoke(main, ["transfer-motion", str(root / "model" / "model.pt"), str(pkl),
                                       "--source-clip", str(root / "videos" / "clips.npy"), "--clip-index", "1",
                                       "--target-seeds", "0-1", "--relative", "--outdir", str(tmp_path),
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "result_ws.npy").shape == (2, 4, NUM_WS, W_DIM)
    assert (tmp_path / "motion.png").is_file()


def test_a_foreign_generator_is_refused_unless_allowed(setup, tmp_path):
    root, _, other = setup
    args = ["transfer-structure", str(root / "model" / "model.pt"), str(other), "--target-seeds", "0",
            "--source-seeds", "1", "--outdir", str(tmp_path), "--device", "cpu"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code != 0 and "another generator" in refused.output and "Traceback" not in refused.output
    assert CliRunner().invoke(main, args + ["--allow-foreign"]).exit_code == 0


def test_clear_errors_for_missing_directions_and_bad_files(setup, tmp_path):
    root, pkl, _ = setup
    missing = CliRunner().invoke(main, ["make-videos", str(pkl), "--outdir", str(tmp_path), "--device", "cpu"])
    assert missing.exit_code != 0 and "--structure-dirs" in missing.output
    misspelt = CliRunner().invoke(main, ["make-videos", str(pkl), "--outdir", str(tmp_path / "v"), "--structure-dirs",
                                         str(root / "dirs"), "--structure-names", "yaw,smil", "--device", "cpu"])
    assert misspelt.exit_code == 1 and "Traceback" not in misspelt.output
    assert f"cannot make videos from {root / 'dirs'}: no direction named 'smil' in the set; did you mean 'smile'?" \
        in misspelt.output
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    result = CliRunner().invoke(main, ["transfer-structure", str(bad), str(pkl), "--outdir", str(tmp_path / "o"),
                                       "--device", "cpu"])
    assert result.exit_code != 0 and "bad.pt" in result.output and "Traceback" not in result.output


def test_label_free_style_mixing_videos(setup, tmp_path):
    _, pkl, _ = setup
    result = CliRunner().invoke(main, ["make-videos", str(pkl), "--video", "style-mixing", "--outdir", str(tmp_path),
                                       "--count", "2", "--frames", "3", "--pool", "50", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    clips = np.load(tmp_path / "clips.npy")
    assert clips.shape == (2, 3, NUM_WS, W_DIM) and np.ptp(clips[:, :, NUM_WS // 2:], axis=1).max() == 0


def test_covariance_metric_clips_from_the_cli_keep_the_appearance_readouts(setup, tmp_path):
    root, pkl, _ = setup
    result = CliRunner().invoke(main, [
        "make-videos", str(pkl), "--outdir", str(tmp_path), "--count", "3", "--frames", "5", "--clip-metric",
        "covariance", "--structure-dirs", str(root / "dirs"), "--structure-names", "yaw,smile", "--appearance-dirs",
        str(root / "dirs"), "--appearance-names", "skin,hair", "--pool", "300", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    clips = np.load(tmp_path / "clips.npy").mean(axis=2).astype(np.float64)  # [3, 5, w_dim]
    vectors = DirectionSet.load(root / "dirs").vectors.astype(np.float64)
    app = clips @ vectors[2:].T
    assert np.abs(app - app[:, :1]).max() < 1e-4  # float32 frames of |w| ~ a few units
    assert (np.ptp(clips @ vectors[:2].T, axis=1) > 0.1).all()
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["clip_metric"] == "covariance"


def test_the_same_command_and_seed_give_the_same_model(setup, tmp_path):
    """--seed seeds the starting weights too, not only the batches."""
    _, pkl, _ = setup
    args = ["--quiet", "train-model", "appearance-structure", str(pkl), "--video", "style-mixing", "--frames", "4",
            "--steps", "0", "--pool", "300", "--batch-size", "16", "--app-dim", "4", "--struct-dim", "2", "--hidden",
            "8", "--motion-weight", "0", "--no-invariance-projection", "--device", "cpu"]
    states = []
    for name in ("a", "b"):
        res = CliRunner().invoke(main, args + ["--outdir", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
        states.append(torch.load(tmp_path / name / "model.pt", weights_only=False)["state_dict"])
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_resuming_with_other_data_settings_is_refused(setup, tmp_path):
    _, pkl, _ = setup
    args = ["--quiet", "train-model", "appearance-structure", str(pkl), "--video", "style-mixing", "--frames", "4",
            "--steps", "2", "--batch-size", "16", "--app-dim", "4", "--struct-dim", "2", "--hidden", "8",
            "--motion-weight", "0", "--device", "cpu", "--outdir", str(tmp_path / "run")]
    assert CliRunner().invoke(main, args + ["--pool", "300"]).exit_code == 0
    changed = CliRunner().invoke(main, args + ["--pool", "200", "--steps", "4"])
    assert changed.exit_code == 1 and "Traceback" not in changed.output, changed.output
    assert "trained with pool=300" in changed.output and "asks for pool=200" in changed.output
    assert "--no-resume" in changed.output
    longer = CliRunner().invoke(main, args[:-2] + ["--outdir", str(tmp_path / "run"), "--pool", "300", "--steps", "4"])
    assert longer.exit_code == 0, longer.output  # more steps with the same settings resume
    again = CliRunner().invoke(main, args + ["--pool", "200", "--no-resume"])
    assert again.exit_code == 0, again.output


def test_clip_files_are_checked_and_named(setup, tmp_path):
    root, pkl, _ = setup
    model = str(root / "model" / "model.pt")
    w_clip = np.random.default_rng(0).standard_normal([3, W_DIM]).astype(np.float32)  # a clip of w [T, w_dim]
    np.save(tmp_path / "w.npy", w_clip)
    ok = CliRunner().invoke(main, ["transfer-motion", model, str(pkl), "--source-clip", str(tmp_path / "w.npy"),
                                   "--target-seeds", "0", "--outdir", str(tmp_path / "o"), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    assert np.load(tmp_path / "o" / "result_ws.npy").shape == (1, 3, NUM_WS, W_DIM)
    nan = np.zeros([3, NUM_WS, W_DIM], np.float32)
    nan[1, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    np.save(tmp_path / "short.npy", np.zeros([1, NUM_WS, W_DIM], np.float32))
    np.save(tmp_path / "empty.npy", np.zeros([0, NUM_WS, W_DIM], np.float32))
    for name, words in (("nan.npy", "contains NaN"), ("short.npy", "at least 2 frames"), ("empty.npy", "no codes")):
        res = CliRunner().invoke(main, ["transfer-motion", model, str(pkl), "--source-clip", str(tmp_path / name),
                                        "--outdir", str(tmp_path / "bad"), "--device", "cpu"])
        assert res.exit_code == 1 and name in res.output and words in res.output, res.output
        assert "Traceback" not in res.output
    edit = CliRunner().invoke(main, ["edit", str(pkl), str(root / "dirs"), "--name", "yaw", "--ws",
                                     str(tmp_path / "empty.npy"), "--outdir", str(tmp_path / "bad"), "--device", "cpu"])
    assert edit.exit_code != 0 and "empty.npy" in edit.output and "no codes" in edit.output, edit.output
    assert not (tmp_path / "bad").exists()
