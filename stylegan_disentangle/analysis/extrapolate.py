"""Guided extrapolation: walk ws along a direction beyond the data range until a stop rule fires.

The walk visits positions `t = 0, 1, ..., max_steps` at `ws + t * step_size * v` (v on exactly the direction's ws
layers, a range or any set of indices; the other ws rows never move).
At each position t >= 1, each still-walking sample is checked by every enabled rule; the first rule that fires
stops that sample at `t - 1`, the last position before the rule fired:

- **saturation** (a labeler is given): the label's change per step, `|y_t - y_{t-1}|`, has fallen to at most
  `saturation_fraction` times its initial change `|y_1 - y_0|` — the semantic no longer responds.
- **mahalanobis** (`w_stats` given): the Mahalanobis distance of the edited layers to the W prior (max over the
  edited layers) exceeds `mahalanobis_threshold` (default: the `mahalanobis_quantile` of the fitted samples' own
  distances) — the code has left the prior.
- **discriminator** (`D` given): the discriminator logit of the rendered image drops below `d_threshold`
  (default: the `d_quantile` of D's logits on `d_reference_samples` images generated at psi=1). There are no real
  images here, so the reference is the *generated-sample* distribution: the walk stops where D finds the image
  less real than almost every ordinary sample of the generator.

Samples never stopped by a rule stop at `max_steps` (reason 'max_steps'). Diagnostics are recorded per position
for the samples still walking (NaN after a sample stopped).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from ..labels import apply_labeler, needs_images
from ..latents import WStats, bank_seeds, check_ws, eval_mode, generator_device, sample_latents
from ..utils import atomic_write, atomic_write_path
from .edit import LayerSpec, direction_offset, direction_ws_indices, render, step_scale

__all__ = ["ExtrapolationResult", "discriminator_scores", "extrapolate"]

STOP_REASONS = ("saturation", "mahalanobis", "discriminator", "max_steps")


@dataclass
class ExtrapolationResult:
    """The walk and its diagnostics.

    Attributes
    ----------
    direction : name of the direction walked
    steps : [T+1] positions in W units (0, step, 2 step, ...)
    ws : [T+1, N, num_ws, w_dim] the codes at every position
    labels : {name: [T+1, N]} labels while walking (NaN after a sample stopped)
    mahalanobis : [T+1, N] or None;  d_scores : [T+1, N] or None
    stop_step : [N] index into `steps` of each sample's last accepted position
    stop_reason : N strings from ('saturation', 'mahalanobis', 'discriminator', 'max_steps')
    thresholds : the values the rules used (JSON-able)
    """

    direction: str
    steps: np.ndarray
    ws: torch.Tensor
    labels: dict[str, np.ndarray]
    mahalanobis: np.ndarray | None
    d_scores: np.ndarray | None
    stop_step: np.ndarray
    stop_reason: list[str]
    thresholds: dict[str, Any] = field(default_factory=dict)

    @property
    def final_ws(self) -> torch.Tensor:
        """[N, num_ws, w_dim] each sample's code at its stop step."""
        return self.ws[torch.as_tensor(self.stop_step), torch.arange(self.ws.shape[1])]

    @property
    def final_steps(self) -> np.ndarray:
        """[N] how far (W units) each sample was moved."""
        return self.steps[self.stop_step]

    def summary(self) -> dict[str, Any]:
        """JSON-able summary: thresholds, per-sample stop step / distance / reason, reason counts."""
        return {
            "direction": self.direction,
            "steps": self.steps.tolist(),
            "stop_step": self.stop_step.tolist(),
            "final_step_w": self.final_steps.tolist(),
            "stop_reason": list(self.stop_reason),
            "reason_counts": {r: self.stop_reason.count(r) for r in STOP_REASONS if r in self.stop_reason},
            "thresholds": self.thresholds,
        }

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write `<stem>.npz` (ws, steps, diagnostics) and `<stem>.json` (the summary), atomically."""
        path = Path(path)
        stem = path.with_suffix("") if path.suffix in (".npz", ".json") else path
        npz, js = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
        arrays = {"ws": self.ws.numpy(), "steps": self.steps, "stop_step": self.stop_step}
        arrays.update({f"label/{k}": v for k, v in self.labels.items()})
        if self.mahalanobis is not None:
            arrays["mahalanobis"] = self.mahalanobis
        if self.d_scores is not None:
            arrays["d_scores"] = self.d_scores
        with atomic_write_path(npz) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        with atomic_write(js, "w") as f:
            json.dump(self.summary(), f, indent=2)
            f.write("\n")
        return npz, js


def discriminator_scores(
    D: nn.Module, img: torch.Tensor, c: torch.Tensor | None = None, batch_size: int = 32
) -> np.ndarray:
    """D logits `[N]` (float64) of images `[N, C, H, W]`, in eval mode without autograd."""
    device = generator_device(D)
    out = []
    c_dim = int(getattr(D, "c_dim", 0))
    if c is None:
        if c_dim > 0:
            raise StyleGANDisentangleError(f"the discriminator is conditional (c_dim={c_dim}); pass c [N, {c_dim}]")
        c = torch.zeros(img.shape[0], 0)
    with eval_mode(D):
        for start in range(0, img.shape[0], batch_size):
            logits = D(img[start : start + batch_size].to(device), c[start : start + batch_size].to(device))
            out.append(logits.reshape(-1).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def _pick_label(first_rates: dict[str, np.ndarray], ranges: dict[str, tuple[float, float]]) -> str:
    """The label whose first step changed most, relative to its value range (when finite)."""
    best, best_score = None, -1.0
    for name, rate in first_rates.items():
        lo, hi = ranges.get(name, (-np.inf, np.inf))
        width = hi - lo if np.isfinite(lo) and np.isfinite(hi) and hi > lo else 1.0
        score = float(np.nanmean(np.abs(rate))) / width
        if score > best_score:
            best, best_score = name, score
    return best


def extrapolate(
    G: nn.Module,
    ws: Any,
    direction_set: DirectionSet,
    name: str,
    step_size: float,
    max_steps: int,
    *,
    step_unit: str = "w",
    layers: LayerSpec = None,
    labeler: Any | None = None,
    saturation_label: str | None = None,
    saturation_fraction: float = 0.1,
    w_stats: WStats | None = None,
    mahalanobis_threshold: float | None = None,
    mahalanobis_quantile: float = 0.99,
    D: nn.Module | None = None,
    c: torch.Tensor | None = None,
    d_threshold: float | None = None,
    d_quantile: float = 0.01,
    d_reference_samples: int = 256,
    d_reference_seed: int = 0,
    batch_size: int = 32,
    noise_mode: str = "const",
    progress: bool | None = False,
) -> ExtrapolationResult:
    """Walk ws `[N, num_ws, w_dim]` along direction `name` by `step_size` (negative walks backwards) up to
    `max_steps` steps, stopping each sample by the rules in the module docstring.

    `layers` overrides the direction's ws layers (any `parse_layers` spec: "0,2", "0:4", a range or a list); the
    Mahalanobis rule looks at exactly the edited ws rows. `c` `[N, c_dim]` is the class input of a conditional D.
    `progress`: a tqdm bar over the walk's steps (None: only on a terminal). Raises StyleGANDisentangleError on bad
    arguments.
    """
    ws = check_ws(ws, G.num_ws, G.w_dim).detach().cpu()
    direction_set.check_fits(G.w_dim, G.num_ws)
    _check_walk(max_steps, step_size, saturation_fraction)
    edited_layers = direction_ws_indices(direction_set, name, G.num_ws, layers)
    offset = direction_offset(direction_set, name, G.num_ws, edited_layers)
    step_w = float(step_size) * step_scale(direction_set, name, step_unit)
    n, positions = ws.shape[0], max_steps + 1
    steps = np.arange(positions) * step_w
    walk = ws[None] + torch.as_tensor(steps, dtype=torch.float32)[:, None, None, None] * offset[None, None]

    thresholds: dict[str, Any] = {"step_w": step_w}
    if w_stats is not None:
        thresholds.update(_mahalanobis_threshold(w_stats, mahalanobis_threshold, mahalanobis_quantile))
    if D is not None:
        thresholds.update(_discriminator_threshold(G, D, d_threshold, d_quantile, d_reference_samples,
                                                   d_reference_seed, batch_size, noise_mode))
    if labeler is not None:
        thresholds["saturation_fraction"] = saturation_fraction
    want_images = D is not None or (labeler is not None and needs_images(labeler))

    labels: dict[str, np.ndarray] = {}
    maha = np.full((positions, n), np.nan) if w_stats is not None else None
    dsc = np.full((positions, n), np.nan) if D is not None else None
    stop_step = np.full(n, max_steps, dtype=np.int64)
    reason = ["max_steps"] * n
    active = np.ones(n, dtype=bool)
    saturation = None if labeler is None else _SaturationRule(labeler, saturation_label, saturation_fraction)

    for t in tqdm(range(positions), desc=f"walk {name} {'-' if step_size < 0 else '+'}", unit="step", leave=False,
                  disable=(not progress) if progress is not None else None):
        rows = np.flatnonzero(active)
        if rows.size == 0:
            break
        cur = walk[t, rows]
        img = render(G, cur, batch_size, noise_mode) if want_images else None
        if labeler is not None:
            for key, value in apply_labeler(labeler, img, cur).items():
                if value.ndim != 1:  # map labels (depth, albedo) are not followed: saturation reads scalars
                    continue
                labels.setdefault(key, np.full((positions, n), np.nan))[t, rows] = value.double().numpy()
        if maha is not None:
            maha[t, rows] = w_stats.mahalanobis(cur[:, edited_layers].double().numpy()).max(axis=1)
        if dsc is not None:
            dsc[t, rows] = discriminator_scores(D, img, None if c is None else c[rows], batch_size)
        if t == 0:
            continue
        fired: dict[str, np.ndarray] = {}
        if maha is not None:
            fired["mahalanobis"] = maha[t, rows] > thresholds["mahalanobis"]
        if dsc is not None:
            fired["discriminator"] = dsc[t, rows] < thresholds["discriminator"]
        if saturation is not None:
            fired["saturation"] = saturation.fired(labels, rows, t)
        _stop(fired, rows, t, active, stop_step, reason)
    if saturation is not None:
        thresholds["saturation_label"] = saturation.label
    return ExtrapolationResult(name, steps, walk, labels, maha, dsc, stop_step, reason, thresholds)


class _SaturationRule:
    """The saturation stop: a sample stops once its label's change over one step falls to `fraction` of its change
    over the first step. The label is the given one, else the one `_pick_label` picks from the first step."""

    def __init__(self, labeler: Any, label: str | None, fraction: float) -> None:
        self.ranges = dict(getattr(labeler, "value_ranges", {}) or {})
        self.label, self.fraction = label, fraction
        self.first_rate: np.ndarray | None = None

    def fired(self, labels: dict[str, np.ndarray], rows: np.ndarray, t: int) -> np.ndarray | None:
        """Which of the walking `rows` saturate at position t >= 1 (None at t = 1, which only sets the first rate)."""
        if self.label is None:
            self.label = _pick_label({k: v[1] - v[0] for k, v in labels.items()}, self.ranges)
        if self.label not in labels:
            raise StyleGANDisentangleError(f"saturation_label {self.label!r} is not a label of the labeler; labels: "
                                           f"{sorted(labels)}")
        y = labels[self.label]
        if self.first_rate is None:
            self.first_rate = np.abs(y[1] - y[0])
        if t < 2:
            return None
        return np.abs(y[t, rows] - y[t - 1, rows]) <= self.fraction * self.first_rate[rows]


def _check_walk(max_steps: Any, step_size: float, saturation_fraction: float) -> None:
    if isinstance(max_steps, bool) or not isinstance(max_steps, (int, np.integer)) or max_steps < 1:
        raise StyleGANDisentangleError(f"max_steps must be an integer >= 1, got {max_steps!r}")
    if step_size == 0 or not np.isfinite(step_size):
        raise StyleGANDisentangleError(f"step_size must be finite and non-zero, got {step_size}")
    if not 0 <= saturation_fraction < 1:
        raise StyleGANDisentangleError(f"saturation_fraction must be in [0, 1), got {saturation_fraction}")


def _mahalanobis_threshold(w_stats: WStats, threshold: float | None, quantile: float) -> dict[str, Any]:
    """The Mahalanobis rule's threshold: the given one, else the quantile of the fitted samples' own distances."""
    if threshold is not None:
        return {"mahalanobis": float(threshold)}
    return {"mahalanobis_quantile": quantile, "mahalanobis": float(w_stats.distance_quantile(quantile))}


def _discriminator_threshold(G: nn.Module, D: nn.Module, threshold: float | None, quantile: float, samples: int,
                             seed: int, batch_size: int, noise_mode: str) -> dict[str, Any]:
    """The discriminator rule's threshold: the given one, else the quantile of D's logits on generated samples."""
    if threshold is not None:
        return {"discriminator": float(threshold)}
    ref_scores = _reference_d_scores(G, D, samples, seed, batch_size, noise_mode)
    return {"d_quantile": quantile, "d_reference": "generated samples at psi=1", "d_reference_samples": int(samples),
            "d_reference_seed": int(seed), "discriminator": float(np.quantile(ref_scores, quantile))}


def _stop(fired: dict[str, np.ndarray], rows: np.ndarray, t: int, active: np.ndarray, stop_step: np.ndarray,
          reason: list[str]) -> None:
    """Stop (in place) each walking sample `rows[i]` a rule fired for at position `t`, at `t - 1`, with the first
    rule in the order mahalanobis, discriminator, saturation as its reason."""
    for rule in ("mahalanobis", "discriminator", "saturation"):
        hit = fired.get(rule)
        if hit is None:
            continue
        for i in rows[hit]:
            if active[i]:
                active[i] = False
                stop_step[i] = t - 1
                reason[i] = rule


def _reference_d_scores(G: nn.Module, D: nn.Module, n: int, seed: int, batch_size: int,
                        noise_mode: str) -> np.ndarray:
    """D logits of `n` images generated at psi=1 (seeds from `bank_seeds(seed)`)."""
    if n < 2:
        raise StyleGANDisentangleError(f"d_reference_samples must be >= 2, got {n}")
    lat = sample_latents(G, bank_seeds(seed, 0, n), truncation_psi=1.0, batch_size=batch_size)
    img = render(G, lat.ws, batch_size, noise_mode)
    return discriminator_scores(D, img, lat.c.cpu() if G.c_dim > 0 else None, batch_size)
