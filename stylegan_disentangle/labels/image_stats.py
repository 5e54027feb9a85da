"""Image-statistics labeler: cheap, exact attributes of any generator's output, good enough to name directions.

Images `[N, C, H, W]` in [-1, 1] are mapped to [0, 1] (`(img + 1) / 2`, clamped); luminance is
`Y = 0.299 R + 0.587 G + 0.114 B` (the channel itself for grayscale). Pixel centres have coordinates
`x, y` in (-1, 1): x grows to the right, y grows downward (image rows). Labels, per image:

| name           | definition                                                           | range      |
| -------------- | -------------------------------------------------------------------- | ---------- |
| brightness     | mean Y                                                               | [0, 1]     |
| contrast       | std of Y                                                             | [0, 0.5]   |
| color_r/g/b    | mean of the R / G / B channel (all equal to Y for grayscale)         | [0, 1]     |
| saturation     | mean over pixels of max(R,G,B) - min(R,G,B)                          | [0, 1]     |
| asymmetry_lr   | mean Y of the left half minus mean Y of the right half (> 0: left brighter) | [-1, 1] |
| com_x          | brightness-weighted mean x (> 0: light sits right of centre)         | [-1, 1]    |
| com_y          | brightness-weighted mean y (> 0: light sits below centre)            | [-1, 1]    |

The centre-of-mass weights are Y; an all-black image has com 0. With an odd width the middle column belongs to
neither half of `asymmetry_lr`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import LabelerError, check_label_names, resize_images

__all__ = ["ImageStatsLabeler", "IMAGE_STATS"]

IMAGE_STATS: dict[str, tuple[float, float]] = {
    "brightness": (0.0, 1.0),
    "contrast": (0.0, 0.5),
    "color_r": (0.0, 1.0),
    "color_g": (0.0, 1.0),
    "color_b": (0.0, 1.0),
    "saturation": (0.0, 1.0),
    "asymmetry_lr": (-1.0, 1.0),
    "com_x": (-1.0, 1.0),
    "com_y": (-1.0, 1.0),
}
_LUMA = (0.299, 0.587, 0.114)


class ImageStatsLabeler:
    """Brightness, contrast, colour, saturation, left/right asymmetry and light centre of mass of each image.

    Parameters
    ----------
    names : the statistics to return (default: all of `IMAGE_STATS`, in that order).
    input_resolution : resize images to this size first (None = use them as they are; the statistics barely
        depend on resolution).
    """

    needs_ws = False
    needs_images = True

    def __init__(self, names: Sequence[str] | None = None, input_resolution: int | None = None) -> None:
        names = list(IMAGE_STATS) if names is None else check_label_names(names, "ImageStatsLabeler")
        unknown = [n for n in names if n not in IMAGE_STATS]
        if unknown:
            raise LabelerError(f"ImageStatsLabeler has no statistic(s) {unknown}; available: {list(IMAGE_STATS)}")
        self.names = names
        self.input_resolution = input_resolution
        self.value_ranges = {n: IMAGE_STATS[n] for n in names}

    def __call__(self, img: torch.Tensor, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """img `[N, C, H, W]` in [-1, 1] -> {name: `[N]` float32}."""
        if not isinstance(img, torch.Tensor) or img.ndim != 4:
            raise LabelerError(f"ImageStatsLabeler expects images [N, C, H, W], got "
                               f"{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__}")
        img = resize_images(img, self.input_resolution)
        x = ((img.to(torch.float32) + 1) / 2).clamp(0, 1)
        n, c, h, w = x.shape
        rgb = x[:, :3] if c >= 3 else x[:, :1].expand(n, 3, h, w)
        luma = sum(k * rgb[:, i] for i, k in enumerate(_LUMA)) if c >= 3 else x[:, 0]  # [N, H, W]
        out: dict[str, torch.Tensor] = {}
        want = set(self.names)
        if "brightness" in want:
            out["brightness"] = luma.mean(dim=(1, 2))
        if "contrast" in want:
            out["contrast"] = luma.reshape(n, -1).std(dim=1, unbiased=False)
        for i, ch in enumerate("rgb"):
            if f"color_{ch}" in want:
                out[f"color_{ch}"] = rgb[:, i].mean(dim=(1, 2))
        if "saturation" in want:
            out["saturation"] = (rgb.amax(dim=1) - rgb.amin(dim=1)).mean(dim=(1, 2))
        if "asymmetry_lr" in want:
            half = w // 2
            out["asymmetry_lr"] = luma[:, :, :half].mean(dim=(1, 2)) - luma[:, :, w - half :].mean(dim=(1, 2))
        if "com_x" in want or "com_y" in want:
            xs = (torch.arange(w, dtype=torch.float32, device=x.device) + 0.5) / w * 2 - 1
            ys = (torch.arange(h, dtype=torch.float32, device=x.device) + 0.5) / h * 2 - 1
            mass = luma.sum(dim=(1, 2))
            safe = mass.clamp_min(1e-12)
            com_x = (luma.sum(dim=1) * xs).sum(dim=1) / safe
            com_y = (luma.sum(dim=2) * ys).sum(dim=1) / safe
            empty = mass <= 1e-12
            if "com_x" in want:
                out["com_x"] = torch.where(empty, torch.zeros_like(com_x), com_x)
            if "com_y" in want:
                out["com_y"] = torch.where(empty, torch.zeros_like(com_y), com_y)
        return {name: out[name] for name in self.names}

    def __repr__(self) -> str:
        return f"ImageStatsLabeler(names={self.names})"
