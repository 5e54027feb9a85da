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
readout of the labels from w (`LatentReadout`: a ridge regression with an MLP correction, fitted on the labeled
pool, passed to the training loop as its `G`). Losses on an
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
  error rose from 0.013-0.016 to 0.017-0.021): W's samples have correlated factors, and a discriminator of W's
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
from torch import nn

from ..errors import LatentError
from ._nets import LinearPlusMLP, reverse_gradient
from .base import StandardizedWModel, checked_weights
from .io import register_model_kind
from .readout import checked_label_groups, pool_w

__all__ = ["AttributeExchangeModel", "ExchangeSampler"]


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
        w = pool_w(w_pool, None)
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
        held = [str(h) for h in held]
        attributes = checked_label_groups(attributes, held, "attributes")
        if part_dim < 1:
            raise ValueError(f"part_dim must be positive, got {part_dim}")
        weights = checked_weights(take_weight=take_weight, keep_weight=keep_weight, move_weight=move_weight,
                                  adv_weight=adv_weight)
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
