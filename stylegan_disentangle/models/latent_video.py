"""Synthetic latent videos in W: appearance fixed while structure moves, made without rendering a frame.

Two makers share one interface (``fit(w_pool)``, ``clips(w0, generator)``, ``augment(ws, donors, generator)``):

- `DirectionVideoMaker`: structure moves along a smooth random trajectory (Gaussian-smoothed noise, `amplitude` stds
  of W along each direction) in the span of the structure directions of any DirectionSet (pose / expression from the
  oracle-supervised linear finder, the 3D-coupled finder, or unsupervised PCA / closed-form directions). With
  appearance directions too, the moves leave their readouts in place (so the appearance factors stay put):
  `metric='euclidean'` makes the moves orthogonal to them, `metric='covariance'` takes the smallest move in W's
  own metric (the pool covariance) that changes one structure readout and no other readout, which is the
  regression of W on the readouts, i.e. what a change of that readout looks like among W's samples.
  Per-frame nonlinearity: the path bends along a nuisance direction (orthogonal to every given direction) with the
  squared distance travelled (`curvature`), and every frame gets its own zero-mean W+ layer jitter (`layer_jitter`,
  which leaves the average over layers unchanged). Its appearance augmentation moves a frame a random share in
  [0.5, 1] of the way to a donor's w, minus the part that would change a structure readout (the orthogonal or
  the covariance-metric projection, as `metric`): structure projections stay exact.
- `StyleMixingVideoMaker` (no labels, no directions): coarse layers travel smoothly between random samples while
  fine layers stay at the clip's own w; its augmentation swaps the fine layers for a donor's.

`ClipPairSampler` turns a maker into training batches for contrastive W-space models (two frames of each clip and an
appearance-augmented copy of the first; optionally two frames of a clip from a second `motion_maker`, the pairs a
motion decoder learns W moves from), deterministic given its seed and the step. `save_clip_strips` renders
clips as PNG rows (one clip per row, frames left to right).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..directions import DirectionSet
from ..errors import LatentError, NotFittedError
from ..latents import check_ws, synthesize_in_chunks
from ..utils.images import image_grid, save_png, to_uint8

__all__ = ["ClipPairSampler", "DirectionVideoMaker", "StyleMixingVideoMaker", "save_clip_strips", "smooth_noise"]


def smooth_noise(n: int, k: int, frames: int, smoothness: float, generator: torch.Generator) -> torch.Tensor:
    """[n, frames, k] Gaussian-smoothed white noise (kernel std `smoothness` frames), unit std per value."""
    if smoothness <= 0:
        return torch.randn(n, frames, k, generator=generator)
    half = int(np.ceil(3 * smoothness))
    noise = torch.randn(n * k, 1, frames + 2 * half, generator=generator)
    t = torch.arange(-half, half + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (t / smoothness) ** 2)
    kernel = (kernel / kernel.norm()).view(1, 1, -1)  # unit norm: white noise of unit std stays unit std
    out = torch.nn.functional.conv1d(noise, kernel)
    return out.view(n, k, frames).transpose(1, 2)


def _as_pool(w_pool: Any) -> torch.Tensor:
    w = torch.as_tensor(np.asarray(w_pool) if not isinstance(w_pool, torch.Tensor) else w_pool).float()
    if w.ndim == 3:
        w = w.mean(dim=1)
    if w.ndim != 2 or w.shape[0] < 2:
        raise LatentError(f"the w pool must be [N >= 2, w_dim] (or ws [N, num_ws, w_dim]), got {tuple(w.shape)}")
    if not torch.isfinite(w).all():
        raise LatentError("the w pool contains NaN or inf values")
    return w.cpu()


def _vectors(ds: DirectionSet | np.ndarray | None, names: list[str] | None, w_dim: int) -> np.ndarray | None:
    if ds is None:
        return None
    if isinstance(ds, DirectionSet):
        ds = ds.select([ds.resolve_name(n) for n in names]) if names else ds
        v = ds.flat_vectors() if ds.per_layer else ds.vectors
    else:
        v = np.asarray(ds, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != w_dim:
        raise LatentError(f"directions must be [K, {w_dim}] for this W, got shape {v.shape}")
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _covariance_moves(cov: np.ndarray, readouts: np.ndarray) -> np.ndarray:
    """[K, w_dim]: row k is the smallest move in the metric of `cov` (minimum d^T cov^-1 d) that changes readout k
    of `readouts` [K, w_dim] by 1 and the others by 0: cov R^T (R cov R^T)^-1, the regression of w on the readouts."""
    r_cov = readouts @ cov
    return np.linalg.solve(r_cov @ readouts.T, r_cov)


def _orth_basis(v: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the rows of v."""
    u, s, _ = np.linalg.svd(v.T, full_matrices=False)
    return u[:, s > 1e-6 * s.max()].T


class DirectionVideoMaker:
    """Clips whose structure moves in the span of structure directions (see the module docstring).

    Parameters
    ----------
    structure : DirectionSet or array [K, w_dim]
        The structure directions (e.g. pose and expression).
    appearance : DirectionSet or array [A, w_dim], optional
        Directions the clips must not move (e.g. identity and illumination); structure moves are made orthogonal
        to them.
    structure_names, appearance_names : list[str], optional
        Select these names from the DirectionSets.
    frames : int
        Frames per clip.
    amplitude : float
        Std of the trajectory along each structure direction, in stds of W along it.
    smoothness : float
        Std (in frames) of the Gaussian kernel smoothing the trajectory.
    curvature : float
        Bend of the path along a nuisance direction per unit squared distance (in stds of W along it).
    layer_jitter : float
        Per-frame W+ layer jitter (zero mean over layers), in per-dimension stds of W.
    metric : 'euclidean' or 'covariance'
        How a structure move keeps the other readouts: orthogonal to the appearance directions, or the smallest
        move in the pool covariance's metric that changes only its own readout (see the module docstring).

    Attributes (after `fit`): `moves_` [K, w_dim] the unit move directions, `scales_` [K] stds of the pool along
    them, `structure_basis_` [K, w_dim] orthonormal basis of the structure span, `keep_structure_` [w_dim, w_dim]
    the augmentation's projection (a change d becomes d @ keep_structure_.T, with no structure readout change),
    `w_std_` [w_dim].
    """

    def __init__(self, structure: DirectionSet | np.ndarray, appearance: DirectionSet | np.ndarray | None = None, *,
                 structure_names: list[str] | None = None, appearance_names: list[str] | None = None,
                 frames: int = 16, amplitude: float = 1.0, smoothness: float = 3.0, curvature: float = 0.2,
                 layer_jitter: float = 0.05, metric: str = "euclidean") -> None:
        self.structure = structure
        self.appearance = appearance
        self.structure_names = structure_names
        self.appearance_names = appearance_names
        self.frames = frames
        self.amplitude = amplitude
        self.smoothness = smoothness
        self.curvature = curvature
        self.layer_jitter = layer_jitter
        self.metric = metric

    def fit(self, w_pool: Any) -> DirectionVideoMaker:
        """Measure the pool (stds along the moves, per-dimension stds) and build the move directions."""
        w = _as_pool(w_pool)
        d = w.shape[1]
        struct = _vectors(self.structure, self.structure_names, d)
        app = _vectors(self.appearance, self.appearance_names, d)
        if struct is None or len(struct) == 0:
            raise ValueError("DirectionVideoMaker needs at least one structure direction")
        if self.frames < 2:
            raise ValueError(f"frames must be >= 2, got {self.frames}")
        if self.metric not in ("euclidean", "covariance"):
            raise ValueError(f"metric must be 'euclidean' or 'covariance', got {self.metric!r}")
        centred = (w - w.mean(0)).double().numpy()
        given = struct if app is None else np.concatenate([struct, app])
        self.structure_basis_ = _orth_basis(struct)
        moves = struct.copy()
        if self.metric == "covariance":
            cov = centred.T @ centred / (len(centred) - 1)
            moves = _covariance_moves(cov, given)[: len(struct)]
            moves /= np.linalg.norm(moves, axis=1, keepdims=True)
            keep = np.eye(d) - _covariance_moves(cov, struct).T @ struct
        else:
            if app is not None and len(app):
                basis = _orth_basis(app)
                moves = moves - (moves @ basis.T) @ basis
                norms = np.linalg.norm(moves, axis=1)
                if (norms < 1e-3).any():
                    raise ValueError("a structure direction lies in the span of the appearance directions")
                moves /= norms[:, None]
            keep = np.eye(d) - self.structure_basis_.T @ self.structure_basis_
        self.keep_structure_ = keep.astype(np.float32)
        rng = np.random.default_rng(0)
        nuisance = rng.standard_normal(d)
        gb = _orth_basis(given)
        nuisance -= gb.T @ (gb @ nuisance)
        self.nuisance_ = (nuisance / np.linalg.norm(nuisance)).astype(np.float32)
        self.moves_ = moves.astype(np.float32)
        self.scales_ = (centred @ moves.T).std(axis=0).astype(np.float32)
        self.nuisance_scale_ = float((centred @ self.nuisance_).std())
        self.w_std_ = w.std(0).numpy().astype(np.float32)
        self.w_dim_ = d
        return self

    def _check(self) -> None:
        if not hasattr(self, "moves_"):
            raise NotFittedError("this DirectionVideoMaker is not fitted yet; call fit(w_pool) first")

    def clips(self, w0: torch.Tensor, num_ws: int, generator: torch.Generator) -> torch.Tensor:
        """Clips ws [B, frames, num_ws, w_dim] starting around w0 [B, w_dim] (or ws [B, num_ws, w_dim])."""
        self._check()
        ws0 = check_ws(w0, num_ws, self.w_dim_, what="w0").cpu()
        b, k, t = ws0.shape[0], len(self.moves_), self.frames
        c = self.amplitude * smooth_noise(b, k, t, self.smoothness, generator)  # [B, T, K]
        move = (c * torch.from_numpy(self.scales_)) @ torch.from_numpy(self.moves_)  # [B, T, D]
        bend = self.curvature * ((c**2).mean(-1, keepdim=True) - self.amplitude**2) * self.nuisance_scale_
        move = move + bend * torch.from_numpy(self.nuisance_)
        jitter = torch.randn(b, t, num_ws, self.w_dim_, generator=generator)
        jitter = (jitter - jitter.mean(dim=2, keepdim=True)) * self.layer_jitter * torch.from_numpy(self.w_std_)
        return ws0[:, None] + move[:, :, None] + jitter

    def augment(self, ws: torch.Tensor, donors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Appearance-changing copies of ws [N, num_ws, w_dim]: a random share in [0.5, 1] of the way to a donor's
        w [N, w_dim], less the part that changes a structure readout; projections on the structure span stay."""
        self._check()
        delta = donors.reshape(donors.shape[0], -1, self.w_dim_).mean(1) - ws.mean(1)
        delta = delta @ torch.from_numpy(self.keep_structure_).T
        share = 0.5 + 0.5 * torch.rand(ws.shape[0], 1, generator=generator)
        return ws + (share * delta)[:, None]


class StyleMixingVideoMaker:
    """Label-free clips: coarse ws layers `[0, coarse)` move smoothly through random pool samples (structure), fine
    layers stay at the clip's own w (appearance). Augmentation swaps the fine layers for a donor's.

    Parameters: `coarse` (number of coarse layers; default num_ws // 2 at `clips` time), `frames`, `keyframes`
    (random samples visited along the path, besides the start), `reach` (share of the way to each keyframe).
    """

    def __init__(self, coarse: int | None = None, frames: int = 16, keyframes: int = 2, reach: float = 0.7) -> None:
        self.coarse = coarse
        self.frames = frames
        self.keyframes = keyframes
        self.reach = reach

    def fit(self, w_pool: Any) -> StyleMixingVideoMaker:
        self.pool_ = _as_pool(w_pool)
        self.w_dim_ = self.pool_.shape[1]
        return self

    def _coarse(self, num_ws: int) -> int:
        c = self.coarse if self.coarse is not None else num_ws // 2
        if not 0 < c < num_ws:
            raise ValueError(f"coarse must be in [1, {num_ws - 1}] for {num_ws} ws, got {c}")
        return c

    def clips(self, w0: torch.Tensor, num_ws: int, generator: torch.Generator) -> torch.Tensor:
        if not hasattr(self, "pool_"):
            raise NotFittedError("this StyleMixingVideoMaker is not fitted yet; call fit(w_pool) first")
        ws0 = check_ws(w0, num_ws, self.w_dim_, what="w0").cpu()
        b, t, c = ws0.shape[0], self.frames, self._coarse(num_ws)
        keys = self.pool_[torch.randint(len(self.pool_), (b, self.keyframes), generator=generator)]
        start = ws0[:, 0]
        points = torch.cat([start[:, None], start[:, None] + self.reach * (keys - start[:, None])], dim=1)
        pos = torch.linspace(0, self.keyframes, t)
        lo = pos.floor().long().clamp(max=self.keyframes - 1)
        frac = 0.5 - 0.5 * torch.cos(np.pi * (pos - lo))  # eased
        path = points[:, lo] + frac[None, :, None] * (points[:, lo + 1] - points[:, lo])  # [B, T, D]
        out = ws0[:, None].repeat(1, t, 1, 1)
        out[:, :, :c] = path[:, :, None]
        return out

    def augment(self, ws: torch.Tensor, donors: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        c = self._coarse(ws.shape[1])
        out = ws.clone()
        out[:, c:] = donors.reshape(donors.shape[0], -1, self.w_dim_).mean(1)[:, None]
        return out


class ClipPairSampler:
    """Training batches for contrastive W-space models from a fitted video maker.

    ``sample(step, device)`` -> {'anchor', 'other', 'augmented'}: ws [B, num_ws, w_dim] each — two distinct frames
    of B clips (same appearance, different structure) and an appearance-augmented copy of the anchor (same
    structure). With a `motion_maker` (e.g. a `DirectionVideoMaker` with ``metric='covariance'`` over the same
    directions) the batch also holds 'motion_from', 'motion_to': two frames of one of its clips, from which a model
    learns what a change of structure looks like as a move in W (`AppearanceStructureAE`'s motion decoder), while
    `maker`'s clips teach the invariances. Clips start at pool samples; the last `val_fraction` of the pool is kept
    for `validation`. Deterministic: batch `step` depends only on (`seed`, `step`).
    """

    def __init__(self, maker: Any, w_pool: Any, num_ws: int, batch_size: int = 128, seed: int = 0,
                 val_fraction: float = 0.1, val_size: int = 512, motion_maker: Any = None) -> None:
        pool = _as_pool(w_pool)
        n_val = max(2, int(round(len(pool) * val_fraction)))
        if len(pool) - n_val < 2:
            raise LatentError(f"the w pool has {len(pool)} samples; need at least {n_val + 2} (two to train on "
                              f"and {n_val} for validation)")
        self.maker, self.num_ws, self.batch_size, self.seed = maker, num_ws, batch_size, seed
        self.motion_maker = motion_maker
        self.train_pool, self.val_pool = pool[:-n_val], pool[-n_val:]
        self.val_size = val_size
        self._val = None

    def _two_frames(self, maker: Any, pool: torch.Tensor, n: int, gen: torch.Generator) -> tuple:
        clips = maker.clips(pool[torch.randint(len(pool), (n,), generator=gen)], self.num_ws, gen)  # [B, T, L, D]
        t = clips.shape[1]
        i = torch.randint(t, (n,), generator=gen)
        j = (i + torch.randint(1, t, (n,), generator=gen)) % t
        rows = torch.arange(n)
        return clips[rows, i], clips[rows, j]

    def _batch(self, pool: torch.Tensor, n: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        anchor, other = self._two_frames(self.maker, pool, n, gen)
        donors = pool[torch.randint(len(pool), (n,), generator=gen)]
        batch = {"anchor": anchor, "other": other, "augmented": self.maker.augment(anchor, donors, gen)}
        if self.motion_maker is not None:  # drawn last: batches without it are unchanged
            batch["motion_from"], batch["motion_to"] = self._two_frames(self.motion_maker, pool, n, gen)
        return batch

    def sample(self, step: int, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + int(step))
        return {k: v.to(device) for k, v in self._batch(self.train_pool, self.batch_size, gen).items()}

    def validation(self, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        if self._val is None:
            gen = torch.Generator().manual_seed(int(self.seed) * 1_000_003 - 1)
            self._val = self._batch(self.val_pool, self.val_size, gen)
        return {k: v.to(device) for k, v in self._val.items()}


@torch.no_grad()
def save_clip_strips(G: torch.nn.Module, clips: torch.Tensor, path: str | os.PathLike, upscale: int = 2,
                     batch_size: int = 64) -> Path:
    """Render clips ws [B, T, num_ws, w_dim] and write one PNG: a row per clip, frames left to right."""
    if clips.ndim != 4:
        raise LatentError(f"clips must be [B, T, num_ws, w_dim], got shape {tuple(clips.shape)}")
    b, t = clips.shape[:2]
    device = next(G.parameters()).device
    flat = clips.reshape(b * t, *clips.shape[2:])
    images = synthesize_in_chunks(G, flat.to(device), chunk=batch_size, postprocess=lambda im: im.float().cpu())
    save_png(image_grid(to_uint8(images), cols=t), path, upscale=upscale)
    return Path(path)
