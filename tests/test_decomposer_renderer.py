"""Known answers for the decomposer's renderer (labels/decomposer/renderer.py): exact views of planes, the identity
and inverse views, normals, gradients, and agreement with the synthetic world's image formation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_disentangle.labels.decomposer.renderer import (
    Renderer,
    grid_faces,
    hflip,
    light_angles,
    light_from_angles,
    light_from_world,
    light_to_world,
    normals_to_world,
    rasterize_depth,
    rotation_matrix,
    with_flip,
)
from stylegan_disentangle.synthetic import (
    factor_index,
    light_from_factors,
    normals_from_depth,
    recompose,
    render,
    sample_factors,
    shade,
    to_physical,
)
from stylegan_disentangle.synthetic.image_formation import rotation_matrix as world_rotation_matrix

RES = 32


def _view(rx: float = 0.0, ry: float = 0.0, rz: float = 0.0, tx: float = 0.0, ty: float = 0.0, tz: float = 0.0,
          n: int = 1, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor([[rx, ry, rz, tx, ty, tz]], dtype=dtype).repeat(n, 1)


def _smooth_scene(n: int, size: int = RES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A head-like bump (depth [n,1,S,S] in [0.9, 1.1]), a smooth albedo [n,3,S,S] and a light [n,4]."""
    g = torch.Generator().manual_seed(seed)
    lin = torch.linspace(-1, 1, size)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    scale = 0.5 + 0.2 * torch.rand(n, 1, 1, 1, generator=g)
    bump = torch.exp(-(u**2 + v**2) / (2 * scale**2))
    depth = 1.1 - 0.15 * bump
    phase = torch.rand(n, 3, 1, 1, generator=g) * 6.28
    albedo = 0.6 * torch.sin(2.0 * u + 1.5 * v + phase)
    light = torch.cat([0.2 + 0.3 * torch.rand(n, 2, generator=g), torch.randn(n, 2, generator=g) * 0.4], 1)
    return depth, albedo, light


def _plane_depth(renderer: Renderer, normal: torch.Tensor, size: int, point_z: float = 1.0) -> torch.Tensor:
    """View-space depth [1,1,S,S] of the plane through (0, 0, point_z) with the given normal, pixel by pixel."""
    lin = (torch.arange(size, dtype=normal.dtype) - (size - 1) / 2) / renderer.focal(size)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    rays = torch.stack([u, v, torch.ones_like(u)], -1)
    return (normal[2] * point_z / (rays @ normal))[None, None]


# --- exact known answers --------------------------------------------------------------------------------------------

def test_identity_view_reproduces_the_canonical_maps():
    r = Renderer()
    depth, albedo, light = _smooth_scene(3)
    out = r.render(depth, albedo, light, _view(n=3))
    # every pixel centre is a mesh vertex: its depth is the vertex's z up to float32 rounding of 1/(1/z)
    assert torch.allclose(out["recon_depth"], depth, atol=1e-6, rtol=0)
    assert out["mask"].min() == 1
    # the inverse warp lands on the pixel centres up to ~1e-6 pixel; the image changes < 0.3 per pixel
    assert torch.allclose(out["image"], out["canon_image"], atol=1e-5, rtol=0)
    assert torch.allclose(out["recon_normal"], out["canon_normal"], atol=1e-5, rtol=0)


def test_rotated_and_translated_plane_is_rasterized_exactly():
    """A plane's mesh is planar, so the z-buffer depth equals the analytic ray-plane distance to float rounding."""
    r = Renderer()
    size = 24
    view = _view(10.0, -25.0, 15.0, 0.02, -0.03, 0.05)
    out = r.warp_canonical_depth(torch.ones(1, 1, size, size), view)
    centre = torch.tensor([0.0, 0.0, r.center_depth])
    normal = rotation_matrix(view[:, :3])[0] @ torch.tensor([0.0, 0.0, 1.0])
    expected = (normal @ (centre + view[0, 3:])) / normal[2] * _plane_depth(r, normal, size, 1.0)
    covered = out < r.max_depth + r.margin
    assert covered.float().mean() > 0.6  # the rotated plane still fills most of the frame
    assert torch.allclose(out[covered], expected[covered], atol=2e-6, rtol=0)  # float32 rounding of z ~ 1


def test_uncovered_pixels_get_the_far_margin_and_are_masked():
    r = Renderer()
    depth, albedo, light = _smooth_scene(1)
    out = r.render(depth, albedo, light, _view(tx=0.05))  # moved right by more than half the frame width
    masked = out["mask"] == 0
    assert masked[..., :, :8].all() and not masked[..., :, 16:].any()
    assert torch.all(out["recon_depth"][masked] == r.max_depth + r.margin)
    assert torch.all(out["image"].masked_select(masked.expand(-1, 3, -1, -1)) == 0)


def test_z_buffer_keeps_the_nearest_of_two_overlapping_surfaces_on_both_faces():
    faces = torch.tensor([[0, 1, 2], [3, 5, 4]])  # the second triangle is wound the other way (a back face)
    big = torch.tensor([[-1.0, -1.0], [3.0, -1.0], [-1.0, 3.0]])  # covers the centre of the frame
    verts = torch.cat([torch.cat([big, torch.full((3, 1), 2.0)], 1), torch.cat([big, torch.full((3, 1), 1.5)], 1)])
    for order in (verts, torch.cat([verts[3:], verts[:3]])):
        depth, covered = rasterize_depth((order * torch.tensor([0.1, 0.1, 1.0]))[None], faces, 8, focal=20.0)
        assert covered[0, 0, 3, 3] and depth[0, 0, 3, 3] == pytest.approx(1.5, abs=1e-6)


def _brute_force_depth(vertices: torch.Tensor, faces: torch.Tensor, size: int, focal: float) -> torch.Tensor:
    """Reference z-buffer [size, size]: every triangle tested at every pixel (one mesh, float64), inf where empty."""
    c = (size - 1) / 2
    sx, sy, z = vertices[:, 0] / vertices[:, 2] * focal + c, vertices[:, 1] / vertices[:, 2] * focal + c, vertices[:, 2]
    out = torch.full((size, size), math.inf, dtype=torch.float64)
    for i0, i1, i2 in faces.tolist():
        area = (sx[i1] - sx[i0]) * (sy[i2] - sy[i0]) - (sx[i2] - sx[i0]) * (sy[i1] - sy[i0])
        if abs(area) < 1e-12:
            continue
        for py in range(size):
            for px in range(size):
                w0 = ((sx[i1] - px) * (sy[i2] - py) - (sx[i2] - px) * (sy[i1] - py)) / area
                w1 = ((sx[i2] - px) * (sy[i0] - py) - (sx[i0] - px) * (sy[i2] - py)) / area
                w2 = 1 - w0 - w1
                if min(w0, w1, w2) >= -1e-9:
                    out[py, px] = min(out[py, px], 1 / (w0 / z[i0] + w1 / z[i1] + w2 / z[i2]))
    return out


def test_z_buffer_equals_brute_force_on_folded_meshes_with_stretched_triangles(monkeypatch):
    """Depth steps seen at 50-70 degrees fold the mesh and stretch triangles across the frame (the 4, 8, ... pixel
    groups); a tiny chunk size exercises the chunked passes. Pixels within 1e-6 pixel of a triangle edge may be
    claimed by either neighbour, so compare where the brute force is unambiguous."""
    import stylegan_disentangle.labels.decomposer.renderer as module

    r = Renderer()
    size = 9
    g = torch.Generator().manual_seed(3)
    depth = (0.9 + 0.2 * torch.rand(2, 1, size, size, generator=g, dtype=torch.float64))
    depth[:, :, :, :3] = 1.1  # a cliff
    view = torch.tensor([[10.0, 60.0, 5.0, 0.0, 0.0, 0.0], [-50.0, 20.0, 70.0, 0.01, 0.0, 0.0]], dtype=torch.float64)
    points = r.transform_points(r.depth_to_points(depth), view).reshape(2, -1, 3)
    faces = grid_faces(size, size)
    fast, covered = rasterize_depth(points, faces, size, r.focal(size))
    monkeypatch.setattr(module, "_MAX_CANDIDATES", 16)
    chunked, _ = rasterize_depth(points, faces, size, r.focal(size))
    assert torch.equal(fast, chunked)
    for b in range(2):
        ref = _brute_force_depth(points[b], faces, size, r.focal(size))
        assert torch.equal(covered[b, 0], torch.isfinite(ref))
        assert torch.allclose(fast[b, 0][covered[b, 0]], ref[torch.isfinite(ref)], atol=1e-9)


def test_plus_theta_then_minus_theta_returns_the_input_inside_the_valid_region():
    """Single-axis rotations about the centre are exact inverses; what remains is resampling the mesh twice."""
    r = Renderer()
    depth, albedo, light = _smooth_scene(2)
    for axis in range(3):
        angles = [0.0, 0.0, 0.0]
        angles[axis] = 20.0
        there, back = _view(*angles, n=2), _view(*[-a for a in angles], n=2)
        out = r.render(depth, albedo, light, there)
        depth_back = r.warp_canonical_depth(out["recon_depth"], back)
        image_back = r.sample(out["image"], r.inverse_warp_grid(depth_back, back))
        valid = (depth_back < r.max_depth + r.margin) & (r.sample(out["mask"], r.inverse_warp_grid(depth_back, back))
                                                          > 1 - 1e-6)
        valid = -F.max_pool2d(-valid.float(), 3, 1, 1) > 0  # one pixel away from the edge of the valid region
        assert valid.float().mean() > 0.5
        # piecewise-linear resampling of a smooth surface: error <= h^2/8 max|z''| per pass, two passes; the
        # bump's |z''| is at most 0.15 / 0.5^2 per (normalized unit)^2 = 0.6 * (2 / 31)^2 per pixel^2
        bound = 2 * (0.6 * (2 / (RES - 1)) ** 2) / 8 * 1.5  # 1.5: the rotation stretches the grid by 1/cos(20)
        assert (depth_back - depth)[valid].abs().max() < bound
        # the image is resampled bilinearly twice: per pass the error is <= (|I_xx| + |I_yy|) / 8 (per pixel^2,
        # taken from the canonical image's second differences; shading makes them larger than the albedo's),
        # stretched by the rotation, plus the depth error moving the read point along the ray (< 1e-3 pixel)
        canon = out["canon_image"]
        i_xx = (canon[..., 2:] - 2 * canon[..., 1:-1] + canon[..., :-2]).abs().max()
        i_yy = (canon[..., 2:, :] - 2 * canon[..., 1:-1, :] + canon[..., :-2, :]).abs().max()
        image_bound = 2 * (i_xx + i_yy) / 8 * 1.15 + 1e-3
        err = (image_back - canon).abs().masked_select(valid.expand(-1, 3, -1, -1))
        assert err.max() < image_bound
        assert torch.quantile(err, 0.99) < 0.02  # typical pixels are far inside the bound (measured: <= 0.008)


def test_flat_depth_has_constant_normals_and_the_official_border():
    r = Renderer(normal_eps=0.0)
    flat = r.normals_from_depth(torch.full((1, 1, 16, 16), 1.03))
    assert torch.allclose(flat, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand_as(flat), atol=1e-6)
    normal = torch.tensor([0.3, -0.2, 1.0], dtype=torch.float64)
    tilted = r.normals_from_depth(_plane_depth(r, normal, 16))
    inner = tilted[:, :, 1:-1, 1:-1]
    assert torch.allclose(inner, (normal / normal.norm()).view(1, 3, 1, 1).expand_as(inner), atol=1e-9)
    border = tilted.clone()
    border[:, :, 1:-1, 1:-1] = 0
    assert torch.all(border[:, :2] == 0)
    assert torch.all(border[0, 2, [0, -1]] == 1) and torch.all(border[0, 2, :, [0, -1]] == 1)


def test_official_normal_epsilon_shortens_normals_by_the_stated_amount():
    normals = Renderer().normals_from_depth(torch.ones(1, 1, 32, 32))[:, :, 1:-1, 1:-1]
    cross = (2 * 2 * math.tan(math.radians(5.0)) / 31) ** 2  # |tu x tv|: central differences span two pixels
    assert torch.allclose(normals.norm(dim=1), torch.tensor(cross / (cross + 1e-7)), atol=1e-6)


def test_shading_is_ambient_plus_clamped_diffuse():
    r = Renderer()
    normals = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]).view(1, 2, 3).permute(0, 2, 1)[..., None]  # [1,3,2,1]
    light = torch.tensor([[0.2, 0.5, 1.0, 0.0]])  # direction (1, 0, 1) / sqrt(2)
    shading = r.shade(normals, light)
    assert shading.flatten().tolist() == pytest.approx([0.2 + 0.5 / math.sqrt(2)] * 2, abs=1e-6)
    light_away = torch.tensor([[0.2, 0.5, -3.0, 0.0]])  # <(1,0,0), l> < 0: clamped to the ambient term
    assert r.shade(normals, light_away).flatten()[1].item() == pytest.approx(0.2, abs=1e-7)
    albedo = torch.zeros(1, 3, 2, 1)  # albedo 0 -> reflectance 1/2
    assert torch.allclose(r.canonical_image(albedo, shading), shading - 1)


# --- gradients -----------------------------------------------------------------------------------------------------

@torch.enable_grad()
def test_gradients_reach_depth_albedo_light_and_view():
    r = Renderer()
    depth, albedo, light = _smooth_scene(2)
    depth, albedo, light = depth.requires_grad_(), albedo.requires_grad_(), light.requires_grad_()
    view = _view(5.0, 15.0, -5.0, 0.01, 0.0, 0.02, n=2).requires_grad_()
    out = r.render(depth, albedo, light, view)
    weights = torch.randn(out["image"].shape, generator=torch.Generator().manual_seed(1))
    ((out["image"] * weights).sum() + out["recon_depth"].sum()).backward()
    for name, t in (("depth", depth), ("albedo", albedo), ("light", light), ("view", view)):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert t.grad.abs().sum() > 0, name
    assert (view.grad.abs() > 0).all()  # every rotation and translation moves the picture


@torch.enable_grad()
def test_view_space_depth_gradient_matches_finite_differences():
    """On a plane the z-buffer depth is smooth in the view (switching triangles does not change it)."""
    r = Renderer()
    plane = torch.ones(1, 1, 12, 12, dtype=torch.float64)
    view = _view(4.0, -8.0, 3.0, 0.01, 0.0, 0.02, dtype=torch.float64).requires_grad_()
    inner = (slice(None), slice(None), slice(3, 9), slice(3, 9))
    weights = torch.linspace(0.5, 1.5, 36, dtype=torch.float64).view(1, 1, 6, 6)
    (r.warp_canonical_depth(plane, view)[inner] * weights).sum().backward()
    for i in range(6):
        step = torch.zeros(1, 6, dtype=torch.float64)
        step[0, i] = 1e-4 if i < 3 else 1e-6
        plus = (r.warp_canonical_depth(plane, view.detach() + step)[inner] * weights).sum()
        minus = (r.warp_canonical_depth(plane, view.detach() - step)[inner] * weights).sum()
        numeric = float((plus - minus) / (2 * step[0, i]))
        assert view.grad[0, i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-7), i


# --- the synthetic world -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def world() -> tuple[torch.Tensor, dict]:
    factors = sample_factors(12, seed=5)
    images, intrinsics = render(factors, RES, return_intrinsics=True)
    return factors, images, intrinsics


@pytest.mark.parametrize("angles, vector, want", [
    ((90, 0, 0), (0, 1, 0), (0, 0, 1)),  # Rx: y -> z
    ((0, 90, 0), (0, 0, 1), (1, 0, 0)),  # Ry: z -> x
    ((0, 0, 90), (1, 0, 0), (0, 1, 0)),  # Rz: x -> y
    ((90, 90, 0), (0, 1, 0), (1, 0, 0)),  # Rz Ry Rx: Rx first (y -> z), then Ry (z -> x); Rx Ry Rz would give z
    ((0, 90, 90), (1, 0, 0), (0, 0, -1)),  # Ry first (x -> -z), then Rz leaves z; Rx Ry Rz would give y
    ((90, 0, 90), (0, 0, 1), (1, 0, 0)),  # Rx (z -> -y), then Rz (-y -> x); Rx Ry Rz would give -y
])
def test_rotation_matrix_known_answers_fix_axes_signs_and_the_order_rz_ry_rx(angles, vector, want):
    """Unsup3D's convention (R = Rz Ry Rx, right-handed): the synthetic world imports this same function, so only
    known answers can pin it down."""
    rot = rotation_matrix(torch.tensor([angles], dtype=torch.float64))[0]
    got = rot @ torch.tensor(vector, dtype=torch.float64)
    torch.testing.assert_close(got, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(rot @ rot.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_the_world_forms_images_with_this_rotation():
    # the world shares the renderer's rotation (so the known answers above cover both): a guard against a copy
    assert world_rotation_matrix is rotation_matrix


def test_normals_and_shading_equal_the_worlds_after_the_sign_conversion(world):
    _, _, intr = world
    r = Renderer(normal_eps=0.0)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # the border rule differs (official: (0,0,1))
    ours = r.normals_from_depth(intr["depth"])
    assert torch.allclose(normals_to_world(ours)[inner], normals_from_depth(intr["depth"])[inner], atol=2e-6)
    shading = r.shade(ours, light_from_world(intr["light"]))
    assert torch.allclose(shading[inner], shade(intr["depth"], intr["light"])[inner], atol=2e-6)
    # with the official epsilon the diffuse term is smaller by |n| / (|n| + 1e-7) (0.08% at 32 px)
    official = Renderer().shade(Renderer().normals_from_depth(intr["depth"]), light_from_world(intr["light"]))
    assert (official - shading)[inner].abs().max() < 0.001 * intr["light"][:, 1].max()


def test_light_conversions_recover_the_world_factors(world):
    factors, _, intr = world
    light = light_from_world(intr["light"])
    assert torch.equal(light_to_world(light), intr["light"])
    angles = light_angles(light)
    phys = to_physical(factors)
    assert torch.allclose(angles[:, 0], phys[:, factor_index("light_azimuth")], atol=1e-4)
    assert torch.allclose(angles[:, 1], phys[:, factor_index("light_elevation")], atol=1e-4)
    rebuilt = light_from_angles(light[:, 0], light[:, 1], angles[:, 0], angles[:, 1])
    assert torch.allclose(rebuilt, light, atol=1e-5)
    assert torch.allclose(light_to_world(rebuilt), light_from_factors(factors), atol=1e-5)


def test_identity_view_equals_the_worlds_recomposition(world):
    _, _, intr = world
    view = torch.zeros_like(intr["view"])
    ours = Renderer(normal_eps=0.0).render(intr["depth"], intr["albedo"], light_from_world(intr["light"]), view)
    theirs = recompose({"depth": intr["depth"], "albedo": intr["albedo"], "light": intr["light"], "view": view})
    # both read the canonical image at the pixel centres (the world's secant step lands within ~1e-5 pixel)
    assert torch.allclose(ours["image"][..., 1:-1, 1:-1], theirs[..., 1:-1, 1:-1], atol=1e-4)


def test_posed_faces_agree_with_the_worlds_renders_inside_the_face(world):
    """The world ray-casts the bilinear height field, we rasterize its two-triangle mesh: the surfaces differ
    inside a cell by up to |d00 - d01 - d10 + d11| / 4, and at an angle theta that moves the point where a ray
    meets the face sideways by about that much times tan(theta), i.e. a fraction of a pixel where the face is
    smooth and up to a pixel where the depth folds (nose, lips, eye sockets seen at an angle). Measured at 32 px
    over yaw +-35, pitch +-20, roll +-25 deg: mean 0.0024, 95th percentile 0.011, 99th 0.032 (image range 2)."""
    _, images, intr = world
    ours = Renderer().render(intr["depth"], intr["albedo"], light_from_world(intr["light"]), intr["view"])
    face = 1 - intr["masks"][:, -1:]  # the world's image-space object mask
    inside = (-F.max_pool2d(-face, 3, 1, 1) > 0.99) & (ours["mask"] > 0)  # eroded by a pixel: no silhouette
    err = (ours["image"] - images).abs().amax(1, keepdim=True)[inside]
    assert inside.float().mean() > 0.2
    assert err.mean() < 0.006
    assert torch.quantile(err, 0.95) < 0.025
    assert torch.quantile(err, 0.99) < 0.08


# --- symmetry helpers and bad input --------------------------------------------------------------------------------

def test_flip_helpers_mirror_left_right():
    maps = torch.arange(2 * 1 * 3 * 4, dtype=torch.float32).view(2, 1, 3, 4)
    assert torch.equal(hflip(maps)[..., 0], maps[..., -1])
    doubled = with_flip(maps)
    assert doubled.shape == (4, 1, 3, 4) and torch.equal(doubled[:2], maps) and torch.equal(doubled[2:], hflip(maps))


def test_mirrored_scene_renders_the_mirror_image():
    """Mirroring x flips yaw, roll, tx and the light's dx: the render must be the mirror image (the mirrored mesh
    is triangulated along the other diagonal, so allow the cell-twist difference of a smooth bump)."""
    r = Renderer()
    depth, albedo, light = _smooth_scene(2)
    view = _view(8.0, 20.0, 10.0, 0.01, -0.01, 0.0, n=2)
    mirror = torch.tensor([1.0, -1.0, -1.0, -1.0, 1.0, 1.0])
    out = r.render(depth, albedo, light, view)
    flipped = r.render(hflip(depth), hflip(albedo), light * torch.tensor([1.0, 1.0, -1.0, 1.0]), view * mirror)
    both = (out["mask"] * hflip(flipped["mask"])) > 0
    both = -F.max_pool2d(-both.float(), 3, 1, 1) > 0
    err = (out["image"] - hflip(flipped["image"])).abs().masked_select(both.expand(-1, 3, -1, -1))
    assert both.float().mean() > 0.5 and err.max() < 0.01


def test_a_symmetric_albedo_absorbs_an_elevation_or_ambient_change_exactly_only_without_azimuth():
    """The ambiguity behind the light elevation and ambient (scripts/bench_light_symmetry.py): for a symmetric face
    lit with no azimuth, a new elevation or ambient share multiplies the shading by a symmetric factor, so the
    symmetric albedo (albedo + 1) * old / new - 1 renders the identical image (float64 rounding). With an azimuth
    the factor is not symmetric and no symmetric albedo does; an azimuth change is never absorbed."""
    r = Renderer()
    depth, albedo, _ = _smooth_scene(2, seed=3)
    depth, albedo = depth.double(), ((albedo + hflip(albedo)) / 2).double()  # the bump is already symmetric
    normals = r.normals_from_depth(depth)
    view = _view(5.0, 15.0, 0.0, n=2, dtype=torch.float64)
    one = torch.ones(2, dtype=torch.float64)

    def absorbed(azimuth: float, new: tuple[float, float, float, float]) -> float:
        old = light_from_angles(0.3 * one, 0.7 * one, azimuth * one, 10.0 * one)
        new_light = light_from_angles(new[0] * one, new[1] * one, new[2] * one, new[3] * one)
        ratio = r.shade(normals, old) / r.shade(normals, new_light)
        ratio = (ratio + hflip(ratio)) / 2  # the best a symmetric albedo can do is a symmetric factor
        before = r.render(depth, albedo, old, view)["image"]
        after = r.render(depth, (albedo + 1) * ratio - 1, new_light, view)["image"]
        return float((after - before).abs().max())

    assert absorbed(0.0, (0.3, 0.7, 0.0, 30.0)) < 1e-12  # elevation 10 -> 30 deg
    assert absorbed(0.0, (0.45, 0.55, 0.0, 10.0)) < 1e-12  # ambient 0.3 -> 0.45
    assert absorbed(30.0, (0.3, 0.7, 30.0, 30.0)) > 1e-3  # elevation with the light from the side: visible
    assert absorbed(30.0, (0.45, 0.55, 30.0, 10.0)) > 1e-3
    assert absorbed(0.0, (0.3, 0.7, 20.0, 10.0)) > 1e-2  # azimuth 0 -> 20 deg


@pytest.mark.parametrize(
    ("depth_shape", "albedo_shape", "light_shape", "view_shape", "word"),
    [
        ((2, 32, 32), (2, 3, 32, 32), (2, 4), (2, 6), "canon_depth"),
        ((2, 1, 32, 32), (2, 1, 32, 32), (2, 4), (2, 6), "canon_albedo"),
        ((2, 1, 32, 32), (2, 3, 32, 32), (2, 3), (2, 6), "light"),
        ((2, 1, 32, 32), (2, 3, 32, 32), (2, 4), (1, 6), "view"),
        ((2, 1, 32, 16), (2, 3, 32, 16), (2, 4), (2, 6), "square"),
    ],
)
def test_bad_shapes_are_refused_with_the_argument_named(depth_shape, albedo_shape, light_shape, view_shape, word):
    with pytest.raises(ValueError, match=word):
        Renderer().render(torch.ones(depth_shape), torch.zeros(albedo_shape), torch.zeros(light_shape),
                          torch.zeros(view_shape))


def test_grid_faces_cover_every_cell_with_two_triangles():
    h, w = 3, 4
    faces = grid_faces(h, w)
    assert faces.shape == (2 * (h - 1) * (w - 1), 3)
    cells = {tuple(sorted(set(f.tolist()))) for f in faces}
    assert len(cells) == 12 and all(len(c) == 3 for c in cells)
    # each cell is split along its top-right / bottom-left diagonal (the official split): the two triangles hold
    # the cell's four corners and share exactly that diagonal, so they tile the cell without overlap
    by_cell: dict[tuple[int, int], list[set[int]]] = {}
    for f in faces.tolist():
        rows, cols = [v // w for v in f], [v % w for v in f]
        by_cell.setdefault((min(rows), min(cols)), []).append(set(f))
    assert sorted(by_cell) == [(r, c) for r in range(h - 1) for c in range(w - 1)]
    for (r, c), (a, b) in by_cell.items():
        tl, tr, bl, br = r * w + c, r * w + c + 1, (r + 1) * w + c, (r + 1) * w + c + 1
        assert a | b == {tl, tr, bl, br} and a & b == {tr, bl}, (r, c)


def test_bench_renderer_times_every_scene_against_its_baseline(tmp_path, monkeypatch):
    """scripts/bench_renderer.py end to end on a small batch: one row per scene and size, positive times, the
    render / decomposition ratio exactly where a decomposer of the render's size made the scene."""
    import json
    import sys

    from tests.helpers import load_script

    script = load_script("bench_renderer")
    monkeypatch.setattr(sys, "argv", ["bench_renderer.py", "--batch", "4", "--reps", "1", "--threads", "1",
                                      "--json", str(tmp_path / "r.json")])
    threads = torch.get_num_threads()
    try:
        script.main()
    finally:  # the script sets the process's thread count
        torch.set_num_threads(threads)
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["device"] == "cpu" and record["batch"] == 4
    rows = record["results"]
    assert set(rows) == {f"{scene} {size}" for scene in ("generator faces", "untrained nets", "noise depth")
                         for size in (32, 64)}
    with_baseline = {k for k, r in rows.items() if "render_over_decompose" in r}
    assert with_baseline == {"generator faces 32", "untrained nets 32", "untrained nets 64"}
    for name, r in rows.items():
        assert r["rasterize_ms_per_image"] > 0 and r["render_ms_per_image"] > 0, name
        if name in with_baseline:
            assert r["render_over_decompose"] == pytest.approx(r["render_ms_per_image"] / r["decompose_ms_per_image"])
