"""Pictures of decompositions: one row per image, input | reconstruction | shaded depth | albedo | frontal view."""

from __future__ import annotations

import os

import numpy as np
import torch

from ...utils.images import save_titled_grid, to_uint8
from .model import Unsup3DDecomposer
from .reconstruction import reconstruct

__all__ = ["COLUMNS", "decomposition_panels", "save_decomposition_png"]

COLUMNS = ("input", "reconstruction", "shaded depth", "albedo", "frontal view")


@torch.no_grad()
def decomposition_panels(decomposer: Unsup3DDecomposer, img: torch.Tensor) -> torch.Tensor:
    """Images [N, 3, H, W] in [-1, 1] -> panels [N, 5, 3, R, R] in [-1, 1], in the order of COLUMNS.

    Shaded depth: the canonical surface lit from the camera (grey, the shape alone). Frontal view: the canonical
    image (albedo x its estimated shading) before it is turned into the estimated view.
    """
    was_training = decomposer.training
    decomposer.eval()
    try:
        out = reconstruct(decomposer, img, flip=False)
    finally:
        decomposer.train(was_training)
    shape = out["canon_normal"][:, 2:3].clamp(0, 1) * 2 - 1  # n . (0, 0, 1): the surface lit from the camera
    frontal = (out["canon_albedo"] / 2 + 0.5) * out["shading"] * 2 - 1
    panels = [out["input"], out["recon"], shape.expand(-1, 3, -1, -1), out["canon_albedo"], frontal]
    return torch.stack([p.clamp(-1, 1) for p in panels], 1)


def save_decomposition_png(path: str | os.PathLike, decomposer: Unsup3DDecomposer, img: torch.Tensor,
                           row_labels: list[str] | None = None) -> np.ndarray:
    """Write the panels of `img` as one titled PNG row per image (atomically); returns the panels as uint8
    [N, 5, R, R, 3]."""
    panels = decomposition_panels(decomposer, img)
    n, cols = panels.shape[:2]
    pictures = to_uint8(panels.reshape(n * cols, *panels.shape[2:])).reshape(n, cols, *panels.shape[3:], 3)
    save_titled_grid(pictures, path, list(COLUMNS), row_labels)
    return pictures
