"""Editing with a DirectionSet: `ws + step * direction` on the direction's ws layers, and rendering the result.

An edit of ws `[N, num_ws, w_dim]` by direction v and step s adds `s * v` to the layers `[start, stop)` of the
direction's layer range (every layer when it has none, or the `layers` you pass). Per-layer directions
(`[num_ws, w_dim]`) add their own vector on each layer of that range. Steps are in W units by default
(`step_unit='sigma'` multiplies them by the std of the samples along the direction, `DirectionSet.stds`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..directions import DirectionSet
from ..errors import LatentError, StyleGANDisentangleError
from ..latents import check_ws, eval_mode, generator_device
from ..utils.ranges import parse_seeds, parse_steps  # noqa: F401  (re-exported)

__all__ = [
    "direction_offset",
    "edit",
    "parse_layers",
    "parse_seeds",
    "parse_steps",
    "render",
    "step_scale",
]


def parse_layers(spec: str | Sequence[int] | None) -> tuple[int, int] | None:
    """ws layer range from "start:stop" (stop exclusive), "all"/None, or a pair."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None
    if isinstance(spec, str):
        match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", spec)
        if match is None:
            raise StyleGANDisentangleError(f"layers {spec!r} must look like START:STOP (e.g. 0:4) or 'all'")
        start, stop = int(match.group(1)), int(match.group(2))
    else:
        start, stop = (int(x) for x in spec)
    if not 0 <= start < stop:
        raise StyleGANDisentangleError(f"layers {spec!r} must satisfy 0 <= START < STOP")
    return start, stop


def step_scale(direction_set: DirectionSet, name: str, step_unit: str = "w") -> float:
    """Factor turning a step in `step_unit` ('w' or 'sigma') into W units for direction `name`."""
    if step_unit == "w":
        return 1.0
    if step_unit == "sigma":
        stds = direction_set.stds
        if stds is None:
            raise StyleGANDisentangleError(f"direction set ({direction_set.method}) stores no std per direction; "
                                           "use step_unit='w'")
        return float(stds[direction_set.index(name)])
    raise StyleGANDisentangleError(f"step_unit must be 'w' or 'sigma', got {step_unit!r}")


def direction_offset(
    direction_set: DirectionSet, name: str, num_ws: int, layers: tuple[int, int] | None = None
) -> torch.Tensor:
    """The unit-step offset `[num_ws, w_dim]` of direction `name`: its vector on its layer range, zero elsewhere.

    `layers` overrides the set's range for this direction. Raises KeyError-style errors for unknown names.
    """
    if name not in direction_set:
        raise StyleGANDisentangleError(f"no direction named {name!r}; known: {direction_set.names}")
    vec = torch.as_tensor(direction_set[name], dtype=torch.float32)
    if direction_set.per_layer and direction_set.num_ws != num_ws:
        raise LatentError(f"direction set has per-layer vectors for {direction_set.num_ws} ws layers, "
                          f"the generator has {num_ws}")
    rng = layers if layers is not None else direction_set.layer_range(name)
    start, stop = rng if rng is not None else (0, num_ws)
    if stop > num_ws:
        raise StyleGANDisentangleError(f"layer range [{start}, {stop}) of {name!r} exceeds num_ws={num_ws}")
    offset = torch.zeros(num_ws, direction_set.w_dim)
    offset[start:stop] = vec[start:stop] if vec.ndim == 2 else vec
    return offset


def render(
    G: nn.Module,
    ws: torch.Tensor,
    batch_size: int = 32,
    noise_mode: str = "const",
    force_fp32: bool | None = None,
    progress: bool | None = False,
) -> torch.Tensor:
    """Synthesize ws `[N, num_ws, w_dim]` in batches -> img `[N, C, H, W]` float32 on CPU."""
    device = generator_device(G)
    if force_fp32 is None:
        force_fp32 = device.type == "cpu"
    out = []
    disable = (not progress) if progress is not None else None
    with eval_mode(G):
        for start in tqdm(range(0, ws.shape[0], batch_size), desc="render", disable=disable):
            batch = ws[start : start + batch_size].to(device)
            out.append(G.synthesis(batch, noise_mode=noise_mode, force_fp32=force_fp32).float().cpu())
    if not out:
        return torch.zeros(0, G.img_channels, G.img_resolution, G.img_resolution)
    return torch.cat(out)


def edit(
    G: nn.Module,
    ws: Any,
    direction_set: DirectionSet,
    name: str,
    steps: Sequence[float] | str,
    layers: tuple[int, int] | str | None = None,
    *,
    step_unit: str = "w",
    return_images: bool = False,
    noise_mode: str = "const",
    batch_size: int = 32,
    force_fp32: bool | None = None,
    progress: bool | None = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Move ws along one direction by each step.

    Parameters
    ----------
    G : the generator (its `num_ws`, `w_dim`; renders when `return_images`).
    ws : `[N, num_ws, w_dim]` (or w `[N, w_dim]`, broadcast), torch or numpy.
    steps : `[S]` step sizes (or a "start:stop:count" string) in `step_unit` ('w' = W units, 'sigma' = stds).
    layers : ws range `(start, stop)` / "start:stop" overriding the direction's own.

    Returns
    -------
    ws_edited `[S, N, num_ws, w_dim]` (CPU float32); with `return_images`, also img `[S, N, C, H, W]`.
    """
    ws = check_ws(ws, G.num_ws, G.w_dim).detach().cpu()
    if direction_set.w_dim != G.w_dim:
        raise LatentError(f"direction set has w_dim {direction_set.w_dim}, the generator {G.w_dim}")
    steps_w = parse_steps(steps) * step_scale(direction_set, name, step_unit)
    offset = direction_offset(direction_set, name, G.num_ws, parse_layers(layers))
    steps_t = torch.as_tensor(steps_w, dtype=torch.float32)
    edited = ws[None] + steps_t[:, None, None, None] * offset[None, None]
    check_ws(edited.reshape(-1, G.num_ws, G.w_dim), G.num_ws, G.w_dim, what="edited ws")
    if not return_images:
        return edited
    flat = render(G, edited.reshape(-1, G.num_ws, G.w_dim), batch_size, noise_mode, force_fp32, progress)
    return edited, flat.reshape(len(steps_w), ws.shape[0], *flat.shape[1:])
