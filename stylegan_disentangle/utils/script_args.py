"""What the `scripts/` share: argparse types that refuse plainly bad values while the command line is parsed (before
any rendering or training), and a runner that prints this package's errors as one line instead of a traceback."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import Any

from ..errors import StyleGANDisentangleError


def checked(parse: Callable[[str], Any], ok: Callable[[Any], bool], needs: str) -> Callable[[str], Any]:
    """An argparse type: `parse` the text, then refuse it (saying what it `needs`) unless `ok(value)`."""
    def convert(text: str) -> Any:
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"must be {needs}, got {text!r}")
        return value
    convert.__name__ = needs  # what argparse names in its own messages
    return convert


positive_int = checked(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
seed_value = checked(int, lambda v: 0 <= v < 2**32, "an integer between 0 and 2**32 - 1")
finite_float = checked(float, math.isfinite, "a finite number")


def _numbers(parse: Callable[[str], Any], what: str) -> Callable[[str], list]:
    def convert(text: str) -> list:
        try:
            values = [parse(part) for part in text.split(",") if part.strip()]
        except ValueError:
            values = []
        if not values or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"must be a comma list of {what}, got {text!r}")
        return values
    convert.__name__ = f"comma list of {what}"
    return convert


int_list = _numbers(int, "integers")
float_list = _numbers(float, "finite numbers")


def run_script(main: Callable[[], Any]) -> None:
    """Run a script's `main`; this package's errors (which name the file or setting) end it with one line on stderr
    and exit status 1, as the command line's do."""
    try:
        result = main()
    except StyleGANDisentangleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    raise SystemExit(result if isinstance(result, int) else 0)
