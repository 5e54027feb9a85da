"""Parse the range syntax the command line uses: seeds '0-7,12' and steps '-3:3:7'."""

from __future__ import annotations

import numpy as np


def parse_seeds(text: str) -> list[int]:
    """'0-3,10' -> [0, 1, 2, 3, 10]. Raises ValueError with the offending part."""
    seeds: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (None, None)
                lo, hi = int(lo), int(hi)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
        except (TypeError, ValueError):
            raise ValueError(f"cannot read seeds {part!r}: use e.g. '0-7' or '1,5,9'") from None
    if not seeds or any(s < 0 or s >= 2**32 for s in seeds):
        raise ValueError(f"seeds must be non-negative 32-bit ints, got {text!r}")
    return seeds


def parse_steps(text: str) -> np.ndarray:
    """'-3:3:7' -> 7 evenly spaced steps from -3 to 3; '0.5' -> [0.5]; '-1,0,2' -> that list."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi, n = text.split(":")
            steps = np.linspace(float(lo), float(hi), int(n))
        else:
            steps = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(f"cannot read steps {text!r}: use START:STOP:COUNT (e.g. -3:3:7) or a comma list") from None
    if steps.size == 0 or not np.isfinite(steps).all():
        raise ValueError(f"steps must be finite numbers, got {text!r}")
    return steps
