"""Sampling latent codes: per-sample seeds -> z (+ class c) -> w / ws, with truncation.

Every sample carries its own 32-bit seed, and `z = np.random.RandomState(seed).randn(z_dim)` is exactly what the
official `generate.py --seeds` draws, so any sample can be regenerated on its own and no result depends on how the
samples were chunked. For conditional networks a random class is drawn from the same stream right after z
(`randint(c_dim)`), unless classes are given.

Truncation (both official repos): `ws[:, :cutoff] = w_avg + psi * (ws[:, :cutoff] - w_avg)` (all layers when
`cutoff` is None), computed with `torch.lerp` as the mapping network does, so `psi=0` gives `w_avg` exactly.

A bank of `n` samples made with seed `s` uses the per-sample seeds `bank_seeds(s, 0, n)`: consecutive integers
(mod 2**32) from a start derived from `s`, so two banks made with different seeds practically never overlap.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import LatentError
from ..utils import resolve_device

__all__ = [
    "Latents",
    "as_w",
    "bank_seeds",
    "broadcast_w",
    "check_ws",
    "eval_mode",
    "generator_device",
    "map_z",
    "one_hot",
    "sample_latents",
    "truncate",
    "z_from_seeds",
]

_SEED_MOD = 2**32
_FINITE_CHECK_ROWS = 65536  # rows checked for NaN / inf at a time (a 1M x 512 memmap is never loaded whole)


def bank_seeds(seed: int, start: int, stop: int) -> np.ndarray:
    """Per-sample seeds `[stop - start]` (int64) of rows `start..stop-1` of a bank made with `seed`."""
    if start < 0 or stop < start:
        raise ValueError(f"need 0 <= start <= stop, got start={start}, stop={stop}")
    if stop > _SEED_MOD:
        raise ValueError(f"a bank holds at most 2**32 samples, asked for row {stop - 1}")
    first = int(np.random.SeedSequence(int(seed)).generate_state(1, np.uint32)[0])
    return (first + np.arange(start, stop, dtype=np.int64)) % _SEED_MOD


def z_from_seeds(seeds: Sequence[int] | np.ndarray, z_dim: int, c_dim: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """z `[N, z_dim]` (float32) and, when `c_dim > 0`, random class indices `[N]` (int64), one stream per seed.

    `z[i]` equals the official `np.random.RandomState(seeds[i]).randn(1, z_dim)` (cast to float32, as the mapping
    network does); the class is the next draw from that stream, `randint(c_dim)`.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if seeds.size and (seeds.min() < 0 or seeds.max() >= _SEED_MOD):
        raise ValueError(f"seeds must be in [0, 2**32), got range [{seeds.min()}, {seeds.max()}]")
    z = np.empty((seeds.size, z_dim), dtype=np.float32)
    classes = np.empty(seeds.size, dtype=np.int64) if c_dim > 0 else None
    rs = np.random.RandomState(0)
    for i, s in enumerate(seeds.tolist()):
        rs.seed(s)  # reseeding one RandomState is 10x faster than building one per sample; same stream
        z[i] = rs.randn(z_dim)
        if classes is not None:
            classes[i] = rs.randint(c_dim)
    return z, classes


def one_hot(classes: np.ndarray | torch.Tensor, c_dim: int) -> torch.Tensor:
    """Class indices `[N]` -> one-hot `[N, c_dim]` float32 (`[N, 0]` for unconditional networks)."""
    classes = torch.as_tensor(np.asarray(classes), dtype=torch.int64).reshape(-1)
    if c_dim == 0:
        return torch.zeros([classes.numel(), 0])
    if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= c_dim):
        raise LatentError(f"class indices must be in [0, {c_dim}), got range [{int(classes.min())}, "
                          f"{int(classes.max())}]")
    return torch.nn.functional.one_hot(classes, c_dim).to(torch.float32)


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float, cutoff: int | None = None) -> torch.Tensor:
    """Truncation trick on ws `[N, num_ws, w_dim]`: lerp layers `[:cutoff]` (all when None) toward `w_avg` `[w_dim]`."""
    if psi == 1:
        return ws
    ws = ws.clone()
    w_avg = w_avg.to(ws.device, ws.dtype)
    if cutoff is None:
        return w_avg.lerp(ws, psi)
    ws[:, :cutoff] = w_avg.lerp(ws[:, :cutoff], psi)
    return ws


def broadcast_w(w: torch.Tensor, num_ws: int) -> torch.Tensor:
    """w `[N, w_dim]` -> ws `[N, num_ws, w_dim]` (every layer gets the same w)."""
    return w.unsqueeze(1).repeat([1, num_ws, 1])


def as_w(w: Any, what: str = "w", allow_1d: bool = False) -> np.ndarray:
    """Return latent codes `[N, w_dim]` as a float numpy array without copying when possible.

    Accepts numpy arrays (including memmaps) and torch tensors. Float32 stays float32 (1M x 512 is 2 GB);
    other dtypes become float64. Raises LatentError on a wrong rank or NaN / inf values (checked in chunks).
    """
    if hasattr(w, "detach") and hasattr(w, "cpu"):
        w = w.detach().cpu().numpy()
    source = getattr(w, "filename", None)  # a memory-mapped file (a bank's w.npy): say which one
    if source is not None:
        what = f"{what} ({source})"
    if hasattr(w, "tocsr") or hasattr(w, "todense"):  # scipy.sparse: W codes are dense
        raise LatentError(f"{what} is a sparse matrix; pass a dense array (w.toarray())")
    w = np.asarray(w)
    if w.dtype.kind == "c":  # numpy would drop the imaginary part with only a warning
        raise LatentError(f"{what} must hold real numbers, got dtype {w.dtype}")
    if w.dtype.kind not in "fiub":
        try:
            w = w.astype(np.float64)
        except (TypeError, ValueError):
            raise LatentError(f"{what} must hold real numbers, got dtype {w.dtype}") from None
    if allow_1d and w.ndim == 1:
        w = w[None]
    if w.ndim != 2:
        hint = " (for ws [N, num_ws, w_dim] pass one layer, e.g. ws[:, 0])" if w.ndim == 3 else ""
        raise LatentError(f"{what} must be [N, w_dim], got shape {w.shape}{hint}")
    if w.shape[0] == 0 or w.shape[1] == 0:
        raise LatentError(f"{what} is empty: shape {w.shape}")
    if w.dtype not in (np.float32, np.float64):
        w = w.astype(np.float64)
    for start in range(0, w.shape[0], _FINITE_CHECK_ROWS):
        finite = np.isfinite(w[start : start + _FINITE_CHECK_ROWS]).all(axis=1)
        if not finite.all():
            raise LatentError(f"{what} contains NaN or inf (first at row {start + int(np.argmin(finite))})")
    return w


def check_ws(ws: Any, num_ws: int | None, w_dim: int, what: str = "ws") -> torch.Tensor:
    """Return ws `[N, num_ws, w_dim]` as a float32 tensor; a w `[N, w_dim]` is broadcast to every layer.

    Raises LatentError on a wrong shape or NaN / inf values.
    """
    if not isinstance(ws, torch.Tensor):
        ws = torch.as_tensor(np.asarray(ws))
    ws = ws.to(torch.float32) if ws.dtype != torch.float32 else ws
    if ws.ndim == 2 and num_ws is not None:
        ws = broadcast_w(ws, num_ws)
    if ws.ndim != 3 or ws.shape[-1] != w_dim or (num_ws is not None and ws.shape[1] != num_ws):
        raise LatentError(f"{what} must be [N, {num_ws}, {w_dim}] (or w [N, {w_dim}]), got shape {tuple(ws.shape)}")
    if not torch.isfinite(ws).all():
        bad = torch.nonzero(~torch.isfinite(ws).reshape(ws.shape[0], -1).all(dim=1)).flatten()[:5].tolist()
        raise LatentError(f"{what} contains NaN or inf (samples {bad}); check the codes or the direction steps")
    return ws


@contextlib.contextmanager
def eval_mode(*modules: nn.Module | None) -> Iterator[None]:
    """Put modules in eval mode (no w_avg updates, no dropout) and run without autograd; restore afterwards."""
    previous = [(m, m.training) for m in modules if isinstance(m, nn.Module)]
    for m, _ in previous:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, was_training in previous:
            m.train(was_training)


def generator_device(G: nn.Module) -> torch.device:
    """The device holding G's parameters (CPU for a parameterless module)."""
    for p in G.parameters():
        return p.device
    for b in G.buffers():
        return b.device
    return torch.device("cpu")


RENDER_PIXEL_BUDGET = 1 << 20
"""Output pixels one synthesis call may hold where only the images are wanted: 16 images at 256x256, one at
1024x1024, every chunk of a 32x32 network's. 256 FFHQ-1024 images at once would need about 34 GB for a single
32-channel activation."""


def render_chunk_size(G: nn.Module, requested: int, budget: int | None = None) -> int:
    """How many codes to synthesize in one call: `requested`, capped at `budget` output pixels (default
    RENDER_PIXEL_BUDGET; not capped for a generator-like object that does not state its `img_resolution`)."""
    resolution = getattr(G, "img_resolution", None)
    budget = RENDER_PIXEL_BUDGET if budget is None else int(budget)
    cap = budget // int(resolution) ** 2 if resolution else int(requested)
    return max(1, min(int(requested), cap))


def synthesize_in_chunks(
    G: nn.Module,
    ws: torch.Tensor,
    *,
    noise_mode: str = "const",
    force_fp32: bool = False,
    chunk: int | None = None,
    postprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """`G.synthesis(ws)` for ws `[N, num_ws, w_dim]`, at most `render_chunk_size(G, chunk or N)` codes per call,
    each chunk's images passed through `postprocess` (a crop, a resize, `.cpu()`, ...) before they are joined, so a
    large network's full-size images are never all held at once. The caller sets the mode and autograd."""
    step = render_chunk_size(G, chunk or len(ws))
    parts = []
    for start in range(0, max(len(ws), 1), step):  # (no codes: one empty call, for the images' shape)
        images = G.synthesis(ws[start : start + step], noise_mode=noise_mode, force_fp32=force_fp32)
        parts.append(postprocess(images) if postprocess is not None else images)
    return torch.cat(parts)


def map_z(
    G: nn.Module, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0, truncation_cutoff: int | None = None
) -> torch.Tensor:
    """Run `G.mapping` in eval mode without autograd: z `[N, z_dim]`, c `[N, c_dim]` -> ws `[N, num_ws, w_dim]`."""
    with eval_mode(G):
        return G.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)


@dataclass
class Latents:
    """Sampled codes (all on one device): seeds `[N]`, z `[N, z_dim]`, c `[N, c_dim]`, classes `[N]` or None,
    `w_raw` `[N, w_dim]` (mapping output before truncation) and ws `[N, num_ws, w_dim]` (truncated)."""

    seeds: np.ndarray
    z: torch.Tensor
    c: torch.Tensor
    classes: np.ndarray | None
    w_raw: torch.Tensor
    ws: torch.Tensor

    @property
    def w(self) -> torch.Tensor:
        """w `[N, w_dim]`: the first ws layer (equal to every layer unless a truncation cutoff was used)."""
        return self.ws[:, 0]

    def __len__(self) -> int:
        return int(self.seeds.shape[0])


def _check_truncation(G: nn.Module, psi: float, cutoff: int | None) -> None:
    if not np.isfinite(psi):
        raise LatentError(f"truncation_psi must be finite, got {psi}")
    if cutoff is not None and not 0 <= int(cutoff) <= G.num_ws:
        raise LatentError(f"truncation_cutoff must be in [0, num_ws={G.num_ws}] or None, got {cutoff}")


def _classes_for(G: nn.Module, n: int, drawn: np.ndarray | None, class_idx: Any) -> np.ndarray | None:
    if G.c_dim == 0:
        if class_idx is not None:
            raise LatentError("class_idx was given but the network is unconditional (c_dim=0)")
        return None
    if class_idx is None:
        return drawn
    classes = np.broadcast_to(np.asarray(class_idx, dtype=np.int64), (n,)).copy()
    if classes.min(initial=0) < 0 or classes.max(initial=0) >= G.c_dim:
        raise LatentError(f"class_idx must be in [0, {G.c_dim}), got {class_idx!r}")
    return classes


def sample_latents(
    G: nn.Module,
    seeds: Sequence[int] | np.ndarray,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    class_idx: int | Sequence[int] | np.ndarray | None = None,
    batch_size: int = 1024,
    device: str | torch.device | None = None,
    progress: bool | None = False,
) -> Latents:
    """Map the per-sample `seeds` `[N]` through `G.mapping` in chunks of `batch_size` on `device` (default: G's).

    `class_idx`: None = a random class per sample (conditional nets), an int = that class for all, or `[N]` indices.
    Results are independent of `batch_size` up to float rounding of the batched matrix products.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    if int(batch_size) < 1:
        raise LatentError(f"batch_size must be at least 1, got {batch_size}")
    batch_size = int(batch_size)
    _check_truncation(G, truncation_psi, truncation_cutoff)
    device = generator_device(G) if device is None else resolve_device(device)
    z_np, drawn = z_from_seeds(seeds, G.z_dim, G.c_dim)
    classes = _classes_for(G, seeds.size, drawn, class_idx)
    c_all = one_hot(classes if classes is not None else np.zeros(seeds.size, np.int64), G.c_dim)
    w_avg = G.mapping.w_avg.detach().to(device) if truncation_psi != 1 else None
    raws, outs = [], []
    starts = range(0, seeds.size, batch_size)
    for start in tqdm(starts, desc="mapping", disable=(not progress) if progress is not None else None):
        z = torch.from_numpy(z_np[start : start + batch_size]).to(device)
        c = c_all[start : start + batch_size].to(device)
        ws = map_z(G, z, c)
        raws.append(ws[:, 0])
        outs.append(ws if w_avg is None else truncate(ws, w_avg, truncation_psi, truncation_cutoff))
    empty = torch.zeros([0, G.num_ws, G.w_dim], device=device)
    ws = torch.cat(outs) if outs else empty
    return Latents(
        seeds=seeds,
        z=torch.from_numpy(z_np).to(device),
        c=c_all.to(device),
        classes=classes,
        w_raw=torch.cat(raws) if raws else empty[:, 0],
        ws=ws,
    )
