"""Run-directory plumbing shared by the find-directions and edit runners: loading the network, config and report
files (atomic JSON with the seed, the checkpoint hash and the package version), stage timing."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import __version__
from ..checkpoints import open_network_pkl
from ..directions.direction_set import to_jsonable
from ..errors import CheckpointError
from ..utils import atomic_write, resolve_device, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["load_generator", "write_json", "Timer"]


def load_generator(
    pkl: str | os.PathLike, device: str | torch.device = "auto", network: str = "G_ema"
) -> tuple[nn.Module, nn.Module | None, dict[str, Any]]:
    """Load `network` ('G_ema' or 'G') and D from a pickle / URL / known name; returns (G, D, provenance)."""
    device = resolve_device(device)
    if network not in ("G_ema", "G"):
        raise CheckpointError(f"network must be 'G_ema' or 'G', got {network!r}")
    loaded = open_network_pkl(pkl, device)
    G = loaded.data.get(network)
    if G is None:
        raise CheckpointError(f"{loaded.path} holds no {network!r} generator")
    G.eval().requires_grad_(False)
    D = loaded.data.get("D")
    if isinstance(D, nn.Module):
        D.eval().requires_grad_(False)
    else:
        D = None
    info = {
        "checkpoint": str(pkl),
        "checkpoint_path": str(loaded.path),
        "checkpoint_sha256": sha256_file(loaded.path),
        "flavor": loaded.flavor,
        "network": network,
        "device": str(device),
        "z_dim": int(G.z_dim),
        "c_dim": int(G.c_dim),
        "w_dim": int(G.w_dim),
        "num_ws": int(G.num_ws),
        "img_resolution": int(G.img_resolution),
    }
    return G, D, info


def write_json(path: str | os.PathLike, data: dict[str, Any]) -> Path:
    """Write JSON atomically (numpy values converted; NaN/inf kept as JSON's extensions)."""
    path = Path(path)
    with atomic_write(path, "w") as f:
        json.dump(to_jsonable(data), f, indent=2, allow_nan=True)
        f.write("\n")
    return path


def run_header(command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The common head of config.json: command, arguments, package version, time."""
    return {"command": command, "package_version": __version__,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "args": args}


class Timer:
    """Collects wall-clock seconds per named stage: `with timer("fit"): ...`; `timer.seconds` is the record."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = round(self.seconds.get(stage, 0.0) + time.perf_counter() - start, 4)
            logger.info("%s: %.2f s", stage, self.seconds[stage])
