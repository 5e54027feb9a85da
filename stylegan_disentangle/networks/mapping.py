"""The mapping network z (+ class label c) -> w, with the running average w_avg used for truncation."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..errors import LatentError
from .checks import check_latents
from .layers import FullyConnectedLayer, normalize_2nd_moment
from .persistence import persistent_class


@persistent_class
class MappingNetwork(nn.Module):
    """An MLP from (z [N, z_dim], c [N, c_dim]) to ws [N, num_ws, w_dim] (or w [N, w_dim] when num_ws is None).

    Truncation: ws = w_avg + psi * (ws - w_avg), applied to the first `truncation_cutoff` ws when a cutoff is given.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool | None = None,
        skip_w_avg_update: bool = False,
    ) -> torch.Tensor:
        """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim].

        w_avg is updated as in both official repos: with `update_emas=True` (StyleGAN3 repo), or, when
        `update_emas` is not given, in training mode unless `skip_w_avg_update` (StyleGAN2-ADA repo).
        """
        if update_emas is None:
            update_emas = self.training and not skip_w_avg_update
        if self.z_dim > 0:
            check_latents(z, "z", (None, self.z_dim))
        if self.c_dim > 0:
            if c is None:
                raise LatentError(f"this network is conditional: pass c of shape [N, {self.c_dim}]")
            check_latents(c, "c", (z.shape[0] if self.z_dim > 0 else None, self.c_dim))
        x = None
        if self.z_dim > 0:
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)

        if update_emas and self.w_avg_beta is not None:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if not math.isfinite(float(truncation_psi)):
                raise LatentError(f"truncation_psi must be a finite number, got {truncation_psi}")
            if self.w_avg_beta is None:
                raise ValueError("truncation needs w_avg, but this mapping network was built with w_avg_beta=None")
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}"
