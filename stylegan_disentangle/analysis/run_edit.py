"""The `edit` runner: load a checkpoint and a DirectionSet, edit seeds along named directions, write grids and ws.

Files written into `outdir`: `config.json`; per direction `edit_<name>.png` (rows = seeds, columns = steps) and
`ws_<name>.npy` (`[S, N, num_ws, w_dim]` float32, the edited codes, ready for `G.synthesis`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from ..latents import sample_latents
from ..utils import atomic_write_path
from ._run import Timer, load_generator, run_header, write_json
from .edit import direction_ws_indices, edit, parse_layers, parse_seeds, parse_steps
from .plots import plot_edit_grid

__all__ = ["run_edit"]


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.+" else "_" for ch in name)


def run_edit(
    pkl: str | os.PathLike,
    directions: str | os.PathLike | DirectionSet,
    names: str | list[str],
    steps: str | list[float] = "-3:3:7",
    seeds: str | list[int] = "0-7",
    outdir: str | os.PathLike = "edit_out",
    step_unit: str = "auto",
    layers: str | list[int] | None = None,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | None = None,
    device: str | torch.device = "auto",
    network: str = "G_ema",
    noise_mode: str = "const",
    batch_size: int = 32,
) -> dict[str, Any]:
    """Edit the official-seed samples `seeds` along each direction in `names`; returns {name: {png, ws}} paths.

    `step_unit`: 'w' (W units), 'sigma' (stds of W along the direction), or 'auto' (sigma when the set stores
    stds, else w). Seeds are official per-image seeds: `z = RandomState(seed).randn(z_dim)`. `layers` overrides
    every direction's ws layers: 'all', 'START:STOP', or indices like '0,2,5' / '0-3,8' (see `parse_layers`);
    config.json records, per direction, the ws indices that were edited.
    """
    steps_arr = parse_steps(steps)
    seed_list = parse_seeds(seeds)
    layer_idx = parse_layers(layers)
    ds = directions if isinstance(directions, DirectionSet) else DirectionSet.load(directions)
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        raise StyleGANDisentangleError("name at least one direction to edit")
    names = [ds.resolve_name(name) for name in names]
    if step_unit == "auto":
        step_unit = "sigma" if ds.stds is not None else "w"
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    with timer("load"):
        G, _, provenance = load_generator(pkl, device, network)
    ds.check_fits(G.w_dim, G.num_ws, what=f"the direction set {directions}" if not isinstance(directions, DirectionSet)
                  else "the direction set", checkpoint_sha256=provenance["checkpoint_sha256"])
    args = dict(pkl=str(pkl), directions=str(directions) if not isinstance(directions, DirectionSet) else None,
                names=names, steps=steps_arr.tolist(), step_unit=step_unit, seeds=seed_list,
                layers=layer_idx, truncation_psi=truncation_psi,
                truncation_cutoff=truncation_cutoff, class_idx=class_idx, device=str(device), network=network,
                noise_mode=noise_mode)
    try:
        edited_ws = {name: direction_ws_indices(ds, name, G.num_ws, layer_idx) for name in names}
    except StyleGANDisentangleError as exc:
        raise StyleGANDisentangleError(f"{exc} (direction set {directions})") from None
    args["edited_ws"] = edited_ws
    config = run_header("edit", args)
    config.update(provenance)
    write_json(outdir / "config.json", config)
    lat = sample_latents(G, seed_list, truncation_psi, truncation_cutoff, class_idx=class_idx)
    written: dict[str, Any] = {}
    for name in names:
        with timer(f"edit {name}"):
            ws_edit, img = edit(G, lat.ws, ds, name, steps_arr, layers=edited_ws[name], step_unit=step_unit,
                                return_images=True, noise_mode=noise_mode, batch_size=batch_size)
        ws_path = outdir / f"ws_{_safe(name)}.npy"
        with atomic_write_path(ws_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, ws_edit.numpy())
        unit = "σ" if step_unit == "sigma" else ""
        png = plot_edit_grid(img.transpose(0, 1), outdir / f"edit_{_safe(name)}.png",
                             row_labels=[f"seed {s}" for s in seed_list],
                             col_labels=[f"{s:+.2g}{unit}" for s in steps_arr],
                             title=f"{name} ({ds.method}), steps in {'stds' if unit else 'W units'}")
        written[name] = {"png": str(png), "ws": str(ws_path)}
    write_json(outdir / "config.json", dict(config, outputs=written, timings_s=timer.seconds))
    return written
