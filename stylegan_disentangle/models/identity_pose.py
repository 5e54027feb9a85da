"""IdentityPoseModel: identity / pose recombination on W of a frozen generator.

After Zeno, Kalinovskiy and Matveev, "IP-GAN: Learning Identity and Pose Disentanglement in Generative Adversarial
Networks" (2019): an identity vector from one face and a pose embedding from any other face are recombined into the
first person in the second pose. Here the two encoders and the decoder work on W, and the 3D decomposer is the
measuring instrument (`DecomposerMeasure`): a face's pose is the head rotation it reads, and what a recombination
keeps of the other face is what it reads of the rest (canonical depth and albedo, which are the same for every pose
of one face by the decomposer's construction, the albedo the image shows, the light). No labels are used anywhere.

    identity encoder: w -> identity [N, id_dim];   pose encoder: w -> pose [N, pose_dim]
    decoder: (identity, pose) -> w
    recombination (the transformation pathway): x_ab = a + decode(id(a), pose(b)) - decode(id(a), pose(a))

The residual form keeps what of `a` the codes do not hold (the reconstruction error cancels); 'direct' decodes
(id(a), pose(b)) alone. Losses on a `RecombinationSampler` batch (two independent faces a, b with their measures):

- ``rec`` (the generation pathway: the codes must be a complete representation): decode(id(w), pose(w)) -> w for
  a and b, squared error relative to W's mean variance;
- ``cycle``: the codes of x_ab read back as id(a) and pose(b) (each relative to its code's batch variance);
- ``pose``: the decomposer's pose of x_ab's image equals b's (standardized per rotation);
- ``identity``: the decomposer's kept readings of x_ab's image equal a's (standardized as `DecomposerMeasure`
  says);
- ``move``: the squared length of the move x_ab - a (relative to W's mean variance): of the moves that satisfy
  the instrument, the shortest, so that what the instrument does not measure (such as the expression) moves
  less. (W's covariance metric instead, where the shortest move is the one W's samples make on average when the
  readout changes, moved the expression more on the synthetic world, whose pose is correlated with other factors.)

``total = rec_weight*rec + cycle_weight*cycle + pose_weight*pose + identity_weight*identity + move_weight*move``.
The two measured terms need the measure, which the training loop passes as its `G` (`train_model(..., G=measure)`;
it reaches `validation_metric` too); without it they are left out. Task: `recombine(identity_from, pose_from)`.
Figures on the synthetic world: BENCHMARKS.md, "Identity / pose recombination".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import LatentError
from ..labels.base import crop_images
from ._nets import LinearPlusMLP
from .base import StandardizedWModel, checked_weights
from .io import register_model_kind

__all__ = ["KEPT_READINGS", "DecomposerMeasure", "IdentityPoseModel", "RecombinationSampler"]


KEPT_READINGS = ("depth", "albedo", "image_albedo", "light")


class DecomposerMeasure(nn.Module):
    """ws -> {'pose': [N, 3], 'identity': [N, D]}: a face's head rotation (the view's rx, ry, rz: pitch, yaw,
    roll), and what a recombination must keep of it, read by a 3D decomposer from the frozen generator's image;
    differentiable in ws.

    `kept` chooses the readings of the kept side, each a block of the 'identity' vector: 'depth' (canonical depth),
    'albedo' (netA's canonical albedo), 'image_albedo' (the albedo the image shows through the decomposition, which
    follows the small parts and the expression as drawn, `labels.decomposer.reconstruction.image_albedo`) and
    'light' (ambient, diffuse and direction). Maps are average-pooled to `identity_size` (which keeps the shape and
    colour of the face's parts and drops the decomposer's pixel noise). `crop`: the box of the image the
    decomposer reads (None: its own `input_crop`). `calibrate(ws_pool)` sets the standardization that `forward`
    applies: pose per rotation; each kept block to unit mean square around the pool's mean, then weighted so that
    every block counts the same in the vector's mean square (whatever its size); with `components` = k, the
    vector is then reduced to its k leading principal components over the pool, each scaled to unit variance, so
    that a small part's change (an eye, the mouth) counts as much as the skin colour's or the head size's, which
    dominate the maps' variance; `forward` refuses to read before it (`raw` gives the unstandardized readings). The
    generator and the decomposer are frozen (their parameters stop requiring gradients).
    """

    def __init__(self, G: nn.Module, decomposer: nn.Module, identity_size: int = 16,
                 kept: tuple[str, ...] | list[str] = KEPT_READINGS, components: int | None = 16,
                 crop: tuple[float, float, float, float] | None = None, noise_mode: str = "const") -> None:
        super().__init__()
        if int(identity_size) < 1:
            raise ValueError(f"identity_size must be >= 1, got {identity_size}")
        kept = tuple(kept)
        unknown = sorted(set(kept) - set(KEPT_READINGS))
        if unknown or not kept or len(set(kept)) != len(kept):
            raise ValueError(f"kept must name distinct readings among {list(KEPT_READINGS)}, got {list(kept)}")
        self.G, self.decomposer = G.eval().requires_grad_(False), decomposer.eval().requires_grad_(False)
        self.identity_size, self.kept, self.noise_mode = int(identity_size), kept, noise_mode
        if components is not None and not 1 <= int(components) <= self.identity_dims:
            raise ValueError(f"components must be in [1, {self.identity_dims}] (the kept readings' size), "
                             f"got {components}")
        self.components = None if components is None else int(components)
        self.crop = getattr(decomposer, "input_crop", None) if crop is None else crop
        self.register_buffer("pose_mean", torch.zeros(3))
        self.register_buffer("pose_std", torch.ones(3))
        self.register_buffer("identity_mean", torch.zeros(self.identity_dims))
        self.register_buffer("identity_scale", torch.ones(self.identity_dims))
        if self.components is not None:  # standardized readings -> whitened leading components
            self.register_buffer("identity_basis", torch.zeros(self.identity_dims, self.components))
        self.calibrated = False

    @property
    def block_dims(self) -> dict[str, int]:
        """Size of each kept block of the 'identity' vector, in order."""
        area = self.identity_size ** 2
        size = {"depth": area, "albedo": 3 * area, "image_albedo": 3 * area, "light": 4}
        return {k: size[k] for k in self.kept}

    @property
    def identity_dims(self) -> int:
        return sum(self.block_dims.values())

    def raw(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        """The unstandardized readings: rotation in degrees [N, 3] and the kept blocks [N, D]."""
        from ..labels.decomposer.reconstruction import image_albedo

        img = crop_images(self.G.synthesis(ws, noise_mode=self.noise_mode), self.crop)
        parts = ["depth", "view"] + (["albedo"] if "albedo" in self.kept else []) + \
            (["light"] if {"light", "image_albedo"} & set(self.kept) else [])
        out = self.decomposer.decompose(img, parts=parts)
        pooled = {"depth": lambda: out["canon_depth"][:, None], "albedo": lambda: out["canon_albedo"],
                  "image_albedo": lambda: image_albedo(self.decomposer, img, out)}
        blocks = [out["light"] if k == "light" else F.adaptive_avg_pool2d(pooled[k](), self.identity_size).flatten(1)
                  for k in self.kept]
        return {"pose": out["rotation_deg"], "identity": torch.cat(blocks, dim=1)}

    def _standardize(self, pose: torch.Tensor, identity: torch.Tensor) -> dict[str, torch.Tensor]:
        identity = (identity - self.identity_mean) / self.identity_scale
        if self.components is not None:
            identity = identity @ self.identity_basis
        return {"pose": (pose - self.pose_mean) / self.pose_std, "identity": identity}

    def forward(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        if not self.calibrated:
            raise RuntimeError("DecomposerMeasure has no standardization yet: call calibrate(ws_pool) first")
        m = self.raw(ws)
        return self._standardize(m["pose"], m["identity"])

    @torch.no_grad()
    def calibrate(self, ws_pool: torch.Tensor, batch_size: int = 256, progress: bool | None = None
                  ) -> dict[str, torch.Tensor]:
        """Read every code of ws_pool [N, num_ws, w_dim] (in batches), set the standardization from them and return
        their standardized readings (on the CPU)."""
        if len(ws_pool) < 2:
            raise LatentError(f"calibrate needs at least 2 codes, got {len(ws_pool)}")
        device = self.pose_mean.device
        parts: dict[str, list[torch.Tensor]] = {"pose": [], "identity": []}
        for s in tqdm(range(0, len(ws_pool), batch_size), desc="measure pool", disable=(not progress)
                      if progress is not None else None):
            for k, v in self.raw(ws_pool[s:s + batch_size].to(device)).items():
                parts[k].append(v.cpu())
        pose, ident = torch.cat(parts["pose"]), torch.cat(parts["identity"])
        self.pose_mean.copy_(pose.mean(0))
        self.pose_std.copy_(pose.std(0).clamp_min(1e-6))
        mean = ident.mean(0)
        dev = ident - mean
        scale, start, total, n_blocks = torch.empty(self.identity_dims), 0, self.identity_dims, len(self.kept)
        for dims in self.block_dims.values():
            rms = dev[:, start:start + dims].pow(2).mean().sqrt().clamp_min(1e-6)
            scale[start:start + dims] = rms * (n_blocks * dims / total) ** 0.5  # every block: 1/n_blocks of the mean
            start += dims
        self.identity_mean.copy_(mean)
        self.identity_scale.copy_(scale)
        if self.components is not None:
            std = (dev / scale).double()
            evals, evecs = torch.linalg.eigh(std.T @ std / (len(std) - 1))
            top = evals.argsort(descending=True)[: self.components]
            self.identity_basis.copy_((evecs[:, top] / evals[top].clamp_min(1e-12).sqrt()).to(self.identity_basis))
        self.calibrated = True
        return {k: v.cpu() for k, v in self._standardize(pose.to(device), ident.to(device)).items()}


class RecombinationSampler:
    """Training batches for `IdentityPoseModel`: pairs of independent pool codes with their measures.

    ``sample(step, device)`` -> {'a', 'b': ws [B, num_ws, w_dim]; 'pose_a', 'pose_b': [B, 3]; 'identity_a',
    'identity_b': [B, D]} (standardized measures, e.g. from `DecomposerMeasure.calibrate`, one row per pool code).
    The pool is w [N, w_dim] or ws [N, num_ws, w_dim] (kept as one w per code when its layers are equal). The last
    `val_size` codes of the pool are kept for `validation`. Deterministic: batch `step` depends only on (`seed`,
    `step`).
    """

    def __init__(self, w_pool: Any, measures: dict[str, Any], num_ws: int, batch_size: int = 64, seed: int = 0,
                 val_size: int = 256) -> None:
        w = torch.as_tensor(np.asarray(w_pool), dtype=torch.float32)
        if w.ndim == 3 and w.shape[1] != num_ws:
            raise LatentError(f"w_pool has {w.shape[1]} ws per code; the generator has num_ws {num_ws}")
        if w.ndim == 3 and torch.equal(w, w[:, :1].expand_as(w)):
            w = w[:, 0]  # one w per code, broadcast per batch (an FFHQ-sized W+ pool would take gigabytes)
        if w.ndim not in (2, 3):
            raise LatentError(f"w_pool must be [N, w_dim] or [N, num_ws, w_dim], got shape {tuple(w.shape)}")
        self.measures = {k: torch.as_tensor(np.asarray(measures[k]), dtype=torch.float32) for k in ("pose",
                                                                                                  "identity")}
        if any(len(v) != len(w) for v in self.measures.values()):
            raise LatentError(f"measures must have one row per pool code ({len(w)}); got "
                              f"{ {k: len(v) for k, v in self.measures.items()} }")
        if len(w) < val_size + 2 or val_size < 2:
            raise LatentError(f"the pool has {len(w)} codes; need at least val_size + 2 = {val_size + 2} and "
                              "val_size >= 2")
        self.w, self.num_ws, self.batch_size, self.seed, self.val_size = w, int(num_ws), batch_size, seed, val_size
        self.n_train = len(w) - val_size
        self._val: dict[str, torch.Tensor] | None = None

    def _batch(self, i: torch.Tensor, j: torch.Tensor) -> dict[str, torch.Tensor]:
        def codes(rows: torch.Tensor) -> torch.Tensor:
            picked = self.w[rows]
            return picked if picked.ndim == 3 else picked[:, None].expand(-1, self.num_ws, -1).contiguous()

        batch = {"a": codes(i), "b": codes(j)}
        for k, v in self.measures.items():
            batch[f"{k}_a"], batch[f"{k}_b"] = v[i], v[j]
        return batch

    def sample(self, step: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step))
        i = torch.randint(self.n_train, (self.batch_size,), generator=gen)
        j = (i + torch.randint(1, self.n_train, (self.batch_size,), generator=gen)) % self.n_train
        return {k: v.to(device) for k, v in self._batch(i, j).items()}

    def validation(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        if self._val is None:
            i = torch.arange(self.n_train, len(self.w))
            self._val = self._batch(i, i.roll(1))
        return {k: v.to(device) for k, v in self._val.items()}


@register_model_kind
class IdentityPoseModel(StandardizedWModel):
    """Identity and pose encoders on W with a decoder back to W; `recombine` puts one face's identity in another's
    pose. See the module docstring for the losses. The pose code reads the pose and little else; the identity code
    is a complete code of the face (on the synthetic world it reads the pose too), because a residual
    recombination moves a face by the change of the pose code alone.

    Parameters
    ----------
    num_ws, w_dim : int
        The generator's latent shape.
    id_dim, pose_dim : int
        Code sizes: identity (everything of a face but its pose) and pose.
    hidden : int
        Hidden width of the MLP branch of the encoders and the decoder (0 = linear).
    w_plus : bool
        Encode the flattened W+ code (True) or the mean over layers (False).
    rec_weight, cycle_weight, pose_weight, identity_weight, move_weight : float
        Loss weights.
    generator_sha256 : str, optional
        The generator's fingerprint (`latents.generator_fingerprint`); checked by `load`.

    Examples
    --------
    >>> measure = DecomposerMeasure(G, load_decomposer("synthetic"))
    >>> sampler = RecombinationSampler(w_pool, measure.calibrate(ws_pool), G.num_ws)
    >>> model = IdentityPoseModel(G.num_ws, G.w_dim, generator_sha256=generator_fingerprint(G))
    >>> model.set_normalization(w_pool)
    >>> train_model(model, sampler, "runs/ip", steps=1500, G=measure)
    >>> ws = model.recombine(identity_from=ws_a, pose_from=ws_b)
    """

    kind = "identity-pose"

    def __init__(self, num_ws: int, w_dim: int, id_dim: int = 64, pose_dim: int = 8, hidden: int = 256,
                 w_plus: bool = False, rec_weight: float = 1.0, cycle_weight: float = 0.1, pose_weight: float = 10.0,
                 identity_weight: float = 1.0, move_weight: float = 0.3, generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, w_plus, generator_sha256)
        if id_dim < 1 or pose_dim < 1:
            raise ValueError(f"code sizes must be positive, got id_dim={id_dim}, pose_dim={pose_dim}")
        weights = checked_weights(rec_weight=rec_weight, cycle_weight=cycle_weight, pose_weight=pose_weight,
                                  identity_weight=identity_weight, move_weight=move_weight)
        self.config.update(id_dim=id_dim, pose_dim=pose_dim, hidden=hidden, w_plus=w_plus, **weights)
        self.id_dim, self.pose_dim = id_dim, pose_dim
        self.id_encoder = LinearPlusMLP(self.d_in, id_dim, hidden)
        self.pose_encoder = LinearPlusMLP(self.d_in, pose_dim, hidden)
        self.decoder = LinearPlusMLP(id_dim + pose_dim, self.d_in, hidden)

    # --- the nets -----------------------------------------------------------------------------------------------
    def _encode(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._standardized(ws)
        return self.id_encoder(x), self.pose_encoder(x)

    def _decode(self, identity: torch.Tensor, pose: torch.Tensor) -> torch.Tensor:
        return self._destandardized(self.decoder(torch.cat([identity, pose], dim=1)))

    def _recombine(self, ws_id: torch.Tensor, identity: torch.Tensor, pose_own: torch.Tensor, pose_new: torch.Tensor,
                   mode: str) -> torch.Tensor:
        out = self._decode(identity, pose_new)
        return out + ws_id - self._decode(identity, pose_own) if mode == "residual" else out

    def encode(self, ws: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]) -> (identity [N, id_dim], pose [N, pose_dim])."""
        return self._encode(self.check_ws(ws))

    def decode(self, identity: Any, pose: Any) -> torch.Tensor:
        """(identity [N, id_dim], pose [N, pose_dim]) -> ws [N, num_ws, w_dim]."""
        return self._decode(*self._checked_codes(identity, pose, ("identity", "pose"), (self.id_dim, self.pose_dim)))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """Reconstruction ws [N, num_ws, w_dim]."""
        return self._decode(*self.encode(ws))

    @torch.no_grad()
    def recombine(self, identity_from: Any, pose_from: Any, mode: str = "residual") -> torch.Tensor:
        """The face of `identity_from` in the pose of `pose_from`: ws [N, num_ws, w_dim] (or w [N, w_dim]; N may be
        1 on either side) -> ws [N, num_ws, w_dim]. mode 'residual' (default): a + decode(id(a), pose(b)) -
        decode(id(a), pose(a)); 'direct': decode(id(a), pose(b))."""
        if mode not in ("residual", "direct"):
            raise ValueError(f"mode must be 'residual' or 'direct', got {mode!r}")
        a, b = self.check_ws(identity_from, "identity_from"), self.check_ws(pose_from, "pose_from")
        if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
            raise LatentError(f"identity_from has {a.shape[0]} codes and pose_from {b.shape[0]}; give equal counts "
                              "or 1")
        n = max(a.shape[0], b.shape[0])
        a = a.expand(n, -1, -1)
        i_a, p_a = self._encode(a)
        p_b = self._encode(b)[1].expand(n, -1)
        return self._recombine(a, i_a, p_a, p_b, mode)

    # --- training -----------------------------------------------------------------------------------------------
    @staticmethod
    def _code_mse(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Squared error relative to the target codes' batch variance (a code cannot shrink its way to zero)."""
        target = target.detach()
        return F.mse_loss(x, target) / target.var(0).mean().clamp_min(1e-8)

    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses on a RecombinationSampler batch; `G` is the measure (a `DecomposerMeasure`) or None."""
        a, b = self.check_ws(batch["a"], "batch['a']"), self.check_ws(batch["b"], "batch['b']")
        i_a, p_a = self._encode(a)
        i_b, p_b = self._encode(b)
        rec = (self._rel_mse(self._decode(i_a, p_a), a) + self._rel_mse(self._decode(i_b, p_b), b)) / 2
        x = self._recombine(a, i_a, p_a, p_b, "residual")
        i_x, p_x = self._encode(x)
        cycle = (self._code_mse(i_x, i_a) + self._code_mse(p_x, p_b)) / 2
        c = self.config
        move = self._rel_mse(x, a)
        losses = {"rec": rec, "cycle": cycle, "move": move}
        total = c["rec_weight"] * rec + c["cycle_weight"] * cycle + c["move_weight"] * move
        if G is not None and (c["pose_weight"] > 0 or c["identity_weight"] > 0):
            m = G(x)
            losses["pose"] = F.mse_loss(m["pose"], batch["pose_b"].to(x.device))
            losses["identity"] = F.mse_loss(m["identity"], batch["identity_a"].to(x.device))
            total = total + c["pose_weight"] * losses["pose"] + c["identity_weight"] * losses["identity"]
        losses["total"] = total
        return losses
