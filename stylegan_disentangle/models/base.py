"""WSpaceModel: the base class of every small network trained on W of a frozen generator.

It knows the generator's latent shape (`num_ws`, `w_dim`) and identity (`generator_sha256`), checks every ws that
arrives (LatentError naming the expected and actual shape, NaN / inf), and saves / loads itself as a small file
(`models.io`). Subclasses call ``super().__init__(num_ws, w_dim, generator_sha256)``, record their constructor
arguments in `self.config`, and implement `training_losses(batch, G=None)` (a dict with a 'total' entry) and
`validation_metric(batch)` (lower is better) for the shared training loop (`models.training`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..latents import check_ws
from .io import load_model, save_model

__all__ = ["WSpaceModel"]


class WSpaceModel(nn.Module):
    """Base class: latent shape, generator identity, input checks, save / load."""

    kind = ""

    def __init__(self, num_ws: int, w_dim: int, generator_sha256: str | None = None) -> None:
        super().__init__()
        if int(num_ws) < 1 or int(w_dim) < 1:
            raise ValueError(f"num_ws and w_dim must be positive, got {num_ws} and {w_dim}")
        self.num_ws = int(num_ws)
        self.w_dim = int(w_dim)
        self.generator_sha256 = generator_sha256
        self.config: dict[str, Any] = {"num_ws": self.num_ws, "w_dim": self.w_dim,
                                       "generator_sha256": generator_sha256}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def check_ws(self, ws: Any, what: str = "ws") -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim], broadcast) as float32 on the model's device; LatentError if not."""
        return check_ws(ws, self.num_ws, self.w_dim, what=what).to(self.device)

    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def validation_metric(self, batch: dict[str, torch.Tensor]) -> float:
        """Default: the training 'total' loss on the validation batch (lower is better)."""
        return float(self.training_losses(batch)["total"])

    def save(self, path: str | os.PathLike, info: dict | None = None) -> Path:
        """Write the model file (state dict + constructor arguments + generator sha256 + kind), atomically."""
        return save_model(self, path, info=info)

    @classmethod
    def load(cls, path: str | os.PathLike, G: nn.Module | None = None, *, generator_sha256: str | None = None,
             allow_foreign: bool = False, device: str | torch.device = "cpu") -> WSpaceModel:
        """Load a file written by `save`; refuses another kind, and another generator unless `allow_foreign`."""
        return load_model(path, G, generator_sha256=generator_sha256, kind=cls.kind, allow_foreign=allow_foreign,
                          device=device)
