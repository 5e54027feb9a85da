"""AppearanceStructureAE: an autoencoder on W that splits a latent into an appearance and a structure code.

After Duarte et al., "Contrastive Learning on Synthetic Videos for GAN Latent Disentangling" (2022): trained on
synthetic latent videos (`latent_video`), whose frames share appearance while structure (pose, expression) moves.

    encoder: ws [N, num_ws, w_dim] (flattened W+, or mean w) -> appearance [N, app_dim], structure [N, struct_dim]
    decoder: (a, s) -> ws [N, num_ws, w_dim]

Each net is a linear map plus a one-hidden-layer MLP (SiLU) in parallel, on W standardized per dimension with the
statistics of the training pool (`set_normalization`). Losses on a batch from `ClipPairSampler` (anchor frame,
another frame of the same clip, an appearance-augmented copy of the anchor):

- ``rec``: reconstruction of all three in W (mean squared error relative to W's mean variance);
- ``swap``: decode(a(other), s(anchor)) -> anchor and decode(a(augmented), s(anchor)) -> augmented (the parts
  that should be shared, taken from the view that shares them);
- ``app``: InfoNCE of appearance codes across two frames of a clip against other clips' frames;
- ``struct``: InfoNCE of structure codes of a frame and its appearance-augmented copy against other frames;
- ``image`` (optional, `image_weight` > 0 and G given): reconstruction through the frozen synthesis on the first
  `image_samples` anchors.

``total = rec_weight*rec + swap_weight*swap + app_weight*app + struct_weight*struct + image_weight*image``.
Tasks: `transfer_structure(target, source)` and `transfer_motion(target, source_clip)`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LatentError
from .base import WSpaceModel
from .io import register_model_kind
from .losses import info_nce

__all__ = ["AppearanceStructureAE"]


class _LinearPlusMLP(nn.Module):
    """y = A x + MLP(x): a linear map with a nonlinear correction (hidden = 0: linear only)."""

    def __init__(self, d_in: int, d_out: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out)) if hidden else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (self.mlp(x) if self.mlp is not None else 0)


@register_model_kind
class AppearanceStructureAE(WSpaceModel):
    """Autoencoder w (or W+) -> (appearance, structure) -> w, trained contrastively on latent videos.

    Parameters
    ----------
    num_ws, w_dim : int
        The generator's latent shape.
    app_dim, struct_dim : int
        Code sizes. The default 64 (of w_dim 128) leaves out W's lowest-variance directions: a larger appearance
        code also holds them, and there the small errors of found structure directions become readable as pose
        (BENCHMARKS.md, issue 12: appearance -> pose R^2 0.23 with 96, 0.03 with 64).
    hidden : int
        Hidden width of the MLP branch of encoder and decoder (0 = linear).
    w_plus : bool
        Encode the flattened W+ code (True) or the mean over layers (False); the decoder outputs W+ or broadcasts w.
    temperature : float
        InfoNCE temperature.
    rec_weight, swap_weight, app_weight, struct_weight, image_weight : float
        Loss weights (see the module docstring).
    image_samples : int
        Anchors per batch rendered for the image loss.
    generator_sha256 : str, optional
        The generator's fingerprint (`latents.generator_fingerprint`); checked by `load`.

    Examples
    --------
    >>> ae = AppearanceStructureAE(G.num_ws, G.w_dim, generator_sha256=generator_fingerprint(G))
    >>> ae.set_normalization(w_pool)
    >>> train_model(ae, ClipPairSampler(DirectionVideoMaker(ds).fit(w_pool), w_pool, G.num_ws), "runs/ae", steps=2000)
    >>> ws = ae.transfer_structure(target_ws, source_ws)
    """

    kind = "appearance-structure"

    def __init__(self, num_ws: int, w_dim: int, app_dim: int = 64, struct_dim: int = 8, hidden: int = 256,
                 w_plus: bool = True, temperature: float = 0.1, rec_weight: float = 1.0, swap_weight: float = 1.0,
                 app_weight: float = 0.05, struct_weight: float = 0.05, image_weight: float = 0.0,
                 image_samples: int = 4, generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, generator_sha256)
        if app_dim < 1 or struct_dim < 1:
            raise ValueError(f"code sizes must be positive, got app_dim={app_dim}, struct_dim={struct_dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.config.update(app_dim=app_dim, struct_dim=struct_dim, hidden=hidden, w_plus=w_plus,
                           temperature=temperature, rec_weight=rec_weight, swap_weight=swap_weight,
                           app_weight=app_weight, struct_weight=struct_weight, image_weight=image_weight,
                           image_samples=image_samples)
        self.app_dim, self.struct_dim, self.w_plus = app_dim, struct_dim, w_plus
        d_in = num_ws * w_dim if w_plus else w_dim
        self.encoder = _LinearPlusMLP(d_in, app_dim + struct_dim, hidden)
        self.decoder = _LinearPlusMLP(app_dim + struct_dim, d_in, hidden)
        self.register_buffer("w_mean", torch.zeros(w_dim))
        self.register_buffer("w_std", torch.ones(w_dim))

    @torch.no_grad()
    def set_normalization(self, w_pool: Any) -> AppearanceStructureAE:
        """Standardize inputs with the per-dimension mean and std of w_pool [N, w_dim] (or ws); call before training."""
        w = self.check_ws(w_pool, "w_pool").mean(dim=1)
        if w.shape[0] < 2:
            raise LatentError(f"set_normalization needs at least 2 samples, got {w.shape[0]}")
        self.w_mean.copy_(w.mean(0))
        self.w_std.copy_(w.std(0).clamp(min=1e-6))
        return self

    # --- the two nets -------------------------------------------------------------------------------------------
    def _encode(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (ws - self.w_mean) / self.w_std
        x = x.flatten(1) if self.w_plus else x.mean(dim=1)
        code = self.encoder(x)
        return code[:, : self.app_dim], code[:, self.app_dim:]

    def _decode(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        y = self.decoder(torch.cat([a, s], dim=1))
        y = y.view(-1, self.num_ws, self.w_dim) if self.w_plus else y[:, None].expand(-1, self.num_ws, -1)
        return y * self.w_std + self.w_mean

    def encode(self, ws: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]) -> (appearance [N, app_dim], structure [N, struct_dim])."""
        return self._encode(self.check_ws(ws))

    def decode(self, appearance: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """(appearance [N, app_dim], structure [N, struct_dim]) -> ws [N, num_ws, w_dim]."""
        a, s = torch.as_tensor(appearance).float(), torch.as_tensor(structure).float()
        if a.ndim != 2 or s.ndim != 2 or a.shape[1] != self.app_dim or s.shape[1] != self.struct_dim \
                or a.shape[0] != s.shape[0]:
            raise LatentError(f"decode needs appearance [N, {self.app_dim}] and structure [N, {self.struct_dim}], got "
                              f"{tuple(a.shape)} and {tuple(s.shape)}")
        if not (torch.isfinite(a).all() and torch.isfinite(s).all()):
            raise LatentError("decode got NaN or inf codes")
        return self._decode(a.to(self.device), s.to(self.device))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """Reconstruction ws [N, num_ws, w_dim]."""
        return self._decode(*self.encode(ws))

    # --- training -----------------------------------------------------------------------------------------------
    def _rel_mse(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(x, y) / (self.w_std**2).mean()

    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses on a ClipPairSampler batch ({'anchor', 'other', 'augmented'}: ws [B, num_ws, w_dim])."""
        anchor, other, aug = (self.check_ws(batch[k], f"batch[{k!r}]") for k in ("anchor", "other", "augmented"))
        a_i, s_i = self._encode(anchor)
        a_j, s_j = self._encode(other)
        a_g, s_g = self._encode(aug)
        rec = (self._rel_mse(self._decode(a_i, s_i), anchor) + self._rel_mse(self._decode(a_j, s_j), other)
               + self._rel_mse(self._decode(a_g, s_g), aug)) / 3
        swap = (self._rel_mse(self._decode(a_j, s_i), anchor) + self._rel_mse(self._decode(a_g, s_i), aug)) / 2
        tau = self.config["temperature"]
        app = info_nce(a_i, a_j, tau)
        struct = info_nce(s_i, s_g, tau)
        c = self.config
        total = c["rec_weight"] * rec + c["swap_weight"] * swap + c["app_weight"] * app + c["struct_weight"] * struct
        losses = {"rec": rec, "swap": swap, "app": app, "struct": struct}
        if c["image_weight"] > 0 and G is not None:
            k = min(int(c["image_samples"]), anchor.shape[0])
            with torch.no_grad():
                target = G.synthesis(anchor[:k], noise_mode="const")
            image = F.mse_loss(G.synthesis(self._decode(a_i[:k], s_i[:k]), noise_mode="const"), target)
            losses["image"] = image
            total = total + c["image_weight"] * image
        losses["total"] = total
        return losses

    @torch.no_grad()
    def validation_metric(self, batch: dict[str, torch.Tensor]) -> float:
        """rec + swap on the validation batch (lower is better)."""
        losses = self.training_losses(batch)
        return float(losses["rec"] + losses["swap"])

    # --- tasks --------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def transfer_structure(self, target_ws: Any, source_ws: Any, residual: bool = True) -> torch.Tensor:
        """Pose / expression transfer: target's appearance with the source's structure.

        target_ws, source_ws: [N, num_ws, w_dim] (or w [N, w_dim]; N may be 1 on either side) -> ws [N, num_ws, w_dim].
        residual=True (the default) returns target + decode(a_target, s_source) - decode(a_target, s_target), which
        keeps whatever of the target the codes do not hold (the reconstruction error cancels); residual=False
        decodes (a_target, s_source). On the synthetic world the residual form is better on both transfer errors
        (BENCHMARKS.md, issue 12).
        """
        t, s = self.check_ws(target_ws, "target_ws"), self.check_ws(source_ws, "source_ws")
        if t.shape[0] != s.shape[0] and 1 not in (t.shape[0], s.shape[0]):
            raise LatentError(f"target_ws has {t.shape[0]} codes and source_ws {s.shape[0]}; give equal counts or 1")
        a_t, _ = self._encode(t)
        _, s_s = self._encode(s)
        n = max(len(a_t), len(s_s))
        out = self._decode(a_t.expand(n, -1), s_s.expand(n, -1))
        if residual:
            out = out + t.expand(n, -1, -1) - self._decode(*self._encode(t)).expand(n, -1, -1)
        return out

    @torch.no_grad()
    def transfer_motion(self, target_ws: Any, source_clip: Any, relative: bool = False) -> torch.Tensor:
        """Motion transfer: source_clip ws [T, num_ws, w_dim] drives each target [N, num_ws, w_dim] -> [N, T, ...].

        relative=False puts the source's structure code on the target frame by frame; relative=True adds the
        source's change of structure since its first frame to the target's own structure (keeps the target's pose).
        """
        t = self.check_ws(target_ws, "target_ws")
        clip = self.check_ws(source_clip, "source_clip")
        a_t, s_t = self._encode(t)
        _, s_c = self._encode(clip)
        if relative:
            s = s_t[:, None] + (s_c - s_c[:1])[None]
        else:
            s = s_c[None].expand(len(t), -1, -1)
        n, frames = len(t), len(clip)
        a = a_t[:, None].expand(-1, frames, -1)
        return self._decode(a.reshape(n * frames, -1), s.reshape(n * frames, -1)).view(n, frames, self.num_ws,
                                                                                     self.w_dim)
