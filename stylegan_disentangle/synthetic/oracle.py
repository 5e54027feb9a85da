"""The `synthetic-oracle` labeler: exact factor values of synthetic faces, read from the latents that made them.

For the shipped synthetic generator the factors of every image are known, because its W space was built from a
fixed *factor map* (w -> factors); the oracle simply applies that map. It follows the Labeler contract of
DESIGN.md: ``oracle(images, ws) -> {factor name: Tensor[N]}``, with stable names, a stated input resolution (any:
it never looks at the pixels) and stated value ranges.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import LatentError
from .factors import FACTORS, factor_names, num_factors, to_physical
from .renderer import render

__all__ = ["SyntheticOracle"]


class SyntheticOracle:
    """Labeler returning the ground-truth factors of synthetic images.

    Parameters
    ----------
    factor_map : callable
        ``factor_map(ws) -> Tensor[N, F]`` normalized factors in `factor_names()` order, given the latents exactly as
        the labeler receives them (``ws`` [N, num_ws, w_dim] from a LatentBank, or w [N, w_dim] if that is what the
        caller passes; the map decides which it accepts). For the shipped checkpoint this is its factor map.
    physical : bool
        Return physical values (degrees, reflectances, ...) instead of normalized ones in [-1, 1].

    Attributes
    ----------
    name : str
        ``'synthetic-oracle'``.
    names : list[str]
        The label names, `factor_names()` order.
    input_resolution : None
        Any image size is accepted (the images are only used to check the batch size).
    needs_ws, needs_images : bool
        True and False: the labels come from the latents alone (see labels.base for the protocol).
    value_ranges : dict[str, tuple[float, float]]
        The range each label takes on the factor map's typical output ((-1, 1) normalized, or the physical range).

    Examples
    --------
    >>> oracle = SyntheticOracle(factor_map)
    >>> labels = oracle(G.synthesis(ws), ws)   # {'head_width': Tensor[N], ..., 'ambient': Tensor[N]}
    """

    name = "synthetic-oracle"
    input_resolution = None
    needs_ws = True
    needs_images = False

    def __init__(self, factor_map: Callable[[torch.Tensor], torch.Tensor], physical: bool = False):
        self.factor_map = factor_map
        self.physical = physical

    @property
    def names(self) -> list[str]:
        return factor_names()

    @property
    def value_ranges(self) -> dict[str, tuple[float, float]]:
        if self.physical:
            return {f.name: (f.low, f.high) for f in FACTORS}
        return {name: (-1.0, 1.0) for name in factor_names()}

    def factors(self, ws: torch.Tensor) -> torch.Tensor:
        """Latents -> factors [N, F] (normalized, or physical if `physical`)."""
        factors = self._normalized(ws)
        return to_physical(factors) if self.physical else factors

    def _normalized(self, ws: torch.Tensor) -> torch.Tensor:
        """Latents -> normalized factors [N, F], checked for shape and finiteness."""
        ws = torch.as_tensor(ws)
        factors = torch.as_tensor(self.factor_map(ws))
        if factors.dim() != 2 or factors.shape[1] != num_factors() or factors.shape[0] != ws.shape[0]:
            raise LatentError(f"synthetic-oracle: the factor map returned shape {tuple(factors.shape)} for latents of "
                              f"shape {tuple(ws.shape)}; expected [{ws.shape[0]}, {num_factors()}]")
        if not torch.isfinite(factors).all():
            raise LatentError("synthetic-oracle: the factor map returned NaN or inf values")
        return factors

    def __call__(self, images: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Images [N, C, H, W] (unused beyond their count) and their latents -> {factor name: Tensor[N]}."""
        if ws is None:
            raise LatentError("synthetic-oracle reads the factors from the latents that made the images: pass ws "
                              "(labeler(images, ws=ws)); it cannot label images alone")
        if images is not None and images.shape[0] != torch.as_tensor(ws).shape[0]:
            raise LatentError(f"synthetic-oracle got {images.shape[0]} images but {torch.as_tensor(ws).shape[0]} "
                              f"latents")
        factors = self.factors(ws)
        return {name: factors[:, i] for i, name in enumerate(factor_names())}

    def intrinsics(self, ws: torch.Tensor, resolution: int = 64) -> dict[str, torch.Tensor]:
        """The exact Unsup3D decomposition (depth, albedo, light, view, shading, masks) of the faces behind `ws`.

        These are the renderer's intrinsics for ``factor_map(ws)`` (see `render`), the ground truth that an
        Unsup3D-style decomposer is measured against.
        """
        return render(self._normalized(ws).float(), resolution, return_intrinsics=True)[1]

    def __repr__(self) -> str:
        return f"SyntheticOracle(factor_map={self.factor_map!r}, physical={self.physical})"
