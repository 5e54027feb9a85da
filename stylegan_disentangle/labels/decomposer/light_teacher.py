"""A per-face light reading made from the generator's latent: the decomposer's light, read through W directions.

Unsup3D's light is weakly identified by the images: a symmetric albedo absorbs every light change that leaves the
shading symmetric (BENCHMARKS.md, issue 10, sixteenth session), so netL's elevation and ambient readings mix in
the hair and the skin. Over a population the mix averages out: the 3D-coupled directions (`ThreeDCoupledDirections`,
fitted on the decomposer's own readings, no labels) recover the light's W directions far better than any single
reading. `LatentLightTeacher` turns them back into a per-face reading: w projected on a label's direction, mapped
to the label's units by the least-squares line from that projection to the decomposer's own reading. Used as a
target for netL (`train_decomposer(light_teacher=...)`) it teaches netL to read from the image what the generator's
latent says of the light (Zheng et al.'s coupling of the 3D model with the generator, SEEDS.md §1), with no
ground truth anywhere.

The teacher is linear in w, so it is only as good as its directions: it inherits their leans (for example toward
the head's height) as well as their cleanliness.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...errors import NotFittedError, StyleGANDisentangleError
from ...latents import as_w
from ...utils import atomic_write_path
from .renderer import light_angles

__all__ = ["LIGHT_LABELS", "LatentLightTeacher", "light_labels"]

LIGHT_LABELS = ("light_ambient", "light_diffuse", "light_azimuth", "light_elevation")
"""The decomposer's light labels (`labeler.SCALAR_LABELS`' light part, world units: degrees for the angles)."""


def light_labels(light: torch.Tensor) -> dict[str, torch.Tensor]:
    """A decomposition's `light` [N, 4] -> {label: [N]} for LIGHT_LABELS (differentiable)."""
    angles = light_angles(light)
    return {"light_ambient": light[:, 0], "light_diffuse": light[:, 1], "light_azimuth": angles[:, 0],
            "light_elevation": angles[:, 1]}


class LatentLightTeacher:
    """Light labels predicted from w: ``intercept_[k] + slope_[k] * <w - w_mean_, directions[k]>``.

    Parameters
    ----------
    directions : mapping label -> W direction [w_dim]
        One direction per light label to teach (names from LIGHT_LABELS), e.g. the 3D-coupled directions of a
        `find-directions --method 3d-coupled` run (read from the saved set by
        `directions.light_teacher_sets.light_teacher_from_sets`: the decomposer knows nothing of DirectionSets).
        Rescaled to unit length.

    `fit(w, readings)` learns, for each label, the line from the projection to the decomposer's reading of the
    same faces (its units and mean); the projection's correlation with the reading is kept as `agreement_`.

    Fitted attributes: `names_` (the labels, in LIGHT_LABELS order), `directions_` [K, w_dim] (unit rows),
    `w_mean_` [w_dim], `intercept_` [K], `slope_` [K], `reading_std_` [K] (the readings' spread, the loss's scale),
    `agreement_` [K].
    """

    def __init__(self, directions: Mapping[str, Any]) -> None:
        self.directions = directions

    def _check_directions(self) -> tuple[list[str], np.ndarray]:
        unknown = sorted(set(self.directions) - set(LIGHT_LABELS))
        if not self.directions or unknown:
            raise StyleGANDisentangleError(f"light teacher: directions must name some of {list(LIGHT_LABELS)}, got "
                                           f"{sorted(self.directions)}")
        names = [n for n in LIGHT_LABELS if n in self.directions]
        vectors = [np.asarray(self.directions[n], dtype=np.float64).reshape(-1) for n in names]
        if len({len(v) for v in vectors}) != 1:  # checked before they are stacked into one array
            raise StyleGANDisentangleError("light teacher: every direction must be a finite, non-zero vector of one "
                                           f"length; got lengths {dict(zip(names, map(len, vectors)))}")
        rows = np.stack(vectors)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        if not np.all(np.isfinite(rows)) or np.any(norms == 0):
            raise StyleGANDisentangleError("light teacher: every direction must be a finite, non-zero vector of one "
                                           "length")
        return names, rows / norms

    def fit(self, w: Any, readings: Mapping[str, Any]) -> LatentLightTeacher:
        """Learn each label's line from the projection of `w` [N, w_dim] to `readings[label]` [N]."""
        names, rows = self._check_directions()
        w = _as_2d(w, "w")
        if w.shape[1] != rows.shape[1]:
            raise StyleGANDisentangleError(f"light teacher: w has {w.shape[1]} columns, the directions "
                                           f"{rows.shape[1]}")
        missing = [n for n in names if n not in readings]
        if missing or len(w) < 3:
            raise StyleGANDisentangleError(f"light teacher: fit needs >= 3 faces and readings of {names}; missing "
                                           f"{missing}, {len(w)} faces")
        w_mean = w.mean(0)
        proj = (w - w_mean) @ rows.T
        columns = [np.asarray(_numpy(readings[n]), dtype=np.float64).reshape(-1) for n in names]
        if any(len(c) != len(w) or not np.all(np.isfinite(c)) for c in columns):
            raise StyleGANDisentangleError(f"light teacher: readings must be finite, one per face ({len(w)}); got "
                                           f"{dict(zip(names, map(len, columns)))} readings")
        y = np.stack(columns, 1)
        pc, yc = proj - proj.mean(0), y - y.mean(0)
        var_p, var_y = (pc * pc).mean(0), (yc * yc).mean(0)
        if np.any(var_p == 0) or np.any(var_y == 0):
            raise StyleGANDisentangleError("light teacher: a direction or a reading does not vary over these faces")
        cov = (pc * yc).mean(0)
        self.names_, self.directions_, self.w_mean_ = names, rows.astype(np.float32), w_mean.astype(np.float32)
        self.slope_ = cov / var_p
        self.intercept_ = y.mean(0) - self.slope_ * proj.mean(0)
        self.reading_std_ = np.sqrt(var_y)
        self.agreement_ = cov / np.sqrt(var_p * var_y)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "slope_"):
            raise NotFittedError("this LatentLightTeacher is not fitted yet: call fit(w, readings) or load()")

    def predict(self, w: Any) -> dict[str, Any]:
        """{label: [N]} for w [N, w_dim]: torch tensors for a tensor (differentiable, on its device), else numpy."""
        self._check_fitted()
        width = self.directions_.shape[1]
        if isinstance(w, torch.Tensor):
            if w.ndim == 3:  # ws [N, num_ws, w_dim] (every layer the same w) read as w, as for numpy input
                w = w[:, 0]
            if w.ndim != 2 or w.shape[1] != width:
                raise StyleGANDisentangleError(f"light teacher: w should be [N, {width}] (or ws [N, num_ws, "
                                               f"{width}]), got {list(w.shape)}")
            t = {k: torch.as_tensor(getattr(self, k), dtype=w.dtype, device=w.device)
                 for k in ("directions_", "w_mean_", "intercept_", "slope_")}
            out = t["intercept_"] + t["slope_"] * ((w - t["w_mean_"]) @ t["directions_"].T)
        else:
            w = _as_2d(w, "w")
            if w.shape[1] != width:
                raise StyleGANDisentangleError(f"light teacher: w has {w.shape[1]} columns, the directions {width}")
            out = self.intercept_ + self.slope_ * ((w - self.w_mean_) @ self.directions_.T.astype(np.float64))
        return {n: out[:, i] for i, n in enumerate(self.names_)}

    def loss(self, light: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Sum over the taught labels of the mean squared gap between a decomposition's `light` [N, 4] and the
        teacher's reading of `w` [N, w_dim], each in units of the fit's reading spread."""
        read, target = light_labels(light), self.predict(w)
        return sum(((read[n] - target[n]) / float(s)).pow(2).mean() for n, s in zip(self.names_, self.reading_std_))

    def fingerprint(self) -> str:
        """sha256 of the directions (names and vectors): what a resumed training run must find again."""
        names, rows = self._check_directions()
        h = hashlib.sha256(",".join(names).encode())
        h.update(np.ascontiguousarray(rows, dtype=np.float32).tobytes())
        return h.hexdigest()

    _ARRAYS = ("directions_", "w_mean_", "intercept_", "slope_", "reading_std_", "agreement_")

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted teacher to `path` (.npz, atomically)."""
        self._check_fitted()
        with atomic_write_path(Path(path)) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, names=np.array(self.names_), **{k: getattr(self, k) for k in self._ARRAYS})

    @classmethod
    def load(cls, path: str | os.PathLike) -> LatentLightTeacher:
        """Read a teacher written by `save`; a clear error naming the file if it is missing or not one."""
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("names", *cls._ARRAYS)}
        except (OSError, ValueError, KeyError) as exc:
            raise StyleGANDisentangleError(f"{path}: not a saved light teacher ({type(exc).__name__}: {exc})") from None
        names = [str(n) for n in arrays.pop("names")]
        teacher = cls(dict(zip(names, arrays["directions_"])))
        teacher.names_ = names
        for k, v in arrays.items():
            setattr(teacher, k, v)
        return teacher

    def __repr__(self) -> str:
        return f"LatentLightTeacher(directions={sorted(self.directions)})"


def _numpy(x: Any) -> Any:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x


def _as_2d(w: Any, what: str) -> np.ndarray:
    """`as_w`'s checked [N, w_dim] latents in float64; ws [N, num_ws, w_dim] (every layer the same w) read as w."""
    if getattr(w, "ndim", None) == 3:
        w = w[:, 0]
    return np.asarray(as_w(w, f"light teacher: {what}"), dtype=np.float64)
