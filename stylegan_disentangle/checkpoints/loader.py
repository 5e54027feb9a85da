"""`load_network_pkl`: read official StyleGAN2 network pickles (StyleGAN2-ADA-pytorch, StyleGAN3 repository,
original TensorFlow StyleGAN2) from a path, URL or known name, without executing anything stored in the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..utils import resolve_device
from .download import remove_cached
from .rebuild import build_from_description, detect_flavor
from .registry import CheckpointSource, locate_checkpoint
from .tf_convert import convert_tf_discriminator, convert_tf_generator
from .unpickler import PersistentDescription, TFNetworkDescription, plain_data, restricted_load

logger = logging.getLogger(__name__)

NETWORK_KEYS = ("G", "D", "G_ema")
NETWORK_CLASS_NAMES = {"G": "Generator", "G_ema": "Generator", "D": "Discriminator"}
"""The network class each key holds (the loader refuses, and save_network_pkl will not write, any other)."""
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_TORCH_MAGIC = 0x1950A86A20F9469CFC6C  # the first object torch.save's pre-zip format pickles


@dataclass
class NetworkPickle:
    """A loaded checkpoint: the networks and plain data (`data`), where it came from, its flavour, and what the
    conversion skipped (`ignored`: {network key: {TF variable: value}} for the inert TF variables; empty otherwise)."""

    path: Path
    flavor: str
    data: dict[str, Any]
    ignored: dict[str, dict[str, float]] = field(default_factory=dict)


def read_descriptions(path: str | os.PathLike) -> Any:
    """Unpickle `path` with the restricted unpickler; every failure becomes a CheckpointError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(4)
            if size == 0:
                raise CheckpointError(f"{path}: the file is empty")
            if head.startswith(_ZIP_MAGIC):
                raise CheckpointError(f"{path}: this is a zip archive (torch.save format), not a network pickle")
            if head[:1] != b"\x80":
                raise CheckpointError(f"{path}: not a pickle file (it starts with {head!r}; network pickles are "
                                      "binary pickles, which start with 0x80)")
            f.seek(0)
            return restricted_load(f)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the file: {exc.strerror or exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, AttributeError, IndexError,
            RuntimeError, OverflowError, struct.error, UnicodeDecodeError, MemoryError, AssertionError) as exc:
        # (torch's storage loader asserts on a damaged storage record)
        # a cut pickle ends in EOFError, or in UnpicklingError "pickle data was truncated" when the cut falls inside
        # an opcode's argument; both say the data ran out
        ran_out = isinstance(exc, EOFError) or "truncated" in str(exc)
        kind = "truncated" if ran_out else "corrupt"
        raise CheckpointError(f"{path}: {kind} network pickle ({type(exc).__name__}: {exc})") from None


def _from_tf_tuple(raw: tuple, where: Path, ignored: dict[str, dict[str, float]]) -> dict[str, Any]:
    tf_G, tf_D, tf_Gs = raw
    for key in ("G", "D", "G_ema"):
        ignored[key] = {}
    try:
        return dict(G=convert_tf_generator(tf_G, ignored["G"]), D=convert_tf_discriminator(tf_D, ignored["D"]),
                    G_ema=convert_tf_generator(tf_Gs, ignored["G_ema"]), training_set_kwargs=None, augment_pipe=None)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def _from_dict(raw: dict, where: Path) -> tuple[dict[str, Any], str]:
    if "G_ema" not in raw:
        raise CheckpointError(f"{where}: the pickle has no 'G_ema' network (keys: {sorted(map(str, raw))})")
    data: dict[str, Any] = {}
    generator = raw["G_ema"]
    try:
        flavor = detect_flavor(generator) if isinstance(generator, PersistentDescription) else "sg2ada"
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: G_ema: {exc}") from None
    for key, value in raw.items():
        if key in NETWORK_KEYS:
            if value is None and key != "G_ema":
                data[key] = None
                continue
            if not isinstance(value, PersistentDescription):
                raise CheckpointError(f"{where}: {key} is a {type(value).__name__}, not a network")
            if value.class_name != NETWORK_CLASS_NAMES[key]:
                raise CheckpointError(f"{where}: {key} is a {value.class_name}, expected a "
                                      f"{NETWORK_CLASS_NAMES[key]}")
            data[key] = build_from_description(value, f"{where}: {key}", flavor)
        else:
            data[key] = plain_data(value)
    for key in ("G", "D", "training_set_kwargs", "augment_pipe"):
        data.setdefault(key, None)
    return data, flavor


def _read_source(source: CheckpointSource) -> Any:
    """read_descriptions; a download that is no readable pickle (a server's error page, a transfer cut short) is
    removed from the cache, so that the next call fetches it again instead of failing the same way forever."""
    try:
        return read_descriptions(source.path)
    except CheckpointError as exc:
        unreadable_here = any(words in str(exc) for words in ("cannot read the file", "MemoryError"))
        if source.url is None or unreadable_here:  # this machine's trouble, not the file's: keep the download
            raise
        remove_cached(source.path)
        raise CheckpointError(f"{exc}. It was downloaded from {source.url}; the file was removed from the cache, "
                              "so the next call downloads it again") from None


def _check_known_record(source: CheckpointSource, data: dict[str, Any]) -> None:
    """A file loaded by a registry name must be the network the record describes (a file copied into the cache by
    hand, or a changed upload, is refused rather than studied under the wrong name)."""
    entry, G = source.entry, data.get("G_ema")
    if entry is None or not isinstance(G, nn.Module):
        return
    found = {"resolution": int(G.img_resolution), "c_dim": int(G.c_dim)}
    wrong = [f"{key} {value} (the record says {getattr(entry, key)})" for key, value in found.items()
             if value != getattr(entry, key)]
    if wrong:
        raise CheckpointError(f"{source.path}: this file is not the known checkpoint {entry.name!r}: its generator "
                              f"has {' and '.join(wrong)}; remove the file (or load it by its path)")


def open_network_pkl(
    spec: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> NetworkPickle:
    """Like load_network_pkl, but also returns the local path and the flavour ('sg2ada' | 'sg3' | 'tf')."""
    source = locate_checkpoint(spec, cache_dir=cache_dir, progress=progress)
    path = source.path
    raw = _read_source(source)
    ignored: dict[str, dict[str, float]] = {}
    if isinstance(raw, tuple) and len(raw) == 3 and all(isinstance(n, TFNetworkDescription) for n in raw):
        data, flavor = _from_tf_tuple(raw, path, ignored), "tf"
    elif isinstance(raw, dict):
        data, flavor = _from_dict(raw, path)
    elif isinstance(raw, int) and raw == _LEGACY_TORCH_MAGIC:
        raise CheckpointError(f"{path}: this is a file written by torch.save (legacy format), not a network pickle")
    else:
        raise CheckpointError(f"{path}: expected a dict with G / D / G_ema or a TF (G, D, Gs) tuple at the top "
                              f"level, got {type(raw).__name__}")
    _check_known_record(source, data)
    target = resolve_device(device)
    for key in NETWORK_KEYS:
        if isinstance(data.get(key), nn.Module):
            data[key] = data[key].to(target)
    logger.debug("loaded %s (%s)", path, flavor)
    for key, names in ignored.items():
        if names:
            logger.info("%s: %s: ignored TF variables with no meaning for inference: %s", path, key, names)
    return NetworkPickle(path=Path(path), flavor=flavor, data=data, ignored=ignored)


def load_network_pkl(
    spec: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Load a network pickle from a path, an http(s) URL or a known name (see `list-checkpoints`).

    Returns {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe'} (plus any other plain entries of the file):
    our own Generator / Discriminator modules with the official weights, or None where the file has none;
    `augment_pipe` stays a plain description. Raises CheckpointError naming the file for anything unreadable,
    unsafe or unsupported.
    """
    return open_network_pkl(spec, device, cache_dir=cache_dir, progress=progress).data
