"""Map-valued labels (a depth or albedo map per image): the labeler protocol, the latent bank and the rendered effect
measurement handle them beside scalar labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis import measure_label_effects
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.labels import apply_labeler, labeler_from_callable
from stylegan_disentangle.latents import LatentBank, sample_latents
from stylegan_disentangle.networks import Generator

W_DIM = 16
PATTERN = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 11 - 0.3  # a fixed 3x4 "footprint"


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


U = np.random.default_rng(1).standard_normal(W_DIM).astype(np.float32)


def _map_labeler():
    """proj = ws[:, 0] . u (scalar) and depth = proj * PATTERN (a [3, 4] map): linear in w, so the answers are exact."""
    def fn(img, ws):
        proj = ws[:, 0] @ torch.as_tensor(U)
        return {"proj": proj, "depth": proj[:, None, None] * PATTERN}

    return labeler_from_callable(fn, ["proj", "depth"], needs_ws=True, needs_images=False)


def test_labeler_protocol_accepts_maps(G):
    ws = sample_latents(G, [0, 1]).ws
    out = apply_labeler(_map_labeler(), None, ws)
    assert out["proj"].shape == (2,) and out["depth"].shape == (2, 3, 4)


def test_bank_stores_map_labels_per_sample_on_disk(G, tmp_path):
    bank = LatentBank.create(G, tmp_path / "bank", n=10, seed=0, labelers=[_map_labeler()], batch_size=4)
    again = LatentBank(tmp_path / "bank")
    assert isinstance(again.labels["depth"], np.memmap) and again.labels["depth"].shape == (10, 3, 4)
    proj = np.asarray(again.labels["proj"])
    np.testing.assert_allclose(again.labels["depth"], proj[:, None, None] * PATTERN.numpy(), rtol=1e-6, atol=1e-6)
    assert again.label_matrix().shape == (10, 1)  # only scalar labels stack into [N, L]
    assert bank.label_names == again.label_names


def test_label_effects_measure_change_maps_of_map_labels(G):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, W_DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ds = DirectionSet(["a", "b"], v.astype(np.float32), extras={"std": np.array([1.5, 0.5], np.float32)})
    ws = sample_latents(G, list(range(6))).ws
    eff = measure_label_effects(G, ws, ds, _map_labeler())
    slope = ds.vectors.astype(np.float64) @ U.astype(np.float64)  # proj change per unit step along each direction
    pattern = PATTERN.double().numpy()
    assert eff.label_names == ["proj", "depth"] and set(eff.change_maps) == {"depth"}
    # float32 labels of O(1) values, differenced over a step of O(1): errors of a few float32 ulps
    np.testing.assert_allclose(eff.change_maps["depth"], slope[:, None, None] * pattern, rtol=1e-4, atol=1e-5)
    rms = np.sqrt(np.mean(pattern**2))
    np.testing.assert_allclose(eff.per_unit[:, 1], np.abs(slope) * rms, rtol=1e-4)
    np.testing.assert_allclose(eff.per_unit[:, 0], slope, rtol=1e-4, atol=1e-5)
    # the map's std is the scalar's std times the pattern's rms, so both columns give the same effect size
    np.testing.assert_allclose(eff.label_std[1], eff.label_std[0] * rms, rtol=1e-4)
    np.testing.assert_allclose(eff.effects[:, 1], np.abs(eff.effects[:, 0]), rtol=1e-4)
    assert eff.to_dict()["map_labels"] == ["depth"]
    assert set(eff.select_labels(["proj"]).change_maps) == set()
