"""Latent stage: sampling z -> w / ws (truncation, classes, per-sample seeds), the on-disk LatentBank, W statistics."""

from .bank import LatentBank, generator_fingerprint
from .sampling import (
    Latents,
    as_w,
    bank_seeds,
    broadcast_w,
    check_ws,
    eval_mode,
    generator_device,
    map_z,
    one_hot,
    render_chunk_size,
    sample_latents,
    synthesize_in_chunks,
    truncate,
    z_from_seeds,
)
from .stats import WStats

__all__ = [
    "LatentBank",
    "Latents",
    "WStats",
    "as_w",
    "bank_seeds",
    "broadcast_w",
    "check_ws",
    "eval_mode",
    "generator_device",
    "generator_fingerprint",
    "map_z",
    "one_hot",
    "render_chunk_size",
    "sample_latents",
    "synthesize_in_chunks",
    "truncate",
    "z_from_seeds",
]
