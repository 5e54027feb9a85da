"""Affine calibration of one label of a labeler against a downstream dataset's own values of that label.

A decomposer measures its semantics in its own units: the shipped synthetic decomposer's yaw correlates 0.98-0.99
with the world's true yaw but is compressed (slope about 1.5 between them), because Unsup3D's depth relief and
rotation angle trade against each other. Images exported for a downstream model must carry labels in that model's
units, so the export can first fit `value ~ slope * label + intercept` on images the user has already labelled
(e.g. the narrow-pose training set the augmentation is meant to extend) and report every label through it.

    cal = fit_label_calibration(decomposer_labeler("synthetic", maps=False), images, yaw_degrees, "yaw")
    cal.transform(raw_yaw)      # in the dataset's units
    export_augmentation(..., calibration=cal)

The fit is ordinary least squares; `r_` (Pearson r of labeler vs reference) and `residual_std_` say how far to
trust it, and `reference_range_` how far the export extrapolates it.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import StyleGANDisentangleError
from .base import apply_labeler

__all__ = ["LabelCalibration", "fit_label_calibration", "load_calibration_images"]


class LabelCalibration:
    """`reference ~ slope_ * label + intercept_` for one label, fitted on paired values.

    Parameters
    ----------
    label : the labeler's label name this calibrates (e.g. 'yaw').

    Attributes
    ----------
    slope_, intercept_ : float;  r_ : float  Pearson r of label vs reference;  residual_std_ : float  RMS residual
    in reference units;  reference_range_ : (float, float);  n_samples_fit_ : int.
    """

    def __init__(self, label: str) -> None:
        self.label = label

    def fit(self, label_values: Any, reference: Any) -> LabelCalibration:
        """Least squares of `reference` `[N]` on `label_values` `[N]` (N >= 3, both finite, the labels varying)."""
        x = np.asarray(label_values, dtype=np.float64).reshape(-1)
        y = np.asarray(reference, dtype=np.float64).reshape(-1)
        if x.shape != y.shape:
            raise StyleGANDisentangleError(f"calibration of {self.label!r}: {x.size} label values but {y.size} "
                                           "reference values")
        if x.size < 3:
            raise StyleGANDisentangleError(f"calibration of {self.label!r} needs at least 3 labelled images, got "
                                           f"{x.size}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()):
            raise StyleGANDisentangleError(f"calibration of {self.label!r}: NaN or inf among the values")
        if not np.ptp(x) > 0 or not np.ptp(y) > 0:
            raise StyleGANDisentangleError(f"calibration of {self.label!r}: the labeler's values or the reference "
                                           "values are constant; nothing to fit")
        slope, intercept = np.polyfit(x, y, 1)
        self.slope_, self.intercept_ = float(slope), float(intercept)
        self.r_ = float(np.corrcoef(x, y)[0, 1])
        self.residual_std_ = float(np.sqrt(np.mean((y - (slope * x + intercept)) ** 2)))
        self.reference_range_ = (float(y.min()), float(y.max()))
        self.n_samples_fit_ = int(x.size)
        return self

    def transform(self, label_values: Any) -> np.ndarray:
        """Label values in the reference's units."""
        if not hasattr(self, "slope_"):
            raise StyleGANDisentangleError("this LabelCalibration is not fitted yet; call fit first")
        return self.slope_ * np.asarray(label_values, dtype=np.float64) + self.intercept_

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record (for labels.json)."""
        self.transform(0.0)  # raises when not fitted
        return {"label": self.label, "slope": self.slope_, "intercept": self.intercept_, "r": self.r_,
                "residual_std": self.residual_std_, "reference_range": list(self.reference_range_),
                "n_samples": self.n_samples_fit_}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> LabelCalibration:
        """Inverse of `to_dict`."""
        cal = cls(record["label"])
        cal.slope_, cal.intercept_ = float(record["slope"]), float(record["intercept"])
        cal.r_, cal.residual_std_ = float(record["r"]), float(record["residual_std"])
        cal.reference_range_ = tuple(float(v) for v in record["reference_range"])
        cal.n_samples_fit_ = int(record["n_samples"])
        return cal

    def __repr__(self) -> str:
        if not hasattr(self, "slope_"):
            return f"LabelCalibration({self.label!r})"
        return (f"LabelCalibration({self.label!r}: {self.slope_:.4g} * x + {self.intercept_:.4g}, r={self.r_:.3f}, "
                f"n={self.n_samples_fit_})")


@torch.no_grad()
def fit_label_calibration(labeler: Any, images: torch.Tensor, reference: Any, label: str,
                          batch_size: int = 256) -> LabelCalibration:
    """Label `images` `[N, 3, H, W]` (in [-1, 1]) with `labeler` and fit `reference` `[N]` on its `label`."""
    if label not in getattr(labeler, "names", []):
        raise StyleGANDisentangleError(f"the labeler has no label {label!r} to calibrate; its labels: "
                                       f"{list(getattr(labeler, 'names', []))}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise StyleGANDisentangleError(f"calibration images must be [N, 3, H, W], got {tuple(images.shape)}")
    values = torch.cat([apply_labeler(labeler, images[i:i + batch_size])[label]
                        for i in range(0, images.shape[0], batch_size)])
    return LabelCalibration(label).fit(values.numpy(), reference)


def load_calibration_images(path: str | os.PathLike, label: str) -> tuple[torch.Tensor, np.ndarray]:
    """Read an NPZ of labelled images: `images` (uint8 `[N, H, W, 3]` as PNGs decode, or float `[N, 3, H, W]` in
    [-1, 1]) and an `[N]` array named after `label`. Returns (images float `[N, 3, H, W]` in [-1, 1], values)."""
    path = Path(path)
    try:
        data = np.load(path, allow_pickle=False)
        if not hasattr(data, "files"):  # a .npy file holds one array, not named ones (an NpzFile has .files)
            raise ValueError(f"it holds one {type(data).__name__}, not named arrays")
        with data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise StyleGANDisentangleError(f"{path}: not a readable .npz of labelled images ({exc})") from None
    for key in ("images", label):
        if key not in arrays:
            raise StyleGANDisentangleError(f"{path} has no array {key!r} (it needs 'images' and {label!r}; it has "
                                           f"{sorted(arrays)})")
    img = arrays["images"]
    try:
        values = np.asarray(arrays[label], dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise StyleGANDisentangleError(f"{path}: the array {label!r} holds {arrays[label].dtype} values; it must be "
                                       "numbers") from None
    if img.ndim == 4 and img.shape[0] == 0:
        raise StyleGANDisentangleError(f"{path}: 'images' holds no images; a calibration needs at least 3")
    if img.dtype == np.uint8 and img.ndim == 4 and img.shape[-1] == 3:
        tensor = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    elif np.issubdtype(img.dtype, np.floating) and img.ndim == 4 and img.shape[1] == 3:
        tensor = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        if tensor.numel() and float(tensor.abs().max()) > 1.0 + 1e-3:  # e.g. 0..255 floats: the labels would be junk
            raise StyleGANDisentangleError(f"{path}: float 'images' must be in [-1, 1]; they reach "
                                           f"{float(tensor.abs().max()):.4g} (uint8 [N, H, W, 3] is read as 0..255)")
    else:
        raise StyleGANDisentangleError(f"{path}: 'images' must be uint8 [N, H, W, 3] or float [N, 3, H, W]; got "
                                       f"{img.dtype} {img.shape}")
    if tensor.shape[0] != values.size:
        raise StyleGANDisentangleError(f"{path}: {tensor.shape[0]} images but {values.size} values of {label!r}")
    if not torch.isfinite(tensor).all():
        raise StyleGANDisentangleError(f"{path}: 'images' contains NaN or inf")
    if not np.isfinite(values).all():
        bad = np.flatnonzero(~np.isfinite(values))[:5].tolist()
        raise StyleGANDisentangleError(f"{path}: the values of {label!r} contain NaN or inf (rows {bad})")
    if values.size < 3 or not np.ptp(values) > 0:  # what the affine fit needs, said before any network loads
        raise StyleGANDisentangleError(f"{path}: a calibration needs at least 3 images whose {label!r} values "
                                       f"differ; this file has {values.size} (values {np.unique(values)[:5].tolist()})")
    return tensor.contiguous(), values
