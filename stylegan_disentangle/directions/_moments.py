"""Streaming first and second moments of (w, y), and least squares solved from them.

Why: regressing labels on 1M x 512 codes with a generic solver copies and iterates over the data many times.
The normal equations only need `X^T X` `[w_dim, w_dim]` and `X^T Y` `[w_dim, L]`, accumulated in float64 over
row chunks (one pass, BLAS syrk; the per-chunk products run in the input's precision), after shifting by the first
chunk's mean so that centering does not cancel.

Math (centered by the group's own mean m_x, m_y, n rows):
    gram  = sum (x - m_x)(x - m_x)^T        cross = sum (x - m_x)(y - m_y)^T        y_ss = sum (y - m_y)^2
Ridge with intercept (same objective as sklearn Ridge): b = (gram + alpha I)^-1 cross, intercept = m_y - m_x b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ._base import small_lapack

__all__ = ["Moments", "compute_moments", "ridge_from_moments", "r2_from_moments", "split_mask", "lasso_surrogate",
           "ridge_alpha_grid", "select_ridge_alpha"]


@dataclass
class Moments:
    """Centered moments of one group of rows (see module docstring). `cross`, `y_mean`, `y_ss` are None without y."""

    n: int
    mean: np.ndarray  # [D]
    gram: np.ndarray  # [D, D]
    y_mean: np.ndarray | None = None  # [L]
    cross: np.ndarray | None = None  # [D, L]
    y_ss: np.ndarray | None = None  # [L]

    @property
    def cov(self) -> np.ndarray:
        """`[D, D]` sample covariance (ddof 0)."""
        return self.gram / max(self.n, 1)

    @property
    def y_std(self) -> np.ndarray:
        return np.sqrt(self.y_ss / max(self.n, 1))


class _Acc:
    def __init__(self, d: int, l: int | None, shift_x: np.ndarray, shift_y: np.ndarray | None):
        self.n = 0
        self.shift_x, self.shift_y = shift_x, shift_y
        self.sx = np.zeros(d)
        self.gxx = np.zeros((d, d))
        if l is not None:
            self.sy = np.zeros(l)
            self.gxy = np.zeros((d, l))
            self.syy = np.zeros(l)

    def add(self, x: np.ndarray, y: np.ndarray | None) -> None:
        if x.shape[0] == 0:
            return
        # float32 input: chunk products in float32 (twice as fast; after the shift the entries are O(std), and the
        # float64 sums over chunks keep the relative error of the solution near 1e-7), float64 input: float64.
        dt = np.float32 if x.dtype == np.float32 else np.float64
        xs = x - self.shift_x.astype(dt)
        self.n += xs.shape[0]
        self.sx += xs.sum(axis=0, dtype=np.float64)
        self.gxx += xs.T @ xs  # syrk: numpy detects the a.T @ a pattern
        if y is not None:
            ys = y - self.shift_y
            self.sy += ys.sum(axis=0)
            self.gxy += xs.T @ ys.astype(dt, copy=False)
            self.syy += np.einsum("ij,ij->j", ys, ys)

    def finish(self) -> Moments:
        n = max(self.n, 1)
        mx = self.sx / n
        gram = self.gxx - n * np.outer(mx, mx)
        gram = (gram + gram.T) / 2
        if self.shift_y is None:
            return Moments(self.n, self.shift_x + mx, gram)
        my = self.sy / n
        cross = self.gxy - n * np.outer(mx, my)
        y_ss = np.maximum(self.syy - n * my**2, 0.0)
        return Moments(self.n, self.shift_x + mx, gram, self.shift_y + my, cross, y_ss)


def compute_moments(
    w: np.ndarray,
    y: np.ndarray | None = None,
    masks: list[np.ndarray] | None = None,
    chunk_size: int = 65536,
    desc: str = "moments",
) -> list[Moments]:
    """One pass over `w` `[N, D]` (and `y` `[N, L]`): moments of each row group in `masks` (default: all rows).

    Returns one Moments per mask. Chunks are converted to float64 one at a time, so memory stays O(chunk * D).
    """
    n, d = w.shape
    if masks is None:
        masks = [None]
    first = np.asarray(w[: min(n, 4096)], dtype=np.float64)
    shift_x = first.mean(axis=0)
    shift_y = None
    l = None
    if y is not None:
        l = y.shape[1]
        shift_y = np.asarray(y[: min(n, 4096)], dtype=np.float64).mean(axis=0)
    accs = [_Acc(d, l, shift_x, shift_y) for _ in masks]
    n_chunks = (n + chunk_size - 1) // chunk_size
    for start in tqdm(range(0, n, chunk_size), total=n_chunks, desc=desc, disable=None if n_chunks > 4 else True):
        stop = min(start + chunk_size, n)
        xc = np.asarray(w[start:stop])
        yc = None if y is None else np.asarray(y[start:stop], dtype=np.float64)
        for acc, mask in zip(accs, masks):
            if mask is None:
                acc.add(xc, yc)
            else:
                m = mask[start:stop]
                acc.add(xc[m], None if yc is None else yc[m])
    return [acc.finish() for acc in accs]


def split_mask(n: int, val_fraction: float, seed: int | None) -> np.ndarray | None:
    """Boolean `[N]` mask of validation rows (None when `val_fraction` is 0 or there are too few rows)."""
    if not val_fraction:
        return None
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if n_val < 2 or n - n_val < 2:
        return None
    rng = np.random.default_rng(seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, size=n_val, replace=False)] = True
    return mask


def ridge_from_moments(m: Moments, alpha: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge coefficients `[D, L]` and intercepts `[L]` from training moments (sklearn Ridge's objective).

    `alpha` is one penalty for every label or an `[L]` array of per-label penalties.
    """
    d = m.gram.shape[0]
    alphas = np.broadcast_to(np.asarray(alpha, dtype=np.float64), (m.cross.shape[1],))
    coef = np.empty_like(m.cross)
    for value in np.unique(alphas):
        cols = alphas == value
        a = m.gram + float(value) * np.eye(d)
        with small_lapack():
            try:
                coef[:, cols] = np.linalg.solve(a, m.cross[:, cols])
            except np.linalg.LinAlgError:
                coef[:, cols] = np.linalg.lstsq(a, m.cross[:, cols], rcond=None)[0]
    intercept = m.y_mean - m.mean @ coef
    return coef, intercept


def r2_from_moments(val: Moments, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """Held-out R^2 `[L]` of the linear model `y = x @ coef + intercept` from the validation group's moments."""
    # residual r = (y - m_y) - (x - m_x) b + (m_y - intercept - m_x b): centered part plus a constant offset.
    offset = val.y_mean - intercept - val.mean @ coef
    sse = val.y_ss - 2 * np.einsum("dl,dl->l", coef, val.cross) + np.einsum("dl,de,el->l", coef, val.gram, coef)
    sse = np.maximum(sse, 0.0) + val.n * offset**2
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(val.y_ss > 0, 1.0 - sse / val.y_ss, np.nan)


def ridge_alpha_grid(train: Moments, num: int = 33) -> np.ndarray:
    """Candidate ridge penalties: 1e-8 .. 1 times the mean eigenvalue of the training gram (log-spaced).

    Why relative: the gram grows with the row count and the code scale, the useful penalty (noise variance over
    prior weight variance) does not, so a grid anchored to the gram's trace covers it for 1k or 1M rows.
    """
    scale = max(float(np.trace(train.gram)) / max(train.gram.shape[0], 1), 1e-300)
    return scale * np.logspace(-8.0, 0.0, num)


def select_ridge_alpha(train: Moments, alphas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the penalty of `alphas` with the smallest generalized cross-validation error on `train`.

    GCV (Golub, Heath & Wahba 1979; sklearn RidgeCV's default) approximates leave-one-out error by
    `n RSS(alpha) / (n - df(alpha))^2`, df = sum lam / (lam + alpha) over the gram's eigenvalues (+1 for the
    intercept). It needs only the moments, uses every row, and is far steadier than one held-out split, whose R^2
    curve is nearly flat in alpha. One eigendecomposition makes every candidate a diagonal solve.
    Returns (alpha `[L]`, GCV error `[len(alphas), L]`); ties go to the larger penalty.
    """
    with small_lapack():
        lam, vec = np.linalg.eigh(train.gram)
    lam = np.maximum(lam, 0.0)
    proj = vec.T @ train.cross  # [D, L]: cross in the eigenbasis
    n = max(train.n, 1)
    gcv = np.empty((len(alphas), proj.shape[1]))
    for i, alpha in enumerate(alphas):
        shrink = lam / (lam + float(alpha))
        # RSS of the centered fit: y_ss - 2 b.cross + b.gram.b with b = V diag(1/(lam+alpha)) V^T cross
        rss = train.y_ss - np.einsum("dl,d->l", proj**2, (2.0 - shrink) / (lam + float(alpha)))
        df = float(shrink.sum()) + 1.0
        gcv[i] = n * np.maximum(rss, 0.0) / max(n - df, 1.0) ** 2
    best = len(alphas) - 1 - np.argmin(gcv[::-1], axis=0)  # last minimum = largest penalty on a tie
    return np.asarray(alphas, dtype=np.float64)[best], gcv


def lasso_surrogate(m: Moments, rtol: float = 1e-10) -> tuple[np.ndarray, np.ndarray]:
    """A small `[D, D]` design X' and targets Y' `[D, L]` with the same least-squares objective as the data.

    With gram = V diag(lam) V^T (centered, n rows) and m' = D surrogate rows:
        X' = sqrt(m'/n) diag(lam)^1/2 V^T,   Y' = sqrt(m'/n) diag(lam)^-1/2 V^T cross
    so that X'^T X' / m' = gram / n and X'^T Y' / m' = cross / n: sklearn's (1/2n)||y - Xw||^2 + penalty objective
    equals the surrogate's up to a constant, and Lasso / ElasticNet / MultiTaskLasso fitted on (X', Y') with the
    same alpha give the full-data solution while iterating over D rows instead of N.
    """
    with small_lapack():
        lam, vec = np.linalg.eigh(m.gram)
    keep = lam > rtol * max(float(lam.max(initial=0.0)), 1e-300)
    lam, vec = lam[keep], vec[:, keep]
    d = m.gram.shape[0]
    scale = np.sqrt(d / max(m.n, 1))
    x_s = scale * (np.sqrt(lam)[:, None] * vec.T)
    y_s = scale * ((vec.T @ m.cross) / np.sqrt(lam)[:, None])
    # Pad to D rows so the surrogate's sample count is exactly D (the dropped rows carry no signal).
    if x_s.shape[0] < d:
        pad = d - x_s.shape[0]
        x_s = np.vstack([x_s, np.zeros((pad, d))])
        y_s = np.vstack([y_s, np.zeros((pad, y_s.shape[1]))])
    return x_s, y_s
