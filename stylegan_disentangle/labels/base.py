"""The Labeler protocol (images -> named attributes) and the ways to make one from your own code.

A labeler is any callable `labeler(img, ws=None) -> {name: Tensor[N, ...]}` with attributes

- `names`            the label names it returns (stable, file-safe),
- `input_resolution` the resolution it wants (None = any; `resize_images` helps),
- `value_ranges`     `{name: (low, high)}` of the values it produces,
- `needs_ws`         True if it reads `ws` `[N, num_ws, w_dim]` (e.g. a synthetic oracle),
- `needs_images`     optional, default True; False for labelers that only read `ws`.

`img` is `[N, C, H, W]` exactly as the generator made it (about [-1, 1]). Your own attribute classifier becomes a
labeler in one line::

    lab = labeler_from_callable(my_classifier, ["smile", "age"], input_resolution=224)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import StyleGANDisentangleError

__all__ = [
    "CallableLabeler",
    "CombinedLabeler",
    "Labeler",
    "LabelerError",
    "apply_labeler",
    "check_crop",
    "combine_labelers",
    "crop_images",
    "fill_box",
    "labeler_from_callable",
    "needs_images",
    "resize_images",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


class LabelerError(StyleGANDisentangleError, ValueError):
    """A labeler is malformed, unknown, or returned labels of the wrong shape / with NaN."""


@runtime_checkable
class Labeler(Protocol):
    """What every labeler provides (see the module docstring)."""

    names: Sequence[str]
    input_resolution: int | None
    value_ranges: Mapping[str, tuple[float, float]]
    needs_ws: bool

    def __call__(self, img: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]: ...


def needs_images(labeler: Any) -> bool:
    """Whether the labeler reads images (True unless it says `needs_images = False`)."""
    return bool(getattr(labeler, "needs_images", True))


def check_label_names(names: Sequence[str], owner: str = "labeler") -> list[str]:
    """Validate label names: a non-empty list of unique, file-safe strings."""
    if isinstance(names, str):
        names = [names]
    names = [str(n) for n in names]
    if not names:
        raise LabelerError(f"{owner} must name at least one label")
    bad = [n for n in names if not _NAME_RE.match(n)]
    if bad:
        raise LabelerError(f"{owner}: label names {bad} are not file-safe (use letters, digits, '_', '-', '.', '+')")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise LabelerError(f"{owner}: duplicate label names {dup}")
    return names


def resize_images(img: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """Resize `[N, C, H, W]` to `[N, C, resolution, resolution]` (area-averaging down, bilinear up; None = as is)."""
    if resolution is None or (img.shape[-2] == resolution and img.shape[-1] == resolution):
        return img
    if img.shape[-1] > resolution:
        return F.interpolate(img, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(img, size=(resolution, resolution), mode="bilinear", align_corners=False)


def check_crop(crop: Any, what: str = "crop") -> tuple[float, float, float, float] | None:
    """A crop box `(top, left, height, width)` as fractions of the image's side, checked (None = no crop).

    Raises ValueError saying what is wrong: not four finite numbers, a side that is not > 0, or a box that leaves
    the image (top + height and left + width must stay <= 1). `what` names the box in the message.
    """
    if crop is None:
        return None
    try:
        if isinstance(crop, (str, bool)):
            raise TypeError
        box = tuple(float(v) for v in crop)
    except (TypeError, ValueError):
        raise ValueError(f"a {what} is four numbers (top, left, height, width) as fractions of the image; "
                         f"got {crop!r}") from None
    if len(box) != 4 or not all(np.isfinite(box)):
        raise ValueError(f"a {what} is four finite numbers (top, left, height, width) as fractions of the image; "
                         f"got {crop!r}")
    top, left, height, width = box
    if top < 0 or left < 0 or height <= 0 or width <= 0 or top + height > 1 + 1e-9 or left + width > 1 + 1e-9:
        raise ValueError(f"{what} (top, left, height, width) = {box} must lie inside the image: top, left >= 0, "
                         "height, width > 0, top + height <= 1 and left + width <= 1")
    return box


def crop_images(img: torch.Tensor, crop: Sequence[float] | None) -> torch.Tensor:
    """The box `crop` = (top, left, height, width), fractions of the side, of `[N, C, H, W]` images (None = as is).

    The box's edges are rounded to whole pixels, at least one pixel each way: the generator's pixels are kept as
    they are, and a later `resize_images` makes the size a network wants.
    """
    box = check_crop(crop)
    if box is None:
        return img
    rows, cols = _box_pixels(box, *img.shape[-2:])
    return img[..., rows, cols]


def _box_pixels(box: tuple[float, float, float, float], h: int, w: int) -> tuple[slice, slice]:
    """The rows and columns of a checked box on an `h` x `w` image: edges rounded to whole pixels, at least one
    pixel each way."""
    top, left, height, width = box
    y0, x0 = min(round(top * h), h - 1), min(round(left * w), w - 1)
    y1, x1 = max(round((top + height) * h), y0 + 1), max(round((left + width) * w), x0 + 1)
    return slice(y0, min(y1, h)), slice(x0, min(x1, w))


def fill_box(img: torch.Tensor, box: Sequence[float] | None) -> torch.Tensor:
    """`[N, C, H, W]` images with the box `box` = (top, left, height, width), fractions of the side (pixels as
    `crop_images` rounds them), painted in each image's background colour (None = as is; a new tensor otherwise).

    The background colour is the mean of the image's two top-corner patches (side `max(1, H // 16)`): a generated
    portrait's top corners show the backdrop. A decomposer's light read through such a box does not see what the box
    hides (`Unsup3DDecomposer(light_mask=...)`: the hair above the face).
    """
    box = check_crop(box, "box")
    if box is None:
        return img
    if img.ndim != 4:
        raise ValueError(f"fill_box needs images [N, C, H, W], got {tuple(img.shape)}")
    h, w = img.shape[-2:]
    k = max(1, h // 16)
    background = (img[:, :, :k, :k].mean((2, 3)) + img[:, :, :k, w - k:].mean((2, 3))) / 2
    rows, cols = _box_pixels(box, h, w)
    out = img.clone()
    out[:, :, rows, cols] = background[:, :, None, None]
    return out


def apply_labeler(labeler: Any, img: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Call a labeler and check what it returns: exactly its `names`, each `[N, ...]`, finite (float32, on CPU).

    Raises LabelerError naming the labeler and the offending label.
    """
    names = check_label_names(getattr(labeler, "names", []) or [], type(labeler).__name__)
    if getattr(labeler, "needs_ws", False) and ws is None:
        raise LabelerError(f"labeler {type(labeler).__name__} needs ws; pass ws=[N, num_ws, w_dim]")
    if needs_images(labeler) and img is None:
        raise LabelerError(f"labeler {type(labeler).__name__} needs images, got None")
    n = img.shape[0] if img is not None else ws.shape[0]
    with torch.no_grad():
        out = labeler(img, ws=ws) if getattr(labeler, "needs_ws", False) else labeler(img)
    if not isinstance(out, Mapping) or set(out) != set(names):
        got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise LabelerError(f"labeler {type(labeler).__name__} must return a dict with keys {names}, got {got}")
    result = {}
    for name in names:
        value = torch.as_tensor(out[name]).detach().to("cpu", torch.float32)
        if value.ndim == 0 or value.shape[0] != n:
            raise LabelerError(f"label {name!r} of {type(labeler).__name__} has shape {tuple(value.shape)}; "
                               f"expected [{n}, ...]")
        if not torch.isfinite(value).all():
            raise LabelerError(f"label {name!r} of {type(labeler).__name__} contains NaN or inf")
        result[name] = value
    return result


class CallableLabeler:
    """Wrap a function or `nn.Module` `fn(img)` (or `fn(img, ws)` when `needs_ws`) as a labeler.

    `fn` may return a tensor `[N]` (one name), `[N, L]` (L names, one per column) or a dict name -> `[N, ...]`.
    Images are resized to `input_resolution` first, and `preprocess='unit'` maps them from [-1, 1] to [0, 1]
    (clamped). Modules run in eval mode without autograd (their previous mode is restored).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        names: Sequence[str],
        input_resolution: int | None = None,
        value_ranges: Mapping[str, tuple[float, float]] | None = None,
        needs_ws: bool = False,
        needs_images: bool = True,
        preprocess: str = "none",
    ) -> None:
        if not callable(fn):
            raise LabelerError(f"labeler_from_callable needs a callable, got {type(fn).__name__}")
        if preprocess not in ("none", "unit"):
            raise LabelerError(f"preprocess must be 'none' or 'unit', got {preprocess!r}")
        self.fn = fn
        self.names = check_label_names(names, f"labeler {getattr(fn, '__name__', type(fn).__name__)}")
        self.input_resolution = input_resolution
        ranges = dict(value_ranges or {})
        self.value_ranges = {n: tuple(ranges.get(n, (-np.inf, np.inf))) for n in self.names}
        self.needs_ws = needs_ws
        self.needs_images = needs_images
        self.preprocess = preprocess

    def __call__(self, img: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if img is not None and self.needs_images:
            img = resize_images(img, self.input_resolution)
            if self.preprocess == "unit":
                img = ((img + 1) / 2).clamp(0, 1)
        module = self.fn if isinstance(self.fn, nn.Module) else None
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        try:
            with torch.no_grad():
                out = self.fn(img, ws) if self.needs_ws else self.fn(img)
        finally:
            if module is not None:
                module.train(was_training)
        return self._to_dict(out)

    def _to_dict(self, out: Any) -> dict[str, torch.Tensor]:
        if isinstance(out, Mapping):
            return {str(k): torch.as_tensor(v) for k, v in out.items()}
        out = torch.as_tensor(out)
        if out.ndim == 1 and len(self.names) == 1:
            return {self.names[0]: out}
        if out.ndim == 2 and out.shape[1] == len(self.names):
            return {name: out[:, i] for i, name in enumerate(self.names)}
        raise LabelerError(f"labeler {self.names} returned shape {tuple(out.shape)}; expected [N] for one name or "
                           f"[N, {len(self.names)}] for {len(self.names)} names, or a dict")

    def __repr__(self) -> str:
        return f"CallableLabeler({getattr(self.fn, '__name__', type(self.fn).__name__)}, names={self.names})"


def labeler_from_callable(
    fn: Callable[..., Any],
    names: Sequence[str] | str,
    input_resolution: int | None = None,
    value_ranges: Mapping[str, tuple[float, float]] | None = None,
    needs_ws: bool = False,
    needs_images: bool = True,
    preprocess: str = "none",
) -> CallableLabeler:
    """Turn your classifier / function into a labeler (see `CallableLabeler`)."""
    return CallableLabeler(fn, [names] if isinstance(names, str) else names, input_resolution, value_ranges,
                           needs_ws, needs_images, preprocess)


class CombinedLabeler:
    """Several labelers run as one: the union of their labels (names must not collide)."""

    def __init__(self, labelers: Sequence[Any]) -> None:
        self.labelers = list(labelers)
        if not self.labelers:
            raise LabelerError("combine_labelers needs at least one labeler")
        names: list[str] = []
        for lab in self.labelers:
            names.extend(getattr(lab, "names", []))
        self.names = check_label_names(names, "combined labeler")
        self.input_resolution = None
        self.value_ranges = {}
        for lab in self.labelers:
            self.value_ranges.update(getattr(lab, "value_ranges", {}) or {})
        self.needs_ws = any(getattr(lab, "needs_ws", False) for lab in self.labelers)
        self.needs_images = any(needs_images(lab) for lab in self.labelers)

    def __call__(self, img: torch.Tensor | None, ws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for lab in self.labelers:
            out.update(apply_labeler(lab, img, ws))
        return out

    def __repr__(self) -> str:
        return f"CombinedLabeler({self.labelers!r})"


def combine_labelers(labelers: Sequence[Any]) -> Any:
    """One labeler from several (the labeler itself when given one)."""
    labelers = list(labelers)
    return labelers[0] if len(labelers) == 1 else CombinedLabeler(labelers)
