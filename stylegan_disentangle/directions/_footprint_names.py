"""Names of localized directions by where their footprints lie: the part holding most of the footprint's mass
(the generator's own part masks when it has them, else `canonical_regions`, a fixed partition of the canonical
Unsup3D face), with `_left` / `_right` when the mass sits on one side of the image."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["canonical_regions", "footprint_name", "resize_masks", "side_suffix"]


def canonical_regions(resolution: int) -> tuple[list[str], np.ndarray]:
    """A partition of the canonical face image `[R, R]` into named regions: (names, masks `[P, R, R]` of 0/1).

    The canonical frame of an Unsup3D decomposer is a frontal, centred face; coordinates x (image right +) and
    y (down +) span [-1, 1]. Rows are assigned by the first rule that matches:
    forehead y < -0.45; eyes y < -0.1, |x| < 0.6; nose y < 0.3, |x| < 0.22; mouth 0.3 <= y < 0.6, |x| < 0.38;
    cheeks -0.1 <= y < 0.6, |x| < 0.75; chin y >= 0.6, |x| < 0.55; outline: the rest.
    """
    r = int(resolution)
    coords = (np.arange(r) + 0.5) / r * 2 - 1
    y, x = np.meshgrid(coords, coords, indexing="ij")
    ax = np.abs(x)
    rules = [
        ("forehead", y < -0.45),
        ("eyes", (y < -0.1) & (ax < 0.6)),
        ("nose", (y < 0.3) & (ax < 0.22) & (y >= -0.1)),
        ("mouth", (y >= 0.3) & (y < 0.6) & (ax < 0.38)),
        ("cheeks", (y >= -0.1) & (y < 0.6) & (ax < 0.75)),
        ("chin", (y >= 0.6) & (ax < 0.55)),
    ]
    taken = np.zeros((r, r), dtype=bool)
    names, masks = [], []
    for name, rule in rules:
        m = rule & ~taken
        taken |= m
        names.append(name)
        masks.append(m)
    names.append("outline")
    masks.append(~taken)
    return names, np.stack(masks).astype(np.float32)


def resize_masks(masks: np.ndarray, resolution: int) -> np.ndarray:
    """Part masks `[P, H, W]` resampled to `[P, R, R]` (area average down, bilinear up)."""
    if masks.shape[1:] == (resolution, resolution):
        return masks
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(masks, dtype=torch.float32)[None]
    mode = "area" if masks.shape[1] >= resolution else "bilinear"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(t, size=(resolution, resolution), mode=mode, **kw)[0].numpy()


def footprint_name(footprint: np.ndarray, part_names: Sequence[str], part_masks: np.ndarray,
                   side_fraction: float = 0.7) -> tuple[str, np.ndarray]:
    """Name of a footprint `[R, R]` (non-negative) by part masks `[P, R, R]`; returns (name, mass share per part).

    The part holding the largest share of the footprint's mass names it; `_left` / `_right` is appended when more
    than `side_fraction` of the mass lies in the image's left / right half (the middle column counts half).
    """
    fp = np.abs(np.asarray(footprint, dtype=np.float64))
    total = fp.sum()
    masks = resize_masks(np.asarray(part_masks, dtype=np.float32), fp.shape[-1]).astype(np.float64)
    if total <= 0:
        return "none", np.zeros(len(part_names))
    shares = np.einsum("hw,phw->p", fp, masks) / total
    return str(part_names[int(np.argmax(shares))]) + side_suffix(fp, side_fraction), shares


def side_suffix(footprint: np.ndarray, side_fraction: float = 0.7) -> str:
    """'_left' / '_right' when more than `side_fraction` of a footprint's mass lies in that image half, else ''."""
    fp = np.abs(np.asarray(footprint, dtype=np.float64))
    total = fp.sum()
    if total <= 0:
        return ""
    r = fp.shape[1]
    col = (np.arange(r) + 0.5) / r * 2 - 1
    left = float(fp[:, col < 0].sum() + 0.5 * fp[:, col == 0].sum()) / total
    if left > side_fraction:
        return "_left"
    if 1 - left > side_fraction:
        return "_right"
    return ""
