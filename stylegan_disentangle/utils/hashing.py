"""File hashing used for checkpoint identity (DirectionSets and run directories record it)."""

from __future__ import annotations

import hashlib
import os


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Return the hex sha256 of a file, read in chunks so large pickles do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()
