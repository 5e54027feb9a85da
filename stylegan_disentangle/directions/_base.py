"""Shared plumbing of the direction finders: input checks, label parsing, the estimator base class.

Every finder is a scikit-learn estimator: `__init__` stores its arguments, `fit` learns `directions_` `[K, w_dim]`
(unit rows, float32) and `names_`, `transform(w)` gives coordinates `[N, K]`, and `to_direction_set` packs the
result into the DirectionSet artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from threadpoolctl import threadpool_limits

from ..errors import LatentError, NotFittedError
from ..latents.sampling import as_w
from .direction_set import DirectionSet, to_jsonable

__all__ = [
    "DirectionFinder",
    "as_w",
    "as_labels",
    "unit_rows",
    "canonical_sign",
    "check_fitted",
    "small_lapack",
    "blas_limit",
]


def small_lapack():
    """Context running BLAS/LAPACK single-threaded, for small dense decompositions (w_dim x w_dim eigh / solve).

    They take tens of milliseconds on one core; with several threads on a busy machine (oversubscribed cores, as
    when other jobs or joblib workers run) OpenBLAS's spinning threads made a 512 x 512 eigh take seconds.
    """
    return threadpool_limits(limits=1, user_api="blas")


def blas_limit(threads: int | None):
    """Context limiting BLAS threads to `threads` (None: leave the BLAS default) for a fit's streamed passes.

    Why the finders default to 1: on a machine whose cores are already busy (shared servers, joblib workers),
    OpenBLAS threads spin-wait; the 1M x 512 `X^T X` pass measured 4-5x slower with 2 threads than with 1 on the
    project's shared 2-core machine. On an idle many-core machine pass `blas_threads=None` to use every core.
    """
    return threadpool_limits(limits=threads, user_api="blas") if threads else contextlib.nullcontext()


def as_labels(
    y: Any, n: int, label_names: Sequence[str] | None = None, what: str = "y"
) -> tuple[np.ndarray, list[str]]:
    """Parse labels into `[N, L]` float64 and L names.

    `y` may be `[N]`, `[N, L]`, or a dict name -> `[N]` / `[N, ...]` (trailing axes are flattened and named
    `name_0, name_1, ...`; torch tensors are accepted). Names come from the dict, else `label_names`, else
    `label0, label1, ...`.
    """
    if isinstance(y, Mapping):
        cols, names = [], []
        for key, value in y.items():
            arr = _to_numpy(value)
            if arr.shape[0] != n:
                raise LatentError(f"label {key!r} has {arr.shape[0]} rows but w has {n}")
            arr = arr.reshape(n, -1)
            cols.append(arr)
            names.extend([str(key)] if arr.shape[1] == 1 else [f"{key}_{i}" for i in range(arr.shape[1])])
        if not cols:
            raise LatentError(f"{what} is an empty dict of labels")
        out = np.concatenate(cols, axis=1).astype(np.float64, copy=False)
    else:
        arr = _to_numpy(y)
        if arr.ndim not in (1, 2):
            raise LatentError(f"{what} must be [N] or [N, L] (or a dict of labels), got shape {arr.shape}")
        if arr.shape[0] != n:
            raise LatentError(f"{what} has {arr.shape[0]} rows but w has {n}")
        out = arr.reshape(n, -1).astype(np.float64, copy=False)
        if label_names is not None:
            names = [str(s) for s in ([label_names] if isinstance(label_names, str) else label_names)]
        else:
            names = [f"label{i}" for i in range(out.shape[1])]
    if len(names) != out.shape[1]:
        raise LatentError(f"{what} has {out.shape[1]} label columns but {len(names)} names")
    if len(set(names)) != len(names):
        raise LatentError(f"label names must be unique, got {names}")
    if not np.isfinite(out).all():
        bad = [names[i] for i in np.flatnonzero(~np.isfinite(out).all(axis=0))]
        raise LatentError(f"labels {bad} contain NaN or inf")
    return out, names


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def unit_rows(v: np.ndarray, what: str = "direction", names: Sequence[str] | None = None) -> np.ndarray:
    """Normalise rows of `[K, D]` to unit norm (float64); ValueError naming any row that is zero (at most 1e-12 of
    the largest finite norm, or of 1) or not finite."""
    v = np.asarray(v, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    finite = np.isfinite(norms[:, 0])
    scale = max(1.0, float(norms[finite, 0].max(initial=0.0)))
    bad = np.flatnonzero(~finite | (norms[:, 0] <= 1e-12 * scale))
    if bad.size:
        which = [names[i] for i in bad] if names is not None else bad.tolist()
        raise ValueError(f"{what}(s) {which} are zero (or not finite); nothing is left to normalise")
    return v / norms


def canonical_sign(v: np.ndarray) -> np.ndarray:
    """Flip each row of `[K, D]` so that its largest-magnitude entry is positive (a deterministic sign)."""
    v = np.array(v, copy=True)
    idx = np.argmax(np.abs(v), axis=1)
    signs = np.sign(v[np.arange(v.shape[0]), idx])
    signs[signs == 0] = 1
    return v * signs[:, None]


def check_fitted(estimator: BaseEstimator, attribute: str = "directions_") -> None:
    """Raise NotFittedError (ours) when `estimator` has not been fitted yet."""
    if not hasattr(estimator, attribute):
        raise NotFittedError(
            f"This {type(estimator).__name__} instance is not fitted yet; call fit(...) before using it."
        )


def w_std_along(w: np.ndarray, directions: np.ndarray, max_rows: int = 200_000, seed: int = 0) -> np.ndarray:
    """`[K]` std of the rows of `w` `[N, w_dim]` projected on unit `directions` `[K, w_dim]`.

    Uses at most `max_rows` randomly chosen rows (the std converges fast), in float64.
    """
    n = w.shape[0]
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
        w = w[rows]
    proj = np.asarray(w, dtype=np.float64) @ np.asarray(directions, dtype=np.float64).T
    return proj.std(axis=0)


class DirectionFinder(TransformerMixin, BaseEstimator):
    """Base class: `transform`, `to_direction_set`, and the fitted-check shared by every finder.

    Subclasses set in `fit`: `directions_` `[K, w_dim]` float32 unit rows, `names_` (K strings), `mean_` `[w_dim]`
    (centre used by `transform`), `n_samples_fit_` (or None), and optionally `std_` `[K]` (std of the samples
    along each direction, W units).
    """

    _method: str = "unknown"

    @property
    def n_features_in_(self) -> int:
        """The w_dim the finder was fitted on (scikit-learn's name); NotFittedError before `fit`."""
        check_fitted(self)
        return int(self.directions_.shape[1])

    def transform(self, w: Any) -> np.ndarray:
        """Coordinates `[N, K]` of `w` `[N, w_dim]`: `(w - mean_) @ directions_.T`."""
        check_fitted(self)
        w = as_w(w)
        if w.shape[1] != self.directions_.shape[1]:
            raise LatentError(f"w has w_dim {w.shape[1]} but the directions have {self.directions_.shape[1]}")
        dirs = self.directions_.astype(w.dtype, copy=False)
        return (w @ dirs.T) - (self.mean_.astype(w.dtype) @ dirs.T)

    def inverse_transform(self, coords: Any) -> np.ndarray:
        """Map coordinates `[N, K]` back to W `[N, w_dim]` (exact only when the directions span the data)."""
        check_fitted(self)
        coords = np.asarray(coords)
        return coords @ self.directions_.astype(coords.dtype if coords.dtype == np.float32 else np.float64) + self.mean_

    def _extras(self) -> dict[str, np.ndarray]:
        """Method-specific per-direction arrays for the DirectionSet (subclasses extend)."""
        out: dict[str, np.ndarray] = {}
        if getattr(self, "std_", None) is not None:
            out["std"] = np.asarray(self.std_, dtype=np.float32)
        if getattr(self, "mean_", None) is not None:
            out["global_w_mean"] = np.asarray(self.mean_, dtype=np.float32)
        return out

    def _info(self) -> dict[str, Any]:
        return {}

    def _default_layer_ranges(self) -> list[tuple[int, int] | None]:
        return [None] * len(self.names_)

    def to_direction_set(
        self,
        names: Sequence[str] | None = None,
        *,
        checkpoint_sha256: str | None = None,
        n_samples: int | None = None,
        seed: int | None = None,
        step_ranges: Sequence[tuple[float, float]] | None = None,
        step_sigmas: float = 3.0,
        layer_ranges: Sequence[tuple[int, int] | None] | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> DirectionSet:
        """Pack the fitted directions into a DirectionSet.

        Step ranges default to `±step_sigmas * std_` (W units) when the finder saw samples, else `±step_sigmas`.
        `n_samples` defaults to the number of fitted samples and `seed` to an integer `random_state`.
        """
        check_fitted(self)
        k = len(self.names_)
        if step_ranges is None:
            std = getattr(self, "std_", None)
            scale = np.ones(k) if std is None else np.asarray(std, dtype=np.float64)
            step_ranges = [(-step_sigmas * float(s), step_sigmas * float(s)) for s in scale]
        if n_samples is None:
            n_samples = getattr(self, "n_samples_fit_", None)
        if seed is None:
            rs = getattr(self, "random_state", None)
            seed = int(rs) if isinstance(rs, (int, np.integer)) and not isinstance(rs, bool) else None
        all_extras = self._extras()
        all_extras.update(extras or {})
        all_info = self._info()
        all_info.update(info or {})
        return DirectionSet(
            names=list(names) if names is not None else list(self.names_),
            vectors=self.directions_,
            layer_ranges=layer_ranges if layer_ranges is not None else self._default_layer_ranges(),
            step_ranges=step_ranges,
            method=self._method,
            params=_jsonable_params(self.get_params(deep=False)),
            checkpoint_sha256=checkpoint_sha256,
            n_samples=n_samples,
            seed=seed,
            extras=all_extras,
            info=all_info,
        )


def _jsonable_params(params: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in params.items():
        try:
            out[key] = to_jsonable(value)
        except TypeError:
            out[key] = repr(value)
    return out
