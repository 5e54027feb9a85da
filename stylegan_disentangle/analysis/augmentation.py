"""Augmentation export: images whose semantic (e.g. yaw) is spread evenly over a target range, by guided extrapolation.

Zheng et al. (CVPR 2021) extrapolate along a 3D-coupled direction past the data range to make training data for
modes the generator rarely produces (extreme yaw). Here, for `count` targets `t_i = linspace(lo, hi, count)`:

1. `n_bases` base codes (official per-sample seeds) are walked along the direction both ways with
   `extrapolate` (step `step` stds of W along the direction, at most `max_steps` steps per side), with the
   decomposer as labeler: a sample's walk stops where the semantic saturates (its change per step falls to
   `saturation_fraction` of the first step's) or, with `mahalanobis_quantile`, where the code leaves the W prior.
2. Targets are dealt to the bases round-robin (in a seeded random order, so every base covers the whole range);
   for each target the code is interpolated linearly between the two accepted walk positions whose labels bracket
   it, then refined by `refine` rounds of regula falsi on the decomposer's labels (the closest accepted position
   when the walk cannot reach the target: such images are marked `reached: false`).
3. The exported images are rendered and decomposed again: `labels.json` / `labels.npz` hold the decomposer's labels
   of the images actually written (not the targets), next to the target and the W step of each.

With `calibration` (a fitted `labels.calibration.LabelCalibration` of the aimed label, e.g. fitted on the downstream
model's own labelled images), the target range, the bracketing and the written label are in the calibrated units;
the decomposer's own value is kept beside it as `<label>_uncalibrated`.

The output directory is built under a temporary name beside `outdir` and renamed into place at the end, so a
crash leaves no half export; it always holds exactly `count` images `images/000000.png ...`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from ..labels import apply_labeler, needs_images
from ..labels.calibration import LabelCalibration
from ..latents import WStats, bank_seeds, render_chunk_size, sample_latents
from ..utils.images import save_png, to_uint8
from .edit import render
from .extrapolate import extrapolate

__all__ = ["AugmentationExport", "export_augmentation", "parse_target"]


@dataclass
class AugmentationExport:
    """What `export_augmentation` wrote: the directory, targets `[N]`, the decomposer's labels `{name: [N]}`,
    the edited ws `[N, num_ws, w_dim]`, and the summary dict (also in labels.json)."""

    outdir: Path
    targets: np.ndarray
    labels: dict[str, np.ndarray]
    ws: torch.Tensor
    summary: dict[str, Any]


def parse_target(spec: str | tuple[float, float]) -> tuple[float, float]:
    """'LO:HI' (e.g. '-45:45') or a pair -> (lo, hi) with lo < hi."""
    if isinstance(spec, str):
        parts = spec.split(":")
        try:
            lo, hi = (float(p) for p in parts) if len(parts) == 2 else (None, None)
        except ValueError:
            lo = hi = None
        if lo is None:
            raise StyleGANDisentangleError(f"target range must be LO:HI, e.g. -45:45; got {spec!r}")
    else:
        lo, hi = (float(v) for v in spec)
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise StyleGANDisentangleError(f"target range needs finite LO < HI; got {lo}:{hi}")
    return lo, hi


def _walks(G, ws, ds, name, label, labeler, step, max_steps, saturation_fraction, w_stats, mahalanobis_quantile,
           batch_size, noise_mode, to_units, progress=False):
    """Both-way walks: positions `[P, B, num_ws, w_dim]`, labels `[P, B]` (NaN where not accepted), ordered from
    the most negative to the most positive step, and each side's stop rule per base (`{'-': [B], '+': [B]}`)."""
    kw = dict(step_unit="sigma" if ds.stds is not None else "w", labeler=labeler, saturation_label=label,
              saturation_fraction=saturation_fraction, w_stats=w_stats, batch_size=batch_size, noise_mode=noise_mode,
              progress=progress)
    if w_stats is not None:
        kw["mahalanobis_quantile"] = mahalanobis_quantile
    sides, stops = [], {}
    for sign in (-1.0, 1.0):
        res = extrapolate(G, ws, ds, name, sign * step, max_steps, **kw)
        lab = to_units(res.labels[label])  # [T+1, B]
        steps = np.arange(lab.shape[0])[:, None]
        lab[steps > res.stop_step[None]] = np.nan
        sides.append((res.ws, lab, res.steps))
        stops["-" if sign < 0 else "+"] = list(res.stop_reason)
    (neg_ws, neg_lab, neg_steps), (pos_ws, pos_lab, pos_steps) = sides
    positions = torch.cat([neg_ws.flip(0), pos_ws[1:]])
    labels = np.concatenate([neg_lab[::-1], pos_lab[1:]])
    steps_w = np.concatenate([neg_steps[::-1], pos_steps[1:]])
    return positions, labels, steps_w, stops


def _bracket(labels: np.ndarray, b: int, target: float):
    """Adjacent accepted walk positions (i, i+1) of base b whose labels bracket `target` (the pair nearest the
    base, i.e. the smallest edit), or (k, k) for the closest accepted position when none does."""
    lab = labels[:, b]
    ok = np.flatnonzero(np.isfinite(lab))
    centre = (len(lab) - 1) / 2
    best = None
    for i, j in zip(ok[:-1], ok[1:]):
        if j == i + 1 and min(lab[i], lab[j]) <= target <= max(lab[i], lab[j]):
            frac = 0.0 if lab[j] == lab[i] else (target - lab[i]) / (lab[j] - lab[i])
            if best is None or abs(i + frac - centre) < best[0]:
                best = (abs(i + frac - centre), i, j)
    if best is None:
        k = ok[int(np.argmin(np.abs(lab[ok] - target)))]
        return k, k
    return best[1], best[2]


def _label_chunks(G, labeler, ws: torch.Tensor, batch_size: int, noise_mode: str, on_images=None,
                  progress: bool | None = False, desc: str = "label") -> dict[str, np.ndarray]:
    """Scalar labels `{name: [N]}` of the codes `ws`, rendered (when the labeler reads images) and labelled
    `batch_size` at a time (fewer for a large network: `render_chunk_size`), so that memory holds one batch of
    images, not all `N`; `on_images(start, uint8 images)` sees each batch's images (to write them) when given.
    `progress`: a tqdm bar over the codes (None: only on a terminal)."""
    parts: dict[str, list[np.ndarray]] = {}
    want_images = on_images is not None or needs_images(labeler)
    step = render_chunk_size(G, batch_size) if want_images else batch_size
    with tqdm(total=ws.shape[0], desc=desc, unit="image", disable=(not progress) if progress is not None else None,
              leave=False) as bar:
        for start in range(0, ws.shape[0], step):
            chunk = ws[start:start + step]
            img = render(G, chunk, step, noise_mode) if want_images else None
            if on_images is not None:
                on_images(start, to_uint8(img))
            for k, v in apply_labeler(labeler, img if needs_images(labeler) else None, chunk).items():
                if v.ndim == 1:
                    parts.setdefault(k, []).append(v.double().numpy())
            bar.update(len(chunk))
    return {k: np.concatenate(v) for k, v in parts.items()}


def _refine(G, labeler, label, lo_ws, hi_ws, lo_y, hi_y, lo_s, hi_s, targets, iterations, batch_size, noise_mode,
            to_units, progress=False):
    """Regula falsi on each bracket [lo, hi] (codes, labels, W steps): interpolate linearly to the target, label
    the result, keep the sub-bracket that still holds the target; `iterations` rounds. Returns codes and steps."""
    for it in range(iterations + 1):
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(hi_y != lo_y, (targets - lo_y) / (hi_y - lo_y), 0.0)
        frac = np.clip(np.nan_to_num(frac), 0.0, 1.0)
        f = torch.as_tensor(frac, dtype=torch.float32)[:, None, None]
        ws = lo_ws + f * (hi_ws - lo_ws)
        steps = lo_s + frac * (hi_s - lo_s)
        if it == iterations:
            return ws, steps
        y = to_units(_label_chunks(G, labeler, ws, batch_size, noise_mode, progress=progress,
                                   desc=f"refine {it + 1}/{iterations}")[label])
        low_side = (np.minimum(lo_y, y) <= targets) & (targets <= np.maximum(lo_y, y))
        keep_hi = low_side[:, None, None]
        hi_ws = torch.where(torch.as_tensor(keep_hi), ws, hi_ws)
        lo_ws = torch.where(torch.as_tensor(keep_hi), lo_ws, ws)
        hi_y, lo_y = np.where(low_side, y, hi_y), np.where(low_side, lo_y, y)
        hi_s, lo_s = np.where(low_side, steps, hi_s), np.where(low_side, lo_s, steps)
    return ws, steps


def _check_export(G: nn.Module, direction_set: DirectionSet, name: str, labeler: Any, label: str, count: int,
                  calibration: LabelCalibration | None, outdir: Path, overwrite: bool, n_bases: int | None) -> None:
    """export_augmentation's arguments, checked before anything is sampled or written."""
    if count < 1:
        raise StyleGANDisentangleError(f"count must be >= 1, got {count}")
    direction_set.check_fits(G.w_dim, G.num_ws)
    direction_set.resolve_name(name)
    if label not in getattr(labeler, "names", []):
        raise StyleGANDisentangleError(f"the labeler has no scalar label {label!r} to aim at (only its scalar labels "
                                       f"can be: {list(getattr(labeler, 'names', []))}); name one with --label "
                                       "(Python: label=...)")
    if calibration is not None:
        if getattr(calibration, "label", None) != label:
            raise StyleGANDisentangleError(f"the calibration is for label {getattr(calibration, 'label', None)!r}, "
                                           f"not the aimed label {label!r}")
        calibration.transform(0.0)  # raises when not fitted
    if outdir.exists() and any(outdir.iterdir()) and not overwrite:
        raise StyleGANDisentangleError(f"{outdir} exists and is not empty; choose another --outdir, or replace it "
                                       "with --overwrite (Python: overwrite=True)")
    if n_bases is not None and (isinstance(n_bases, bool) or int(n_bases) != n_bases or n_bases < 1):
        raise StyleGANDisentangleError(f"n_bases (--bases) must be an integer >= 1, got {n_bases!r}")


def export_augmentation(
    G: nn.Module,
    direction_set: DirectionSet,
    name: str,
    labeler: Any,
    target: str | tuple[float, float],
    count: int,
    outdir: str | os.PathLike,
    *,
    label: str | None = None,
    seed: int = 0,
    n_bases: int | None = None,
    truncation_psi: float = 1.0,
    step: float = 0.5,
    max_steps: int = 12,
    saturation_fraction: float = 0.1,
    mahalanobis_quantile: float | None = 0.999,
    stats_samples: int = 5000,
    refine: int = 2,
    batch_size: int = 64,
    noise_mode: str = "const",
    overwrite: bool = False,
    calibration: LabelCalibration | None = None,
    extra: dict[str, Any] | None = None,
    progress: bool | None = False,
) -> AugmentationExport:
    """Export exactly `count` images of G with the semantic `label` (default: `name`) spread over `target`.

    Parameters
    ----------
    direction_set, name : the direction to walk (e.g. a 3d-coupled set's 'yaw').
    labeler : the decomposer labeler (any labeler with the scalar `label`).
    target : 'LO:HI' or (lo, hi) in the label's units (degrees for yaw).
    n_bases : base codes (default: count // 8, at least 4; never more than count, the number of codes used).
    step, max_steps : walk step (stds of W along the direction when the set has stds, else W units) and length.
    saturation_fraction : the saturation stop rule's threshold (see `extrapolate`).
    mahalanobis_quantile : stop where the Mahalanobis distance to W (fitted on `stats_samples` fresh untruncated
        samples, whatever `truncation_psi` the bases have) exceeds this quantile of the samples' own distances; None
        disables the rule.
    refine : regula-falsi rounds (one render + labelling of the `count` codes each) that move each code from its
        linear interpolation towards the exact target.
    overwrite : replace an existing non-empty `outdir` (atomically); default StyleGANDisentangleError.
    calibration : a fitted LabelCalibration of `label`: targets and written labels in its units (see module doc).
    extra : JSON-able provenance added to labels.json (e.g. checkpoint hash, decomposer).
    progress : tqdm bars for the walks, the refinement rounds and the writing (None: only on a terminal); a large
        network on a CPU renders for minutes to hours here.

    Writes `outdir/images/%06d.png`, `labels.json` (summary + one record per image) and `labels.npz` (target, step_w,
    seed, ws and every scalar label as arrays).
    """
    lo, hi = parse_target(target)
    count, label, outdir = int(count), label or name, Path(outdir)
    _check_export(G, direction_set, name, labeler, label, count, calibration, outdir, overwrite, n_bases)
    name = direction_set.resolve_name(name)  # 'pc0' for 'pc0:-color_b'

    def to_units(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        return values.copy() if calibration is None else calibration.transform(values)

    # the targets are dealt to the bases round-robin: a base beyond the count-th would be walked and never used
    n_bases = min(count, int(n_bases) if n_bases is not None else max(4, count // 8))
    seeds = bank_seeds(seed, 0, n_bases)
    with torch.no_grad():
        base_ws = sample_latents(G, seeds, truncation_psi=truncation_psi, batch_size=batch_size).ws.cpu()
        w_stats = None
        if mahalanobis_quantile is not None:
            # the prior is W's own distribution (psi = 1), however truncated the bases are: fitted on truncated
            # codes it would shrink with psi, and at psi = 0 (every code the mean) every step would leave it
            ref = sample_latents(G, bank_seeds(seed + 1, 0, int(stats_samples)), truncation_psi=1.0,
                                 batch_size=1024).ws[:, 0].cpu().numpy()
            w_stats = WStats().fit(ref)
        positions, labels, steps_w, stops = _walks(G, base_ws, direction_set, name, label, labeler, step,
                                                   max_steps, saturation_fraction, w_stats, mahalanobis_quantile,
                                                   batch_size, noise_mode, to_units, progress)

    targets = np.linspace(lo, hi, count) if count > 1 else np.array([(lo + hi) / 2])
    order = np.random.default_rng(seed).permutation(count)
    base_of = np.zeros(count, dtype=np.int64)
    base_of[order] = np.arange(count) % n_bases  # round-robin over the bases in a seeded random order of targets
    pairs = np.array([_bracket(labels, int(base_of[i]), float(targets[i])) for i in range(count)])
    reached = pairs[:, 0] != pairs[:, 1]
    cols = torch.as_tensor(base_of)
    lo_ws, hi_ws = positions[torch.as_tensor(pairs[:, 0]), cols], positions[torch.as_tensor(pairs[:, 1]), cols]
    lo_y, hi_y = labels[pairs[:, 0], base_of], labels[pairs[:, 1], base_of]
    with torch.no_grad():
        final_ws, chosen_steps = _refine(G, labeler, label, lo_ws, hi_ws, lo_y, hi_y, steps_w[pairs[:, 0]],
                                         steps_w[pairs[:, 1]], targets, int(refine), batch_size, noise_mode,
                                         to_units, progress)

    def summarize(got: dict[str, np.ndarray]) -> tuple[list[dict], dict]:
        """The per-image records and the summary, once the written images' labels are known."""
        if calibration is not None:
            got[f"{label}_uncalibrated"] = got[label]
            got[label] = to_units(got[label])
        records = [{"index": i, "file": f"images/{i:06d}.png", "base_seed": int(seeds[base_of[i]]),
                    "target": float(targets[i]), "step_w": float(chosen_steps[i]), "reached": bool(reached[i]),
                    **{k: float(v[i]) for k, v in got.items()}} for i in range(count)]
        err = got[label] - targets
        summary = {
            "command": "export-augmentation", "package_version": __version__, "direction": name, "label": label,
            "target": [lo, hi], "count": count, "seed": int(seed), "n_bases": n_bases,
            "truncation_psi": float(truncation_psi), "step": float(step), "max_steps": int(max_steps),
            "saturation_fraction": float(saturation_fraction), "mahalanobis_quantile": mahalanobis_quantile,
            "refine": int(refine),
            "calibration": None if calibration is None else calibration.to_dict(),
            "reached_fraction": float(reached.mean()),
            # why the walks ended, per side: where targets are not reached, this says whether the semantic
            # saturated, the code left the W prior, or max_steps ran out (then a longer walk may reach them)
            "walk_stops": {side: {r: reasons.count(r) for r in sorted(set(reasons))}
                           for side, reasons in stops.items()},
            "label_error": {"mean_abs": float(np.mean(np.abs(err))), "max_abs": float(np.max(np.abs(err)))},
            "label_range": [float(got[label].min()), float(got[label].max())],
            **(extra or {}),
        }
        return records, summary

    got, summary = _write_atomically(outdir, G, labeler, final_ws, batch_size, noise_mode, summarize, targets,
                                     chosen_steps, seeds[base_of], overwrite, progress)
    return AugmentationExport(outdir, targets, got, final_ws, summary)


def _write_atomically(outdir: Path, G, labeler, ws: torch.Tensor, batch_size: int, noise_mode: str, summarize,
                      targets, steps, seeds, overwrite: bool, progress: bool | None = False
                      ) -> tuple[dict[str, np.ndarray], dict]:
    """Render, label and write the images batch by batch into a temporary folder beside `outdir`, then the labels
    (`summarize(labels) -> (records, summary)`), then rename it to `outdir`: never a half-written export, and one
    batch of images in memory at a time. Returns the labels and the summary."""
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=outdir.parent, prefix=f".{outdir.name}.tmp-"))
    try:
        (tmp / "images").mkdir()

        def write(start: int, images: np.ndarray) -> None:
            for i, arr in enumerate(images, start):
                save_png(arr, tmp / "images" / f"{i:06d}.png")

        with torch.no_grad():
            got = _label_chunks(G, labeler, ws, batch_size, noise_mode, on_images=write, progress=progress,
                                desc="write")
        records, summary = summarize(got)
        with open(tmp / "labels.json", "w") as f:
            json.dump({**summary, "images": records}, f, indent=2)
            f.write("\n")
        np.savez(tmp / "labels.npz", target=targets, step_w=steps, base_seed=np.asarray(seeds), ws=ws.numpy(),
                 **{f"label_{k}": v for k, v in got.items()})
        os.chmod(tmp, 0o777 & ~_umask())
        old = None
        if outdir.exists():
            if any(outdir.iterdir()) and not overwrite:
                raise StyleGANDisentangleError(f"{outdir} appeared while exporting and is not empty")
            old = outdir.with_name(f".{outdir.name}.old-{os.getpid()}")
            os.replace(outdir, old)
        os.replace(tmp, outdir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return got, summary


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
