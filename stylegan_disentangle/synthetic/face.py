"""The analytic head in its canonical (frontal) frame: depth, albedo and part masks from physical factor values.

The head is a height field over the canonical image (see image_formation for the camera):

* skull: an ellipsoid (half-width `head_width`, half-height `head_height`, depth semi-axis equal to its metric
  half-width) centred at the rotation centre (depth 1.0); its lower half narrows toward the chin by `jaw_width`
  and lengthens as the mouth opens. Past the silhouette a short steep skirt stands for the sides of the head
  (visible when it turns); the object ends where the skirt passes CUT_DEPTH (image_formation.object_mask), and a
  wall drops on to the background depth 1.1.
* hair cap: a slightly larger ellipsoid shell, present above a curved hairline, merged with a smooth minimum.
* nose: a ridge from the bridge (eye level) to the tip (`nose_length` below), widening to `nose_width`, plus a
  rounded tip and dark nostrils.
* eyes: sockets, eyeballs, sclera / iris / pupil at +-`eye_spacing`.
* brows: arched dark strokes, lifted by `brow_raise`.
* mouth: lips along a curve whose corners rise with `smile` (cheeks bulge with it); `mouth_open` opens a dark
  interior with a row of teeth.

Every boundary is a sigmoid of a signed distance (a 10-90% edge spans about 1.3 pixels), so all maps are smooth
in every factor.
"""

from __future__ import annotations

import torch

from .image_formation import CUT_DEPTH, MAX_DEPTH, MIN_DEPTH, ROT_CENTER_DEPTH, TAN_HALF_FOV, object_mask, pixel_grid

__all__ = ["PART_NAMES", "HAIR_PALETTE", "BACKGROUND_RGB", "canonical_face"]

PART_NAMES = ("skin", "eyes", "nose", "mouth", "brows", "hair", "background")

# black -> dark brown -> auburn -> blond, at palette positions 0, 1/3, 2/3, 1
HAIR_PALETTE = ((0.07, 0.06, 0.06), (0.24, 0.15, 0.09), (0.50, 0.23, 0.11), (0.82, 0.68, 0.42))
BACKGROUND_RGB = (0.42, 0.47, 0.55)  # reflectance-like colour in [0, 1]; images show it as 2 * rgb - 1

_SKIRT_DEPTH = CUT_DEPTH - ROT_CENTER_DEPTH + 0.005  # the visible side of the head ends at the cut depth
_SKIRT_WIDTH = 0.07  # skirt extent in ellipse-radius units
_WALL_WIDTH = 0.04


def _sig(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def _gauss(x: torch.Tensor, y: torch.Tensor, cx, cy, rx, ry) -> torch.Tensor:
    return torch.exp(-(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2))


def _soft_ellipse(x, y, cx, cy, rx, ry, tau: float) -> torch.Tensor:
    """~1 inside the ellipse, ~0 outside; the edge is `tau` wide (in image units, along the smaller axis)."""
    r = torch.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + 1e-8)
    smaller = torch.minimum(torch.as_tensor(rx, device=x.device), torch.as_tensor(ry, device=x.device))
    return _sig((1 - r) * smaller / tau)


def _shell_depth(r: torch.Tensor, semi_depth: torch.Tensor) -> torch.Tensor:
    """Depth of an ellipsoid shell seen from the front, with its skirt and wall, as a function of ellipse radius r."""
    front = -semi_depth * torch.sqrt((1 - r * r).clamp_min(0) + 1e-4)
    skirt = _SKIRT_DEPTH * ((r - 1) / _SKIRT_WIDTH).clamp(0, 1)
    wall = (MAX_DEPTH - ROT_CENTER_DEPTH - _SKIRT_DEPTH) * ((r - 1 - _SKIRT_WIDTH) / _WALL_WIDTH).clamp(0, 1)
    return ROT_CENTER_DEPTH + front + skirt + wall


def _hair_rgb(t: torch.Tensor) -> torch.Tensor:
    """Palette position t [N] in [0, 1] -> hair reflectance [N, 3] by piecewise-linear interpolation."""
    palette = torch.tensor(HAIR_PALETTE, device=t.device, dtype=t.dtype)
    pos = t.clamp(0, 1) * (len(HAIR_PALETTE) - 1)
    idx = torch.arange(len(HAIR_PALETTE), device=t.device, dtype=t.dtype)
    weights = (1 - (pos[:, None] - idx[None]).abs()).clamp_min(0)  # hat functions, sum to 1
    return weights @ palette


def _skull(p: dict, u: torch.Tensor, v: torch.Tensor, y0: torch.Tensor, semi_depth: torch.Tensor) -> torch.Tensor:
    """Depth of the skull: an egg shape narrowed toward the chin by the jaw width; the chin drops as the mouth
    opens."""
    ax, ay = p["head_width"], p["head_height"]
    ay_low = ay * (1 + 0.12 * p["mouth_open"].clamp_min(0))
    ybar = torch.where(v < y0, (v - y0) / ay, (v - y0) / ay_low)
    narrowing = (1 - p["jaw_width"]) * ybar.clamp_min(0) ** 1.5
    a_y = ax * (1 - narrowing)
    r_skull = torch.sqrt((u / a_y) ** 2 + ybar**2 + 1e-8)
    return _shell_depth(r_skull, semi_depth)


def _nose(p: dict, u: torch.Tensor, v: torch.Tensor, y_eye: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """The nose: a ridge from the bridge (eye level) widening to the tip, plus a rounded tip (`relief`, toward the
    camera), its part mask and the nostrils."""
    nl, nw = p["nose_length"], p["nose_width"]
    y_tip = y_eye + nl
    along = ((v - y_eye) / nl).clamp(0, 1)
    nose_height = 0.022 * (nl / 0.24)
    width = nw * (0.40 + 0.60 * along)
    window = _sig((v - y_eye + 0.02) / 0.02) * _sig((y_tip - v) / 0.012)
    ridge = nose_height * (0.35 + 0.65 * along) * torch.exp(-((u / width) ** 2)) * window
    tip = 0.45 * nose_height * _gauss(u, v, 0.0, y_tip - 0.03, nw * 0.9, nw * 0.45)
    relief = ridge + tip
    return {"relief": relief, "mask": _sig((relief / nose_height - 0.22) / 0.05),
            "nostrils": _soft_ellipse(u.abs(), v, 0.5 * nw, y_tip + 0.004, 0.22 * nw, 0.012, tau)}


def _eyes(p: dict, u: torch.Tensor, v: torch.Tensor, y_eye: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """Both eyes (mirrored at +-eye_spacing): the painted sclera, iris, pupil and lid rim, the part region, and the
    socket and eyeball reliefs."""
    ex = u.abs() - p["eye_spacing"]
    sclera = _soft_ellipse(ex, v, 0.0, y_eye, 0.085, 0.04, tau)
    return {"sclera": sclera,
            "iris": _soft_ellipse(ex, v, 0.0, y_eye, 0.036, 0.036, tau) * sclera,
            "pupil": _soft_ellipse(ex, v, 0.0, y_eye, 0.015, 0.015, tau) * sclera,
            "lid": _soft_ellipse(ex, v, 0.0, y_eye - 0.006, 0.095, 0.042, tau) * (1 - sclera),  # dark upper rim
            "region": _soft_ellipse(ex, v, 0.0, y_eye, 0.10, 0.055, tau),
            "socket": _gauss(ex, v, 0.0, y_eye, 0.11, 0.075),
            "eyeball": _gauss(ex, v, 0.0, y_eye, 0.07, 0.04)}


def _brows(p: dict, u: torch.Tensor, v: torch.Tensor, y_eye: torch.Tensor, tau: float
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """The brows (arched strokes, their inner ends a little lower, lifted by brow_raise) and the brow ridge's
    relief."""
    y_brow = y_eye - 0.125 - 0.07 * p["brow_raise"]
    bx = u.abs() - p["eye_spacing"]
    arch = y_brow + 0.35 * (bx / 0.1) ** 2 * 0.03 - 0.01 * (1 - (bx / 0.1).clamp(-1, 1) ** 2)
    brows = _sig((0.11 - bx.abs()) / tau) * _sig((0.032 - (v - arch).abs() - 0.012 * (bx / 0.11) ** 2) / tau)
    return brows, _gauss(bx, v, 0.0, y_eye - 0.10, 0.16, 0.05)


def _mouth(p: dict, u: torch.Tensor, v: torch.Tensor, y_mouth: torch.Tensor, tau: float) -> dict[str, torch.Tensor]:
    """The mouth: lips along a curve whose corners rise with the smile, the lip line, the opened interior with its
    teeth, and the cheeks that bulge with the smile."""
    smile = p["smile"]
    mw = 0.18 * (1 + 0.2 * smile)
    xm = (u / mw).clamp(-1.2, 1.2)
    bump = torch.sqrt((1 - xm**2).clamp_min(0) + 1e-4)
    line = y_mouth - 0.11 * smile * xm**2 + 0.03 * smile
    open_h = 0.18 * p["mouth_open"].clamp_min(0)
    inside_x = _sig((mw - u.abs()) / tau)
    lips = inside_x * _sig((v - (line - 0.022 * bump)) / tau) * _sig((line + (0.026 + open_h) * bump - v) / tau)
    interior = _sig((0.92 * mw - u.abs()) / tau) * _sig((v - (line - 0.25 * open_h * bump)) / tau)
    interior = interior * _sig((line + 0.75 * open_h * bump - v) / tau)
    return {"lips": lips, "interior": interior,
            "lip_line": _sig((0.9 * mw - u.abs()) / tau) * torch.exp(-(((v - line) / (0.6 * tau + 0.004)) ** 2)),
            "teeth": interior * _sig((line + 0.12 * open_h * bump - v) / tau) * _sig((open_h - 0.02) / 0.01),
            "cheeks": smile.clamp_min(0) * _gauss(u.abs(), v, 0.24, y_mouth - 0.14, 0.12, 0.10)}


def _hair_depth(p: dict, u: torch.Tensor, v: torch.Tensor, y0: torch.Tensor, semi_depth: torch.Tensor
                ) -> torch.Tensor:
    """Depth of the hair cap: a larger shell above a hairline that curves down to the ears (pushed far back below
    it)."""
    ax, ay = p["head_width"], p["head_height"]
    r_hair = torch.sqrt((u / (ax + 0.07)) ** 2 + ((v - y0 + 0.02) / (ay + 0.10)) ** 2 + 1e-8)
    hair_depth = _shell_depth(r_hair, semi_depth + 0.006)
    hairline = y0 - 0.60 * ay + 0.75 * ay * (u / ax).clamp(-1.3, 1.3) ** 2
    return hair_depth + 0.2 * (1 - _sig((hairline - v) / 0.015))


def _albedo(p: dict, u: torch.Tensor, v: torch.Tensor, y_mouth: torch.Tensor, nose: dict, eyes: dict,
            brows: torch.Tensor, mouth: dict, hair: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The reflectance, painted back to front: skin with a blush, lips, mouth interior and teeth, nostrils, eyes,
    brows and hair in the hair colour, the background outside the head."""
    skin = torch.stack([p["skin_r"], p["skin_g"], p["skin_b"]], 1).view(-1, 3, 1, 1)
    blush = torch.tensor([0.06, -0.02, -0.02], device=u.device, dtype=u.dtype).view(1, 3, 1, 1)
    albedo = skin + blush * _gauss(u.abs(), v, 0.25, y_mouth - 0.15, 0.12, 0.1)

    def paint(base: torch.Tensor, colour, weight: torch.Tensor) -> torch.Tensor:
        colour = torch.as_tensor(colour, device=u.device, dtype=u.dtype)
        colour = colour.view(1, 3, 1, 1) if colour.dim() == 1 else colour
        return base * (1 - weight) + colour * weight

    hair_rgb = _hair_rgb(p["hair_color"].flatten())[:, :, None, None]
    lips = skin * torch.tensor([0.95, 0.55, 0.58], device=u.device, dtype=u.dtype).view(1, 3, 1, 1)
    albedo = paint(albedo, lips, mouth["lips"])
    albedo = paint(albedo, (0.30, 0.08, 0.08), 0.6 * mouth["lip_line"])
    albedo = paint(albedo, (0.22, 0.05, 0.06), mouth["interior"])
    albedo = paint(albedo, (0.92, 0.90, 0.84), mouth["teeth"])
    albedo = paint(albedo, skin * 0.55, 0.8 * nose["nostrils"])
    albedo = paint(albedo, skin * 0.55, 0.7 * eyes["lid"])
    albedo = paint(albedo, (0.93, 0.92, 0.90), eyes["sclera"])
    albedo = paint(albedo, (0.30, 0.20, 0.12), eyes["iris"])
    albedo = paint(albedo, (0.03, 0.03, 0.03), eyes["pupil"])
    albedo = paint(albedo, hair_rgb * 0.45 + 0.02, 0.95 * brows)
    albedo = paint(albedo, hair_rgb, hair)
    return paint(albedo, BACKGROUND_RGB, 1 - mask).clamp(0, 1)


def _part_ownership(hair: torch.Tensor, brows: torch.Tensor, eye_region: torch.Tensor, lips: torch.Tensor,
                    nose_mask: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Soft part ownerships [N, P, H, W] in PART_NAMES order, front layer first: hair, brows, eyes, mouth, nose,
    skin; the background outside the head."""
    rest = 1 - hair
    w_brows = rest * brows
    rest = rest * (1 - brows)
    w_eyes = rest * eye_region
    rest = rest * (1 - eye_region)
    w_mouth = rest * lips
    rest = rest * (1 - lips)
    w_nose = rest * nose_mask
    w_skin = rest * (1 - nose_mask)
    parts = torch.cat([w_skin, w_eyes, w_nose, w_mouth, w_brows, hair], 1) * mask
    return torch.cat([parts, 1 - mask], 1)


def canonical_face(phys: dict[str, torch.Tensor], resolution: int) -> dict[str, torch.Tensor]:
    """Physical factor values (name -> [N]) -> canonical maps of the head at `resolution`.

    Returns ``depth`` [N,1,H,W] in [0.9, 1.1], ``albedo`` [N,3,H,W] in [0, 1] (reflectance), ``mask`` [N,1,H,W]
    (1 on the head) and ``parts`` [N,P,H,W], soft part ownerships in PART_NAMES order that sum to 1 per pixel.
    Only identity and expression factors are read: the canonical head does not depend on pose or light.
    """
    ref = phys["head_width"]
    u, v = pixel_grid(resolution, ref.device, ref.dtype)
    tau = 0.6 / resolution  # edge softness: 0.3 pixel (a 10-90% edge spans about 1.3 pixels)
    p = {k: t.view(-1, 1, 1, 1) for k, t in phys.items()}
    y0 = torch.full_like(p["head_height"], 0.08)  # skull centre a little below the image centre (room for hair)
    semi_depth = p["head_width"] * TAN_HALF_FOV * 1.05
    y_eye = y0 - 0.06 * p["head_height"]  # facial landmarks
    y_mouth = y0 + 0.54 * p["head_height"]

    nose = _nose(p, u, v, y_eye, tau)
    eyes = _eyes(p, u, v, y_eye, tau)
    brows, brow_ridge = _brows(p, u, v, y_eye, tau)
    mouth = _mouth(p, u, v, y_mouth, tau)
    # face depth: skull + features (negative offsets come toward the camera)
    face_depth = (_skull(p, u, v, y0, semi_depth) - nose["relief"] - 0.0035 * eyes["eyeball"]
                  + 0.006 * eyes["socket"] - 0.003 * brow_ridge - 0.003 * mouth["lips"] + 0.012 * mouth["interior"]
                  - 0.010 * mouth["cheeks"])
    hair_depth = _hair_depth(p, u, v, y0, semi_depth)
    k = 0.0015  # the hair cap merged with a smooth minimum
    depth = (-k * torch.logaddexp(-face_depth / k, -hair_depth / k)).clamp(MIN_DEPTH, MAX_DEPTH)
    hair = _sig((face_depth - hair_depth) / 0.002)
    mask = object_mask(depth)
    albedo = _albedo(p, u, v, y_mouth, nose, eyes, brows, mouth, hair, mask)
    parts = _part_ownership(hair, brows, eyes["region"], mouth["lips"], nose["mask"], mask)
    return {"depth": depth, "albedo": albedo, "mask": mask, "parts": parts}
