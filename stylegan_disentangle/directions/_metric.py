"""A metric on W as the prior covariance of regression coefficients (the generalized ridge): its root, and the
map into and back out of its coordinates (a plain ridge on `(w - mean) @ root` is that generalized ridge)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import LatentError
from ._base import unit_rows


def metric_root(metric: Any, w_dim: int) -> np.ndarray:
    """Symmetric square root `S` `[w_dim, w_dim]` of a PSD metric, scaled so that its largest eigenvalue is 1.

    Regressing on `w S` with a plain ridge penalty and mapping the coefficients back by `S` is the generalized
    ridge whose coefficient prior has covariance proportional to the metric.
    """
    m = np.asarray(metric, dtype=np.float64)
    if m.shape != (w_dim, w_dim):
        raise LatentError(f"w_metric must be a [{w_dim}, {w_dim}] matrix (like w's width), got shape {m.shape}")
    if not np.isfinite(m).all():
        raise LatentError("w_metric contains NaN or inf")
    if not np.allclose(m, m.T, rtol=1e-6, atol=1e-12 * max(np.abs(m).max(), 1e-300)):
        raise LatentError("w_metric must be symmetric (a Gram matrix such as image_sensitivity's)")
    ev, vec = np.linalg.eigh((m + m.T) / 2)
    if ev[-1] <= 0:
        raise LatentError("w_metric has no positive eigenvalue: the generator does not respond to w at all")
    if ev[0] < -1e-6 * ev[-1]:
        raise LatentError(f"w_metric is not positive semi-definite (eigenvalue {ev[0]:.3g} against {ev[-1]:.3g})")
    ev = np.clip(ev / ev[-1], 0.0, None)
    return (vec * np.sqrt(ev)) @ vec.T


def combined_root(root: np.ndarray, extra: Any, ratio: float) -> np.ndarray:
    """Symmetric root of the prior covariance `S (I + ratio S K S)^-1 S` (S = `root`, K = `extra` scaled to a largest
    eigenvalue of 1): the generalized ridge whose penalty `b^T M^+ b` gains `ratio * b^T K b`. A plain ridge on
    `(w - mean) @ result` with the metric's penalty is that ridge; a K without a positive eigenvalue leaves `root`."""
    w_dim = root.shape[0]
    k = np.asarray(extra, dtype=np.float64)
    if k.shape != (w_dim, w_dim) or not np.isfinite(k).all():
        raise LatentError(f"w_chroma must be a finite [{w_dim}, {w_dim}] matrix, got shape {k.shape}")
    k = (k + k.T) / 2
    top = np.linalg.eigvalsh(k)[-1]
    if top <= 0 or ratio <= 0:
        return root
    p = np.eye(w_dim) + ratio * root @ (k / top) @ root
    cov = root @ np.linalg.solve(p, root)
    ev, vec = np.linalg.eigh((cov + cov.T) / 2)
    return (vec * np.sqrt(np.clip(ev, 0.0, None))) @ vec.T


def from_metric_coords(coef: np.ndarray, intercept: np.ndarray, root: np.ndarray | None, mean: np.ndarray,
                       names: Sequence[str]) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """Coefficients fitted on `(w - mean) @ root` mapped back to w: (unit directions, coef, intercept).

    Without a metric (`root` None) the coefficients are returned as they are, with None for the directions.
    """
    if root is None:
        return None, coef, intercept
    coef_w = np.asarray(coef, dtype=np.float64) @ root
    intercept_w = np.asarray(intercept, dtype=np.float64) - coef_w @ mean
    return unit_rows(coef_w, "label direction", list(names)), coef_w, intercept_w


def to_metric_coords(w: np.ndarray, mean: np.ndarray, root: np.ndarray, chunk_size: int) -> np.ndarray:
    """`(w - mean) @ root` as float32, a chunk of rows at a time (a float32 copy of w: 2 GB for a million rows of a
    512-wide W, without float64 temporaries of the whole bank)."""
    out = np.empty(w.shape, dtype=np.float32)
    for i in range(0, w.shape[0], chunk_size):
        out[i:i + chunk_size] = (np.asarray(w[i:i + chunk_size], dtype=np.float64) - mean) @ root
    return out
