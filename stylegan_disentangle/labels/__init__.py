"""Labels stage: the Labeler protocol, the registry, and the built-in image-statistics labeler."""

from .base import (
    CallableLabeler,
    CombinedLabeler,
    Labeler,
    LabelerError,
    apply_labeler,
    check_crop,
    combine_labelers,
    crop_images,
    fill_box,
    labeler_from_callable,
    needs_images,
    resize_images,
)
from .calibration import LabelCalibration, fit_label_calibration
from .decomposer import DecomposerError, DecomposerLabeler, Unsup3DDecomposer, load_decomposer, load_unsup3d
from .image_stats import IMAGE_STATS, ImageStatsLabeler
from .registry import available_labelers, get_labeler, get_labelers, register_labeler, unregister_labeler

__all__ = [
    "IMAGE_STATS",
    "CallableLabeler",
    "CombinedLabeler",
    "DecomposerError",
    "DecomposerLabeler",
    "ImageStatsLabeler",
    "LabelCalibration",
    "Labeler",
    "LabelerError",
    "Unsup3DDecomposer",
    "apply_labeler",
    "available_labelers",
    "check_crop",
    "combine_labelers",
    "crop_images",
    "fill_box",
    "fit_label_calibration",
    "get_labeler",
    "get_labelers",
    "labeler_from_callable",
    "load_decomposer",
    "load_unsup3d",
    "needs_images",
    "register_labeler",
    "resize_images",
    "unregister_labeler",
]
