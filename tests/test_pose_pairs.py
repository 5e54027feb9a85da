"""Pose-pair agreement (labels/decomposer/pose_pairs.py): its W directions and its loss."""

from __future__ import annotations

import json

import pytest
import torch

from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer, trainer
from stylegan_disentangle.labels.decomposer.pose_pairs import (
    POSE_LABELS,
    fit_pose_directions,
    pose_pair_loss,
    scaled_ridge_direction,
)
from stylegan_disentangle.labels.decomposer.trainer import POSE_DIRECTIONS, train_decomposer
from stylegan_disentangle.synthetic.checkpoint import load_synthetic

TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)


@pytest.fixture(scope="module")
def G():
    return load_synthetic()[0]


def test_scaled_ridge_direction_recovers_a_planted_direction_and_the_spread_along_it():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 16, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 2, 16, dtype=torch.float64)
    u = torch.randn(16, generator=gen, dtype=torch.float64)
    u = u / u.norm()
    y = 3 * (x @ u) + 0.01 * torch.randn(4000, generator=gen, dtype=torch.float64) + 5
    d = scaled_ridge_direction(x, y)
    # the ridge coefficient of a noiseless linear label is the planted direction up to alpha / n shrinkage
    assert float(d @ u) / float(d.norm()) > 0.999
    assert float(d.norm()) == pytest.approx(float(((x - x.mean(0)) @ (d / d.norm())).std()), rel=1e-12)


def test_fit_pose_directions_is_deterministic_and_scaled_to_the_data(G):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    a = fit_pose_directions(dec, G, n=256, seed=3, batch_size=100)
    b = fit_pose_directions(dec, G, n=256, seed=3, batch_size=256)
    assert a.shape == (len(POSE_LABELS), G.w_dim) and torch.allclose(a, b, atol=1e-5)
    assert dec.training  # left as it was found
    assert torch.isfinite(a).all() and (a.norm(dim=1) > 0).all()


def test_pose_pair_loss_is_zero_without_a_move_and_trains_depth_and_albedo(G):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    still = torch.zeros(2, G.w_dim)
    assert float(pose_pair_loss(dec, G, still, torch.Generator().manual_seed(1), 4)) == pytest.approx(0, abs=1e-7)
    dirs = fit_pose_directions(dec, G, n=128, seed=0)
    with torch.enable_grad():
        loss = pose_pair_loss(dec, G, dirs, torch.Generator().manual_seed(1), 4)
        loss.backward()
    assert float(loss) > 0
    for net in (dec.netD, dec.netA):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    assert all(p.grad is None for p in dec.netL.parameters())


def test_training_with_pose_pairs_saves_its_directions_and_resumes_with_them(G, tmp_path, monkeypatch):
    monkeypatch.setattr(trainer, "POSE_FIT_SAMPLES", 64)
    kw = dict(batch_size=4, decomposer_kwargs=TINY, lam_pose=1.0, stabilize_after=1, log_every=1, progress=False)
    train_decomposer(G, tmp_path, steps=1, **kw)
    assert not (tmp_path / POSE_DIRECTIONS).exists()  # fitted when the stabilizers start, not before
    train_decomposer(G, tmp_path, steps=3, **kw)
    dirs = torch.load(tmp_path / POSE_DIRECTIONS, weights_only=True)
    assert dirs.shape == (len(POSE_LABELS), G.w_dim)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert "pose_pair" not in log[0] and all(r["pose_pair"] > 0 for r in log[1:])
    assert json.loads((tmp_path / "train_state.json").read_text())["config"]["lam_pose"] == 1.0

    # a resumed run reads the saved directions instead of fitting new ones from its changed nets
    def refit(*args, **kwargs):
        raise AssertionError("a resumed run must not refit the pose directions")

    monkeypatch.setattr(trainer, "fit_pose_directions", refit)
    train_decomposer(G, tmp_path, steps=4, **kw)
    assert json.loads((tmp_path / "log.jsonl").read_text().splitlines()[-1])["step"] == 4
