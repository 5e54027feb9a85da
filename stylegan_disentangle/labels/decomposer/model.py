"""`Unsup3DDecomposer`: the five Unsup3D networks in one module, and the official scalings of their raw outputs.

`decompose(img)` maps images `[N, 3, H, W]` in [-1, 1] (resized to `image_size` when H, W differ) to the
canonical-frame factors, exactly as the official Unsup3D model scales its nets' raw outputs:

- depth:  `canon_depth = rescale(tanh(raw - mean(raw)))` per image, rescale (-1, 1) -> (min_depth, max_depth)
          = (0.9, 1.1); then the 2 leftmost and 2 rightmost pixel *columns* (all rows) are set to `border_depth`,
          which defaults to the official trainer's 0.7 * max_depth + 0.3 * min_depth = 1.04 (the official demo
          script hard-codes 1.05 instead; pass `border_depth=1.05` to match it).
- albedo: netA's tanh output as is, in (-1, 1).
- light:  netL's 4 tanh outputs (a, b, dx, dy): ambient = (1 + a)/2 * max_amb + (1 - a)/2 * min_amb, diffuse likewise
          (both in (0, 1) with the defaults, i.e. raw/2 + 0.5); direction = normalize([dx, dy, 1]) with
          (dx, dy) = raw * xy_light_range (1 in the official code).
- view:   netV's 6 tanh outputs: rotations (x, y, z) * xyz_rotation_range (60) degrees, converted to *radians* as the
          official renderer consumes them; x/y translation * xy_translation_range (0.1); z translation *
          z_translation_range (0 in the official CelebA / synface configs, so tz is 0).
- confidence: netC's two softplus maps, `conf_sigma_l1` `[N, 2, H, W]` and `conf_sigma_percl` `[N, 2, H/4, W/4]`
          (channel 0 for the reconstruction, channel 1 for the flipped reconstruction), when netC is present.

The horizontal-flip twins (the official model concatenates depth/albedo with their mirror images) are left to the
trainer. A decomposer loaded from a file that lacks some nets has those attributes set to None; `net(name)` (and so
`decompose`) raises DecomposerError naming the net and the file when one of them is needed.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import StyleGANDisentangleError
from ..base import check_crop, fill_box, resize_images
from .networks import ConfNet, EDDeconv, Encoder, encoder_multipliers

__all__ = ["NET_NAMES", "PARTS", "DecomposerError", "Unsup3DDecomposer", "check_light_mask"]

NET_NAMES = ("netD", "netA", "netL", "netV", "netC")
PARTS = {"depth": "netD", "albedo": "netA", "light": "netL", "view": "netV", "confidence": "netC"}


def _binomial_blur(maps: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> the same maps filtered by [1, 2, 1] x [1, 2, 1] / 16 (edges replicated): removes the
    alternating 2-pixel pattern exactly and keeps a linear ramp unchanged."""
    k = torch.tensor([1.0, 2.0, 1.0], device=maps.device, dtype=maps.dtype) / 4
    kernel = (k[:, None] * k[None, :]).expand(maps.shape[1], 1, 3, 3)
    return F.conv2d(F.pad(maps, (1, 1, 1, 1), mode="replicate"), kernel, groups=maps.shape[1])


class DecomposerError(StyleGANDisentangleError, RuntimeError):
    """A decomposer was asked for a network it does not hold, or given images of the wrong shape."""


def check_light_mask(light_mask: Any, own: tuple[float, float, float, float] | None = None
                     ) -> tuple[float, float, float, float] | None:
    """The light mask a caller asks for, checked: None -> `own` (the decomposer's), False -> None (no mask), a box
    -> that box (ValueError naming the light mask when it is not a box inside the image)."""
    if light_mask is None:
        return own
    if light_mask is False:
        return None
    return check_crop(light_mask, "light mask")


class Unsup3DDecomposer(nn.Module):
    """Canonical depth / albedo / light / view (and confidence) of face images, Unsup3D style.

    Parameters
    ----------
    image_size : 64 (official) or 32 (see `networks` for how the 32x32 nets differ).
    nf, zdim : netD's width (a multiple of 16, as netA's and netC's: GroupNorm) and bottleneck (official 64, 256);
        `nf_albedo`, `zdim_albedo` netA's (default: the same).
    nf_light, nf_view : netL's and netV's widths (official 32).
    nf_conf, zdim_conf : netC's width and bottleneck (official 64, 128).
    nets : which of netD, netA, netL, netV, netC to build; the others are None.
    min_depth, max_depth, border_depth, min/max_amb_light, min/max_diff_light, xyz_rotation_range (degrees),
    xy_translation_range, z_translation_range, fov (degrees, for the renderer) : the official scalings' settings.
    xy_light_range : scale of the light direction's (dx, dy) (official: 1, tanh outputs, so the light stays within
        45 degrees of the camera axis; the synthetic world lights faces from up to 55 degrees: its decomposer uses 2).
    antialias : smooth netD's and netA's outputs with a fixed 3x3 binomial filter before they are used (default
        False, as official). The official decoders upsample with stride-2 transposed convolutions, whose outputs
        carry a 2-pixel checkerboard (Odena et al. 2016); it costs little in albedo but enters the normals, and so
        the shading, as noise at the Nyquist frequency.
    input_crop : (top, left, height, width), fractions of a generated image: the face box this decomposer reads
        (`labels.crop_images`), for one trained on tighter crops than the generator draws (the official CelebA one
        on an FFHQ generator). It is a setting carried with the decomposer (its config, a trainer's
        train_state.json), applied where a generator's images become its input: the labeler, `decompose`, the
        trainer. `decompose(img)` itself takes images as they are. None (default): the whole image.
    light_mask : (top, left, height, width), fractions of the decomposer's input: a box netL does not see
        (`labels.fill_box`: painted in the image's background colour before netL reads the light; the other nets
        see the whole input), in `decompose` and so also in training. For the top of a portrait, where the hair
        is: a decomposer reads bright hair above the face partly as ambient light and as light from above, and a
        light read without it follows the true light more closely (the shipped synthetic decomposer's setting:
        the top 22 % of the frame; ambient r 0.59 -> 0.71 with the truth, BENCHMARKS.md, issue 10, twenty-first
        session). None (default): netL sees the whole input, as official.
    light_teacher : the fingerprint (`LatentLightTeacher.fingerprint`) of the latent light teacher netL last
        learned from, set by `train_decomposer(light_teacher=...)`; None (default): netL learned from the images.
        It changes no output: `find-directions` reads it to choose the 3D-coupled light directions' conditions
        (`ThreeDCoupledDirections(taught_light=...)`).

    Attributes
    ----------
    netD, netA, netL, netV, netC : the networks (or None when absent).
    optimizer_states : {'optimizerD': state dict, ...} as read from a training checkpoint (empty when built).
    epoch : training epoch stored with the checkpoint (0 when built).
    metrics_trace : the official trainer's metrics as plain data ({'data': {...}}) or None.
    source : the file this decomposer was loaded from, or None.
    trained_on : the fingerprint (`latents.generator_fingerprint`) of the network whose faces it was trained on, as
        its trainer recorded it (`train_decomposer`; beside a checkpoint, its `train_state.json` or shipped record),
        or None when unknown (an official one: trained on photographs). It changes no output: the commands that
        decompose a network's faces warn when it is another network (`warn_if_trained_on_another`).
    """

    def __init__(self, image_size: int = 64, nf: int = 64, zdim: int = 256, nf_albedo: int | None = None,
                 zdim_albedo: int | None = None, nf_light: int = 32, nf_view: int = 32, nf_conf: int = 64,
                 zdim_conf: int = 128, nets: Iterable[str] = NET_NAMES, min_depth: float = 0.9,
                 max_depth: float = 1.1, border_depth: float | None = None, min_amb_light: float = 0.0,
                 max_amb_light: float = 1.0, min_diff_light: float = 0.0, max_diff_light: float = 1.0,
                 xyz_rotation_range: float = 60.0, xy_translation_range: float = 0.1,
                 z_translation_range: float = 0.0, fov: float = 10.0, xy_light_range: float = 1.0,
                 antialias: bool = False, input_crop: Iterable[float] | None = None,
                 light_mask: Iterable[float] | None = None, light_teacher: str | None = None) -> None:
        super().__init__()
        encoder_multipliers(image_size)  # validates image_size
        nets = tuple(nets)
        unknown = sorted(set(nets) - set(NET_NAMES))
        if unknown:
            raise DecomposerError(f"unknown Unsup3D networks {unknown}; choose from {list(NET_NAMES)}")
        self.image_size = int(image_size)
        self.nf, self.zdim = int(nf), int(zdim)
        self.nf_albedo = int(nf if nf_albedo is None else nf_albedo)
        self.zdim_albedo = int(zdim if zdim_albedo is None else zdim_albedo)
        self.nf_light, self.nf_view = int(nf_light), int(nf_view)
        self.nf_conf, self.zdim_conf = int(nf_conf), int(zdim_conf)
        self._check_sizes(nets)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.border_depth = float(0.7 * max_depth + 0.3 * min_depth if border_depth is None else border_depth)
        self.min_amb_light, self.max_amb_light = float(min_amb_light), float(max_amb_light)
        self.min_diff_light, self.max_diff_light = float(min_diff_light), float(max_diff_light)
        self.xyz_rotation_range = float(xyz_rotation_range)
        self.xy_translation_range = float(xy_translation_range)
        self.z_translation_range = float(z_translation_range)
        self.fov = float(fov)
        self.xy_light_range = float(xy_light_range)
        self.antialias = bool(antialias)
        try:
            self.input_crop = check_crop(input_crop)
        except ValueError as exc:
            raise DecomposerError(f"input_crop: {exc}") from None
        try:
            self.light_mask = check_crop(light_mask, "light mask")
        except ValueError as exc:
            raise DecomposerError(str(exc)) from None
        if light_teacher is not None and not isinstance(light_teacher, str):
            raise DecomposerError(f"light_teacher should be a teacher's fingerprint (a string), got {light_teacher!r}")
        self.light_teacher = light_teacher
        builders = {
            "netD": lambda: EDDeconv(3, 1, zdim=self.zdim, nf=self.nf, tanh=False, image_size=self.image_size),
            "netA": lambda: EDDeconv(3, 3, zdim=self.zdim_albedo, nf=self.nf_albedo, tanh=True,
                                     image_size=self.image_size),
            "netL": lambda: Encoder(3, 4, nf=self.nf_light, image_size=self.image_size),
            "netV": lambda: Encoder(3, 6, nf=self.nf_view, image_size=self.image_size),
            "netC": lambda: ConfNet(3, 2, zdim=self.zdim_conf, nf=self.nf_conf, image_size=self.image_size),
        }
        for name in NET_NAMES:
            setattr(self, name, builders[name]() if name in nets else None)
        self.optimizer_states: dict[str, Any] = {}
        self.epoch = 0
        self.metrics_trace: dict | None = None
        self.source: str | None = None
        self.trained_on: str | None = None

    def _check_sizes(self, nets: tuple[str, ...]) -> None:
        """DecomposerError for a width or bottleneck the present nets cannot be built with (GroupNorm in netD, netA
        and netC splits each layer's channels into 16 * multiplier groups: their nf must be a multiple of 16)."""
        grouped = {"netD": ("nf", "zdim"), "netA": ("nf_albedo", "zdim_albedo"), "netC": ("nf_conf", "zdim_conf")}
        plain = {"netL": ("nf_light",), "netV": ("nf_view",)}
        for net in nets:
            for arg in grouped.get(net, ()) + plain.get(net, ()):
                value = getattr(self, arg)
                if value < 1:
                    raise DecomposerError(f"{arg} ({net}'s {'bottleneck' if 'zdim' in arg else 'width'}) must be a "
                                          f"positive integer, got {value}")
            if net in grouped:
                arg = grouped[net][0]
                value = getattr(self, arg)
                if value % 16:
                    raise DecomposerError(f"{arg}={value}: {net}'s GroupNorm splits nf channels into 16 groups, so "
                                          f"{arg} must be a positive multiple of 16 (16, 32, 48, 64, ...)")

    # ------------------------------------------------------------------ description
    @property
    def present_nets(self) -> tuple[str, ...]:
        """Names of the networks this decomposer holds, in the official order."""
        return tuple(n for n in NET_NAMES if getattr(self, n) is not None)

    @property
    def sizes(self) -> dict[str, dict[str, int]]:
        """Per-network sizes: {'netD': {'nf', 'zdim'}, 'netA': ..., 'netL': {'nf'}, 'netV': {'nf'}, 'netC': ...}."""
        return {"netD": {"nf": self.nf, "zdim": self.zdim}, "netA": {"nf": self.nf_albedo, "zdim": self.zdim_albedo},
                "netL": {"nf": self.nf_light}, "netV": {"nf": self.nf_view},
                "netC": {"nf": self.nf_conf, "zdim": self.zdim_conf}}

    def get_config(self) -> dict[str, Any]:
        """Every constructor argument (JSON-safe): `Unsup3DDecomposer(**d.get_config())` builds the same nets.
        `input_crop`, `light_mask` and `light_teacher` appear only when set, so that the configs (and fingerprints)
        of decomposers without them stay what they were before they existed."""
        keys = ("image_size", "nf", "zdim", "nf_albedo", "zdim_albedo", "nf_light", "nf_view", "nf_conf",
                "zdim_conf", "min_depth", "max_depth", "border_depth", "min_amb_light", "max_amb_light",
                "min_diff_light", "max_diff_light", "xyz_rotation_range", "xy_translation_range",
                "z_translation_range", "fov", "xy_light_range", "antialias")
        config = {k: getattr(self, k) for k in keys}
        if self.input_crop is not None:
            config["input_crop"] = list(self.input_crop)
        if self.light_mask is not None:
            config["light_mask"] = list(self.light_mask)
        if self.light_teacher is not None:
            config["light_teacher"] = self.light_teacher
        config["nets"] = list(self.present_nets)
        return config

    def extra_repr(self) -> str:
        return f"image_size={self.image_size}, nets={list(self.present_nets)}, source={self.source!r}"

    def net(self, name: str) -> nn.Module:
        """The network `name`, or DecomposerError naming it and the file when this decomposer lacks it."""
        if name not in NET_NAMES:
            raise DecomposerError(f"unknown Unsup3D network {name!r}; choose from {list(NET_NAMES)}")
        module = getattr(self, name)
        if module is None:
            where = f"the checkpoint {self.source}" if self.source else "this decomposer"
            raise DecomposerError(f"{name} is needed but absent: {where} holds only {list(self.present_nets)}")
        return module

    # ------------------------------------------------------------------ scalings (differentiable)
    def border_mask(self, height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
        """`[H, W]` float mask, 1 on the 2 leftmost and 2 rightmost columns (the official depth border)."""
        mask = torch.zeros(height, width, device=device)
        mask[:, :2] = 1.0
        mask[:, width - 2:] = 1.0
        return mask

    def scale_depth(self, depth_raw: torch.Tensor) -> torch.Tensor:
        """netD's raw `[N, H, W]` -> canonical depth `[N, H, W]` in (min_depth, max_depth), border columns set."""
        n, h, w = depth_raw.shape
        centred = depth_raw - depth_raw.reshape(n, -1).mean(1).reshape(n, 1, 1)
        t = centred.tanh()
        depth = (1 + t) / 2 * self.max_depth + (1 - t) / 2 * self.min_depth
        border = self.border_mask(h, w, depth.device).to(depth.dtype)
        return depth * (1 - border) + border * self.border_depth

    def scale_light(self, light_raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """netL's raw `[N, 4]` -> {'light': [N, 4] (ambient, diffuse, dx, dy), 'light_dir': [N, 3] unit}."""
        a, b, dxy = light_raw[:, :1], light_raw[:, 1:2], light_raw[:, 2:] * self.xy_light_range
        ambient = (1 + a) / 2 * self.max_amb_light + (1 - a) / 2 * self.min_amb_light
        diffuse = (1 + b) / 2 * self.max_diff_light + (1 - b) / 2 * self.min_diff_light
        d = torch.cat([dxy, torch.ones_like(a)], 1)
        d = d / (d ** 2).sum(1, keepdim=True) ** 0.5
        return {"light": torch.cat([ambient, diffuse, dxy], 1), "light_dir": d}

    def scale_view(self, view_raw: torch.Tensor) -> torch.Tensor:
        """netV's raw `[N, 6]` -> official view `[N, 6]`: rotations x, y, z in radians, translations x, y, z."""
        return torch.cat([view_raw[:, :3] * (math.pi / 180 * self.xyz_rotation_range),
                          view_raw[:, 3:5] * self.xy_translation_range,
                          view_raw[:, 5:] * self.z_translation_range], 1)

    # ------------------------------------------------------------------ inference
    def prepare(self, img: torch.Tensor) -> torch.Tensor:
        """Check `[N, 3, H, W]` images; float32 on the nets' device, resized to `[N, 3, image_size, image_size]`."""
        if not torch.is_tensor(img) or img.ndim != 4 or img.shape[1] != 3 or img.shape[0] == 0:
            got = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
            raise DecomposerError(f"decomposer input must be images [N, 3, H, W] in [-1, 1], got {got}")
        if not img.is_floating_point():  # uint8 pixels read as if in [-1, 1] would give junk labels silently
            raise DecomposerError(f"decomposer input must be float images in [-1, 1], got {img.dtype} (for uint8 "
                                  "pixels: img.float() / 127.5 - 1)")
        param = next(self.parameters(), None)
        img = img.to(device=param.device if param is not None else img.device, dtype=torch.float32)
        if img.shape[-2:] != (self.image_size, self.image_size):
            img = resize_images(img, self.image_size)
        return img

    def decompose(self, img: torch.Tensor, parts: Iterable[str] | None = None,
                  light_mask: Iterable[float] | None | bool = None) -> dict[str, torch.Tensor]:
        """Images `[N, 3, H, W]` in [-1, 1] -> canonical factors (differentiable; wrap in no_grad to label).

        `parts` selects among 'depth', 'albedo', 'light', 'view', 'confidence' (default: the first four, plus
        'confidence' when netC is present). `light_mask`: the box netL does not see (None: this decomposer's own
        `light_mask`; False: none). Returned keys, with R = image_size:
          canon_depth_raw [N, R, R] netD's raw output;  canon_depth [N, R, R] in (0.9, 1.1), border columns 1.04;
          canon_albedo [N, 3, R, R] in (-1, 1) (both smoothed first when `antialias`);
          light_raw [N, 4] in (-1, 1);  light [N, 4] (ambient in (0, 1), diffuse in (0, 1), dx, dy in (-1, 1));
          light_dir [N, 3] unit, z > 0;
          view_raw [N, 6] in (-1, 1);  view [N, 6] (rx, ry, rz in radians within +-60 deg, tx, ty within +-0.1,
          tz within +-z_translation_range);  rotation_deg [N, 3] the same rotations in degrees;
          conf_sigma_l1 [N, 2, R, R] > 0 and conf_sigma_percl [N, 2, R/4, R/4] > 0.
        """
        if parts is None:
            parts = ["depth", "albedo", "light", "view"] + (["confidence"] if self.netC is not None else [])
        parts = list(parts)
        unknown = sorted(set(parts) - set(PARTS))
        if unknown:
            raise DecomposerError(f"unknown decomposition parts {unknown}; choose from {sorted(PARTS)}")
        nets = {part: self.net(PARTS[part]) for part in parts}  # fail before any compute
        x = self.prepare(img)
        out: dict[str, torch.Tensor] = {}
        if "depth" in nets:
            raw = nets["depth"](x).squeeze(1)
            out["canon_depth_raw"] = raw
            out["canon_depth"] = self.scale_depth(_binomial_blur(raw.unsqueeze(1)).squeeze(1) if self.antialias
                                                  else raw)
        if "albedo" in nets:
            albedo = nets["albedo"](x)
            out["canon_albedo"] = _binomial_blur(albedo) if self.antialias else albedo
        if "light" in nets:
            out["light_raw"] = nets["light"](fill_box(x, check_light_mask(light_mask, self.light_mask)))
            out.update(self.scale_light(out["light_raw"]))
        if "view" in nets:
            out["view_raw"] = nets["view"](x)
            out["view"] = self.scale_view(out["view_raw"])
            out["rotation_deg"] = out["view"][:, :3] * (180 / math.pi)
        if "confidence" in nets:
            out["conf_sigma_l1"], out["conf_sigma_percl"] = nets["confidence"](x)
        return out

    def forward(self, img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Same as `decompose(img)`."""
        return self.decompose(img)

    def fit(self, G: nn.Module, outdir: str | os.PathLike, steps: int, **kwargs: Any) -> Unsup3DDecomposer:
        """Train these nets on images drawn from the frozen generator `G` (see `trainer.train_decomposer`, whose
        keyword arguments pass through: batch_size, lr, lam_flip, lam_rerender, lam_jitter, seed, ...). Resumable:
        calling it again with the same arguments continues from `outdir`'s checkpoint. Returns self."""
        from .trainer import train_decomposer

        trained = train_decomposer(G, outdir, steps, init=self, **kwargs)
        if trained is not self:  # resumed from outdir: take its weights
            self.load_state_dict(trained.state_dict())
            self.optimizer_states, self.epoch = trained.optimizer_states, trained.epoch
        self.trained_on = trained.trained_on
        return self.eval()

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike, weights_dtype: torch.dtype = torch.float32) -> Path:
        """Write an official-layout Unsup3D checkpoint (see `checkpoint.save_unsup3d`)."""
        from .checkpoint import save_unsup3d

        return save_unsup3d(self, path, weights_dtype=weights_dtype)

    @classmethod
    def load(cls, path: str | os.PathLike, **scalings: Any) -> Unsup3DDecomposer:
        """Read an official Unsup3D checkpoint (see `checkpoint.load_unsup3d`)."""
        from .checkpoint import load_unsup3d

        return load_unsup3d(path, **scalings)
