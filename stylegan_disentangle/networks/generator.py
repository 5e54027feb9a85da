"""The StyleGAN2 generator: mapping (z, c -> ws) followed by synthesis (ws -> img).

Both official constructor forms are accepted:
  StyleGAN2-ADA:  Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={})
  StyleGAN3 repo: Generator(z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs)
each with its repository's defaults (the StyleGAN3 repo runs the top 4 resolutions in fp16 with conv_clamp=256 and
tracks w_avg with beta 0.998).
"""

from __future__ import annotations

import torch
from torch import nn

from .mapping import MappingNetwork
from .persistence import persistent_class
from .synthesis import SynthesisNetwork

SG3_SYNTHESIS_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256, "fused_modconv_default": True, "fp32_on_cpu": True}
SG3_MAPPING_DEFAULTS = {"w_avg_beta": 0.998}


@persistent_class
class Generator(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> img [N, img_channels, img_resolution, img_resolution] in about [-1, 1]."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict | None = None,
        synthesis_kwargs: dict | None = None,
        **flat_synthesis_kwargs,
    ) -> None:
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        if synthesis_kwargs is not None and flat_synthesis_kwargs:
            raise TypeError("pass synthesis options either as synthesis_kwargs={...} (StyleGAN2-ADA form) or as "
                            "keyword arguments (StyleGAN3-repo form), not both")
        if flat_synthesis_kwargs:
            synthesis_kwargs = {**SG3_SYNTHESIS_DEFAULTS, **flat_synthesis_kwargs}
            mapping_kwargs = {**SG3_MAPPING_DEFAULTS, **mapping_kwargs}
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None,
        truncation_psi: float = 1,
        truncation_cutoff: int | None = None,
        update_emas: bool | None = None,
        **synthesis_kwargs,
    ) -> torch.Tensor:
        """Map and synthesise; synthesis_kwargs are noise_mode ('random' | 'const' | 'none'), force_fp32, ..."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
                f"img_resolution={self.img_resolution}, img_channels={self.img_channels}")
