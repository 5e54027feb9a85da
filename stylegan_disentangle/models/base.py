"""WSpaceModel: the base class of every small network trained on W of a frozen generator.

It knows the generator's latent shape (`num_ws`, `w_dim`) and identity (`generator_sha256`), checks every ws that
arrives (LatentError naming the expected and actual shape, NaN / inf), and saves / loads itself as a small file
(`models.io`). Subclasses call ``super().__init__(num_ws, w_dim, generator_sha256)``, record their constructor
arguments in `self.config`, and implement `training_losses(batch, G=None)` (a dict with a 'total' entry) and
`validation_metric(batch, G=None)` (lower is better) for the shared training loop (`models.training`), which
passes the `G` it was given to both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LatentError
from ..latents import check_ws
from .io import load_model, save_model

__all__ = ["StandardizedWModel", "WSpaceModel", "checked_weights"]


def checked_weights(**weights: float) -> dict[str, float]:
    """A model's loss weights, returned as given; ValueError naming those that are negative or NaN."""
    bad = {k: v for k, v in weights.items() if not v >= 0}
    if bad:
        raise ValueError(f"loss weights must be >= 0, got {bad}")
    return weights


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
    def validation_metric(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> float:
        """Default: the training 'total' loss on the validation batch (lower is better)."""
        return float(self.training_losses(batch, G=G)["total"])

    def save(self, path: str | os.PathLike, info: dict | None = None) -> Path:
        """Write the model file (state dict + constructor arguments + generator sha256 + kind), atomically."""
        return save_model(self, path, info=info)

    @classmethod
    def load(cls, path: str | os.PathLike, G: nn.Module | None = None, *, generator_sha256: str | None = None,
             allow_foreign: bool = False, device: str | torch.device = "cpu") -> WSpaceModel:
        """Load a file written by `save`; refuses another kind, and another generator unless `allow_foreign`."""
        return load_model(path, G, generator_sha256=generator_sha256, kind=cls.kind, allow_foreign=allow_foreign,
                          device=device)


class StandardizedWModel(WSpaceModel):
    """A WSpaceModel whose nets read W standardized per dimension (buffers `w_mean`, `w_std`, set from a pool by
    `set_normalization`), as the flattened W+ code (`w_plus`) or the mean over layers; `_flat` / `_unflat` convert
    between ws and that layout, `_rel_mse` is a squared error relative to W's mean variance."""

    def __init__(self, num_ws: int, w_dim: int, w_plus: bool, generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, generator_sha256)
        self.w_plus = bool(w_plus)
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones(w_dim))

    @property
    def d_in(self) -> int:
        """Width of the nets' input layout."""
        return self.num_ws * self.w_dim if self.w_plus else self.w_dim

    @torch.no_grad()
    def set_normalization(self, w_pool: Any) -> StandardizedWModel:
        """Standardize inputs with the per-dimension mean and std of w_pool [N, w_dim] (or ws); call before training."""
        w = self.check_ws(w_pool, "w_pool").mean(dim=1)
        if w.shape[0] < 2:
            raise LatentError(f"set_normalization needs at least 2 samples, got {w.shape[0]}")
        self.w_mean.copy_(w.mean(0))
        self.w_std.copy_(w.std(0).clamp(min=1e-6))
        return self

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        """[N, num_ws, w_dim] -> the nets' input layout [N, d_in]: flattened W+, or the mean over layers."""
        return x.flatten(1) if self.w_plus else x.mean(dim=1)

    def _unflat(self, y: torch.Tensor) -> torch.Tensor:
        """Inverse layout of `_flat`: [N, d_in] -> [N, num_ws, w_dim] (a mean-w output broadcast to every layer)."""
        return y.view(-1, self.num_ws, self.w_dim) if self.w_plus else y[:, None].expand(-1, self.num_ws, -1)

    def _standardized(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> the nets' input [N, d_in]."""
        return self._flat((ws - self.w_mean) / self.w_std)

    def _destandardized(self, y: torch.Tensor) -> torch.Tensor:
        """A net's output [N, d_in] -> ws [N, num_ws, w_dim]."""
        return self._unflat(y) * self.w_std + self.w_mean

    def _rel_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x, y) / (self.w_std**2).mean()

    def _checked_codes(self, first: Any, second: Any, names: tuple[str, str], dims: tuple[int, int]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
        """A model's two codes for `decode`: [N, dims[0]] and [N, dims[1]], finite, as float32 on its device;
        LatentError naming both expected shapes otherwise."""
        a, b = torch.as_tensor(first).float(), torch.as_tensor(second).float()
        if a.ndim != 2 or b.ndim != 2 or a.shape[1] != dims[0] or b.shape[1] != dims[1] or a.shape[0] != b.shape[0]:
            raise LatentError(f"decode needs {names[0]} [N, {dims[0]}] and {names[1]} [N, {dims[1]}], got "
                              f"{tuple(a.shape)} and {tuple(b.shape)}")
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise LatentError("decode got NaN or inf codes")
        return a.to(self.device), b.to(self.device)
