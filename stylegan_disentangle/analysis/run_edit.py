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
from ..latents import check_ws, sample_latents
from ..utils import atomic_write_path
from ._run import Timer, load_generator, run_header, write_json
from .edit import direction_ws_indices, edit, parse_layers, parse_seeds, parse_steps
from .plots import plot_edit_grid

__all__ = ["run_edit"]


def read_npy_codes(path: str | os.PathLike) -> np.ndarray:
    """The float array of an .npy file (no pickled objects), or an error naming the file."""
    try:
        with open(path, "rb") as f:
            head = f.read(6)
        if head != b"\x93NUMPY":
            raise ValueError(f"not an .npy file (it starts with {head!r})")
        array = np.load(path, allow_pickle=False)
        if array.dtype.kind != "f":
            raise ValueError(f"it holds {array.dtype} values, not float codes")
        if array.ndim == 0 or len(array) == 0:
            raise ValueError(f"it holds no codes (shape {array.shape})")
    except (OSError, ValueError) as exc:
        raise StyleGANDisentangleError(f"{path}: not an .npy of ws: {exc}") from None
    return array


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
    ws_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Edit the official-seed samples `seeds` (or the codes in `ws_file`, an .npy of ws `[N, num_ws, w_dim]` or w
    `[N, w_dim]`, e.g. `project`'s ws.npy) along each direction in `names`; returns {name: {png, ws}} paths.

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
    raw_codes = None if ws_file is None else read_npy_codes(ws_file)
    timer = Timer()
    with timer("load"):
        G, _, provenance = load_generator(pkl, device, network)
    # LatentError naming the file for a wrong shape or NaN
    codes = None if raw_codes is None else check_ws(raw_codes, G.num_ws, G.w_dim, what=f"the codes in {ws_file}")
    ds.check_fits(G.w_dim, G.num_ws, what=f"the direction set {directions}" if not isinstance(directions, DirectionSet)
                  else "the direction set", checkpoint_sha256=provenance["checkpoint_sha256"])
    args = dict(pkl=str(pkl), directions=str(directions) if not isinstance(directions, DirectionSet) else None,
                names=names, steps=steps_arr.tolist(), step_unit=step_unit,
                seeds=seed_list if ws_file is None else None,  # with --ws the codes come from the file
                layers=layer_idx, truncation_psi=truncation_psi,
                truncation_cutoff=truncation_cutoff, class_idx=class_idx, device=str(device), network=network,
                noise_mode=noise_mode, ws_file=None if ws_file is None else str(ws_file))
    try:
        edited_ws = {name: direction_ws_indices(ds, name, G.num_ws, layer_idx) for name in names}
    except StyleGANDisentangleError as exc:
        raise StyleGANDisentangleError(f"{exc} (direction set {directions})") from None
    args["edited_ws"] = edited_ws
    if ws_file is None:
        base_ws = sample_latents(G, seed_list, truncation_psi, truncation_cutoff, class_idx=class_idx).ws
        row_labels = [f"seed {s}" for s in seed_list]
    else:
        base_ws = codes
        row_labels = [f"code {i}" for i in range(len(codes))]
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)  # only now: bad inputs (set, layers, class, codes) leave nothing behind
    config = run_header("edit", args)
    config.update(provenance)
    write_json(outdir / "config.json", config)
    written: dict[str, Any] = {}
    for name in names:
        with timer(f"edit {name}"):
            ws_edit, img = edit(G, base_ws, ds, name, steps_arr, layers=edited_ws[name], step_unit=step_unit,
                                return_images=True, noise_mode=noise_mode, batch_size=batch_size)
        ws_path = outdir / f"ws_{_safe(name)}.npy"
        with atomic_write_path(ws_path) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, ws_edit.numpy())
        unit = "σ" if step_unit == "sigma" else ""
        png = plot_edit_grid(img.transpose(0, 1), outdir / f"edit_{_safe(name)}.png",
                             row_labels=row_labels,
                             col_labels=[f"{s:+.2g}{unit}" for s in steps_arr],
                             title=f"{name} ({ds.method}), steps in {'stds' if unit else 'W units'}")
        written[name] = {"png": str(png), "ws": str(ws_path)}
    write_json(outdir / "config.json", dict(config, outputs=written, timings_s=timer.seconds))
    return written
