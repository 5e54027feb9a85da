"""Supervised linear directions: the normal of a linear model from w to a label (InterFaceGAN and its regression twin).

- Continuous labels: ridge regression `y ~ w`, solved in closed form from streamed moments (one float64 pass over
  the rows; identical to sklearn Ridge's objective) — seconds on 1M x 512.
- Binary labels (or `top_bottom_percent`): a linear classifier (LinearSVC as InterFaceGAN, or logistic regression)
  on standardized w, on at most `max_samples` rows; the weight vector is mapped back to W units.
InterFaceGAN (Shen et al., CVPR 2020) trains a linear SVM on the top and bottom 2% of samples ranked by an attribute
score; `top_bottom_percent=2` does that.

The direction is the normalised weight vector, oriented so that moving along it increases the label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC
from sklearn.utils import check_random_state

from ._base import DirectionFinder, as_labels, as_w, blas_limit, check_fitted, small_lapack, unit_rows, w_std_along
from ._moments import compute_moments, r2_from_moments, ridge_from_moments, split_mask

__all__ = ["LinearDirections"]

_METHODS = ("auto", "ridge", "svm", "logistic")


class LinearDirections(DirectionFinder):
    """One direction per label: the normalised weights of a linear model `label ~ w`.

    Parameters
    ----------
    method : {'auto', 'ridge', 'svm', 'logistic'}
        'auto' = ridge for continuous labels, linear SVM for binary labels or with `top_bottom_percent`.
        A classifier given a continuous label without `top_bottom_percent` splits it at the median.
    alpha : float
        Ridge penalty (sklearn Ridge's, on the sum of squared errors).
    C : float
        Inverse regularisation of the SVM / logistic regression (on standardized w).
    top_bottom_percent : float or None
        Keep only the top p% (positive) and bottom p% (negative) samples of each label and fit a classifier
        (InterFaceGAN uses 2). With method 'ridge' the 0/1 targets are regressed instead.
    val_fraction : float
        Fraction of the (selected) rows held out to compute `scores_`; 0 disables it.
    max_samples : int or None
        Classifiers use at most this many randomly chosen rows (liblinear / lbfgs on 1M rows is slow and a
        linear boundary in 512-d is well determined by 100k points).
    max_iter : int
        Iteration limit of the classifiers.
    random_state : int or None
        Seed for the validation split and subsampling.
    chunk_size : int
        Rows per chunk of the streamed moments.
    blas_threads : int or None
        BLAS threads during `fit` (default 1; None = the BLAS default). See `_base.blas_limit` for why.

    Attributes
    ----------
    directions_ : ndarray [L, w_dim]  unit rows (float32), one per label.
    names_ : list[str]  label names (from the dict keys, `label_names`, or 'label0'...).
    coef_ : ndarray [L, w_dim]  raw weight vectors in W units (label change per unit w, for ridge).
    intercept_ : ndarray [L]
    scores_ : ndarray [L]  held-out R^2 (ridge) or accuracy (classifiers); NaN when no split.
    kinds_ : list[str]  'ridge' / 'svm' / 'logistic' actually used per label.
    mean_ : ndarray [w_dim];  std_ : ndarray [L] std of W along each direction.

    Examples
    --------
    >>> est = LinearDirections(method="svm", top_bottom_percent=2).fit(w, {"smile": scores})
    >>> ds = est.to_direction_set()
    """

    _method = "linear"

    def __init__(
        self,
        method: str = "auto",
        alpha: float = 1.0,
        C: float = 1.0,
        top_bottom_percent: float | None = None,
        val_fraction: float = 0.1,
        max_samples: int | None = 100_000,
        max_iter: int = 1000,
        random_state: int | None = None,
        chunk_size: int = 65536,
        blas_threads: int | None = 1,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.C = C
        self.top_bottom_percent = top_bottom_percent
        self.val_fraction = val_fraction
        self.max_samples = max_samples
        self.max_iter = max_iter
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.blas_threads = blas_threads

    def fit(self, w: Any, y: Any, label_names: Sequence[str] | None = None) -> LinearDirections:
        """Fit on `w` `[N, w_dim]` and labels `y` (`[N]`, `[N, L]` or dict name -> `[N]`)."""
        with blas_limit(self.blas_threads):
            return self._fit(w, y, label_names)

    def _fit(self, w: Any, y: Any, label_names: Sequence[str] | None) -> LinearDirections:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        p = self.top_bottom_percent
        if p is not None and not 0 < p <= 50:
            raise ValueError(f"top_bottom_percent must be in (0, 50], got {p}")
        w = as_w(w)
        labels, names = as_labels(y, w.shape[0], label_names)
        n, d = w.shape
        binary = [_is_binary(labels[:, j]) for j in range(labels.shape[1])]
        for j, name in enumerate(names):
            if np.ptp(labels[:, j]) == 0:
                raise ValueError(f"label {name!r} is constant; it defines no direction")

        kinds = []
        for j in range(labels.shape[1]):
            if self.method == "ridge":
                kinds.append("ridge")
            elif self.method in ("svm", "logistic"):
                kinds.append(self.method)
            else:
                kinds.append("svm" if (binary[j] or p is not None) else "ridge")

        coef = np.zeros((labels.shape[1], d))
        intercept = np.zeros(labels.shape[1])
        scores = np.full(labels.shape[1], np.nan)
        ridge_cols = [j for j, k in enumerate(kinds) if k == "ridge" and p is None]
        mean = None
        if ridge_cols:
            mean, std_from_gram = self._fit_ridge(w, labels[:, ridge_cols], ridge_cols, coef, intercept, scores)
        for j, kind in enumerate(kinds):
            if kind == "ridge" and p is None:
                continue
            coef[j], intercept[j], scores[j] = self._fit_selected(w, labels[:, j], kind, names[j])

        self.coef_ = coef
        self.intercept_ = intercept
        self.scores_ = scores
        self.kinds_ = kinds
        self.names_ = names
        self.directions_ = unit_rows(coef, "label direction", names).astype(np.float32)
        self.directions_ /= np.linalg.norm(self.directions_, axis=1, keepdims=True)
        if mean is not None and len(ridge_cols) == len(kinds):
            self.mean_ = mean
            self.std_ = std_from_gram(self.directions_)
        else:
            self.mean_ = _chunked_mean(w, self.chunk_size)
            self.std_ = w_std_along(w, self.directions_, seed=_seed(self.random_state))
        self.n_samples_fit_ = n
        return self

    def _fit_ridge(self, w, labels, cols, coef, intercept, scores):
        val = split_mask(w.shape[0], self.val_fraction, _seed(self.random_state))
        if val is None:
            (train,) = compute_moments(w, labels, chunk_size=self.chunk_size, desc="ridge moments")
            val_m = None
        else:
            train, val_m = compute_moments(w, labels, masks=[~val, val], chunk_size=self.chunk_size, desc="ridge")
        b, b0 = ridge_from_moments(train, self.alpha)
        coef[cols] = b.T
        intercept[cols] = b0
        if val_m is not None:
            scores[cols] = r2_from_moments(val_m, b, b0)
        total_mean = train.mean if val_m is None else (train.mean * train.n + val_m.mean * val_m.n) / w.shape[0]

        def std_from_gram(dirs: np.ndarray) -> np.ndarray:
            dirs = dirs.astype(np.float64)
            return np.sqrt(np.maximum(np.einsum("kd,de,ke->k", dirs, train.cov, dirs), 0.0))

        return total_mean, std_from_gram

    def _fit_selected(self, w: np.ndarray, y: np.ndarray, kind: str, name: str) -> tuple[np.ndarray, float, float]:
        """Classifier (or ridge on 0/1) for one label on its top/bottom rows, subsampled; returns coef, b, score."""
        rng = np.random.default_rng(_seed(self.random_state))
        n = y.shape[0]
        p = self.top_bottom_percent
        if p is not None:
            k = max(1, int(round(n * p / 100.0)))
            order = np.argsort(y, kind="stable")
            neg, pos = order[:k], order[n - k :]
            if p == 50:
                neg, pos = order[: n // 2], order[n // 2 :]
            rows = np.concatenate([neg, pos])
            target = np.concatenate([np.zeros(neg.size), np.ones(pos.size)])
        elif _is_binary(y):
            rows = np.arange(n)
            target = (y == y.max()).astype(np.float64)
        else:  # continuous label given to a classifier: split at the median
            order = np.argsort(y, kind="stable")
            rows = np.concatenate([order[: n // 2], order[n // 2 :]])
            target = np.concatenate([np.zeros(n // 2), np.ones(n - n // 2)])
        if self.max_samples is not None and rows.size > self.max_samples:
            pick = rng.choice(rows.size, size=int(self.max_samples), replace=False)
            rows, target = rows[pick], target[pick]
        if np.unique(target).size < 2:
            raise ValueError(f"label {name!r}: the selected rows contain a single class; use more samples")
        order = np.argsort(rows)  # sorted row access is faster on memmaps
        rows, target = rows[order], target[order]
        x = np.asarray(w[rows], dtype=np.float64)
        is_val = np.zeros(rows.size, dtype=bool)
        n_val = int(round(rows.size * self.val_fraction)) if self.val_fraction else 0
        if n_val >= 2 and rows.size - n_val >= 4:
            is_val[rng.choice(rows.size, size=n_val, replace=False)] = True
        x_tr, t_tr = x[~is_val], target[~is_val]
        mu, sd = x_tr.mean(axis=0), x_tr.std(axis=0)
        sd[sd == 0] = 1.0
        z_tr = (x_tr - mu) / sd
        if kind == "ridge":
            zc = z_tr - z_tr.mean(axis=0)
            tc = t_tr - t_tr.mean()
            gram = zc.T @ zc
            with small_lapack():
                beta = np.linalg.solve(gram + self.alpha * np.eye(gram.shape[0]), zc.T @ tc)
            b0 = t_tr.mean() - z_tr.mean(axis=0) @ beta
            predict = lambda z: (z @ beta + b0) > 0.5  # noqa: E731
        else:
            if kind == "svm":
                model = LinearSVC(C=self.C, dual=z_tr.shape[0] < z_tr.shape[1], max_iter=self.max_iter)
            else:
                model = LogisticRegression(C=self.C, max_iter=self.max_iter)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(z_tr, t_tr)
            beta, b0 = model.coef_[0].astype(np.float64), float(model.intercept_[0])
            predict = lambda z: model.decision_function(z) > 0  # noqa: E731
        coef = beta / sd  # back to W units: beta . (x - mu) / sd
        intercept = b0 - float(coef @ mu)
        score = float("nan")
        if is_val.any():
            z_val = (x[is_val] - mu) / sd
            score = float(np.mean(predict(z_val) == (target[is_val] > 0.5)))
        return coef, intercept, score

    def _info(self) -> dict[str, Any]:
        check_fitted(self)
        return {
            "label_names": {n: n for n in self.names_},
            "kinds": dict(zip(self.names_, self.kinds_)),
            "scores": {n: (None if np.isnan(s) else float(s)) for n, s in zip(self.names_, self.scores_)},
        }

    def _extras(self) -> dict[str, np.ndarray]:
        out = super()._extras()
        out["coef"] = self.coef_
        out["score"] = self.scores_
        return out


def _seed(random_state: Any) -> int | None:
    """An integer seed from sklearn's random_state conventions (None stays None: fresh randomness)."""
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return random_state
    return int(check_random_state(random_state).randint(2**31 - 1))


def _is_binary(y: np.ndarray) -> bool:
    """True when `y` takes exactly two values (a cheap look at the first rows rules most continuous labels out)."""
    if np.unique(y[:1000]).size > 2:
        return False
    return np.unique(y).size == 2


def _chunked_mean(w: np.ndarray, chunk: int) -> np.ndarray:
    total = np.zeros(w.shape[1])
    for start in range(0, w.shape[0], chunk):
        total += np.asarray(w[start : start + chunk], dtype=np.float64).sum(axis=0)
    return total / w.shape[0]
