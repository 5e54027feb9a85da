"""Disentanglement metrics, implemented from their definitions; NumPy in, NumPy / plain floats out.

Direction-level (needs ground truth or a factor oracle):

- `direction_recovery`: |cosine| between each found direction and the true direction of the factor it claims.
- `factor_change_per_step` and `leakage`: how much every factor moves per unit step along a direction, and how much
  the *other* factors move relative to the target (the attribute-dependency idea of StyleSpace, Wu et al. 2021).

Code-level (codes ``[N, K]`` against factors ``[N, F]``):

- `dci`: disentanglement, completeness, informativeness (Eastwood & Williams, ICLR 2018) from a K x F importance
  matrix of per-factor regressors (Lasso |coefficients| or gradient-boosted-tree importances).
- `mig`: mutual information gap (Chen et al., NeurIPS 2018) on discretised codes and factors.
- `sap`: separated attribute predictability (Kumar et al., ICLR 2018).

Image-level: `locality`, the share of an edit's pixel change that falls inside a part mask.

Arrays may be NumPy arrays or torch tensors (they are converted with ``.detach().cpu().numpy()``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Lasso, LinearRegression
from sklearn.metrics import mutual_info_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC

__all__ = [
    "direction_recovery",
    "factor_change_per_step",
    "leakage",
    "dci",
    "mig",
    "sap",
    "locality",
]


def _np(x, name: str, dtype=np.float64) -> np.ndarray:
    """Array-like or torch tensor -> NumPy array; NaN / inf raise ValueError naming the argument."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x, dtype=dtype)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf values")
    return arr


def _check_codes_factors(codes, factors, minimum: int = 4) -> tuple[np.ndarray, np.ndarray]:
    codes, factors = _np(codes, "codes"), _np(factors, "factors")
    if codes.ndim == 1:
        codes = codes[:, None]
    if factors.ndim == 1:
        factors = factors[:, None]
    if codes.ndim != 2 or factors.ndim != 2 or codes.shape[0] != factors.shape[0]:
        raise ValueError(f"expected codes [N, K] and factors [N, F] with the same N; got {codes.shape} and "
                         f"{factors.shape}")
    if codes.shape[0] < minimum:
        raise ValueError(f"need at least {minimum} samples to score codes; got {codes.shape[0]}")
    return codes, factors


# ----------------------------------------------------------------------------------------------------------------
# direction-level metrics


def direction_recovery(
    found, found_names: Sequence[str], truth, truth_names: Sequence[str]
) -> dict:
    """|cosine| of each found direction to the true direction of the factor it names.

    Parameters: `found` [K, D] (or [K, num_ws, D], flattened), `found_names` (K names), `truth` [F, D] with the
    same trailing shape, `truth_names` (F names). Directions need not be unit length; the sign is ignored.

    Returns a dict with ``abs_cosine`` {found name: |cos| to the same-named truth, NaN when the truth has no such
    name}, ``mean_abs_cosine`` (mean over the matched names; NaN if none), ``matched`` (list of matched names),
    ``best_match`` {found name: (truth name, |cos|)} (the closest true direction, useful for unnamed methods such as
    PCA) and ``cosine_matrix`` [K, F] of |cos|.
    """
    found, truth = _np(found, "found"), _np(truth, "truth")
    found_names, truth_names = list(found_names), list(truth_names)
    if len(found_names) != found.shape[0] or len(truth_names) != truth.shape[0]:
        raise ValueError(f"{len(found_names)} names for {found.shape[0]} found directions, {len(truth_names)} names "
                         f"for {truth.shape[0]} true directions")
    if len(set(found_names)) != len(found_names) or len(set(truth_names)) != len(truth_names):
        raise ValueError("direction names must be unique")
    found, truth = found.reshape(found.shape[0], -1), truth.reshape(truth.shape[0], -1)
    if found.shape[1] != truth.shape[1]:
        raise ValueError(f"found directions have {found.shape[1]} dimensions, true ones {truth.shape[1]}")
    norms_f, norms_t = np.linalg.norm(found, axis=1), np.linalg.norm(truth, axis=1)
    if (norms_f == 0).any() or (norms_t == 0).any():
        raise ValueError("zero-length direction: cosines are undefined")
    cos = np.abs((found / norms_f[:, None]) @ (truth / norms_t[:, None]).T)
    abs_cosine, matched = {}, []
    for k, name in enumerate(found_names):
        if name in truth_names:
            abs_cosine[name] = float(cos[k, truth_names.index(name)])
            matched.append(name)
        else:
            abs_cosine[name] = float("nan")
    best = {name: (truth_names[int(np.argmax(cos[k]))], float(cos[k].max())) for k, name in enumerate(found_names)}
    mean = float(np.mean([abs_cosine[n] for n in matched])) if matched else float("nan")
    return {"abs_cosine": abs_cosine, "mean_abs_cosine": mean, "matched": matched, "best_match": best,
            "cosine_matrix": cos}


def factor_change_per_step(
    w,
    direction,
    factors_of: Callable[[np.ndarray], np.ndarray],
    step: float = 1.0,
    symmetric: bool = True,
) -> dict:
    """How much each factor moves per unit step along `direction`, averaged over the codes `w`.

    Parameters: `w` [N, D] (or ws [N, num_ws, D]); `direction` broadcastable to one code ([D] or [num_ws, D]),
    used as given (normalise it first for "per unit length"); `factors_of` maps codes of w's shape to factors
    [N, F] (e.g. the synthetic factor map); `step` the probe size. With `symmetric` the derivative is the central
    difference ``(f(w + s d) - f(w - s d)) / 2s``, otherwise ``(f(w + s d) - f(w)) / s``.

    Returns ``change`` [F] (mean signed change per unit step), ``abs_change`` [F] (mean absolute change per unit
    step, per sample) and ``factor_std`` [F] (spread of the factors over `w`, the natural scale for `leakage`).
    """
    w, direction = _np(w, "w"), _np(direction, "direction")
    if step <= 0:
        raise ValueError(f"step must be positive; got {step}")
    base = _np(factors_of(w), "factors_of(w)")
    plus = _np(factors_of(w + step * direction), "factors_of(w + step * direction)")
    if symmetric:
        minus = _np(factors_of(w - step * direction), "factors_of(w - step * direction)")
        delta = (plus - minus) / (2 * step)
    else:
        delta = (plus - base) / step
    return {"change": delta.mean(0), "abs_change": np.abs(delta).mean(0), "factor_std": base.std(0)}


def leakage(change, target: int | str, names: Sequence[str] | None = None, scale=None) -> float:
    """Attribute dependency of an edit: mean change of the other factors relative to the target's change.

    ``leakage = mean_{i != t} (|c_i| / s_i) / (|c_t| / s_t)``, with `change` c [F] (an array or the dict returned by
    `factor_change_per_step`, whose ``abs_change`` and ``factor_std`` are then used) and per-factor scales s
    (`scale`, default the dict's ``factor_std``, else ones). 0 means a perfectly isolated edit; 1 means the other
    factors move, on average, as much as the target. `target` is an index or a name in `names`.
    """
    if isinstance(change, dict):
        scale = change["factor_std"] if scale is None else scale
        change = change["abs_change"]
    c = np.abs(_np(change, "change"))
    s = np.ones_like(c) if scale is None else _np(scale, "scale")
    s = np.where(s > 0, s, 1.0)
    if isinstance(target, str) and names is None:
        raise ValueError("pass `names` to name the target factor")
    t = list(names).index(target) if isinstance(target, str) else int(target)
    scaled = c / s
    if scaled[t] == 0:
        return float("inf")
    others = np.delete(scaled, t)
    return float(others.mean() / scaled[t]) if others.size else 0.0


# ----------------------------------------------------------------------------------------------------------------
# code-level metrics


def _entropy_normalised(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Shannon entropy of the non-negative weights along `axis` (normalised to sum 1), in log base `base`."""
    total = p.sum(axis=axis, keepdims=True)
    q = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(q > 0, q * np.log(q), 0.0).sum(axis=axis)
    return h / np.log(base)


def dci(
    codes,
    factors,
    model: str = "lasso",
    test_fraction: float = 0.3,
    alpha: float = 0.02,
    n_estimators: int = 60,
    seed: int = 0,
) -> dict:
    """DCI of codes [N, K] against factors [N, F] (Eastwood & Williams 2018).

    One regressor per factor predicts it from all code dimensions; its importances form column j of R [K, F]:
    ``model='lasso'`` uses |coefficients| of a Lasso (penalty `alpha`) on standardised codes and factors (fast, and
    exact for linear codes); ``model='gbt'`` uses the impurity importances of a gradient-boosted-tree regressor
    (`n_estimators` trees of depth 3; slower, captures nonlinear codes).

    - disentanglement ``D = sum_i rho_i (1 - H_F(P_i.))`` with ``P_ij = R_ij / sum_j R_ij`` and code weights
      ``rho_i = sum_j R_ij / sum R`` (each code dimension should matter for one factor);
    - completeness ``C = mean_j (1 - H_K(P~_.j))`` with ``P~_ij = R_ij / sum_i R_ij`` (each factor should be
      captured by one code dimension);
    - informativeness: the regressors' mean test-set R^2 (1 = every factor predictable from the code); the paper's
      error form is reported as ``informativeness_error`` (mean test NRMSE = RMSE / factor std).

    A constant factor carries no information: it is left out of the completeness and informativeness means (NaN
    in their per-factor arrays), as MIG and SAP leave it out. The held-out split needs at least 10 samples.

    Returns those three plus ``importance`` [K, F], ``per_code_disentanglement`` [K], ``code_weights`` [K],
    ``per_factor_completeness`` [F] and ``test_r2`` [F].
    """
    codes, factors = _check_codes_factors(codes, factors, minimum=10)
    if model not in ("lasso", "gbt"):
        raise ValueError(f"dci model must be 'lasso' or 'gbt'; got {model!r}")
    idx_train, idx_test = train_test_split(np.arange(codes.shape[0]), test_size=test_fraction, random_state=seed)
    mu, sd = codes[idx_train].mean(0), codes[idx_train].std(0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (codes - mu) / sd
    n_codes, n_factors = codes.shape[1], factors.shape[1]
    importance = np.zeros((n_codes, n_factors))
    test_r2, nrmse = np.zeros(n_factors), np.zeros(n_factors)
    for j in range(n_factors):
        y = factors[:, j]
        y_mu, y_sd = y[idx_train].mean(), y[idx_train].std()
        y_sd = y_sd if y_sd > 0 else 1.0
        yz = (y - y_mu) / y_sd
        if model == "lasso":
            reg = Lasso(alpha=alpha, max_iter=5000).fit(z[idx_train], yz[idx_train])
            importance[:, j] = np.abs(reg.coef_)
        else:
            reg = GradientBoostingRegressor(n_estimators=n_estimators, max_depth=3, learning_rate=0.1,
                                            subsample=0.8, random_state=seed).fit(z[idx_train], yz[idx_train])
            importance[:, j] = reg.feature_importances_
        pred = reg.predict(z[idx_test])
        test_r2[j] = r2_score(yz[idx_test], pred)
        nrmse[j] = np.sqrt(np.mean((yz[idx_test] - pred) ** 2))
    per_code = 1 - _entropy_normalised(importance, n_factors, axis=1) if n_factors > 1 else np.ones(n_codes)
    per_code = np.where(importance.sum(1) > 0, per_code, 0.0)
    weights = importance.sum(1) / importance.sum() if importance.sum() > 0 else np.zeros(n_codes)
    per_factor = 1 - _entropy_normalised(importance, n_codes, axis=0) if n_codes > 1 else np.ones(n_factors)
    per_factor = np.where(importance.sum(0) > 0, per_factor, 0.0)
    constant = np.ptp(factors, axis=0) == 0
    per_factor, test_r2, nrmse = (np.where(constant, np.nan, a) for a in (per_factor, test_r2, nrmse))
    return {
        "disentanglement": float((weights * per_code).sum()),
        "completeness": _mean_or_nan(per_factor),
        "informativeness": _mean_or_nan(test_r2),
        "informativeness_error": _mean_or_nan(nrmse),
        "importance": importance,
        "per_code_disentanglement": per_code,
        "code_weights": weights,
        "per_factor_completeness": per_factor,
        "test_r2": test_r2,
    }


def _mean_or_nan(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _discretise(x: np.ndarray, bins: int) -> np.ndarray:
    """Columns of x [N, M] -> integer labels: a discrete column (at most `bins` distinct values, which repeat)
    keeps them exactly, others go into `bins` equal-width bins over their range (so that a handful of continuous
    samples, all distinct, is binned rather than each taken for its own class)."""
    out = np.zeros(x.shape, dtype=np.int64)
    for m in range(x.shape[1]):
        values, labels = np.unique(x[:, m], return_inverse=True)
        if len(values) <= bins and len(values) < x.shape[0]:
            out[:, m] = labels.ravel()
        else:
            edges = np.histogram_bin_edges(x[:, m], bins=bins)
            out[:, m] = np.digitize(x[:, m], edges[1:-1])
    return out


def mig(codes, factors, bins: int = 20) -> dict:
    """Mutual information gap of codes [N, K] against factors [N, F] (Chen et al. 2018).

    Codes and factors are discretised (`_discretise`: exact for columns with at most `bins` distinct values,
    `bins` equal-width bins otherwise); ``MIG = mean_j (I(z_a; v_j) - I(z_b; v_j)) / H(v_j)`` where a, b are the
    code dimensions with the largest and second-largest mutual information with factor j (natural logs; the ratio
    does not depend on the base). Factors with zero entropy (constant) are skipped.

    Returns ``mig``, ``per_factor`` [F] (NaN for constant factors), ``mutual_information`` [K, F] in nats and
    ``factor_entropy`` [F] in nats.
    """
    codes, factors = _check_codes_factors(codes, factors)
    c, v = _discretise(codes, bins), _discretise(factors, bins)
    mi = np.array([[mutual_info_score(v[:, j], c[:, i]) for j in range(v.shape[1])] for i in range(c.shape[1])])
    entropy = np.array([mutual_info_score(v[:, j], v[:, j]) for j in range(v.shape[1])])
    top = np.sort(mi, axis=0)[::-1]
    second = top[1] if mi.shape[0] > 1 else np.zeros(mi.shape[1])
    per_factor = np.where(entropy > 0, (top[0] - second) / np.where(entropy > 0, entropy, 1.0), np.nan)
    valid = per_factor[~np.isnan(per_factor)]
    return {"mig": float(valid.mean()) if valid.size else float("nan"), "per_factor": per_factor,
            "mutual_information": mi, "factor_entropy": entropy}


def sap(codes, factors, discrete: bool = False, test_fraction: float = 0.3, seed: int = 0) -> dict:
    """Separated attribute predictability of codes [N, K] against factors [N, F] (Kumar et al. 2018).

    Score matrix S [K, F]: how well factor j is predicted from code dimension i *alone*, on a held-out split —
    continuous factors: test R^2 of a 1-D linear regression (clipped at 0); ``discrete=True``: balanced test
    accuracy of a linear classifier (LinearSVC) on the single code dimension. ``SAP = mean_j (top1_j - top2_j)``,
    the gap between the best and second-best code dimension for each factor.

    A discrete factor's distinct values are its classes (whatever numbers encode them). Constant factors are left
    out of the mean (NaN in ``per_factor``). The held-out split needs at least 10 samples.

    Returns ``sap``, ``per_factor`` [F] and ``score_matrix`` [K, F].
    """
    codes, factors = _check_codes_factors(codes, factors, minimum=10)
    if discrete:
        factors = np.stack([np.unique(factors[:, j], return_inverse=True)[1].ravel()
                            for j in range(factors.shape[1])], axis=1).astype(np.float64)
    idx_train, idx_test = train_test_split(np.arange(codes.shape[0]), test_size=test_fraction, random_state=seed)
    n_codes, n_factors = codes.shape[1], factors.shape[1]
    score = np.zeros((n_codes, n_factors))
    for i in range(n_codes):
        x_train, x_test = codes[idx_train, i:i + 1], codes[idx_test, i:i + 1]
        for j in range(n_factors):
            y_train, y_test = factors[idx_train, j], factors[idx_test, j]
            if discrete:
                labels_train = y_train.astype(np.int64)
                if len(np.unique(labels_train)) < 2:
                    continue
                clf = LinearSVC(C=1.0, class_weight="balanced").fit(x_train, labels_train)
                pred = clf.predict(x_test)
                classes = np.unique(y_test.astype(np.int64))
                score[i, j] = np.mean([np.mean(pred[y_test.astype(np.int64) == k] == k) for k in classes])
            else:
                if np.std(y_test) == 0:
                    continue
                reg = LinearRegression().fit(x_train, y_train)
                score[i, j] = max(0.0, r2_score(y_test, reg.predict(x_test)))
    top = np.sort(score, axis=0)[::-1]
    second = top[1] if n_codes > 1 else np.zeros(n_factors)
    per_factor = np.where(np.ptp(factors, axis=0) == 0, np.nan, top[0] - second)
    return {"sap": _mean_or_nan(per_factor), "per_factor": per_factor, "score_matrix": score}


# ----------------------------------------------------------------------------------------------------------------
# image-level metric


def locality(image_before, image_after, part_mask) -> float | np.ndarray:
    """Fraction of an edit's pixel change that lies inside `part_mask`.

    ``sum_p |after - before|_p * m_p / sum_p |after - before|_p``, where ``|.|_p`` sums the absolute change over
    channels at pixel p and m is the (soft) mask in [0, 1]. Images [C, H, W] or [N, C, H, W]; mask [H, W],
    [1, H, W], [N, H, W] or [N, 1, H, W]. Returns a float for one image, an array [N] for a batch; NaN where the
    edit changed nothing. A mask covering a fraction a of the image scores a for an edit that changes every pixel
    equally, so compare against the mask's area.
    """
    before, after = _np(image_before, "image_before"), _np(image_after, "image_after")
    mask = _np(part_mask, "part_mask")
    if before.shape != after.shape or before.ndim not in (3, 4):
        raise ValueError(f"images must share a shape [C, H, W] or [N, C, H, W]; got {before.shape}, {after.shape}")
    single = before.ndim == 3
    if single:
        before, after = before[None], after[None]
    change = np.abs(after - before).sum(1)  # [N, H, W]
    if mask.ndim == 4:
        mask = mask[:, 0]
    elif mask.ndim == 3 and mask.shape[0] == 1 and change.shape[0] != 1:
        mask = mask[0]
    mask = np.broadcast_to(mask, change.shape)
    total = change.sum((1, 2))
    inside = (change * mask).sum((1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(total > 0, inside / np.where(total > 0, total, 1.0), np.nan)
    return float(frac[0]) if single else frac
