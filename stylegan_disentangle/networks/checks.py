"""Input validation at the network boundary: wrong shapes or NaN latents fail with a clear LatentError."""

from __future__ import annotations

import torch

from ..errors import LatentError


def check_latents(x: torch.Tensor, name: str, shape: tuple[int | None, ...]) -> None:
    """Raise LatentError when x is not a tensor of `shape` (None = any size) or holds NaN / inf."""
    if not isinstance(x, torch.Tensor):
        raise LatentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        expected = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise LatentError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if x.is_floating_point() and not torch.isfinite(x).all():
        raise LatentError(f"{name} contains NaN or inf values")
