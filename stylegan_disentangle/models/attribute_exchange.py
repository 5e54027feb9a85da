"""AttributeExchangeModel: exemplar-based transfer of named attributes by exchanging parts of a latent code (ELEGANT
style) on W of a frozen generator.

After Xiao, Hong and Ma, "ELEGANT: Exchanging Latent Encodings with GAN for Transferring Multiple Face Attributes"
(ECCV 2018). An encoder maps w to one code part per attribute; transferring attribute i from an exemplar B to a
target A swaps part i of their codes, and a decoder that reads the swapped code together with A's own code gives a
residual move of A. Several attributes move at once by swapping several parts, and what moves is *that exemplar's*
version of the attribute (a part holds everything the attribute's labels say of a face: a group such as
'expression' = smile, mouth opening, brows moves as the exemplar has it). Here:

    encoder: w -> z = [z_1, ..., z_K]   (K attributes, `part_dim` each)
    swap:    z_AB = A's parts, with the parts of the chosen attributes from B
    result:  x = a + R(z_AB, z_A) - R(z_A, z_A)        (R: the decoder, a residual in W)

The difference form makes the unswapped code return A exactly (ELEGANT's reconstruction loss, weight 5 in its
trainer, holds by construction), and `strength` scales the swap along the code (ELEGANT's linear interpolation
``z_A + t (z_AB - z_A)``).

What the attributes are comes from labels, as ELEGANT's did from CelebA's: any labeler's scalar labels on a w pool
(the synthetic oracle's factors, the 3D decomposer's pose and light, a user's attribute classifier). ELEGANT judged
its swaps with a discriminator conditioned on the labels; in W the attribute judgement is a frozen differentiable
readout of the labels from w (`LatentReadout`, a ridge regression fitted on the labeled pool, passed to the training
loop as its `G`), and a small latent discriminator keeps the results inside W's distribution. Losses on an
`ExchangeSampler` batch (pairs A, B that lie on opposite sides of one attribute; ELEGANT alternates over the
attributes the same way), for both swaps (A takes B's part, B takes A's):

- ``take``: the readout of the swapped attribute's labels on the result equals the exemplar's (squared error in
  standardized label units);
- ``keep``: the readout of every other label (the other attributes' and the `held` ones: labels that are never
  swapped, e.g. identity measurements) equals the target's own;
- ``move``: the squared length of the move (relative to W's mean variance): of the moves that satisfy the readout,
  the shortest, so that what no label measures stays as it was (ELEGANT's residual images serve the same end);
- ``adv`` (ELEGANT's adversarial term, off by default): the latent discriminator's logistic loss on real ws against
  results. It is trained through a gradient reversal, so that one optimizer (the shared training loop's) trains the
  discriminator to tell the two apart and the encoder and decoder to make them alike. On the synthetic world it
  made every swap worse (weight 0.1: the unlabeled identity moved 1.4-1.8 times as much, the swapped attribute's
  error rose from 0.013-0.016 to 0.018-0.020): W's samples have correlated factors, and a discriminator of W's
  joint distribution pulls a face whose pose changed towards the identity that usually comes with that pose,
  which is the entanglement a swap must avoid. The readout's MLP and the move term keep results near W without it.

``total = take_weight*take + keep_weight*keep + move_weight*move + adv_weight*adv``. Task:
`swap_attributes(target, exemplar, attributes)`. Figures on the synthetic world: BENCHMARKS.md, "Attribute
exchange".
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
from ._nets import LinearPlusMLP, reverse_gradient
from .base import StandardizedWModel
from .io import register_model_kind

__all__ = ["AttributeExchangeModel", "ExchangeSampler", "LatentReadout", "parse_attribute_spec"]


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
    _check_attributes(attributes, (), spec)
    return attributes


def _pool_w(w_pool: Any, w_dim: int | None, what: str = "w_pool") -> torch.Tensor:
    """w [N, w_dim] or ws [N, num_ws, w_dim] (tensor or array) -> w [N, w_dim] (the mean over layers), checked."""
    x = w_pool if isinstance(w_pool, torch.Tensor) else torch.as_tensor(np.asarray(w_pool))
    x = x[:, None] if x.ndim == 2 else x
    return check_ws(x, None, x.shape[-1] if w_dim is None else w_dim, what).mean(1)


def _check_attributes(attributes: Mapping[str, Sequence[str]], held: Sequence[str], what: Any) -> None:
    if not attributes:
        raise ValueError(f"{what!r}: no attribute given")
    labels = [lab for labs in attributes.values() for lab in labs] + list(held)
    twice = sorted({lab for lab in labels if labels.count(lab) > 1})
    if twice:
        raise ValueError(f"{what!r}: labels {twice} are named more than once (each label belongs to one attribute or "
                         "to the held labels)")


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
        self.fitted = False
        self.r2_: np.ndarray | None = None

    def fit(self, w_pool: Any, labels: Any, alpha: float = 1.0, steps: int = 1000, lr: float = 1e-3,
            seed: int = 0, held_out: float = 0.1) -> LatentReadout:
        """Fit on w [N, w_dim] (or ws) and labels [N, L] (columns in `names` order): the ridge (penalty `alpha`),
        then, with an MLP, `steps` full-batch Adam steps on its squared error (seeded). A random `held_out`
        fraction of the pool is left out of the fit and scores it: `r2_`, each label's R^2 there (how much of it
        the readout holds; with no rows held out, in-sample)."""
        w = _pool_w(w_pool, self.w_mean.shape[0]).double().cpu().numpy()
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
        self.fitted = True
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


class ExchangeSampler:
    """Batches for `AttributeExchangeModel`: {'a', 'b': ws [B, num_ws, w_dim], 'mask': [B, K] (1 where the
    attribute is swapped)}. Batch `step` trains attribute ``step % K`` (ELEGANT alternates over its attributes):
    A is drawn from the pool's faces above the median of that attribute's score, B from those below (the score: its
    standardized labels' first principal component, the label itself for one label), so that every pair differs in
    it. `labels` [N, L] are the pool's labels, `attribute_columns[k]` the columns of attribute k. The last
    `val_size` codes are kept for `validation` (random pairs, row r swapping attribute r % K). Deterministic: batch
    `step` depends only on (`seed`, `step`).
    """

    def __init__(self, w_pool: Any, labels: Any, attribute_columns: Sequence[Sequence[int]], num_ws: int,
                 batch_size: int = 256, seed: int = 0, val_size: int = 512) -> None:
        w = _pool_w(w_pool, None)
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim != 2 or len(y) != len(w):
            raise LatentError(f"labels must be [{len(w)}, L], got {y.shape}")
        if len(w) < val_size + 4 or val_size < 2:
            raise LatentError(f"the pool has {len(w)} codes; need at least val_size + 4 = {val_size + 4} and "
                              "val_size >= 2")
        self.w, self.num_ws, self.batch_size, self.seed, self.val_size = w, int(num_ws), batch_size, seed, val_size
        self.n_attributes = len(attribute_columns)
        n_train = len(w) - val_size
        self.high, self.low = [], []
        for cols in attribute_columns:
            block = y[:n_train, list(cols)]
            block = (block - block.mean(0)) / block.std(0).clip(min=1e-12)
            score = block @ np.linalg.svd(block, full_matrices=False)[2][0]
            order = np.argsort(score, kind="stable")
            self.low.append(torch.as_tensor(order[: n_train // 2]))
            self.high.append(torch.as_tensor(order[n_train // 2:]))
        self._val: dict[str, torch.Tensor] | None = None

    def _codes(self, rows: torch.Tensor) -> torch.Tensor:
        return self.w[rows][:, None].expand(-1, self.num_ws, -1).contiguous()

    def sample(self, step: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step))
        k = int(step) % self.n_attributes
        i = self.high[k][torch.randint(len(self.high[k]), (self.batch_size,), generator=gen)]
        j = self.low[k][torch.randint(len(self.low[k]), (self.batch_size,), generator=gen)]
        mask = torch.zeros(self.batch_size, self.n_attributes)
        mask[:, k] = 1
        return {"a": self._codes(i).to(device), "b": self._codes(j).to(device), "mask": mask.to(device)}

    def validation(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        if self._val is None:
            i = torch.arange(len(self.w) - self.val_size, len(self.w))
            mask = F.one_hot(torch.arange(self.val_size) % self.n_attributes, self.n_attributes).float()
            self._val = {"a": self._codes(i), "b": self._codes(i.roll(1)), "mask": mask}
        return {k: v.to(device) for k, v in self._val.items()}


@register_model_kind
class AttributeExchangeModel(StandardizedWModel):
    """One code part per attribute; `swap_attributes` gives a target the exemplar's version of the chosen
    attributes. See the module docstring for the losses.

    Parameters
    ----------
    num_ws, w_dim : int
        The generator's latent shape.
    attributes : mapping name -> label names
        The attributes, in order, each with the labels that describe it (`parse_attribute_spec` reads the CLI's
        form).
    held : label names
        Labels that are never swapped but must stay as they were (e.g. identity measurements).
    part_dim : int
        Code size of each attribute's part.
    hidden : int
        Hidden width of the MLP branch of the encoder and the decoder, and of the latent discriminator (0: linear
        nets and a discriminator of width 64). The discriminator exists only with `adv_weight` > 0.
    w_plus : bool
        Encode the flattened W+ code (True) or the mean over layers (False).
    take_weight, keep_weight, move_weight, adv_weight : float
        Loss weights.
    generator_sha256 : str, optional
        The generator's fingerprint (`latents.generator_fingerprint`); checked by `load`.

    Examples
    --------
    >>> readout = LatentReadout(G.w_dim, model.label_names).fit(w_pool, labels)
    >>> sampler = ExchangeSampler(w_pool, labels, model.attribute_columns, G.num_ws)
    >>> train_model(model.set_normalization(w_pool), sampler, "runs/ex", steps=2000, G=readout)
    >>> ws = model.swap_attributes(target_ws, exemplar_ws, ["expression"])
    """

    kind = "attribute-exchange"

    def __init__(self, num_ws: int, w_dim: int, attributes: Mapping[str, Sequence[str]], held: Sequence[str] = (),
                 part_dim: int = 8, hidden: int = 256, w_plus: bool = False, take_weight: float = 1.0,
                 keep_weight: float = 1.0, move_weight: float = 0.1, adv_weight: float = 0.0,
                 generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, w_plus, generator_sha256)
        attributes = {str(k): [str(v) for v in vs] for k, vs in dict(attributes).items()}
        held = [str(h) for h in held]
        _check_attributes(attributes, held, "attributes")
        if any(not labels for labels in attributes.values()):
            raise ValueError(f"every attribute needs at least one label, got {attributes}")
        if part_dim < 1:
            raise ValueError(f"part_dim must be positive, got {part_dim}")
        weights = {"take_weight": take_weight, "keep_weight": keep_weight, "move_weight": move_weight,
                   "adv_weight": adv_weight}
        bad = {k: v for k, v in weights.items() if not v >= 0}
        if bad:
            raise ValueError(f"loss weights must be >= 0, got {bad}")
        self.config.update(attributes=attributes, held=held, part_dim=part_dim, hidden=hidden, w_plus=w_plus,
                           **weights)
        self.attributes, self.held, self.part_dim = attributes, held, part_dim
        k = len(attributes)
        self.encoder = LinearPlusMLP(self.d_in, k * part_dim, hidden)
        self.decoder = LinearPlusMLP(2 * k * part_dim, self.d_in, hidden)
        width = hidden or 64
        self.discriminator = nn.Sequential(nn.Linear(self.d_in, width), nn.LeakyReLU(0.2), nn.Linear(width, width),
                                           nn.LeakyReLU(0.2), nn.Linear(width, 1)) if adv_weight > 0 else None
        membership = torch.zeros(k, len(self.label_names))
        for a, cols in enumerate(self.attribute_columns):
            membership[a, cols] = 1
        self.register_buffer("membership", membership, persistent=False)

    # --- names ----------------------------------------------------------------------------------------------------
    @property
    def attribute_names(self) -> list[str]:
        return list(self.attributes)

    @property
    def label_names(self) -> list[str]:
        """Every label the model reads: the attributes' labels in order, then the held ones (a readout's columns)."""
        return [lab for labels in self.attributes.values() for lab in labels] + list(self.held)

    @property
    def attribute_columns(self) -> list[list[int]]:
        """Columns of `label_names` that belong to each attribute."""
        cols, start = [], 0
        for labels in self.attributes.values():
            cols.append(list(range(start, start + len(labels))))
            start += len(labels)
        return cols

    def attribute_mask(self, attributes: str | Sequence[str] | None) -> torch.Tensor:
        """Names (None: all) -> mask [K] (1 where swapped); ValueError naming the model's attributes otherwise."""
        names = self.attribute_names if attributes is None else [attributes] if isinstance(attributes, str) else \
            list(attributes)
        unknown = [n for n in names if n not in self.attributes]
        if unknown:
            raise ValueError(f"unknown attributes {unknown}; this model exchanges {self.attribute_names}")
        return torch.tensor([float(n in names) for n in self.attributes], device=self.device)

    # --- the nets -------------------------------------------------------------------------------------------------
    def _encode(self, ws: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._standardized(ws)).view(len(ws), len(self.attributes), self.part_dim)

    def _residual(self, z_new: torch.Tensor, z_own: torch.Tensor) -> torch.Tensor:
        """R(z_new, z_own) - R(z_own, z_own) as a move of ws [N, num_ws, w_dim]."""
        own = z_own.flatten(1)
        step = self.decoder(torch.cat([z_new.flatten(1), own], 1)) - self.decoder(torch.cat([own, own], 1))
        return self._unflat(step) * self.w_std

    def _swap(self, a: torch.Tensor, z_a: torch.Tensor, z_b: torch.Tensor, mask: torch.Tensor,
              strength: float = 1.0) -> torch.Tensor:
        z_ab = torch.where(mask[..., None] > 0, z_b, z_a)
        return a + self._residual(z_a + strength * (z_ab - z_a), z_a)

    def encode(self, ws: Any) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]) -> the attribute parts [N, K, part_dim]."""
        return self._encode(self.check_ws(ws))

    @torch.no_grad()
    def swap_attributes(self, target: Any, exemplar: Any, attributes: str | Sequence[str] | None = None,
                        strength: float = 1.0) -> torch.Tensor:
        """The target faces with the exemplars' version of `attributes` (names; None: all): ws [N, num_ws, w_dim]
        (or w [N, w_dim]; N may be 1 on either side) -> ws [N, num_ws, w_dim]. `strength` t moves the swapped parts
        by t of the way (0: the target itself, exactly; 1: the swap; beyond 1: extrapolation)."""
        if not np.isfinite(strength):
            raise ValueError(f"strength must be finite, got {strength}")
        a, b = self.check_ws(target, "target"), self.check_ws(exemplar, "exemplar")
        if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise LatentError(f"target has {a.shape[0]} codes and exemplar {b.shape[0]}; give equal counts or 1")
        mask = self.attribute_mask(attributes)
        n = max(a.shape[0], b.shape[0])
        a = a.expand(n, -1, -1)
        return self._swap(a, self._encode(a), self._encode(b).expand(n, -1, -1), mask.expand(n, -1), strength)

    # --- training -------------------------------------------------------------------------------------------------
    def _results(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        a, b = self.check_ws(batch["a"], "batch['a']"), self.check_ws(batch["b"], "batch['b']")
        mask = batch["mask"].to(a.device).float()
        z_a, z_b = self._encode(a), self._encode(b)
        return a, b, mask, self._swap(a, z_a, z_b, mask), self._swap(b, z_b, z_a, mask)

    def _readout_terms(self, readout: nn.Module, a, b, mask, x_ab, x_ba) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            r_a, r_b = readout(a), readout(b)
        taken = (mask @ self.membership).repeat(2, 1)  # [2B, L]: 1 on the swapped attribute's labels
        target = torch.cat([torch.where(taken[: len(a)] > 0, r_b, r_a), torch.where(taken[len(a):] > 0, r_a, r_b)])
        err = (readout(torch.cat([x_ab, x_ba])) - target) ** 2
        return {"take": (err * taken).sum() / taken.sum().clamp_min(1),
                "keep": (err * (1 - taken)).sum() / (1 - taken).sum().clamp_min(1)}

    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses on an ExchangeSampler batch; `G` is the attribute readout (a `LatentReadout`) or None."""
        a, b, mask, x_ab, x_ba = self._results(batch)
        c = self.config
        move = (self._rel_mse(x_ab, a) + self._rel_mse(x_ba, b)) / 2
        losses = {"move": move}
        total = c["move_weight"] * move
        if G is not None:
            losses.update(self._readout_terms(G, a, b, mask, x_ab, x_ba))
            total = total + c["take_weight"] * losses["take"] + c["keep_weight"] * losses["keep"]
        if self.discriminator is not None:
            real = self.discriminator(self._standardized(torch.cat([a, b])).detach())
            fake = self.discriminator(reverse_gradient(self._standardized(torch.cat([x_ab, x_ba]))))
            losses["adv"] = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                             + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2
            total = total + c["adv_weight"] * losses["adv"]
        losses["total"] = total
        return losses

    @torch.no_grad()
    def validation_metric(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> float:
        """take + keep (the readout's errors; without a readout, neither) + move_weight * move: lower is better.
        The adversarial term is left out (it measures the discriminator as much as the model)."""
        losses = self.training_losses(batch, G=G)
        return float(losses.get("take", 0.0) + losses.get("keep", 0.0) + self.config["move_weight"] * losses["move"])
