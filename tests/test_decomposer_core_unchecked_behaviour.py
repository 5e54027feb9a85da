"""Mutation audit of the decomposer's core: the scalings of the raw outputs, the labels read from them, the
reconstruction, the renderer's camera and shading, and the trainer's loss terms and argument checks. Each test pins
a behaviour that a plausible slip in the code (a sign, a scale, a range, an ignored option) would change and that no
other test checked."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from stylegan_disentangle.errors import CheckpointError, StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer import DecomposerError, Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import DecomposerLabeler, load_decomposer, scalar_labels
from stylegan_disentangle.labels.decomposer.light_teacher import LatentLightTeacher
from stylegan_disentangle.labels.decomposer.reconstruction import (
    MIN_SHADING,
    image_albedo,
    reconstruct,
    reconstruction_loss,
    renderer_for,
    view_degrees,
)
from stylegan_disentangle.labels.decomposer.renderer import Renderer
from stylegan_disentangle.labels.decomposer.trainer import (
    _batch_losses,
    _jitter_loss,
    _Objective,
    gradient_sparsity,
    total_variation,
    train_decomposer,
)

TINY = dict(nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)


def _tiny(seed: int = 0, **kwargs) -> Unsup3DDecomposer:
    torch.manual_seed(seed)
    return Unsup3DDecomposer(image_size=32, **{**TINY, **kwargs}).eval()


def _images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


class _Constant(nn.Module):
    """Stands in for netL / netV: the same raw output [K] for every image."""

    def __init__(self, raw: list[float]) -> None:
        super().__init__()
        self.raw = nn.Parameter(torch.tensor(raw), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.raw.expand(x.shape[0], -1).clone()


# ---------------------------------------------------------------------------------------------- model scalings
def test_scale_light_applies_xy_light_range_to_the_direction_and_each_intensity_its_own_range():
    dec = _tiny(xy_light_range=2.0, min_amb_light=0.2, max_amb_light=0.6, min_diff_light=0.1, max_diff_light=0.9)
    out = dec.scale_light(torch.tensor([[0.0, 0.5, 0.5, -0.25]]))
    # ambient: the middle of [0.2, 0.6]; diffuse: 3/4 of the way through [0.1, 0.9]; (dx, dy) = raw * 2
    torch.testing.assert_close(out["light"], torch.tensor([[0.4, 0.7, 1.0, -0.5]]), rtol=0, atol=1e-6)
    torch.testing.assert_close(out["light_dir"], torch.tensor([[1.0, -0.5, 1.0]]) / 1.5, rtol=0, atol=1e-6)
    assert dec.scale_light(torch.tensor([[-1.0, 1.0, 0.0, 0.0]]))["light"][0, :2].tolist() == pytest.approx([0.2, 0.9])


def test_rotation_deg_is_the_views_rotations_in_degrees():
    dec = _tiny()
    dec.netV = _Constant([0.5, -0.25, 1.0, 0.5, -1.0, 0.0])
    out = dec.decompose(_images(2), parts=["view"])
    torch.testing.assert_close(out["rotation_deg"], torch.tensor([[30.0, -15.0, 60.0]] * 2), rtol=0, atol=1e-4)
    torch.testing.assert_close(out["view"][:, :3], torch.deg2rad(out["rotation_deg"]), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------------------------- labeler
def test_scalar_labels_name_each_rotation_translation_and_light_in_world_units():
    out = {"rotation_deg": torch.tensor([[10.0, 20.0, 30.0]]),
           "view": torch.tensor([[0.1, 0.2, 0.3, 0.01, 0.02, 0.03]]),
           "light": torch.tensor([[0.3, 0.6, -1.0, 0.0]])}
    labels = {k: float(v[0]) for k, v in scalar_labels(out).items()}
    assert labels["pitch"] == 10.0 and labels["yaw"] == 20.0 and labels["roll"] == 30.0  # rx, ry, rz in degrees
    assert labels["tx"] == pytest.approx(0.01) and labels["ty"] == pytest.approx(0.02)
    assert labels["tz"] == pytest.approx(0.03)
    assert labels["light_ambient"] == pytest.approx(0.3) and labels["light_diffuse"] == pytest.approx(0.6)
    # dx = -1: the light comes from image right at 45 degrees, level
    assert labels["light_azimuth"] == pytest.approx(45.0, abs=1e-4)
    assert labels["light_elevation"] == pytest.approx(0.0, abs=1e-4)


def test_the_labelers_light_ranges_are_in_degrees_and_each_intensity_has_its_own():
    lab = DecomposerLabeler(_tiny(xy_light_range=2.0, min_amb_light=0.1, max_amb_light=0.5, min_diff_light=0.2,
                                  max_diff_light=0.9), maps=False)
    assert lab.value_ranges["light_ambient"] == (0.1, 0.5) and lab.value_ranges["light_diffuse"] == (0.2, 0.9)
    bound = math.degrees(math.atan(2.0))  # 63.4 degrees
    assert lab.value_ranges["light_azimuth"] == pytest.approx((-bound, bound))
    assert lab.value_ranges["light_elevation"] == pytest.approx((-bound, bound))
    assert lab.value_ranges["yaw"] == (-60.0, 60.0) and lab.value_ranges["tz"] == (0.0, 0.0)


def test_the_labelers_confidence_is_netCs_map_for_the_reconstruction_not_its_mirror():
    dec = _tiny()
    img = _images(2)
    with torch.no_grad():
        want = dec.decompose(img, parts=["confidence"])["conf_sigma_l1"][:, 0]
    got = DecomposerLabeler(dec)(img)["confidence"]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_load_decomposer_reads_the_scalings_and_generator_of_the_json_beside_the_checkpoint(tmp_path):
    path = _tiny().save(tmp_path / "dec.pth")
    (tmp_path / "dec.json").write_text(json.dumps({"scalings": {"xy_light_range": 2.0, "border_depth": 1.05},
                                                   "generator_sha256": "ab" * 32}))
    dec = load_decomposer(path)
    assert dec.xy_light_range == 2.0 and dec.border_depth == 1.05 and dec.trained_on == "ab" * 32


def test_load_decomposer_reads_a_training_states_config_beside_the_checkpoint(tmp_path):
    path = _tiny().save(tmp_path / "checkpoint.pth")
    state = {"config": {"decomposer": {**TINY, "image_size": 32, "xyz_rotation_range": 45.0}},
             "generator_sha256": "cd" * 32}
    (tmp_path / "train_state.json").write_text(json.dumps(state))
    dec = load_decomposer(path)
    assert dec.xyz_rotation_range == 45.0 and dec.trained_on == "cd" * 32


def test_a_side_file_that_sets_a_size_or_a_short_fingerprint_is_refused_or_ignored(tmp_path):
    path = _tiny().save(tmp_path / "dec.pth")
    side = tmp_path / "dec.json"
    side.write_text(json.dumps({"scalings": {"nf": 32}}))
    with pytest.raises(CheckpointError, match=r"dec\.json.*\['nf'\].*cannot be set here"):
        load_decomposer(path)
    side.write_text(json.dumps({"scalings": {"fov": 12.0}, "generator_sha256": "ab"}))  # not a sha256
    dec = load_decomposer(path)
    assert dec.fov == 12.0 and dec.trained_on is None


# ---------------------------------------------------------------------------------------------- reconstruction
def test_reconstruction_loss_weighs_the_flipped_term_by_lam_flip():
    x = torch.zeros(1, 3, 2, 2)
    out = {"input": x, "mask": torch.ones(1, 1, 2, 2), "recon": torch.full_like(x, 0.5),
           "recon_flip": torch.full_like(x, 0.1)}
    for lam in (0.0, 2.0):
        loss = reconstruction_loss(out, lam_flip=lam)
        assert float(loss["total"]) == pytest.approx(0.5 + lam * 0.1, rel=1e-6)


def test_view_degrees_converts_only_the_rotations():
    view = torch.tensor([[math.pi / 2, -math.pi / 4, math.pi, 0.1, -0.2, 0.3]])
    torch.testing.assert_close(view_degrees(view), torch.tensor([[90.0, -45.0, 180.0, 0.1, -0.2, 0.3]]))


def test_reconstruct_renders_the_decomposition_and_its_mirror_twin_under_both_masks():
    """recon / recon_flip are the renderer's images of (depth, albedo) and of their mirror images, under the view in
    degrees, both zeroed outside the product of the two renders' masks."""
    dec = _tiny()
    with torch.no_grad():
        dec.netD.network[-1].weight.mul_(20)  # a lopsided depth: the two renders differ and leave gaps
    dec.netV = _Constant([0.1, 0.5, 0.05, 0.0, 0.0, 0.0])  # pitch 6, yaw 30, roll 3 degrees
    dec.netL = _Constant([0.0, 0.5, 0.3, -0.2])
    with torch.no_grad():
        out = reconstruct(dec, _images(2))
        view = torch.tensor([[6.0, 30.0, 3.0, 0.0, 0.0, 0.0]] * 2)
        torch.testing.assert_close(out["view_deg"], view, rtol=0, atol=1e-4)
        renderer = renderer_for(dec)
        depth, albedo = out["canon_depth"].unsqueeze(1), out["canon_albedo"]
        own = renderer.render(depth, albedo, out["light"], view)
        mirrored = renderer.render(depth.flip(-1), albedo.flip(-1), out["light"], view)
    mask = own["mask"] * mirrored["mask"]
    assert float(mask.mean()) < 0.99  # some pixels are dropped
    assert not torch.allclose(own["image"] * mask, mirrored["image"] * mask, atol=1e-2)
    torch.testing.assert_close(out["mask"], mask, rtol=0, atol=0)
    torch.testing.assert_close(out["recon"], own["image"] * mask, rtol=0, atol=1e-5)
    torch.testing.assert_close(out["recon_flip"], mirrored["image"] * mask, rtol=0, atol=1e-5)
    assert torch.all(out["recon"][(mask == 0).expand_as(out["recon"])] == 0)


# ---------------------------------------------------------------------------------------------- trainer
class _StubTeacher:
    """Stands in for a fitted LatentLightTeacher in `_batch_losses`: its loss pulls the ambient light to 1."""

    def loss(self, light: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return (light[:, 0] - 1).pow(2).mean()


def _objective(**terms) -> _Objective:
    base = dict(lam_flip=0.5, lam_perc=0.0, lam_smooth=0.0, lam_rerender=0.0, lam_jitter=0.0)
    return _Objective(**{**base, **terms})


def test_batch_losses_total_is_each_logged_term_times_its_own_weight():
    dec = _tiny(seed=3).train()
    img, twins = _images(3, seed=4), _images(3, seed=5)
    weights = dict(lam_smooth=0.3, lam_albedo_tv=0.2, lam_albedo_sparse=0.4, lam_rerender=0.7, lam_jitter=0.6,
                   lam_light_turn=0.25)
    obj = _objective(lam_flip=2.0, albedo_sparse_p=0.7, light_turn_yaw=20.0, **weights)
    with torch.no_grad():
        losses, total, out = _batch_losses(dec, None, None, obj, None, 0, torch.Generator().manual_seed(0), img,
                                           twins, None, None)
    assert set(losses) == {"l1", "l1_flip", "total", "smooth", "albedo_tv", "albedo_sparse", "rerender", "jitter",
                           "light_turn"}
    want = losses["l1"] + 2.0 * losses["l1_flip"] + sum(
        lam * losses[k] for k, lam in zip(("smooth", "albedo_tv", "albedo_sparse", "rerender", "jitter",
                                           "light_turn"), weights.values()))
    assert float(total) == pytest.approx(float(want), rel=1e-5)
    # each term is the documented function of the decomposition (the sparsity with the objective's exponent)
    assert float(losses["smooth"]) == pytest.approx(float(total_variation(out["canon_depth"])), rel=1e-6)
    assert float(losses["albedo_tv"]) == pytest.approx(float(total_variation(out["canon_albedo"])), rel=1e-6)
    assert float(losses["albedo_sparse"]) == pytest.approx(float(gradient_sparsity(out["canon_albedo"], 0.7)),
                                                           rel=1e-6)
    assert float(losses["jitter"]) == pytest.approx(float(_jitter_loss(dec, twins, out)), rel=1e-5)


def test_batch_losses_hold_the_stabilizers_back_until_stabilize_after():
    dec = _tiny(seed=3).train()
    obj = _objective(lam_rerender=1.0, lam_jitter=0.5, stabilize_after=5)
    with torch.no_grad():
        early, _, _ = _batch_losses(dec, None, None, obj, None, 4, torch.Generator().manual_seed(0), _images(2),
                                    _images(2, seed=2), None, None)
        late, _, _ = _batch_losses(dec, None, None, obj, None, 5, torch.Generator().manual_seed(0), _images(2),
                                   _images(2, seed=2), None, None)
    assert "rerender" not in early and "jitter" not in early
    assert "rerender" in late and "jitter" in late


@torch.enable_grad()
def test_with_a_teacher_netL_learns_from_the_teacher_term_alone_at_its_weight():
    dec = _tiny(seed=3).train()
    obj = _objective(lam_teacher=3.0)
    img = _images(2)
    losses, total, out = _batch_losses(dec, None, None, obj, _StubTeacher(), 0, torch.Generator().manual_seed(0),
                                       img, None, None, None)
    want = losses["l1"] + 0.5 * losses["l1_flip"] + 3.0 * losses["teacher"]
    assert float(total.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
    total.backward()
    got = [p.grad.clone() for p in dec.netL.parameters()]
    dec.zero_grad(set_to_none=True)
    (3.0 * _StubTeacher().loss(dec.decompose(img, parts=["light"])["light"], None)).backward()
    for g, p in zip(got, dec.netL.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-7)


def test_objective_from_config_takes_the_teachers_weight_only_when_taught():
    config = {"lam_flip": 0.5, "lam_perc": 0.0, "lam_smooth": 0.1, "lam_rerender": 1.0, "lam_jitter": 0.5,
              "rerender_albedo_step": [0.4, 1.2], "light_teacher": {"lam": 2.5}, "unrelated": 1}
    taught = _Objective.from_config(config, taught=True)
    assert taught.lam_teacher == 2.5 and taught.rerender_albedo_step == (0.4, 1.2) and taught.lam_smooth == 0.1
    assert _Objective.from_config(config, taught=False).lam_teacher == 0.0


@pytest.mark.parametrize("bad, words", [
    (dict(batch_size=1), "batch_size >= 2, got 1, 1"),
    (dict(steps=0), "steps must be >= 1 .* got 0, 4"),
    (dict(lr=float("nan")), "lr must be > 0"),
    (dict(weight_decay=-1e-3), "weight_decay >= 0"),
    (dict(lam_albedo_sparse=0.1, albedo_sparse_p=1.5), "albedo_sparse_p must be in"),
    (dict(lam_rerender=0.0, light_from_rerender=True), "light_from_rerender needs the re-render term"),
    (dict(lam_rerender=0.0, rerender_mode="data"), r"rerender_mode \(data\) .* which is off"),
    (dict(rerender_mode="nope"), "rerender_mode must be one of"),
    (dict(rerender_intensities="nope"), "rerender_intensities must be one of"),
    (dict(rerender_yaw=-5.0), "rerender_yaw must be a finite yaw > 0"),
    (dict(lam_light_turn=-1.0), "lam_light_turn must be >= 0"),
    (dict(lam_light_turn=1.0, light_turn_yaw=0.0), "light_turn_yaw > 0"),
    (dict(lam_light_turn=1.0, light_turn_pitch=float("inf")), "light_turn_pitch must be a finite pitch"),
    (dict(light_turn_yaw=10.0), r"light_turn_yaw \(10.0\) .* which is off"),
    (dict(lam_perc=0.5), "lam_perc > 0 needs the discriminator D"),
    (dict(train_nets="netL"), "train_nets must be a non-empty list"),
    (dict(train_nets=[]), "train_nets must be a non-empty list"),
    (dict(train_nets=["netX"]), "train_nets must be a non-empty list"),
])
def test_train_decomposer_refuses_each_bad_setting_by_name_before_touching_the_generator(tmp_path, bad, words):
    with pytest.raises(StyleGANDisentangleError, match=words):
        train_decomposer(None, tmp_path / "out", **{"steps": 1, "batch_size": 4, **bad})
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad, words", [
    (dict(light_teacher="a teacher"), "light_teacher must be a LatentLightTeacher, got str"),
    (dict(train_nets=["netA", "netD"]), "leaves out"),
    (dict(teacher_samples=2), "teacher_samples >= 3"),
    (dict(lam_teacher=0.0), "lam_teacher must be > 0"),  # with a teacher; inf and < 0: every loss weight's check
    (dict(init=None), "pass init"),
])
def test_train_decomposer_refuses_bad_teacher_settings_by_name(tmp_path, bad, words):
    teacher = LatentLightTeacher({"light_azimuth": torch.ones(8).numpy(), "light_elevation": torch.ones(8).numpy()})
    kwargs = {"steps": 1, "batch_size": 4, "init": _tiny(), "light_teacher": teacher, **bad}
    with pytest.raises(StyleGANDisentangleError, match=words):
        train_decomposer(None, tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------- renderer
def test_renderer_for_takes_the_decomposers_camera_and_depth_range():
    r = renderer_for(_tiny(fov=12.0, min_depth=0.8, max_depth=1.3))
    assert (r.fov, r.min_depth, r.max_depth) == (12.0, 0.8, 1.3)
    assert r.center_depth == pytest.approx(1.05) and r.margin == pytest.approx(0.25)


def test_inverse_transform_undoes_a_rotation_with_a_translation():
    r = Renderer()
    points = torch.rand(2, 5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5
    view = torch.tensor([[10.0, -20.0, 5.0, 0.05, -0.03, 0.02], [0.0, 0.0, 0.0, 0.1, 0.2, -0.1]], dtype=torch.float64)
    moved = r.transform_points(points, view)
    torch.testing.assert_close(moved[1], points[1] + view[1, 3:], rtol=0, atol=1e-12)  # pure translation
    torch.testing.assert_close(r.inverse_transform_points(moved, view), points, rtol=0, atol=1e-12)


def test_view_depth_is_clamped_to_the_official_half_range_margin():
    """Official: margin = (max_depth - min_depth) / 2 = 0.1, so view depths lie in [0.8, 1.2]; pixels no triangle
    covers read 1.2 and are masked."""
    r = Renderer()
    assert r.margin == pytest.approx(0.1)
    near = r.warp_canonical_depth(torch.full((1, 1, 8, 8), 0.5), torch.zeros(1, 6))  # a plane nearer than 0.8
    torch.testing.assert_close(near, torch.full_like(near, 0.8))
    gone = torch.tensor([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0]])  # moved far to the side: nothing is in view
    out = r.render(torch.ones(1, 1, 8, 8), torch.zeros(1, 3, 8, 8), torch.tensor([[0.5, 0.5, 0.0, 0.0]]), gone)
    torch.testing.assert_close(out["recon_depth"], torch.full_like(out["recon_depth"], 1.2))
    assert torch.all(out["mask"] == 0) and torch.all(out["image"] == 0)


def test_image_albedo_divides_by_the_shading_clamped_to_min_shading():
    """Unlit (shading 0): the albedo is read through the 0.05 floor, ((c + 1) / 2) / 0.05 * 2 - 1 for a pixel c."""
    assert MIN_SHADING == 0.05
    img = torch.full((1, 3, 32, 32), -0.96)  # (c + 1) / 2 = 0.02 -> 0.02 / 0.05 * 2 - 1 = -0.2
    out = {"canon_depth": torch.ones(1, 32, 32), "view": torch.zeros(1, 6), "light": torch.zeros(1, 4)}
    got = image_albedo(_tiny(), img, out, symmetric=False)
    torch.testing.assert_close(got, torch.full_like(got, -0.2), rtol=0, atol=1e-5)


def test_decompose_returns_the_confidence_maps_by_default_when_netc_is_present():
    img = _images(1)
    assert {"conf_sigma_l1", "conf_sigma_percl"} <= set(_tiny().decompose(img))
    without = _tiny(nets=("netD", "netA", "netL", "netV")).decompose(img)
    assert "conf_sigma_l1" not in without and "canon_depth" in without


def test_decompose_refuses_integer_pixels_saying_how_to_convert_them():
    img = torch.full((1, 3, 32, 32), 128, dtype=torch.uint8)
    with pytest.raises(DecomposerError, match=r"float images in \[-1, 1\], got torch.uint8 .*127.5 - 1"):
        _tiny().decompose(img)


def test_the_checkpoints_own_json_is_read_before_a_training_state_in_the_same_folder(tmp_path):
    path = _tiny().save(tmp_path / "dec.pth")
    (tmp_path / "dec.json").write_text(json.dumps({"scalings": {"fov": 12.0}}))
    (tmp_path / "train_state.json").write_text(json.dumps({"config": {"decomposer": {"fov": 8.0}}}))
    assert load_decomposer(path).fov == 12.0


def test_reconstruct_without_flip_renders_only_the_decomposition_under_its_own_mask():
    dec = _tiny()
    dec.netV = _Constant([0.0, 0.5, 0.0, 0.0, 0.0, 0.0])
    with torch.no_grad():
        out = reconstruct(dec, _images(2), flip=False)
        renderer = renderer_for(dec)
        own = renderer.render(out["canon_depth"].unsqueeze(1), out["canon_albedo"], out["light"], out["view_deg"])
    assert "recon_flip" not in out
    torch.testing.assert_close(out["mask"], own["mask"], rtol=0, atol=0)
    torch.testing.assert_close(out["recon"], own["image"], rtol=0, atol=1e-5)
