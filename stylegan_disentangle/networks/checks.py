"""Input validation at the network boundary: wrong shapes or NaN latents fail with a clear LatentError.

The shape check is free. The NaN / inf check reads a value back from the device (a synchronisation on CUDA), so it is
skipped where a read-back is impossible or unwanted: inside CUDA-graph capture, inside `torch.compile`d code, and
within `fast_path()` (what the benchmarks use).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from ..errors import LatentError

_local = threading.local()


@contextlib.contextmanager
def fast_path() -> Iterator[None]:
    """Skip the NaN / inf read-back of latents in this thread (shape checks stay on)."""
    previous = getattr(_local, "skip_value_checks", False)
    _local.skip_value_checks = True
    try:
        yield
    finally:
        _local.skip_value_checks = previous


def _value_checks_enabled(x: torch.Tensor) -> bool:
    if getattr(_local, "skip_value_checks", False) or torch.compiler.is_compiling():
        return False
    return not (x.is_cuda and torch.cuda.is_current_stream_capturing())


def check_latents(x: torch.Tensor, name: str, shape: tuple[int | None, ...]) -> None:
    """Raise LatentError when x is not a tensor of `shape` (None = any size) or holds NaN / inf."""
    if not isinstance(x, torch.Tensor):
        raise LatentError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != len(shape) or any(s is not None and s != d for s, d in zip(shape, x.shape)):
        expected = "[" + ", ".join("N" if s is None else str(s) for s in shape) + "]"
        raise LatentError(f"{name} must have shape {expected}, got {list(x.shape)}")
    if x.is_floating_point() and _value_checks_enabled(x) and not torch.isfinite(x).all():
        raise LatentError(f"{name} contains NaN or inf values")
