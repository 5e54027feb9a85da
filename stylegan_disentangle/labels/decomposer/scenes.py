"""The decomposer trainer's scenes: its own estimate rendered under a new view and light, with the answers known.

- `rerender_scene`: the re-render consistency term's scenes (a new view and light; in the "data" mode the batch's
  own views and intensities, the head over a flat unlit background; optionally the albedo recoloured above a random
  hairline, `recolour_above_hairline`, or the yaw redrawn wider than the generator turns heads);
- `turned_head_scene`: the batch's estimate under its own light with the head turned further than the generator
  turns it, for the turned-head term (netL must read the same light there);
- `nudged_view_scene`: the batch's estimate under its own light with each rotation moved by a given angle, for
  measuring how much of the view the light readings take in (`view_leak`).

The losses that compare a decomposition of a scene with its answers are here too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ...errors import StyleGANDisentangleError
from .model import Unsup3DDecomposer
from .reconstruction import renderer_for, view_degrees

__all__ = ["RERENDER_INTENSITIES", "RERENDER_MODES", "WALL_MARGIN", "check_albedo_step", "light_turn_loss",
           "nudged_view_scene", "recolour_above_hairline", "rerender_loss", "rerender_scene", "turned_head_scene"]

RERENDER_MODES = ("random", "data")
RERENDER_INTENSITIES = ("batch", "uniform")
# the canonical depth this close to the border depth counts as the background wall in the "data" re-render
WALL_MARGIN = 0.005


@torch.no_grad()
def recolour_above_hairline(albedo: torch.Tensor, head: torch.Tensor, gen: torch.Generator,
                            gain_range: tuple[float, float]) -> torch.Tensor:
    """Canonical albedo [N, 3, H, W] in [-1, 1] with its brightness (in [0, 1] units) multiplied by a random gain
    above a random hairline, inside `head` [N, 1, H, W] (1 on the head), clipped to [0, 1].

    Per image: the hairline crosses the centre column at a height drawn uniformly in 7-13 rows of 32 (scaled to H)
    and drops toward the sides as a parabola, by up to 8 rows of 32; the gain is log-uniform in `gain_range`; the
    edge is a logistic step 0.7 pixel wide. Left-right symmetric, as the canonical albedo is. A step, not a ramp:
    a smooth vertical ramp is what a change of light elevation looks like, a sharp edge is what an albedo change
    looks like (the tenth session's ramp jitter left the elevation following the hair and lowered the albedo).
    """
    lo, hi = gain_range
    n, _, h, w = albedo.shape
    dev, scale = albedo.device, h / 32
    centre = ((torch.rand([n, 1, 1, 1], generator=gen) * 6 + 7) * scale).to(dev)
    drop = ((torch.rand([n, 1, 1, 1], generator=gen) * 8) * scale).to(dev)
    log_gain = torch.rand([n, 1, 1, 1], generator=gen) * (math.log(hi) - math.log(lo)) + math.log(lo)
    gain = torch.exp(log_gain).to(dev)
    u = torch.linspace(-1, 1, w, device=dev).view(1, 1, 1, w)
    row = torch.arange(h, device=dev, dtype=albedo.dtype).view(1, 1, h, 1)
    above = torch.sigmoid((centre + drop * u * u - row) / 0.7) * head
    reflectance = (albedo + 1) / 2
    return (reflectance * (1 - above + above * gain)).clamp(0, 1) * 2 - 1


def check_albedo_step(value: Sequence[float] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise StyleGANDisentangleError(f"rerender_albedo_step must be a (low, high) gain pair, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise StyleGANDisentangleError(f"rerender_albedo_step needs finite gains 0 < low <= high, got {lo}, {hi}")
    return lo, hi


@torch.no_grad()
def rerender_scene(dec: Unsup3DDecomposer, out: dict[str, torch.Tensor], gen: torch.Generator, mode: str = "random",
                   light_xy_fraction: float = 1.0, rotation_fraction: float = 0.5,
                   intensities: str = "batch",
                   albedo_step: tuple[float, float] | None = None,
                   max_yaw: float | None = None) -> dict[str, torch.Tensor]:
    """The (detached) estimate `out` of a batch rendered under a new view and light, with the answers.

    `mode` "random": the view uniform (rotations within `rotation_fraction` of their range), the light uniform
    over its raw range, the background wall rendered and lit. "data": each image gets the view and the ambient /
    diffuse estimated for another image of the batch (a permutation: the renders' poses and intensities follow the
    data's), and the region behind the head (canonical depth within `WALL_MARGIN` of the border depth) is pasted
    flat and unlit in the batch's corner colour, so that the light shows only on the head. In both modes the light
    direction (dx, dy) is uniform within `light_xy_fraction` of its range. `intensities` "uniform" makes the "data"
    mode draw the ambient and diffuse uniformly and independently over netL's range, as "random" does, instead of
    taking the batch's (with a frozen netL this teaches netA an albedo that holds under other intensities).
    `albedo_step` (lo, hi) renders, instead of the estimated albedo, that albedo recoloured above a random hairline
    (`recolour_above_hairline`): the scene's answer is the recoloured albedo, under a light netL must read. The
    decomposer explains part of a dark-haired head by light from below (BENCHMARKS.md, "3D decomposer"); these
    renders show a darker or lighter top of the head that is albedo under every light, so netL learns not to read
    it as the light and netA learns to give it back as albedo. `max_yaw` (degrees), when given, redraws every scene's
    yaw uniformly within +-max_yaw: heads turned further than the generator turns them, with the answer known.
    Returns `image` [N, 3, R, R] and the scene: `canon_depth`, `canon_albedo`, `light_raw` [N, 4], `view_raw`
    [N, 6].
    """
    if mode not in RERENDER_MODES:
        raise StyleGANDisentangleError(f"re-render mode must be one of {RERENDER_MODES}, got {mode!r}")
    if intensities not in RERENDER_INTENSITIES:
        raise StyleGANDisentangleError(f"re-render intensities must be one of {RERENDER_INTENSITIES}, "
                                       f"got {intensities!r}")
    depth, albedo = out["canon_depth"].detach(), out["canon_albedo"].detach()
    n, device = depth.shape[0], depth.device
    head = _head_mask(dec, depth)
    if albedo_step is not None:
        albedo = recolour_above_hairline(albedo, head, gen, albedo_step)
    if mode == "data":
        view_raw = out["view_raw"].detach()[torch.randperm(n, generator=gen).to(device)]
    else:
        view_raw = (torch.rand([n, 6], generator=gen) * 2 - 1).to(device)
        view_raw[:, :3] *= rotation_fraction
    light_raw = (torch.rand([n, 4], generator=gen) * 2 - 1).to(device)
    light_raw[:, 2:] *= light_xy_fraction
    if mode == "data" and intensities == "batch":
        light_raw[:, :2] = out["light_raw"].detach()[torch.randperm(n, generator=gen).to(device), :2]
    if max_yaw is not None:
        view_raw = view_raw.clone()
        view_raw[:, 1] = _uniform_rotation(dec, gen, n, max_yaw).to(device)
    image = _scene_image(dec, out, depth, albedo, dec.scale_light(light_raw)["light"], view_raw,
                         head if mode == "data" else None)
    return {"image": image, "canon_depth": depth, "canon_albedo": albedo, "light_raw": light_raw,
            "view_raw": view_raw}


def _scene_image(dec: Unsup3DDecomposer, out: dict[str, torch.Tensor], depth: torch.Tensor, albedo: torch.Tensor,
                 light: torch.Tensor, view_raw: torch.Tensor, head: torch.Tensor | None) -> torch.Tensor:
    """Canonical depth [N, R, R] and albedo rendered under `light` [N, 4] and netV's raw `view_raw` [N, 6], over the
    batch's corner colour; with `head` [N, 1, R, R] (1 on the head) only the head is shown."""
    renderer = renderer_for(dec)
    rendered = renderer.render(depth.unsqueeze(1), albedo, light, view_degrees(dec.scale_view(view_raw)))
    x = out["input"]
    corners = torch.stack([x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]], 0).mean(0)[..., None, None]
    shown = rendered["mask"]
    if head is not None:
        shown = shown * renderer.sample(head, rendered["grid"])
    return rendered["image"] * shown + (1 - shown) * corners


@torch.no_grad()
def turned_head_scene(dec: Unsup3DDecomposer, out: dict[str, torch.Tensor], gen: torch.Generator,
                      max_yaw: float, max_pitch: float | None = None) -> torch.Tensor:
    """The batch's estimate re-rendered under its own light with the head turned: each image's view from the
    batch, its yaw drawn uniformly within +-`max_yaw` degrees (and, with `max_pitch`, its pitch within
    +-`max_pitch`), the head over the batch's corner colour.

    The light lives in the face's canonical frame, so turning the head must not change its reading. The generator
    turns heads only so far (+-35 deg on the synthetic checkpoint), and a netL that never saw a face turned further
    misreads its light there (BENCHMARKS.md, issue 10, twenty-fourth session); these renders show it such faces
    with the answer known: the light it read on the original image. Nor must nodding the head change it: a
    decomposer's elevation reading takes in the pitch (BENCHMARKS.md, issue 10, twenty-seventh session), and
    `max_pitch` shows it the same face nodded."""
    depth, albedo = out["canon_depth"].detach(), out["canon_albedo"].detach()
    view_raw = out["view_raw"].detach().clone()
    view_raw[:, 1] = _uniform_rotation(dec, gen, depth.shape[0], max_yaw).to(view_raw.device)
    if max_pitch is not None:
        view_raw[:, 0] = _uniform_rotation(dec, gen, depth.shape[0], max_pitch).to(view_raw.device)
    return _scene_image(dec, out, depth, albedo, out["light"].detach(), view_raw, _head_mask(dec, depth))


@torch.no_grad()
def nudged_view_scene(dec: Unsup3DDecomposer, out: dict[str, torch.Tensor],
                      degrees: Sequence[float]) -> torch.Tensor:
    """The batch's estimate re-rendered under its own light with its own view, each rotation (rx, ry, rz: pitch,
    yaw, roll) moved by `degrees` [3], the head over the batch's corner colour. `out` is a decomposition with its
    depth, albedo, light and view, and its `input` (the images the nets read)."""
    depth, albedo = out["canon_depth"].detach(), out["canon_albedo"].detach()
    view_raw = out["view_raw"].detach().clone()
    view_raw[:, :3] += torch.as_tensor([float(d) for d in degrees], dtype=view_raw.dtype,
                                       device=view_raw.device) / dec.xyz_rotation_range
    return _scene_image(dec, out, depth, albedo, out["light"].detach(), view_raw, _head_mask(dec, depth))


def _head_mask(dec: Unsup3DDecomposer, depth: torch.Tensor) -> torch.Tensor:
    """Canonical depth [N, R, R] -> [N, 1, R, R]: 1 on the head, 0 on the wall behind it (within WALL_MARGIN of the
    border depth)."""
    return (depth < dec.border_depth - WALL_MARGIN).to(depth.dtype).unsqueeze(1)


def _uniform_rotation(dec: Unsup3DDecomposer, gen: torch.Generator, n: int, max_deg: float) -> torch.Tensor:
    """n raw rotations (netV's rx, ry or rz in (-1, 1)) uniform within +-max_deg degrees."""
    return (torch.rand([n], generator=gen) * 2 - 1) * (max_deg / dec.xyz_rotation_range)


def light_turn_loss(dec: Unsup3DDecomposer, image: torch.Tensor, light_raw: torch.Tensor) -> torch.Tensor:
    """netL's raw reading of a `turned_head_scene` image against its reading of the original (detached)."""
    return (dec.decompose(image, parts=["light"])["light_raw"] - light_raw.detach()).abs().mean()


def rerender_loss(dec: Unsup3DDecomposer, scene: dict[str, torch.Tensor], light: bool = True) -> torch.Tensor:
    """Decomposing a `rerender_scene` image must give back its depth, albedo, light (unless not `light`: netL
    learns elsewhere) and view."""
    est = dec.decompose(scene["image"], parts=["depth", "albedo", "view"] + (["light"] if light else []))
    loss = (est["canon_depth"] - scene["canon_depth"]).abs().mean() / (dec.max_depth - dec.min_depth)
    loss = loss + (est["canon_albedo"] - scene["canon_albedo"]).abs().mean()
    if light:
        loss = loss + (est["light_raw"] - scene["light_raw"]).abs().mean()
    used = [i for i, r in enumerate([1, 1, 1, dec.xy_translation_range, dec.xy_translation_range,
                                     dec.z_translation_range]) if r > 0]
    return loss + (est["view_raw"][:, used] - scene["view_raw"][:, used]).abs().mean()
