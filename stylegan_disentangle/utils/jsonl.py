"""JSON-lines training logs: one record per line, each with a "step"."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .atomic import atomic_write


def trim_jsonl(path: str | os.PathLike, step: int, drop: Callable[[dict], bool] | None = None) -> None:
    """Drop the records past `step` (written by a run that died after its last checkpoint), and those `drop` says
    yes to, atomically."""
    path = Path(path)
    if not path.is_file():
        return
    records = [(line, json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    keep = [line for line, r in records if r.get("step", 0) <= step and not (drop is not None and drop(r))]
    with atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))
