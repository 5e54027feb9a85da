"""Editing with a DirectionSet: `ws + step * direction` on the direction's ws layers, and rendering the result.

An edit of ws `[N, num_ws, w_dim]` by direction v and step s adds `s * v` to exactly the direction's ws layers
(`DirectionSet.layers_of`: a range or any set of indices, every layer when it has none, or the `layers` you pass);
every other ws row stays bit-identical. Per-layer directions (`[num_ws, w_dim]`) add their own vector on each of those
layers. Steps are in W units by default (`step_unit='sigma'` multiplies them by the std of the samples along the
direction, `DirectionSet.stds`).

Layer specs (`parse_layers`, the CLI's `--layers`): 'all'; 'START:STOP' (the range, STOP exclusive); or a SeFa-style
list of indices and inclusive ranges, '0,2,5' or '0-3,8' (the same syntax as seeds).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..directions import DirectionSet
from ..errors import LatentError, StyleGANDisentangleError, UsageError
from ..latents import check_ws, eval_mode, generator_device, render_chunk_size
from ..utils.ranges import parse_seeds, parse_steps  # noqa: F401  (re-exported)

__all__ = [
    "direction_offset",
    "direction_ws_indices",
    "edit",
    "parse_layers",
    "parse_seeds",
    "parse_steps",
    "render",
    "step_scale",
]


LayerSpec = str | range | Iterable[int] | None


def parse_layers(spec: LayerSpec) -> list[int] | None:
    """Sorted unique ws indices from a layer spec; None = all layers (the direction's own, in `edit`).

    `spec`: None, '' or 'all'; 'START:STOP' (range, STOP exclusive, e.g. '0:4' = 0..3); '0,2,5' / '0-3,8' (indices
    and inclusive ranges, as SeFa's `--layer_idx` and our seeds); a `range`; or a list / set / array of indices.
    A 2-tuple is refused: it was once `(start, stop)`, so `(0, 2)` would be ambiguous (use `range(0, 2)` or
    `[0, 2]`). Raises UsageError on anything else.
    """
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return None
    if isinstance(spec, str):
        if ":" in spec:
            match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", spec)
            if match is None:
                raise UsageError(f"layers {spec!r} must look like START:STOP (e.g. 0:4), a list like 0,2,5, or 'all'")
            start, stop = int(match.group(1)), int(match.group(2))
            if not start < stop:
                raise UsageError(f"layers {spec!r} must satisfy 0 <= START < STOP")
            return list(range(start, stop))
        try:
            return sorted(set(parse_seeds(spec)))
        except UsageError:
            raise UsageError(f"layers {spec!r} must be 'all', START:STOP (e.g. 0:4), or indices and inclusive "
                             "ranges like 0,2,5 or 0-3,8") from None
    if isinstance(spec, tuple) and len(spec) == 2:
        raise UsageError(f"layers={spec!r} is ambiguous (once a (start, stop) range): pass "
                         f"range({spec[0]}, {spec[1]}) for a range or a list {list(spec)} for exactly these indices")
    try:
        items = list(spec)
        values = [int(v) for v in items]
        ok = all(v == i and not isinstance(i, (bool, str)) for v, i in zip(values, items))
    except (TypeError, ValueError):
        ok = False
    if not ok or not values or min(values) < 0:
        raise UsageError(f"layers {spec!r} must be non-negative integer ws indices")
    return sorted(set(values))


def step_scale(direction_set: DirectionSet, name: str, step_unit: str = "w") -> float:
    """Factor turning a step in `step_unit` ('w' or 'sigma') into W units for direction `name`."""
    if step_unit == "w":
        return 1.0
    if step_unit == "sigma":
        name = direction_set.resolve_name(name)  # 'pc0' for 'pc0:-color_b', as the CLI's --name
        stds = direction_set.stds
        if stds is None:
            raise StyleGANDisentangleError(f"direction set ({direction_set.method}) stores no std per direction; "
                                           "use step_unit='w'")
        return float(stds[direction_set.index(name)])
    raise StyleGANDisentangleError(f"step_unit must be 'w' or 'sigma', got {step_unit!r}")


def direction_ws_indices(
    direction_set: DirectionSet, name: str, num_ws: int, layers: LayerSpec = None
) -> list[int]:
    """The ws indices an edit along `name` moves: `layers` (any `parse_layers` spec) or else the direction's own.

    Raises StyleGANDisentangleError for unknown names or indices outside `0..num_ws-1`.
    """
    name = direction_set.resolve_name(name)  # 'pc0' for 'pc0:-color_b'; unknown: an error naming close ones
    chosen = parse_layers(layers)
    if chosen is None:
        try:
            return direction_set.ws_indices(name, num_ws)
        except ValueError as exc:
            raise StyleGANDisentangleError(str(exc)) from None
    if chosen[-1] >= num_ws:
        raise StyleGANDisentangleError(f"layers {chosen} for {name!r} exceed the generator's ws indices "
                                       f"0..{num_ws - 1} (num_ws={num_ws})")
    return chosen


def direction_offset(
    direction_set: DirectionSet, name: str, num_ws: int, layers: LayerSpec = None
) -> torch.Tensor:
    """The unit-step offset `[num_ws, w_dim]` of direction `name`: its vector on its ws layers, zero elsewhere.

    `layers` (any `parse_layers` spec) overrides the set's layers for this direction. Raises
    StyleGANDisentangleError for unknown names and layers outside the generator.
    """
    name = direction_set.resolve_name(name)  # 'pc0' for 'pc0:-color_b'; unknown: an error naming close ones
    rows = direction_ws_indices(direction_set, name, num_ws, layers)
    vec = torch.as_tensor(direction_set[name], dtype=torch.float32)
    if direction_set.per_layer and direction_set.num_ws != num_ws:
        raise LatentError(f"direction set has per-layer vectors for {direction_set.num_ws} ws layers, "
                          f"the generator has {num_ws}")
    offset = torch.zeros(num_ws, direction_set.w_dim)
    offset[rows] = vec[rows] if vec.ndim == 2 else vec
    return offset


def render(
    G: nn.Module,
    ws: torch.Tensor,
    batch_size: int = 32,
    noise_mode: str = "const",
    force_fp32: bool | None = None,
    progress: bool | None = False,
) -> torch.Tensor:
    """Synthesize ws `[N, num_ws, w_dim]` in batches (of at most `batch_size`, fewer for a large network:
    `render_chunk_size`) -> img `[N, C, H, W]` float32 on CPU."""
    device = generator_device(G)
    if force_fp32 is None:
        force_fp32 = device.type == "cpu"
    batch_size = render_chunk_size(G, batch_size)
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
    layers: LayerSpec = None,
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
    layers : ws indices overriding the direction's own: "0,2", "0:4", "all", a range or a list (see `parse_layers`).
        Exactly these ws rows move; every other row of the result equals the input bit for bit.

    Returns
    -------
    ws_edited `[S, N, num_ws, w_dim]` (CPU float32); with `return_images`, also img `[S, N, C, H, W]`.
    """
    ws = check_ws(ws, G.num_ws, G.w_dim).detach().cpu()
    direction_set.check_fits(G.w_dim, G.num_ws)
    steps_w = parse_steps(steps) * step_scale(direction_set, name, step_unit)
    offset = direction_offset(direction_set, name, G.num_ws, layers)
    steps_t = torch.as_tensor(steps_w, dtype=torch.float32)
    edited = ws[None] + steps_t[:, None, None, None] * offset[None, None]
    check_ws(edited.reshape(-1, G.num_ws, G.w_dim), G.num_ws, G.w_dim, what="edited ws")
    if not return_images:
        return edited
    flat = render(G, edited.reshape(-1, G.num_ws, G.w_dim), batch_size, noise_mode, force_fp32, progress)
    return edited, flat.reshape(len(steps_w), ws.shape[0], *flat.shape[1:])
