"""What the command modules share: our errors become a one-line CLI message instead of a traceback, one checked
--device option, and the decomposer's input crop and light mask options."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


class FiniteFloat(click.types.FloatParamType):
    """A float option that refuses nan and inf while the command line is parsed (a NaN learning rate or
    truncation would otherwise run to the end and write black images or a broken model)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()
SEED = click.IntRange(0, 2**32 - 1)
"""A --seed: numpy's and scikit-learn's seeds are unsigned 32-bit integers."""


def fail_cleanly(fn: Callable[[], T]) -> T:
    """Run fn; a StyleGANDisentangleError becomes a click error (message only, exit code 1)."""
    from .errors import StyleGANDisentangleError

    try:
        return fn()
    except StyleGANDisentangleError as exc:
        raise click.ClickException(str(exc)) from None


def progress_setting(ctx: click.Context | None = None) -> bool | None:
    """The progress argument of the package's long functions: False (no bars) with the group's --quiet, else None
    (tqdm decides: bars on a terminal only). `ctx` defaults to the current click context."""
    ctx = ctx or click.get_current_context()
    return False if (ctx.obj or {}).get("quiet") else None


def _device_callback(ctx: click.Context, param: click.Parameter, value: str) -> torch.device:
    """Resolve --device while the command line is parsed, so a device this machine lacks is a usage error before
    anything is loaded or written."""
    from .errors import StyleGANDisentangleError
    from .utils.device import resolve_device

    try:
        return resolve_device(value)
    except StyleGANDisentangleError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def device_option(help: str = "auto, cpu, cuda or cuda:N.") -> Callable:
    """The --device option every command shares; the command receives a torch.device that exists here."""
    return click.option("--device", default="auto", show_default=True, callback=_device_callback, help=help)


def _crop_callback(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[float, ...] | None:
    """'TOP,LEFT,HEIGHT,WIDTH' (fractions of the image) -> a checked crop box; a bad one is a usage error."""
    from .labels.base import check_crop

    if value is None:
        return None
    try:
        return check_crop(value.split(","))
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx=ctx, param=param) from None


_CROP_HELP = ("The part of each image the decomposer reads, as fractions of the image (e.g. 0.2,0.2,0.6,0.6), for a "
              "decomposer trained on tighter face crops than the generator draws (the official CelebA one on an FFHQ "
              "generator); default: the decomposer's own crop if it was trained with one, else the whole image.")


def crop_option(*names: str, help: str = _CROP_HELP) -> Callable:
    """The decomposer's input crop: the part of each generated image it reads (None: its own, or the whole image)."""
    return click.option(*names, default=None, callback=_crop_callback, metavar="TOP,LEFT,HEIGHT,WIDTH", help=help)


def _light_mask_callback(ctx: click.Context, param: click.Parameter,
                         value: str | None) -> tuple[float, ...] | bool | None:
    """'TOP,LEFT,HEIGHT,WIDTH' -> a checked box, 'none' -> False (no mask), absent -> None (the decomposer's own)."""
    from .labels.decomposer.labeler import parse_light_mask

    if value is None:
        return None
    try:
        return parse_light_mask(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx=ctx, param=param) from None


_LIGHT_MASK_HELP = ("A box of the decomposer's input that its light network does not see (painted in the image's "
                    "background colour), as fractions of the image, e.g. 0,0,0.22,1 for the top of the frame, "
                    "where the hair is (a decomposer reads bright hair above a face partly as ambient light and "
                    "light from above); 'none': netL sees the whole input. Default: the decomposer's own (the "
                    "shipped synthetic one: 0,0,0.22,1), else none.")


def light_mask_option(*names: str, help: str = _LIGHT_MASK_HELP) -> Callable:
    """The decomposer's light mask: a box netL does not see (None: its own; False: none)."""
    return click.option(*names, default=None, callback=_light_mask_callback, metavar="TOP,LEFT,HEIGHT,WIDTH|none",
                        help=help)
