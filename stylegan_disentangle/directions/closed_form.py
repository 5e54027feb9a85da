"""SeFa-style closed-form directions: eigenvectors of the stacked style-affine weights. No sampling.

Shen & Zhou (SeFa, CVPR 2021): every StyleGAN2 layer turns w into styles through an affine map `s = A_l w + b_l`
(`A_l` is `[in_channels_l, w_dim]`, the `affine.weight` of the layer). A unit step n in W changes the styles by
`A n`, so the directions that change the styles most solve `max ||A n||^2 s.t. ||n|| = 1`: the top eigenvectors
of `A^T A`, where A stacks the `A_l` of the chosen layers row-wise.

Normalisation (as SeFa does): before stacking, every row of A (one output channel's weights over the w_dim inputs)
is scaled to unit L2 norm, so each style channel counts equally whatever its weight scale (this also makes the
official equalized-lr gain `1/sqrt(w_dim)` irrelevant). `normalize=False` keeps the raw stored weights.

Which ws index each layer reads (official StyleGAN2 synthesis network):
    b4.conv1 -> 0, b4.torgb -> 1; for resolution r > 4: b<r>.conv0 -> 2 log2(r) - 5, conv1 -> 2 log2(r) - 4,
    torgb -> 2 log2(r) - 3.
SeFa factorizes the convolution layers of the chosen ws indices plus the final ToRGB (the only layer reading the last
ws index); `torgb='last'` does the same, 'all' adds every ToRGB, 'none' uses convolutions only.

Which ws rows an edit moves: exactly the chosen indices, as SeFa's `code[:, layers] += step * direction`. With
`layers=[0, 2]` the DirectionSet stores the ws set {0, 2} (not the range [0, 3)), so ws 1 stays bit-identical;
`layers=None` means every ws layer.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ._base import DirectionFinder, canonical_sign, check_fitted, small_lapack

__all__ = ["ClosedFormDirections", "affine_weights", "ws_index_of"]

_AFFINE_RE = re.compile(r"(?:^|\.)b(\d+)\.(conv0|conv1|torgb)\.affine\.weight$")


def ws_index_of(resolution: int, layer: str) -> int:
    """The ws index read by `b<resolution>.<layer>` (layer in 'conv0', 'conv1', 'torgb') in StyleGAN2."""
    log2 = int(round(math.log2(resolution)))
    if 2**log2 != resolution or resolution < 4:
        raise ValueError(f"block resolution must be a power of two >= 4, got {resolution}")
    if resolution == 4:
        table = {"conv1": 0, "torgb": 1}
    else:
        table = {"conv0": 2 * log2 - 5, "conv1": 2 * log2 - 4, "torgb": 2 * log2 - 3}
    if layer not in table:
        raise ValueError(f"block b{resolution} has no layer {layer!r} with a style affine")
    return table[layer]


def affine_weights(source: Any) -> list[tuple[str, int, np.ndarray]]:
    """List `(parameter name, ws index, weight [in_channels, w_dim] float64)` of every style affine in `source`.

    `source` is a generator / synthesis `nn.Module`, or a state dict (str -> tensor/array) with official names such as
    `synthesis.b8.conv0.affine.weight`.
    """
    if hasattr(source, "named_parameters"):
        items = [(name, p) for name, p in source.named_parameters()]
        if not any(_AFFINE_RE.search(n) for n, _ in items) and hasattr(source, "state_dict"):
            items = list(source.state_dict().items())
    elif isinstance(source, Mapping):
        items = list(source.items())
    else:
        raise TypeError(f"expected a generator module or a state dict, got {type(source).__name__}")
    out = []
    for name, value in items:
        match = _AFFINE_RE.search(str(name))
        if match is None:
            continue
        res, layer = int(match.group(1)), match.group(2)
        if hasattr(value, "detach"):
            value = value.detach().cpu().double().numpy()
        out.append((str(name), ws_index_of(res, layer), np.asarray(value, dtype=np.float64)))
    return out


class ClosedFormDirections(DirectionFinder):
    """Closed-form factorization of the style-affine weights (SeFa).

    Parameters
    ----------
    n_components : int or None
        Number of directions K (None = w_dim).
    layers : sequence of int or None
        ws indices whose layers are factorized and which the directions' edits move (exactly these; None = all).
    torgb : {'last', 'all', 'none'}
        Which ToRGB affines join the convolutions' (see the module docstring; 'last' is SeFa's choice).
    normalize : bool
        Scale every stacked row to unit norm before factorizing (SeFa does).

    Attributes
    ----------
    directions_ : ndarray [K, w_dim]  eigenvectors of A^T A by decreasing eigenvalue (sign: largest entry positive).
    eigenvalues_ : ndarray [K]  the matching eigenvalues (sum of squared style changes per unit step).
    names_ : list[str]  'sefa0', 'sefa1', ...
    layers_ : list[int]  ws indices used; layer_names_ : the parameters stacked.
    mean_ : zeros [w_dim] (no samples: transform is a plain projection).

    Examples
    --------
    >>> ds = ClosedFormDirections(n_components=10, layers=range(0, 4)).fit(G).to_direction_set()
    """

    _method = "closed_form"

    def __init__(
        self,
        n_components: int | None = 10,
        layers: Sequence[int] | None = None,
        torgb: str = "last",
        normalize: bool = True,
    ) -> None:
        self.n_components = n_components
        self.layers = layers
        self.torgb = torgb
        self.normalize = normalize

    def _collect(self, source: Any) -> list[tuple[str, int, np.ndarray]]:
        if isinstance(source, Mapping) and source and all(isinstance(k, (int, np.integer)) for k in source):
            entries = []
            for idx, value in source.items():
                mats = value if isinstance(value, (list, tuple)) else [value]
                for j, mat in enumerate(mats):
                    if hasattr(mat, "detach"):
                        mat = mat.detach().cpu().double().numpy()
                    entries.append((f"ws{int(idx)}[{j}]", int(idx), np.asarray(mat, dtype=np.float64)))
            return entries
        entries = affine_weights(source)
        if not entries:
            raise ValueError(
                "found no style affine weights (parameters named like 'synthesis.b8.conv0.affine.weight'); "
                "pass a StyleGAN2 generator, its synthesis network, its state dict, or a dict {ws_index: weight}"
            )
        if self.torgb == "all":
            return entries
        conv_indices = {idx for name, idx, _ in entries if ".torgb." not in name}
        return [e for e in entries if ".torgb." not in e[0] or (self.torgb == "last" and e[1] not in conv_indices)]

    def fit(self, G: Any, y: Any = None) -> ClosedFormDirections:
        """Factorize the affine weights of generator `G` (module, state dict, or `{ws_index: [C, w_dim] weight}`)."""
        if self.torgb not in ("last", "all", "none"):  # (also for a {ws_index: weight} dict, which has no ToRGB)
            raise ValueError(f"torgb must be 'last', 'all' or 'none', got {self.torgb!r}")
        if self.n_components is not None and (isinstance(self.n_components, bool)
                                              or int(self.n_components) != self.n_components):
            raise ValueError(f"n_components must be an integer or None, got {self.n_components!r}")
        entries = self._collect(G)
        available = sorted({idx for _, idx, _ in entries})
        if self.layers is None:
            chosen = available
        else:
            chosen = sorted({int(i) for i in self.layers})
            missing = [i for i in chosen if i not in available]
            if missing:
                raise ValueError(f"layers {missing} have no style affine; available ws indices: {available}")
        used = [e for e in entries if e[1] in chosen]
        w_dims = {mat.shape[1] for _, _, mat in used if mat.ndim == 2}
        if any(mat.ndim != 2 for _, _, mat in used) or len(w_dims) != 1:
            shapes = {name: mat.shape for name, _, mat in used}
            raise ValueError(f"affine weights must all be [in_channels, w_dim] with one w_dim, got {shapes}")
        a = np.concatenate([mat for _, _, mat in used], axis=0)
        if self.normalize:
            norms = np.linalg.norm(a, axis=1, keepdims=True)
            a = a / np.where(norms > 0, norms, 1.0)
        w_dim = a.shape[1]
        k = w_dim if self.n_components is None else int(self.n_components)
        if not 1 <= k <= w_dim:
            raise ValueError(f"n_components must be in [1, w_dim={w_dim}], got {k}")
        gram = a.T @ a
        with small_lapack():
            eigval, eigvec = np.linalg.eigh(gram)
        order = np.argsort(eigval)[::-1][:k]
        self.eigenvalues_ = eigval[order]
        dirs = canonical_sign(eigvec[:, order].T)
        self.directions_ = (dirs / np.linalg.norm(dirs, axis=1, keepdims=True)).astype(np.float32)
        self.names_ = [f"sefa{i}" for i in range(k)]
        self.layers_ = chosen
        self.layer_names_ = [name for name, _, _ in used]
        self.mean_ = np.zeros(w_dim)
        self.n_samples_fit_ = None
        return self

    def _default_layer_ranges(self) -> list[frozenset[int] | None]:
        """Every direction acts on exactly the chosen ws indices (as SeFa edits `code[:, layers]`); None = all."""
        check_fitted(self)
        chosen = None if self.layers is None else frozenset(self.layers_)
        return [chosen] * len(self.names_)

    def _extras(self) -> dict[str, np.ndarray]:
        out = super()._extras()
        out.pop("global_w_mean", None)
        out["eigenvalue"] = self.eigenvalues_
        return out

    def _info(self) -> dict[str, Any]:
        return {"layers": self.layers_, "layer_names": self.layer_names_}
