"""JSON-lines training logs: one record per line, each with a "step"."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .atomic import atomic_write


def trim_jsonl(path: str | os.PathLike, step: int) -> None:
    """Drop the records past `step` (written by a run that died after its last checkpoint), atomically."""
    path = Path(path)
    if not path.is_file():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    with atomic_write(path, "w") as f:
        f.write("".join(line + "\n" for line in keep))
