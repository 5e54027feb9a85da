"""Sparse directions: few W coordinates per label (Lasso family), or localized label-map atoms (sparse coding).

Two families, after Zheng et al. (CVPR 2021), who regress 3D semantics on w and use sparse representation learning
on the depth / albedo maps to get localized edits:

- 'lasso' / 'elasticnet' / 'multitask': sparse linear regression `label ~ w` for each label (MultiTaskLasso shares
  one support across labels). The support (`support_`) says which W coordinates carry the label. Solved from
  streamed moments: one pass over the rows builds `X^T X` and `X^T Y`, then scikit-learn's coordinate
  descent runs on an equivalent `[w_dim, w_dim]` surrogate design (see `_moments.lasso_surrogate`), so 1M rows cost
  about what a ridge fit does. Labels are scaled to unit std first (`normalize_labels`) so one `alpha` suits all.
- 'dictionary' / 'sparse_pca': labels are high-dimensional maps `[N, L]` (e.g. flattened 64x64 depth). Learn K
  atoms of the centred maps — sparse *codes* ('dictionary': scikit-learn's DictionaryLearning objective, solved by
  the vectorized `_dictionary.learn_dictionary`) or sparse, spatially localized *atoms* ('sparse_pca': SparsePCA) —
  then ridge-regress each atom's code on w; the normalised coefficients are the directions and `components_`
  `[K, L]` the footprint of each (reshape with `label_shape_` to plot).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.decomposition import SparsePCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, Lasso, MultiTaskLasso

from ._base import DirectionFinder, _to_numpy, as_labels, as_w, blas_limit, canonical_sign, check_fitted
from ._dictionary import learn_dictionary
from ._moments import compute_moments, lasso_surrogate, r2_from_moments, ridge_from_moments, split_mask
from .linear import _seed

__all__ = ["NoDirectionError", "SparseDirections"]


class NoDirectionError(ValueError):
    """Every coefficient of a sparse fit came out zero: no direction at this alpha (callers that fit several maps
    can drop the one that gives none)."""

_METHODS = ("lasso", "elasticnet", "multitask", "dictionary", "sparse_pca")


class SparseDirections(DirectionFinder):
    """Sparse directions in W: Lasso / ElasticNet / MultiTaskLasso per label, or sparse coding of label maps.

    Parameters
    ----------
    method : {'lasso', 'elasticnet', 'multitask', 'dictionary', 'sparse_pca'}
    alpha : float
        L1 strength of the regression (sklearn's: objective `1/(2N) ||y - w b||^2 + alpha * penalty`, on labels
        scaled to unit std when `normalize_labels`).
    l1_ratio : float
        ElasticNet mixing (1 = Lasso).
    n_components : int or None
        Atoms K of 'dictionary' / 'sparse_pca' (default 10).
    code_alpha : float
        Sparsity of the codes ('dictionary') or of the atoms ('sparse_pca').
    ridge_alpha : float
        Ridge penalty when regressing atom codes on w.
    normalize_labels : bool
        Scale each label to unit std before the Lasso family (coefficients are reported in label units).
    val_fraction : float
        Held-out fraction for `scores_` (R^2); 0 disables.
    max_samples : int
        Rows used to learn atoms and regress their codes ('dictionary' / 'sparse_pca').
    max_iter, tol : coordinate-descent limits of the Lasso family.
    dict_max_iter : int
        Iteration limit of the dictionary learning / sparse PCA (both full-batch, on at most `max_samples` rows:
        the mini-batch variants stop early or merge neighbouring atoms on such data).
    random_state : int or None
    chunk_size : int
        Rows per chunk of the streamed moments.
    blas_threads : int or None
        BLAS threads during `fit` (default 1; None = the BLAS default). See `_base.blas_limit` for why.

    Attributes
    ----------
    directions_ : ndarray [K, w_dim]  unit rows (float32).
    names_ : list[str]  label names (Lasso family) or '<label>_atom<i>'.
    coef_ : ndarray [K, w_dim]  coefficients in W units (label units per unit w).
    support_ : list[ndarray]  nonzero W coordinates of each direction;  support_mask_ : bool [K, w_dim].
    scores_ : ndarray [K]  held-out R^2.
    components_ : ndarray [K, L]  atoms ('dictionary' / 'sparse_pca' only);  label_shape_ : shape of one label map.
    n_iter_ : int  iterations of the dictionary learning / sparse PCA.
    label_center_ : ndarray [L]  baseline map subtracted before the decomposition: per-pixel median
        ('dictionary') or mean ('sparse_pca').
    dropped_ : list[str]  labels / atoms whose coefficients were all zero (no direction; lower alpha).
    mean_ : ndarray [w_dim];  std_ : ndarray [K].

    Examples
    --------
    >>> est = SparseDirections("lasso", alpha=0.02).fit(w, {"yaw": yaw, "smile": smile})
    >>> est.support_[0]          # W coordinates that move yaw
    >>> SparseDirections("sparse_pca", n_components=8).fit(w, {"depth": depth_maps})  # depth_maps [N, 64, 64]
    """

    _method = "sparse"

    def __init__(
        self,
        method: str = "lasso",
        alpha: float = 0.01,
        l1_ratio: float = 0.5,
        n_components: int | None = None,
        code_alpha: float = 1.0,
        ridge_alpha: float = 1.0,
        normalize_labels: bool = True,
        val_fraction: float = 0.1,
        max_samples: int = 20_000,
        max_iter: int = 5000,
        tol: float = 1e-6,
        dict_max_iter: int = 100,
        random_state: int | None = None,
        chunk_size: int = 65536,
        blas_threads: int | None = 1,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.n_components = n_components
        self.code_alpha = code_alpha
        self.ridge_alpha = ridge_alpha
        self.normalize_labels = normalize_labels
        self.val_fraction = val_fraction
        self.max_samples = max_samples
        self.max_iter = max_iter
        self.tol = tol
        self.dict_max_iter = dict_max_iter
        self.random_state = random_state
        self.chunk_size = chunk_size
        self.blas_threads = blas_threads

    def fit(self, w: Any, y: Any, label_names: Sequence[str] | None = None) -> SparseDirections:
        """Fit on `w` `[N, w_dim]` and labels `y` (`[N]`, `[N, L]`, `[N, H, W]` maps, or a dict of them)."""
        with blas_limit(self.blas_threads):
            return self._fit(w, y, label_names)

    def _fit(self, w: Any, y: Any, label_names: Sequence[str] | None) -> SparseDirections:
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        w = as_w(w)
        for stale in ("components_", "label_shape_", "label_center_", "n_iter_"):  # from an earlier fit
            if hasattr(self, stale):
                delattr(self, stale)
        if self.method in ("dictionary", "sparse_pca"):
            self._fit_atoms(w, y)
        else:
            labels, names = as_labels(y, w.shape[0], label_names)
            self._fit_regression(w, labels, names)
        self.n_samples_fit_ = w.shape[0]
        return self

    # ------------------------------------------------------------------ Lasso family
    def _fit_regression(self, w: np.ndarray, labels: np.ndarray, names: list[str]) -> None:
        val = split_mask(w.shape[0], self.val_fraction, _seed(self.random_state))
        masks = None if val is None else [~val, val]
        moments = compute_moments(w, labels, masks=masks, chunk_size=self.chunk_size, desc=f"{self.method} moments")
        train = moments[0]
        scale = train.y_std.copy() if self.normalize_labels else np.ones(labels.shape[1])
        constant = scale == 0
        if constant.any():
            raise ValueError(f"labels {[n for n, c in zip(names, constant) if c]} are constant")
        train_scaled = type(train)(train.n, train.mean, train.gram, train.y_mean, train.cross / scale, train.y_ss)
        x_s, y_s = lasso_surrogate(train_scaled)
        kw = dict(alpha=self.alpha, fit_intercept=False, max_iter=self.max_iter, tol=self.tol)
        if self.method == "lasso":
            model = Lasso(**kw)
        elif self.method == "elasticnet":
            model = ElasticNet(l1_ratio=self.l1_ratio, **kw)
        else:
            model = MultiTaskLasso(**kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_s, y_s if self.method == "multitask" or y_s.shape[1] > 1 else y_s[:, 0])
        coef = np.atleast_2d(model.coef_) * scale[:, None]  # [L, D] in label units
        intercept = train.y_mean - train.mean @ coef.T
        scores = r2_from_moments(moments[1], coef.T, intercept) if val is not None else np.full(len(names), np.nan)
        self._set_directions(w, coef, intercept, scores, names, train.mean, train.cov)

    # ------------------------------------------------------------------ sparse coding of label maps
    def _fit_atoms(self, w: np.ndarray, y: Any) -> None:
        n = w.shape[0]
        if isinstance(y, Mapping):
            if len(y) != 1:
                raise ValueError(f"'{self.method}' learns atoms of one label map; got {len(y)} labels {list(y)}")
            ((base, maps),) = y.items()
        else:
            base, maps = "label", y
        maps = _to_numpy(maps)
        if maps.shape[0] != n:
            raise ValueError(f"label maps have {maps.shape[0]} rows but w has {n}")
        self.label_shape_ = tuple(int(s) for s in maps.shape[1:])
        maps = maps.reshape(n, -1)
        k = 10 if self.n_components is None else int(self.n_components)
        if not 1 <= k <= maps.shape[1]:
            raise ValueError(f"n_components must be in [1, {maps.shape[1]}], got {k}")
        rng = np.random.default_rng(_seed(self.random_state))
        rows = np.arange(n) if n <= self.max_samples else np.sort(rng.choice(n, size=self.max_samples, replace=False))
        y_sub = np.asarray(maps[rows], dtype=np.float32)
        if not np.isfinite(y_sub).all():
            raise ValueError("label maps contain NaN or inf")
        # Baseline map: the median for sparse codes (deviations that are rarely active stay sparse; the mean would
        # make every code dense), the mean for sparse PCA (a centred decomposition).
        if self.method == "dictionary":
            self.label_center_ = np.median(y_sub, axis=0).astype(np.float64)
        else:
            self.label_center_ = y_sub.mean(axis=0, dtype=np.float64)
        y_c = y_sub - self.label_center_.astype(np.float32)
        seed = _seed(self.random_state)
        if self.method == "dictionary":
            atoms, codes, self.n_iter_ = learn_dictionary(
                y_c, k, self.code_alpha, max_iter=self.dict_max_iter, seed=seed
            )
        else:
            model = SparsePCA(n_components=k, alpha=self.code_alpha, max_iter=self.dict_max_iter, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(y_c)
                codes = np.asarray(model.transform(y_c), dtype=np.float64)
            atoms = np.asarray(model.components_, dtype=np.float64)
            self.n_iter_ = int(model.n_iter_)
        signed = canonical_sign(atoms)
        flip = np.sign(np.sum(signed * atoms, axis=1))
        flip[flip == 0] = 1
        atoms, codes = atoms * flip[:, None], codes * flip[None, :]
        self.components_ = atoms.astype(np.float32)

        w_sub = np.asarray(w[rows], dtype=np.float64)
        val = split_mask(rows.size, self.val_fraction, seed)
        masks = None if val is None else [~val, val]
        moments = compute_moments(w_sub, codes, masks=masks, chunk_size=self.chunk_size, desc="atom codes")
        coef, intercept = ridge_from_moments(moments[0], self.ridge_alpha)
        scores = r2_from_moments(moments[1], coef, intercept) if val is not None else np.full(k, np.nan)
        names = [f"{base}_atom{i}" for i in range(k)]
        self._set_directions(w, coef.T, intercept, scores, names, moments[0].mean, moments[0].cov)

    # ------------------------------------------------------------------ shared
    def _set_directions(self, w, coef, intercept, scores, names, mean, cov) -> None:
        norms = np.linalg.norm(coef, axis=1)
        keep = norms > 1e-12 * max(1.0, float(norms.max(initial=0.0)))
        self.dropped_ = [n for n, kept in zip(names, keep) if not kept]
        if self.dropped_:
            warnings.warn(
                f"{self.method}: {self.dropped_} got all-zero coefficients (no direction); lower alpha to keep them",
                stacklevel=3,
            )
        if not keep.any():
            raise NoDirectionError(f"{self.method}: every coefficient is zero at alpha={self.alpha}; lower alpha")
        if hasattr(self, "components_"):
            self.components_ = self.components_[keep]
        coef, intercept, scores = coef[keep], intercept[keep], scores[keep]
        self.names_ = [n for n, kept in zip(names, keep) if kept]
        self.coef_ = coef
        self.intercept_ = intercept
        self.scores_ = scores
        dirs = (coef / np.linalg.norm(coef, axis=1, keepdims=True)).astype(np.float32)
        self.directions_ = dirs / np.linalg.norm(dirs, axis=1, keepdims=True)
        self.support_mask_ = coef != 0
        self.support_ = [np.flatnonzero(row) for row in self.support_mask_]
        self.mean_ = np.asarray(mean, dtype=np.float64)
        d64 = self.directions_.astype(np.float64)
        self.std_ = np.sqrt(np.maximum(np.einsum("kd,de,ke->k", d64, cov, d64), 0.0))

    def _extras(self) -> dict[str, np.ndarray]:
        check_fitted(self)
        out = super()._extras()
        out["coef"] = self.coef_
        out["support"] = self.support_mask_
        out["score"] = self.scores_
        if hasattr(self, "components_"):
            out["components"] = self.components_
            out["global_label_center"] = self.label_center_
        return out

    def _info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"support_size": {n: int(s.size) for n, s in zip(self.names_, self.support_)}}
        if hasattr(self, "label_shape_"):
            out["label_shape"] = list(self.label_shape_)
        if self.dropped_:
            out["dropped"] = list(self.dropped_)
        return out
