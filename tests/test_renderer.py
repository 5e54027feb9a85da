"""Known-answer tests for the synthetic face renderer (synthetic/): symmetry, recomposition, conventions, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.synthetic import (
    FACTORS,
    PART_NAMES,
    SyntheticOracle,
    factor_groups,
    factor_index,
    factor_names,
    factor_ranges,
    light_from_factors,
    neutral_factors,
    normals_from_depth,
    num_factors,
    recompose,
    render,
    render_dataset,
    sample_factors,
    to_normalized,
    to_physical,
    view_from_factors,
)
from stylegan_disentangle.synthetic.image_formation import TAN_HALF_FOV, pixel_grid

RES = 32


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Six random faces at 64x64 with their intrinsics."""
    factors = sample_factors(6, seed=11)
    images, intrinsics = render(factors, 64, return_intrinsics=True)
    return factors, images, intrinsics


def _set(factors: torch.Tensor, **physical: float) -> torch.Tensor:
    """Copy of `factors` with some factors set to physical values."""
    out = factors.clone()
    for name, value in physical.items():
        low, high = factor_ranges()[name]
        out[:, factor_index(name)] = (value - low) / (high - low) * 2 - 1
    return out


def _centroid(mask: torch.Tensor) -> tuple[float, float]:
    """(x, y) centroid of a mask [H, W] in pixels."""
    h, w = mask.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=mask.dtype), torch.arange(w, dtype=mask.dtype), indexing="ij")
    total = mask.sum()
    return float((mask * xs).sum() / total), float((mask * ys).sum() / total)


# -- the factor table --------------------------------------------------------------------------------------------


def test_factor_groups_partition_the_names_as_the_seeds_group_them():
    groups = factor_groups()
    assert list(groups) == ["identity", "expression", "pose", "illumination"]
    assert sorted(n for names in groups.values() for n in names) == sorted(factor_names())
    assert len(factor_names()) == len(set(factor_names())) == num_factors()
    shape = [n for n in groups["identity"] if not n.startswith(("skin_", "hair_"))]
    assert len(shape) >= 4
    assert {"skin_r", "skin_g", "skin_b", "hair_color"} <= set(groups["identity"])
    assert groups["expression"] == ["mouth_open", "smile", "brow_raise"]
    assert groups["pose"] == ["yaw", "pitch", "roll"]
    assert groups["illumination"] == ["light_azimuth", "light_elevation", "ambient"]
    assert all(low < high for low, high in factor_ranges().values())


def test_normalized_and_physical_values_round_trip_for_tensors_and_arrays():
    x = sample_factors(5, seed=1)
    phys = to_physical(x)
    assert torch.allclose(phys[:, factor_index("yaw")], x[:, factor_index("yaw")] * 35.0, atol=1e-5)
    assert torch.allclose(to_normalized(phys), x, atol=1e-5)
    ends = np.stack([-np.ones(num_factors()), np.ones(num_factors())])
    np.testing.assert_allclose(to_physical(ends), [[f.low for f in FACTORS], [f.high for f in FACTORS]])
    np.testing.assert_allclose(to_normalized(to_physical(ends)), ends)
    with pytest.raises(ValueError, match="columns"):
        to_physical(torch.zeros(2, 3))


# -- output contract ---------------------------------------------------------------------------------------------


def test_render_returns_deterministic_images_in_range(batch):
    factors, images, _ = batch
    assert images.shape == (6, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1 and images.max() <= 1
    assert torch.equal(render(factors, 64), images)
    assert render(factors[:2], RES).shape == (2, 3, RES, RES)


def test_render_rejects_bad_factor_arrays():
    with pytest.raises(ValueError, match="19|factors"):
        render(torch.zeros(2, 5))
    bad = torch.zeros(1, num_factors())
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        render(bad)
    for factors, words in ((torch.zeros(0, num_factors()), "got shape"), (np.zeros((2, num_factors())), "ndarray"),
                           (torch.zeros(2, num_factors(), dtype=torch.int64), "int64")):
        with pytest.raises(ValueError, match=words):
            render(factors)
    with pytest.raises(ValueError, match="integer of at least 8"):
        render(torch.zeros(1, num_factors()), 8.5)
    assert render(torch.zeros(1, num_factors()), np.int64(8)).shape == (1, 3, 8, 8)  # numpy integers are integers
    for batch_size in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
            render_dataset(torch.zeros(3, num_factors()), 16, batch_size=batch_size)


def test_render_dataset_matches_render_and_a_face_does_not_depend_on_its_batch():
    factors = sample_factors(5, seed=2)
    together = render(factors, RES)
    assert torch.allclose(render_dataset(factors, RES, batch_size=2, progress=False), together, atol=1e-4)
    assert torch.allclose(render(factors[3:4], RES), together[3:4], atol=1e-4)


# -- geometry known answers --------------------------------------------------------------------------------------


def test_frontal_face_with_frontal_light_is_left_right_symmetric():
    factors = _set(sample_factors(3, seed=3), yaw=0.0, roll=0.0, light_azimuth=0.0)
    images = render(factors, RES)
    assert (images - images.flip(-1)).abs().max() < 1e-3
    # and the asymmetric ones are not
    tilted = render(_set(factors, yaw=10.0), RES)
    assert (tilted - tilted.flip(-1)).abs().max() > 0.1


def test_yaw_plus_theta_is_the_mirror_image_of_yaw_minus_theta():
    factors = _set(sample_factors(2, seed=4), roll=0.0, light_azimuth=0.0)
    for theta in (12.0, 30.0):
        plus, minus = render(_set(factors, yaw=theta), RES), render(_set(factors, yaw=-theta), RES)
        assert (plus - minus.flip(-1)).abs().max() < 1e-3


def test_intrinsics_recompose_to_the_image(batch):
    _, images, intrinsics = batch
    assert torch.allclose(recompose(intrinsics), images, atol=1e-5)


def test_recompose_follows_the_view_translation_and_works_without_a_background(batch):
    _, images, intr = batch
    moved = dict(intr, view=intr["view"] + torch.tensor([0.0, 0, 0, 0.01, 0, 0]))

    def foreground_x(img: torch.Tensor) -> float:
        return _centroid((img - intr["background"][0, :, None, None]).abs().sum(0))[0]

    # +tx moves the face right by about tx / (depth tan(fov/2)) half-widths: 0.01 / 0.0875 * 31.5 = 3.6 pixels
    shift = foreground_x(recompose(moved)[0]) - foreground_x(images[0])
    assert shift == pytest.approx(3.6, abs=0.5)
    full = recompose({k: v for k, v in intr.items() if k != "background"})
    assert full.shape == images.shape
    inside = intr["masks"][:, PART_NAMES.index("background")] < 1e-5  # well inside the head
    same = ((full - images).abs().amax(1) < 1e-4)[inside]
    # the same surface, marched over a longer depth range: only rays grazing thin features may differ
    assert same.float().mean() > 0.99


def test_shading_is_lambertian_in_the_normals_of_the_depth_map(batch):
    _, _, intr = batch
    light = intr["light"]
    direction = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], 1)
    direction = direction / direction.norm(dim=1, keepdim=True)
    cos = (normals_from_depth(intr["depth"]) * direction[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
    expected = light[:, 0, None, None, None] + light[:, 1, None, None, None] * cos
    assert torch.allclose(intr["shading"], expected, atol=1e-6)
    assert torch.allclose(intr["normal"], normals_from_depth(intr["depth"]))


def test_normals_of_a_tilted_plane_are_known():
    k = 0.8  # plane z = 1 + k X: it recedes to the right, so it faces right: normal ~ (k, 0, 1)
    u, _ = pixel_grid(16)
    depth = 1.0 / (1.0 - k * u * TAN_HALF_FOV)
    normal = normals_from_depth(depth.expand(1, 1, 16, 16))
    expected = torch.tensor([k, 0.0, 1.0]) / math.sqrt(1 + k * k)
    assert torch.allclose(normal[0, :, 1:-1, 1:-1], expected.view(3, 1, 1).expand(3, 14, 14), atol=1e-4)
    flat = normals_from_depth(torch.ones(1, 1, 8, 8))
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8), atol=1e-6)


def test_intrinsics_have_unsup3d_shapes_ranges_and_values(batch):
    factors, _, intr = batch
    n = factors.shape[0]
    assert intr["depth"].shape == (n, 1, 64, 64)
    assert 0.9 <= intr["depth"].min() and intr["depth"].max() <= 1.1
    assert intr["albedo"].shape == (n, 3, 64, 64) and intr["albedo"].abs().max() <= 1
    assert intr["light"].shape == (n, 4) and intr["view"].shape == (n, 6)
    assert torch.allclose(intr["light"], light_from_factors(factors))
    phys = to_physical(factors)
    expected_view = torch.stack([phys[:, factor_index(k)] for k in ("pitch", "yaw", "roll")], 1)
    assert torch.allclose(intr["view"][:, :3], expected_view) and torch.all(intr["view"][:, 3:] == 0)
    assert torch.allclose(view_from_factors(factors), intr["view"])
    for key in ("masks", "canonical_masks"):
        assert intr[key].shape == (n, len(PART_NAMES), 64, 64)
        assert torch.allclose(intr[key].sum(1), torch.ones(n, 64, 64), atol=1e-3)


def test_canonical_maps_do_not_depend_on_pose_or_light(batch):
    factors, _, intr = batch
    moved = _set(factors, yaw=25.0, pitch=-10.0, roll=5.0, light_azimuth=40.0, ambient=0.3)
    _, intr2 = render(moved, 64, return_intrinsics=True)
    for key in ("depth", "albedo", "canonical_mask", "canonical_masks"):
        assert torch.equal(intr[key], intr2[key]), key


# -- conventions: which way is positive --------------------------------------------------------------------------


def test_pose_signs_follow_the_documented_conventions():
    base = neutral_factors(1)
    nose = PART_NAMES.index("nose")
    eyes = PART_NAMES.index("eyes")

    def masks(**kw):
        return render(_set(base, **kw), 64, return_intrinsics=True)[1]["masks"][0]

    x0, y0 = _centroid(masks()[nose])
    assert _centroid(masks(yaw=25.0)[nose])[0] < x0 - 2  # +yaw: the nose turns to image left
    assert _centroid(masks(pitch=15.0)[nose])[1] > y0 + 1  # +pitch: the nose turns down
    rolled = masks(roll=20.0)[eyes]
    right_eye_y = _centroid(rolled[:, 32:])[1]
    left_eye_y = _centroid(rolled[:, :32])[1]
    assert right_eye_y > left_eye_y + 2  # +roll: clockwise, the image-right eye goes down


def test_light_signs_follow_the_documented_conventions():
    def face(**kw):
        img, intr = render(_set(neutral_factors(1), **kw), 64, return_intrinsics=True)
        skin = intr["masks"][0, PART_NAMES.index("skin")]
        return img[0].mean(0), skin

    img, skin = face(light_azimuth=45.0, ambient=0.1)
    right, left = (img * skin)[:, 32:].sum() / skin[:, 32:].sum(), (img * skin)[:, :32].sum() / skin[:, :32].sum()
    assert right > left + 0.1  # +azimuth: light from image right
    img_up, skin = face(light_elevation=40.0, ambient=0.1)
    img_down, _ = face(light_elevation=-20.0, ambient=0.1)
    top = slice(20, 32)
    assert (img_up - img_down)[top][skin[top] > 0.9].mean() > 0.05  # +elevation: light from above


# -- every factor matters, and gradients reach it ----------------------------------------------------------------


def test_every_factor_changes_the_image():
    base = sample_factors(3, seed=5) * 0.5
    for j, name in enumerate(factor_names()):
        low, high = base.clone(), base.clone()
        low[:, j], high[:, j] = -1.0, 1.0
        diff = (render(low, RES) - render(high, RES)).abs().mean()
        assert diff > 0.004, f"{name} barely changes the image (mean |diff| {diff:.4f})"


@torch.enable_grad()
def test_gradients_flow_to_every_factor():
    factors = sample_factors(6, seed=6).requires_grad_(True)
    images = render(factors, RES)
    weights = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    (images * weights).sum().backward()
    grad = factors.grad.abs().sum(0)
    assert torch.isfinite(factors.grad).all()
    missing = [n for n, g in zip(factor_names(), grad) if g <= 1e-6]
    assert not missing, f"no gradient for {missing}"


@torch.enable_grad()
def test_gradients_of_shape_light_and_expression_factors_match_finite_differences():
    factors = sample_factors(2, seed=7).double()
    weights = torch.randn(2, 3, RES, RES, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for name in ("light_elevation", "nose_length", "brow_raise", "skin_g"):
        x = factors.clone().requires_grad_(True)
        (render(x, RES) * weights).sum().backward()
        e = torch.zeros_like(factors)
        e[:, factor_index(name)] = 1e-3
        fd = ((render(factors + e, RES) - render(factors - e, RES)) * weights).sum() / 2e-3
        assert x.grad[:, factor_index(name)].sum().item() == pytest.approx(fd.item(), rel=0.05, abs=0.05), name


# -- part masks --------------------------------------------------------------------------------------------------


def test_part_masks_lie_where_the_parts_are_on_a_frontal_face():
    _, intr = render(neutral_factors(1), 64, return_intrinsics=True)
    m = intr["masks"][0]
    ys = {p: _centroid(m[PART_NAMES.index(p)])[1] for p in ("hair", "brows", "eyes", "nose", "mouth")}
    assert ys["hair"] < ys["brows"] < ys["eyes"] < ys["nose"] < ys["mouth"]
    assert m[PART_NAMES.index("background")][0, 0] > 0.99 and m[PART_NAMES.index("skin")][38, 19] > 0.5


@pytest.mark.parametrize("name, low, high, parts", [
    ("eye_spacing", 0.21, 0.27, ["eyes", "brows"]),
    ("brow_raise", -1.0, 1.0, ["brows"]),
    ("nose_length", 0.20, 0.32, ["nose"]),
])
def test_a_feature_edit_changes_mostly_its_part(name, low, high, parts):
    from stylegan_disentangle.analysis.metrics import locality

    img_a, intr_a = render(_set(neutral_factors(1), **{name: low}), 64, return_intrinsics=True)
    img_b, intr_b = render(_set(neutral_factors(1), **{name: high}), 64, return_intrinsics=True)
    idx = [PART_NAMES.index(p) for p in parts]
    region = torch.maximum(intr_a["masks"][0, idx].sum(0), intr_b["masks"][0, idx].sum(0))
    region = torch.nn.functional.max_pool2d(region[None, None], 5, 1, 2)[0, 0]  # grown by 2 pixels (shading)
    assert float(region.mean()) < 0.08  # the region covers under 8% of the image ...
    assert locality(img_a[0], img_b[0], region) > 0.85  # ... and holds most of the change


# -- the oracle labeler ------------------------------------------------------------------------------------------


def _linear_factor_map(ws: torch.Tensor) -> torch.Tensor:
    w = ws[:, 0] if ws.dim() == 3 else ws
    return torch.tanh(w[:, : num_factors()])


def test_oracle_returns_the_factor_map_values_by_name():
    ws = torch.randn(4, 3, 24, generator=torch.Generator().manual_seed(0))
    oracle = SyntheticOracle(_linear_factor_map)
    labels = oracle(torch.zeros(4, 3, 8, 8), ws)
    assert oracle.name == "synthetic-oracle" and list(labels) == factor_names() == oracle.names
    expected = _linear_factor_map(ws)
    for j, name in enumerate(factor_names()):
        assert torch.equal(labels[name], expected[:, j])
    assert oracle.value_ranges["yaw"] == (-1.0, 1.0)
    physical = SyntheticOracle(_linear_factor_map, physical=True)
    assert torch.allclose(physical(None, ws)["yaw"], expected[:, factor_index("yaw")] * 35.0)
    assert physical.value_ranges["yaw"] == (-35.0, 35.0)


def test_oracle_intrinsics_are_the_renderer_intrinsics():
    ws = torch.randn(2, 24, generator=torch.Generator().manual_seed(1))
    intr = SyntheticOracle(_linear_factor_map).intrinsics(ws, resolution=RES)
    _, expected = render(_linear_factor_map(ws), RES, return_intrinsics=True)
    assert torch.equal(intr["depth"], expected["depth"]) and torch.equal(intr["light"], expected["light"])


def test_oracle_needs_latents_and_a_well_shaped_factor_map():
    with pytest.raises(LatentError, match="pass ws"):
        SyntheticOracle(_linear_factor_map)(torch.zeros(2, 3, 8, 8))
    with pytest.raises(LatentError, match="factor map returned shape"):
        SyntheticOracle(lambda ws: ws[:, :3])(None, torch.zeros(2, 24))
    with pytest.raises(LatentError, match="3 images but 2"):
        SyntheticOracle(_linear_factor_map)(torch.zeros(3, 3, 8, 8), torch.zeros(2, 24))


# -- CUDA --------------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_render_matches_cpu(batch):
    factors, images, intr = batch
    images_gpu, intr_gpu = render(factors.cuda(), 64, return_intrinsics=True)
    assert images_gpu.is_cuda
    assert (images_gpu.cpu() - images).abs().max() < 2e-3
    assert torch.allclose(intr_gpu["depth"].cpu(), intr["depth"], atol=1e-5)


# -- the contact sheet -------------------------------------------------------------------------------------------


def test_face_sheet_writes_a_png(tmp_path):
    from stylegan_disentangle.synthetic.preview import save_face_sheet

    path = save_face_sheet(tmp_path / "sheet.png", resolution=16, n_random=2, sweeps=("yaw",), steps=3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
