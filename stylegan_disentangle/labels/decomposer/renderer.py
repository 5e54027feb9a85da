"""Unsup3D image formation in pure PyTorch: canonical depth + albedo + light + view -> image (CPU and CUDA).

The decomposer (Wu et al., CVPR 2020) explains an image by a canonical (frontal, left-right symmetric) depth map
and albedo, a light and a viewpoint. This module is the differentiable renderer that puts them back together; it
replaces the CUDA mesh renderer of the official code by a vectorized z-buffer rasterizer written in PyTorch.

Conventions (those of the official Unsup3D model; `Renderer` holds fov / depth range / rotation centre):

* Camera: pinhole at the origin looking down +z (x right, y down), field of view ``fov`` (10 degrees), principal
  point at the image centre: pixel column ``i`` of an S-pixel image sits at ``u = (i - (S-1)/2) / f`` with
  ``f = (S-1)/2 / tan(fov/2)``; the point of depth ``z`` seen there is ``(u z, v z, z)``. Pixel centres are the
  ``grid_sample(..., align_corners=True)`` sample points, so the identity view reproduces the canonical maps.
* Depth maps ``[N, 1, H, W]`` (H == W) hold z in about [min_depth, max_depth] = [0.9, 1.1].
* View ``[N, 6] = (rx, ry, rz, tx, ty, tz)``: rotations in **degrees** about the camera's x, y, z axes and a
  translation. A canonical point X moves to ``R (X - c) + c + t`` with ``R = Rz(rz) Ry(ry) Rx(rx)`` and rotation
  centre ``c = (0, 0, rot_center_depth)``. The official model works in radians: its netV output ``raw`` in
  [-1, 1] becomes ``(raw[:3] * xyz_rotation_range (60), raw[3:5] * xy_translation_range (0.1),
  raw[5:] * z_translation_range)`` here, with the rotations left in degrees.
* Normals (`normals_from_depth`): ``tu x tv`` of the central differences of the 3-D points along the row (tu) and
  down the column (tv), normalized; the one-pixel border is set to (0, 0, 1), as in the official code. In the
  camera frame this is the *inward* normal: a surface facing the camera has normal (0, 0, 1).
* Light ``[N, 4] = (ambient a, diffuse b, dx, dy)`` (already rescaled: a, b in [0, 1] for the official ranges);
  direction ``l = normalize(dx, dy, 1)`` in the normals' frame, shading ``a + b * max(0, <n, l>)``, canonical
  image ``(albedo / 2 + 1/2) * shading * 2 - 1`` for albedo in [-1, 1]. Since n is the inward normal, the light
  itself lies toward ``(-dx, -dy, -1)`` in the camera frame: dx > 0 lights the face from image *left*.
* Warp (`render`): the canonical depth grid becomes a mesh (two triangles per cell), is moved by the view and
  rasterized with a z-buffer (nearest surface, both faces of every triangle) into the view-space depth; each view
  pixel's 3-D point is moved back into the canonical frame and the canonical image is read there with
  ``grid_sample(..., align_corners=True)``. Pixels that no triangle covers get depth ``max_depth + margin``
  (margin = (max - min) / 2), all depths are clamped to ``[min_depth - margin, max_depth + margin]`` and the mask
  is ``depth < max_depth + margin``, as in the official model.

The synthetic world (`stylegan_disentangle.synthetic`) uses the same camera, depth range, rotation centre and view
(its view is exactly this one: rx = pitch, ry = yaw, rz = roll in degrees, no translation), but its normals are
outward normals in a frame with z toward the camera, which flips the sign of the light's (dx, dy):
``light_from_world`` / ``light_to_world`` convert, ``light_angles`` gives the world's azimuth and elevation, and
``normals_to_world`` converts normals. Where the two differ in kind: the world ray-casts the bilinearly
interpolated height field, this renderer rasterizes its triangulation (see tests/test_decomposer_renderer.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "FOV_DEG",
    "MIN_DEPTH",
    "MAX_DEPTH",
    "Renderer",
    "rotation_matrix",
    "grid_faces",
    "rasterize_depth",
    "light_direction",
    "light_from_world",
    "light_to_world",
    "light_angles",
    "light_from_angles",
    "normals_to_world",
    "hflip",
    "with_flip",
]

FOV_DEG = 10.0
MIN_DEPTH = 0.9
MAX_DEPTH = 1.1
NEAR, FAR = 0.1, 10.0  # clipping range of the rasterizer (the official renderer's)
_EPS = 1e-7  # added to normal lengths, as the official code does (Renderer.normal_eps)
_BARY_EPS = 1e-5  # tolerance of the inside test: pixels on shared edges and vertices are never lost
_MAX_CANDIDATES = 1 << 22  # (triangle, pixel) pairs handled at once by the rasterizer


def rotation_matrix(angles_deg: torch.Tensor) -> torch.Tensor:
    """Rotations [N, 3] = (rx, ry, rz) in degrees -> matrices [N, 3, 3] = Rz(rz) @ Ry(ry) @ Rx(rx)."""
    a = torch.deg2rad(angles_deg)
    cx, cy, cz = torch.cos(a).unbind(-1)
    sx, sy, sz = torch.sin(a).unbind(-1)
    one, zero = torch.ones_like(cx), torch.zeros_like(cx)
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def grid_faces(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Triangles [2 (H-1)(W-1), 3] (vertex indices, row-major) of the mesh over an H x W pixel grid.

    Each cell (top-left, top-right, bottom-left, bottom-right) gives (tl, bl, tr) and (tr, bl, br), the split of
    the official code; orientation does not matter because the rasterizer draws both faces.
    """
    idx = torch.arange(height * width, device=device).view(height, width)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    first = torch.stack([tl, bl, tr], -1).reshape(-1, 3)
    second = torch.stack([tr, bl, br], -1).reshape(-1, 3)
    return torch.cat([first, second], 0)


def _edge_weights(x: torch.Tensor, y: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> tuple:
    """Screen-space barycentric weights (w0, w1, w2) of points (px, py) in triangles x, y [..., 3] (broadcast)."""
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    w0 = ((x1 - px) * (y2 - py) - (x2 - px) * (y1 - py)) / area
    w1 = ((x2 - px) * (y0 - py) - (x0 - px) * (y2 - py)) / area
    return w0, w1, 1 - w0 - w1


def _interpolated_depth(z: torch.Tensor, w: tuple) -> torch.Tensor:
    """Perspective-correct depth: 1/z is affine in screen space over a planar triangle (z [..., 3])."""
    z0, z1, z2 = z.unbind(-1)
    return 1.0 / (w[0] / z0 + w[1] / z1 + w[2] / z2)


@torch.no_grad()
def _zbuffer(sx: torch.Tensor, sy: torch.Tensor, sz: torch.Tensor, size: int, near: float, far: float):
    """Index [N * size * size] of the nearest triangle at every pixel (-1 where none), for triangles given by
    screen coordinates sx, sy (pixels) and depths sz, each [3, N, T] (corner first); triangle index =
    batch * T + triangle.

    Every triangle becomes three affine functions of the pixel position (two barycentric weights and the inverse
    depth, which is affine in screen space over a planar triangle), evaluated at the pixels of its bounding box;
    the nearest surface has the largest inverse depth. A first pass tests the 2 x 2 pixels at the top-left of
    every box (enough for triangles up to about a pixel across, i.e. nearly all of a depth-grid mesh); triangles
    with larger boxes are then gathered in groups of box size 4, 8, ... and test their k x k candidates, so the
    work stays close to the covered area even when a few triangles are stretched across the image.
    """
    _, n, t = sx.shape
    device, dtype = sx.device, sx.dtype
    (x0, x1, x2), (y0, y1, y2) = sx.reshape(3, n * t), sy.reshape(3, n * t)
    inv = 1.0 / sz.reshape(3, n * t)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    lo_x = torch.ceil(torch.minimum(torch.minimum(x0, x1), x2) - 1e-4).clamp_min(0)
    lo_y = torch.ceil(torch.minimum(torch.minimum(y0, y1), y2) - 1e-4).clamp_min(0)
    span_x = torch.floor(torch.maximum(torch.maximum(x0, x1), x2) + 1e-4).clamp_max(size - 1) - lo_x
    span_y = torch.floor(torch.maximum(torch.maximum(y0, y1), y2) + 1e-4).clamp_max(size - 1) - lo_y
    # NaN coordinates fail every comparison, so such triangles drop out with the empty and the degenerate ones
    valid = (span_x >= 0) & (span_y >= 0) & (area.abs() > 1e-12) & (sz.reshape(3, n * t).amin(0) > near)
    area = torch.where(valid, area, torch.ones_like(area))
    # w0(p) = ((x1 - px)(y2 - py) - (x2 - px)(y1 - py)) / area is affine in p with slopes (y1 - y2, x2 - x1) / area;
    # w1 likewise with the corners shifted by one. The constants are taken at the box corner (lo_x, lo_y), from
    # coordinates relative to it (a few pixels), which keeps float32 cancellation far below the inside tolerance.
    x0, x1, x2, y0, y1, y2 = x0 - lo_x, x1 - lo_x, x2 - lo_x, y0 - lo_y, y1 - lo_y, y2 - lo_y
    a0, b0 = (y1 - y2) / area, (x2 - x1) / area
    a1, b1 = (y2 - y0) / area, (x0 - x2) / area
    c0 = (x1 * y2 - x2 * y1) / area
    c1 = (x2 * y0 - x0 * y2) / area
    d0, d1 = inv[0] - inv[2], inv[1] - inv[2]
    batch = torch.div(torch.arange(n * t, device=device), t, rounding_mode="floor")
    base = ((batch * size + lo_y.long()) * size + lo_x.long()).clamp(0, n * size * size - 1)
    per_triangle = torch.stack([a0, b0, c0, a1, b1, c1, d0, d1, inv[2], span_x, span_y])
    per_triangle[9:] = torch.where(valid, per_triangle[9:], torch.full_like(span_x, -1.0))  # no pixel is inside

    pixels, values, owners = [], [], []

    everyone = torch.arange(n * t, device=device)

    def collect(ids: torch.Tensor | slice, k: int) -> None:
        """Test the k x k pixels at the top-left of each triangle's box; keep only the (pixel, inverse depth,
        triangle) triples inside, so that the z-test below handles the covered area, not the candidates."""
        p, start, owner = per_triangle[:, ids], base[ids], everyone[ids]
        o = torch.arange(k, device=device)
        ox, oy = o.repeat(k)[:, None], o.repeat_interleave(k)[:, None]  # [k*k, 1]
        oxf, oyf = ox.to(dtype), oy.to(dtype)
        w0 = p[2] + p[0] * oxf + p[1] * oyf
        w1 = p[5] + p[3] * oxf + p[4] * oyf
        invz = p[8] + p[6] * w0 + p[7] * w1
        inside = (w0 >= -_BARY_EPS) & (w1 >= -_BARY_EPS) & (w0 + w1 <= 1 + _BARY_EPS)
        inside &= (oxf <= p[9]) & (oyf <= p[10]) & (invz > 1 / far) & (invz < 1 / near)
        hit = inside.reshape(-1).nonzero().squeeze(1)
        offset, triangle = torch.div(hit, owner.numel(), rounding_mode="floor"), hit % owner.numel()
        pixels.append((start[triangle] + oy[offset, 0] * size + ox[offset, 0]).clamp_max(n * size * size - 1))
        values.append(invz.reshape(-1)[hit])
        owners.append(owner[triangle])

    for start in range(0, n * t, _MAX_CANDIDATES // 4):
        collect(slice(start, start + _MAX_CANDIDATES // 4), 2)
    extent = torch.maximum(span_x, span_y) + 1
    k = 4
    while k // 2 < size:
        group = (valid & (extent <= k) & (extent > k // 2)).nonzero().squeeze(1)
        step = max(1, _MAX_CANDIDATES // (k * k))
        for start in range(0, group.numel(), step):
            collect(group[start:start + step], k)
        k *= 2
    pixel, value, owner = torch.cat(pixels), torch.cat(values), torch.cat(owners)
    zbuf = torch.zeros(n * size * size, dtype=dtype, device=device)
    zbuf.scatter_reduce_(0, pixel, value, reduce="amax")
    front = value >= zbuf[pixel]
    winner = torch.full((n * size * size,), -1, dtype=torch.long, device=device)
    return winner.scatter_reduce_(0, pixel, torch.where(front, owner, -1), reduce="amax")


def rasterize_depth(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    size: int,
    focal: float,
    near: float = NEAR,
    far: float = FAR,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer depth of a triangle mesh seen by the pinhole camera, differentiable in the vertices.

    Parameters: `vertices` [N, V, 3] in the camera frame (x right, y down, z forward); `faces` [T, 3] vertex
    indices shared by the batch; output `size` (square); `focal` in pixels (principal point at the centre).

    Returns ``(depth [N, 1, size, size], covered [N, 1, size, size] bool)``: at each pixel centre the z of the
    nearest triangle (either face; perspective-correct interpolation, so exact for the planar triangle), or `far`
    where no triangle with z in (near, far) covers the pixel. Which triangle wins is decided without gradients;
    the depth is then recomputed from that triangle's vertices, so gradients flow to all three coordinates of the
    winning vertices (none flow across triangle boundaries, as in a plain z-buffer).
    """
    n = vertices.shape[0]
    centre = (size - 1) / 2
    z = vertices[..., 2]
    z_safe = torch.where(z > near, z, torch.ones_like(z))
    sx = vertices[..., 0] / z_safe * focal + centre
    sy = vertices[..., 1] / z_safe * focal + centre
    tri = faces.to(vertices.device)
    flat = tri.t().reshape(-1)  # corner-major: [3 * T]
    corners_first = (c.detach().index_select(1, flat).view(n, 3, -1).transpose(0, 1) for c in (sx, sy, z))
    winner = _zbuffer(*corners_first, size, near, far)
    pixel = (winner >= 0).nonzero().squeeze(1)
    owner = winner[pixel]
    t = tri.shape[0]
    batch = torch.div(owner, t, rounding_mode="floor")
    corners = tri[owner % t]  # [P, 3]
    rows = batch[:, None]
    px = (pixel % size).to(vertices.dtype)
    py = (torch.div(pixel, size, rounding_mode="floor") % size).to(vertices.dtype)
    w = _edge_weights(sx[rows, corners], sy[rows, corners], px, py)
    values = _interpolated_depth(z_safe[rows, corners], w)
    depth = torch.full((n * size * size,), far, dtype=vertices.dtype, device=vertices.device)
    depth = depth.index_put((pixel,), values)
    return depth.view(n, 1, size, size), (winner >= 0).view(n, 1, size, size)


def light_direction(light: torch.Tensor) -> torch.Tensor:
    """Light [N, 4] = (ambient, diffuse, dx, dy) -> unit direction [N, 3] = normalize(dx, dy, 1)."""
    d = torch.cat([light[:, 2:4], torch.ones_like(light[:, :1])], 1)
    return d / d.norm(dim=1, keepdim=True)


def light_from_world(light: torch.Tensor) -> torch.Tensor:
    """The synthetic world's light [N, 4] (`intrinsics['light']`) -> this renderer's: (dx, dy) change sign.

    Both are (ambient, diffuse, dx, dy) with direction normalize(dx, dy, 1), but the world dots it with outward
    normals (z toward the camera) and this renderer with inward ones, so the same physical light has opposite
    (dx, dy). Ambient and diffuse are the same numbers.
    """
    return light * torch.tensor([1.0, 1.0, -1.0, -1.0], device=light.device, dtype=light.dtype)


def light_to_world(light: torch.Tensor) -> torch.Tensor:
    """This renderer's light [N, 4] -> the synthetic world's (the inverse of `light_from_world`; the same flip)."""
    return light_from_world(light)


def light_angles(light: torch.Tensor) -> torch.Tensor:
    """This renderer's light [N, 4] -> [N, 2] = (azimuth, elevation) in degrees, in the synthetic world's sense.

    Azimuth > 0: light from image right; elevation > 0: light from above (factors `light_azimuth`,
    `light_elevation`). The world's direction toward the light is (cos e sin a, -sin e, cos e cos a) =
    normalize(-dx, -dy, 1) here, so a = atan(-dx) and e = atan(dy / sqrt(1 + dx^2)).
    """
    dx, dy = light[:, 2], light[:, 3]
    azimuth = torch.atan(-dx)
    elevation = torch.atan2(dy, torch.sqrt(1 + dx * dx))
    return torch.rad2deg(torch.stack([azimuth, elevation], 1))


def light_from_angles(ambient: torch.Tensor, diffuse: torch.Tensor, azimuth: torch.Tensor,
                      elevation: torch.Tensor) -> torch.Tensor:
    """Ambient, diffuse [N] and the world's azimuth, elevation [N] in degrees -> this renderer's light [N, 4]."""
    a, e = torch.deg2rad(azimuth), torch.deg2rad(elevation)
    return torch.stack([ambient, diffuse, -torch.tan(a), torch.tan(e) / torch.cos(a)], 1)


def normals_to_world(normals: torch.Tensor) -> torch.Tensor:
    """This renderer's normals [N, 3, H, W] -> the synthetic world's (outward, z toward the camera): negate x, y."""
    sign = torch.tensor([-1.0, -1.0, 1.0], device=normals.device, dtype=normals.dtype)
    return normals * sign.view(1, 3, 1, 1)


def hflip(maps: torch.Tensor) -> torch.Tensor:
    """Mirror canonical maps [N, C, H, W] left-right (the symmetry Unsup3D assumes of depth and albedo)."""
    return maps.flip(-1)


def with_flip(maps: torch.Tensor) -> torch.Tensor:
    """[N, ...] -> [2N, ...]: maps [N, C, H, W] followed by their mirror images, for the flip branch.

    Per-image vectors (light [N, 4], view [N, 6]) are shared by both branches: use ``x.repeat(2, 1)``.
    """
    return torch.cat([maps, hflip(maps)], 0)


def _check_maps(name: str, maps: torch.Tensor, channels: int | None = None, square: bool = True) -> None:
    if maps.dim() != 4 or (channels is not None and maps.shape[1] != channels):
        c = "C" if channels is None else str(channels)
        raise ValueError(f"renderer: {name} must be [N, {c}, H, W]; got shape {tuple(maps.shape)}")
    if square and (maps.shape[2] != maps.shape[3] or maps.shape[2] < 3):
        raise ValueError(f"renderer: {name} must be square and at least 3x3; got {maps.shape[2]}x{maps.shape[3]}")


def _check_vector(name: str, value: torch.Tensor, n: int, width: int) -> None:
    if value.dim() != 2 or value.shape != (n, width):
        raise ValueError(f"renderer: {name} must be [{n}, {width}]; got shape {tuple(value.shape)}")


@dataclass(frozen=True)
class Renderer:
    """The Unsup3D camera and image formation; stateless: every method takes the view it needs.

    Parameters: `fov` in degrees; `min_depth`, `max_depth`: the canonical depth range (it sets the margin and the
    valid mask); `rot_center_depth`: z of the rotation centre (default the middle of the range, 1.0);
    `normal_eps`: added to the length of the normal before dividing (1e-7 as in the official code; the cross
    products of central differences are only about (4 tan(fov/2) / (S-1))^2 long, so it shortens normals by
    0.08% at 32 px and 0.3% at 64 px: set 0 for unit normals).
    The image size comes from the maps passed in (square). Works on the device and dtype of its inputs.

    Examples
    --------
    >>> r = Renderer()
    >>> out = r.render(depth, albedo, light, view)  # depth [N,1,S,S], albedo [N,3,S,S], light [N,4], view [N,6]
    >>> out["image"].shape  # [N, 3, S, S] in [-1, 1], zero outside out["mask"]
    """

    fov: float = FOV_DEG
    min_depth: float = MIN_DEPTH
    max_depth: float = MAX_DEPTH
    rot_center_depth: float | None = None
    normal_eps: float = _EPS

    @property
    def center_depth(self) -> float:
        """z of the rotation centre."""
        return (self.min_depth + self.max_depth) / 2 if self.rot_center_depth is None else self.rot_center_depth

    @property
    def margin(self) -> float:
        """How far outside [min_depth, max_depth] a view-space depth may go before it is clamped."""
        return (self.max_depth - self.min_depth) / 2

    def focal(self, size: int) -> float:
        """Focal length in pixels of an image `size` pixels wide."""
        return (size - 1) / 2 / math.tan(math.radians(self.fov) / 2)

    def depth_to_points(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth [N, 1, S, S] -> 3-D points [N, S, S, 3] in the camera frame (x right, y down, z forward)."""
        size = depth.shape[-1]
        lin = (torch.arange(size, device=depth.device, dtype=depth.dtype) - (size - 1) / 2) / self.focal(size)
        z = depth[:, 0]
        return torch.stack([lin.view(1, 1, -1) * z, lin.view(1, -1, 1) * z, z], -1)

    def points_to_grid(self, points: torch.Tensor) -> torch.Tensor:
        """3-D points [N, S, S, 3] -> their projections [N, S, S, 2] as (x, y) in [-1, 1] (grid_sample's form)."""
        size = points.shape[-2]
        scale = self.focal(size) / ((size - 1) / 2)
        return points[..., :2] / points[..., 2:] * scale

    def _rotation_and_translation(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rotation_matrix(view[:, :3]), view[:, 3:6]

    def transform_points(self, points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Canonical points [N, ..., 3] -> view points ``R (X - c) + c + t`` for view [N, 6] (degrees)."""
        rot, trans = self._rotation_and_translation(view)
        centre = points.new_tensor([0.0, 0.0, self.center_depth])
        flat = points.reshape(points.shape[0], -1, 3) - centre
        moved = flat @ rot.transpose(1, 2) + centre + trans[:, None]
        return moved.view_as(points)

    def inverse_transform_points(self, points: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """View points [N, ..., 3] -> canonical points ``R^T (X - t - c) + c`` (the inverse of transform_points)."""
        rot, trans = self._rotation_and_translation(view)
        centre = points.new_tensor([0.0, 0.0, self.center_depth])
        flat = points.reshape(points.shape[0], -1, 3) - trans[:, None] - centre
        return (flat @ rot + centre).view_as(points)

    def warp_canonical_depth(self, canon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Canonical depth [N, 1, S, S] seen from view [N, 6] -> view-space depth [N, 1, S, S].

        The depth grid's mesh is moved by the view and rasterized (nearest surface, double-sided); uncovered
        pixels get ``max_depth + margin`` and everything is clamped to ``[min_depth - margin, max_depth + margin]``.
        """
        _check_maps("canon_depth", canon_depth, 1)
        _check_vector("view", view, canon_depth.shape[0], 6)
        n, _, size, _ = canon_depth.shape
        points = self.transform_points(self.depth_to_points(canon_depth), view).reshape(n, -1, 3)
        faces = grid_faces(size, size, canon_depth.device)
        depth, _ = rasterize_depth(points, faces, size, self.focal(size))
        return depth.clamp(self.min_depth - self.margin, self.max_depth + self.margin)

    def inverse_warp_grid(self, recon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """View-space depth [N, 1, S, S] -> sampling grid [N, S, S, 2]: where each view pixel's 3-D point lies
        in the canonical image (for ``grid_sample(canonical_maps, grid, align_corners=True)``)."""
        _check_maps("recon_depth", recon_depth, 1)
        _check_vector("view", view, recon_depth.shape[0], 6)
        points = self.inverse_transform_points(self.depth_to_points(recon_depth), view)
        return self.points_to_grid(points)

    def forward_warp_grid(self, canon_depth: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Canonical depth [N, 1, S, S] and view [N, 6] -> sampling grid [N, S, S, 2]: where each canonical pixel's
        3-D point shows in the view image (``grid_sample(view_image, grid, align_corners=True)`` reads an image back
        into the canonical frame; occlusion is not tested, so a point hidden in the view reads what hides it)."""
        _check_maps("canon_depth", canon_depth, 1)
        _check_vector("view", view, canon_depth.shape[0], 6)
        return self.points_to_grid(self.transform_points(self.depth_to_points(canon_depth), view))

    def normals_from_depth(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth [N, 1, S, S] -> unit normals [N, 3, S, S]: ``tu x tv`` of central differences of the 3-D points
        (inward in the camera frame; (0, 0, 1) faces the camera); the one-pixel border is (0, 0, 1). The length is
        ``|n| / (|n| + normal_eps)``, slightly below 1 with the official epsilon."""
        _check_maps("depth", depth, 1)
        points = self.depth_to_points(depth)
        tu = points[:, 1:-1, 2:] - points[:, 1:-1, :-2]
        tv = points[:, 2:, 1:-1] - points[:, :-2, 1:-1]
        inner = torch.linalg.cross(tu, tv, dim=-1).permute(0, 3, 1, 2)
        ring = torch.ones_like(depth)
        ring[:, :, 1:-1, 1:-1] = 0
        normal = F.pad(inner, (1, 1, 1, 1)) + torch.cat([torch.zeros_like(ring), torch.zeros_like(ring), ring], 1)
        return normal / (normal.norm(dim=1, keepdim=True) + self.normal_eps)

    def shade(self, normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """Lambertian shading [N, 1, S, S] = ambient + diffuse * max(0, <normal, normalize(dx, dy, 1)>)."""
        _check_maps("normals", normals, 3, square=False)
        _check_vector("light", light, normals.shape[0], 4)
        cos = (normals * light_direction(light)[:, :, None, None]).sum(1, keepdim=True).clamp_min(0)
        return light[:, 0, None, None, None] + light[:, 1, None, None, None] * cos

    @staticmethod
    def canonical_image(albedo: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
        """Albedo [N, 3, S, S] in [-1, 1] and shading [N, 1, S, S] -> canonical image (albedo/2+1/2)*shading*2-1."""
        return (albedo / 2 + 0.5) * shading * 2 - 1

    @staticmethod
    def sample(maps: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Read canonical maps [N, C, S, S] at grid [N, S, S, 2] (bilinear, zeros outside, align_corners=True)."""
        return F.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)

    def render(
        self,
        canon_depth: torch.Tensor,
        canon_albedo: torch.Tensor,
        light: torch.Tensor,
        view: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """The full image formation, as the official model does it.

        Inputs: canonical depth [N, 1, S, S], canonical albedo [N, 3, S, S] in [-1, 1], light [N, 4] = (ambient,
        diffuse, dx, dy), view [N, 6] = (rx, ry, rz in degrees, tx, ty, tz).

        Returns a dict: ``image`` [N, 3, S, S] (the canonical image warped into the view, zero outside ``mask``);
        ``mask`` [N, 1, S, S] (1 where the view-space depth is valid; no gradient); ``recon_depth`` [N, 1, S, S];
        ``recon_normal`` [N, 3, S, S]; ``canon_normal`` [N, 3, S, S]; ``shading`` [N, 1, S, S] (canonical);
        ``canon_image`` [N, 3, S, S]; ``grid`` [N, S, S, 2] (where each view pixel reads the canonical maps: use
        `sample` to warp other canonical maps, e.g. a confidence or a symmetry axis, into the view).
        """
        _check_maps("canon_depth", canon_depth, 1)
        _check_maps("canon_albedo", canon_albedo, 3)
        if canon_albedo.shape[0] != canon_depth.shape[0] or canon_albedo.shape[2:] != canon_depth.shape[2:]:
            raise ValueError(f"renderer: canon_albedo {tuple(canon_albedo.shape)} does not match canon_depth "
                             f"{tuple(canon_depth.shape)}")
        canon_normal = self.normals_from_depth(canon_depth)
        shading = self.shade(canon_normal, light)
        canon_image = self.canonical_image(canon_albedo, shading)
        recon_depth = self.warp_canonical_depth(canon_depth, view)
        grid = self.inverse_warp_grid(recon_depth, view)
        mask = (recon_depth < self.max_depth + self.margin).to(recon_depth.dtype).detach()
        return {
            "image": self.sample(canon_image, grid) * mask,
            "mask": mask,
            "recon_depth": recon_depth,
            "recon_normal": self.normals_from_depth(recon_depth),
            "canon_normal": canon_normal,
            "shading": shading,
            "canon_image": canon_image,
            "grid": grid,
        }
