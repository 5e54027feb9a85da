"""An on-disk bank of a frozen generator's images for decomposer training, built once and read many times.

Drawing a fresh batch from the generator every step is the official way to train on a GAN's samples, but on a CPU
the generator can cost as much as the decomposer's own step (at 32x32, the synthetic generator makes a batch of 32
in 0.07 s, the jitter stabilizer a second one; the decomposer's step is 0.25-0.5 s), and for a 1024-px network it
dominates. The bank generates `size` images once, stores them at the decomposer's resolution as uint8 (the form
Unsup3D's own image folders have), each with its *jittered twin* (the same w pulled toward the mean by psi in
[0.85, 1] and rendered with random noise: the input of the jitter stabilizer) and its w (the latent light teacher
reads it), and training then reads batches.

Files in the bank folder: `images.npy` and `jitter.npy` (uint8 [N, 3, R, R], memory-mapped on reading), `ws.npy`
(float32 [N, w_dim]; banks built before it existed lack it, and work without it where no w is needed) and
`bank.json` (how it was made). Building is chunked, seeded per chunk (the same bank whatever the interruptions),
resumable (the arrays are filled in `*.partial.npy` files whose progress `bank.json` records after every chunk) and
atomic (the final names appear only when every chunk is written). Opening an existing bank regenerates its first
images and refuses a bank made by another generator or with other settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import StyleGANDisentangleError
from ...latents.sampling import one_hot, synthesize_in_chunks
from ...utils import atomic_write
from ..base import crop_images, resize_images

__all__ = ["ImageBank"]

CHUNK = 256
META = "bank.json"
ARRAYS = ("images", "jitter")
W_ARRAY = "ws"  # each row's w, float32
CHECK_IMAGES = 4  # images regenerated on opening to recognise the generator
JITTER_PSI_MIN = 0.85


def random_classes(c_dim: int, n: int, gen: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """One-hot classes [n, c_dim] drawn uniformly with `gen` ([n, 0] and no draw for an unconditional network)."""
    if c_dim == 0:
        return torch.zeros([n, 0], device=device)
    return one_hot(torch.randint(0, c_dim, [n], generator=gen), c_dim).to(device)


@contextmanager
def seeded_torch_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global generator (the synthesis draws its noise from it) inside the block only: the caller's
    own random stream is restored afterwards."""
    device = torch.device(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else [], device_type=device.type):
        torch.manual_seed(int(seed))
        yield


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


def _to_float(arr: np.ndarray, device: torch.device | str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device=device, dtype=torch.float32) / 127.5 - 1


class ImageBank:
    """`size` images of a generator at `resolution` with their jittered twins (see the module docstring).

    Use `ImageBank.open_or_build(G, folder, size, resolution, seed=...)`, then `batch(gen, n)` for training.
    """

    def __init__(self, folder: Path, meta: dict) -> None:
        self.folder, self.meta = Path(folder), meta
        size, res = meta["settings"]["size"], meta["settings"]["resolution"]
        self.images, self.jitter = (self._open(self.folder / f"{name}.npy", (size, 3, res, res)) for name in ARRAYS)
        w_path = self.folder / f"{W_ARRAY}.npy"
        self.ws = self._open(w_path, (size, int(meta[W_ARRAY])), np.float32) if meta.get(W_ARRAY) else None

    @staticmethod
    def _open(path: Path, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
        try:
            arr = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise StyleGANDisentangleError(f"{path}: unreadable image-bank array ({exc}); delete the bank folder "
                                           "to rebuild it") from exc
        if arr.shape != shape or arr.dtype != dtype:
            raise StyleGANDisentangleError(f"{path}: expected {np.dtype(dtype).name} {list(shape)}, found {arr.dtype} "
                                           f"{list(arr.shape)}; delete the bank folder to rebuild it")
        return arr

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def batch(self, gen: torch.Generator, n: int, device: torch.device | str = "cpu"
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """n bank rows drawn with `gen` (with replacement): (images [n, 3, R, R], jittered twins) in [-1, 1], and
        their w [n, w_dim] (None from a bank built before banks kept it)."""
        idx = np.sort(torch.randint(0, len(self), [n], generator=gen).numpy())
        w = None if self.ws is None else torch.from_numpy(np.ascontiguousarray(self.ws[idx])).to(device)
        return _to_float(self.images[idx], device), _to_float(self.jitter[idx], device), w

    # ------------------------------------------------------------------ building
    @staticmethod
    @torch.no_grad()
    def _chunk(G: nn.Module, seed: int, chunk: int, n: int, resolution: int, truncation_psi: float,
               device: torch.device | str, crop: tuple[float, ...] | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Chunk `chunk` of the bank (its first n rows): images and jittered twins, float, their `crop` box (the
        decomposer's input crop; None: whole) at `resolution`, and their w [n, w_dim]."""
        gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(chunk))
        z = torch.randn([CHUNK, G.z_dim], generator=gen)[:n].to(device)
        psi = JITTER_PSI_MIN + (1 - JITTER_PSI_MIN) * torch.rand([CHUNK, 1, 1], generator=gen)[:n].to(device)
        noise_seed = int(torch.randint(0, 2**31 - 1, [1], generator=gen))
        classes = random_classes(G.c_dim, CHUNK, gen, device)[:n]  # (no draw for an unconditional network)
        ws = G.mapping(z, classes, truncation_psi=truncation_psi)
        def to_input(images: torch.Tensor) -> torch.Tensor:  # per render chunk: full-size images never all held
            return resize_images(crop_images(images.float().clamp(-1, 1), crop), resolution)

        img = synthesize_in_chunks(G, ws, postprocess=to_input)
        with seeded_torch_rng(noise_seed, ws.device):  # the synthesis' own noise draw for the twins
            twin = synthesize_in_chunks(G, G.mapping.w_avg + psi * (ws - G.mapping.w_avg), noise_mode="random",
                                        postprocess=to_input)
        return img, twin, ws[:, 0].float()

    @classmethod
    def open_or_build(cls, G: nn.Module, folder: str | os.PathLike, size: int, resolution: int, *, seed: int = 0,
                      truncation_psi: float = 1.0, device: torch.device | str = "cpu",
                      progress: bool | None = None, crop: tuple[float, ...] | None = None) -> ImageBank:
        """Open the bank in `folder` (checking it was made by `G` with these settings) or build / finish it. `crop`:
        the part of each image kept (the decomposer's `input_crop`), before the resize to `resolution`."""
        if size < 1 or resolution < 4:
            raise StyleGANDisentangleError(f"an image bank needs size >= 1 and resolution >= 4, got {size}, "
                                           f"{resolution}")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        settings = {"size": int(size), "resolution": int(resolution), "seed": int(seed),
                    "truncation_psi": float(truncation_psi), "chunk": CHUNK}
        if crop is not None:  # only when set: banks made before crops existed keep their settings
            settings["crop"] = [float(v) for v in crop]
        meta_path = folder / META
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        if meta and meta.get("settings") != settings:
            raise StyleGANDisentangleError(f"{meta_path}: this image bank was made with other settings "
                                           f"({meta.get('settings')}, asked for {settings}); use another folder")
        check = cls._chunk(G, seed, 0, min(CHECK_IMAGES, size), resolution, truncation_psi, device, crop)[0]
        if meta.get("complete"):
            bank = cls(folder, meta)
            cls._check_generator(bank.images[: check.shape[0]], check, meta_path)
            return bank
        return cls._build(G, folder, settings, meta, check, device, progress)

    @staticmethod
    def _check_generator(stored: np.ndarray, check: torch.Tensor, meta_path: Path) -> None:
        # a stored pixel is the generator's value rounded to 1/127.5; allow that and float noise across runs
        if np.abs(stored.astype(np.int16) - _to_uint8(check).astype(np.int16)).max() > 1:
            raise StyleGANDisentangleError(f"{meta_path}: this image bank was made by another generator (its first "
                                           "images differ from this generator's); use another folder")

    @classmethod
    def _build(cls, G: nn.Module, folder: Path, settings: dict, meta: dict, check: torch.Tensor,
               device: torch.device | str, progress: bool | None) -> ImageBank:
        size, res = settings["size"], settings["resolution"]
        shapes = {name: ((size, 3, res, res), np.uint8) for name in ARRAYS}
        shapes[W_ARRAY] = ((size, int(G.w_dim)), np.float32)
        partial = {name: folder / f"{name}.partial.npy" for name in shapes}
        filled = int(meta.get("filled", 0))
        if filled and not all(p.is_file() for p in partial.values()):
            filled = 0  # the progress record outlived its arrays (or predates the w array): start over
        arrays = {name: np.lib.format.open_memmap(partial[name], mode="r+" if filled else "w+", dtype=dtype,
                                                  shape=shape) for name, (shape, dtype) in shapes.items()}
        if filled:
            cls._check_generator(arrays["images"][: check.shape[0]], check, folder / META)
        chunks = range(filled // CHUNK, -(-size // CHUNK))
        for chunk in tqdm(chunks, desc="image bank", initial=filled // CHUNK, total=-(-size // CHUNK),
                          disable=None if progress is None else not progress):
            lo, hi = chunk * CHUNK, min(size, (chunk + 1) * CHUNK)
            img, twin, w = cls._chunk(G, settings["seed"], chunk, hi - lo, res, settings["truncation_psi"], device,
                                      settings.get("crop"))
            arrays["images"][lo:hi], arrays["jitter"][lo:hi] = _to_uint8(img), _to_uint8(twin)
            arrays[W_ARRAY][lo:hi] = w.cpu().numpy()
            for arr in arrays.values():
                arr.flush()
            with atomic_write(folder / META, "w") as f:
                json.dump({"settings": settings, "filled": hi, "complete": False}, f, indent=2)
        del arrays
        for name, p in partial.items():
            os.replace(p, folder / f"{name}.npy")
        meta = {"settings": settings, "filled": size, "complete": True, W_ARRAY: int(G.w_dim)}  # w's width
        with atomic_write(folder / META, "w") as f:
            json.dump(meta, f, indent=2)
        return cls(folder, meta)
