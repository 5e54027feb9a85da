"""Statistics of the W prior: mean, covariance, precision, PCA basis, and the Mahalanobis distance to it.

The Mahalanobis distance `d(w) = sqrt((w - mean)^T P (w - mean))`, with `P` the (lightly regularised) inverse
covariance, says how far a code sits from the distribution the generator was trained on; editing and extrapolation
use it as a stop rule. W is far from Gaussian, so thresholds should come from `distance_quantile(q)` (the empirical
distances of the fitted samples) rather than from a chi distribution.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from ..errors import LatentError, NotFittedError
from ..utils import atomic_write_path

__all__ = ["WStats"]

_QUANTILE_GRID = np.linspace(0.0, 1.0, 1001)


def _as_w_array(w: Any, what: str = "w") -> np.ndarray:
    if isinstance(w, torch.Tensor):
        w = w.detach().cpu().numpy()
    w = np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] == 0:
        raise LatentError(f"{what} must be a non-empty [N, w_dim] array, got shape {w.shape}")
    return w


class WStats(BaseEstimator):
    """Mean, covariance, precision and PCA basis of W samples, fitted in float64 chunks (memmaps welcome).

    Parameters
    ----------
    reg : float
        Ridge added to the covariance before inversion, relative to its mean eigenvalue
        (`cov + reg * trace(cov) / w_dim * I`); keeps `precision_` finite for rank-deficient W.
    chunk_size : int
        Rows read per chunk.
    max_quantile_samples : int
        Rows (randomly chosen) whose distances give `distance_quantiles_`.
    random_state : int
        Seed of that row choice.

    Attributes
    ----------
    mean_ : [w_dim];  cov_ : [w_dim, w_dim] (unbiased, like `np.cov`);  precision_ : [w_dim, w_dim]
    components_ : [w_dim, w_dim] principal axes (rows) by decreasing variance;  explained_variance_ : [w_dim]
    explained_variance_ratio_ : [w_dim];  n_samples_ : int
    distance_quantiles_ : [1001] Mahalanobis distances of the samples at quantiles 0, 0.001, ..., 1.

    Examples
    --------
    >>> stats = WStats().fit(bank.w)
    >>> far = stats.mahalanobis(w) > stats.distance_quantile(0.99)
    """

    def __init__(
        self, reg: float = 1e-6, chunk_size: int = 65536, max_quantile_samples: int = 100_000, random_state: int = 0
    ) -> None:
        self.reg = reg
        self.chunk_size = chunk_size
        self.max_quantile_samples = max_quantile_samples
        self.random_state = random_state

    def fit(self, w: Any, y: Any = None) -> WStats:
        """Fit on w `[N, w_dim]` (N >= 2); `y` is ignored."""
        w = _as_w_array(w)
        n, d = w.shape
        if n < 2:
            raise LatentError(f"WStats needs at least 2 samples, got {n}")
        if int(self.chunk_size) < 1:
            raise LatentError(f"WStats chunk_size must be at least 1, got {self.chunk_size}")
        total = np.zeros(d)
        for start in range(0, n, self.chunk_size):
            chunk = np.asarray(w[start : start + self.chunk_size], dtype=np.float64)
            if not np.isfinite(chunk).all():
                raise LatentError(f"w contains NaN or inf (chunk starting at row {start})")
            total += chunk.sum(axis=0)
        mean = total / n
        scatter = np.zeros((d, d))
        for start in range(0, n, self.chunk_size):
            chunk = np.asarray(w[start : start + self.chunk_size], dtype=np.float64) - mean
            scatter += chunk.T @ chunk
        cov = scatter / (n - 1)
        eigval, eigvec = np.linalg.eigh(cov)
        order = np.argsort(eigval)[::-1]
        eigval, eigvec = np.maximum(eigval[order], 0.0), eigvec[:, order]
        ridge = float(self.reg) * float(eigval.sum()) / d
        inv = 1.0 / np.maximum(eigval + ridge, np.finfo(np.float64).tiny)
        self.mean_ = mean
        self.cov_ = cov
        self.precision_ = (eigvec * inv) @ eigvec.T
        self.whitening_ = eigvec * np.sqrt(inv)  # [d, d]: ||(w - mean) @ whitening_|| is the Mahalanobis distance
        self.components_ = eigvec.T
        self.explained_variance_ = eigval
        self.explained_variance_ratio_ = eigval / max(eigval.sum(), np.finfo(np.float64).tiny)
        self.n_samples_ = n
        rng = np.random.default_rng(self.random_state)
        rows = np.arange(n) if n <= self.max_quantile_samples else np.sort(
            rng.choice(n, self.max_quantile_samples, replace=False))
        dist = np.concatenate([self.mahalanobis(np.asarray(w[rows[i : i + self.chunk_size]]))
                               for i in range(0, rows.size, self.chunk_size)])
        self.distance_quantiles_ = np.quantile(dist, _QUANTILE_GRID)
        return self

    def _check(self) -> None:
        if not hasattr(self, "mean_"):
            raise NotFittedError("This WStats instance is not fitted yet; call fit(w) before using it.")

    def mahalanobis(self, w: Any) -> Any:
        """Mahalanobis distance of w `[..., w_dim]` (numpy or torch, e.g. ws `[N, num_ws, w_dim]`) -> `[...]`.

        Returns the same array type as the input (float64 numpy, or a float32 tensor on the input's device).
        """
        self._check()
        d = self.mean_.shape[0]
        if isinstance(w, torch.Tensor):
            if w.shape[-1] != d:
                raise LatentError(f"w has w_dim {w.shape[-1]} but the statistics were fitted with {d}")
            mean = torch.as_tensor(self.mean_, device=w.device, dtype=torch.float64)
            white = torch.as_tensor(self.whitening_, device=w.device, dtype=torch.float64)
            return ((w.to(torch.float64) - mean) @ white).norm(dim=-1).to(torch.float32)
        w = np.asarray(w, dtype=np.float64)
        if w.shape[-1] != d:
            raise LatentError(f"w has w_dim {w.shape[-1]} but the statistics were fitted with {d}")
        return np.linalg.norm((w - self.mean_) @ self.whitening_, axis=-1)

    def distance_quantile(self, q: float) -> float:
        """The q-quantile (0..1) of the fitted samples' own Mahalanobis distances (linear interpolation)."""
        self._check()
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be in [0, 1], got {q}")
        return float(np.interp(q, _QUANTILE_GRID, self.distance_quantiles_))

    _ARRAYS = ("mean_", "cov_", "precision_", "whitening_", "components_", "explained_variance_",
               "explained_variance_ratio_", "distance_quantiles_")

    def save(self, path: str | os.PathLike) -> Path:
        """Write the fitted statistics to an `.npz` (atomically)."""
        self._check()
        path = Path(path)
        with atomic_write_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, n_samples_=np.int64(self.n_samples_), params_reg=np.float64(self.reg),
                         **{k: getattr(self, k) for k in self._ARRAYS})
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> WStats:
        """Read statistics written by `save`."""
        try:
            with np.load(path, allow_pickle=False) as data:
                stats = cls(reg=float(data["params_reg"]))
                for key in cls._ARRAYS:
                    setattr(stats, key, data[key])
                stats.n_samples_ = int(data["n_samples_"])
        except (OSError, KeyError, ValueError) as exc:
            raise LatentError(f"{path} is not a WStats file written by WStats.save: {exc}") from None
        return stats
