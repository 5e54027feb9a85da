"""What the command modules share: our errors become a one-line CLI message instead of a traceback, one checked
--device option, and the decomposer's input crop option."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def fail_cleanly(fn: Callable[[], T]) -> T:
    """Run fn; a StyleGANDisentangleError becomes a click error (message only, exit code 1)."""
    from .errors import StyleGANDisentangleError

    try:
        return fn()
    except StyleGANDisentangleError as exc:
        raise click.ClickException(str(exc)) from None


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
        return check_crop([float(v) for v in value.split(",")])
    except ValueError as exc:
        raise click.BadParameter(f"{value!r}: {exc}", ctx=ctx, param=param) from None


_CROP_HELP = ("The part of each image the decomposer reads, as fractions of the image (e.g. 0.2,0.2,0.6,0.6), for a "
              "decomposer trained on tighter face crops than the generator draws (the official CelebA one on an FFHQ "
              "generator); default: the decomposer's own crop if it was trained with one, else the whole image.")


def crop_option(*names: str, help: str = _CROP_HELP) -> Callable:
    """The decomposer's input crop: the part of each generated image it reads (None: its own, or the whole image)."""
    return click.option(*names, default=None, callback=_crop_callback, metavar="TOP,LEFT,HEIGHT,WIDTH", help=help)
