"""What the command modules share: our errors become a one-line CLI message instead of a traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import click

T = TypeVar("T")


def fail_cleanly(fn: Callable[[], T]) -> T:
    """Run fn; a StyleGANDisentangleError becomes a click error (message only, exit code 1)."""
    from .errors import StyleGANDisentangleError

    try:
        return fn()
    except StyleGANDisentangleError as exc:
        raise click.ClickException(str(exc)) from None
