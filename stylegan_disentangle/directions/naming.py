"""Automatic naming of unsupervised directions: which labels does a step along each direction change most?

Users of PCA / SeFa directions cannot tell which eigenvector is "pose". Given samples w `[N, w_dim]` with labels
`[N, L]`, fit the linear model `label ~ w` (ridge, from streamed moments; `B` `[w_dim, L]`) and read off, for each unit
direction v_k:

    per_unit[k, l] = v_k . B_l                        label change per unit step in W (label units)
    effect[k, l]   = per_unit[k, l] * sigma_k / s_l   label change, in label stds, per one-std step along v_k

(sigma_k = std of the samples along v_k, s_l = std of label l). `effect` is scale-free and, for a label that is
linear in w, equals the correlation a move along v_k induces. The correlation of the projection `w . v_k` with the
label is reported too (`correlations`); it also counts labels that merely co-vary with the direction.
A direction is named after its strongest label when |effect| >= `min_effect`: 'pc3' -> 'pc3:+yaw'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._base import DirectionFinder, as_labels, as_w, blas_limit, check_fitted, unit_rows
from ._moments import compute_moments, ridge_from_moments
from .direction_set import DirectionSet

__all__ = ["DirectionNames", "name_directions"]


@dataclass
class DirectionNames:
    """Result of `name_directions`.

    Attributes
    ----------
    label_names : list[str]  the L labels.
    base_names : list[str]  the K directions' names before naming.
    effects : ndarray [K, L]  label change in label stds per one-std step along each direction.
    per_unit : ndarray [K, L]  label change (label units) per unit W step.
    correlations : ndarray [K, L]  correlation of `w . v_k` with each label.
    table : dict[int, list[tuple[str, float]]]  per direction index, its top_k labels by |effect|.
    names : list[str]  suggested names ('pc3:+yaw'; unchanged when no label reaches `min_effect`).
    """

    label_names: list[str]
    base_names: list[str]
    effects: np.ndarray
    per_unit: np.ndarray
    correlations: np.ndarray
    table: dict[int, list[tuple[str, float]]] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)

    def apply(self, direction_set: DirectionSet, rename: bool = True) -> DirectionSet:
        """Return `direction_set` with the effects stored (and, if `rename`, the suggested names).

        Adds `extras['label_effects']` `[K, L]`, `info['label_names']` (the L labels), and
        `info['label_effects']` = {direction name: [[label, effect], ...top_k]}.
        """
        if direction_set.names != self.base_names:
            raise ValueError(f"these names were computed for directions {self.base_names}, not {direction_set.names}")
        extras = dict(direction_set.extras, label_effects=self.effects.astype(np.float32))
        final = self.names if rename else self.base_names
        info = dict(direction_set.info)
        info["label_names"] = list(self.label_names)
        info["label_effects"] = {final[k]: [[lab, float(e)] for lab, e in self.table[k]] for k in range(len(final))}
        if rename:
            info["original_names"] = {new: old for new, old in zip(final, self.base_names) if new != old} or None
            if info["original_names"] is None:
                del info["original_names"]
        return direction_set._replace(names=final, extras=extras, info=info)


def name_directions(
    directions: Any,
    w: Any,
    labels: Any,
    top_k: int = 3,
    label_names: Sequence[str] | None = None,
    names: Sequence[str] | None = None,
    min_effect: float = 0.1,
    alpha: float = 1.0,
    chunk_size: int = 65536,
    blas_threads: int | None = 1,
) -> DirectionNames:
    """Estimate each label's change along each direction and suggest names.

    Parameters
    ----------
    directions : DirectionSet, fitted finder, or ndarray `[K, w_dim]` (per-layer sets use their flat mean vectors).
    w : `[N, w_dim]` samples;  labels : `[N]`, `[N, L]` or dict name -> `[N]` (as for LinearDirections).
    top_k : labels listed per direction.
    names : base names (default: the set's / finder's names, else 'd0', 'd1', ...).
    min_effect : smallest |effect| that earns a name.
    alpha : ridge penalty of `label ~ w`.
    blas_threads : BLAS threads for the moments pass (default 1; None = BLAS default; see `_base.blas_limit`).
    """
    if isinstance(directions, DirectionSet):
        vecs = directions.flat_vectors()
        base = list(directions.names)
    elif isinstance(directions, DirectionFinder):
        check_fitted(directions)
        vecs, base = directions.directions_, list(directions.names_)
    else:
        vecs = np.atleast_2d(np.asarray(directions))
        base = [f"d{i}" for i in range(vecs.shape[0])]
    if names is not None:
        base = [str(n) for n in names]
    vecs = np.asarray(vecs, dtype=np.float64)
    if len(base) != vecs.shape[0]:
        raise ValueError(f"{len(base)} names for {vecs.shape[0]} directions")
    vecs = unit_rows(vecs, "direction", base)  # a zero direction has no effect to name
    w = as_w(w)
    if w.shape[1] != vecs.shape[1]:
        raise ValueError(f"w has w_dim {w.shape[1]} but the directions have {vecs.shape[1]}")
    y, lab_names = as_labels(labels, w.shape[0], label_names)
    with blas_limit(blas_threads):
        (m,) = compute_moments(w, y, chunk_size=chunk_size, desc="naming moments")
    coef, _ = ridge_from_moments(m, alpha)  # [D, L]
    per_unit = vecs @ coef  # [K, L]
    sigma_dir = np.sqrt(np.maximum(np.einsum("kd,de,ke->k", vecs, m.cov, vecs), 0.0))  # [K]
    s_lab = m.y_std  # [L]
    with np.errstate(divide="ignore", invalid="ignore"):
        effects = np.where(s_lab[None] > 0, per_unit * sigma_dir[:, None] / s_lab[None], 0.0)
        cov_proj = (vecs @ m.cross) / max(m.n, 1)  # cov(w . v_k, y_l)
        corr = np.where(
            (sigma_dir[:, None] > 0) & (s_lab[None] > 0), cov_proj / (sigma_dir[:, None] * s_lab[None]), 0.0
        )
    table: dict[int, list[tuple[str, float]]] = {}
    suggested = []
    for k in range(vecs.shape[0]):
        order = np.argsort(-np.abs(effects[k]), kind="stable")[: max(int(top_k), 1)]
        table[k] = [(lab_names[j], float(effects[k, j])) for j in order]
        top_label, top_effect = table[k][0]
        if abs(top_effect) >= min_effect:
            suggested.append(f"{base[k]}:{'+' if top_effect > 0 else '-'}{top_label}")
        else:
            suggested.append(base[k])
    return DirectionNames(lab_names, base, effects, per_unit, corr, table, suggested)
