"""What the command modules share: our errors become a one-line CLI message instead of a traceback, and one
checked --device option."""

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
