"""Spatial atoms of label maps for `ThreeDCoupledDirections`: one dictionary over a whole map, or one per face part.

A map label (the decomposer's canonical depth or albedo, `[n, L]` rows once flattened) is reduced to a few atoms
`[K, L]` and the sparse codes `[n, K]` of every row, learned on a subset of the rows (`learn`): by the vectorized
dictionary learning of `_dictionary` (the default) or by scikit-learn's SparsePCA. `part_atoms` learns them inside
each face part, so every footprint lies in the part it is named after.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from ._dictionary import learn_dictionary, sparse_codes
from ._footprint_names import resize_masks

__all__ = ["map_atoms", "part_atoms", "rms"]


def rms(rows: np.ndarray) -> float:
    """Root mean square over the rows `[n, L]` of each row's norm (the per-sample RMS the maps are scaled by)."""
    return float(np.sqrt(np.mean(np.einsum("ij,ij->i", rows, rows, dtype=np.float64))))


def map_atoms(y: np.ndarray, learn: np.ndarray, n_atoms: int, *, method: str, code_alpha: float, max_iter: int,
              seed: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Atoms `[k, L]` learned on the rows `learn` of `y` `[n, L]` and the codes `[n, k]` of every row
    (k = min(n_atoms, rows, L); `method` 'dictionary' or 'sparse_pca')."""
    k = min(n_atoms, learn.size, y.shape[1])
    if method == "dictionary":
        atoms, codes, _ = learn_dictionary(y[learn], k, code_alpha, max_iter=max_iter, seed=seed)
        if learn.size < y.shape[0]:
            codes = sparse_codes(y, atoms, code_alpha)
        return atoms, codes
    from sklearn.decomposition import SparsePCA
    from sklearn.exceptions import ConvergenceWarning

    model = SparsePCA(n_components=k, alpha=code_alpha, max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(y[learn])
        codes = np.asarray(model.transform(y), dtype=np.float64)
    return np.asarray(model.components_, dtype=np.float64), codes


def part_atoms(y: np.ndarray, learn: np.ndarray, shape: Sequence[int], part_names: Sequence[str],
               part_masks: np.ndarray, *, n_atoms: int, part_core: float, skip_parts: Sequence[str], **atom_kwargs
               ) -> tuple[np.ndarray | None, np.ndarray | None, list[str]]:
    """`n_atoms` atoms per part, each learned on the pixels of that part only (mean mask >= `part_core` at the map's
    resolution; `shape` is one map's [..., R, R]); the parts in `skip_parts` get none.

    Each part's pixels are scaled to unit RMS per sample before its atoms are learned, so `code_alpha` binds the same
    way in a 12-pixel nose as in the whole skin (on the map's common scale the small parts' codes fall under the L1
    threshold and vanish); the codes are scaled back, so `codes @ atoms` stays in the map's units. `atom_kwargs` go to
    `map_atoms`. Returns (atoms `[K, L]`, codes `[n, K]`, the part of each atom), or (None, None, []) when no part
    has pixels.
    """
    masks = resize_masks(np.asarray(part_masks, dtype=np.float32), shape[-1]) >= float(part_core)
    channels = int(np.prod(shape[:-2], dtype=np.int64))
    all_atoms, all_codes, parts = [], [], []
    for name, mask in zip(part_names, masks):
        if name in skip_parts or mask.sum() < 2:
            continue
        cols = np.flatnonzero(np.tile(mask.reshape(-1), channels))
        block = np.ascontiguousarray(y[:, cols])
        scale = rms(block[learn])
        if not scale > 0:
            continue
        block /= scale
        atoms, codes = map_atoms(block, learn, n_atoms, **atom_kwargs)
        full = np.zeros((atoms.shape[0], y.shape[1]))
        full[:, cols] = atoms
        all_atoms.append(full)
        all_codes.append(codes * scale)
        parts += [str(name)] * atoms.shape[0]
    if not all_atoms:
        return None, None, []
    return np.concatenate(all_atoms), np.concatenate(all_codes, axis=1), parts
