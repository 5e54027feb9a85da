"""Footprint sheet: each localized direction's spatial footprint (a canonical-map atom) next to its edit strip.

Row k shows the footprint `[R, R]` of direction k as a heat map (colormap 'magma', 0 black -> max white-yellow),
upsampled to the images' size, followed by the images of the edit `[S, C, H, W]`. So one can check at a glance
that the edit changes the face where the footprint says (the locality the name claims).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import StyleGANDisentangleError
from .plots import plot_edit_grid

__all__ = ["footprint_images", "plot_footprint_sheet"]


def footprint_images(footprints: np.ndarray | torch.Tensor, size: int, cmap: str = "magma") -> torch.Tensor:
    """Footprints `[K, R, R]` (non-negative; each scaled to its own max) -> RGB images `[K, 3, size, size]` in
    [-1, 1]. Nearest-neighbour upsampling, and max pooling when the images are smaller than the maps, so that every
    map pixel stays visible (nearest-neighbour downsampling would drop rows and columns)."""
    from matplotlib import colormaps

    fp = torch.as_tensor(np.asarray(footprints, dtype=np.float32))
    if fp.ndim != 3:
        raise StyleGANDisentangleError(f"footprints must be [K, R, R], got shape {tuple(fp.shape)}")
    fp = fp.abs()
    peak = fp.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    fp = (fp / peak)[:, None]
    if size < fp.shape[-1]:
        fp = F.adaptive_max_pool2d(fp, (size, size))[:, 0]
    else:
        fp = F.interpolate(fp, size=(size, size), mode="nearest")[:, 0]
    rgb = colormaps[cmap](fp.numpy())[..., :3]  # [K, size, size, 3] in [0, 1]
    return torch.as_tensor(rgb, dtype=torch.float32).permute(0, 3, 1, 2) * 2 - 1


def plot_footprint_sheet(
    footprints: np.ndarray | torch.Tensor,
    strips: torch.Tensor,
    path: str | os.PathLike,
    names: Sequence[str],
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a sheet: row k = footprint k `[R, R]`, then the edit images `strips[k]` (`strips` `[K, S, C, H, W]`
    in [-1, 1]). `col_labels` name the S edit columns (the footprint column is labelled 'footprint')."""
    strips = torch.as_tensor(strips).float()
    if strips.ndim != 5:
        raise StyleGANDisentangleError(f"edit strips must be [K, S, C, H, W], got shape {tuple(strips.shape)}")
    k, _, c, h, _ = strips.shape
    if len(names) != k or np.shape(footprints)[0] != k:
        raise StyleGANDisentangleError(f"{len(names)} names and {np.shape(footprints)[0]} footprints for {k} strips")
    if c == 1:
        strips = strips.expand(-1, -1, 3, -1, -1)
    heat = footprint_images(footprints, h)[:, None]  # [K, 1, 3, H, W]
    grid = torch.cat([heat, strips[:, :, :3].cpu()], dim=1)
    cols = ["footprint"] + (list(col_labels) if col_labels else [""] * strips.shape[1])
    return plot_edit_grid(grid, path, row_labels=list(names), col_labels=cols, title=title)
