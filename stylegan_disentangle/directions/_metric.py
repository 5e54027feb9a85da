"""A metric on W as the prior covariance of regression coefficients (the generalized ridge)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import LatentError


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
