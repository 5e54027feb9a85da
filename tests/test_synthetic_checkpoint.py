"""The checkpoint shipped with the package: it loads, reproduces the renderer as stated, and its ground truth is
recoverable by the supervised finder; the oracle labeler and the CLI work on it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.analysis.metrics import direction_recovery
from stylegan_disentangle.checkpoints import load_network_pkl
from stylegan_disentangle.cli import main
from stylegan_disentangle.directions import DirectionSet, LinearDirections
from stylegan_disentangle.labels import get_labeler
from stylegan_disentangle.synthetic import render
from stylegan_disentangle.synthetic.checkpoint import (
    SYNTHETIC_CHECKPOINT,
    ground_truth_directions,
    load_synthetic,
    training_record,
)
from stylegan_disentangle.synthetic.factors import factor_groups


@pytest.fixture(scope="module")
def synthetic():
    return load_synthetic()


def _ws(G, n: int, seed: int) -> torch.Tensor:
    return G.mapping(torch.randn([n, G.z_dim], generator=torch.Generator().manual_seed(seed)), None)


def test_loads_by_name_like_any_official_pickle(synthetic):
    G, fmap = synthetic
    data = load_network_pkl("synthetic")
    assert data["G_ema"].img_resolution == G.img_resolution == training_record()["args"]["resolution"]
    assert G.w_dim == fmap.w_dim == 128 and G.z_dim == 128
    assert SYNTHETIC_CHECKPOINT.stat().st_size < 8 * 2**20, "package data must stay a few MB"


def test_reproduces_the_renderer_on_held_out_latents(synthetic):
    G, fmap = synthetic
    ws = _ws(G, 256, seed=12345)  # the training script draws its samples from seeds 0-4
    target = render(fmap(ws), resolution=G.img_resolution)
    pred = G.synthesis(ws, noise_mode="const")
    psnr = 10 * math.log10(4 / ((pred - target) ** 2).mean().item())
    stated = training_record()["final_val_psnr"]
    assert psnr >= stated - 0.5, f"held-out PSNR {psnr:.2f} dB is below the stated {stated:.2f} dB"


def test_linear_directions_recover_pose_and_illumination(synthetic):
    G, fmap = synthetic
    ws = _ws(G, 20_000, seed=7)
    w = ws[:, 0].numpy()
    factors = fmap(ws).numpy()
    est = LinearDirections(method="ridge").fit(w, {n: factors[:, j] for j, n in enumerate(fmap.names)})
    rec = direction_recovery(est.directions_, est.names_, fmap.directions, fmap.names)["abs_cosine"]
    groups = factor_groups()
    for name in groups["pose"] + groups["illumination"]:
        assert rec[name] >= 0.95, (name, rec[name])
    assert np.mean(list(rec.values())) >= 0.95


def test_ground_truth_is_a_direction_set(synthetic):
    _, fmap = synthetic
    truth = ground_truth_directions()
    assert isinstance(truth, DirectionSet) and truth.names == fmap.names
    assert np.allclose(np.linalg.norm(truth.vectors, axis=1), 1, atol=1e-5)


def test_oracle_is_a_registered_labeler(synthetic):
    G, fmap = synthetic
    oracle = get_labeler("synthetic-oracle")
    ws = _ws(G, 8, seed=3)
    labels = oracle(G.synthesis(ws, noise_mode="const"), ws)
    assert list(labels) == fmap.names
    assert torch.allclose(torch.stack(list(labels.values()), dim=1), fmap(ws))


def test_find_directions_cli_with_the_oracle(tmp_path):
    out = tmp_path / "fd"
    result = CliRunner().invoke(main, ["--quiet", "find-directions", "synthetic", "--method", "linear",
                                       "--labeler", "synthetic-oracle", "--samples", "3000", "--outdir", str(out),
                                       "--no-umap", "--effect-samples", "8", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    directions = DirectionSet.load(out / "directions")
    rec = direction_recovery(directions.vectors, directions.names, ground_truth_directions().vectors,
                             ground_truth_directions().names)
    assert rec["mean_abs_cosine"] > 0.9
    report = json.loads((out / "report.json").read_text())
    assert report["method"] == "linear" and (out / "edit_grid.png").stat().st_size > 0
