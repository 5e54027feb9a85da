"""Device selection: `auto` means CUDA when present, otherwise CPU."""

from __future__ import annotations

import torch

from ..errors import UsageError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto' / None / 'cpu' / 'cuda:1' / a torch.device into a torch.device that exists here.

    UsageError (a ValueError) for a name torch does not know or a CUDA device on a machine without CUDA.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UsageError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise UsageError(f"device {device} cannot run the networks here; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {device} was requested but CUDA is not available; use --device cpu or auto")
    return device
