"""Conditional editing: make directions orthogonal to the span of others (InterFaceGAN's projection, k attributes).

InterFaceGAN edits attribute 1 without changing attribute 2 by using `n1 - (n1 . n2) n2`. For k conditions the
generalisation removes the component of n in span(a_1..a_k): `n' = (I - Q Q^T) n / ||(I - Q Q^T) n||`, with Q an
orthonormal basis of the span. Q comes from an SVD of the stacked conditions, dropping singular values below a
rank tolerance, so duplicated or near-collinear conditions do not blow up (unlike inverting the Gram matrix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._base import unit_rows
from .direction_set import DirectionSet

__all__ = ["orthogonalize", "span_basis"]


def span_basis(vectors: np.ndarray, rtol: float | None = None) -> np.ndarray:
    """Orthonormal basis `[r, D]` of the row span of `vectors` `[M, D]` (r = numerical rank, float64)."""
    a = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    if a.size == 0:
        return np.zeros((0, a.shape[-1]))
    _, s, vt = np.linalg.svd(a, full_matrices=False)
    if rtol is None:  # the vectors usually went through float32: use float32's rank tolerance
        rtol = max(a.shape) * float(np.finfo(np.float32).eps)
    rank = int(np.sum(s > rtol * s.max(initial=0.0))) if s.size else 0
    return vt[:rank]


def _project_out(v: np.ndarray, basis: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Rows of `v` `[K, D]` minus their component in span(basis), renormalised."""
    out = v - (v @ basis.T) @ basis
    norms = np.linalg.norm(out, axis=1)
    bad = np.flatnonzero(norms < 1e-6 * np.maximum(np.linalg.norm(v, axis=1), 1e-300))
    if bad.size:
        raise ValueError(f"direction(s) {[labels[i] for i in bad]} lie in the span of the conditions; nothing is left")
    return out / norms[:, None]


def orthogonalize(directions: Any, against: Any, rtol: float | None = None) -> Any:
    """Remove from each direction its component along span(`against`) and renormalise.

    Parameters
    ----------
    directions : ndarray `[D]` / `[K, D]` / per-layer `[K, num_ws, w_dim]`, or a DirectionSet.
    against : ndarray `[D]` / `[M, D]`, a DirectionSet, a list of arrays, or (when `directions` is a DirectionSet)
        a list of its own direction names. Names listed are the conditions and are returned unchanged.
    rtol : float or None
        Relative singular-value cutoff for the span (default: float32 rank tolerance).

    Returns
    -------
    The same kind as `directions`: an array (float64, or float32 for float32 input) or a new DirectionSet whose
    `info['conditioned_on']` records, per changed direction, what it was made orthogonal to.

    For per-layer directions and flat conditions `[M, w_dim]`, each layer's slice is projected, then the whole
    vector is renormalised. Raises ValueError if a direction lies (numerically) inside the span.
    """
    if isinstance(directions, DirectionSet):
        return _orthogonalize_set(directions, against, rtol)
    v = np.asarray(directions)
    out_dtype = np.float32 if v.dtype == np.float32 else np.float64
    squeeze = v.ndim == 1
    v = np.atleast_2d(v).astype(np.float64)
    cond = _as_condition_array(against)
    result = _orthogonalize_array(v, cond, rtol, [str(i) for i in range(v.shape[0])])
    result = result.astype(out_dtype)
    return result[0] if squeeze else result


def _as_condition_array(against: Any) -> np.ndarray:
    if isinstance(against, DirectionSet):
        return against.vectors.astype(np.float64)
    if isinstance(against, (list, tuple)):
        return np.stack([np.asarray(a, dtype=np.float64) for a in against]) if against else np.zeros((0, 0))
    return np.atleast_2d(np.asarray(against, dtype=np.float64))


def _orthogonalize_array(v: np.ndarray, cond: np.ndarray, rtol: float | None, labels: Sequence[str]) -> np.ndarray:
    """`v` `[K, D]` or `[K, num_ws, w_dim]`; `cond` `[M, D]` (matching flat size) or `[M, w_dim]` (per layer)."""
    if cond.size == 0:
        return unit_rows(v.reshape(v.shape[0], -1), "direction", labels).reshape(v.shape)
    k = v.shape[0]
    flat = v.reshape(k, -1)
    cond_flat = cond.reshape(cond.shape[0], -1)
    if cond_flat.shape[1] == flat.shape[1]:
        return _project_out(flat, span_basis(cond_flat, rtol), labels).reshape(v.shape)
    if v.ndim == 3 and cond.ndim == 2 and cond.shape[1] == v.shape[2]:
        basis = span_basis(cond, rtol)
        projected = v - np.einsum("knd,rd,re->kne", v, basis, basis)
        norms = np.linalg.norm(projected.reshape(k, -1), axis=1)
        bad = np.flatnonzero(norms < 1e-6)
        if bad.size:
            raise ValueError(f"direction(s) {[labels[i] for i in bad]} lie in the span of the conditions")
        return projected / norms[:, None, None]
    raise ValueError(f"directions of shape {v.shape[1:]} cannot be conditioned on vectors of shape {cond.shape[1:]}")


def _orthogonalize_set(ds: DirectionSet, against: Any, rtol: float | None) -> DirectionSet:
    vectors = ds.vectors.astype(np.float64)
    if isinstance(against, str):
        against = [against]
    if isinstance(against, (list, tuple)) and against and all(isinstance(a, str) for a in against):
        cond_names = [ds.resolve_name(n) for n in against]  # 'pc0' for 'pc0:-color_b', as edit takes it
        cond = np.stack([vectors[ds.index(n)] for n in cond_names])
        targets = [i for i, n in enumerate(ds.names) if n not in cond_names]
        record = cond_names
    else:
        cond = _as_condition_array(against)
        targets = list(range(len(ds)))
        record = list(against.names) if isinstance(against, DirectionSet) else [f"<{cond.shape[0]} vector(s)>"]
    new = vectors.copy()
    if targets:
        new[targets] = _orthogonalize_array(vectors[targets], cond, rtol, [ds.names[i] for i in targets])
    info = dict(ds.info)
    conditioned = dict(info.get("conditioned_on", {}))
    for i in targets:
        conditioned[ds.names[i]] = list(conditioned.get(ds.names[i], [])) + record
    if conditioned:
        info["conditioned_on"] = conditioned
    return ds._replace(vectors=new.astype(np.float32), info=info)
