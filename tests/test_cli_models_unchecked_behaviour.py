"""Behaviour of the model, decomposer-training and listing commands that no other test checked (found by mutation
testing): every train-model option reaching the function it configures (value and default), the transfer commands'
options reaching the model, their refusals naming the option, and the files they write."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.checkpoints import save_network_pkl
from stylegan_disentangle.cli import main
from tests.helpers import tiny_networks

NUM_WS, W_DIM = 6, 8  # the skip16 tiny network


@pytest.fixture(scope="module")
def tiny_pkl(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny") / "tiny.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    return path


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    """A DirectionSet of four orthonormal directions of the skip16 network's W."""
    from stylegan_disentangle.directions import DirectionSet

    root = tmp_path_factory.mktemp("dirs")
    vectors = np.linalg.qr(np.random.default_rng(0).standard_normal((W_DIM, 4)))[0].T.astype(np.float32)
    DirectionSet(names=["yaw", "smile", "skin", "hair"], vectors=vectors).save(root / "dirs")
    return root / "dirs"


def _invoke(args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _ok(args):
    result = _invoke(args)
    assert result.exit_code == 0, result.output
    return result


def _handed(monkeypatch, module: str, function: str, args: list) -> tuple[tuple, dict]:
    """Run the command `args` with `module.function` (its training function) replaced by a recorder: the positional
    and keyword arguments the command handed it."""
    import importlib

    seen = []
    monkeypatch.setattr(importlib.import_module(f"stylegan_disentangle.{module}"), function,
                        lambda *a, **kw: seen.append((a, kw)))
    _ok(args)
    return seen[0]


# --- train-model: each kind's options reach its training function ---------------------------------------------------

def test_train_model_factor_mapper_hands_every_option_to_its_training(tmp_path, monkeypatch):
    (pkl, out), kwargs = _handed(monkeypatch, "cli_factors", "train_factor_mapper", [
        "--quiet", "train-model", "factor-mapper", "net.pkl", "--outdir", tmp_path / "o", "--labeler", "lab",
        "--factors", "f=a", "--map-components", "3", "--readout-hidden", "5", "--steps", "7", "--batch-size", "9",
        "--lr", "0.02", "--seed", "4", "--pool", "50", "--noise-dim", "6", "--hidden", "11", "--rec-weight", "0.5",
        "--imitate-weight", "0.25", "--contrast-weight", "0.75", "--prior-weight", "0.125", "--val-every", "3",
        "--patience", "2", "--preview-every", "4", "--max-minutes", "2", "--no-resume", "--device", "cpu"])
    assert pkl == "net.pkl" and out == tmp_path / "o"
    assert kwargs == dict(labeler="lab", factors="f=a", map_components=3, readout_hidden=5, steps=7, batch_size=9,
                          lr=0.02, seed=4, device=torch.device("cpu"), pool=50,
                          model_args={"noise_dim": 6, "hidden": 11, "rec_weight": 0.5, "imitate_weight": 0.25,
                                      "contrast_weight": 0.75, "prior_weight": 0.125},
                          train_args={"val_every": 3, "patience": 2, "preview_every": 4, "max_seconds": 120.0,
                                      "resume": False, "progress": False})


def test_train_model_factor_mapper_defaults(tmp_path, monkeypatch):
    _, kwargs = _handed(monkeypatch, "cli_factors", "train_factor_mapper", [
        "train-model", "factor-mapper", "net.pkl", "--outdir", tmp_path / "o", "--device", "cpu"])
    assert (kwargs["steps"], kwargs["batch_size"], kwargs["lr"], kwargs["pool"]) == (3000, 256, 3e-3, 20_000)
    assert kwargs["map_components"] == 8 and kwargs["readout_hidden"] == 128 and kwargs["seed"] == 0
    assert kwargs["model_args"] == {"noise_dim": 32, "hidden": 256, "rec_weight": 1.0, "imitate_weight": 1.0,
                                    "contrast_weight": 1.0, "prior_weight": 0.1}
    assert kwargs["train_args"] == {"val_every": 250, "patience": None, "preview_every": 500, "max_seconds": None,
                                    "resume": True, "progress": None}


def test_train_model_attribute_exchange_hands_every_option_to_its_training(tmp_path, monkeypatch):
    (pkl, out), kwargs = _handed(monkeypatch, "cli_exchange", "train_attribute_exchange", [
        "--quiet", "train-model", "attribute-exchange", "net.pkl", "--outdir", tmp_path / "o", "--labeler", "lab",
        "--attributes", "e=a,b", "--held", "h1, h2", "--held", "h3", "--map-components", "3", "--readout-hidden",
        "5", "--steps", "7", "--batch-size", "9", "--lr", "0.02", "--seed", "4", "--pool", "50", "--part-dim", "3",
        "--hidden", "11", "--take-weight", "0.5", "--keep-weight", "0.25", "--adv-weight", "0.75",
        "--move-weight", "0.125", "--val-every", "3", "--no-resume", "--device", "cpu"])
    assert pkl == "net.pkl" and out == tmp_path / "o"
    assert kwargs["held"] == ["h1", "h2", "h3"]
    assert {k: kwargs[k] for k in ("labeler", "attributes", "map_components", "readout_hidden", "steps",
                                   "batch_size", "lr", "seed", "pool")} == dict(
        labeler="lab", attributes="e=a,b", map_components=3, readout_hidden=5, steps=7, batch_size=9, lr=0.02,
        seed=4, pool=50)
    assert kwargs["model_args"] == {"part_dim": 3, "hidden": 11, "take_weight": 0.5, "keep_weight": 0.25,
                                    "adv_weight": 0.75, "move_weight": 0.125}
    assert kwargs["train_args"]["val_every"] == 3 and kwargs["train_args"]["resume"] is False


def test_train_model_attribute_exchange_defaults(tmp_path, monkeypatch):
    _, kwargs = _handed(monkeypatch, "cli_exchange", "train_attribute_exchange", [
        "train-model", "attribute-exchange", "net.pkl", "--outdir", tmp_path / "o", "--device", "cpu"])
    assert (kwargs["steps"], kwargs["batch_size"], kwargs["lr"], kwargs["held"]) == (3000, 256, 1e-3, [])
    assert kwargs["model_args"] == {"part_dim": 8, "hidden": 256, "take_weight": 1.0, "keep_weight": 1.0,
                                    "adv_weight": 0.0, "move_weight": 0.1}


def test_train_model_identity_pose_hands_every_option_to_its_training(tmp_path, monkeypatch):
    (pkl, out), kwargs = _handed(monkeypatch, "cli_models", "_train_identity_pose", [
        "--quiet", "train-model", "identity-pose", "net.pkl", "--outdir", tmp_path / "o", "--steps", "7",
        "--batch-size", "9", "--lr", "0.02", "--seed", "4", "--pool", "50", "--decomposer", "dec",
        "--decomposer-crop", "0.1,0.2,0.5,0.6", "--kept", "depth, light", "--components", "3", "--id-dim", "5",
        "--pose-dim", "2", "--hidden", "11", "--cycle-weight", "0.5", "--pose-weight", "0.25",
        "--identity-weight", "0.75", "--move-weight", "0.125", "--patience", "6", "--device", "cpu"])
    assert pkl == "net.pkl" and out == tmp_path / "o"
    assert {k: v for k, v in kwargs.items() if k not in ("model_args", "train_args")} == dict(
        steps=7, batch_size=9, lr=0.02, seed=4, device=torch.device("cpu"), pool=50, decomposer_spec="dec",
        crop=(0.1, 0.2, 0.5, 0.6), kept=["depth", "light"], components=3)
    assert kwargs["model_args"] == {"id_dim": 5, "pose_dim": 2, "hidden": 11, "cycle_weight": 0.5,
                                    "pose_weight": 0.25, "identity_weight": 0.75, "move_weight": 0.125}
    assert kwargs["train_args"]["patience"] == 6


def test_train_model_identity_pose_defaults(tmp_path, monkeypatch):
    _, kwargs = _handed(monkeypatch, "cli_models", "_train_identity_pose", [
        "train-model", "identity-pose", "net.pkl", "--outdir", tmp_path / "o", "--device", "cpu"])
    assert (kwargs["steps"], kwargs["batch_size"], kwargs["lr"], kwargs["components"]) == (1500, 64, 1e-3, 16)
    assert kwargs["crop"] is None and kwargs["decomposer_spec"] is None
    assert kwargs["kept"] == ["depth", "albedo", "image_albedo", "light"]
    assert kwargs["model_args"] == {"id_dim": 64, "pose_dim": 8, "hidden": 256, "cycle_weight": 0.1,
                                    "pose_weight": 10.0, "identity_weight": 1.0, "move_weight": 0.3}


def _train_appearance_structure(tmp_path, monkeypatch, *extra, tag="o"):
    """train-model appearance-structure on the tiny network with the training loop replaced by a recorder:
    (model, sampler, outdir, kwargs) as train_model received them."""
    import types

    import stylegan_disentangle.models as models

    seen = []

    def fake(model, sampler, outdir, **kwargs):
        seen.append((model, sampler, outdir, kwargs))
        return types.SimpleNamespace(last_losses={}, step=0, seconds=0.0, files={"model": "model.pt"})

    monkeypatch.setattr(models, "train_model", fake)
    result = _invoke(["--quiet", "train-model", "appearance-structure", *extra, "--outdir", tmp_path / tag,
                      "--pool", "40", "--frames", "3", "--device", "cpu"])
    assert result.exit_code == 0 and seen, result.output
    return seen[0]


def test_train_model_appearance_structure_hands_every_option_to_the_model_and_the_loop(tmp_path, tiny_pkl, dirs,
                                                                                         monkeypatch):
    model, sampler, out, kwargs = _train_appearance_structure(
        tmp_path, monkeypatch, tiny_pkl, "--structure-dirs", dirs, "--structure-names", "yaw,smile",
        "--appearance-dirs", dirs, "--appearance-names", "skin", "--clip-metric", "covariance",
        "--motion-metric", "euclidean", "--app-dim", "3", "--struct-dim", "2", "--hidden", "4",
        "--temperature", "0.5", "--rec-weight", "0.25", "--swap-weight", "0.75", "--app-weight", "0.125",
        "--struct-weight", "0.375", "--image-weight", "0.5", "--motion-weight", "2", "--no-invariance-projection",
        "--mlp-structure", "--steps", "7", "--batch-size", "9", "--lr", "0.02", "--seed", "4", "--val-every", "3",
        "--patience", "2", "--preview-every", "5", "--max-minutes", "1", "--no-resume")
    config = model.config
    assert {k: config[k] for k in ("app_dim", "struct_dim", "hidden", "temperature", "rec_weight", "swap_weight",
                                   "app_weight", "struct_weight", "image_weight", "motion_weight",
                                   "linear_structure", "invariance_projection")} == dict(
        app_dim=3, struct_dim=2, hidden=4, temperature=0.5, rec_weight=0.25, swap_weight=0.75, app_weight=0.125,
        struct_weight=0.375, image_weight=0.5, motion_weight=2.0, linear_structure=False,
        invariance_projection=False)
    assert sampler.batch_size == 9 and sampler.seed == 4
    assert sampler.maker.metric == "covariance" and sampler.motion_maker.metric == "euclidean"
    assert sampler.maker.structure_names == ["yaw", "smile"] and sampler.maker.appearance_names == ["skin"]
    assert sampler.maker.frames == 3
    assert out == tmp_path / "o"
    assert kwargs["G"] is not None  # --image-weight > 0 needs the synthesis
    assert {k: kwargs[k] for k in ("steps", "lr", "seed", "val_every", "patience", "preview_every", "max_seconds",
                                   "resume", "progress")} == dict(
        steps=7, lr=0.02, seed=4, val_every=3, patience=2, preview_every=5, max_seconds=60.0, resume=False,
        progress=False)
    assert kwargs["config"]["motion_metric"] == "euclidean" and kwargs["config"]["clip_metric"] == "covariance"


def test_train_model_appearance_structure_defaults(tmp_path, tiny_pkl, dirs, monkeypatch):
    model, sampler, _, kwargs = _train_appearance_structure(tmp_path, monkeypatch, tiny_pkl, "--structure-dirs",
                                                            dirs)
    config = model.config
    assert (config["app_dim"], config["struct_dim"], config["hidden"], config["temperature"]) == (64, 8, 256, 0.1)
    assert config["linear_structure"] is True and config["invariance_projection"] is True
    assert config["motion_weight"] == 1.0 and config["image_weight"] == 0.0
    assert sampler.batch_size == 256 and sampler.seed == 0 and sampler.motion_maker.metric == "covariance"
    assert sampler.maker.metric == "euclidean" and sampler.maker.structure_names is None
    assert kwargs["G"] is None and kwargs["steps"] == 3000 and kwargs["lr"] == 1e-3 and kwargs["patience"] is None
    assert kwargs["val_every"] == 250 and kwargs["preview_every"] == 500 and kwargs["resume"] is True


def test_train_model_style_mixing_takes_the_frames_and_no_motion_maker(tmp_path, tiny_pkl, monkeypatch):
    _, sampler, _, _ = _train_appearance_structure(tmp_path, monkeypatch, tiny_pkl, "--video", "style-mixing")
    assert sampler.maker.frames == 3 and sampler.motion_maker is None


def test_train_model_seed_sets_the_starting_weights(tmp_path, tiny_pkl, monkeypatch):
    def weights(seed, tag):
        model = _train_appearance_structure(tmp_path, monkeypatch, tiny_pkl, "--video", "style-mixing", "--hidden",
                                            "4", "--seed", seed, tag=tag)[0]
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(1, "a"), weights(1, "b"))
    assert not torch.equal(weights(1, "c"), weights(2, "d"))


# --- make-videos ------------------------------------------------------------------------------------------------------

def _videos(tmp_path, tiny_pkl, tag, *extra):
    _ok(["make-videos", tiny_pkl, "--outdir", tmp_path / tag, "--video", "style-mixing", "--device", "cpu", *extra])
    return np.load(tmp_path / tag / "clips.npy"), json.loads((tmp_path / tag / "config.json").read_text())


def test_make_videos_draws_count_clips_of_frames_even_from_a_smaller_pool(tmp_path, tiny_pkl):
    clips, config = _videos(tmp_path, tiny_pkl, "v", "--pool", "2", "--count", "3", "--frames", "5")
    assert clips.shape == (3, 5, NUM_WS, W_DIM)
    assert config["count"] == 3 and config["frames"] == 5 and config["video"] == "style-mixing"


def test_make_videos_seed_picks_the_clips_and_is_recorded(tmp_path, tiny_pkl):
    a, config = _videos(tmp_path, tiny_pkl, "a", "--pool", "8", "--count", "2", "--frames", "3", "--seed", "1")
    again, _ = _videos(tmp_path, tiny_pkl, "again", "--pool", "8", "--count", "2", "--frames", "3", "--seed", "1")
    b, _ = _videos(tmp_path, tiny_pkl, "b", "--pool", "8", "--count", "2", "--frames", "3", "--seed", "2")
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)
    assert config["seed"] == 1


def test_make_videos_hands_names_and_metric_to_the_direction_clip_maker(tmp_path, tiny_pkl, dirs):
    _ok(["make-videos", tiny_pkl, "--outdir", tmp_path / "v", "--structure-dirs", dirs, "--structure-names",
         "yaw, smile", "--appearance-dirs", dirs, "--appearance-names", "skin,hair", "--clip-metric", "covariance",
         "--pool", "40", "--count", "1", "--frames", "3", "--device", "cpu"])
    config = json.loads((tmp_path / "v" / "config.json").read_text())
    assert config["clip_metric"] == "covariance" and config["structure_dirs"] == str(dirs)
    assert config["appearance_dirs"] == str(dirs) and config["generator_sha256"]


def test_make_videos_refuses_a_misnamed_direction_cleanly(tmp_path, tiny_pkl, dirs):
    result = _invoke(["make-videos", tiny_pkl, "--outdir", tmp_path / "v", "--structure-dirs", dirs,
                      "--structure-names", "yaw,nope", "--pool", "40", "--device", "cpu"])
    assert result.exit_code == 1 and f"cannot make videos from {dirs}" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "v").exists()


def test_make_videos_refuses_a_structure_direction_among_the_appearance_ones_cleanly(tmp_path, tiny_pkl, dirs):
    result = _invoke(["make-videos", tiny_pkl, "--outdir", tmp_path / "v", "--structure-dirs", dirs,
                      "--structure-names", "yaw", "--appearance-dirs", dirs, "--appearance-names", "yaw,skin",
                      "--pool", "40", "--device", "cpu"])
    assert result.exit_code == 1 and f"cannot make videos from {dirs}" in result.output
    assert "lies in the span of the appearance directions" in result.output and not (tmp_path / "v").exists()


def test_train_model_identity_pose_refuses_repeated_readings_and_too_many_components(tmp_path):
    result = _invoke(["train-model", "identity-pose", "synthetic", "--kept", "depth,light,depth", "--outdir",
                      tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 2 and "Invalid value for --kept: depth,light,depth: name distinct" in result.output
    result = _invoke(["train-model", "identity-pose", "synthetic", "--components", "100000", "--pool", "20",
                      "--outdir", tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 2 and "Invalid value for --components: components must be in [1, " in result.output
    assert not (tmp_path / "o").exists()


# --- transfer-structure, transfer-motion, recombine -----------------------------------------------------------------

class FakeModel:
    """Stands in for a trained model: records what the command asked of it."""

    def __init__(self):
        self.calls = []

    def transfer_structure(self, target, source, mode=None):
        self.calls.append({"mode": mode})
        return source.clone()

    def recombine(self, identity, pose, mode="residual"):
        self.calls.append({"mode": mode})
        return pose.clone()

    def transfer_motion(self, target, clip, relative=False, mode=None):
        self.calls.append({"mode": mode, "relative": relative})
        return target[:, None].expand(-1, len(clip), -1, -1).clone()


@pytest.fixture
def fake_model(monkeypatch):
    import stylegan_disentangle.cli_models as cli_models

    model = FakeModel()
    monkeypatch.setattr(cli_models, "_load_ae", lambda *args: model)
    return model


def _ws(tiny_pkl, seeds, psi=1.0):
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.latents import sample_latents

    return sample_latents(load_network_pkl(tiny_pkl)["G_ema"], seeds, truncation_psi=psi).ws.numpy()


@pytest.mark.parametrize("mode, expected", [(None, None), ("auto", None), ("direct", "direct"),
                                            ("motion", "motion")])
def test_transfer_structure_hands_the_mode_to_the_model_and_records_it(tmp_path, tiny_pkl, fake_model, mode,
                                                                       expected):
    extra = [] if mode is None else ["--mode", mode]
    _ok(["transfer-structure", "model.pt", tiny_pkl, "--target-seeds", "0", "--source-seeds", "1", "--outdir",
         tmp_path / "t", "--device", "cpu", *extra])
    assert fake_model.calls == [{"mode": expected}]
    config = json.loads((tmp_path / "t" / "config.json").read_text())
    assert config["mode"] == (mode or "auto") and config["target_seeds"] == [0] and config["source_seeds"] == [1]


def test_transfer_structure_truncates_both_faces_and_writes_every_ws_file(tmp_path, tiny_pkl, fake_model):
    from stylegan_disentangle import __version__

    _ok(["transfer-structure", "model.pt", tiny_pkl, "--target-seeds", "0-1", "--source-seeds", "3", "--trunc",
         "0.5", "--outdir", tmp_path / "t", "--device", "cpu"])
    out = tmp_path / "t"
    np.testing.assert_allclose(np.load(out / "target_ws.npy"), _ws(tiny_pkl, [0, 1], 0.5), atol=1e-6)
    source = np.load(out / "source_ws.npy")
    np.testing.assert_allclose(source, np.repeat(_ws(tiny_pkl, [3], 0.5), 2, 0), atol=1e-6)
    np.testing.assert_allclose(np.load(out / "result_ws.npy"), source)
    config = json.loads((out / "config.json").read_text())
    assert config["source_seeds"] == [3, 3] and config["truncation_psi"] == 0.5
    assert config["version"] == __version__ and len(config["generator_sha256"]) == 64
    assert (out / "transfer.png").is_file()


def test_recombine_hands_the_mode_and_truncation_on(tmp_path, tiny_pkl, fake_model):
    _ok(["recombine", "model.pt", tiny_pkl, "--identity-seeds", "0", "--pose-seeds", "1-2", "--mode", "direct",
         "--trunc", "0.5", "--outdir", tmp_path / "r", "--device", "cpu"])
    assert fake_model.calls == [{"mode": "direct"}]
    out = tmp_path / "r"
    np.testing.assert_allclose(np.load(out / "pose_ws.npy"), _ws(tiny_pkl, [1, 2], 0.5), atol=1e-6)
    np.testing.assert_allclose(np.load(out / "identity_ws.npy"), np.repeat(_ws(tiny_pkl, [0], 0.5), 2, 0),
                               atol=1e-6)
    config = json.loads((out / "config.json").read_text())
    assert config["mode"] == "direct" and config["identity_seeds"] == [0, 0] and config["pose_seeds"] == [1, 2]
    assert (out / "recombination.png").is_file() and (out / "result_ws.npy").is_file()


def test_unequal_seed_counts_are_refused_naming_the_second_option(tmp_path, tiny_pkl, fake_model):
    result = _invoke(["recombine", "model.pt", tiny_pkl, "--identity-seeds", "0-2", "--pose-seeds", "5-6",
                      "--outdir", tmp_path / "r", "--device", "cpu"])
    assert result.exit_code == 2 and "3 seeds in --identity-seeds but 2 in --pose-seeds" in result.output
    assert "Invalid value for --pose-seeds:" in result.output and not (tmp_path / "r").exists()


def test_bad_seeds_are_refused_naming_the_option(tmp_path, tiny_pkl, fake_model):
    result = _invoke(["transfer-structure", "model.pt", tiny_pkl, "--source-seeds", "x", "--outdir",
                      tmp_path / "t", "--device", "cpu"])
    assert result.exit_code == 2 and "Invalid value for --source-seeds:" in result.output
    np.save(tmp_path / "clip.npy", np.zeros((3, NUM_WS, W_DIM), np.float32))
    result = _invoke(["transfer-motion", "model.pt", tiny_pkl, "--source-clip", tmp_path / "clip.npy",
                      "--target-seeds", "x", "--outdir", tmp_path / "m", "--device", "cpu"])
    assert result.exit_code == 2 and "Invalid value for --target-seeds:" in result.output
    assert not (tmp_path / "t").exists() and not (tmp_path / "m").exists()


def test_transfer_motion_hands_relative_and_mode_on_and_records_the_clip(tmp_path, tiny_pkl, fake_model):
    clips = np.random.default_rng(0).standard_normal((2, 3, NUM_WS, W_DIM)).astype(np.float32)
    np.save(tmp_path / "clips.npy", clips)
    _ok(["transfer-motion", "model.pt", tiny_pkl, "--source-clip", tmp_path / "clips.npy", "--clip-index", "1",
         "--target-seeds", "0-1", "--relative", "--mode", "residual", "--outdir", tmp_path / "m", "--device", "cpu"])
    assert fake_model.calls == [{"mode": "residual", "relative": True}]
    out = tmp_path / "m"
    assert np.load(out / "result_ws.npy").shape == (2, 3, NUM_WS, W_DIM)
    config = json.loads((out / "config.json").read_text())
    assert config["clip_index"] == 1 and config["relative"] is True and config["mode"] == "residual"
    assert config["target_seeds"] == [0, 1] and len(config["generator_sha256"]) == 64
    _ok(["transfer-motion", "model.pt", tiny_pkl, "--source-clip", tmp_path / "clips.npy", "--outdir",
         tmp_path / "m2", "--device", "cpu"])
    assert fake_model.calls[-1] == {"mode": None, "relative": False}
    assert json.loads((tmp_path / "m2" / "config.json").read_text())["mode"] == "auto"


def test_transfer_motion_refuses_a_clip_index_outside_the_file_and_a_one_frame_clip(tmp_path, tiny_pkl, fake_model):
    np.save(tmp_path / "clips.npy", np.zeros((2, 3, NUM_WS, W_DIM), np.float32))
    for index in ("-1", "2"):
        result = _invoke(["transfer-motion", "model.pt", tiny_pkl, "--source-clip", tmp_path / "clips.npy",
                          "--clip-index", index, "--outdir", tmp_path / "m", "--device", "cpu"])
        assert result.exit_code == 2 and "--clip-index" in result.output and "holds 2 clips" in result.output
    np.save(tmp_path / "one.npy", np.zeros((1, NUM_WS, W_DIM), np.float32))
    result = _invoke(["transfer-motion", "model.pt", tiny_pkl, "--source-clip", tmp_path / "one.npy", "--outdir",
                      tmp_path / "m", "--device", "cpu"])
    assert result.exit_code == 1 and "a clip needs at least 2 frames, this one has 1" in result.output
    assert not (tmp_path / "m").exists()


def test_a_damaged_model_file_is_one_line_naming_it(tmp_path, tiny_pkl):
    (tmp_path / "model.pt").write_bytes(b"not a model")
    result = _invoke(["recombine", tmp_path / "model.pt", tiny_pkl, "--outdir", tmp_path / "r", "--device", "cpu"])
    assert result.exit_code == 1 and "model.pt" in result.output and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


# --- the shared options -----------------------------------------------------------------------------------------------

def test_a_bad_crop_and_light_mask_are_usage_errors_naming_the_option(tmp_path):
    result = _invoke(["train-model", "identity-pose", "net.pkl", "--outdir", tmp_path / "o", "--decomposer-crop",
                      "0.5,0.5,0.9,0.9"])
    assert result.exit_code == 2 and "'--decomposer-crop'" in result.output and "0.5,0.5,0.9,0.9" in result.output
    result = _invoke(["decompose", "synthetic", "--light-mask", "a,b", "--outdir", tmp_path / "d"])
    assert result.exit_code == 2 and "'--light-mask'" in result.output and "'a,b'" in result.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


# --- train-decomposer ---------------------------------------------------------------------------------------------

@pytest.fixture
def trainer_calls(monkeypatch):
    import stylegan_disentangle.labels.decomposer.trainer as trainer

    seen = []

    def fake(G, outdir, steps, **kwargs):
        seen.append(dict(outdir=outdir, steps=steps, **kwargs))

    monkeypatch.setattr(trainer, "train_decomposer", fake)
    return seen


def test_train_decomposer_hands_its_default_training_settings_to_the_trainer(tmp_path, tiny_pkl, trainer_calls):
    _ok(["train-decomposer", tiny_pkl, "--steps", "2", "--outdir", tmp_path / "t", "--device", "cpu"])
    kwargs = trainer_calls[0]
    assert {k: kwargs[k] for k in ("batch_size", "lr", "weight_decay", "stabilize_after", "lam_jitter",
                                   "lam_rerender", "lam_smooth", "bank_size", "seed")} == dict(
        batch_size=32, lr=1e-4, weight_decay=5e-4, stabilize_after=1000, lam_jitter=0.5, lam_rerender=1.0,
        lam_smooth=0.0, bank_size=0, seed=0)
    assert kwargs["decomposer_kwargs"] == dict(nf=32, zdim=128, nf_light=16, nf_view=16, nf_conf=32, zdim_conf=64,
                                               xy_light_range=1.0, antialias=False)
    assert kwargs["lam_perc"] == 0.0 and kwargs["D"] is None and kwargs["train_nets"] is None


def test_train_decomposer_under_the_global_quiet_shows_no_bar(tmp_path, tiny_pkl, trainer_calls):
    _ok(["--quiet", "train-decomposer", tiny_pkl, "--steps", "2", "--outdir", tmp_path / "t", "--device", "cpu"])
    assert trainer_calls[0]["progress"] is False


def test_train_decomposer_refuses_a_teacher_weight_without_a_teacher(tmp_path, tiny_pkl, trainer_calls):
    result = _invoke(["train-decomposer", tiny_pkl, "--steps", "2", "--teacher-weight", "2", "--outdir",
                      tmp_path / "t", "--device", "cpu"])
    assert result.exit_code == 2 and "--teacher-weight weighs the latent light teacher, which is off" in result.output
    assert trainer_calls == []


def test_train_decomposer_refuses_sizes_with_init_naming_the_options_as_typed(tmp_path, tiny_pkl, trainer_calls):
    result = _invoke(["train-decomposer", tiny_pkl, "--steps", "2", "--init", "synthetic", "--light-range", "2",
                      "--outdir", tmp_path / "t", "--device", "cpu"])
    assert result.exit_code == 2 and "--light-range cannot be given with --init" in result.output
    assert "xy" not in result.output and trainer_calls == []


# --- list-checkpoints, list-decomposers ---------------------------------------------------------------------------

def test_list_checkpoints_table_names_a_shipped_checkpoints_package_file(tmp_path):
    from stylegan_disentangle.checkpoints.registry import known_checkpoints

    shipped = [e for e in known_checkpoints().values() if e.package_file is not None]
    assert shipped
    result = _ok(["list-checkpoints", "--cache-dir", tmp_path])
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:]}
    for entry in shipped:
        assert rows[entry.name].rstrip().endswith(f"package:{entry.package_file}")


def test_list_decomposers_says_when_a_shipped_decomposer_file_is_missing(tmp_path, monkeypatch):
    import stylegan_disentangle.labels.decomposer.labeler as labeler

    monkeypatch.setattr(labeler, "SHIPPED", {"synthetic": tmp_path / "missing.pth"})
    rows = {r["name"]: r for r in json.loads(_ok(["list-decomposers", "--json", "--cache-dir", tmp_path]).output)}
    assert rows["synthetic"]["available"] is False and rows["synthetic"]["source"] == "package:missing.pth"
    table = _ok(["list-decomposers", "--cache-dir", tmp_path]).output
    assert "not downloaded" in next(line for line in table.splitlines() if line.startswith("synthetic "))


# --- demo ---------------------------------------------------------------------------------------------------------

def test_demo_hands_its_settings_to_each_step(tmp_path, monkeypatch):
    import types

    import stylegan_disentangle.analysis.find_directions as fd
    import stylegan_disentangle.cli as cli
    from stylegan_disentangle.synthetic.checkpoint import SYNTHETIC_CHECKPOINT

    if not SYNTHETIC_CHECKPOINT.is_file():
        pytest.skip("the shipped synthetic checkpoint is not built here")
    steps = []

    def finder(pkl, **kwargs):
        steps.append(("find", {"pkl": pkl, **kwargs}))
        return types.SimpleNamespace(direction_set=_Found())

    monkeypatch.setattr(fd, "run_find_directions", finder)
    monkeypatch.setattr(cli, "info", lambda **kw: steps.append(("info", kw)))
    monkeypatch.setattr(cli, "generate", lambda **kw: steps.append(("generate", kw)))
    monkeypatch.setitem(cli.main.commands, "decompose", lambda **kw: steps.append(("decompose", kw)))
    _ok(["--quiet", "demo", "--outdir", tmp_path / "d", "--samples", "7", "--three-d-samples", "9", "--device",
         "cpu"])
    names = [name for name, _ in steps]
    assert names == ["info", "generate", "find", "decompose", "find"]
    out, cpu = tmp_path / "d", torch.device("cpu")
    assert steps[0][1] == {"pkl": "synthetic", "as_json": False}
    assert steps[1][1] == dict(pkl="synthetic", seeds="0-15", truncation_psi=0.7, trunc_cutoff=None,
                               noise_mode="const", class_idx=None, outdir=str(out / "images"), grid=True, device=cpu)
    linear, coupled = steps[2][1], steps[4][1]
    assert linear == dict(pkl="synthetic", method="linear", labeler="synthetic-oracle", samples=7,
                          outdir=out / "directions", device=cpu, grid_max_rows=19, progress=False,
                          overwrite_bank=True)
    assert coupled == dict(pkl="synthetic", method="3d-coupled", samples=9, outdir=out / "three_d_coupled",
                           device=cpu, umap=False, progress=False, overwrite_bank=True)
    assert steps[3][1] == dict(pkl="synthetic", seeds="0-7", decomposer_spec=None, truncation_psi=1.0,
                               outdir=str(out / "decompose"), device=cpu)


class _Found(list):
    """A found DirectionSet as the demo reads it: names and each direction's kind."""

    def __init__(self):
        super().__init__(["a", "b"])
        self.names = ["a", "b"]
        self.info = {"kinds": ["global", "local"]}


# --- the label-driven kinds' training: pool, readout, sampler and loop settings -------------------------------------

def _planted_pool(spec, held=()):
    """What labeled_pool returns, for the skip16 network: 200 w and up to three labels linear in them."""
    from tests.helpers import random_ws

    w = random_ws(200, 3, 1, W_DIM)[:, 0]
    labels = torch.stack([w[:, 0] + w[:, 1], w[:, 2], -w[:, 3]], 1).numpy()
    return spec, list(held), w, labels[:, :sum(len(names) for names in spec.values())]


def _train_labeled(module, kind, spec, tmp_path, tiny_pkl, monkeypatch, *extra):
    """train-model KIND on the tiny network with labeled_pool and the loop replaced by recorders: (labeled_pool's
    arguments, (model, sampler, kwargs) as train_model received them)."""
    import types

    import stylegan_disentangle.models as models

    pools, loops = [], []

    def fake_pool(*args, **kwargs):
        pools.append((args, kwargs))
        return _planted_pool(spec)

    def fake_loop(model, sampler, outdir, **kwargs):
        loops.append((model, sampler, kwargs))
        return types.SimpleNamespace(last_losses={}, step=0, seconds=0.0, files={"model": "model.pt"})

    monkeypatch.setattr(module, "labeled_pool", fake_pool)
    monkeypatch.setattr(models, "train_model", fake_loop)
    _ok(["--quiet", "train-model", kind, tiny_pkl, "--outdir", tmp_path / "o", "--labeler", "lab", "--pool", "200",
         "--hidden", "4", "--device", "cpu", *extra])
    return pools[0], loops[0]


def test_attribute_exchange_training_takes_the_readout_batch_rate_and_rebuild(tmp_path, tiny_pkl, monkeypatch):
    import stylegan_disentangle.cli_exchange as cli_exchange

    (args, kwargs), (model, sampler, loop) = _train_labeled(
        cli_exchange, "attribute-exchange", {"e": ["l1", "l2"], "p": ["l3"]}, tmp_path, tiny_pkl, monkeypatch,
        "--attributes", "e=l1,l2;l3", "--readout-hidden", "5", "--batch-size", "9", "--lr", "0.02",
        "--map-components", "3", "--seed", "4", "--no-resume")
    assert args[2:6] == ("lab", "e=l1,l2;l3", "--attributes", 200) and args[6] == 4
    assert kwargs["components"] == 3 and kwargs["rebuild"] is True and kwargs["held"] == []
    assert loop["G"].mlp[0].out_features == 5 and sampler.batch_size == 9 and sampler.seed == 4
    assert loop["lr"] == 0.02 and loop["lr_schedule"] == "cosine" and loop["resume"] is False
    assert loop["config"]["readout_hidden"] == 5 and loop["config"]["batch_size"] == 9
    (_, again), _ = _train_labeled(cli_exchange, "attribute-exchange", {"e": ["l1", "l2"]}, tmp_path, tiny_pkl,
                                   monkeypatch, "--attributes", "e=l1,l2")
    assert again["rebuild"] is False and again["components"] == 8


def test_factor_mapper_training_takes_the_readout_batch_rate_and_rebuild(tmp_path, tiny_pkl, monkeypatch):
    import stylegan_disentangle.cli_factors as cli_factors

    (args, kwargs), (model, sampler, loop) = _train_labeled(
        cli_factors, "factor-mapper", {"f": ["l1", "l2"], "g": ["l3"]}, tmp_path, tiny_pkl, monkeypatch,
        "--factors", "f=l1,l2;g=l3", "--readout-hidden", "5", "--batch-size", "9", "--lr", "0.02",
        "--map-components", "3", "--seed", "4", "--noise-dim", "2", "--no-resume")
    assert args[2:6] == ("lab", "f=l1,l2;g=l3", "--factors", 200) and args[6] == 4
    assert kwargs["components"] == 3 and kwargs["rebuild"] is True
    assert model.readout.mlp[0].out_features == 5 and model.config["readout_hidden"] == 5
    assert model.noise_dim == 2 and sampler.batch_size == 9 and sampler.seed == 4
    assert loop["lr"] == 0.02 and loop["lr_schedule"] == "cosine" and loop["resume"] is False
    (_, again), _ = _train_labeled(cli_factors, "factor-mapper", {"f": ["l1", "l2"]}, tmp_path, tiny_pkl,
                                   monkeypatch, "--factors", "f=l1,l2")
    assert again["rebuild"] is False and again["components"] == 8


# --- defects found by the audit (fixed) -----------------------------------------------------------------------------
@pytest.mark.parametrize("option, value, message", [
    ("--app-dim", "0", "code sizes must be positive, got app_dim=0"),
    ("--struct-dim", "0", "struct_dim=0"),
    ("--temperature", "0", "temperature must be > 0, got 0.0"),
    ("--motion-weight", "-1", "motion_weight must be >= 0, got -1.0"),
    ("--hidden", "-1", "--hidden"),
])
def test_train_model_refuses_a_bad_model_setting_cleanly_before_writing(tmp_path, tiny_pkl, option, value, message):
    result = _invoke(["--quiet", "train-model", "appearance-structure", tiny_pkl, "--video", "style-mixing",
                      "--pool", "100", "--frames", "3", "--steps", "1", "--outdir", tmp_path / "o", "--device", "cpu",
                      option, value])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.exception
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_train_model_appearance_structure_with_a_small_pool_previews_fewer_pairs(tmp_path, tiny_pkl):
    """--pool 40 keeps 4 codes for validation: the preview shows two target | source pairs (it asked for codes
    4-7 of a 4-code pool and failed after the whole training, before model.pt was written)."""
    result = _invoke(["--quiet", "train-model", "appearance-structure", tiny_pkl, "--video", "style-mixing",
                      "--pool", "40", "--frames", "3", "--steps", "1", "--hidden", "4", "--outdir", tmp_path / "o",
                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "model.pt").is_file()


def test_train_model_appearance_structure_refuses_a_tiny_pool_cleanly(tmp_path, tiny_pkl):
    result = _invoke(["--quiet", "train-model", "appearance-structure", tiny_pkl, "--video", "style-mixing",
                      "--pool", "3", "--frames", "3", "--steps", "1", "--outdir", tmp_path / "o", "--device", "cpu"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.exception
    assert "the w pool has 3 samples; need at least 4 (two to train on and 2 for validation)" in result.output
    assert not (tmp_path / "o").exists()
