"""Parse the range syntax the command line and the Python API share: seeds '0-7,12' and steps '-3:3:7'."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from ..errors import UsageError


def parse_steps(spec: str | Sequence[float]) -> np.ndarray:
    """Steps from "start:stop:count" (inclusive, like linspace), "a,b,c", or a sequence -> `[S]` float64."""
    if not isinstance(spec, str):
        steps = np.asarray(spec, dtype=np.float64).reshape(-1)
    elif ":" in spec:
        parts = spec.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise UsageError(f"steps {spec!r} must look like START:STOP:COUNT, e.g. -3:3:7") from None
        if count < 1:
            raise UsageError(f"steps {spec!r}: COUNT must be >= 1")
        steps = np.linspace(start, stop, count)
    else:
        try:
            steps = np.asarray([float(x) for x in spec.split(",") if x.strip()], dtype=np.float64)
        except ValueError:
            raise UsageError(f"steps {spec!r} must be numbers separated by commas") from None
    if steps.size == 0 or not np.isfinite(steps).all():
        raise UsageError(f"steps {spec!r} must be a non-empty list of finite numbers")
    return steps


MAX_SEEDS = 1_000_000


def parse_seeds(spec: str | Sequence[int]) -> list[int]:
    """Seeds from "0-7,10,12-13" (ranges inclusive) or a sequence of ints; each must fit in 32 bits."""
    if not isinstance(spec, str):
        seeds = [int(s) for s in spec]
    else:
        seeds = []
        for part in spec.split(","):
            part = part.strip()
            if not part:
                continue
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if match is None:
                raise UsageError(f"seeds {spec!r}: {part!r} is not N or N-M")
            lo = int(match.group(1))
            hi = int(match.group(2)) if match.group(2) is not None else lo
            if hi < lo:
                raise UsageError(f"seeds {spec!r}: range {part!r} runs backwards")
            if hi >= 2**32:  # checked before the range is built: 0-100000000000 would not fit in memory
                raise UsageError(f"seeds {spec!r}: seeds must be between 0 and 2**32 - 1")
            if len(seeds) + hi - lo + 1 > MAX_SEEDS:
                raise UsageError(f"seeds {spec!r} names more than {MAX_SEEDS:,} seeds (one image or row each); for "
                                 "a large sample use find-directions' --samples bank")
            seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise UsageError(f"seeds {spec!r} names no seed")
    if any(not 0 <= s < 2**32 for s in seeds):
        raise UsageError(f"seeds {spec!r}: seeds must be between 0 and 2**32 - 1")
    return seeds
