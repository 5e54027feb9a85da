"""Unsup3D image formation: canonical depth + albedo + light + view -> image, differentiable, batched.

The model (Wu et al., CVPR 2020), with the conventions used throughout `synthetic/`:

* Camera: pinhole at the origin looking down +z, field of view ``FOV_DEG = 10`` degrees. A pixel with normalized
  coordinates (u, v) in [-1, 1] (``grid_sample(align_corners=True)`` convention, u to the right, v down) sees the
  ray ``t * (u tan(fov/2), v tan(fov/2), 1)``; the point at depth z is ``(u tan(fov/2) z, v tan(fov/2) z, z)``.
* Canonical depth ``d[N, 1, H, W]`` in [0.9, 1.1] is the z of the canonical (frontal) surface seen through each pixel.
* Normals: outward unit normals from the depth map's 3-D points by central differences, expressed in the *light
  frame* (x right, y down, z toward the camera): a surface facing the camera has normal (0, 0, 1).
* Light ``[N, 4] = (ambient a, diffuse b, dx, dy)``: the unit direction toward the light is ``normalize(dx, dy, 1)``
  in the light frame, and the canonical shading is ``a + b * max(0, <n, l>)``. The light lives in the face's
  canonical frame (as in Unsup3D), so it does not change when the head turns.
* Albedo ``[N, 3, H, W]`` in [-1, 1]; the canonical image is ``(albedo / 2 + 1/2) * shading`` in [0, 1].
* View ``[N, 6] = (rx, ry, rz, tx, ty, tz)``: rotations in degrees about the camera's x, y, z axes and a translation.
  A canonical point X goes to ``R (X - c) + c + t`` with ``R = Rz(rz) Ry(ry) Rx(rx)`` (right-handed, in the camera
  frame) and rotation centre ``c = (0, 0, 1)``.
* Object mask: the object is the part of the canonical surface in front of ``CUT_DEPTH``; surfaces behind the cut
  (the wall down to 1.1 around the head) show the background colour. For a depth map z (the canonical depth, or
  the depth of each output pixel's hit) the mask is ``sigmoid((CUT_DEPTH - z) / (0.3 * fwidth(z) + 1e-4))``, where
  fwidth is the larger absolute change of z to the next pixel (as in shader anti-aliasing): the edge is about one
  pixel wide whether the cut is seen face-on or edge-on, and the mask has gradients.
* Warp: each output pixel's ray is mapped into the canonical frame and marched through the canonical depth
  (height-field ray casting); the first crossing is refined by bisection and one differentiable secant step; the
  canonical image and any other maps are read there with ``grid_sample``, and the object mask is computed from the
  depth of the hit (so its edge stays about a pixel wide on surfaces seen edge-on). Gradients flow to depth, albedo,
  light and view.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..labels.decomposer.renderer import rotation_matrix  # the same camera as the decomposer's renderer

__all__ = [
    "FOV_DEG",
    "MIN_DEPTH",
    "MAX_DEPTH",
    "ROT_CENTER_DEPTH",
    "CUT_DEPTH",
    "MARCH_FAR",
    "TAN_HALF_FOV",
    "pixel_grid",
    "rotation_matrix",
    "normals_from_depth",
    "light_direction",
    "shade",
    "object_mask",
    "warp_canonical",
    "recompose",
]

FOV_DEG = 10.0
MIN_DEPTH = 0.9
MAX_DEPTH = 1.1
ROT_CENTER_DEPTH = 1.0
CUT_DEPTH = 1.04
MARCH_FAR = CUT_DEPTH + 0.02  # rays that pass this canonical depth without a hit are background
TAN_HALF_FOV = math.tan(math.radians(FOV_DEG) / 2)


def pixel_grid(resolution: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> tuple:
    """Normalized pixel-centre coordinates (u, v), each [1, 1, H, W] in [-1, 1] (u right, v down)."""
    lin = torch.linspace(-1.0, 1.0, resolution, device=device, dtype=dtype)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    return u[None, None], v[None, None]


def normals_from_depth(depth: torch.Tensor) -> torch.Tensor:
    """Canonical depth [N, 1, H, W] -> outward unit normals [N, 3, H, W] in the light frame (z toward the camera).

    The 3-D point of each pixel is unprojected with the camera above; tangents are central differences (edge pixels
    replicate their neighbour), and the normal is their cross product, flipped to face the camera.
    """
    n, _, h, w = depth.shape
    u, v = pixel_grid(h, depth.device, depth.dtype)
    if w != h:
        raise ValueError(f"normals_from_depth expects square depth maps; got {h}x{w}")
    pts = torch.cat([u * TAN_HALF_FOV * depth, v * TAN_HALF_FOV * depth, depth], 1)  # camera frame, z forward
    pad = F.pad(pts, (1, 1, 1, 1), mode="replicate")
    tu = pad[:, :, 1:-1, 2:] - pad[:, :, 1:-1, :-2]
    tv = pad[:, :, 2:, 1:-1] - pad[:, :, :-2, 1:-1]
    normal = torch.cross(tv, tu, dim=1)  # points toward the camera (negative z in the camera frame)
    normal = normal * torch.tensor([1.0, 1.0, -1.0], device=depth.device, dtype=depth.dtype).view(1, 3, 1, 1)
    return normal * torch.rsqrt((normal * normal).sum(1, keepdim=True).clamp_min(1e-24))


def light_direction(light: torch.Tensor) -> torch.Tensor:
    """Light [N, 4] = (ambient, diffuse, dx, dy) -> unit direction toward the light [N, 3] in the light frame."""
    d = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], 1)
    return d / d.norm(dim=1, keepdim=True)


def shade(depth: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
    """Canonical Lambertian shading [N, 1, H, W] = ambient + diffuse * max(0, <normal(depth), light direction>)."""
    normal = normals_from_depth(depth)
    cos = (normal * light_direction(light)[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
    return light[:, 0, None, None, None] + light[:, 1, None, None, None] * cos


def object_mask(depth: torch.Tensor) -> torch.Tensor:
    """Soft object mask [N, 1, H, W] of a depth map [N, 1, H, W]: ~1 in front of CUT_DEPTH, ~0 behind, with a
    one-pixel anti-aliased edge (the softness follows the map's local depth change, which is not differentiated)."""
    with torch.no_grad():
        pad = F.pad(depth, (1, 1, 1, 1), mode="replicate")
        dx = torch.maximum((pad[:, :, 1:-1, 2:] - depth).abs(), (pad[:, :, 1:-1, :-2] - depth).abs())
        dy = torch.maximum((pad[:, :, 2:, 1:-1] - depth).abs(), (pad[:, :, :-2, 1:-1] - depth).abs())
        softness = 0.3 * torch.maximum(dx, dy) + 1e-4
    return torch.sigmoid((CUT_DEPTH - depth) / softness)


def _canonical_rays(view: torch.Tensor, resolution: int) -> tuple:
    """Rays of the output pixels expressed in the canonical frame: X(t) = o + t e, o [N, 3, 1, 1], e [N, 3, H, W]."""
    rot = rotation_matrix(view[:, :3])
    centre = torch.tensor([0.0, 0.0, ROT_CENTER_DEPTH], device=view.device, dtype=view.dtype)
    u, v = pixel_grid(resolution, view.device, view.dtype)
    ray = torch.cat([u * TAN_HALF_FOV, v * TAN_HALF_FOV, torch.ones_like(u)], 1)  # [1, 3, H, W], z = 1
    rot_t = rot.transpose(1, 2)
    e = torch.einsum("nij,bjhw->nihw", rot_t, ray)
    o = centre - torch.einsum("nij,nj->ni", rot_t, centre + view[:, 3:6])
    return o[:, :, None, None], e


def _sample(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=True)


def _march_steps(e: torch.Tensor, z_span: torch.Tensor, resolution: int, pixels_per_step: float = 1.25) -> torch.Tensor:
    """Per-sample number of march steps [N] so that one step moves at most `pixels_per_step` canonical pixels
    sideways (rays e [N, 3, H, W], canonical depth span z_span [N])."""
    lateral = (e[:, :2].abs() / e[:, 2:3].clamp_min(1e-3)).amax(dim=(1, 2, 3))  # metric sideways per unit depth
    pixels = lateral * z_span / TAN_HALF_FOV * (resolution - 1) / 2
    return (torch.ceil(pixels / pixels_per_step) + 4).clamp(12, 200)


def warp_canonical(
    depth: torch.Tensor,
    view: torch.Tensor,
    maps: torch.Tensor,
    resolution: int | None = None,
    far: float | None = None,
    refine_steps: int = 5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render canonical `maps` [N, C, H, W] into the view: ray-cast the height field `depth` [N, 1, H, W].

    Returns ``(warped [N, C, R, R], hit_depth [N, 1, R, R])`` (R = `resolution`, default H): for each output pixel,
    `maps` read at the first point where the pixel's ray meets the canonical surface, and that point's canonical
    depth. Rays are marched from just in front of the nearest depth to canonical depth `far` (default: a little past
    the deepest point, so every ray meets the surface; pixels outside the frame read the border values). A ray that
    reaches `far` without meeting the surface reports the point at `far` (set `far` past CUT_DEPTH, and such rays
    are background).
    """
    resolution = depth.shape[-1] if resolution is None else resolution
    o, e = _canonical_rays(view, resolution)
    # A ray point at canonical depth z projects to  grid(z) = A / z + B  (per pixel), so the march runs in z
    ez = e[:, 2:3]
    slope = e[:, :2] / ez  # sideways per unit depth
    offset = o[:, :2] - o[:, 2:3] * slope
    a_grid = (offset / TAN_HALF_FOV).expand(-1, -1, resolution, resolution).permute(0, 2, 3, 1)  # [N, R, R, 2]
    b_grid = (slope / TAN_HALF_FOV).permute(0, 2, 3, 1)

    def gap(z: torch.Tensor, a: torch.Tensor = a_grid, b: torch.Tensor = b_grid) -> torch.Tensor:
        """Surface depth minus ray depth at ray depth z ([N, 1, 1, 1] or [N, 1, R, R]): > 0 while in front."""
        grid = torch.addcmul(b, a, 1.0 / z.permute(0, 2, 3, 1))
        return _sample(depth, grid) - z

    with torch.no_grad():
        a_d, b_d = a_grid.detach(), b_grid.detach()
        z0 = depth.amin(dim=(1, 2, 3)) - 1e-3
        z1 = depth.amax(dim=(1, 2, 3)) + 1e-2 if far is None else torch.full_like(z0, far)
        steps = _march_steps(e, z1 - z0, depth.shape[-1]).view(-1, 1, 1, 1)
        z0, z1 = z0.view(-1, 1, 1, 1), z1.view(-1, 1, 1, 1)
        shape = (depth.shape[0], 1, resolution, resolution)
        found = torch.zeros(shape, dtype=torch.bool, device=depth.device)
        z_prev = z0
        lo, hi = z0.expand(shape).clone(), z1.expand(shape).clone()
        for k in range(1, int(steps.max()) + 1):
            z = z0 + (z1 - z0) * (k / steps).clamp_max(1)  # samples with fewer steps wait at z1
            new = (~found) & (gap(z, a_d, b_d) <= 0)
            lo = torch.where(new, z_prev, lo)
            hi = torch.where(new, z, hi)
            found |= new
            z_prev = z
        lo = torch.where(found, lo, hi)  # no crossing: report the far end
        for _ in range(refine_steps):
            mid = 0.5 * (lo + hi)
            inside = gap(mid, a_d, b_d) <= 0
            hi = torch.where(inside, mid, hi)
            lo = torch.where(inside, lo, mid)
    # one differentiable secant step on the final bracket carries gradients to depth and view
    g_lo, g_hi = gap(lo), gap(hi)
    denom = g_lo - g_hi
    ok = denom.abs() > 1e-9
    frac = torch.where(ok, g_lo / torch.where(ok, denom, torch.ones_like(denom)), torch.full_like(denom, 0.5))
    z_hit = lo + frac.clamp(0, 1) * (hi - lo)
    grid = torch.addcmul(b_grid, a_grid, 1.0 / z_hit.permute(0, 2, 3, 1))
    return _sample(maps, grid), z_hit


def recompose(intrinsics: dict[str, torch.Tensor], resolution: int | None = None) -> torch.Tensor:
    """Image [N, 3, H, W] in [-1, 1] from Unsup3D intrinsics alone (the image-formation model, nothing else).

    Uses `depth` [N,1,H,W], `albedo` [N,3,H,W] in [-1, 1], `light` [N,4], `view` [N,6] and, when present,
    `background` [N, 3] in [-1, 1]: the canonical image ``(albedo/2+1/2) * shade(depth, light)`` is ray-cast into
    the view and composited over the background with the object mask of the hit depth. Without `background` (e.g.
    a decomposer's full-frame prediction) the whole depth map is the object, as in Unsup3D.
    """
    depth, albedo, light = intrinsics["depth"], intrinsics["albedo"], intrinsics["light"]
    canon = (albedo * 0.5 + 0.5) * shade(depth, light)
    if "background" not in intrinsics:
        return warp_canonical(depth, intrinsics["view"], canon, resolution)[0] * 2 - 1
    rgb, hit_depth = warp_canonical(depth, intrinsics["view"], canon, resolution, far=MARCH_FAR)
    mask = object_mask(hit_depth)
    background = (intrinsics["background"][:, :, None, None] * 0.5 + 0.5)
    return (mask * rgb + (1 - mask) * background) * 2 - 1
