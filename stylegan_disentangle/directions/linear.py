"""Supervised linear directions: the normal of a linear model from w to a label (InterFaceGAN and its regression twin).

- Continuous labels: ridge regression `y ~ w`, solved in closed form from streamed moments (one float64 pass over
  the rows; identical to sklearn Ridge's objective) — seconds on 1M x 512.
- Binary labels (or `top_bottom_percent`): a linear classifier on the selected rows. Two SVM modes:
  * `svm_mode='interfacegan'` reproduces InterFaceGAN's `train_boundary` (Shen et al., CVPR 2020): sort by score,
    take the top and bottom `int(N * p / 100)` rows (at most N // 2) as positives / negatives, shuffle each class
    and put the first `int(chosen * (1 - val_fraction))` of each into training (their split_ratio 0.7 is
    `val_fraction=0.3`), fit `sklearn.svm.SVC(kernel='linear', C)` on the **raw** codes, and return the
    normalised `coef_`. With an integer `random_state` the split is the one `train_boundary` draws after
    `np.random.seed(random_state)`.
  * `svm_mode='standardized'` (this package's earlier behaviour): `LinearSVC` (squared hinge, liblinear) on w
    standardized per coordinate, the weights mapped back to W units. Rescaling coordinates changes the max-margin
    problem, so its normal is not InterFaceGAN's (|cos| 0.63-0.82 to it on the synthetic checkpoint's W).
  Logistic regression always works on standardized w.
`top_bottom_percent=2` is InterFaceGAN's default selection. 'interfacegan' is the default mode: against the ground
truth of the synthetic world it recovers the factor directions better at 2% (mean |cos| 0.736 vs 0.676 on 20k
samples) and ties at 10% (BENCHMARKS.md, "InterFaceGAN SVM modes").

The direction is the normalised weight vector, oriented so that moving along it increases the label.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC, LinearSVC
from sklearn.utils import check_random_state

from ._base import DirectionFinder, as_labels, as_w, blas_limit, check_fitted, small_lapack, unit_rows, w_std_along
from ._moments import (
    compute_moments,
    r2_from_moments,
    ridge_alpha_grid,
    ridge_from_moments,
    select_ridge_alpha,
    split_mask,
)
from ._robust import huber_from_rows

__all__ = ["LinearDirections"]

_METHODS = ("auto", "ridge", "svm", "logistic")
_SVM_MODES = ("interfacegan", "standardized")
_LOSSES = ("squared", "huber")


class LinearDirections(DirectionFinder):
    """One direction per label: the normalised weights of a linear model `label ~ w`.

    Parameters
    ----------
    method : {'auto', 'ridge', 'svm', 'logistic'}
        'auto' = ridge for continuous labels, linear SVM for binary labels or with `top_bottom_percent`.
        A classifier given a continuous label without `top_bottom_percent` splits it at the median
        (InterFaceGAN's selection with ratio 0.5).
    alpha : float or 'auto'
        Ridge penalty (sklearn Ridge's, on the sum of squared errors). 'auto' picks it per label by generalized
        cross-validation on the training rows (sklearn RidgeCV's criterion, `_moments.select_ridge_alpha`) from
        33 log-spaced candidates, 1e-8 to 1 times the mean eigenvalue of the training gram. A fixed penalty means
        more or less depending on the row count and the units of the codes; the chosen one follows them, and it
        grows with the label's noise (a labeler's labels, not a ground truth). The chosen penalties are `alpha_`.
    loss : {'squared', 'huber'}
        Loss of the ridge fits. 'squared' is ridge regression solved from the streamed moments. 'huber' refits
        each label with the Huber loss from the ridge solution (`_robust.huber_from_rows`: the scale estimated
        jointly, the penalty inside it, so that residuals within `epsilon` scales give exactly ridge), on the
        training rows (at most `max_samples`, held in memory as float64): for labels with heavy-tailed errors (a
        labeler's mis-read minority), which least squares lets pull the direction. With `alpha='auto'` the
        penalty is chosen again by GCV on the Huber fit's weights (`alpha_`). `scores_` is then the Huber fit's
        held-out R^2 (same split). Not with `top_bottom_percent`.
    epsilon : float
        Huber threshold in scales (>= 1; 1.35 is the usual choice, 95% efficiency on Gaussian errors).
    C : float
        Inverse regularisation of the SVM (raw w in 'interfacegan' mode, standardized w in 'standardized' mode)
        and of logistic regression (standardized w). InterFaceGAN uses sklearn's default, 1.
    svm_mode : {'interfacegan', 'standardized'}
        How method 'svm' fits (see the module docstring). 'interfacegan': InterFaceGAN's `train_boundary` —
        top/bottom selection (`int(N * p / 100)` per class, at most N // 2), a per-class train/validation split,
        `SVC(kernel='linear', C)` on the raw codes, solved to libsvm's default tolerance without an iteration cap.
        A binary label uses each of its two classes whole, split the same way. 'standardized': `LinearSVC` on
        per-coordinate standardized w (the default before issue 9), the validation rows drawn at random from all
        selected rows.
    top_bottom_percent : float or None
        Keep only the top p% (positive) and bottom p% (negative) samples of each label and fit a classifier
        (InterFaceGAN uses 2). With method 'ridge' the 0/1 targets are regressed instead.
    val_fraction : float or None
        Fraction of the (selected) rows held out to compute `scores_`; 0 disables it. None = 0.3 for the
        'interfacegan' SVM (InterFaceGAN's split_ratio 0.7), 0.1 for everything else.
    invalid_value : float or None
        Rows whose label equals this value are dropped before selection (InterFaceGAN's `invalid_value`);
        classifiers and top/bottom selection only.
    max_samples : int or None
        Classifiers and the Huber refit use at most this many randomly chosen rows (libsvm / liblinear / lbfgs on
        1M rows is slow and a linear boundary in 512-d is well determined by 100k points). In 'interfacegan' mode
        each class is subsampled in proportion (with a warning, since the original fits on every selected row).
    max_iter : int
        Iteration limit of LinearSVC / LogisticRegression (the 'interfacegan' SVC runs to convergence).
    random_state : int or None
        Seed for the validation split and subsampling ('interfacegan': `np.random.RandomState(seed)`, restarted
        for each label, shuffles the positives and then the negatives).
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
    scores_ : ndarray [L]  held-out R^2 (ridge) or validation accuracy (classifiers); NaN when no split.
    alpha_ : ndarray [L]  the ridge penalty used per label (`alpha`, or the one `alpha='auto'` chose); NaN for
        labels fitted by a classifier or by ridge on top/bottom rows.
    remaining_scores_ : ndarray [L]  'interfacegan' with top/bottom selection: accuracy on the rows not selected,
        labelled positive when the score is >= the midpoint of the highest and lowest score (InterFaceGAN's
        "remaining set"); NaN otherwise.
    n_train_, n_val_ : ndarray [L] int  rows (both classes) the model was fitted / validated on.
    kinds_ : list[str]  'ridge' / 'svm' / 'logistic' actually used per label.
    mean_ : ndarray [w_dim];  std_ : ndarray [L] std of W along each direction.

    Examples
    --------
    >>> est = LinearDirections(method="svm", top_bottom_percent=2, random_state=0).fit(w, {"smile": scores})
    >>> ds = est.to_direction_set()
    """

    _method = "linear"

    def __init__(
        self,
        method: str = "auto",
        alpha: float | str = 1.0,
        loss: str = "squared",
        epsilon: float = 1.35,
        C: float = 1.0,
        svm_mode: str = "interfacegan",
        top_bottom_percent: float | None = None,
        val_fraction: float | None = None,
        invalid_value: float | None = None,
        max_samples: int | None = 100_000,
        max_iter: int = 1000,
        random_state: int | None = None,
        chunk_size: int = 65536,
        blas_threads: int | None = 1,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.loss = loss
        self.epsilon = epsilon
        self.C = C
        self.svm_mode = svm_mode
        self.top_bottom_percent = top_bottom_percent
        self.val_fraction = val_fraction
        self.invalid_value = invalid_value
        self.max_samples = max_samples
        self.max_iter = max_iter
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.blas_threads = blas_threads

    def fit(self, w: Any, y: Any, label_names: Sequence[str] | None = None) -> LinearDirections:
        """Fit on `w` `[N, w_dim]` and labels `y` (`[N]`, `[N, L]` or dict name -> `[N]`)."""
        with blas_limit(self.blas_threads):
            return self._fit(w, y, label_names)

    def _val_fraction(self, kind: str) -> float:
        if self.val_fraction is None:
            return 0.3 if kind == "svm" and self.svm_mode == "interfacegan" else 0.1
        return float(self.val_fraction)

    def _check_params(self) -> None:
        """The constructor's settings, checked at fit time as scikit-learn does."""
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.svm_mode not in _SVM_MODES:
            raise ValueError(f"svm_mode must be one of {_SVM_MODES}, got {self.svm_mode!r}")
        p = self.top_bottom_percent
        if p is not None and not 0 < p <= 50:
            raise ValueError(f"top_bottom_percent must be in (0, 50], got {p}")
        if self.val_fraction is not None and not 0 <= self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        auto = isinstance(self.alpha, str)
        numeric = isinstance(self.alpha, (int, float, np.integer, np.floating)) and not isinstance(self.alpha, bool)
        if (auto and self.alpha != "auto") or not (auto or (numeric and float(self.alpha) >= 0)):
            raise ValueError(f"alpha must be a number >= 0 or 'auto', got {self.alpha!r}")
        if self.loss not in _LOSSES:
            raise ValueError(f"loss must be one of {_LOSSES}, got {self.loss!r}")
        if isinstance(self.epsilon, bool) or not (
                isinstance(self.epsilon, (int, float, np.integer, np.floating)) and self.epsilon >= 1):
            raise ValueError(f"epsilon must be a number >= 1 (the Huber threshold in scales), got {self.epsilon!r}")
        if self.loss == "huber" and p is not None:
            raise ValueError("loss='huber' refits the continuous ridge fit; it does not apply with top_bottom_percent")
        if auto and p is not None:
            raise ValueError("alpha='auto' chooses the penalty of the continuous ridge fit; give a number with "
                             "top_bottom_percent")

    def _kinds(self, labels: np.ndarray) -> list[str]:
        """Each label's fit: 'ridge', 'svm' or 'logistic' (method 'auto': a classifier for a binary label or a
        top/bottom selection, else ridge)."""
        if self.method in ("ridge", "svm", "logistic"):
            return [self.method] * labels.shape[1]
        return ["svm" if (_is_binary(labels[:, j]) or self.top_bottom_percent is not None) else "ridge"
                for j in range(labels.shape[1])]

    def _fit(self, w: Any, y: Any, label_names: Sequence[str] | None) -> LinearDirections:
        self._check_params()
        p = self.top_bottom_percent
        w = as_w(w)
        labels, names = as_labels(y, w.shape[0], label_names)
        n, d = w.shape
        for j, name in enumerate(names):
            if np.ptp(labels[:, j]) == 0:
                raise ValueError(f"label {name!r} is constant; it defines no direction")
        kinds = self._kinds(labels)

        n_labels = labels.shape[1]
        coef = np.zeros((n_labels, d))
        intercept = np.zeros(n_labels)
        scores = np.full(n_labels, np.nan)
        alphas = np.full(n_labels, np.nan)
        remaining = np.full(n_labels, np.nan)
        n_train = np.zeros(n_labels, dtype=np.int64)
        n_val = np.zeros(n_labels, dtype=np.int64)
        ridge_cols = [j for j, k in enumerate(kinds) if k == "ridge" and p is None]
        if ridge_cols and self.invalid_value is not None:
            raise ValueError("invalid_value applies to classifiers and top/bottom selection; drop the invalid rows "
                             f"before fitting ridge on {[names[j] for j in ridge_cols]}")
        mean = None
        if ridge_cols:
            mean, std_from_gram, n_tr = self._fit_ridge(w, labels[:, ridge_cols], ridge_cols, coef, intercept, scores,
                                                        alphas, [names[j] for j in ridge_cols])
            n_train[ridge_cols], n_val[ridge_cols] = n_tr, n - n_tr
        for j, kind in enumerate(kinds):
            if kind == "ridge" and p is None:
                continue
            if kind == "svm" and self.svm_mode == "interfacegan":
                fit = self._fit_interfacegan(w, labels[:, j], names[j])
            else:
                fit = self._fit_selected(w, labels[:, j], kind, names[j])
            coef[j], intercept[j], scores[j], n_train[j], n_val[j], remaining[j] = fit

        self.coef_ = coef
        self.intercept_ = intercept
        self.scores_ = scores
        self.alpha_ = alphas
        self.remaining_scores_ = remaining
        self.n_train_ = n_train
        self.n_val_ = n_val
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

    def _fit_ridge(self, w, labels, cols, coef, intercept, scores, alphas, names):
        val = split_mask(w.shape[0], self._val_fraction("ridge"), _seed(self.random_state))
        if val is None:
            (train,) = compute_moments(w, labels, chunk_size=self.chunk_size, desc="ridge moments")
            val_m = None
        else:
            train, val_m = compute_moments(w, labels, masks=[~val, val], chunk_size=self.chunk_size, desc="ridge")
        alpha = select_ridge_alpha(train, ridge_alpha_grid(train))[0] if self.alpha == "auto" else float(self.alpha)
        alphas[cols] = alpha
        b, b0 = ridge_from_moments(train, alpha)
        if self.loss == "huber":
            rows = np.flatnonzero(~val) if val is not None else np.arange(w.shape[0])
            if self.max_samples is not None and rows.size > int(self.max_samples):
                rng = np.random.default_rng(_seed(self.random_state))
                rows = np.sort(rng.choice(rows, size=int(self.max_samples), replace=False))
            b, b0, alphas[cols] = huber_from_rows(_gather(w, rows), labels[rows], b, b0, alpha,
                                                  epsilon=self.epsilon, select_alpha=self.alpha == "auto",
                                                  names=names)
        coef[cols] = b.T
        intercept[cols] = b0
        if val_m is not None:
            scores[cols] = r2_from_moments(val_m, b, b0)
        total_mean = train.mean if val_m is None else (train.mean * train.n + val_m.mean * val_m.n) / w.shape[0]

        def std_from_gram(dirs: np.ndarray) -> np.ndarray:
            dirs = dirs.astype(np.float64)
            return np.sqrt(np.maximum(np.einsum("kd,de,ke->k", dirs, train.cov, dirs), 0.0))

        return total_mean, std_from_gram, int(train.n)

    def _valid_rows(self, y: np.ndarray, name: str) -> np.ndarray:
        """Indices of the rows kept by `invalid_value` (all rows when it is None)."""
        if self.invalid_value is None:
            return np.arange(y.shape[0])
        keep = np.flatnonzero(y != self.invalid_value)
        if keep.size < 4:
            raise ValueError(f"label {name!r}: {keep.size} rows remain after dropping invalid_value="
                             f"{self.invalid_value}; need at least 4")
        if np.ptp(y[keep]) == 0:
            raise ValueError(f"label {name!r} is constant ({y[keep][0]:g}) once the rows of invalid_value="
                             f"{self.invalid_value} are dropped; it defines no direction")
        return keep

    def _fit_interfacegan(self, w: np.ndarray, y: np.ndarray, name: str) -> tuple:
        """InterFaceGAN's `train_boundary` for one label: returns coef, b, val acc, n_train, n_val, remaining acc."""
        valid = self._valid_rows(y, name)
        y = y[valid]
        n = valid.size
        rs = np.random.RandomState(_seed(self.random_state))
        p = self.top_bottom_percent
        remaining_rows = remaining_target = None
        if p is None and _is_binary(y):  # the two classes whole
            pos, neg = np.flatnonzero(y == y.max()), np.flatnonzero(y != y.max())
        else:  # top / bottom `chosen` rows by descending score (the median split when p is None)
            ratio = 0.5 if p is None else p / 100.0
            chosen = min(int(n * ratio), n // 2)
            if chosen < 1:
                raise ValueError(f"label {name!r}: top_bottom_percent={p} of {n} rows selects no sample")
            desc = np.argsort(y, kind="stable")[::-1]
            pos, neg = desc[:chosen], desc[n - chosen :]
            if n > 2 * chosen:
                remaining_rows = desc[chosen : n - chosen]
                remaining_target = y[remaining_rows] >= (y[desc[0]] + y[desc[-1]]) / 2
        if self.max_samples is not None and pos.size + neg.size > self.max_samples:
            keep = self.max_samples / (pos.size + neg.size)
            warnings.warn(f"label {name!r}: fitting the SVC on {keep:.1%} of the {pos.size + neg.size} selected rows "
                          f"(max_samples={self.max_samples}); InterFaceGAN uses all of them", stacklevel=4)
            pos = pos[np.sort(rs.choice(pos.size, max(2, int(pos.size * keep)), replace=False))]
            neg = neg[np.sort(rs.choice(neg.size, max(2, int(neg.size * keep)), replace=False))]
        split = 1.0 - self._val_fraction("svm")
        n_tr_pos, n_tr_neg = int(pos.size * split), int(neg.size * split)
        if min(n_tr_pos, n_tr_neg) < 1:
            raise ValueError(f"label {name!r}: {pos.size} positive / {neg.size} negative rows leave an empty "
                             "training class; use more samples or a larger top_bottom_percent")
        pos, neg = pos[rs.permutation(pos.size)], neg[rs.permutation(neg.size)]  # positives first, as the original
        train = np.concatenate([pos[:n_tr_pos], neg[:n_tr_neg]])
        val = np.concatenate([pos[n_tr_pos:], neg[n_tr_neg:]])
        t_train = np.r_[np.ones(n_tr_pos), np.zeros(n_tr_neg)]
        t_val = np.r_[np.ones(pos.size - n_tr_pos), np.zeros(neg.size - n_tr_neg)]
        model = SVC(kernel="linear", C=self.C).fit(_gather(w, valid[train]), t_train)
        coef, b0 = model.coef_[0].astype(np.float64), float(model.intercept_[0])
        score = float("nan")
        if val.size:
            score = float(np.mean((_gather(w, valid[val]) @ coef + b0 > 0) == (t_val > 0.5)))
        remaining_score = float("nan")
        if remaining_rows is not None:
            correct = 0
            for start in range(0, remaining_rows.size, self.chunk_size):
                rows = remaining_rows[start : start + self.chunk_size]
                predicted = _gather(w, valid[rows]) @ coef + b0 > 0
                correct += int(np.sum(predicted == remaining_target[start : start + rows.size]))
            remaining_score = correct / remaining_rows.size
        return coef, b0, score, train.size, val.size, remaining_score

    def _fit_selected(self, w: np.ndarray, y: np.ndarray, kind: str, name: str) -> tuple:
        """Standardized classifier (or ridge on 0/1) for one label on its top/bottom rows, subsampled.

        Returns coef, b, validation score, n_train, n_val, NaN (no remaining-set score).
        """
        rng = np.random.default_rng(_seed(self.random_state))
        valid = self._valid_rows(y, name)
        y = y[valid]
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
        rows, target = valid[rows[order]], target[order]
        x = np.asarray(w[rows], dtype=np.float64)
        is_val = np.zeros(rows.size, dtype=bool)
        val_fraction = self._val_fraction(kind)
        n_val = int(round(rows.size * val_fraction)) if val_fraction else 0
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
        return coef, intercept, score, int((~is_val).sum()), int(is_val.sum()), float("nan")

    def _info(self) -> dict[str, Any]:
        check_fitted(self)
        return {
            "label_names": {n: n for n in self.names_},
            "kinds": dict(zip(self.names_, self.kinds_)),
            "scores": {n: (None if np.isnan(s) else float(s)) for n, s in zip(self.names_, self.scores_)},
            "remaining_scores": {n: (None if np.isnan(s) else float(s))
                                 for n, s in zip(self.names_, self.remaining_scores_)},
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


def _gather(w: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """`w[rows]` as float64 in the order of `rows`, read in ascending row order (faster on memmaps)."""
    order = np.argsort(rows, kind="stable")
    out = np.empty((rows.size, w.shape[1]), dtype=np.float64)
    out[order] = w[rows[order]]
    return out
