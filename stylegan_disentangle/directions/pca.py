"""GANSpace-style directions: principal components of W samples.

Härkönen et al. (GANSpace, 2020) take the principal axes of sampled w as edit directions and apply each to a range
of ws layers. This wraps scikit-learn's PCA (or IncrementalPCA for memory-mapped banks) so its numbers are
exactly scikit-learn's; for tall data (N >= 10 * w_dim) scikit-learn's 'auto' solver builds the covariance
(`covariance_eigh`), which takes a few seconds on 1M x 512 without copying the samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.decomposition import PCA, IncrementalPCA
from tqdm.auto import tqdm

from ._base import DirectionFinder, as_w, blas_limit, check_fitted

__all__ = ["PCADirections"]


class PCADirections(DirectionFinder):
    """Principal axes of W as directions (GANSpace).

    Parameters
    ----------
    n_components : int, float or None
        Number of directions K; a float in (0, 1): the fewest directions whose explained variance reaches that
        fraction (as scikit-learn's PCA; not with `incremental`); None: min(N, w_dim).
    incremental : bool
        Use IncrementalPCA over row batches (for banks larger than memory; reads `w` batch by batch).
    batch_size : int or None
        Rows per IncrementalPCA batch (default `max(5 * w_dim, 65536)`).
    random_state : int or None
        Seed for the randomized solver.
    svd_solver : str
        Passed to sklearn PCA ('auto', 'full', 'covariance_eigh', 'randomized', 'arpack').
    blas_threads : int or None
        BLAS threads during `fit` (default 1; None = the BLAS default). See `_base.blas_limit` for why.

    Attributes
    ----------
    directions_ : ndarray [K, w_dim]  principal axes (unit rows, float32), decreasing variance.
    names_ : list[str]  'pc0', 'pc1', ...
    explained_variance_, explained_variance_ratio_ : ndarray [K]
    mean_ : ndarray [w_dim]  sample mean of W.
    std_ : ndarray [K]  std of W along each direction (sqrt of the explained variance).
    pca_ : the fitted sklearn PCA / IncrementalPCA.

    Examples
    --------
    >>> ds = PCADirections(n_components=20).fit(w).to_direction_set()
    """

    _method = "pca"

    def __init__(
        self,
        n_components: int = 10,
        incremental: bool = False,
        batch_size: int | None = None,
        random_state: int | None = None,
        svd_solver: str = "auto",
        blas_threads: int | None = 1,
    ) -> None:
        self.n_components = n_components
        self.incremental = incremental
        self.batch_size = batch_size
        self.random_state = random_state
        self.svd_solver = svd_solver
        self.blas_threads = blas_threads

    def fit(self, w: Any, y: Any = None) -> PCADirections:
        """Fit on `w` `[N, w_dim]` (`y` is ignored)."""
        with blas_limit(self.blas_threads):
            return self._fit(w)

    def _fit(self, w: Any) -> PCADirections:
        w = as_w(w)
        n, d = w.shape
        k = self._n_directions(n, d)
        if self.incremental:
            batch = self.batch_size or max(5 * d, 65536)
            pca = IncrementalPCA(n_components=k, batch_size=batch)
            bounds = list(range(0, n, batch)) + [n]
            if len(bounds) > 2 and bounds[-1] - bounds[-2] < k:  # IncrementalPCA needs >= k rows per batch
                del bounds[-2]
            pairs = list(zip(bounds[:-1], bounds[1:]))
            for start, stop in tqdm(pairs, desc="incremental PCA", disable=None if len(pairs) > 4 else True):
                pca.partial_fit(np.asarray(w[start:stop]))
        else:
            pca = PCA(n_components=k, svd_solver=self.svd_solver, random_state=self.random_state)
            pca.fit(w)
            k = int(pca.n_components_)  # (a variance fraction chose it)
        self.pca_ = pca
        self.directions_ = pca.components_.astype(np.float32)
        # Renormalise in float32 so every row passes DirectionSet's unit-norm check exactly.
        self.directions_ /= np.linalg.norm(self.directions_, axis=1, keepdims=True)
        self.explained_variance_ = np.asarray(pca.explained_variance_, dtype=np.float64)
        self.explained_variance_ratio_ = np.asarray(pca.explained_variance_ratio_, dtype=np.float64)
        self.mean_ = np.asarray(pca.mean_, dtype=np.float64)
        self.std_ = np.sqrt(np.maximum(self.explained_variance_, 0.0))
        self.names_ = [f"pc{i}" for i in range(k)]
        self.n_samples_fit_ = n
        return self

    def _n_directions(self, n: int, d: int) -> int | float:
        """K as an int in [1, min(N, w_dim)], or the variance fraction for sklearn's PCA to turn into one."""
        k, top = self.n_components, min(n, d)
        if k is None:
            return top
        if isinstance(k, (float, np.floating)) and not float(k).is_integer():
            if not 0 < k < 1:
                raise ValueError(f"n_components as a variance fraction must be in (0, 1), got {k}")
            if self.incremental:
                raise ValueError("n_components as a variance fraction needs incremental=False (an incremental fit "
                                 "cannot know the whole spectrum); give a number of directions")
            if self.svd_solver not in ("auto", "full", "covariance_eigh"):
                raise ValueError(f"n_components as a variance fraction needs svd_solver 'auto', 'full' or "
                                 f"'covariance_eigh', got {self.svd_solver!r}")
            return float(k)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer, float, np.floating)) or not 1 <= k <= top:
            raise ValueError(f"n_components must be an integer in [1, min(N, w_dim)] = [1, {top}], a variance "
                             f"fraction in (0, 1) or None, got {k!r}")
        return int(k)

    def _extras(self) -> dict[str, np.ndarray]:
        check_fitted(self)
        out = super()._extras()
        out["explained_variance"] = self.explained_variance_
        out["explained_variance_ratio"] = self.explained_variance_ratio_
        return out
