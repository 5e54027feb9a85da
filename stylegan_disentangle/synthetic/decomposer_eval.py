"""Score a 3D decomposer against the ground truth of the synthetic world.

Every synthetic face comes with its exact Unsup3D decomposition (canonical depth, albedo, light, view), so an
Unsup3D-style decomposer can be measured directly:

- scalars: Pearson r of the estimate with the truth for yaw, pitch, roll (the view's ry, rx, rz), light azimuth
  and elevation (from the light direction, in the world's sense) and the ambient fraction a / (a + d) (the world's
  ambient: its diffuse is 1 - ambient, and only the ratio is in an image); after an affine calibration fitted
  on the first half of the samples, the mean absolute error on the other half (degrees for angles);
- canonical depth: per-image Pearson r with the true depth inside the face mask, and the scale-invariant depth
  error sqrt(mean(e^2) - mean(e)^2), e = log(pred) - log(true) (Eigen et al.), averaged over images; the relief
  (least-squares slope of the estimate on the truth inside the mask, 1 = the true depth of relief, which r cannot
  see) and the mean angle between the estimate's and the true surface normals (what the shading depends on);
- albedo: per-image Pearson r inside the mask (three channels together), and the same r in two regions of the
  head (`region_pearson`): the hair and the face proper (the head without its hair: skin, eyes, nose, mouth, brows),
  so that a reader sees which one an albedo error sits in;
- for both maps, what that per-image r owes to the population's mean face: the r that the world's own mean map of
  the scored faces scores alone (a constant map, the same for every face), and the per-image r of each map's
  deviation from its population mean (`variation_pearson`), which only a face-specific estimate can raise;
- reconstruction PSNR (peak-to-peak 2 for images in [-1, 1]) inside the render's valid mask.

Faces come either from the shipped generator (`faces_from_generator`) or straight from the world's renderer
(`faces_from_renderer`, images the generator never made, with yaw up to +-45 degrees, beyond its range).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..labels.decomposer.labeler import scalar_labels
from ..labels.decomposer.model import Unsup3DDecomposer
from ..labels.decomposer.reconstruction import reconstruct
from .face import PART_NAMES
from .factors import factor_index, to_normalized, to_physical
from .image_formation import normals_from_depth
from .renderer import render

__all__ = ["SCALARS", "depth_relief", "masked_pearson", "population_mean", "region_pearson", "variation_pearson",
           "faces_from_generator", "faces_from_renderer", "decomposer_estimates", "score_decomposer"]

SCALARS = ("yaw", "pitch", "roll", "light_azimuth", "light_elevation", "ambient")


@torch.no_grad()
def faces_from_generator(G: torch.nn.Module, factor_map: Callable, n: int, seed: int = 0,
                         batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """n images of G with their normalized factors [n, F] (per-sample official seeds seed, seed+1, ...)."""
    from ..latents import sample_latents

    images, factors = [], []
    for start in range(0, n, batch_size):
        seeds = list(range(seed + start, seed + min(n, start + batch_size)))
        ws = sample_latents(G, seeds).ws
        images.append(G.synthesis(ws, noise_mode="const").float().clamp(-1, 1))
        factors.append(torch.as_tensor(factor_map(ws)).float())
    return torch.cat(images), torch.cat(factors)


@torch.no_grad()
def faces_from_renderer(G: torch.nn.Module, factor_map: Callable, n: int, seed: int = 0, yaw_range: float = 45.0,
                        resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n faces rendered by the world itself, not by G: the factors of G's latents for seeds seed, seed+1, ..., with
    yaw redrawn uniformly in +-yaw_range degrees (beyond the generator's +-35). Returns (images [n, 3, R, R],
    normalized factors [n, F]); R defaults to G's resolution."""
    from ..latents import sample_latents

    ws = sample_latents(G, list(range(seed, seed + n))).ws
    factors = torch.as_tensor(factor_map(ws)).float().clone()
    phys = to_physical(factors)
    gen = torch.Generator().manual_seed(seed)
    phys[:, factor_index("yaw")] = (torch.rand([n], generator=gen) * 2 - 1) * yaw_range
    factors = to_normalized(phys)
    return render(factors, resolution or G.img_resolution), factors


@torch.no_grad()
def decomposer_estimates(decomposer: Unsup3DDecomposer, images: torch.Tensor,
                         batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The decomposer's scalar estimates in the world's units, its maps, and its reconstructions (on the CPU, whatever
    the decomposer's device)."""
    keys = ("canon_depth", "canon_albedo", "recon", "mask", "input")
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in (*SCALARS, *keys)}
    decomposer.eval()
    for start in range(0, images.shape[0], batch_size):
        out = reconstruct(decomposer, images[start:start + batch_size], flip=False)
        labels = scalar_labels(out)
        # the world's ambient is a fraction (its diffuse is 1 - ambient); an image shows only a / (a + d), since
        # albedo * (a + d cos) does not change when the albedo is scaled up and both intensities down
        total = (labels["light_ambient"] + labels["light_diffuse"]).clamp_min(1e-6)
        labels["ambient"] = labels["light_ambient"] / total
        for k in SCALARS:
            parts[k].append(labels[k].cpu())
        for k in keys:
            parts[k].append(out[k].cpu())
    return {k: torch.cat(v) for k, v in parts.items()}


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def masked_pearson(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image Pearson r of pred and true [N, C, H, W] over the pixels (all channels) where mask [N, 1, H, W] > 0.5;
    NaN for an image with fewer than 3 such values."""
    out = []
    for p, t, m in zip(pred, true, mask):
        sel = m.expand_as(p) > 0.5
        out.append(_pearson(p[sel].double().numpy(), t[sel].double().numpy()) if sel.sum() > 2 else np.nan)
    return np.asarray(out)


def population_mean(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean map [1, C, H, W] of maps [N, C, H, W], each pixel averaged over the images whose mask has it (0 where
    none has)."""
    weight = (mask > 0.5).to(maps.dtype)
    return (maps * weight).sum(0, keepdim=True) / weight.sum(0, keepdim=True).clamp_min(1)


def variation_pearson(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image Pearson r (as `masked_pearson`) of each estimate's and each truth's deviation from its own population
    mean map (`population_mean` over the same images). A per-face r over the pixels is mostly the mean face's
    pattern (hair against skin against eyes), which a constant map scores too; this r sees only what varies (a
    face-independent estimate scores 0)."""
    return masked_pearson(_deviation(pred, mask), _deviation(true, mask), mask)


def region_pearson(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor,
                   canonical_parts: torch.Tensor) -> dict[str, np.ndarray]:
    """Per-image Pearson r (as `masked_pearson`) in the hair and in the face proper (the rest of the mask), from the
    world's canonical part ownerships [N, P, H, W] (PART_NAMES order; a pixel belongs to the hair where its ownership
    is above one half)."""
    hair = canonical_parts[:, PART_NAMES.index("hair")].unsqueeze(1) > 0.5
    mask = mask > 0.5
    return {"hair": masked_pearson(pred, true, mask & hair), "face": masked_pearson(pred, true, mask & ~hair)}


def _deviation(maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """maps minus their population mean, with differences within a few roundings of the values set to 0 (so that a
    constant map has no deviation rather than a random one from the mean's rounding)."""
    mean = population_mean(maps, mask)
    dev = maps - mean
    rounding = 4 * torch.finfo(maps.dtype).eps * (maps.abs() + mean.abs())
    return dev.masked_fill(dev.abs() <= rounding, 0)


def depth_relief(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image least-squares slope of the predicted on the true depth inside the mask (both centred): 1 when the
    estimate has the true relief; Pearson r cannot see it (a face twice as deep correlates perfectly)."""
    out = []
    for p, t, m in zip(pred, true, mask):
        p, t = p[m], t[m]
        t = t - t.mean()
        out.append(float(((p - p.mean()) * t).sum() / (t * t).sum()) if m.sum() > 2 and (t * t).sum() > 0
                   else np.nan)
    return np.asarray(out)


def score_decomposer(decomposer: Unsup3DDecomposer, images: torch.Tensor, factors: torch.Tensor,
                     calibration_fraction: float = 0.5) -> dict:
    """The table of the module docstring for `images` [N, 3, R, R] with true normalized `factors` [N, F]."""
    est = decomposer_estimates(decomposer, images)
    res = decomposer.image_size
    _, truth = render(factors, res, return_intrinsics=True)
    phys = to_physical(factors).double().numpy()
    n = images.shape[0]
    n_cal = int(n * calibration_fraction)
    scalars = {}
    for name in SCALARS:
        pred = est[name].double().numpy()
        true = phys[:, factor_index(name)]
        coef = np.polyfit(pred[:n_cal], true[:n_cal], 1)
        mae = float(np.abs(np.polyval(coef, pred[n_cal:]) - true[n_cal:]).mean())
        scalars[name] = {"pearson_r": _pearson(pred, true), "calibrated_mae": mae, "calibration": coef.tolist()}
    mask = truth["canonical_mask"] > 0.5
    depth_pred, depth_true = est["canon_depth"].unsqueeze(1).double(), truth["depth"].double()
    depth_r = masked_pearson(depth_pred, depth_true, mask)
    side = []
    for p, t, m in zip(depth_pred, depth_true, mask):
        e = (p.log() - t.log())[m]
        side.append(float((e.square().mean() - e.mean().square()).clamp_min(0).sqrt()))
    relief = depth_relief(depth_pred, depth_true, mask)
    cos = (normals_from_depth(depth_pred) * normals_from_depth(depth_true)).sum(1, keepdim=True).clamp(-1, 1)
    normal_deg = torch.rad2deg(torch.acos(cos))[mask]
    albedo_r = masked_pearson(est["canon_albedo"], truth["albedo"], mask)
    albedo_regions = region_pearson(est["canon_albedo"], truth["albedo"], mask, truth["canonical_masks"])
    maps = {"depth": (depth_pred, depth_true), "albedo": (est["canon_albedo"], truth["albedo"])}
    mean_face = {name: masked_pearson(population_mean(t, mask).expand_as(t), t, mask) for name, (_, t) in maps.items()}
    variation = {name: variation_pearson(p, t, mask) for name, (p, t) in maps.items()}
    valid = est["mask"].expand_as(est["recon"]) > 0.5
    mse = float(((est["recon"] - est["input"])[valid] ** 2).mean())
    return {
        "n": n,
        "scalars": scalars,
        "depth_pearson_r": float(np.nanmean(depth_r)),
        "depth_side": float(np.mean(side)),
        "depth_relief": float(np.nanmean(relief)),
        "normal_angle_deg": float(normal_deg.mean()),
        "albedo_pearson_r": float(np.nanmean(albedo_r)),
        **{f"albedo_{region}_r": float(np.nanmean(r)) for region, r in albedo_regions.items()},
        **{f"{name}_mean_face_r": float(np.nanmean(r)) for name, r in mean_face.items()},
        **{f"{name}_variation_r": float(np.nanmean(r)) for name, r in variation.items()},
        "recon_psnr_db": 10 * math.log10(4.0 / max(mse, 1e-12)),
    }
