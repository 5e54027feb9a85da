"""A summary of a loaded checkpoint, for `stylegan-disentangle info`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..networks import Generator
from ..utils import sha256_file
from .loader import NetworkPickle


def count_parameters(module) -> int:
    return int(sum(p.numel() for p in module.parameters())) if module is not None else 0


def network_summary(pkl: NetworkPickle) -> dict[str, Any]:
    """Flavour, dimensions, architecture, fp16 resolutions, parameter counts and sha256 of a loaded pickle."""
    G: Generator = pkl.data["G_ema"]
    blocks = [getattr(G.synthesis, f"b{res}") for res in G.synthesis.block_resolutions]
    return {
        "path": str(pkl.path),
        "sha256": sha256_file(pkl.path),
        "flavor": pkl.flavor,
        "resolution": G.img_resolution,
        "img_channels": G.img_channels,
        "z_dim": G.z_dim,
        "w_dim": G.w_dim,
        "c_dim": G.c_dim,
        "num_ws": G.num_ws,
        "mapping_layers": G.mapping.num_layers,
        "architecture": blocks[-1].architecture,
        "channels": {block.resolution: block.conv1.out_channels for block in blocks},
        "fp16_resolutions": [block.resolution for block in blocks if block.use_fp16],
        "conv_clamp": blocks[-1].conv1.conv_clamp,
        "parameters": {key: count_parameters(pkl.data.get(key)) for key in ("G", "G_ema", "D")},
        "training_set_kwargs": plain(pkl.data.get("training_set_kwargs")),
        # Inert TF variables the conversion skipped ({network: {variable: value}}), e.g. {'G': {'lod': 0.0}}.
        "ignored_variables": plain({key: dict(names) for key, names in pkl.ignored.items() if names}),
    }


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays, EasyDicts and tuples made plain Python (official pickles hold
    `np.int64(70000)`, `np.bool_(False)`), so that `info` prints `70000` and its JSON holds numbers, not strings."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    return value
