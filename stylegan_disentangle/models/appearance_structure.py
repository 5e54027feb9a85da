"""AppearanceStructureAE: an autoencoder on W that splits a latent into an appearance and a structure code.

After Duarte et al., "Contrastive Learning on Synthetic Videos for GAN Latent Disentangling" (2022): trained on
synthetic latent videos (`latent_video`), whose frames share appearance while structure (pose, expression) moves.

    encoder: ws [N, num_ws, w_dim] (flattened W+, or mean w) -> appearance [N, app_dim], structure [N, struct_dim]
    decoder: (a, s) -> ws [N, num_ws, w_dim]

Each net is a linear map plus a one-hidden-layer MLP (SiLU) in parallel, on W standardized per dimension with the
statistics of the training pool (`set_normalization`). Losses on a batch from `ClipPairSampler` (anchor frame,
another frame of the same clip, an appearance-augmented copy of the anchor):

- ``rec``: reconstruction of all three in W (mean squared error relative to W's mean variance);
- ``swap``: decode(a(other), s(anchor)) -> anchor and decode(a(augmented), s(anchor)) -> augmented (the parts
  that should be shared, taken from the view that shares them);
- ``app``: InfoNCE of appearance codes across two frames of a clip against other clips' frames;
- ``struct``: InfoNCE of structure codes of a frame and its appearance-augmented copy against other frames;
- ``motion`` (optional, `motion_weight` > 0): the motion decoder, a linear map M from a change of structure code to
  a move in (standardized) W, fitted on pairs of frames of one clip: M(s(to) - s(from)) -> to - from (squared
  error relative to W's variance, like ``rec``; refitted in closed form at the end, `finish_training`). The pairs are
  the batch's 'motion_from' / 'motion_to' (a `ClipPairSampler` with a `motion_maker`), else anchor / other;
- ``image`` (optional, `image_weight` > 0 and G given): reconstruction through the frozen synthesis on the first
  `image_samples` anchors.

``total = rec_weight*rec + swap_weight*swap + app_weight*app + struct_weight*struct + motion_weight*motion
+ image_weight*image``. Closing steps in closed form (`finish_training`): with `invariance_projection`, a linear
structure code is projected onto the directions the appearance augmentations never move (InfoNCE leaves it reading
a few percent of them, which a transfer then carries over), and the motion decoder is refitted by least squares.
Tasks: `transfer_structure(target, source)` and `transfer_motion(target, source_clip)`. With a motion decoder the
transfer is target + M(s(source) - s(target)): the target is kept except for the move the structure change
asks for, and the move is the one the motion clips taught. Why a second kind of clip: the contrastive terms need
clips whose structure moves leave the *codes'* other side alone (Euclidean moves orthogonal to the appearance
directions make the appearance code blind to pose), while a transfer that takes the source's pose best moves
the way W itself moves when pose changes (the regression of W on the structure readouts, a
``metric='covariance'`` maker); on the synthetic world, with the invariance projection, the motion decoder keeps
identity 2x better than the residual decode and 8x better than the projected-difference baseline, and takes pose /
expression 3% better than that baseline (BENCHMARKS.md, issue 12). Directions whose appearance readouts do not pin
identity (e.g. the 3D-coupled finder's) want a Euclidean motion maker instead.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import LatentError
from ._nets import LinearPlusMLP
from .base import StandardizedWModel
from .io import register_model_kind
from .losses import info_nce

__all__ = ["AppearanceStructureAE"]


@register_model_kind
class AppearanceStructureAE(StandardizedWModel):
    """Autoencoder w (or W+) -> (appearance, structure) -> w, trained contrastively on latent videos.

    Parameters
    ----------
    num_ws, w_dim : int
        The generator's latent shape.
    app_dim, struct_dim : int
        Code sizes. The default 64 (of w_dim 128) leaves out W's lowest-variance directions: a larger appearance
        code also holds them, and there the small errors of found structure directions become readable as pose
        (BENCHMARKS.md, issue 12: appearance -> pose R^2 0.23 with 96, 0.03 with 64).
    hidden : int
        Hidden width of the MLP branch of encoder and decoder (0 = linear).
    w_plus : bool
        Encode the flattened W+ code (True) or the mean over layers (False); the decoder outputs W+ or broadcasts w.
    temperature : float
        InfoNCE temperature.
    rec_weight, swap_weight, app_weight, struct_weight, image_weight : float
        Loss weights (see the module docstring).
    image_samples : int
        Anchors per batch rendered for the image loss.
    linear_structure : bool
        Make the structure code a linear function of the (standardized) input: the MLP branch feeds the appearance
        code only. The motion decoder maps code changes linearly to moves, which is exact only for a linear code.
    motion_weight : float
        Weight of the motion decoder's loss; > 0 adds the decoder (``motion``) and makes it the transfers' default.
    invariance_projection : bool
        At the end of training, project a linear structure code onto the directions the appearance augmentations
        never move (`project_structure_invariant`).
    generator_sha256 : str, optional
        The generator's fingerprint (`latents.generator_fingerprint`); checked by `load`.

    Examples
    --------
    >>> ae = AppearanceStructureAE(G.num_ws, G.w_dim, generator_sha256=generator_fingerprint(G))
    >>> ae.set_normalization(w_pool)
    >>> train_model(ae, ClipPairSampler(DirectionVideoMaker(ds).fit(w_pool), w_pool, G.num_ws), "runs/ae", steps=2000)
    >>> ws = ae.transfer_structure(target_ws, source_ws)
    """

    kind = "appearance-structure"

    def __init__(self, num_ws: int, w_dim: int, app_dim: int = 64, struct_dim: int = 8, hidden: int = 256,
                 w_plus: bool = True, temperature: float = 0.1, rec_weight: float = 1.0, swap_weight: float = 1.0,
                 app_weight: float = 0.05, struct_weight: float = 0.05, image_weight: float = 0.0,
                 image_samples: int = 4, linear_structure: bool = False, motion_weight: float = 0.0,
                 invariance_projection: bool = False, generator_sha256: str | None = None) -> None:
        super().__init__(num_ws, w_dim, w_plus, generator_sha256)
        if app_dim < 1 or struct_dim < 1:
            raise ValueError(f"code sizes must be positive, got app_dim={app_dim}, struct_dim={struct_dim}")
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if motion_weight < 0:
            raise ValueError(f"motion_weight must be >= 0, got {motion_weight}")
        self.config.update(app_dim=app_dim, struct_dim=struct_dim, hidden=hidden, w_plus=w_plus,
                           temperature=temperature, rec_weight=rec_weight, swap_weight=swap_weight,
                           app_weight=app_weight, struct_weight=struct_weight, image_weight=image_weight,
                           image_samples=image_samples, linear_structure=linear_structure,
                           motion_weight=motion_weight, invariance_projection=invariance_projection)
        self.app_dim, self.struct_dim = app_dim, struct_dim
        d_in = self.d_in
        self.encoder = LinearPlusMLP(d_in, app_dim + struct_dim, hidden)
        self.decoder = LinearPlusMLP(app_dim + struct_dim, d_in, hidden)
        # change of structure code -> move in standardized W (flattened W+ or w); only with motion_weight > 0, so
        # files of models without it keep their state dict
        self.motion = nn.Linear(struct_dim, d_in, bias=False) if motion_weight > 0 else None

    # --- the two nets -------------------------------------------------------------------------------------------
    def _encode(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self._standardized(ws)
        if self.config.get("linear_structure") and self.encoder.mlp is not None:
            code = self.encoder.linear(x)
            return code[:, : self.app_dim] + self.encoder.mlp(x)[:, : self.app_dim], code[:, self.app_dim:]
        code = self.encoder(x)
        return code[:, : self.app_dim], code[:, self.app_dim:]

    def _decode(self, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self._destandardized(self.decoder(torch.cat([a, s], dim=1)))

    def _move(self, ds: torch.Tensor) -> torch.Tensor:
        """Change of structure code [N, struct_dim] -> move in W [N, num_ws, w_dim] (the motion decoder)."""
        return self._unflat(self.motion(ds)) * self.w_std

    @property
    def has_motion_decoder(self) -> bool:
        return self.motion is not None

    def encode(self, ws: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """ws [N, num_ws, w_dim] (or w [N, w_dim]) -> (appearance [N, app_dim], structure [N, struct_dim])."""
        return self._encode(self.check_ws(ws))

    def decode(self, appearance: torch.Tensor, structure: torch.Tensor) -> torch.Tensor:
        """(appearance [N, app_dim], structure [N, struct_dim]) -> ws [N, num_ws, w_dim]."""
        return self._decode(*self._checked_codes(appearance, structure, ("appearance", "structure"),
                                                 (self.app_dim, self.struct_dim)))

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        """Reconstruction ws [N, num_ws, w_dim]."""
        return self._decode(*self.encode(ws))

    # --- training -----------------------------------------------------------------------------------------------
    def training_losses(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> dict[str, torch.Tensor]:
        """Losses on a ClipPairSampler batch ({'anchor', 'other', 'augmented'}: ws [B, num_ws, w_dim])."""
        anchor, other, aug = (self.check_ws(batch[k], f"batch[{k!r}]") for k in ("anchor", "other", "augmented"))
        a_i, s_i = self._encode(anchor)
        a_j, s_j = self._encode(other)
        a_g, s_g = self._encode(aug)
        rec = (self._rel_mse(self._decode(a_i, s_i), anchor) + self._rel_mse(self._decode(a_j, s_j), other)
               + self._rel_mse(self._decode(a_g, s_g), aug)) / 3
        swap = (self._rel_mse(self._decode(a_j, s_i), anchor) + self._rel_mse(self._decode(a_g, s_i), aug)) / 2
        tau = self.config["temperature"]
        app = info_nce(a_i, a_j, tau)
        struct = info_nce(s_i, s_g, tau)
        c = self.config
        total = c["rec_weight"] * rec + c["swap_weight"] * swap + c["app_weight"] * app + c["struct_weight"] * struct
        losses = {"rec": rec, "swap": swap, "app": app, "struct": struct}
        if self.motion is not None:
            if "motion_from" in batch:
                start, end = (self.check_ws(batch[k], f"batch[{k!r}]") for k in ("motion_from", "motion_to"))
                s_from, s_to = self._encode(start)[1], self._encode(end)[1]
            else:
                start, end, s_from, s_to = anchor, other, s_i, s_j
            target = self._unflat(self._flat(end - start))  # a mean-w model moves every layer alike
            motion = self._rel_mse(self._move(s_to - s_from), target)
            losses["motion"] = motion
            total = total + c["motion_weight"] * motion
        if c["image_weight"] > 0 and G is not None:
            k = min(int(c["image_samples"]), anchor.shape[0])
            with torch.no_grad():
                target = G.synthesis(anchor[:k], noise_mode="const")
            image = F.mse_loss(G.synthesis(self._decode(a_i[:k], s_i[:k]), noise_mode="const"), target)
            losses["image"] = image
            total = total + c["image_weight"] * image
        losses["total"] = total
        return losses

    def _linear_structure_weight(self) -> torch.Tensor | None:
        """The rows of the encoder's linear map that make the structure code, when the code is linear in the input
        (`linear_structure`, or no MLP); None otherwise."""
        if self.encoder.mlp is not None and not self.config.get("linear_structure"):
            return None
        return self.encoder.linear.weight[self.app_dim:]

    @torch.no_grad()
    def project_structure_invariant(self, sampler: Any, step: int, batches: int = 8, tol: float = 1e-6) -> int:
        """Make a linear structure code exactly blind to the appearance augmentations; returns the dimension kept.

        The augmentations move a frame without moving its structure; InfoNCE only asks the structure code to move
        less under them than between frames, and a code that keeps a few percent of its rows in the moved directions
        passes part of any appearance difference on to a transfer (BENCHMARKS.md, issue 12). The closed form: the
        structure rows are projected onto the null space of the augmentation moves (measured on `batches` sampler
        batches, in the model's standardized input). Skipped (returns 0) when the code is not linear or when the
        moves leave fewer than `struct_dim` directions unmoved (e.g. mean-w codes under style-mixing
        augmentations, which move every direction).
        """
        weight = self._linear_structure_weight()
        if weight is None:
            return 0
        moves = []
        for i in range(batches):
            batch = sampler.sample(step + 10_000 + i, self.device)
            anchor, aug = (self.check_ws(batch[k]) for k in ("anchor", "augmented"))
            moves.append(self._flat((aug - anchor) / self.w_std))
        d = torch.cat(moves).double()
        evals, evecs = torch.linalg.eigh(d.T @ d)
        null = evecs[:, evals <= tol * evals.max().clamp_min(1e-300)]  # directions no augmentation moves
        if null.shape[1] < self.struct_dim:
            return 0
        weight.copy_((weight.double() @ null @ null.T).to(weight))
        return int(null.shape[1])

    @torch.no_grad()
    def finish_training(self, sampler: Any, step: int, batches: int = 8) -> None:
        """Closing steps in closed form, called by `train_model` after the best weights are restored: with
        `invariance_projection`, `project_structure_invariant`; then, with a motion decoder, its least-squares refit
        on `batches` fresh sampler batches (gradient steps leave a linear head short of its optimum when its targets
        are small, a move being a few percent of W's spread; the closed form is exact for the final encoder).
        """
        if self.config.get("invariance_projection"):
            self.project_structure_invariant(sampler, step, batches)
        if self.motion is None:
            return
        x, y = [], []
        for i in range(batches):
            batch = sampler.sample(step + i, self.device)
            keys = ("motion_from", "motion_to") if "motion_from" in batch else ("anchor", "other")
            start, end = (self.check_ws(batch[k]) for k in keys)
            x.append(self._encode(end)[1] - self._encode(start)[1])
            y.append(self._flat((end - start) / self.w_std))
        x, y = torch.cat(x).double(), torch.cat(y).double()
        # ridge-free least squares (x^T x is struct_dim^2, well conditioned for a trained code)
        coef = torch.linalg.lstsq(x, y).solution  # [struct_dim, d_in]
        self.motion.weight.copy_(coef.T.to(self.motion.weight))

    @torch.no_grad()
    def validation_metric(self, batch: dict[str, torch.Tensor], G: nn.Module | None = None) -> float:
        """rec + swap (+ motion) on the validation batch (lower is better; `G` is not used)."""
        losses = self.training_losses(batch)
        return float(losses["rec"] + losses["swap"] + losses.get("motion", 0.0))

    # --- tasks --------------------------------------------------------------------------------------------------
    def _transfer_mode(self, mode: str | None, otherwise: str) -> str:
        """The mode asked for, or the default: 'motion' with a motion decoder, `otherwise` without; checked."""
        if mode is None:
            mode = "motion" if self.has_motion_decoder else otherwise
        if mode not in ("motion", "residual", "direct"):
            raise ValueError(f"mode must be 'motion', 'residual' or 'direct', got {mode!r}")
        if mode == "motion" and not self.has_motion_decoder:
            raise ValueError("mode='motion' needs a model trained with a motion decoder (motion_weight > 0)")
        return mode

    @torch.no_grad()
    def transfer_structure(self, target_ws: Any, source_ws: Any, mode: str | None = None,
                           residual: bool | None = None) -> torch.Tensor:
        """Pose / expression transfer: target's appearance with the source's structure.

        target_ws, source_ws: [N, num_ws, w_dim] (or w [N, w_dim]; N may be 1 on either side) -> ws [N, num_ws, w_dim].
        mode:
          'motion' (the default when the model has a motion decoder): target + M(s_source - s_target);
          'residual' (the default otherwise): target + decode(a_target, s_source) - decode(a_target, s_target), which
          keeps whatever of the target the codes do not hold (the reconstruction error cancels);
          'direct': decode(a_target, s_source).
        `residual` (True / False) is the older spelling of 'residual' / 'direct'. Figures of each on the synthetic
        world: BENCHMARKS.md, issue 12.
        """
        if mode is None and residual is not None:
            mode = "residual" if residual else "direct"
        mode = self._transfer_mode(mode, "residual")
        t, s = self.check_ws(target_ws, "target_ws"), self.check_ws(source_ws, "source_ws")
        if t.shape[0] != s.shape[0] and 1 not in (t.shape[0], s.shape[0]):
            raise LatentError(f"target_ws has {t.shape[0]} codes and source_ws {s.shape[0]}; give equal counts or 1")
        a_t, s_t = self._encode(t)
        _, s_s = self._encode(s)
        n = max(len(a_t), len(s_s))
        if mode == "motion":
            return t.expand(n, -1, -1) + self._move((s_s - s_t).expand(n, -1))
        out = self._decode(a_t.expand(n, -1), s_s.expand(n, -1))
        if mode == "residual":
            out = out + t.expand(n, -1, -1) - self._decode(a_t, s_t).expand(n, -1, -1)
        return out

    @torch.no_grad()
    def transfer_motion(self, target_ws: Any, source_clip: Any, relative: bool = False,
                        mode: str | None = None) -> torch.Tensor:
        """Motion transfer: source_clip ws [T, num_ws, w_dim] drives each target [N, num_ws, w_dim] -> [N, T, ...].

        relative=False puts the source's structure on the target frame by frame; relative=True adds the source's
        change of structure since its first frame to the target's own structure (keeps the target's pose).
        mode: as `transfer_structure` ('motion', the default with a motion decoder: target + M(change of structure
        code); 'residual'; 'direct', the default otherwise: decode the target's appearance with the new structure).
        """
        mode = self._transfer_mode(mode, "direct")
        t = self.check_ws(target_ws, "target_ws")
        clip = self.check_ws(source_clip, "source_clip")
        a_t, s_t = self._encode(t)
        _, s_c = self._encode(clip)
        n, frames = len(t), len(clip)
        if relative:
            s = s_t[:, None] + (s_c - s_c[:1])[None]
        else:
            s = s_c[None].expand(n, -1, -1)
        flat_s = s.reshape(n * frames, -1)
        t_rep = t[:, None].expand(-1, frames, -1, -1).reshape(n * frames, self.num_ws, self.w_dim)
        if mode == "motion":
            out = t_rep + self._move(flat_s - s_t.repeat_interleave(frames, dim=0))
        else:
            a = a_t[:, None].expand(-1, frames, -1).reshape(n * frames, -1)
            out = self._decode(a, flat_s)
            if mode == "residual":
                out = out + t_rep - self._decode(a_t, s_t).repeat_interleave(frames, dim=0)
        return out.view(n, frames, self.num_ws, self.w_dim)
