"""Device selection: `auto` means CUDA when present, otherwise CPU."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn 'auto' / None / 'cpu' / 'cuda:1' / a torch.device into a torch.device that exists here."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} was requested but CUDA is not available; use --device cpu or auto")
    return device
