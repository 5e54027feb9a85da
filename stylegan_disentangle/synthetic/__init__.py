"""The ground-truth world: a differentiable procedural face renderer with known factors, and its oracle labeler.

``render(factors)`` draws faces from normalized factors [N, F] (order `factor_names()`); with
``return_intrinsics=True`` it also returns the exact Unsup3D decomposition (depth, albedo, light, view, shading)
and per-part masks of every image. `SyntheticOracle` is the `synthetic-oracle` labeler.
"""

from .face import PART_NAMES
from .factors import (
    FACTORS,
    GROUPS,
    Factor,
    factor_groups,
    factor_index,
    factor_names,
    factor_ranges,
    neutral_factors,
    num_factors,
    sample_factors,
    to_normalized,
    to_physical,
)
from .image_formation import normals_from_depth, recompose, shade, warp_canonical
from .oracle import SyntheticOracle
from .preview import save_face_sheet
from .renderer import RENDERER_VERSION, light_from_factors, render, render_dataset, view_from_factors

__all__ = [
    "FACTORS",
    "GROUPS",
    "PART_NAMES",
    "RENDERER_VERSION",
    "Factor",
    "SyntheticOracle",
    "factor_groups",
    "factor_index",
    "factor_names",
    "factor_ranges",
    "light_from_factors",
    "neutral_factors",
    "normals_from_depth",
    "num_factors",
    "recompose",
    "render",
    "render_dataset",
    "sample_factors",
    "save_face_sheet",
    "shade",
    "to_normalized",
    "to_physical",
    "view_from_factors",
    "warp_canonical",
]
