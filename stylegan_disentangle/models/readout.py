"""What the label-driven W-space models share: named groups of labels, and a differentiable readout of the labels.

- `parse_attribute_spec`: the CLI's 'name=label,label;label' form -> {name: [labels]} (an attribute of
  `AttributeExchangeModel`, a factor of `FactorMapper`);
- `LatentReadout`: ws -> standardized labels (ridge + optional MLP), fitted on a labeled pool; the judge of the
  exchange model's swaps and the factor mapper's measurement of its factors;
- `label_columns`: a pool's labels as scalar columns, a map-valued label (depth, albedo) by its leading principal
  components.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import Ridge
from torch import nn

from ..errors import LatentError
from ..latents import check_ws

__all__ = ["LatentReadout", "checked_label_groups", "label_columns", "parse_attribute_spec", "pool_w"]


def parse_attribute_spec(spec: str) -> dict[str, list[str]]:
    """'expression=smile,mouth_open;yaw,pitch' -> {'expression': ['smile', 'mouth_open'], 'yaw': ['yaw'],
    'pitch': ['pitch']}: items separated by ';' are either NAME=LABEL,LABEL (an attribute of several labels) or a
    comma list of labels, each an attribute of its own. ValueError on an empty or repeated name or label."""
    attributes: dict[str, list[str]] = {}
    for item in (s.strip() for s in str(spec).split(";")):
        if not item:
            continue
        if "=" in item:
            name, _, labels = item.partition("=")
            groups = [(name.strip(), [s.strip() for s in labels.split(",") if s.strip()])]
        else:
            groups = [(s.strip(), [s.strip()]) for s in item.split(",") if s.strip()]
        for name, labels in groups:
            if not name or not labels:
                raise ValueError(f"{spec!r}: attribute {item!r} needs a name and at least one label")
            if name in attributes:
                raise ValueError(f"{spec!r}: attribute {name!r} is named twice")
            attributes[name] = labels
    checked_label_groups(attributes, (), spec)
    return attributes


def pool_w(w_pool: Any, w_dim: int | None, what: str = "w_pool") -> torch.Tensor:
    """w [N, w_dim] or ws [N, num_ws, w_dim] (tensor or array) -> w [N, w_dim] (the mean over layers), checked."""
    x = w_pool if isinstance(w_pool, torch.Tensor) else torch.as_tensor(np.asarray(w_pool))
    x = x[:, None] if x.ndim == 2 else x
    return check_ws(x, None, x.shape[-1] if w_dim is None else w_dim, what).mean(1)


def checked_label_groups(groups: Mapping[str, Sequence[str]], held: Sequence[str], what: Any
                         ) -> dict[str, list[str]]:
    """{name: [labels]} with names and labels as str; ValueError unless there is a group, each has a label, and
    every label belongs to one group (or to `held`) only."""
    groups = {str(k): [str(v) for v in vs] for k, vs in dict(groups).items()}
    if not groups:
        raise ValueError(f"{what!r}: no attribute given")
    empty = [k for k, vs in groups.items() if not vs]
    if empty:
        raise ValueError(f"{what!r}: {empty} have no label; every group needs at least one")
    labels = [lab for labs in groups.values() for lab in labs] + [str(h) for h in held]
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise ValueError(f"{what!r}: labels {twice} are named more than once (each label belongs to one attribute or "
                         "to the held labels)")
    return groups


class LatentReadout(nn.Module):
    """ws -> standardized labels [N, L]: a regression from w (the mean over layers, standardized per dimension) to
    each label (standardized over the pool), fitted by `fit`; differentiable in ws. The attribute judge of
    `AttributeExchangeModel` (the training loop's `G`), fitted on the labeled pool.

    The linear part is a ridge regression solved in closed form; with `hidden` > 0 an MLP correction (zero at the
    start) is then fitted to its residual with Adam, for labels that are not linear in w (its fitted rows are
    frozen afterwards)."""

    def __init__(self, w_dim: int, names: Sequence[str], hidden: int = 0) -> None:
        super().__init__()
        self.names = list(names)
        if not self.names:
            raise ValueError("a readout needs at least one label name")
        n = len(self.names)
        for buf, shape in (("w_mean", (w_dim,)), ("w_std", (w_dim,)), ("weight", (n, w_dim)), ("bias", (n,)),
                           ("label_mean", (n,)), ("label_std", (n,))):
            self.register_buffer(buf, torch.zeros(shape))
        self.mlp = nn.Sequential(nn.Linear(w_dim, hidden), nn.SiLU(), nn.Linear(hidden, n)) if hidden else None
        self.r2_: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        """Whether `fit` ran (or a fitted state was loaded): every label has a spread."""
        return bool((self.label_std > 0).all())

    def fit(self, w_pool: Any, labels: Any, alpha: float = 1.0, steps: int = 1000, lr: float = 1e-3,
            seed: int = 0, held_out: float = 0.1) -> LatentReadout:
        """Fit on w [N, w_dim] (or ws) and labels [N, L] (columns in `names` order): the ridge (penalty `alpha`),
        then, with an MLP, `steps` full-batch Adam steps on its squared error (seeded). A random `held_out`
        fraction of the pool is left out of the fit and scores it: `r2_`, each label's R^2 there (how much of it
        the readout holds; with no rows held out, in-sample)."""
        w = pool_w(w_pool, self.w_mean.shape[0]).double().cpu().numpy()
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim != 2 or y.shape != (len(w), len(self.names)):
            raise LatentError(f"labels must be [{len(w)}, {len(self.names)}] (one column per name in "
                              f"{self.names}), got {y.shape}")
        if not np.isfinite(y).all():
            raise LatentError("labels contain NaN or inf")
        if len(w) < 3:
            raise LatentError(f"a readout needs at least 3 samples, got {len(w)}")
        perm = np.random.default_rng(seed).permutation(len(w))
        n_test = int(round(held_out * len(w))) if 0 < held_out < 1 and len(w) >= 20 else 0
        test, train = perm[:n_test], (perm[n_test:] if n_test else perm)
        test = test if n_test else train
        w_mean, w_std = w[train].mean(0), w[train].std(0).clip(min=1e-6)
        y_mean, y_std = y[train].mean(0), y[train].std(0)
        flat = [self.names[i] for i in np.flatnonzero(y_std < 1e-8)]
        if flat:
            raise LatentError(f"labels {flat} do not vary over the pool; they cannot be read or exchanged")
        x, t = (w - w_mean) / w_std, (y - y_mean) / y_std
        ridge = Ridge(alpha=alpha).fit(x[train], t[train])
        for name, value in (("w_mean", w_mean), ("w_std", w_std), ("weight", ridge.coef_), ("bias", ridge.intercept_),
                            ("label_mean", y_mean), ("label_std", y_std)):
            getattr(self, name).copy_(torch.as_tensor(value, dtype=torch.float32))
        xt, tt = (torch.as_tensor(v, dtype=torch.float32, device=self.w_mean.device) for v in (x, t))
        if self.mlp is not None:
            with torch.random.fork_rng(devices=[]), torch.enable_grad():  # seeded, the caller's RNG untouched
                torch.manual_seed(seed)
                self.mlp[0].reset_parameters()
                nn.init.zeros_(self.mlp[2].weight)
                nn.init.zeros_(self.mlp[2].bias)
                self.mlp.requires_grad_(True)
                opt = torch.optim.Adam(self.mlp.parameters(), lr=lr)
                for _ in range(steps):
                    opt.zero_grad()
                    F.mse_loss(self._read(xt[train]), tt[train]).backward()
                    opt.step()
            self.mlp.requires_grad_(False)
        with torch.no_grad():
            pred, true = self._read(xt[test]), tt[test]
            self.r2_ = (1 - ((pred - true) ** 2).mean(0) / true.var(0, unbiased=False)).cpu().numpy()
        return self

    def _read(self, x: torch.Tensor) -> torch.Tensor:
        """Standardized w [N, w_dim] -> standardized labels."""
        y = x @ self.weight.T + self.bias
        return y + self.mlp(x) if self.mlp is not None else y

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        if not self.fitted:
            raise RuntimeError("LatentReadout.fit must run before the readout reads ws")
        w = ws.mean(1) if ws.ndim == 3 else ws
        return self._read((w - self.w_mean) / self.w_std)


def label_columns(labels: Mapping[str, Any], groups: Mapping[str, Sequence[str]], held: Sequence[str] = (),
                  components: int = 8, seed: int = 0) -> tuple[dict[str, list[str]], list[str], np.ndarray]:
    """The labels a label-driven model reads, as scalar columns: (groups with map names expanded, held likewise,
    matrix [N, L] in the groups' order then the held ones').

    `labels` maps names to arrays [N] (a scalar label: one column) or [N, ...] (a map, such as the 3D decomposer's
    canonical depth or albedo: its `components` leading principal components over the N samples, named NAME_pc0,
    NAME_pc1, ..., so that a group 'identity=depth,albedo' reads a face's shape and colour as the decomposer sees
    them). Memory-mapped arrays (a `LatentBank`'s labels) are read one label at a time.
    """
    from sklearn.decomposition import PCA

    columns: dict[str, tuple[list[str], np.ndarray]] = {}
    names = [n for ns in groups.values() for n in ns] + list(held)
    for name in dict.fromkeys(names):
        if name not in labels:
            raise KeyError(f"no label {name!r}; labels: {sorted(labels)}")
        value = np.asarray(labels[name], dtype=np.float32)
        if value.ndim == 1:
            columns[name] = ([name], value[:, None])
            continue
        flat = value.reshape(len(value), -1)
        k = min(int(components), flat.shape[1], len(flat) - 1)
        if k < 1:
            raise LatentError(f"map label {name!r}: no principal component to keep ({len(flat)} samples)")
        scores = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit_transform(flat)
        columns[name] = ([f"{name}_pc{i}" for i in range(k)], scores.astype(np.float32))
    expanded = {g: [c for n in ns for c in columns[n][0]] for g, ns in groups.items()}
    held_cols = [c for n in held for c in columns[n][0]]
    matrix = np.concatenate([columns[n][1] for n in names], axis=1)
    return expanded, held_cols, matrix
