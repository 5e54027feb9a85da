"""Huber regression of labels on w: the robust twin of the moments ridge, for labels whose errors are heavy-tailed.

Why: a labeler's labels (the 3D decomposer's yaw, its light) are not a ground truth. Most faces are read closely and
a minority badly (a mis-read pose, a light taken from the hair colour), so the residuals of `label ~ w` have a narrow
core and long tails. Least squares lets the tails pull the direction; the Huber loss (quadratic within `epsilon`
scales of the fit, linear beyond) keeps the core's answer.

Objective per label, with the scale `sigma` estimated jointly (Owen's concomitant form, as sklearn's HuberRegressor)
and the ridge penalty put inside it the same way:

    n sigma + sum_i sigma H(r_i / sigma) + alpha ||b||^2 / sigma,   H(t) = t^2 (|t| <= epsilon), 2 epsilon |t| - eps^2

It is jointly convex (perspectives of convex functions). Where every residual is within `epsilon` scales, the
minimising b is exactly ridge's with the same `alpha` (so a label that is linear in w keeps the ridge solution);
sklearn's HuberRegressor puts `alpha ||b||^2` outside the scale, which makes its penalty a different one for every
label's noise level. Solved by scipy's L-BFGS-B for all labels at once (they are separable), from the ridge solution.

A penalty chosen by GCV on the ridge fit is chosen for the tails as well. With `select_alpha`, it is chosen again
by GCV on the Huber fit's weighted least-squares form (IRLS weights `min(1, epsilon sigma / |r|)`), and the Huber
fit is solved once more at that penalty.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import minimize
from sklearn.exceptions import ConvergenceWarning

from ._moments import Moments, ridge_alpha_grid, select_ridge_alpha

__all__ = ["huber_from_rows", "mad_scale"]


def mad_scale(resid: np.ndarray) -> np.ndarray:
    """Robust residual scale per column: 1.4826 x the median absolute deviation (the sd for Gaussian errors)."""
    resid = np.asarray(resid, dtype=np.float64)
    return 1.4826 * np.median(np.abs(resid - np.median(resid, axis=0)), axis=0)


def _solve(xs: np.ndarray, z: np.ndarray, start: np.ndarray, penalty: np.ndarray, epsilon: float,
           max_iter: int) -> tuple[np.ndarray, bool]:
    """Minimise the module's objective / n over `[D + 2, L]` (coefficients, intercept, scale per label).

    `start` is `[D + 2, L]`; z is in units of a first scale estimate, so the scale starts near 1.
    """
    n, d = xs.shape
    n_labels = z.shape[1]

    def loss_and_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        p = flat.reshape(d + 2, n_labels)
        b, c, sigma = p[:d], p[d], p[d + 1]
        t = (z - xs @ b - c) / sigma
        a = np.abs(t)
        inside = a <= epsilon
        b_ss = (b * b).sum(axis=0)
        loss = (n * sigma + sigma * np.where(inside, t * t, 2.0 * epsilon * a - epsilon**2).sum(axis=0)
                + penalty * b_ss / sigma).sum()
        psi = np.clip(2.0 * t, -2.0 * epsilon, 2.0 * epsilon)
        grad = np.empty_like(p)
        grad[:d] = -(xs.T @ psi) + 2.0 * penalty * b / sigma
        grad[d] = -psi.sum(axis=0)
        grad[d + 1] = n - np.where(inside, t * t, epsilon**2).sum(axis=0) - penalty * b_ss / sigma**2
        return float(loss) / n, grad.ravel() / n

    bounds = [(None, None)] * ((d + 1) * n_labels) + [(1e-12, None)] * n_labels
    res = minimize(loss_and_grad, start.ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": int(max_iter), "gtol": 1e-9, "ftol": 1e-12})
    return res.x.reshape(d + 2, n_labels), bool(res.success)


def _weighted_gcv_alpha(xs: np.ndarray, z: np.ndarray, weights: np.ndarray) -> float:
    """GCV penalty (`_moments.select_ridge_alpha`) of the weighted least squares `z ~ xs` (one label)."""
    total = float(weights.sum())
    mean = weights @ xs / total
    xc = xs - mean
    z_mean = float(weights @ z / total)
    zc = z - z_mean
    wx = xc * weights[:, None]
    m = Moments(n=int(round(total)), mean=mean, gram=wx.T @ xc, y_mean=np.array([z_mean]),
                cross=(wx.T @ zc)[:, None], y_ss=np.array([float(weights @ zc**2)]))
    return float(select_ridge_alpha(m, ridge_alpha_grid(m))[0][0])


def huber_from_rows(x: np.ndarray, y: np.ndarray, ridge_coef: np.ndarray, ridge_intercept: np.ndarray,
                    alpha: np.ndarray | float, epsilon: float = 1.35, select_alpha: bool = False,
                    max_iter: int = 1000, names: list[str] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huber coefficients `[D, L]`, intercepts `[L]` and penalties `[L]` of `y [N, L] ~ x [N, D]`.

    `ridge_coef` `[D, L]` / `ridge_intercept` `[L]`: the ridge solution with penalty `alpha` (scalar or `[L]`) on
    the same rows, the starting point. `select_alpha`: choose the penalty again by GCV on the Huber fit's weights
    (module docstring). A label the ridge fits exactly (zero residual scale) keeps the ridge solution.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(x.shape[0], -1)
    n, d = x.shape
    n_labels = y.shape[1]
    alphas = np.array(np.broadcast_to(np.asarray(alpha, dtype=np.float64), (n_labels,)))
    names = names or [f"label{j}" for j in range(n_labels)]
    coef = np.array(ridge_coef, dtype=np.float64).reshape(d, n_labels)
    intercept = np.array(ridge_intercept, dtype=np.float64).reshape(n_labels)
    x_mean = x.mean(axis=0)
    xs = x - x_mean
    x_scale = float(np.sqrt(np.mean(xs**2)))
    y_mean = y.mean(axis=0)
    scale = mad_scale(y - x @ coef - intercept)
    fit = np.flatnonzero(scale > 1e-12 * np.maximum(y.std(axis=0), 1e-300))
    if not x_scale > 0 or fit.size == 0:
        return coef, intercept, alphas
    xs /= x_scale
    s = scale[fit]
    # units of the solve: labels in units of the ridge residuals' scale, w centred and in units of its RMS
    z = (y[:, fit] - y_mean[fit]) / s
    p = np.vstack([coef[:, fit] * x_scale / s, (intercept[fit] + x_mean @ coef[:, fit] - y_mean[fit]) / s,
                   np.ones(fit.size)])
    penalty = alphas[fit] / x_scale**2
    for step in range(2 if select_alpha else 1):
        if step:
            t = np.abs(z - xs @ p[:d] - p[d]) / p[d + 1]
            weights = np.minimum(1.0, epsilon / np.maximum(t, 1e-300))
            penalty = np.array([_weighted_gcv_alpha(xs, z[:, k], weights[:, k]) for k in range(fit.size)])
        p, ok = _solve(xs, z, p, penalty, float(epsilon), max_iter)
        if not ok:
            warnings.warn(f"Huber regression of {[names[j] for j in fit]} stopped before convergence "
                          f"({max_iter} iterations)", ConvergenceWarning, stacklevel=2)
    alphas[fit] = penalty * x_scale**2
    coef[:, fit] = p[:d] * s / x_scale
    intercept[fit] = y_mean[fit] + s * p[d] - x_mean @ coef[:, fit]
    return coef, intercept, alphas
