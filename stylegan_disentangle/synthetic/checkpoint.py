"""The StyleGAN2 checkpoint shipped with the package, distilled from the synthetic renderer, and its ground truth.

`load_network_pkl('synthetic')` loads it like any official pickle. Beside it in `synthetic/data/` lie the
FactorMap that defines which factors each w encodes (the ground truth) and a JSON record of how it was trained
(command, seed, steps, held-out PSNR against the renderer). `scripts/train_synthetic_generator.py` makes all three.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import numpy as np
import torch

from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from .factor_map import FactorMap
from .oracle import SyntheticOracle

DATA_DIR = Path(__file__).resolve().parent / "data"
SYNTHETIC_CHECKPOINT = DATA_DIR / "synthetic32.pkl"
"""Path of the shipped network pickle (official layout; also reachable as the registry name 'synthetic')."""
FACTOR_MAP_FILE = DATA_DIR / "factor_map.npz"
TRAINING_RECORD_FILE = DATA_DIR / "synthetic32.json"


def _require(path: Path) -> Path:
    if not path.is_file():
        if path.resolve().parent != DATA_DIR:  # a path the caller gave
            raise StyleGANDisentangleError(f"{path}: no such file")
        raise StyleGANDisentangleError(f"{path} is missing: the synthetic checkpoint ships with the package; "
                                       "reinstall stylegan_disentangle or train one with "
                                       "scripts/train_synthetic_generator.py")
    return path


@functools.lru_cache(maxsize=4)
def _cached_factor_map(path: str) -> FactorMap:
    return FactorMap.load(path)


def synthetic_factor_map(path: str | os.PathLike | None = None) -> FactorMap:
    """The ground-truth FactorMap of the shipped checkpoint (or of the map file at `path`)."""
    return _cached_factor_map(str(_require(Path(path) if path else FACTOR_MAP_FILE)))


def training_record(path: str | os.PathLike | None = None) -> dict:
    """How the shipped checkpoint was made: arguments, seed, held-out PSNR per evaluation."""
    return json.loads(_require(Path(path) if path else TRAINING_RECORD_FILE).read_text())


def load_synthetic(device: str | torch.device = "cpu", pkl: str | os.PathLike | None = None,
                   factor_map: str | os.PathLike | None = None) -> tuple[torch.nn.Module, FactorMap]:
    """(G_ema, FactorMap) of the shipped checkpoint, or of a pickle + map made by the training script."""
    from ..checkpoints import load_network_pkl

    G = load_network_pkl(_require(Path(pkl) if pkl else SYNTHETIC_CHECKPOINT), device=device)["G_ema"]
    return G, synthetic_factor_map(factor_map)


def oracle_labeler(physical: bool = False, factor_map: str | os.PathLike | None = None) -> SyntheticOracle:
    """The 'synthetic-oracle' labeler: exact factors of the shipped checkpoint's images, read from their ws."""
    return SyntheticOracle(synthetic_factor_map(factor_map), physical=physical)


def ground_truth_directions(factor_map: FactorMap | None = None) -> DirectionSet:
    """The true direction of every factor as a DirectionSet (what direction finders are scored against)."""
    fmap = factor_map if factor_map is not None else synthetic_factor_map()
    vectors = fmap.directions / np.linalg.norm(fmap.directions, axis=1, keepdims=True)
    return DirectionSet(names=list(fmap.names), vectors=vectors.astype(np.float32), method="ground-truth",
                        params={"gain": fmap.gain, "curvature": fmap.curvature})
