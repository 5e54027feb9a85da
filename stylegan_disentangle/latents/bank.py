"""LatentBank: many samples of a generator on disk — w, seeds, classes and labels as `.npy` memmaps + `meta.json`.

Layout of a bank directory::

    meta.json          what made it (generator hash, checkpoint sha256, psi, cutoff, seed, count, labelers, version)
                       and the progress counter `done`
    w.npy              [N, w_dim] float32
    seeds.npy          [N] int64 per-sample seeds (`z = RandomState(seed).randn(z_dim)`, as official generate.py)
    classes.npy        [N] int64 class indices (conditional networks only)
    w_avg.npy          [w_dim] float32, the generator's w_avg (to rebuild truncated ws)
    labels/<name>.npy  [N, ...] float32, one file per label

`w` is the code the sample's ws are built from: with no truncation cutoff it is the truncated w itself (every ws
layer equals it); with a cutoff it is the untruncated mapping output and `bank.ws(rows)` applies the truncation.

Creation renders images only to run the labelers (images are never stored), one chunk at a time, so a million
samples need memory for one chunk only; within a chunk, images are rendered and labelled `render_chunk_size` codes
at a time (16 at 256x256, one at 1024x1024), so a large network's chunk is never held whole either. After each chunk
the arrays are flushed and `meta.json` is rewritten atomically with the new `done`; running `create` again on the
same directory continues from there and yields the same arrays as an uninterrupted run (every sample has its own
seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..errors import LatentError
from ..utils import atomic_write, resolve_device
from .sampling import (
    _check_truncation,
    _classes_for,
    bank_seeds,
    eval_mode,
    generator_device,
    one_hot,
    render_chunk_size,
    truncate,
    z_from_seeds,
)

__all__ = ["LatentBank", "generator_fingerprint"]

logger = logging.getLogger(__name__)

FORMAT = "stylegan_disentangle.LatentBank"
FORMAT_VERSION = 1
_LABEL_NAME_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
# how to go on from a bank that other arguments made, said by each refusal of one
_REBUILD_HINT = ("use another directory (another --outdir), remove it, or build it again (find-directions: "
                 "--overwrite-bank; train-model: --no-resume; Python: overwrite=True)")
# Fields that must match for `create` to resume an existing bank instead of refusing it.
_IDENTITY_KEYS = ("generator_fingerprint", "count", "seed", "truncation_psi", "truncation_cutoff", "class_idx",
                  "label_names", "labelers", "noise_mode", "render", "w_dim", "z_dim", "c_dim", "num_ws")


def generator_fingerprint(G: nn.Module) -> str:
    """sha256 over G's state dict (names, shapes, dtypes and values): identifies the weights without the pickle."""
    digest = hashlib.sha256()
    for name, tensor in G.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _labeler_names(labeler: Any) -> list[str]:
    names = getattr(labeler, "names", None)
    if names is None or isinstance(names, str) or not len(names):
        raise LatentError(f"labeler {labeler!r} must have a non-empty `names` list (see labels.Labeler)")
    return [str(n) for n in names]


def _labeler_record(labeler: Any) -> dict[str, Any]:
    """What meta.json keeps of a labeler: its class and names, and its `fingerprint` when it has one (a labeler
    with weights, e.g. the 3D decomposer): two decomposers give the same label names, not the same labels."""
    record: dict[str, Any] = {"class": type(labeler).__name__, "names": _labeler_names(labeler)}
    fingerprint = getattr(labeler, "fingerprint", None)
    if fingerprint is not None:
        record["fingerprint"] = str(fingerprint)
    return record


def _run_labeler(labeler: Any, images: torch.Tensor | None, ws: torch.Tensor, n: int) -> dict[str, np.ndarray]:
    """Call one labeler and check its output: a dict with exactly its names, each `[n, ...]` and finite."""
    names = _labeler_names(labeler)
    out = labeler(images, ws=ws) if getattr(labeler, "needs_ws", False) else labeler(images)
    if not isinstance(out, Mapping) or set(out) != set(names):
        got = sorted(out) if isinstance(out, Mapping) else type(out).__name__
        raise LatentError(f"labeler {type(labeler).__name__} must return a dict with keys {names}, got {got}")
    result = {}
    for name in names:
        value = out[name]
        value = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
        if value.ndim == 0 or value.shape[0] != n:
            raise LatentError(f"label {name!r} has shape {value.shape}; expected [{n}, ...]")
        if not np.isfinite(value).all():
            raise LatentError(f"label {name!r} from {type(labeler).__name__} contains NaN or inf")
        result[name] = value.astype(np.float32, copy=False)
    return result


def _label_chunk(G: nn.Module, ws: torch.Tensor, labelers: list, render: bool, noise_mode: str,
                 force_fp32: bool, advance: Callable[[int], Any] = lambda n: None) -> dict[str, np.ndarray]:
    """Every labeler's values for ws `[n, num_ws, w_dim]`. Images are rendered and labelled `render_chunk_size`
    codes at a time, so a chunk of a large network's images is never held whole (256 at 1024x1024 would not fit);
    `advance(k)` is called after each k codes (the progress bar moves per image at 1024x1024 on a CPU, ~2.5 s,
    instead of once per chunk, ~10 min)."""
    step = render_chunk_size(G, len(ws)) if render else len(ws)
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, len(ws), step):
        sub = ws[start : start + step]
        images = G.synthesis(sub, noise_mode=noise_mode, force_fp32=force_fp32) if render else None
        values: dict[str, np.ndarray] = {}
        for lab in labelers:
            values.update(_run_labeler(lab, images, sub, len(sub)))
        parts.append(values)
        advance(len(sub))
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}


def _write_meta(root: Path, meta: dict) -> None:
    with atomic_write(root / "meta.json", "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")


def _checked_label_names(labelers: list[Any]) -> list[str]:
    """Every labeler's label names in order; refused when two labelers share a name or a name is not file-safe
    (each label is a file of the bank)."""
    label_names: list[str] = []
    for lab in labelers:
        label_names.extend(_labeler_names(lab))
    dup = sorted({x for x in label_names if label_names.count(x) > 1})
    if dup:
        raise LatentError(f"two labelers produce the same label name(s) {dup}")
    bad = [x for x in label_names if not _LABEL_NAME_RE.match(x)]
    if bad:
        raise LatentError(f"label names {bad} are not file-safe (use letters, digits, '_', '-', '.', '+')")
    return label_names


def _start_bank_files(G: nn.Module, root: Path, meta: dict[str, Any]) -> None:
    """A new (or overwritten) bank's files: seeds, w_avg, empty w (and classes) arrays, then its meta.json (with
    `done` 0), the last, so that a half-initialised folder is no bank."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "meta.json").unlink(missing_ok=True)  # an overwritten bank is invalid until re-initialised
    for old in (root / "labels").glob("*.npy"):
        old.unlink()
    (root / "classes.npy").unlink(missing_ok=True)  # an unconditional network's bank has none
    n = meta["count"]
    np.save(root / "seeds.npy", bank_seeds(meta["seed"], 0, n))
    np.save(root / "w_avg.npy", G.mapping.w_avg.detach().cpu().numpy().astype(np.float32))
    np.lib.format.open_memmap(root / "w.npy", mode="w+", dtype=np.float32, shape=(n, G.w_dim)).flush()
    if G.c_dim > 0:
        np.lib.format.open_memmap(root / "classes.npy", mode="w+", dtype=np.int64, shape=(n,)).flush()
    _write_meta(root, meta)


class LatentBank:
    """Samples of a generator stored on disk (see the module docstring); use `create` to make one, `open` to read.

    Attributes
    ----------
    root : Path
    meta : dict  contents of meta.json
    w : np.memmap [N, w_dim] float32
    seeds : np.ndarray [N] int64
    classes : np.ndarray [N] int64 or None
    labels : dict[str, np.memmap [N, ...] float32]
    w_avg : np.ndarray [w_dim]
    """

    def __init__(self, root: str | os.PathLike, mmap_mode: str = "r") -> None:
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise LatentError(f"{self.root} is not a latent bank: {meta_path} does not exist")
        try:
            with open(meta_path, encoding="utf-8") as f:
                self.meta: dict = json.load(f)
        except (OSError, ValueError) as exc:
            raise LatentError(f"{meta_path} is not valid JSON: {exc}") from None
        if self.meta.get("format") != FORMAT:
            raise LatentError(f"{meta_path} is not a LatentBank metadata file")
        if self.meta.get("format_version", 0) > FORMAT_VERSION:
            raise LatentError(f"{meta_path} has format version {self.meta['format_version']}; "
                              f"this package reads up to {FORMAT_VERSION}")
        try:
            self.w = np.load(self.root / "w.npy", mmap_mode=mmap_mode)
            self.seeds = np.load(self.root / "seeds.npy", mmap_mode=mmap_mode)
            self.w_avg = np.load(self.root / "w_avg.npy")
            cls_path = self.root / "classes.npy"
            conditional = cls_path.is_file() and self.meta.get("c_dim", 1) != 0  # (a stale file of another bank)
            self.classes = np.load(cls_path, mmap_mode=mmap_mode) if conditional else None
            self.labels = {name: np.load(self.root / "labels" / f"{name}.npy", mmap_mode=mmap_mode)
                           for name in self.meta.get("label_shapes", {})}
        except (OSError, ValueError) as exc:
            raise LatentError(f"latent bank {self.root} is damaged: {exc}") from None
        n = self.meta.get("count")
        if not isinstance(n, int) or isinstance(n, bool) or not isinstance(self.meta.get("label_shapes", {}), dict):
            raise LatentError(f"latent bank {self.root} is damaged: {meta_path} has no valid 'count' / 'label_shapes'")
        classes = [] if self.classes is None else [("classes", self.classes)]
        for what, arr in [("w", self.w), ("seeds", self.seeds), *classes] + list(self.labels.items()):
            if arr.shape[0] != n:
                raise LatentError(f"latent bank {self.root}: {what} has {arr.shape[0]} rows, meta.json says {n}")
        for name, arr in self.labels.items():
            if list(arr.shape[1:]) != list(self.meta["label_shapes"][name]):
                raise LatentError(f"latent bank {self.root}: label {name!r} is stored as {list(arr.shape[1:])} per "
                                  f"sample, meta.json says {self.meta['label_shapes'][name]}")

    # ------------------------------------------------------------------ reading
    @classmethod
    def open(cls, root: str | os.PathLike, mmap_mode: str = "r", allow_incomplete: bool = False) -> LatentBank:
        """Open a bank for reading (arrays are memmaps); LatentError if it is unfinished unless allowed."""
        bank = cls(root, mmap_mode=mmap_mode)
        if not bank.complete and not allow_incomplete:
            raise LatentError(f"latent bank {bank.root} is incomplete ({bank.done}/{len(bank)} samples); "
                              "run LatentBank.create with the same arguments again to finish it")
        return bank

    def __len__(self) -> int:
        return int(self.meta["count"])

    @property
    def done(self) -> int:
        """Number of samples written so far."""
        return int(self.meta["done"])

    @property
    def complete(self) -> bool:
        return self.done == len(self)

    @property
    def label_names(self) -> list[str]:
        return list(self.labels)

    def label_matrix(self, names: Sequence[str] | None = None) -> np.ndarray:
        """Scalar labels stacked as `[N, L]` float32 (default: every label with one value per sample)."""
        if names is None:
            names = [k for k, v in self.labels.items() if v.ndim == 1]
        for name in names:
            if name not in self.labels:
                raise KeyError(f"bank {self.root} has no label {name!r}; labels: {self.label_names}")
        multi = [k for k in names if self.labels[k].ndim != 1]
        if multi:
            raise ValueError(f"labels {multi} are not scalar per sample; read them from bank.labels directly")
        if not names:
            return np.zeros((len(self), 0), dtype=np.float32)
        return np.stack([np.asarray(self.labels[k], dtype=np.float32) for k in names], axis=1)

    def ws(self, rows: Any, device: str | torch.device = "cpu") -> torch.Tensor:
        """ws `[M, num_ws, w_dim]` of the chosen rows (an index, slice, or index array), with the bank's truncation
        applied. Choose rows: ws of a whole 1M bank would take num_ws times the bank's memory."""
        w = torch.as_tensor(np.array(self.w[rows], dtype=np.float32), device=device)
        if w.ndim == 1:
            w = w[None]
        ws = w.unsqueeze(1).repeat([1, self.meta["num_ws"], 1])
        cutoff = self.meta["truncation_cutoff"]
        if cutoff is not None:
            ws = truncate(ws, torch.as_tensor(self.w_avg), self.meta["truncation_psi"], cutoff)
        return ws

    def __repr__(self) -> str:
        return (f"LatentBank({str(self.root)!r}, n={len(self)}, done={self.done}, w_dim={self.w.shape[1]}, "
                f"labels={self.label_names})")

    # ------------------------------------------------------------------ writing
    @classmethod
    def create(
        cls,
        G: nn.Module,
        outdir: str | os.PathLike,
        n: int,
        seed: int = 0,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        class_idx: int | None = None,
        labelers: Sequence[Any] = (),
        render: bool | None = None,
        batch_size: int = 256,
        device: str | torch.device | None = None,
        noise_mode: str = "const",
        force_fp32: bool | None = None,
        checkpoint_sha256: str | None = None,
        progress: bool | None = None,
        overwrite: bool = False,
    ) -> LatentBank:
        """Sample `n` codes of G into `outdir`, rendering images in the same pass when labelers need them.

        Parameters
        ----------
        labelers : labelers (see `labels.Labeler`): `labeler(img, ws=None) -> {name: [B, ...]}`, with `names`,
            `needs_ws` and optionally `needs_images` (default True) attributes.
        render : render images (default: only when a labeler needs them). Rendering uses `noise_mode` and
            `force_fp32` (default: True on CPU).
        device : where to run (default: G's device; otherwise G is moved there, in place).
        batch_size : samples per chunk (the resume granularity).
        progress : tqdm bar; None = only on a terminal.
        overwrite : discard an existing bank in `outdir` made with other arguments (default: LatentError).

        Re-running with the same arguments resumes an interrupted bank (or just opens a finished one).
        """
        n = int(n)
        if n < 1:
            raise LatentError(f"a bank needs at least one sample, got n={n}")
        if n > 2**32:
            raise LatentError(f"a bank holds at most 2**32 samples (one 32-bit seed each), got n={n}")
        if int(batch_size) < 1:
            raise LatentError(f"batch_size must be at least 1, got {batch_size}")
        batch_size = int(batch_size)
        _check_truncation(G, truncation_psi, truncation_cutoff)
        if class_idx is not None and not isinstance(class_idx, (int, np.integer)):
            raise LatentError(f"class_idx must be an int or None for a bank, got {class_idx!r}")
        _classes_for(G, 1, np.zeros(1, np.int64), class_idx)  # validates class_idx against c_dim
        labelers = list(labelers)
        label_names = _checked_label_names(labelers)
        needs_images = any(getattr(lab, "needs_images", True) for lab in labelers)
        if render is None:
            render = needs_images
        if needs_images and not render:
            raise LatentError("render=False, but a labeler needs images; pass render=True or drop that labeler")
        device = generator_device(G) if device is None else resolve_device(device)
        if force_fp32 is None:
            force_fp32 = device.type == "cpu"

        root = Path(outdir)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "generator_fingerprint": generator_fingerprint(G),
            "checkpoint_sha256": checkpoint_sha256,
            "count": n,
            "seed": int(seed),
            "truncation_psi": float(truncation_psi),
            "truncation_cutoff": None if truncation_cutoff is None else int(truncation_cutoff),
            "class_idx": None if class_idx is None else int(class_idx),
            "w_truncated": truncation_cutoff is None,
            "labelers": [_labeler_record(lab) for lab in labelers],
            "label_names": label_names,
            "label_shapes": {},
            "render": bool(render),
            "noise_mode": noise_mode,
            "z_dim": int(G.z_dim),
            "c_dim": int(G.c_dim),
            "w_dim": int(G.w_dim),
            "num_ws": int(G.num_ws),
            "img_resolution": int(G.img_resolution),
            "done": 0,
        }
        existing = None if overwrite else cls._existing_meta(root)
        if existing is not None:
            diff = [k for k in _IDENTITY_KEYS if existing.get(k) != meta[k]]
            if diff:
                detail = ", ".join(f"{k}: {existing.get(k)!r} there vs {meta[k]!r} now" for k in diff)
                raise LatentError(f"{root} holds a latent bank made with other arguments ({detail}); {_REBUILD_HINT}")
            meta = existing
            if existing["done"] == n:
                logger.info("latent bank %s is complete (%d samples)", root, n)
                return cls(root)
            logger.info("resuming latent bank %s at %d/%d", root, existing["done"], n)
        else:
            _start_bank_files(G, root, meta)
        cls._fill(G, root, meta, labelers, device, int(batch_size), bool(force_fp32), progress)
        return cls(root)

    @staticmethod
    def _existing_meta(root: Path) -> dict | None:
        path = root / "meta.json"
        if not path.is_file():
            return None
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError):
            raise LatentError(
                f"{path} exists but is not valid JSON; remove the directory or pass overwrite=True") from None
        if meta.get("format") != FORMAT:
            raise LatentError(f"{path} is not a LatentBank metadata file; use another directory")
        return meta

    @staticmethod
    def _fill(G: nn.Module, root: Path, meta: dict, labelers: list, device: torch.device, batch_size: int,
              force_fp32: bool, progress: bool | None) -> None:
        n, done = meta["count"], meta["done"]
        seeds = np.load(root / "seeds.npy", mmap_mode="r")
        w_mm = np.load(root / "w.npy", mmap_mode="r+")
        cls_mm = np.load(root / "classes.npy", mmap_mode="r+") if G.c_dim > 0 else None
        label_mm: dict[str, np.memmap] = {}
        (root / "labels").mkdir(exist_ok=True)
        for name in meta["label_shapes"]:
            label_mm[name] = np.load(root / "labels" / f"{name}.npy", mmap_mode="r+")
        psi, cutoff = meta["truncation_psi"], meta["truncation_cutoff"]
        if generator_device(G) != device:
            G.to(device)
        w_avg = G.mapping.w_avg.detach()
        disable = (not progress) if progress is not None else None
        with eval_mode(G, *[lab for lab in labelers if isinstance(lab, nn.Module)]), \
                tqdm(total=n, initial=done, desc="latent bank", unit="sample", disable=disable) as bar:
            for start in range(done, n, batch_size):
                stop = min(start + batch_size, n)
                z, drawn = z_from_seeds(seeds[start:stop], G.z_dim, G.c_dim)
                classes = _classes_for(G, stop - start, drawn, meta["class_idx"])
                c = one_hot(classes if classes is not None else np.zeros(stop - start, np.int64), G.c_dim)
                raw = G.mapping(torch.from_numpy(z).to(device), c.to(device))
                ws = truncate(raw, w_avg, psi, cutoff)
                w_store = ws[:, 0] if cutoff is None else raw[:, 0]
                values = _label_chunk(G, ws, labelers, meta["render"], meta["noise_mode"], force_fp32, bar.update)
                for name, value in values.items():
                    if name in label_mm and value.shape[1:] != label_mm[name].shape[1:]:
                        raise LatentError(f"{root}: label {name!r} has per-sample shape {list(value.shape[1:])} but "
                                          f"the bank stores {list(label_mm[name].shape[1:])} (a labeler of another "
                                          f"resolution?); {_REBUILD_HINT}")
                    if name not in label_mm:
                        label_mm[name] = np.lib.format.open_memmap(
                            root / "labels" / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, *value.shape[1:]))
                        meta["label_shapes"][name] = list(value.shape[1:])
                    label_mm[name][start:stop] = value
                w_mm[start:stop] = w_store.cpu().numpy()
                if cls_mm is not None:
                    cls_mm[start:stop] = classes
                for mm in [w_mm, cls_mm, *label_mm.values()]:
                    if mm is not None:
                        mm.flush()
                meta["done"] = stop
                _write_meta(root, meta)
