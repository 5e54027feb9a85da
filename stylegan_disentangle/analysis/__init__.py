"""Analysis stage: editing and extrapolation along directions, label effects, plots, and the find-directions /
edit runners."""

from .augmentation import AugmentationExport, export_augmentation
from .edit import direction_offset, edit, parse_layers, parse_seeds, parse_steps, render
from .effects import LabelEffects, compare_namings, measure_label_effects
from .extrapolate import ExtrapolationResult, discriminator_scores, extrapolate
from .find_directions import METHODS, FindDirectionsResult, run_find_directions
from .footprints import footprint_images, plot_footprint_sheet
from .metrics import dci, direction_recovery, factor_change_per_step, leakage, locality, mig, sap
from .plots import (
    cosine_similarity_matrix,
    plot_cosine_similarity,
    plot_edit_grid,
    plot_heatmap,
    plot_label_effects,
    plot_w_embedding,
)
from .run_edit import run_edit

__all__ = [
    "METHODS",
    "AugmentationExport",
    "export_augmentation",
    "footprint_images",
    "plot_footprint_sheet",
    "ExtrapolationResult",
    "FindDirectionsResult",
    "LabelEffects",
    "compare_namings",
    "dci",
    "direction_recovery",
    "factor_change_per_step",
    "leakage",
    "locality",
    "mig",
    "sap",
    "cosine_similarity_matrix",
    "direction_offset",
    "discriminator_scores",
    "edit",
    "extrapolate",
    "measure_label_effects",
    "parse_layers",
    "parse_seeds",
    "parse_steps",
    "plot_cosine_similarity",
    "plot_edit_grid",
    "plot_heatmap",
    "plot_label_effects",
    "plot_w_embedding",
    "render",
    "run_edit",
    "run_find_directions",
]
