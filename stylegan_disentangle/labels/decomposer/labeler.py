"""The `decomposer3d` labeler: view, light and canonical maps of generated faces, from an Unsup3D decomposer.

Labels (per image; ranges are what the scalings can produce):

| name | unit / shape | range |
| --- | --- | --- |
| yaw, pitch, roll | degrees: the view's ry, rx, rz (see below) | +-xyz_rotation_range (60) |
| tx, ty | camera-frame translation | +-xy_translation_range (0.1) |
| tz | camera-frame translation | +-z_translation_range (0 by default) |
| light_ambient, light_diffuse | shading coefficients | [0, 1] |
| light_azimuth | degrees, + = light from image right | +-atan(xy_light_range) |
| light_elevation | degrees, + = light from above | +-atan(xy_light_range) |
| depth | canonical depth map [R, R] | [0.9, 1.1] |
| albedo | canonical albedo [3, R, R] (netA's) | [-1, 1] |
| image_albedo | the albedo the image shows [3, R, R] (`reconstruction.image_albedo`) | [-1, 1] |
| confidence | reconstruction confidence sigma [R, R] (smaller = more certain; needs netC) | (0, inf) |

Yaw + turns the nose to image left, pitch + turns it down, roll + is clockwise in the image.
The synthetic world uses exactly these conventions (its factors `yaw`, `pitch`, `roll`, `light_azimuth`,
`light_elevation`, `ambient`), so the shipped synthetic decomposer's labels compare with its ground truth directly.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ...errors import CheckpointError, StyleGANDisentangleError
from ..base import check_crop, crop_images
from .light_teacher import light_labels
from .model import Unsup3DDecomposer, check_light_mask
from .reconstruction import image_albedo, renderer_for
from .view_leak import VIEW_LEAK_DELTA, measure_view_leak

__all__ = ["DATA_DIR", "SHIPPED", "DecomposerLabeler", "check_light_mask", "decomposer_labeler", "load_decomposer",
           "decomposer_summary", "parse_light_mask", "scalar_labels", "warn_if_trained_on_another"]

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
SHIPPED = {"synthetic": DATA_DIR / "synthetic32_decomposer.pth"}
"""Decomposers shipped with the package, by name (official Unsup3D layout; settings in the .json beside each)."""

SCALAR_LABELS = ("yaw", "pitch", "roll", "tx", "ty", "tz", "light_ambient", "light_diffuse", "light_azimuth",
                 "light_elevation")
MAP_LABELS = ("depth", "albedo", "image_albedo", "confidence")


def load_decomposer(spec: str | os.PathLike = "synthetic", device: str | torch.device = "cpu", *,
                    cache_dir: str | os.PathLike | None = None, progress: bool | None = None) -> Unsup3DDecomposer:
    """A decomposer by name or location: a shipped one ('synthetic'), an official pretrained one ('unsup3d-celeba',
    'unsup3d-synface', 'unsup3d-cat', 'unsup3d-syncar': downloaded once into the cache), an http(s) URL, or a local
    Unsup3D checkpoint (official or trained here; the official `.zip` archive too).

    Settings that the official layout cannot hold (e.g. `xy_light_range`) are read from the record our writer keeps
    in the checkpoint, and over it from a JSON file beside the checkpoint (`<name>.json` with a "scalings" entry, or
    the trainer's `train_state.json`) when there is one; an official pretrained one gets the settings of its
    official test configuration.
    """
    from .checkpoint import load_unsup3d
    from .pretrained import known_decomposers, resolve_decomposer

    scalings: dict[str, Any] = {}
    if str(spec) in SHIPPED:
        path = SHIPPED[str(spec)]
        if not path.is_file():
            raise StyleGANDisentangleError(f"{path} is missing: the '{spec}' decomposer ships with the package; "
                                           "reinstall stylegan_disentangle or train one with "
                                           "scripts/train_decomposer.py")
    else:
        path, scalings = resolve_decomposer(spec, cache_dir=cache_dir, progress=progress)
    if not path.exists():
        names = sorted(SHIPPED) + list(known_decomposers())
        close = difflib.get_close_matches(str(spec).strip().lower(), names, n=3, cutoff=0.6)
        hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
        raise CheckpointError(f"{path}: no such file; {hint}give an Unsup3D checkpoint (a path or an http(s) URL) or "
                              f"the name of a shipped or official decomposer ({', '.join(names)})")
    trained_on = None
    for side in (path.with_suffix(".json"), path.parent / "train_state.json"):
        if side.is_file():
            record = _read_side(side)
            scalings, trained_on = _side_scalings(record, side), _side_generator(record)
            break
    try:
        dec = load_unsup3d(path, device=device, **scalings)  # the file's own settings record, the side file's over it
        if trained_on is not None:
            dec.trained_on = trained_on
        return dec
    except CheckpointError as exc:
        if str(spec) in SHIPPED or Path(spec) == path:
            raise
        # a name, a URL or an archive: say which, besides the file the checkpoint was extracted to
        raise CheckpointError(f"{spec}: {exc}") from None


def _read_side(side: Path) -> dict[str, Any]:
    """The JSON object of the settings file beside a checkpoint (the shipped record or a training state), or a
    CheckpointError naming the file."""
    try:
        record = json.loads(side.read_text())
    except (OSError, ValueError) as exc:  # ValueError: broken JSON or not UTF-8
        raise CheckpointError(f"{side}: the settings file beside the checkpoint is unreadable "
                              f"({type(exc).__name__}: {exc})") from None
    if not isinstance(record, dict):
        raise CheckpointError(f"{side}: the settings file beside the checkpoint holds a {type(record).__name__}, "
                              "expected a JSON object with \"scalings\" (or a training state's \"config\")")
    return record


def _side_scalings(record: dict[str, Any], side: Path) -> dict[str, Any]:
    """The scalings recorded in the settings file `side` (its `record`: "scalings", or a training state's
    config["decomposer"]), checked by building a bare decomposer with them; CheckpointError naming the file."""
    scalings = record.get("scalings")
    if not scalings:
        config = record.get("config") or {}
        settings = (config.get("decomposer") or {}) if isinstance(config, dict) else config
        scalings = _scalings_of(settings) if isinstance(settings, dict) else settings
    if not isinstance(scalings, dict):
        raise CheckpointError(f"{side}: its scalings should be a JSON object, got a {type(scalings).__name__}")
    sizes = sorted(set(scalings) & _SIZE_KEYS)
    if sizes:
        raise CheckpointError(f"{side}: {sizes} are read from the checkpoint's shapes and cannot be set here")
    try:
        with torch.device("meta"):
            Unsup3DDecomposer(nets=(), **scalings)
    except (TypeError, ValueError, StyleGANDisentangleError) as exc:
        raise CheckpointError(f"{side}: bad scalings {scalings} ({type(exc).__name__}: {exc})") from None
    return dict(scalings)


def _side_generator(record: dict[str, Any]) -> str | None:
    """The fingerprint of the network the decomposer was trained on, as the settings file beside it records it
    ("generator_sha256": the trainer's state and the shipped record), or None."""
    value = record.get("generator_sha256")
    return value if isinstance(value, str) and len(value) == 64 else None


def decomposer_summary(decomposer: Unsup3DDecomposer) -> dict[str, Any]:
    """What `stylegan-disentangle info` prints of a decomposer: its file, the nets it holds with their sizes and
    parameter counts, its settings (`get_config`), the training epoch stored with it, and the network it was trained
    on (`trained_on`: compare with `info PKL`'s `generator_fingerprint`)."""
    from ...utils import sha256_file

    source = decomposer.source
    return {
        "path": source,
        "sha256": sha256_file(source) if source and Path(source).is_file() else None,
        "image_size": decomposer.image_size,
        "nets": {name: {**decomposer.sizes[name],
                        "parameters": int(sum(p.numel() for p in decomposer.net(name).parameters()))}
                 for name in decomposer.present_nets},
        "settings": {k: v for k, v in decomposer.get_config().items() if k not in _SIZE_KEYS},
        "epoch": decomposer.epoch,
        "trained_on": decomposer.trained_on,
    }


def warn_if_trained_on_another(decomposer: Unsup3DDecomposer, G: torch.nn.Module, name: str | os.PathLike,
                               pkl: str | os.PathLike) -> bool:
    """Log a warning and return True when `decomposer` is known to have been trained on another network's faces
    than G's (its `trained_on` fingerprint differs from G's): its readings of G's faces may mean little. A
    decomposer of unknown origin (an official one, trained on photographs) passes silently."""
    if decomposer.trained_on is None:
        return False
    from ...latents.bank import generator_fingerprint  # latents does not import labels

    here = generator_fingerprint(G)
    if here == decomposer.trained_on:
        return False
    logger.warning("the decomposer %s was trained on another network's faces (generator %s..., %s is %s...): its "
                   "depth, albedo, light and view readings of these faces may mean little; train one on this "
                   "network with `stylegan-disentangle train-decomposer %s --outdir DIR`", name,
                   decomposer.trained_on[:12], pkl, here[:12], pkl)
    return True


_SIZE_KEYS = {"image_size", "nf", "zdim", "nf_albedo", "zdim_albedo", "nf_light", "nf_view", "nf_conf", "zdim_conf",
              "nets"}


def _scalings_of(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in _SIZE_KEYS}


def scalar_labels(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The scalar labels (SCALAR_LABELS, world units: degrees for angles) of a `decompose` output with its light and
    view: {name: [N]}."""
    rot, view = out["rotation_deg"], out["view"]
    return {"pitch": rot[:, 0], "yaw": rot[:, 1], "roll": rot[:, 2], "tx": view[:, 3], "ty": view[:, 4],
            "tz": view[:, 5], **light_labels(out["light"])}


def _check_images(img: Any, what: str) -> None:
    """StyleGANDisentangleError unless `img` is a tensor of images [N >= 1, C, H, W]; `what` starts the message."""
    if not torch.is_tensor(img) or img.ndim != 4 or img.shape[0] == 0:
        got = tuple(img.shape) if torch.is_tensor(img) else type(img).__name__
        raise StyleGANDisentangleError(f"{what} images [N >= 1, 3, H, W] in [-1, 1]; got {got}")


class DecomposerLabeler:
    """Labeler protocol around an `Unsup3DDecomposer` (see the module docstring for the labels).

    `crop` (top, left, height, width; fractions of the image, `labels.crop_images`) is the part of each image the
    decomposer reads: the face box of a decomposer trained on tighter crops than the generator draws. None: the
    decomposer's own `input_crop` (set when it was trained with one), else the whole image; (0, 0, 1, 1) reads the
    whole image in any case. It is part of the labeler's fingerprint, so a latent bank labelled through one crop is
    not reused through another. `light_mask` (a box of the cropped image, the same fractions) is the part netL does
    not see when it reads the light (`Unsup3DDecomposer`'s `light_mask`): None, the decomposer's own; False, none.
    It is part of the fingerprint too.
    """

    name = "decomposer3d"
    needs_ws = False
    needs_images = True

    def __init__(self, decomposer: Unsup3DDecomposer, batch_size: int = 256, maps: bool = True,
                 confidence: bool = True, crop: tuple[float, float, float, float] | None = None,
                 light_mask: tuple[float, float, float, float] | None | bool = None) -> None:
        self.decomposer = decomposer  # left as the caller has it: each call switches it to eval and back
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.crop = decomposer.input_crop if crop is None else check_crop(crop)
        self.light_mask = check_light_mask(light_mask, decomposer.light_mask)
        self.maps = bool(maps)
        self.input_resolution = decomposer.image_size
        # netC runs only when its map is wanted (it costs about a third of a decomposition)
        self.confidence = bool(confidence and maps and decomposer.netC is not None)
        self.names = list(SCALAR_LABELS) + ([m for m in MAP_LABELS if m != "confidence" or self.confidence]
                                            if maps else [])
        d = decomposer
        light = math.degrees(math.atan(d.xy_light_range))
        ranges = {"yaw": (-d.xyz_rotation_range, d.xyz_rotation_range), "tx": (-d.xy_translation_range,
                  d.xy_translation_range), "tz": (-d.z_translation_range, d.z_translation_range),
                  "light_ambient": (d.min_amb_light, d.max_amb_light),
                  "light_diffuse": (d.min_diff_light, d.max_diff_light), "light_azimuth": (-light, light),
                  "light_elevation": (-light, light), "depth": (d.min_depth, d.max_depth), "albedo": (-1.0, 1.0),
                  "image_albedo": (-1.0, 1.0), "confidence": (0.0, math.inf)}
        ranges["pitch"] = ranges["roll"] = ranges["yaw"]
        ranges["ty"] = ranges["tx"]
        self.value_ranges = {k: ranges[k] for k in self.names}

    @property
    def taught_light(self) -> bool:
        """Whether the decomposer's netL was taught by a latent light teacher (its `light_teacher` mark): its light
        readings then already carry the teacher's conditions, and `ThreeDCoupledDirections(taught_light=True)` is
        the rule to fit them with."""
        return self.decomposer.light_teacher is not None

    @property
    def fingerprint(self) -> str:
        """sha256 of the decomposer's weights and settings as they are now (a latent bank asks once, ~10 ms). A bank
        keeps it, so that a bank labelled by another decomposer (the same label names, other labels) is refused
        rather than reused."""
        from ...latents.bank import generator_fingerprint  # the state-dict hash; latents does not import labels

        settings = json.dumps(self.decomposer.get_config(), sort_keys=True)
        if self.crop is not None:  # the same nets on another part of the image give other labels
            settings += f":crop={list(self.crop)}"
        if self.light_mask != self.decomposer.light_mask:  # the decomposer's own is in its config
            settings += f":light_mask={None if self.light_mask is None else list(self.light_mask)}"
        return hashlib.sha256(f"{generator_fingerprint(self.decomposer)}:{settings}".encode()).hexdigest()

    @contextmanager
    def _inference(self) -> Iterator[torch.device]:
        """Eval mode and, on the CPU, channels-last weights for the call (oneDNN's channels-last convolutions run
        1.2-1.5x faster with the same weights: results equal to float rounding); the caller's decomposer gets its
        mode and layout back afterwards."""
        dec = self.decomposer
        device = next(dec.parameters()).device
        conv = next((p for p in dec.parameters() if p.ndim == 4), None)
        relayout = device.type == "cpu" and conv is not None and not conv.is_contiguous(
            memory_format=torch.channels_last)
        training = dec.training
        dec.eval()
        if relayout:
            dec.to(memory_format=torch.channels_last)
        try:
            yield device
        finally:
            if relayout:
                dec.to(memory_format=torch.contiguous_format)
            dec.train(training)

    @torch.no_grad()
    def __call__(self, img: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        _check_images(img, "decomposer3d labels")
        with self._inference() as device:
            return self._label(img, device)

    def _label(self, img: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        chunks: dict[str, list[torch.Tensor]] = {k: [] for k in self.names}
        renderer = renderer_for(self.decomposer)
        for start in range(0, img.shape[0], self.batch_size):
            parts = ["light", "view"] + (["depth", "albedo"] if self.maps else [])
            # resized to the nets' input once, here: decompose and image_albedo both read it (a no-op prepare there)
            batch = self._prepare(img[start:start + self.batch_size], device)
            out = self._decompose(batch, parts + (["confidence"] if self.confidence else []))
            values = scalar_labels(out)
            if self.maps:
                values.update(depth=out["canon_depth"], albedo=out["canon_albedo"],
                              image_albedo=image_albedo(self.decomposer, batch, out, renderer))
                if "conf_sigma_l1" in out:
                    values["confidence"] = out["conf_sigma_l1"][:, 0]
            for k in self.names:
                chunks[k].append(values[k].float().cpu().contiguous())
        return {k: torch.cat(v) for k, v in chunks.items()}

    def _prepare(self, img: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Images as the nets read them: cropped, resized, on `device` (channels-last on the CPU)."""
        batch = self.decomposer.prepare(crop_images(img, self.crop).to(device))
        return batch.contiguous(memory_format=torch.channels_last) if device.type == "cpu" else batch

    def _decompose(self, batch: torch.Tensor, parts: list[str]) -> dict[str, torch.Tensor]:
        return self.decomposer.decompose(batch, parts=parts,
                                         light_mask=False if self.light_mask is None else self.light_mask)

    def view_leak(self, img: torch.Tensor, delta: float = VIEW_LEAK_DELTA) -> dict[str, dict[str, float]]:
        """How much of the view this labeler's light readings take in, measured on the decomposer's re-renders of
        `img` [N, 3, H, W] (`view_leak.measure_view_leak`: {light label: {rotation label: slope}}; no labels
        needed)."""
        _check_images(img, "view leak: needs")
        with self._inference() as device:
            return measure_view_leak(self.decomposer, self._prepare(img, device), self._decompose, delta,
                                     self.batch_size)

    def scalars_only(self) -> DecomposerLabeler:
        """The same decomposer labelling only the scalars (view and light): netD, netA and netC do not run, which
        is most of a decomposition's cost (for rendered label effects, where the maps are not wanted)."""
        return DecomposerLabeler(self.decomposer, batch_size=self.batch_size, maps=False, confidence=False,
                                 crop=self.crop, light_mask=False if self.light_mask is None else self.light_mask)

    def __repr__(self) -> str:
        crop = "" if self.crop is None else f", crop={self.crop}"
        mask = "" if self.light_mask is None else f", light_mask={self.light_mask}"
        return f"DecomposerLabeler({self.decomposer.extra_repr()}, maps={self.maps}{crop}{mask})"


def parse_light_mask(text: str) -> tuple[float, float, float, float] | bool:
    """A light mask as the commands take it: 'TOP,LEFT,HEIGHT,WIDTH' (fractions) -> the checked box; 'none' ->
    False (no mask). ValueError naming the light mask otherwise."""
    if text.strip().lower() == "none":
        return False
    return check_crop(text.split(","), "light mask")


def decomposer_labeler(decomposer: str | os.PathLike | Unsup3DDecomposer = "synthetic", maps: bool = True,
                       device: str | torch.device = "cpu", batch_size: int = 256,
                       confidence: bool = True,
                       crop: tuple[float, float, float, float] | None = None,
                       light_mask: tuple[float, float, float, float] | None | bool = None) -> DecomposerLabeler:
    """The registered 'decomposer3d' labeler: a decomposer, or anything `load_decomposer` takes. `crop` (top, left,
    height, width as fractions of the image) is the part of each image the decomposer reads, e.g. the face box an
    official decomposer was trained on (CelebA crops) inside a generator's wider frame (FFHQ's); None: the
    decomposer's own `input_crop`, if any. `light_mask` (the same fractions, of the cropped image): the box netL
    does not see when it reads the light, e.g. the hair above the face; None: the decomposer's own `light_mask`,
    False: none."""
    check_crop(crop)  # before a download or a load
    check_light_mask(light_mask)
    if not isinstance(decomposer, Unsup3DDecomposer):
        decomposer = load_decomposer(decomposer, device=device)
    return DecomposerLabeler(decomposer, batch_size=batch_size, maps=maps, confidence=confidence, crop=crop,
                             light_mask=light_mask)
