"""The synthetic factor map: its ground-truth directions, correlations, nonlinearity and file round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.synthetic.factor_map import CORRELATED_PAIRS, FactorMap
from stylegan_disentangle.synthetic.factors import factor_index, factor_names


@pytest.fixture(scope="module")
def w_samples():
    rng = np.random.default_rng(0)
    return (rng.standard_normal([20_000, 32]) * np.linspace(0.3, 2.0, 32) + 0.5).astype(np.float32)


@pytest.fixture(scope="module")
def fmap(w_samples):
    return FactorMap.build(w_samples, seed=3)


def test_ground_truth_direction_is_the_gradient_at_the_mean(fmap):
    w = torch.tensor(fmap.mean[None], requires_grad=True)
    for j in range(len(factor_names())):
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(fmap(w)[0, j], w)
        cos = float(grad[0] @ torch.tensor(fmap.directions[j]) / grad.norm())
        assert cos > 0.999, factor_names()[j]


def test_pure_directions_move_one_factor_each(fmap):
    pure = fmap.pure_directions()
    assert pure.shape == (fmap.w_dim, len(factor_names()))
    # a step along column j changes standardized projection j by 1 and no other (float32 rounding of the inverse)
    at_mean = fmap.standardized(torch.as_tensor(fmap.mean[None]))
    moved = fmap.standardized(torch.as_tensor(fmap.mean[None] + pure.T)) - at_mean
    np.testing.assert_allclose(moved.numpy(), np.eye(len(factor_names())), atol=1e-4)
    # unlike the ground-truth directions: the light-elevation direction also moves pitch (their shared component)
    el, pitch = factor_index("light_elevation"), factor_index("pitch")
    along_truth = fmap.standardized(torch.as_tensor(fmap.mean + fmap.directions[el] * fmap.sigma[el])[None])
    assert abs(float(along_truth[0, pitch] - at_mean[0, pitch])) > 0.1


def test_factors_are_normalized_and_spread(fmap, w_samples):
    f = fmap(torch.from_numpy(w_samples)).numpy()
    assert f.shape == (len(w_samples), len(factor_names()))
    assert np.all(np.abs(f) < 1) and np.all(f.std(axis=0) > 0.4)
    assert np.allclose(f.mean(axis=0), 0, atol=0.15)


def test_correlated_pairs_co_vary(fmap, w_samples):
    f = fmap(torch.from_numpy(w_samples)).numpy()
    for name, partner, _ in CORRELATED_PAIRS:
        r = np.corrcoef(f[:, factor_index(name)], f[:, factor_index(partner)])[0, 1]
        assert r > 0.3, (name, partner, r)


def test_nuisance_directions_change_nothing(fmap):
    q, _ = np.linalg.qr(fmap.directions.T.astype(np.float64), mode="complete")
    nuisance = q[:, len(factor_names()):]
    w = torch.tensor(fmap.mean[None] + 0.3, dtype=torch.float32)
    step = torch.tensor(5 * nuisance[:, 0][None], dtype=torch.float32)
    assert torch.allclose(fmap(w), fmap(w + step), atol=1e-5)


def test_ws_are_averaged_and_bad_input_is_refused(fmap, w_samples):
    w = torch.from_numpy(w_samples[:4])
    assert torch.allclose(fmap(w.unsqueeze(1).repeat(1, 6, 1)), fmap(w))
    with pytest.raises(LatentError, match="factor map needs"):
        fmap(torch.zeros([4, 31]))
    bad = w.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(LatentError, match="NaN"):
        fmap(bad)


def test_save_load_round_trip(fmap, tmp_path, w_samples):
    fmap.save(tmp_path / "fm.npz")
    loaded = FactorMap.load(tmp_path / "fm.npz")
    w = torch.from_numpy(w_samples[:100])
    assert torch.equal(loaded(w), fmap(w))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(Exception, match="bad.npz: not a factor map file"):
        FactorMap.load(tmp_path / "bad.npz")


def test_build_avoids_skewed_axes_and_keeps_every_factor_linearly_recoverable():
    # W like a mapping network's: its largest principal axis is strongly skewed (a centred exponential).
    rng = np.random.default_rng(1)
    w = rng.standard_normal([40_000, 32]) * np.linspace(2.0, 0.3, 32)
    w[:, 0] = 3.0 * (rng.exponential(size=len(w)) - 1)
    fmap = FactorMap.build(w.astype(np.float32), seed=0)
    assert abs(fmap.directions[:, 0]).max() < 0.5, "no factor may lean on the skewed axis"
    yaw = fmap.directions[factor_index("yaw")]
    assert abs(yaw[1]) > 0.5, "yaw follows the largest symmetric principal axis"
    factors = fmap(torch.from_numpy(w.astype(np.float32))).double().numpy()
    x = w - w.mean(axis=0)
    coef = np.linalg.lstsq(x, factors - factors.mean(axis=0), rcond=None)[0].T
    cos = np.abs((coef / np.linalg.norm(coef, axis=1, keepdims=True) * fmap.directions).sum(axis=1))
    assert cos.min() >= 0.97, dict(zip(factor_names(), cos.round(3)))


def test_build_refuses_too_few_samples():
    with pytest.raises(Exception, match="at least 128 w samples"):
        FactorMap.build(np.zeros([50, 32], dtype=np.float32))
