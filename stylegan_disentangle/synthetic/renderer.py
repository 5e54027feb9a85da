"""render(factors) -> face images, and the exact Unsup3D intrinsics of every render.

A face is drawn in three steps: the physical factor values build the canonical head (face.canonical_face: depth,
albedo, part masks), the illumination factors give the Unsup3D light and the canonical shading, and the pose factors
give the Unsup3D view with which the canonical image is ray-cast into the camera (image_formation). Because the
image *is* the Unsup3D image-formation model applied to those intrinsics, `recompose(intrinsics)` returns the image.
"""

from __future__ import annotations

import math
import operator

import torch
from tqdm.auto import tqdm

from .face import BACKGROUND_RGB, canonical_face
from .factors import FACTORS, factor_names, num_factors, to_physical
from .image_formation import MARCH_FAR, normals_from_depth, object_mask, shade, warp_canonical

__all__ = ["RENDERER_VERSION", "render", "render_dataset", "light_from_factors", "view_from_factors"]

# Bumped whenever the pictures change for the same factors; caches of rendered images should record it.
RENDERER_VERSION = 1


def _physical(factors: torch.Tensor) -> dict[str, torch.Tensor]:
    if not isinstance(factors, torch.Tensor) or not factors.is_floating_point():
        kind = f"a {factors.dtype} tensor" if isinstance(factors, torch.Tensor) else f"a {type(factors).__name__}"
        raise ValueError(f"render expects normalized factors as a float tensor [N, {num_factors()}]; got {kind}")
    if factors.dim() != 2 or factors.shape[1] != num_factors() or factors.shape[0] == 0:
        raise ValueError(f"render expects normalized factors [N, {num_factors()}] in the order "
                         f"{', '.join(factor_names())}; got shape {tuple(factors.shape)}")
    if not torch.isfinite(factors).all():
        raise ValueError("render got NaN or inf factor values")
    phys = to_physical(factors)
    return {f.name: phys[:, i] for i, f in enumerate(FACTORS)}


def light_from_factors(factors: torch.Tensor) -> torch.Tensor:
    """Normalized factors [N, F] -> Unsup3D light [N, 4] = (ambient, diffuse, dx, dy) in the canonical frame.

    The direction toward the light is (cos e sin a, -sin e, cos e cos a) for azimuth a, elevation e (x right,
    y down, z toward the camera); (dx, dy) are its x and y over its z. The diffuse strength is 1 - ambient.
    """
    phys = _physical(factors)
    az, el = torch.deg2rad(phys["light_azimuth"]), torch.deg2rad(phys["light_elevation"])
    lx, ly, lz = torch.cos(el) * torch.sin(az), -torch.sin(el), torch.cos(el) * torch.cos(az)
    return torch.stack([phys["ambient"], 1 - phys["ambient"], lx / lz, ly / lz], 1)


def view_from_factors(factors: torch.Tensor) -> torch.Tensor:
    """Normalized factors [N, F] -> Unsup3D view [N, 6] = (pitch, yaw, roll in degrees, 0, 0, 0)."""
    phys = _physical(factors)
    rot = torch.stack([phys["pitch"], phys["yaw"], phys["roll"]], 1)
    return torch.cat([rot, torch.zeros_like(rot)], 1)


def render(
    factors: torch.Tensor,
    resolution: int = 64,
    return_intrinsics: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Render faces from normalized factors [N, F] (order `factor_names()`) -> images [N, 3, R, R] in [-1, 1].

    Differentiable with respect to every factor; runs on the factors' device. With `return_intrinsics=True` also
    returns a dict with the Unsup3D decomposition of every image:

    - ``depth`` [N,1,R,R] canonical depth in [0.9, 1.1]; ``albedo`` [N,3,R,R] canonical albedo in [-1, 1];
    - ``light`` [N,4] (ambient, diffuse, dx, dy); ``view`` [N,6] (rx, ry, rz in degrees, tx, ty, tz);
    - ``shading`` [N,1,R,R] canonical shading; ``normal`` [N,3,R,R] canonical normals;
    - ``canonical_mask`` [N,1,R,R] = object_mask(depth) (1 on the head); ``background`` [N,3] in [-1, 1];
    - ``masks`` [N,P,R,R] part ownerships in image space and ``canonical_masks`` [N,P,R,R] in the canonical frame,
      P = len(PART_NAMES) = (skin, eyes, nose, mouth, brows, hair, background); each sums to 1 per pixel.

    `image_formation.recompose(intrinsics)` rebuilds the images from depth, albedo, light, view and background.
    """
    given = resolution
    try:
        resolution = operator.index(resolution)  # ints, numpy ints; not 8.5
    except TypeError:
        resolution = None
    if resolution is None or isinstance(given, bool) or resolution < 8:
        raise ValueError(f"render resolution must be an integer of at least 8; got {given!r}")
    phys = _physical(factors)
    face = canonical_face(phys, resolution)
    light = light_from_factors(factors)
    view = view_from_factors(factors)
    shading = shade(face["depth"], light)
    canon = face["albedo"] * shading
    warped, hit_depth = warp_canonical(face["depth"], view, torch.cat([canon, face["parts"][:, :-1]], 1),
                                        far=MARCH_FAR)
    rgb, mask = warped[:, :3], object_mask(hit_depth)
    background = torch.tensor(BACKGROUND_RGB, device=factors.device, dtype=factors.dtype).view(1, 3, 1, 1)
    images = (mask * rgb + (1 - mask) * background) * 2 - 1
    if not return_intrinsics:
        return images
    intrinsics = {
        "depth": face["depth"],
        "albedo": face["albedo"] * 2 - 1,
        "light": light,
        "view": view,
        "shading": shading,
        "normal": normals_from_depth(face["depth"]),
        "canonical_mask": face["mask"],
        "background": (background.view(1, 3) * 2 - 1).expand(factors.shape[0], 3),
        "masks": _image_parts(warped[:, 3:], mask),
        "canonical_masks": face["parts"],
    }
    return images, intrinsics


def _image_parts(head_parts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Warped head-part ownerships [N, P-1, R, R] -> all P parts, renormalized inside the object mask.

    Where the warped head parts vanish (a hit just outside the canonical head, inside the image-space mask's soft
    edge) the pixel counts as skin, so the P masks always sum to 1.
    """
    head_parts = head_parts.clone()
    head_parts[:, :1] += 1e-4  # skin is the first part
    head_parts = head_parts / head_parts.sum(1, keepdim=True)
    return torch.cat([head_parts * mask, 1 - mask], 1)


@torch.no_grad()
def render_dataset(
    factors: torch.Tensor,
    resolution: int = 64,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
) -> torch.Tensor:
    """Render many faces in batches without gradients -> images [N, 3, R, R] on the CPU (float32).

    `factors` [N, F] may live anywhere; each batch is moved to `device`. `progress=None` shows a tqdm bar only when
    stderr is a terminal.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    n = factors.shape[0]
    out = torch.empty(n, 3, resolution, resolution)
    batches = range(0, n, batch_size)
    disable = None if progress is None else not progress
    for start in tqdm(batches, total=math.ceil(n / batch_size), desc="render", disable=disable, unit="batch"):
        chunk = factors[start:start + batch_size].to(device=device, dtype=torch.float32)
        out[start:start + batch_size] = render(chunk, resolution).cpu()
    return out
