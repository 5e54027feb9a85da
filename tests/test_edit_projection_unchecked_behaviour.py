"""Behaviour of projection, edit, label effects, image sensitivity, footprints and the edit runner that the other
tests leave unchecked: known answers on generators whose image is a known function of w."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis.projection import project, psnr, run_projection, w_statistics
from stylegan_disentangle.errors import StyleGANDisentangleError
from tests.helpers import tiny_networks


class PixelG(torch.nn.Module):
    """A generator whose image is the first ws row itself, reshaped to `[3, R, R]` (w_dim = 3 R^2): the pixel loss
    of a code and its gradient are known in closed form."""

    z_dim, c_dim, num_ws, img_channels = 4, 0, 2, 3

    def __init__(self, resolution: int = 4) -> None:
        super().__init__()
        self.img_resolution = resolution
        self.w_dim = 3 * resolution * resolution
        self.gain = torch.nn.Parameter(torch.ones(()))
        self.frozen = torch.nn.Parameter(torch.ones(()), requires_grad=False)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = False) -> torch.Tensor:
        r = self.img_resolution
        return (ws[:, 0] * self.gain * self.frozen).reshape(-1, 3, r, r)


# ---------------------------------------------------------------------- projection
def test_projection_noise_has_the_documented_size_and_fades_quadratically():
    """With lr 0 the code stays at W's mean, so the step-t error is the code noise's mean square: (w_std *
    initial_noise * (1 - frac / noise_ramp)^2)^2, zero from frac = noise_ramp on. 8 images of 768 values: the
    chi-square mean over 6144 draws is within 10 % (5.5 sigma) of its expectation."""
    G = PixelG(16)
    w_std, noise, steps = 3.0, 0.1, 8
    res = project(G, torch.zeros(8, 3, 16, 16), steps=steps, lr=0.0, initial_noise=noise, noise_ramp=0.75,
                  w_stats=(torch.zeros(G.w_dim, dtype=torch.float64), w_std), w_avg_samples=1, progress=False)
    assert torch.equal(res.ws, torch.zeros(8, G.num_ws, G.w_dim))  # lr 0: the code never moves
    for t in range(steps):
        scale = w_std * noise * max(0.0, 1.0 - (t / steps) / 0.75) ** 2
        if scale == 0:
            assert (res.loss_trace[t] == 0).all(), t
        else:
            assert res.loss_trace[t].mean() / scale**2 == pytest.approx(1.0, rel=0.1), t


def test_the_first_step_moves_nothing_and_the_second_is_an_adam_step_of_size_lr():
    """Two steps without noise: the learning rate of step 0 is 0 (linear warm-up from 0), step 1 runs at the full
    lr (frac 0.5 is past the warm-up and before the cosine fall), and Adam's bias-corrected first step of two equal
    gradients moves each coordinate by lr against the gradient's sign: to w_avg + lr * sign(target - w_avg)."""
    G = PixelG(4)
    gen = torch.Generator().manual_seed(0)
    w_avg = torch.randn(G.w_dim, generator=gen)
    gap = (0.5 + 0.4 * torch.rand(2, G.w_dim, generator=gen)) * torch.sign(torch.randn(2, G.w_dim, generator=gen))
    target = (w_avg + gap).reshape(2, 3, 4, 4)
    res = project(G, target, steps=2, lr=0.1, initial_noise=0.0, w_stats=(w_avg.double(), 1.0), progress=False)
    want = (w_avg + 0.1 * torch.sign(gap))[:, None].expand(-1, G.num_ws, -1)
    # Adam's eps 1e-8 against gradients 2 |gap| / 48 >= 0.02 and float32 rounding: far below 1e-6
    torch.testing.assert_close(res.ws, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(res.loss_trace[0], (gap**2).mean(1).numpy(), rtol=1e-6)


def test_projection_is_adam_with_the_official_betas_under_the_warm_up_and_cosine_schedule():
    """8 steps, no noise, lr_rampup 0.25, lr_rampdown 0.25: the lr factors at frac = t / 8 are 0, 0.5 (linear
    rise), 1, 1, 1, 1, 1 and 0.5 (cosine fall: 0.5 - 0.5 cos(pi (1 - 0.875) / 0.25)). The code follows Adam
    (betas 0.9, 0.999, eps 1e-8) on the gradient 2 (code - target) / P of the summed mean squared errors,
    written out here in float64."""
    G = PixelG(4)
    gen = torch.Generator().manual_seed(3)
    w_avg = torch.randn(G.w_dim, generator=gen).double()
    target = (w_avg + torch.randn(2, G.w_dim, generator=gen).double()).reshape(2, 3, 4, 4)
    res = project(G, target.float(), steps=8, lr=0.05, initial_noise=0.0, lr_rampup=0.25, lr_rampdown=0.25,
                  w_stats=(w_avg, 1.0), progress=False)
    code, m, v = w_avg.expand(2, -1).clone(), torch.zeros(2, G.w_dim).double(), torch.zeros(2, G.w_dim).double()
    flat = target.reshape(2, -1)
    for k, factor in enumerate([0, 0.5, 1, 1, 1, 1, 1, 0.5], start=1):
        grad = 2 * (code - flat) / G.w_dim
        m, v = 0.9 * m + 0.1 * grad, 0.999 * v + 0.001 * grad**2
        code = code - 0.05 * factor * (m / (1 - 0.9**k)) / ((v / (1 - 0.999**k)).sqrt() + 1e-8)
    # float32 arithmetic over 8 steps of size <= 0.05 on codes of size ~1: errors ~1e-6
    torch.testing.assert_close(res.ws[:, 0].double(), code, rtol=0, atol=2e-5)


def test_projection_optimizes_and_reports_with_the_constant_synthesis_noise():
    """lr 0, no code noise: every step's error and the result are those of G's const-noise image of W's mean."""
    G = tiny_networks("skip16")["G_ema"]
    w_avg = torch.randn(G.w_dim, generator=torch.Generator().manual_seed(1))
    target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    res = project(G, target, steps=3, lr=0.0, initial_noise=0.0, w_stats=(w_avg.double(), 1.0), progress=False)
    image = G.synthesis(w_avg.expand(2, G.num_ws, -1), noise_mode="const", force_fp32=True)
    mse = ((image - target) ** 2).flatten(1).mean(1).numpy()
    for t in range(3):
        np.testing.assert_allclose(res.loss_trace[t], mse, rtol=1e-5)
    torch.testing.assert_close(res.images, image.clamp(-1, 1), rtol=0, atol=1e-6)


def test_projected_images_are_clamped_and_scored_against_clamped_targets():
    """Half the code's pixels at 2 (drawn as 1), half at 0; targets 1.5 (read as 1): the squared error is
    (0 + 1) / 2, so 10 log10(4 / 0.5) dB."""
    G = PixelG(4)
    w_avg = torch.cat([torch.full([G.w_dim // 2], 2.0), torch.zeros(G.w_dim // 2)]).double()
    res = project(G, torch.full([1, 3, 4, 4], 1.5), steps=2, lr=0.0, initial_noise=0.0, w_stats=(w_avg, 1.0),
                  progress=False)
    assert float(res.images.max()) == 1.0 and float(res.images.min()) == 0.0
    np.testing.assert_allclose(res.psnr, [10 * math.log10(8.0)], rtol=1e-12)


def test_targets_of_another_size_are_resized_to_the_generators_resolution():
    G = PixelG(4)
    res = project(G, torch.full([1, 3, 32, 32], 0.3), steps=2, lr=0.1, initial_noise=0.0,
                  w_stats=(torch.zeros(G.w_dim, dtype=torch.float64), 1.0), progress=False)
    assert res.images.shape == (1, 3, 4, 4)
    torch.testing.assert_close(res.ws, torch.full([1, G.num_ws, G.w_dim], 0.1), rtol=0, atol=1e-6)


def test_projection_leaves_the_generators_flags_and_mode_as_they_were():
    G = PixelG(4).train()
    project(G, torch.zeros(1, 3, 4, 4), steps=2, w_stats=(torch.zeros(G.w_dim, dtype=torch.float64), 1.0),
            progress=False)
    assert G.training and G.gain.requires_grad and not G.frozen.requires_grad
    G.eval()
    project(G, torch.zeros(1, 3, 4, 4), steps=2, w_stats=(torch.zeros(G.w_dim, dtype=torch.float64), 1.0),
            progress=False)
    assert not G.training


def test_nan_targets_are_refused_before_any_step_with_a_message_about_the_targets():
    G = PixelG(4)
    bad = torch.zeros(1, 3, 4, 4)
    bad[0, 1, 2, 3] = float("inf")
    with pytest.raises(StyleGANDisentangleError, match="targets hold NaN or infinite pixels"):
        project(G, bad, steps=2, w_stats=(torch.zeros(G.w_dim, dtype=torch.float64), 1.0))


def test_w_statistics_are_the_mean_and_rms_distance_of_the_mapped_codes():
    G = tiny_networks("skip16")["G_ema"]
    z = torch.randn([300, G.z_dim], generator=torch.Generator().manual_seed(5))
    w = G.mapping(z, None)[:, 0].double()
    mean, rms = w_statistics(G, w_avg_samples=300, seed=5)
    torch.testing.assert_close(mean, w.mean(0), rtol=0, atol=1e-12)
    assert rms == pytest.approx(float(((w - w.mean(0)) ** 2).sum(1).mean().sqrt()), rel=1e-12)
    assert rms > 2 * float(((w - w.mean(0)) ** 2).mean(1).mean().sqrt())  # the distance, not a per-axis std


@pytest.fixture(scope="module")
def tiny_pkl(tmp_path_factory):
    from stylegan_disentangle.checkpoints import save_network_pkl

    path = tmp_path_factory.mktemp("net") / "tiny.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    return path


def _noise_pngs(folder, count: int, seed: int) -> list:
    """`count` 16x16 PNG files of uniform noise in `folder` (face0.png, ...)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    files = [folder / f"face{i}.png" for i in range(count)]
    for path in files:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
    return files


def test_run_projection_batches_are_each_project_with_the_runs_seed(tiny_pkl, tmp_path):
    """Every batch is `project` of its images with the run's seed and W statistics drawn with that seed; the record
    holds each image's last-step error."""
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.utils.images import load_images

    files = _noise_pngs(tmp_path, 2, seed=0)
    written = run_projection(tiny_pkl, files, tmp_path / "out", steps=3, seed=3, batch_size=1, device="cpu",
                             progress=False)
    G = load_network_pkl(tiny_pkl)["G_ema"].eval()
    targets = load_images(files, 16)
    stats = w_statistics(G, seed=3)
    ws = np.load(written["ws.npy"])
    record = json.loads((tmp_path / "out" / "projection.json").read_text())
    for i in range(2):
        alone = project(G, targets[i:i + 1], steps=3, seed=3, w_stats=stats, progress=False)
        np.testing.assert_allclose(ws[i:i + 1], alone.ws.numpy(), rtol=0, atol=1e-6)
        assert record["images"][i]["final_mse"] == pytest.approx(float(alone.loss_trace[-1, 0]), rel=1e-5)
        assert record["images"][i]["psnr_db"] == pytest.approx(float(psnr(alone.images, targets[i:i + 1])[0]),
                                                               rel=1e-5)


def test_run_projection_holds_at_most_the_pixel_budget_per_batch(tiny_pkl, tmp_path, monkeypatch):
    """A budget of two 16x16 images: `--batch-size 8` projects three files as batches of 2 and 1, the same codes as
    asking for batch_size 2, and config.json records what was asked and what was used."""
    from stylegan_disentangle.analysis import projection

    files = _noise_pngs(tmp_path, 3, seed=1)
    asked = run_projection(tiny_pkl, files, tmp_path / "two", steps=2, seed=1, batch_size=2, device="cpu",
                           progress=False)
    monkeypatch.setattr(projection, "PROJECTION_PIXEL_BUDGET", 2 * 16 * 16)
    sizes = []
    original = projection.project
    monkeypatch.setattr(projection, "project", lambda G, targets, **kw: sizes.append(len(targets))
                        or original(G, targets, **kw))
    capped = run_projection(tiny_pkl, files, tmp_path / "capped", steps=2, seed=1, batch_size=8, device="cpu",
                            progress=False)
    assert sizes == [2, 1]
    np.testing.assert_array_equal(np.load(capped["ws.npy"]), np.load(asked["ws.npy"]))
    config = json.loads((tmp_path / "capped" / "config.json").read_text())["args"]
    assert (config["batch_size"], config["batch_size_used"]) == (8, 2)


def test_a_conditional_network_needs_the_class_to_project_into():
    G = tiny_networks("resnet_cond16")["G_ema"]
    target = torch.zeros(1, 3, 16, 16)
    for stats in (None, (torch.zeros(G.w_dim, dtype=torch.float64), 1.0)):
        with pytest.raises(StyleGANDisentangleError, match=r"conditional \(3 classes\): give the class"):
            project(G, target, steps=2, w_stats=stats, w_avg_samples=10)
    with pytest.raises(StyleGANDisentangleError, match=r"class_idx must be in \[0, 3\)"):
        project(G, target, steps=2, class_idx=3, w_avg_samples=10)


# ---------------------------------------------------------------------- edit: layers, units, rendering
def _unit(i: int, d: int) -> np.ndarray:
    v = np.zeros(d, np.float32)
    v[i] = 1
    return v


@pytest.fixture(scope="module")
def tiny_G():
    return tiny_networks("skip16")["G_ema"]


def test_parse_layers_refuses_an_empty_range_negative_indices_and_booleans():
    from stylegan_disentangle.analysis.edit import parse_layers
    from stylegan_disentangle.errors import UsageError

    with pytest.raises(UsageError, match="0 <= START < STOP"):
        parse_layers("3:3")
    for bad in ([-1], [True, 2], [1, False]):
        with pytest.raises(UsageError, match="non-negative integer ws indices"):
            parse_layers(bad)
    assert parse_layers(" ALL ") is None and parse_layers("All") is None


def test_sigma_steps_use_the_named_directions_own_std(tiny_G):
    from stylegan_disentangle.analysis.edit import edit
    from stylegan_disentangle.directions import DirectionSet

    d = tiny_G.w_dim
    ds = DirectionSet(["a", "b:+x"], np.stack([_unit(0, d), _unit(1, d)]),
                      extras={"std": np.array([2.0, 0.25], np.float32)})
    ws = torch.zeros(1, tiny_G.num_ws, d)
    out = edit(tiny_G, ws, ds, "b", [4.0], step_unit="sigma")
    assert torch.equal(out[0, 0, :, 1], torch.full([tiny_G.num_ws], 1.0))  # 4 stds of 0.25
    assert torch.count_nonzero(out[0, 0, :, 0]) == 0


def test_an_edit_step_that_overflows_float32_is_refused_by_name(tiny_G):
    from stylegan_disentangle.analysis.edit import edit
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.errors import LatentError

    ds = DirectionSet(["a"], _unit(0, tiny_G.w_dim)[None])
    with pytest.raises(LatentError, match="edited ws contains NaN or inf"):
        edit(tiny_G, torch.zeros(1, tiny_G.num_ws, tiny_G.w_dim), ds, "a", [1e39])


def test_direction_offset_refuses_per_layer_vectors_over_another_number_of_ws():
    from stylegan_disentangle.analysis.edit import direction_offset
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.errors import LatentError

    per_layer = DirectionSet(["p"], np.ones((1, 3, 4), np.float32) / np.sqrt(12))
    assert direction_offset(per_layer, "p", 3).shape == (3, 4)
    with pytest.raises(LatentError, match="per-layer vectors for 3 ws layers, the generator has 4"):
        direction_offset(per_layer, "p", 4)


def test_render_of_no_codes_is_an_empty_image_batch_of_the_generators_shape(tiny_G):
    from stylegan_disentangle.analysis.edit import render

    assert render(tiny_G, torch.zeros(0, tiny_G.num_ws, tiny_G.w_dim)).shape == (0, 3, 16, 16)


def test_render_and_edit_use_the_noise_mode_asked_for(tiny_G):
    from stylegan_disentangle.analysis.edit import edit, render
    from stylegan_disentangle.directions import DirectionSet

    ws = torch.randn(2, tiny_G.num_ws, tiny_G.w_dim, generator=torch.Generator().manual_seed(0))
    none = tiny_G.synthesis(ws, noise_mode="none", force_fp32=True)
    assert not torch.allclose(none, tiny_G.synthesis(ws, noise_mode="const", force_fp32=True), atol=1e-3)
    torch.testing.assert_close(render(tiny_G, ws, noise_mode="none"), none, rtol=0, atol=1e-6)
    ds = DirectionSet(["a"], _unit(0, tiny_G.w_dim)[None])
    _, img = edit(tiny_G, ws, ds, "a", [0.0], return_images=True, noise_mode="none")
    torch.testing.assert_close(img[0], none, rtol=0, atol=1e-6)


def test_render_runs_fp16_layers_in_float32_on_the_cpu():
    from stylegan_disentangle.analysis.edit import render

    G = tiny_networks("resnet_cond16")["G_ema"]
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(render(G, ws), G.synthesis(ws, noise_mode="const", force_fp32=True),
                               rtol=0, atol=1e-6)


# ---------------------------------------------------------------------- the edit runner
def _capture_grids(monkeypatch) -> list:
    import importlib

    module = importlib.import_module("stylegan_disentangle.analysis.run_edit")  # the package exports the function
    grids = []

    def capture(grid, path, row_labels=None, col_labels=None, title=None):
        grids.append(dict(grid=grid, rows=row_labels, cols=col_labels))
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(module, "plot_edit_grid", capture)
    return grids


def test_run_edit_auto_sigma_truncation_short_ids_noise_mode_and_grid_rows(tiny_pkl, tmp_path, monkeypatch):
    """A set with stds edits in stds ('auto'), from the truncated official seeds, under the set's full name for a
    short id; the grid has one row per seed and one column per step, rendered with the noise mode asked for."""
    from stylegan_disentangle.analysis.edit import render
    from stylegan_disentangle.analysis.run_edit import run_edit
    from stylegan_disentangle.checkpoints import load_network_pkl
    from stylegan_disentangle.directions import DirectionSet
    from stylegan_disentangle.latents import sample_latents

    grids = _capture_grids(monkeypatch)
    G = load_network_pkl(tiny_pkl)["G_ema"].eval()
    d = G.w_dim
    ds = DirectionSet(["e0:+proj", "e1"], np.stack([_unit(0, d), _unit(1, d)]),
                      extras={"std": np.array([2.0, 0.5], np.float32)})
    written = run_edit(tiny_pkl, ds, "e0", steps=[0.0, 1.0], seeds=[0, 1, 2], outdir=tmp_path / "e",
                       truncation_psi=0.5, noise_mode="none", device="cpu")
    assert list(written) == ["e0:+proj"] and written["e0:+proj"]["ws"] == str(tmp_path / "e" / "ws_e0_+proj.npy")
    ws = np.load(tmp_path / "e" / "ws_e0_+proj.npy")
    base = sample_latents(G, [0, 1, 2], 0.5).ws.numpy()
    assert ws.shape == (2, 3, G.num_ws, d)
    np.testing.assert_array_equal(ws[0], base)
    np.testing.assert_allclose(ws[1] - ws[0], np.broadcast_to(2.0 * _unit(0, d), base.shape), rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["args"]["step_unit"] == "sigma" and config["args"]["names"] == ["e0:+proj"]
    assert config["args"]["seeds"] == [0, 1, 2] and config["args"]["ws_file"] is None
    (grid,) = grids
    assert grid["grid"].shape == (3, 2, 3, 16, 16) and grid["rows"] == ["seed 0", "seed 1", "seed 2"]
    want = render(G, torch.as_tensor(ws).transpose(0, 1).reshape(-1, G.num_ws, d), noise_mode="none")
    torch.testing.assert_close(grid["grid"].reshape(-1, 3, 16, 16), want, rtol=0, atol=1e-6)


def test_run_edit_of_a_codes_file_records_no_seeds_and_names_digits_in_file_names(tiny_pkl, tmp_path, monkeypatch):
    from stylegan_disentangle.analysis.run_edit import run_edit
    from stylegan_disentangle.directions import DirectionSet

    _capture_grids(monkeypatch)
    codes = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.save(tmp_path / "w.npy", codes)
    ds = DirectionSet(["pc7"], _unit(7, 8)[None])
    run_edit(tiny_pkl, ds, ["pc7"], steps=[-1.0, 1.0], outdir=tmp_path / "e", ws_file=tmp_path / "w.npy",
             device="cpu")
    ws = np.load(tmp_path / "e" / "ws_pc7.npy")
    np.testing.assert_allclose(ws[1] - ws[0], np.broadcast_to(2.0 * _unit(7, 8), ws[0].shape), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ws.mean(0), np.broadcast_to(codes[:, None], ws[0].shape), rtol=0, atol=1e-6)
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["args"]["seeds"] is None and config["args"]["step_unit"] == "w"


def test_run_edit_refuses_no_names_and_codes_files_that_hold_no_float_codes(tiny_pkl, tmp_path):
    from stylegan_disentangle.analysis.run_edit import read_npy_codes, run_edit
    from stylegan_disentangle.directions import DirectionSet

    with pytest.raises(StyleGANDisentangleError, match="name at least one direction"):
        run_edit(tiny_pkl, DirectionSet(["a"], _unit(0, 8)[None]), [], outdir=tmp_path / "e", device="cpu")
    assert not (tmp_path / "e").exists()
    np.save(tmp_path / "int.npy", np.zeros((2, 8), np.int64))
    with pytest.raises(StyleGANDisentangleError, match="int.npy: not an .npy of ws: it holds int64 values"):
        read_npy_codes(tmp_path / "int.npy")
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    with pytest.raises(StyleGANDisentangleError, match=r"empty.npy: not an .npy of ws: it holds no codes"):
        read_npy_codes(tmp_path / "empty.npy")
    (tmp_path / "text.npy").write_bytes(b"0.5 0.25\n")
    with pytest.raises(StyleGANDisentangleError, match="not an .npy file"):
        read_npy_codes(tmp_path / "text.npy")


# ---------------------------------------------------------------------- rendered label effects
def _ws_labeler(fn, names):
    from stylegan_disentangle.labels import labeler_from_callable

    return labeler_from_callable(fn, names, needs_ws=True, needs_images=False)


def _dyadic_ws(n: int = 4, w_dim: int = 6, num_ws: int = 2) -> torch.Tensor:
    """Codes whose values are multiples of 1/4: sums and differences with unit steps are exact in float32."""
    ws = torch.arange(n * w_dim, dtype=torch.float32).reshape(n, 1, w_dim) / 4 - 2
    return ws.expand(-1, num_ws, -1).contiguous()


def test_label_effects_of_a_quadratic_label_have_the_known_mean_and_standard_error():
    """y = (w . u)^2: the central difference along v is exactly 2 (w . u)(v . u) per sample for any step, so
    per_unit = 2 (u . v) mean(a), stderr = 2 |u . v| std(a, ddof 1) / sqrt(N); label_std = std(y, ddof 1)."""
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    G = PixelG(1)  # w_dim 3
    u = torch.tensor([0.5, -1.0, 0.25])
    v = np.array([[0.6, 0.8, 0.0]], np.float32)
    ds = DirectionSet(["v"], v, extras={"std": np.array([0.5], np.float32)})
    ws = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))[:, None].expand(-1, G.num_ws, -1)
    eff = measure_label_effects(G, ws, ds, _ws_labeler(lambda img, ws: (ws[:, 0] @ u) ** 2, "y"), step=3.0)
    a = (ws[:, 0] @ u).double().numpy()
    b = float(v[0] @ u.numpy())
    assert eff.per_unit[0, 0] == pytest.approx(2 * b * a.mean(), rel=1e-4)
    assert eff.stderr[0, 0] == pytest.approx(2 * abs(b) * a.std(ddof=1) / np.sqrt(6), rel=1e-4)
    assert eff.label_std[0] == pytest.approx((a**2).std(ddof=1), rel=1e-5)
    np.testing.assert_allclose(eff.step_w, [1.5])  # 3 stds of 0.5
    assert eff.effects[0, 0] == pytest.approx(eff.per_unit[0, 0] * 0.5 / eff.label_std[0], rel=1e-12)


def test_exactly_consistent_changes_have_an_unbounded_t_and_a_signed_name():
    """y = w[0] on dyadic codes: every sample changes by exactly -1 per unit step along -e0, by +1 along e0 (stderr
    0: |t| infinite), by 0 along e1 (t = 0); a negative effect is named with '-'."""
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    G = PixelG(1)
    ds = DirectionSet(["neg", "pos", "none"], np.stack([-_unit(0, 3), _unit(0, 3), _unit(1, 3)]))
    eff = measure_label_effects(G, _dyadic_ws(4, 3), ds, _ws_labeler(lambda img, ws: ws[:, 0, 0], "x"),
                                step=1.0, step_unit="w")
    np.testing.assert_array_equal(eff.per_unit[:, 0], [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(eff.stderr[:, 0], [0.0, 0.0, 0.0])
    t = eff.t_stat[:, 0]
    assert t.tolist() == [-np.inf, np.inf, 0.0]
    record = eff.to_dict()["directions"]
    assert record["none"]["t_stat"]["x"] == 0.0
    assert eff.suggested_names() == ["neg:-x", "pos:+x", "none"]
    # no std stored for the directions: effects are per unit W step / label std
    np.testing.assert_array_equal(eff.effects[:, 0], eff.per_unit[:, 0] / eff.label_std[0])
    assert np.isnan(eff.direction_std).all() and record["pos"]["direction_std"] is None


def test_a_constant_label_has_zero_effect_and_a_zero_std_falls_back_to_w_units():
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    G = PixelG(1)
    ds = DirectionSet(["a"], _unit(0, 3)[None])
    lab = _ws_labeler(lambda img, ws: torch.stack([ws[:, 0, 0], torch.ones(len(ws))], 1), ["x", "const"])
    eff = measure_label_effects(G, _dyadic_ws(4, 3), ds, lab, step=0.5, direction_std=[0.0])
    np.testing.assert_array_equal(eff.step_w, [0.5])
    assert eff.per_unit.tolist() == [[1.0, 0.0]] and eff.label_std[1] == 0 and eff.effects[0, 1] == 0.0


def test_top_labels_rank_by_size_and_select_labels_keeps_each_labels_std():
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    G = PixelG(1)
    ds = DirectionSet(["a"], _unit(0, 3)[None])
    lab = _ws_labeler(lambda img, ws: torch.stack([0.5 * ws[:, 0, 0], -3 * ws[:, 0, 0]], 1), ["small", "big"])
    eff = measure_label_effects(G, _dyadic_ws(4, 3), ds, lab, label_std=[1.0, 2.0])
    assert eff.top_labels(1) == {"a": [("big", -1.5)]}
    picked = eff.select_labels(["big"])
    assert picked.label_std.tolist() == [2.0] and picked.effects.tolist() == [[-1.5]]


def test_label_effects_take_a_directions_short_id():
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    ds = DirectionSet(["a:+x", "b"], np.stack([_unit(0, 3), _unit(1, 3)]))
    eff = measure_label_effects(PixelG(1), _dyadic_ws(4, 3), ds, _ws_labeler(lambda img, ws: ws[:, 0, 0], "x"),
                                names=["a"], label_std=[1.0])
    assert eff.direction_names == ["a:+x"] and eff.per_unit.tolist() == [[1.0]]


def test_a_map_labels_size_is_the_root_mean_square_of_its_mean_change_map():
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    pattern = torch.tensor([[1.0, -2.0], [0.0, 3.0]])
    lab = _ws_labeler(lambda img, ws: {"m": ws[:, 0, 0, None, None] * pattern}, ["m"])
    ds = DirectionSet(["a"], _unit(0, 3)[None])
    eff = measure_label_effects(PixelG(1), _dyadic_ws(4, 3), ds, lab, label_std=[1.0])
    np.testing.assert_array_equal(eff.change_maps["m"][0], pattern.numpy())
    assert eff.per_unit[0, 0] == pytest.approx(math.sqrt((1 + 4 + 0 + 9) / 4), rel=1e-12)


@pytest.mark.parametrize("kwargs, match", [
    (dict(step=0.0), "step must be a finite positive number, got 0.0"),
    (dict(step_unit="std"), "step_unit must be 'w' or 'sigma', got 'std'"),
    (dict(direction_std=[1.0, 2.0]), "direction_std has 2 values for 1 directions"),
    (dict(label_std={"y": 1.0}), r"label_std has no value for labels \['x'\]"),
    (dict(label_std=[1.0, 2.0]), r"label_std has 2 values for labels \['x'\]"),
])
def test_label_effects_refuse_bad_settings_by_name(kwargs, match):
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    ds = DirectionSet(["a"], _unit(0, 3)[None])
    with pytest.raises(StyleGANDisentangleError, match=match):
        measure_label_effects(PixelG(1), _dyadic_ws(4, 3), ds, _ws_labeler(lambda img, ws: ws[:, 0, 0], "x"),
                              **kwargs)


def test_a_name_is_suggested_at_exactly_the_minimum_effect_and_namings_agree_only_in_sign_too():
    from types import SimpleNamespace

    from stylegan_disentangle.analysis.effects import LabelEffects, compare_namings

    one = np.ones((1, 1))
    eff = LabelEffects(["d"], ["x"], 4, np.ones(1), one * 0.25, one * 0.01, np.ones(1), np.ones(1), one * 0.25)
    assert eff.suggested_names(min_effect=0.25) == ["d:+x"] and eff.suggested_names(min_effect=0.26) == ["d"]
    same = SimpleNamespace(base_names=["d"], table=[[("x", 0.3)]])
    flipped = SimpleNamespace(base_names=["d"], table=[[("x", -0.3)]])
    assert compare_namings(eff, same)["d"]["agree"] is True
    assert compare_namings(eff, flipped)["d"] == {"rendered_top": "x", "rendered_effect": 0.25, "sample_top": "x",
                                                  "sample_effect": -0.3, "agree": False}


# ---------------------------------------------------------------------- image sensitivity
class ChannelG(torch.nn.Module):
    """Image `[C, 2, 2]` = `0.5 * w @ mix` per channel (mix `[w_dim, C]`), the same at every pixel."""

    def __init__(self, mix: list[list[float]]) -> None:
        super().__init__()
        self.mix = torch.nn.Parameter(torch.tensor(mix))
        self.w_dim, self.img_channels = self.mix.shape
        self.num_ws, self.img_resolution = 2, 2

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", force_fp32: bool = True) -> torch.Tensor:
        return (0.5 * ws[:, 0] @ self.mix)[:, :, None, None].expand(-1, -1, 2, 2)


def test_chroma_sensitivity_of_a_colour_change_has_the_known_value_and_white_light_has_none():
    """At w = 0 every channel's linear intensity is 1/2; w0 moves red, w1 green, each by 1/4 per unit (in [0, 1]).
    d log(I + eps) / dw = g = 0.25 / (0.5 + CHROMA_EPS); centred over the 3 channels the red column is
    (2/3, -1/3, -1/3) g: K = g^2 [[2, -1], [-1, 2]] / 9, while the image Gram M = diag(1/12, 1/12)."""
    from stylegan_disentangle.analysis.sensitivity import CHROMA_EPS, sensitivities

    colour = ChannelG([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m, k = sensitivities(colour, np.zeros((2, 2)), step=1e-3, progress=False)
    np.testing.assert_allclose(m, np.eye(2) / 12, rtol=1e-3)
    g = 0.25 / (0.5 + CHROMA_EPS)
    # forward differences of the log: O(step) curvature and float32 rounding of 1e-3 steps, well under 1 %
    np.testing.assert_allclose(k, g**2 * np.array([[2.0, -1.0], [-1.0, 2.0]]) / 9, rtol=1e-2)
    white = ChannelG([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])  # w0 scales every channel alike: white light
    m, k = sensitivities(white, np.zeros((2, 2)), step=1e-3, progress=False)
    assert m[0, 0] == pytest.approx(0.25, rel=1e-3) and np.abs(k).max() < 1e-6


def test_a_one_channel_generator_has_no_chroma_sensitivity():
    from stylegan_disentangle.analysis.sensitivity import sensitivities

    m, k = sensitivities(ChannelG([[1.0], [2.0]]), np.zeros((1, 2)), step=1e-3, progress=False)
    assert k is None
    np.testing.assert_allclose(m, np.array([[1.0, 2.0], [2.0, 4.0]]) / 4, rtol=1e-3)


def test_image_sensitivity_counts_only_the_cropped_part():
    """Top-left pixel moved by w0, the rest by w1: cropped to the top-left quarter, only w0 is seen."""
    from stylegan_disentangle.analysis.sensitivity import image_sensitivity

    class Quadrants(ChannelG):
        def synthesis(self, ws, noise_mode="const", force_fp32=True):
            img = ws[:, 0, 1, None, None, None].expand(-1, 1, 2, 2).clone()
            img[:, :, 0, 0] = ws[:, 0, 0, None]
            return img

    G = Quadrants([[1.0], [1.0]])
    np.testing.assert_allclose(image_sensitivity(G, np.zeros((1, 2)), progress=False),
                               np.diag([0.25, 0.75]), rtol=1e-3)
    np.testing.assert_allclose(image_sensitivity(G, np.zeros((1, 2)), crop=(0, 0, 0.5, 0.5), progress=False),
                               np.diag([1.0, 0.0]), rtol=1e-3, atol=1e-9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(step=0.0), "step must be > 0, got 0.0"),
    (dict(resolution=0), "resolution must be an integer >= 1 or None, got 0"),
    (dict(batch_size=0), "batch_size must be an integer >= 1, got 0"),
])
def test_image_sensitivity_refuses_bad_settings_by_name(kwargs, match):
    from stylegan_disentangle.analysis.sensitivity import image_sensitivity

    with pytest.raises(ValueError, match=match):
        image_sensitivity(ChannelG([[1.0], [2.0]]), np.zeros((1, 2)), progress=False, **kwargs)


# ---------------------------------------------------------------------- footprints
def test_footprints_are_shown_by_size_each_scaled_to_its_own_peak():
    from matplotlib import colormaps

    from stylegan_disentangle.analysis.footprints import footprint_images

    fp = np.array([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [-0.5, -1.0]]], np.float32)
    img = footprint_images(fp, 2)
    colour = torch.as_tensor(colormaps["magma"](np.array([1.0, 0.5, 0.0]))[:, :3], dtype=torch.float32) * 2 - 1
    torch.testing.assert_close(img[0, :, 0, 0], colour[0])
    torch.testing.assert_close(img[0, :, 0, 1], colour[1])
    torch.testing.assert_close(img[1, :, 1, 1], colour[0])  # a negative footprint: its size counts
    torch.testing.assert_close(img[1, :, 1, 0], colour[1])
    torch.testing.assert_close(img[1, :, 0, 0], colour[2])
    with pytest.raises(StyleGANDisentangleError, match=r"footprints must be \[K, R, R\], got shape \(2, 2\)"):
        footprint_images(fp[0], 2)


def test_a_sheet_of_one_channel_strips_is_drawn_in_grey(tmp_path, monkeypatch):
    from stylegan_disentangle.analysis import footprints

    captured = {}

    def capture(grid, path, row_labels=None, col_labels=None, title=None):
        captured["grid"] = grid
        return path

    monkeypatch.setattr(footprints, "plot_edit_grid", capture)
    strips = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 1, 4, 4)
    footprints.plot_footprint_sheet(np.ones((2, 4, 4)), strips, tmp_path / "s.png", ["a", "b"])
    grid = captured["grid"]
    assert grid.shape == (2, 4, 3, 4, 4)
    for c in range(3):
        torch.testing.assert_close(grid[:, 1:, c], strips[:, :, 0])


# ---------------------------------------------------------------------- defects found by the audit (fixed)
def test_an_exactly_consistent_change_has_an_infinite_t_as_documented():
    from stylegan_disentangle.analysis.effects import LabelEffects

    z = np.zeros((2, 1))
    eff = LabelEffects(["neg", "pos"], ["x"], 4, np.ones(2), np.array([[-1.0], [1.0]]), z, np.ones(2), np.ones(1),
                       np.array([[-1.0], [1.0]]))
    assert eff.t_stat[:, 0].tolist() == [-np.inf, np.inf]
    record = eff.to_dict()["directions"]
    assert record["neg"]["t_stat"]["x"] == "-inf" and record["pos"]["t_stat"]["x"] == "inf"


def test_label_effects_of_no_directions_are_refused_by_name():
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    ds = DirectionSet(["a"], _unit(0, 3)[None])
    with pytest.raises(StyleGANDisentangleError, match="no directions to measure"):
        measure_label_effects(PixelG(1), _dyadic_ws(4, 3), ds, _ws_labeler(lambda img, ws: ws[:, 0, 0], "x"),
                              names=[])


@pytest.mark.parametrize("step", [float("nan"), float("inf")])
def test_label_effects_refuse_a_step_that_is_not_a_finite_positive_number(step):
    from stylegan_disentangle.analysis.effects import measure_label_effects
    from stylegan_disentangle.directions import DirectionSet

    ds = DirectionSet(["a"], _unit(0, 3)[None])
    with pytest.raises(StyleGANDisentangleError, match="step must be a finite positive number"):
        measure_label_effects(PixelG(1), _dyadic_ws(4, 3), ds, _ws_labeler(lambda img, ws: ws[:, 0, 0], "x"),
                              step=step)
