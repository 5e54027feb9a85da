"""The one training loop shared by every W-space model.

``train_model(model, sampler, outdir, steps=...)`` runs Adam on ``model.training_losses(batch)['total']`` and gives:
- determinism: batch `i` comes from ``sampler.sample(i, device)`` (which must depend only on its own seed and `i`),
  and the global RNGs are seeded once from `seed`;
- bit-identical resume: `outdir/checkpoint.pt` (model, optimizer, step, every RNG state, early-stopping state) is
  written atomically every `checkpoint_every` steps and at the end; a later call with the same outdir continues from
  it, and an interrupted run leaves its last good checkpoint intact;
- a JSON-lines log `outdir/log.jsonl` (losses every `log_every` steps, validation records), tqdm progress, PNG
  previews through `preview_fn(model, path)` every `preview_every` steps;
- early stopping on ``model.validation_metric(sampler.validation(device), G=G)`` (lower is better) every `val_every`
  steps and at the last step, with `patience` validations without improvement; the best weights are restored at the
  end;
- a closing step: a model with ``finish_training(sampler, step)`` gets it called after the best weights are restored
  (e.g. to solve a linear head in closed form on fresh batches, `sample(step + i)`);
- `outdir/model.pt`: the final model file (`WSpaceModel.save`), and `outdir/config.json` with `config`.

Sampler protocol: ``sample(step: int, device) -> dict[str, Tensor]`` and ``validation(device) -> dict[str, Tensor]``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..directions.direction_set import to_jsonable
from ..errors import StyleGANDisentangleError
from ..utils import atomic_write, atomic_write_path, resolve_device
from ..utils.jsonl import trim_jsonl
from .io import ModelFileError

__all__ = ["BatchSampler", "TrainResult", "train_model", "load_checkpoint"]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "stylegan_disentangle.training_checkpoint"


class BatchSampler(Protocol):
    def sample(self, step: int, device: torch.device) -> dict[str, torch.Tensor]: ...

    def validation(self, device: torch.device) -> dict[str, torch.Tensor]: ...


@dataclass
class TrainResult:
    """What a run did: final step, best validation metric and its step, early stop, wall time, files."""

    model: torch.nn.Module
    step: int
    best_metric: float | None
    best_step: int | None
    stopped_early: bool
    seconds: float
    files: dict[str, Path] = field(default_factory=dict)
    last_losses: dict[str, float] = field(default_factory=dict)


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": (np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])),
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a training checkpoint (weights_only); ModelFileError naming the file if it is unreadable."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, bad pickle, ...
        raise ModelFileError(f"{path}: unreadable training checkpoint (truncated or corrupt?): "
                             f"{type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path}: not a stylegan_disentangle training checkpoint")
    return ckpt


def _save_checkpoint(path: Path, model, optimizer, step: int, early: dict, stopped: bool, settings: dict,
                     final: dict | None = None) -> None:
    """`early`: the early-stopping state of the validations on the `val_every` grid, which a longer run continues
    from; `final`: that state with the off-grid validation of the last step added (None when there was none), what
    this run's result is chosen by."""
    record = {
        "format": CHECKPOINT_FORMAT,
        "kind": model.kind,
        "config": dict(model.config),
        "settings": settings,
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": _rng_state(),
        "early": early,
        "final_early": final,
        "stopped": stopped,
        "version": __version__,
    }
    with atomic_write_path(path) as tmp:
        torch.save(record, tmp)


_NOT_SETTINGS = ("command", "pkl", "readout_held_out_r2")  # a name, a path or a figure measured on the data


def _run_settings(seed: int, lr: float, lr_schedule: str, weight_decay: float, config: dict | None) -> dict:
    """What a resumed run must share with the run it continues: the seed, the optimizer's settings and the caller's
    data settings (`config`: pool, batch size, clips, labels...), not where the network was read from."""
    settings = {"seed": seed, "lr": lr, "lr_schedule": lr_schedule, "weight_decay": weight_decay,
                **{k: v for k, v in (config or {}).items() if k not in _NOT_SETTINGS}}
    return json.loads(json.dumps(to_jsonable(settings)))


def _check_same_settings(ckpt_path: Path, stored: dict | None, settings: dict) -> None:
    if stored is None:  # a checkpoint written before the settings were recorded
        return
    changed = sorted(k for k in set(stored) | set(settings) if stored.get(k) != settings.get(k))
    if changed:
        was = ", ".join(f"{k}={stored.get(k)!r}" for k in changed)
        now = ", ".join(f"{k}={settings.get(k)!r}" for k in changed)
        raise StyleGANDisentangleError(f"{ckpt_path}: the run there was trained with {was}; this call asks for {now}. "
                                       "Resume with the same settings, or start again with --no-resume "
                                       "(resume=False) or a new --outdir")


def _start(ckpt_path: Path, log_path: Path, model, optimizer, resume: bool,
           settings: dict | None = None) -> tuple[int, dict, dict | None, bool]:
    """(step, early-stopping state, its final form (see `_save_checkpoint`), stopped) to start from: the
    checkpoint's, with the model, optimizer and RNGs restored and the log trimmed to it, when resuming from one; else
    step 0 with the old log removed. A checkpoint of another model, or of a run with other `settings`
    (`_run_settings`), is refused."""
    if not (resume and ckpt_path.is_file()):
        if log_path.exists():
            log_path.unlink()
        return 0, {"best_metric": None, "best_step": None, "bad": 0, "best_state": None}, None, False
    ckpt = load_checkpoint(ckpt_path)
    if ckpt["kind"] != model.kind or ckpt["config"] != dict(model.config):
        raise StyleGANDisentangleError(f"{ckpt_path}: holds a checkpoint of another model ({ckpt['kind']}, "
                                       f"{ckpt['config']}); use a new --outdir, or start again with --no-resume "
                                       "(resume=False)")
    _check_same_settings(ckpt_path, ckpt.get("settings"), settings or {})
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    _set_rng_state(ckpt["rng"])
    step = int(ckpt["step"])
    trim_jsonl(log_path, step)
    log.info("resuming %s from step %d", ckpt_path, step)
    return step, ckpt["early"], ckpt.get("final_early"), bool(ckpt["stopped"])


def _step(model, optimizer, batch: dict[str, torch.Tensor], G) -> dict[str, float]:
    """One Adam step on the batch's total loss; returns every loss as a float."""
    losses = model.training_losses(batch, G=G)
    optimizer.zero_grad(set_to_none=True)
    losses["total"].backward()
    optimizer.step()
    return {k: float(v.detach()) for k, v in losses.items()}


def _validate(model, sampler: BatchSampler, device: torch.device, early: dict, step: int, log_path: Path,
              G: torch.nn.Module | None) -> None:
    """Score the model on the sampler's validation batch, update the early-stopping state `early` in place (a
    better metric keeps a copy of the weights) and log the record."""
    model.eval()
    with torch.no_grad():
        metric = float(model.validation_metric(sampler.validation(device), G=G))
    model.train()
    best = early["best_metric"]
    if best is None or metric < best:
        early.update(best_metric=metric, best_step=step, bad=0,
                     best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
    else:
        early["bad"] += 1
    with open(log_path, "a") as f:
        f.write(json.dumps({"step": step, "val": metric, "best": early["best_metric"]}) + "\n")


def train_model(
    model: torch.nn.Module,
    sampler: BatchSampler,
    outdir: str | os.PathLike,
    *,
    steps: int,
    lr: float = 1e-3,
    lr_schedule: str = "constant",
    weight_decay: float = 0.0,
    seed: int = 0,
    device: str | torch.device = "auto",
    G: torch.nn.Module | None = None,
    checkpoint_every: int = 200,
    log_every: int = 20,
    val_every: int = 0,
    patience: int | None = None,
    preview_every: int = 0,
    preview_fn: Callable[[torch.nn.Module, Path], None] | None = None,
    max_seconds: float | None = None,
    resume: bool = True,
    progress: bool | None = None,
    config: dict | None = None,
) -> TrainResult:
    """Train `model` (a WSpaceModel) for `steps` steps on batches from `sampler`; see the module docstring.

    `G` is passed to ``model.training_losses(batch, G=G)`` (for losses through the frozen synthesis).
    `lr_schedule='cosine'` decays the learning rate from `lr` to 0 over `steps` (a function of the step, so a
    resumed run follows the same curve). `max_seconds` ends the run early (with a checkpoint) once that much wall
    time was spent in this call.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if lr_schedule not in ("constant", "cosine"):
        raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {lr_schedule!r}")
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path, model_path = out / "checkpoint.pt", out / "log.jsonl", out / "model.pt"
    target = resolve_device(device)
    model.to(target)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    settings = _run_settings(seed, lr, lr_schedule, weight_decay, config)
    step, early, final, stopped = _start(ckpt_path, log_path, model, optimizer, resume, settings)
    if final is not None and step < steps:
        # a longer run of the same settings: the off-grid validation of the earlier run's last step is neither on
        # this run's grid nor in its log
        final = None
        trim_jsonl(log_path, step, drop=lambda record: record.get("step") == step and "val" in record)
    run_config = {"kind": model.kind, "model_config": dict(model.config), "steps": steps, "lr": lr,
                  "lr_schedule": lr_schedule,
                  "weight_decay": weight_decay, "seed": seed, "device": str(target), "val_every": val_every,
                  "patience": patience, "version": __version__, **(config or {})}
    with atomic_write(out / "config.json", "w") as f:
        json.dump(to_jsonable(run_config), f, indent=2)

    start, last = time.time(), {}
    model.train()
    bar = tqdm(total=steps, initial=min(step, steps), desc=f"train {model.kind}",
               disable=(not progress) if progress is not None else None)
    try:
        with torch.enable_grad():
            while step < steps and not stopped:
                if lr_schedule == "cosine":  # a function of the step alone, so resuming needs no scheduler state
                    for group in optimizer.param_groups:
                        group["lr"] = float(lr * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1))))
                last = _step(model, optimizer, sampler.sample(step, target), G)
                step += 1
                bar.update(1)
                if not np.isfinite(last["total"]):
                    raise StyleGANDisentangleError(f"training diverged at step {step} (loss {last['total']}); "
                                                   f"the last good checkpoint is {ckpt_path}; lower the learning rate")
                if log_every and step % log_every == 0:
                    bar.set_postfix({k: f"{v:.3g}" for k, v in last.items()})
                    with open(log_path, "a") as f:
                        f.write(json.dumps({"step": step, **last, "seconds": round(time.time() - start, 3)}) + "\n")
                if val_every and step % val_every == 0:
                    _validate(model, sampler, target, early, step, log_path, G)
                    stopped = patience is not None and early["bad"] >= patience
                elif val_every and step == steps:  # the last weights are scored too, into a copy of the state, so
                    final = dict(early)  # that extending the run later continues as one run of the longer length
                    _validate(model, sampler, target, final, step, log_path, G)
                if preview_fn is not None and preview_every and step % preview_every == 0:
                    model.eval()
                    preview_fn(model, out / "previews" / f"step{step:06d}.png")
                    model.train()
                out_of_time = max_seconds is not None and time.time() - start > max_seconds
                if step % checkpoint_every == 0 or step == steps or stopped or out_of_time:
                    _save_checkpoint(ckpt_path, model, optimizer, step, early, stopped, settings, final)
                if out_of_time:
                    break
    finally:
        bar.close()
    if final is not None:
        early = final
    if early["best_state"] is not None:
        model.load_state_dict(early["best_state"])
    model.eval()
    if hasattr(model, "finish_training"):
        with torch.no_grad():
            model.finish_training(sampler, step)
    if preview_fn is not None:
        preview_fn(model, out / "preview.png")
    model.save(model_path, info={"step": step, "best_step": early["best_step"], "seed": seed})
    files = {"checkpoint": ckpt_path, "log": log_path, "model": model_path, "config": out / "config.json"}
    return TrainResult(model=model, step=step, best_metric=early["best_metric"], best_step=early["best_step"],
                       stopped_early=stopped, seconds=time.time() - start, files=files, last_losses=last)

