"""FactorMapper: independent factor codes -> W of a frozen generator (DiscoFaceGAN style).

After Deng, Yang, Chen, Wen and Tong, "Disentangled and Controllable Face Image Generation via 3D
Imitative-Contrastive Learning" (CVPR 2020). There, independent latent factors (identity, expression, illumination,
pose, and noise for everything else) are each decoded to the coefficients of a 3D face model by a VAE trained on
real faces' coefficients, and the generator learns to draw faces whose measured coefficients imitate those, while
two samples that differ in one factor only must agree on everything else. Here the generator is frozen and a
mapper learns to produce its w:

    codes: one per factor, z_f ~ N(0, I) of the factor's label count, and noise z_n ~ N(0, I) (`noise_dim`)
    prior:  labels_f = mean_f + L_f z_f        (a Gaussian of the pool's labels per factor: the VAE's role)
    mapper: (z_1, ..., z_K, z_n) -> w

The coefficients are labels: any labeler's scalar labels on a w pool, grouped into factors (the synthetic oracle's
factors; the 3D decomposer's pose and light readings, and its canonical depth and albedo maps as their leading
principal components, `readout.label_columns`; a user's classifiers). A `LatentReadout` fitted on the pool
measures them on the mapper's w; it is part of the model, because it also reads a real face's factor codes
(`encode`: z_f = L_f^-1 (readout_f(w) - mean_f); the noise code comes from a learned noise encoder). Losses on a
`FactorSampler` batch (real ws of the pool, prior codes, and the same codes with one factor redrawn):

- ``rec`` (the codes cover W: every face has codes that map back to it): mapper(encode(w)) -> w, squared error
  relative to W's mean variance;
- ``imitate``: the readout of mapper(z) gives the labels the codes ask for, for prior codes and redrawn ones
  (squared error in whitened label units);
- ``contrast``: two samples that differ in one factor only agree on everything else: the noise encoder reads the
  same noise from both (everything the labels do not measure: hair, background, the rest), and both read back as
  the noise they were made from;
- ``prior``: the noise codes of real faces have zero mean and identity covariance over the batch, so that prior
  noise draws faces like W's own.

``total = rec_weight*rec + imitate_weight*imitate + contrast_weight*contrast + prior_weight*prior``. Tasks:
`map_factors` (codes -> ws), `labels_to_codes` / `codes_to_labels`, `encode`, `edit` (a real face with one factor
replaced, as a residual move), `sample`. Figures on the synthetic world: BENCHMARKS.md, "Factor mapper".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LatentError
from ._nets import LinearPlusMLP
from .base import StandardizedWModel, checked_weights
from .io import register_model_kind
from .readout import LatentReadout, checked_label_groups, pool_w

__all__ = ["FactorMapper", "FactorSampler"]


_MIN_CORR_EIGENVALUE = 1e-6
"""Smallest eigenvalue of a factor's label correlation matrix on the pool below which its labels count as linearly
dependent (one label a combination of the others up to a correlation of about 1 - 5e-7)."""


class FactorSampler:
    """Batches for `FactorMapper`: {'w': real ws [B, num_ws, w_dim] of the pool, 'z': prior codes [B, D] (every
    factor's code, then the noise), 'z_alt': the same codes with factor ``step % K`` redrawn, 'group': the redrawn
    factor's index per row [B]}. `code_dims` are the factors' code sizes, `noise_dim` the noise's. The last
    `val_size` codes of the pool are kept for `validation` (row r redraws factor r % K). Deterministic: batch `step`
    depends only on (`seed`, `step`)."""

    def __init__(self, w_pool: Any, code_dims: Sequence[int], noise_dim: int, num_ws: int, batch_size: int = 256,
                 seed: int = 0, val_size: int = 512) -> None:
        w = pool_w(w_pool, None)
        if len(w) < val_size + 4 or val_size < 2:
            raise LatentError(f"the pool has {len(w)} codes; need at least val_size + 4 = {val_size + 4} and "
                              "val_size >= 2")
        self.w, self.num_ws, self.batch_size, self.seed, self.val_size = w, int(num_ws), batch_size, seed, val_size
        self.bounds = np.cumsum([0, *code_dims]).tolist()
        self.dim = self.bounds[-1] + int(noise_dim)
        self._val: dict[str, torch.Tensor] | None = None

    def _batch(self, rows: torch.Tensor, groups: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
        n = len(rows)
        z = torch.randn(n, self.dim, generator=gen)
        fresh = torch.randn(n, self.dim, generator=gen)
        redraw = torch.zeros(n, self.dim, dtype=torch.bool)
        for k in range(len(self.bounds) - 1):
            redraw[groups == k, self.bounds[k]:self.bounds[k + 1]] = True
        return {"w": self.w[rows][:, None].expand(-1, self.num_ws, -1).contiguous(), "z": z,
                "z_alt": torch.where(redraw, fresh, z), "group": groups}

    def sample(self, step: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step))
        rows = torch.randint(len(self.w) - self.val_size, (self.batch_size,), generator=gen)
        groups = torch.full((self.batch_size,), int(step) % (len(self.bounds) - 1))
        return {k: v.to(device) for k, v in self._batch(rows, groups, gen).items()}

    def validation(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        if self._val is None:
            gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 - 1)
            rows = torch.arange(len(self.w) - self.val_size, len(self.w))
            self._val = self._batch(rows, torch.arange(self.val_size) % (len(self.bounds) - 1), gen)
        return {k: v.to(device) for k, v in self._val.items()}


@register_model_kind
class FactorMapper(StandardizedWModel):
    """Independent factor codes and noise -> w; see the module docstring for the losses.

    Parameters
    ----------
    num_ws, w_dim : int
        The generator's latent shape.
    factors : mapping name -> label names
        The factors, in order, each with the labels that measure it (`parse_attribute_spec` reads the CLI's form);
        a factor's code has one dimension per label.
    noise_dim : int
        Size of the noise code (everything the labels do not measure).
    hidden : int
        Hidden width of the MLP branch of the mapper and the noise encoder (0 = linear).
    readout_hidden : int
        MLP width of the readout that measures the labels (0: ridge only).
    w_plus : bool
        Map to (and encode from) the flattened W+ code (True) or one w for every layer (False).
    rec_weight, imitate_weight, contrast_weight, prior_weight : float
        Loss weights.
    generator_sha256 : str, optional
        The generator's fingerprint (`latents.generator_fingerprint`); checked by `load`.

    Examples
    --------
    >>> mapper = FactorMapper(G.num_ws, G.w_dim, {"pose": ["yaw", "pitch", "roll"], "light": ["light_azimuth"]})
    >>> mapper.fit_prior(w_pool, labels).set_normalization(w_pool)
    >>> sampler = FactorSampler(w_pool, mapper.code_dims, mapper.noise_dim, G.num_ws)
    >>> train_model(mapper, sampler, "runs/fm", steps=3000)
    >>> ws = mapper.map_factors({"pose": mapper.labels_to_codes(...)["pose"]}, n=8, seed=0)
    """

    kind = "factor-mapper"

    def __init__(self, num_ws: int, w_dim: int, factors: Mapping[str, Sequence[str]], noise_dim: int = 32,
                 hidden: int = 256, readout_hidden: int = 128, w_plus: bool = False, rec_weight: float = 1.0,
                 imitate_weight: float = 1.0, contrast_weight: float = 1.0, prior_weight: float = 0.1,
                 generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, w_plus, generator_sha256)
        factors = checked_label_groups(factors, (), "factors")
        if noise_dim < 0:
            raise ValueError(f"noise_dim must be >= 0, got {noise_dim}")
        weights = checked_weights(rec_weight=rec_weight, imitate_weight=imitate_weight,
                                  contrast_weight=contrast_weight, prior_weight=prior_weight)
        self.config.update(factors=factors, noise_dim=noise_dim, hidden=hidden, readout_hidden=readout_hidden,
                           w_plus=w_plus, **weights)
        self.factors, self.noise_dim = factors, int(noise_dim)
        n_labels = sum(self.code_dims)
        self.readout = LatentReadout(w_dim, self.label_names, hidden=readout_hidden)
        self.register_buffer("label_mean", torch.zeros(n_labels))
        self.register_buffer("label_chol", torch.eye(n_labels))  # block-diagonal: one Cholesky factor per factor
        self.mapper = LinearPlusMLP(n_labels + self.noise_dim, self.d_in, hidden)
        self.noise_encoder = LinearPlusMLP(self.d_in, self.noise_dim, hidden) if self.noise_dim else None

    # --- names ----------------------------------------------------------------------------------------------------
    @property
    def factor_names(self) -> list[str]:
        return list(self.factors)

    @property
    def label_names(self) -> list[str]:
        """Every label the model measures, factor by factor (the columns of `labels_to_codes`' input)."""
        return [lab for labels in self.factors.values() for lab in labels]

    @property
    def code_dims(self) -> list[int]:
        return [len(labels) for labels in self.factors.values()]

    def _slices(self) -> dict[str, slice]:
        bounds = np.cumsum([0, *self.code_dims])
        return {name: slice(int(a), int(b)) for name, a, b in zip(self.factors, bounds[:-1], bounds[1:])}

    # --- the label prior and the readout (fitted on the labeled pool) ----------------------------------------------
    def fit_prior(self, w_pool: Any, labels: Any, seed: int = 0, **readout_args: Any) -> FactorMapper:
        """Fit the readout on the pool (w [N, w_dim] or ws, labels [N, L] in `label_names` order) and each factor's
        Gaussian label prior on what the readout reads there (so that a code imitated exactly reads back exactly);
        `readout_args` go to `LatentReadout.fit`. Call before training."""
        w = pool_w(w_pool, self.w_dim).to(self.device)
        self.readout.fit(w, labels, seed=seed, **readout_args)
        with torch.no_grad():
            read = torch.cat([self.readout(w[i:i + 4096]) for i in range(0, len(w), 4096)]).double()
        mean, chol = read.mean(0), torch.zeros(read.shape[1], read.shape[1], dtype=torch.float64, device=w.device)
        for name, sl in self._slices().items():
            cov = torch.cov((read[:, sl] - mean[sl]).T).reshape(sl.stop - sl.start, -1)
            # dependence is judged on the correlations (scale-free): the jitter that keeps the Cholesky stable would
            # otherwise hide an exact dependence, whose whitened code then multiplies any departure from it ~1e3-fold
            std = cov.diagonal().clamp_min(0).sqrt()
            corr = cov / (std[:, None] * std[None, :]).clamp_min(1e-300)
            if bool((std <= 1e-9).any()) or float(torch.linalg.eigvalsh(corr).min()) < _MIN_CORR_EIGENVALUE:
                raise LatentError(f"the labels of factor {name!r} ({self.factors[name]}) are linearly dependent "
                                  "(or constant) on the pool; drop the redundant ones")
            chol[sl, sl] = torch.linalg.cholesky(cov + 1e-6 * torch.eye(len(cov), dtype=cov.dtype, device=cov.device))
        self.label_mean.copy_(mean.float())
        self.label_chol.copy_(chol.float())
        return self

    def _require_prior(self) -> None:
        if not self.readout.fitted:
            raise RuntimeError("FactorMapper.fit_prior must run first (it fits the readout and the label prior)")

    def _codes_of_read(self, read: torch.Tensor) -> torch.Tensor:
        """Standardized readout [N, L] -> whitened factor codes [N, L]."""
        self._require_prior()
        return torch.linalg.solve_triangular(self.label_chol, (read - self.label_mean).T, upper=False).T

    def _read_of_codes(self, codes: torch.Tensor) -> torch.Tensor:
        self._require_prior()
        return codes @ self.label_chol.T + self.label_mean

    @torch.no_grad()
    def labels_to_codes(self, labels: Any) -> dict[str, torch.Tensor]:
        """Raw label values [N, L] (`label_names` order, the labeler's units) -> {factor: code [N, n_f]}."""
        y = torch.as_tensor(np.asarray(labels), dtype=torch.float32, device=self.device)
        if y.ndim != 2 or y.shape[1] != len(self.label_names):
            raise LatentError(f"labels must be [N, {len(self.label_names)}] ({self.label_names}), got "
                              f"{tuple(y.shape)}")
        codes = self._codes_of_read((y - self.readout.label_mean) / self.readout.label_std)
        return {name: codes[:, sl] for name, sl in self._slices().items()}

    @torch.no_grad()
    def codes_to_labels(self, codes: Mapping[str, Any]) -> torch.Tensor:
        """{factor: code [N, n_f]} (every factor) -> the labels they ask for [N, L], in the labeler's units."""
        z = self._code_matrix(codes, None, None)[:, : sum(self.code_dims)]
        return self._read_of_codes(z) * self.readout.label_std + self.readout.label_mean

    # --- the nets -------------------------------------------------------------------------------------------------
    def _map(self, z: torch.Tensor) -> torch.Tensor:
        return self._destandardized(self.mapper(z))

    def _noise_of(self, ws: torch.Tensor) -> torch.Tensor:
        if self.noise_encoder is None:
            return ws.new_zeros(len(ws), 0)
        return self.noise_encoder(self._standardized(ws))

    def _encode(self, ws: torch.Tensor) -> torch.Tensor:
        return torch.cat([self._codes_of_read(self.readout(ws)), self._noise_of(ws)], 1)

    def _code_matrix(self, codes: Mapping[str, Any] | None, noise: Any, n: int | None,
                     gen: torch.Generator | None = None) -> torch.Tensor:
        """{factor: [N, n_f] or [n_f]} and noise [N, noise_dim] -> z [N, D]; factors left out (and the noise when
        None) are drawn from the prior with `gen`."""
        codes = dict(codes or {})
        unknown = sorted(set(codes) - set(self.factors))
        if unknown:
            raise ValueError(f"unknown factors {unknown}; this mapper has {self.factor_names}")
        given = [torch.as_tensor(np.asarray(v), dtype=torch.float32) for v in codes.values()]
        if noise is not None:
            given.append(torch.as_tensor(np.asarray(noise), dtype=torch.float32))
        rows = {len(g) for g in given if g.ndim == 2} | ({int(n)} if n is not None else set())
        if len(rows) > 1:
            raise LatentError(f"codes and noise give different counts {sorted(rows)}; give one N")
        n = rows.pop() if rows else 1
        parts = []
        for name, sl in list(self._slices().items()) + [("noise", slice(0, self.noise_dim))]:
            value = noise if name == "noise" else codes.get(name)
            size = sl.stop - sl.start
            if value is None:
                parts.append(torch.randn(n, size, generator=gen))
                continue
            v = torch.as_tensor(np.asarray(value), dtype=torch.float32)
            v = v.expand(n, -1) if v.ndim == 1 or len(v) == 1 else v
            if v.shape != (n, size) or not torch.isfinite(v).all():
                raise LatentError(f"the {name} code must be finite [N, {size}] (or [{size}]), got "
                                  f"{tuple(v.shape)}")
            parts.append(v.reshape(n, size))
        return torch.cat(parts, 1).to(self.device)

    @torch.no_grad()
    def map_factors(self, codes: Mapping[str, Any] | None = None, noise: Any = None, n: int | None = None,
                    seed: int = 0) -> torch.Tensor:
        """Codes -> ws [N, num_ws, w_dim]. `codes`: {factor: [N, n_f] or [n_f]}; factors left out, and the noise
        when None, are drawn from N(0, I) (seeded by `seed`), so ``map_factors(n=8)`` samples 8 faces."""
        gen = torch.Generator().manual_seed(int(seed))
        return self._map(self._code_matrix(codes, noise, n, gen))

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> torch.Tensor:
        """n faces from the prior: ws [n, num_ws, w_dim]."""
        return self.map_factors(n=n, seed=seed)

    @torch.no_grad()
    def encode(self, ws: Any) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Real faces' codes: ws [N, num_ws, w_dim] (or w) -> ({factor: code [N, n_f]}, noise [N, noise_dim])."""
        z = self._encode(self.check_ws(ws))
        return {name: z[:, sl] for name, sl in self._slices().items()}, z[:, sum(self.code_dims):]

    @torch.no_grad()
    def edit(self, ws: Any, codes: Mapping[str, Any], mode: str = "residual") -> torch.Tensor:
        """Real faces with the given factors' codes replaced: ws [N, ...] -> ws. 'residual' (default):
        w + map(z') - map(z), which keeps what the mapper does not reproduce of w; 'direct': map(z')."""
        if mode not in ("residual", "direct"):
            raise ValueError(f"mode must be 'residual' or 'direct', got {mode!r}")
        w = self.check_ws(ws)
        z = self._encode(w)
        own = {name: z[:, sl] for name, sl in self._slices().items()}
        new = self._code_matrix({**own, **dict(codes)}, z[:, sum(self.code_dims):], len(w))
        out = self._map(new)
        return out + w - self._map(z) if mode == "residual" else out

    # --- training -------------------------------------------------------------------------------------------------
    def _split(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = sum(self.code_dims)
        return z[:, :k], z[:, k:]

    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses on a FactorSampler batch (the readout inside the model measures; `G` is not used)."""
        self._require_prior()
        w = self.check_ws(batch["w"], "batch['w']")
        z, z_alt = batch["z"].to(w.device), batch["z_alt"].to(w.device)
        z_real = self._encode(w)
        rec = self._rel_mse(self._map(z_real), w)
        x, x_alt = self._map(z), self._map(z_alt)
        factors, noise = self._split(torch.cat([z, z_alt]))
        both = torch.cat([x, x_alt])
        imitate = F.mse_loss(self._codes_of_read(self.readout(both)), factors)
        losses = {"rec": rec, "imitate": imitate}
        c = self.config
        total = c["rec_weight"] * rec + c["imitate_weight"] * imitate
        if self.noise_dim:
            read_noise = self._noise_of(both)
            half = len(x)
            losses["contrast"] = (F.mse_loss(read_noise, noise)
                                  + F.mse_loss(read_noise[:half], read_noise[half:])) / 2
            real_noise = z_real[:, sum(self.code_dims):]
            cov = torch.cov(real_noise.T).reshape(self.noise_dim, self.noise_dim)
            losses["prior"] = real_noise.mean(0).pow(2).mean() + (cov - torch.eye(self.noise_dim, device=w.device)
                                                                  ).pow(2).mean()
            total = total + c["contrast_weight"] * losses["contrast"] + c["prior_weight"] * losses["prior"]
        losses["total"] = total
        return losses

    @torch.no_grad()
    def validation_metric(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> float:
        """rec + imitate + contrast (without weights: each is a relative error of its own kind); lower is better."""
        losses = self.training_losses(batch, G=G)
        return float(losses["rec"] + losses["imitate"] + losses.get("contrast", 0.0))
