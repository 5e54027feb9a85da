"""Small helpers shared by every stage: atomic file writes, device selection, hashing."""

from .atomic import atomic_write, atomic_write_path
from .device import resolve_device
from .hashing import sha256_file

__all__ = ["atomic_write", "atomic_write_path", "resolve_device", "sha256_file"]
