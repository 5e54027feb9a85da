"""Behaviour of the command modules that no other test checked (found by mutation testing): options that reach the
function they configure, and inputs refused with a message naming the option."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.checkpoints import save_network_pkl
from stylegan_disentangle.cli import main
from tests.helpers import tiny_networks


@pytest.fixture
def tiny_pkl(tmp_path):
    path = tmp_path / "tiny.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    return path


def _generate(path, out, *extra):
    result = CliRunner().invoke(main, ["generate", str(path), "--seeds", "1", "--outdir", str(out), "--device",
                                       "cpu", *extra])
    assert result.exit_code == 0, result.output
    return (out / "seed0001.png").read_bytes()


def test_generate_passes_truncation_cutoff_and_noise_mode_to_the_generator(tmp_path, tiny_pkl):
    plain = _generate(tiny_pkl, tmp_path / "plain")
    truncated = _generate(tiny_pkl, tmp_path / "trunc", "--trunc", "0.3")
    assert truncated != plain
    # truncating only the first ws is neither the plain image nor the fully truncated one
    cut = _generate(tiny_pkl, tmp_path / "cut", "--trunc", "0.3", "--trunc-cutoff", "1")
    assert cut not in (plain, truncated)
    assert _generate(tiny_pkl, tmp_path / "none", "--noise-mode", "none") != plain
    config = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert config["truncation_cutoff"] == 1 and config["truncation_psi"] == 0.3


def test_generate_draws_the_given_class_of_a_conditional_network(tmp_path):
    path = tmp_path / "cond.pkl"
    save_network_pkl(path, tiny_networks("resnet_cond16"))
    assert _generate(path, tmp_path / "c0", "--class", "0") != _generate(path, tmp_path / "c1", "--class", "1")


def test_generate_refuses_bad_seeds_naming_the_option_and_warns_of_an_ignored_class(tmp_path, tiny_pkl):
    bad = CliRunner().invoke(main, ["generate", str(tiny_pkl), "--seeds", "a-b", "--outdir", str(tmp_path / "o")])
    assert bad.exit_code == 2 and "--seeds" in bad.output and not (tmp_path / "o").exists()
    result = CliRunner().invoke(main, ["generate", str(tiny_pkl), "--seeds", "0", "--class", "1", "--outdir",
                                       str(tmp_path / "w"), "--device", "cpu"])
    assert result.exit_code == 0 and "--class is ignored, the network is unconditional" in result.output


def test_project_passes_every_option_to_run_projection(tmp_path, monkeypatch):
    import stylegan_disentangle.analysis.projection as projection

    seen = {}

    def fake(pkl, images, outdir, **kwargs):
        seen.update(pkl=pkl, images=images, outdir=outdir, **kwargs)
        return {"ws.npy": "ws.npy", "projection.png": "projection.png"}

    monkeypatch.setattr(projection, "run_projection", fake)
    result = CliRunner().invoke(main, ["--quiet", "project", "net.pkl", "a.png", "b.png", "--outdir", "o",
                                       "--steps", "5", "--space", "w+", "--class", "2", "--seed", "7",
                                       "--batch-size", "3", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == dict(pkl="net.pkl", images=["a.png", "b.png"], outdir="o", steps=5, space="w+", class_idx=2,
                        seed=7, batch_size=3, device=torch.device("cpu"), progress=False)


class _FakeSet(list):
    method = "3d-coupled"
    names = ["d"]


def test_find_directions_passes_the_3d_coupled_options_to_the_finder(monkeypatch):
    import types

    import stylegan_disentangle.analysis.find_directions as fd

    seen = {}

    def fake(pkl, **kwargs):
        seen.update(pkl=pkl, **kwargs)
        return types.SimpleNamespace(direction_set=_FakeSet(["d"]), files={"directions_json": "d.json",
                                                                          "report": "r.json"},
                                     report={"directions": [{"name": "d"}]})

    monkeypatch.setattr(fd, "run_find_directions", fake)
    result = CliRunner().invoke(main, ["--quiet", "find-directions", "synthetic", "--method", "3d-coupled",
                                       "--outdir", "o",
                                       "--samples", "50", "--seed", "3", "--trunc", "0.8", "--trunc-cutoff", "2",
                                       "--atom-scope", "map", "--n-atoms", "4", "--loss", "squared",
                                       "--conditions", "none", "--albedo-source", "net", "--decomposer", "synthetic",
                                       "--sensitivity-samples", "5", "--view-leak-samples", "9",
                                       "--decomposer-crop", "0.1,0.1,0.8,0.8", "--decomposer-light-mask", "none",
                                       "--no-umap", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    expected = fd.method_options("3d-coupled", "map", 4, "squared", "synthetic", 5, "none", (0.1, 0.1, 0.8, 0.8),
                                 False, "net", 9)
    assert expected and seen["method_kwargs"] == expected
    assert seen["pkl"] == "synthetic" and seen["method"] == "3d-coupled" and seen["samples"] == 50
    assert seen["seed"] == 3 and seen["truncation_psi"] == 0.8 and seen["truncation_cutoff"] == 2
    assert seen["decomposer"] == "synthetic" and seen["sensitivity_samples"] == 5 and seen["view_leak_samples"] == 9
    assert seen["decomposer_crop"] == (0.1, 0.1, 0.8, 0.8) and seen["decomposer_light_mask"] is False
    assert seen["umap"] is False and seen["device"] == torch.device("cpu") and seen["progress"] is False


def test_swap_attributes_passes_the_strength_to_the_model(tmp_path, tiny_pkl, monkeypatch):
    import stylegan_disentangle.cli_models as cli_models

    seen = {}

    class FakeExchange:
        attribute_names = ["a"]

        def attribute_mask(self, chosen):
            return chosen

        def swap_attributes(self, target, exemplar, chosen, strength=1.0):
            seen.update(chosen=chosen, strength=strength)
            return target

    monkeypatch.setattr(cli_models, "_load_ae", lambda *args: FakeExchange())
    result = CliRunner().invoke(main, ["swap-attributes", "model.pt", str(tiny_pkl), "--target-seeds", "0",
                                       "--exemplar-seeds", "1", "--strength", "0.25", "--trunc", "0.5", "--outdir",
                                       str(tmp_path / "s"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["strength"] == 0.25
    assert json.loads((tmp_path / "s" / "config.json").read_text())["strength"] == 0.25
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.latents import sample_latents

    G = load_network_pkl(tiny_pkl)["G_ema"]
    expected = sample_latents(G, [0], truncation_psi=0.5).ws.numpy()
    np.testing.assert_allclose(np.load(tmp_path / "s" / "target_ws.npy"), expected, atol=1e-6)


def test_decompose_passes_the_truncation_to_the_sampled_latents(tmp_path, monkeypatch):
    import stylegan_disentangle.latents as latents

    seen = []
    original = latents.sample_latents

    def spy(G, seeds, **kwargs):
        seen.append(kwargs["truncation_psi"])
        return original(G, seeds, **kwargs)

    monkeypatch.setattr(latents, "sample_latents", spy)
    result = CliRunner().invoke(main, ["decompose", "synthetic", "--seeds", "0", "--trunc", "0.5", "--outdir",
                                       str(tmp_path / "d"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == [0.5]
    assert json.loads((tmp_path / "d" / "decomposition.json").read_text())["truncation_psi"] == 0.5
    assert np.load(tmp_path / "d" / "maps.npz")["seeds"].tolist() == [0]


def test_decompose_images_refuses_a_crop_box_too_small_to_resize_for(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(tmp_path / "face.png")
    result = CliRunner().invoke(main, ["decompose-images", str(tmp_path / "face.png"), "--decomposer", "synthetic",
                                       "--crop", "0.5,0.5,0.005,0.005", "--outdir", str(tmp_path / "o"),
                                       "--device", "cpu"])
    assert result.exit_code == 2 and "--crop" in result.output and "would have to be resized" in result.output
    assert not (tmp_path / "o").exists()


def test_train_decomposer_hands_its_sizes_nets_and_perceptual_term_to_the_trainer(tmp_path, tiny_pkl, monkeypatch):
    import stylegan_disentangle.labels.decomposer.trainer as trainer

    seen = {}

    def fake(G, outdir, steps, **kwargs):
        seen.update(outdir=outdir, steps=steps, **kwargs)

    monkeypatch.setattr(trainer, "train_decomposer", fake)
    result = CliRunner().invoke(main, ["train-decomposer", str(tiny_pkl), "--steps", "3", "--outdir",
                                       str(tmp_path / "t"), "--nf", "16", "--zdim", "32", "--nf-small", "8",
                                       "--light-range", "2", "--antialias", "--train-nets", "netL, netA",
                                       "--perceptual", "--quiet", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["steps"] == 3 and seen["outdir"] == str(tmp_path / "t") and seen["init"] is None
    assert seen["decomposer_kwargs"] == dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16,
                                             xy_light_range=2.0, antialias=True)
    assert seen["train_nets"] == ["netL", "netA"] and seen["lam_perc"] == 1.0 and seen["D"] is not None
    assert seen["progress"] is False and seen["device"] == torch.device("cpu")


def test_train_decomposer_refuses_perceptual_without_a_discriminator(tmp_path):
    path = tmp_path / "no_d.pkl"
    save_network_pkl(path, {**tiny_networks("skip16"), "D": None})
    result = CliRunner().invoke(main, ["train-decomposer", str(path), "--steps", "1", "--perceptual", "--outdir",
                                       str(tmp_path / "t"), "--device", "cpu"])
    assert result.exit_code == 1 and "has no discriminator: --perceptual needs one" in result.output
    assert not (tmp_path / "t").exists()


def _tiny_factor_mapper():
    """A FactorMapper fitted on a planted linear world for the skip16 network's W (6 ws of 8)."""
    from stylegan_disentangle.models import FactorMapper
    from tests.helpers import random_ws

    torch.manual_seed(0)
    pool = random_ws(600, 1, 6, 8)
    labels = torch.stack([pool[:, 0, 0] + pool[:, 0, 1], pool[:, 0, 1], -pool[:, 0, 2]], 1).numpy()
    return FactorMapper(6, 8, {"f1": ["l1", "l2"], "f2": ["l3"]}, noise_dim=2, hidden=8, readout_hidden=0).fit_prior(
        pool, labels, alpha=1e-6).set_normalization(pool).eval()


def test_map_factors_draws_its_codes_from_the_given_seed(tmp_path, tiny_pkl, monkeypatch):
    import stylegan_disentangle.cli_models as cli_models

    mapper = _tiny_factor_mapper()
    monkeypatch.setattr(cli_models, "_load_ae", lambda *args: mapper)

    def run(seed, tag, *extra):
        result = CliRunner().invoke(main, ["map-factors", "model.pt", str(tiny_pkl), "--count", "2", "--seed", seed,
                                           "--outdir", str(tmp_path / tag), "--device", "cpu", *extra])
        assert result.exit_code == 0, result.output
        return np.load(tmp_path / tag / "ws.npy")

    a, again, b = run("1", "a"), run("1", "again"), run("2", "b")
    np.testing.assert_array_equal(a, again)
    assert not np.allclose(a, b)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["seed"] == 2
    swept = run("1", "s", "--sweep", "f2", "--columns", "4")
    assert swept.shape == (2 * 4, 6, 8)
    asked = np.array(json.loads((tmp_path / "s" / "labels.json").read_text())["asked"])
    assert asked.shape == (2, 4, 3) and not np.allclose(asked[:, 0, 2], asked[:, -1, 2])


def test_export_augmentation_hands_every_walk_option_to_the_export(tmp_path, monkeypatch):
    import types

    import stylegan_disentangle.analysis.augmentation as augmentation
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G, _ = load_synthetic()
    DirectionSet(["yaw"], np.eye(1, G.w_dim, dtype=np.float32)).save(tmp_path / "set")
    seen = {}

    def fake(G, ds, name, lab, target, count, outdir, **kwargs):
        seen.update(name=name, target=target, count=count, outdir=outdir, lab=lab, **kwargs)
        return types.SimpleNamespace(summary={"label": "pitch", "label_range": [0.0, 1.0], "target": [-5.0, 5.0],
                                              "label_error": {"mean_abs": 0.0}, "reached_fraction": 1.0})

    monkeypatch.setattr(augmentation, "export_augmentation", fake)
    result = CliRunner().invoke(main, ["export-augmentation", "synthetic", str(tmp_path / "set"), "--name", "yaw",
                                       "--label", "pitch", "--target", "-5:5", "--count", "6", "--outdir",
                                       str(tmp_path / "o"), "--seed", "4", "--bases", "2", "--trunc", "0.7",
                                       "--step", "0.25", "--max-steps", "3", "--saturation", "0.2",
                                       "--mahalanobis-quantile", "0.9", "--overwrite",
                                       "--decomposer-crop", "0,0,1,1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen["name"] == "yaw" and seen["label"] == "pitch" and seen["target"] == "-5:5" and seen["count"] == 6
    assert seen["seed"] == 4 and seen["n_bases"] == 2 and seen["truncation_psi"] == 0.7 and seen["step"] == 0.25
    assert seen["max_steps"] == 3 and seen["saturation_fraction"] == 0.2 and seen["mahalanobis_quantile"] == 0.9
    assert seen["overwrite"] is True and seen["calibration"] is None
    assert seen["extra"]["decomposer_crop"] == [0.0, 0.0, 1.0, 1.0] and seen["extra"]["checkpoint"] == "synthetic"
    assert seen["lab"].crop == (0.0, 0.0, 1.0, 1.0)


def test_labeled_pool_names_the_option_of_an_unknown_label_and_a_repeated_held_one(tmp_path):
    base = ["train-model", "attribute-exchange", "synthetic", "--outdir", str(tmp_path / "o"), "--labeler",
            "synthetic-oracle", "--attributes", "smile", "--device", "cpu"]
    unknown_held = CliRunner().invoke(main, [*base, "--held", "grin"])
    assert unknown_held.exit_code == 2 and "Invalid value for --held" in unknown_held.output
    assert "labels ['grin'] are not among" in unknown_held.output
    unknown_attribute = CliRunner().invoke(main, [*base[:-3], "grin", "--device", "cpu"])
    assert unknown_attribute.exit_code == 2 and "Invalid value for --attributes" in unknown_attribute.output
    twice = CliRunner().invoke(main, [*base, "--held", "yaw,yaw"])
    assert twice.exit_code == 2 and "name each held label once" in twice.output
    # --held given twice keeps both lists (a single-valued option kept only the last, and trained on it)
    repeated = CliRunner().invoke(main, [*base, "--held", "yaw", "--held", "yaw"])
    assert repeated.exit_code == 2 and "yaw,yaw: name each held label once" in repeated.output
    assert not (tmp_path / "o").exists()


def test_weak_labels_are_warned_of_below_a_held_out_r2_of_one_half(capsys):
    from stylegan_disentangle.cli_labeled import warn_weak_labels

    warn_weak_labels(["smile", "yaw", "pitch"], [0.49, 0.5, 0.9])
    err = capsys.readouterr().err
    assert "W holds little of labels {'smile': 0.49}" in err
    warn_weak_labels(["yaw"], [0.5])
    assert capsys.readouterr().err == ""


def test_info_tells_a_damaged_torch_file_and_a_missing_file_apart(tmp_path):
    (tmp_path / "damaged.pt").write_bytes(b"PK\x03\x04 and then nothing a zip holds")
    damaged = CliRunner().invoke(main, ["info", str(tmp_path / "damaged.pt")])
    assert damaged.exit_code == 1 and "nor is it a readable Unsup3D decomposer checkpoint" in damaged.output
    assert "Traceback" not in damaged.output
    missing = CliRunner().invoke(main, ["info", str(tmp_path / "missing.pkl")])
    assert missing.exit_code == 1 and "missing.pkl" in missing.output and "nor is it" not in missing.output


def test_edit_hands_every_name_and_option_to_run_edit(monkeypatch):
    import importlib

    run_edit = importlib.import_module("stylegan_disentangle.analysis.run_edit")  # the package's name is a function
    seen = {}

    def fake(pkl, dirs, names, **kwargs):
        seen.update(pkl=pkl, dirs=dirs, names=names, **kwargs)
        return {n: {"png": f"{n}.png", "ws": f"{n}.npy"} for n in names}

    monkeypatch.setattr(run_edit, "run_edit", fake)
    result = CliRunner().invoke(main, ["edit", "net.pkl", "dirs", "--name", "a", "--name", "b", "--steps", "-1,1",
                                       "--unit", "w", "--seeds", "2-3", "--layers", "0-3", "--outdir", "o",
                                       "--trunc", "0.6", "--trunc-cutoff", "2", "--class", "1", "--noise-mode", "none",
                                       "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert seen == dict(pkl="net.pkl", dirs="dirs", names=["a", "b"], steps="-1,1", step_unit="w", seeds="2-3",
                        ws_file=None, layers="0-3", outdir="o", truncation_psi=0.6, truncation_cutoff=2, class_idx=1,
                        noise_mode="none", device=torch.device("cpu"))
    assert "a: a.png  a.npy" in result.output and "b: b.png  b.npy" in result.output
