"""Checkpoints: safe loading and writing of official network pickles, the registry of known checkpoints, and the
download cache."""

from .download import default_cache_dir, download_file
from .loader import NetworkPickle, load_network_pkl, open_network_pkl
from .registry import KnownCheckpoint, get_checkpoint_info, known_checkpoints, resolve_checkpoint
from .writer import save_network_pkl

__all__ = [
    "KnownCheckpoint",
    "NetworkPickle",
    "default_cache_dir",
    "download_file",
    "get_checkpoint_info",
    "known_checkpoints",
    "load_network_pkl",
    "open_network_pkl",
    "resolve_checkpoint",
    "save_network_pkl",
]
