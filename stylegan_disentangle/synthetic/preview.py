"""A contact sheet of the synthetic world: random faces, one-factor sweeps, and one face's Unsup3D decomposition."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..utils import atomic_write_path
from .face import PART_NAMES
from .factors import factor_index, num_factors, sample_factors
from .renderer import render

__all__ = ["save_face_sheet"]

DEFAULT_SWEEPS = ("yaw", "pitch", "roll", "light_azimuth", "light_elevation", "ambient", "mouth_open", "smile",
                  "brow_raise", "head_width", "jaw_width", "nose_length", "hair_color")


def _to_rgb(img: torch.Tensor) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] in [0, 1]."""
    return ((img.detach().cpu().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()


def save_face_sheet(
    path: str | os.PathLike,
    seed: int = 0,
    resolution: int = 64,
    n_random: int = 16,
    sweeps: Sequence[str] = DEFAULT_SWEEPS,
    steps: int = 7,
) -> Path:
    """Render a labelled PNG sheet and write it atomically to `path`; returns the path.

    Rows: `n_random` random faces (seeded), then one row per factor in `sweeps` going from -1 to +1 in `steps`
    steps with every other factor at 0, then the decomposition of the first random face (image, canonical depth,
    albedo, shading, part masks).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    random_factors = sample_factors(n_random, seed=seed)
    random_images = render(random_factors, resolution)
    values = torch.linspace(-1, 1, steps)
    sweep_factors = torch.zeros(len(sweeps) * steps, num_factors())
    for r, name in enumerate(sweeps):
        sweep_factors[r * steps:(r + 1) * steps, factor_index(name)] = values
    sweep_images = render(sweep_factors, resolution)
    one, intr = render(random_factors[:1], resolution, return_intrinsics=True)

    cols = max(steps, 8)
    random_rows = int(np.ceil(n_random / cols))
    rows = random_rows + len(sweeps) + 1
    fig, axes = plt.subplots(rows, cols + 1, figsize=(1.25 * (cols + 1), 1.3 * rows),
                             gridspec_kw={"width_ratios": [1.6] + [1] * cols})
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n_random):
        axes[i // cols, 1 + i % cols].imshow(_to_rgb(random_images[i]), interpolation="nearest")
    axes[0, 0].text(1, 0.5, f"random\nfaces\n(seed {seed})", ha="right", va="center", fontsize=9)
    for r, name in enumerate(sweeps):
        row = random_rows + r
        axes[row, 0].text(1, 0.5, f"{name}\n-1 ... +1", ha="right", va="center", fontsize=9)
        for c in range(steps):
            axes[row, 1 + c].imshow(_to_rgb(sweep_images[r * steps + c]), interpolation="nearest")
    last = rows - 1
    axes[last, 0].text(1, 0.5, "decomposition\nof face 1", ha="right", va="center", fontsize=9)
    panels = [
        ("image", _to_rgb(one[0]), {}),
        ("depth", intr["depth"][0, 0].numpy(), {"cmap": "viridis_r", "vmin": 0.9, "vmax": 1.1}),
        ("albedo", _to_rgb(intr["albedo"][0]), {}),
        ("shading", intr["shading"][0, 0].numpy(), {"cmap": "gray", "vmin": 0, "vmax": 1}),
        ("parts", intr["masks"][0].argmax(0).numpy(), {"cmap": "tab10", "vmin": 0, "vmax": 9}),
    ]
    for c, (title, data, kw) in enumerate(panels):
        ax = axes[last, 1 + c]
        ax.imshow(data, interpolation="nearest", **kw)
        ax.set_title(title, fontsize=8)
    axes[last, 1 + len(panels)].text(0, 0.5, "\n".join(f"{i}: {p}" for i, p in enumerate(PART_NAMES)), fontsize=6,
                                     va="center")
    fig.suptitle("Synthetic faces: known factors, exact Unsup3D intrinsics", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / rows))
    path = Path(path)
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, dpi=80)
    plt.close(fig)
    return path
