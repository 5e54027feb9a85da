"""Model files: save / load W-space models as one small torch file tied to the generator they were trained on.

A file holds a plain dict (read back with ``torch.load(weights_only=True)``, so nothing in it is executed)::

    {"format": "stylegan_disentangle.wspace_model", "format_version": 1, "kind": "appearance-structure",
     "config": {constructor arguments}, "state_dict": {...}, "generator_sha256": "...", "version": "0.1.0",
     "info": {free JSON metadata}}

`generator_sha256` is the sha256 of the generator's state dict (`latents.generator_fingerprint`, the same identity a
LatentBank records), so a model trained on one checkpoint is refused when used with another unless the caller says
``allow_foreign=True``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..errors import CheckpointError
from ..utils import atomic_write_path

__all__ = ["MODEL_FORMAT", "ModelFileError", "load_model", "model_kinds", "model_summary", "read_model_file",
           "register_model_kind", "save_model"]

MODEL_FORMAT = "stylegan_disentangle.wspace_model"
FORMAT_VERSION = 1
_KINDS: dict[str, type] = {}


class ModelFileError(CheckpointError):
    """A model file is missing, truncated, of another kind, or made for another generator."""


class ModelKindError(ModelFileError):
    """A model file holds a model of another kind than asked for (`found`, `expected`: the two kinds)."""

    def __init__(self, message: str, found: str, expected: str) -> None:
        super().__init__(message)
        self.found, self.expected = found, expected


def register_model_kind(cls: type) -> type:
    """Class decorator: make `cls` loadable by its `kind` name (used by `load_model` and `train-model KIND`)."""
    _KINDS[cls.kind] = cls
    return cls


def model_kinds() -> dict[str, type]:
    """The registered W-space model kinds: name -> class."""
    return dict(_KINDS)


def save_model(model: torch.nn.Module, path: str | os.PathLike, info: dict | None = None) -> Path:
    """Write `model` (a WSpaceModel) to `path` atomically; returns the path."""
    record = {
        "format": MODEL_FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "config": dict(model.config),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "generator_sha256": model.generator_sha256,
        "version": __version__,
        "info": dict(info or {}),
    }
    path = Path(path)
    with atomic_write_path(path) as tmp:
        torch.save(record, tmp)
    return path


def read_model_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a model file's record (no model is built). Raises ModelFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with warnings.catch_warnings():  # torch's note on a plain pickle's protocol, before it refuses the file
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, EOFError, UnpicklingError, ... for bad files
        raise ModelFileError(f"{path}: not a readable model file (truncated or corrupt?): "
                             f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if not isinstance(record, dict) or record.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a stylegan_disentangle model file (format "
                             f"{record.get('format') if isinstance(record, dict) else type(record).__name__!r})")
    if record.get("format_version", 0) > FORMAT_VERSION:
        raise ModelFileError(f"{path}: model file format {record['format_version']} is newer than this version "
                             f"reads ({FORMAT_VERSION}); upgrade stylegan_disentangle")
    missing = [k for k in ("kind", "config", "state_dict") if k not in record]
    if missing:
        raise ModelFileError(f"{path}: model file lacks {missing}")
    return record


def model_summary(path: str | os.PathLike) -> dict[str, Any]:
    """What `stylegan-disentangle info` prints for a model file: its kind, constructor arguments, parameter count, the
    generator it was trained for, the version that wrote it and its free metadata (e.g. the training step)."""
    record = read_model_file(path)
    params = sum(int(v.numel()) for v in record["state_dict"].values() if torch.is_tensor(v))
    return {"file": str(path), "kind": record["kind"], "generator_sha256": record.get("generator_sha256"),
            "state_dict_values": params, "version": record.get("version"), **{f"config.{k}": v for k, v in
                                                                   record["config"].items() if k != "generator_sha256"},
            **{f"info.{k}": v for k, v in dict(record.get("info") or {}).items()}}


def _generator_sha(G: torch.nn.Module | None, generator_sha256: str | None) -> str | None:
    if G is not None:
        from ..latents import generator_fingerprint

        return generator_fingerprint(G)
    return generator_sha256


def load_model(path: str | os.PathLike, G: torch.nn.Module | None = None, *, generator_sha256: str | None = None,
               kind: str | None = None, allow_foreign: bool = False,
               device: str | torch.device = "cpu") -> torch.nn.Module:
    """Build the model saved at `path` (in eval mode, on `device`).

    With `G` (or its `generator_sha256`), a file made for another generator raises ModelFileError unless
    `allow_foreign`; with `kind`, a file of another kind is refused.
    """
    path = Path(path)
    record = read_model_file(path)
    if kind is not None and record["kind"] != kind:
        raise ModelKindError(f"{path}: holds a {record['kind']!r} model, expected {kind!r}", record["kind"], kind)
    cls = _KINDS.get(record["kind"])
    if cls is None:
        raise ModelFileError(f"{path}: unknown model kind {record['kind']!r}; known kinds: {sorted(_KINDS)}")
    expected = _generator_sha(G, generator_sha256)
    saved = record.get("generator_sha256")
    if expected is not None and saved != expected and not allow_foreign:
        raise ModelFileError(f"{path}: this model was trained on another generator (sha256 {str(saved)[:12]}..., "
                             f"this one is {expected[:12]}...); pass allow_foreign=True (--allow-foreign) to use "
                             "it anyway")
    try:
        model = cls(**record["config"])
        model.load_state_dict(record["state_dict"])
    except (TypeError, RuntimeError, ValueError) as exc:
        raise ModelFileError(f"{path}: its {record['kind']!r} weights do not fit this version's model: "
                             f"{str(exc).splitlines()[0]}") from None
    return model.to(device).eval()
