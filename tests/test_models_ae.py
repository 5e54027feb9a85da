"""Latent videos, the appearance / structure autoencoder, its tasks and the ground-truth evaluation helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.errors import LatentError, NotFittedError
from stylegan_disentangle.models import (
    AppearanceStructureAE,
    ClipPairSampler,
    DirectionVideoMaker,
    StyleMixingVideoMaker,
    smooth_noise,
    train_model,
)
from stylegan_disentangle.models.evaluate import (
    copy_coarse_layers,
    linear_probe_r2,
    projected_difference,
    swap_factor_groups,
    swap_readouts,
    transfer_errors,
)

NUM_WS, W_DIM = 4, 16


def world(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randn(1000, W_DIM, generator=gen) * torch.linspace(0.5, 2.0, W_DIM) + 0.3
    dirs = torch.nn.functional.normalize(torch.randn(5, W_DIM, generator=gen), dim=1).numpy()
    return pool, dirs[:2], dirs[2:]  # pool, structure, appearance


def test_clips_keep_appearance_projections_and_move_structure():
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, frames=10, curvature=0.3, layer_jitter=0.1).fit(pool)
    clips = maker.clips(pool[:6], NUM_WS, torch.Generator().manual_seed(0))
    assert clips.shape == (6, 10, NUM_WS, W_DIM)
    mean_w = clips.mean(dim=2).double()  # layer jitter is zero-mean over layers
    app = mean_w @ torch.from_numpy(appearance).double().T
    start = pool[:6].double() @ torch.from_numpy(appearance).double().T
    # float32 sums of ~10 terms of size ~5: a few 1e-6 of rounding
    assert torch.allclose(app, start[:, None].expand_as(app), atol=2e-5)
    moved = (mean_w @ torch.from_numpy(structure).double().T).std(dim=1)
    assert (moved > 0.1).all()
    assert (clips.std(dim=2) > 0).any()  # the W+ layers differ per frame


def test_augmentation_keeps_structure_projections_and_changes_the_rest():
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance).fit(pool)
    ws = pool[:8, None].repeat(1, NUM_WS, 1)
    aug = maker.augment(ws, pool[8:16], torch.Generator().manual_seed(0))
    s = torch.from_numpy(structure).float()
    assert torch.allclose(aug.mean(1) @ s.T, ws.mean(1) @ s.T, atol=1e-5)
    assert ((aug - ws).norm(dim=(1, 2)) > 0.1).all()


def test_covariance_metric_moves_one_readout_and_is_the_regression_on_the_readouts():
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, metric="covariance").fit(pool)
    readouts = np.concatenate([structure, appearance])
    # each move changes its own structure readout and no other readout (structure or appearance)
    changes = maker.moves_.astype(np.float64) @ readouts.T
    own = np.diag(changes[:, : len(structure)])
    assert (np.abs(own) > 0.1).all()
    off = changes / own[:, None]
    off[np.arange(len(structure)), np.arange(len(structure))] = 0
    assert np.abs(off).max() < 1e-5  # float32 rows of unit norm
    # known answer: least-squares regression of w on its readouts; the structure columns are the moves
    w = pool.double().numpy() - pool.double().numpy().mean(0)
    coef = np.linalg.lstsq(w @ readouts.T, w, rcond=None)[0][: len(structure)]
    coef /= np.linalg.norm(coef, axis=1, keepdims=True)
    np.testing.assert_allclose(np.abs((coef * maker.moves_).sum(1)), 1.0, atol=1e-6)
    # not the Euclidean moves: the pool is anisotropic (stds 0.5 to 2)
    euclid = DirectionVideoMaker(structure, appearance).fit(pool).moves_
    assert np.abs((euclid * maker.moves_).sum(1)).min() < 0.99
    # clips keep the appearance readouts; augmentation keeps the structure readouts
    clips = maker.clips(pool[:6], NUM_WS, torch.Generator().manual_seed(0)).mean(dim=2).double()
    a64 = torch.from_numpy(appearance).double()
    app = clips @ a64.T
    assert torch.allclose(app, (pool[:6].double() @ a64.T)[:, None].expand_as(app),
                          atol=2e-5)
    ws = pool[:8, None].repeat(1, NUM_WS, 1)
    aug = maker.augment(ws, pool[8:16], torch.Generator().manual_seed(0))
    s = torch.from_numpy(structure).float()
    assert torch.allclose(aug.mean(1) @ s.T, ws.mean(1) @ s.T, atol=1e-5)
    assert ((aug - ws).norm(dim=(1, 2)) > 0.1).all()
    with pytest.raises(ValueError, match="metric"):
        DirectionVideoMaker(structure, metric="mahalanobis").fit(pool)


def test_direction_sets_and_names_are_accepted():
    pool, structure, appearance = world()
    ds = DirectionSet(names=["yaw", "smile", "skin", "hair", "light"],
                      vectors=np.concatenate([structure, appearance]).astype(np.float32))
    a = DirectionVideoMaker(ds, ds, structure_names=["yaw", "smile"], appearance_names=["skin", "hair", "light"])
    b = DirectionVideoMaker(structure, appearance)
    np.testing.assert_allclose(a.fit(pool).moves_, b.fit(pool).moves_, atol=1e-6)
    with pytest.raises(NotFittedError):
        DirectionVideoMaker(structure).clips(pool[:2], NUM_WS, torch.Generator())


def test_style_mixing_clips_move_only_coarse_layers():
    pool, _, _ = world()
    maker = StyleMixingVideoMaker(frames=7).fit(pool)
    clips = maker.clips(pool[:3], NUM_WS, torch.Generator().manual_seed(0))
    assert clips.shape == (3, 7, NUM_WS, W_DIM)
    assert torch.equal(clips[:, :, 2:], pool[:3, None, None].expand(-1, 7, 2, -1))
    assert torch.equal(clips[:, 0, :2], pool[:3, None].expand(-1, 2, -1))
    assert (clips[:, :, :2].std(dim=1) > 0).all()
    aug = maker.augment(clips[:, 3], pool[5:8], torch.Generator())
    assert torch.equal(aug[:, :2], clips[:, 3, :2]) and torch.equal(aug[:, 2:], pool[5:8, None].expand(-1, 2, -1))


def test_smooth_noise_has_unit_std_and_is_smooth():
    x = smooth_noise(200, 3, 40, 3.0, torch.Generator().manual_seed(0))
    assert x.shape == (200, 40, 3)
    assert abs(x.std().item() - 1) < 0.05  # 24k values, each of unit variance (kernel of unit norm)
    assert (x.diff(dim=1).std() < 0.5 * x.std()).item()  # neighbours are strongly correlated


def test_short_training_lowers_both_contrastive_losses(tmp_path):
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, frames=8).fit(pool)
    sampler = ClipPairSampler(maker, pool, NUM_WS, batch_size=64, seed=0, val_size=256)
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=12, struct_dim=3, hidden=32, app_weight=0.2,
                               struct_weight=0.2).set_normalization(pool)
    before = ae.training_losses(sampler.validation("cpu"))
    train_model(ae, sampler, tmp_path, steps=150, lr=3e-3, device="cpu", progress=False)
    after = ae.training_losses(sampler.validation("cpu"))
    # Deterministic run (seeded): app 1.58 -> 1.18, struct 8.8 -> 2.9, rec and swap 1.2 -> 0.06.
    for name, factor in (("app", 0.85), ("struct", 0.5), ("rec", 0.2), ("swap", 0.2)):
        assert after[name] < factor * before[name], (name, float(before[name]), float(after[name]))


def test_transfer_output_shapes():
    pool, _, _ = world()
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=2, hidden=8).set_normalization(pool)
    t, s = torch.randn(3, NUM_WS, W_DIM), torch.randn(3, NUM_WS, W_DIM)
    assert ae.transfer_structure(t, s).shape == (3, NUM_WS, W_DIM)
    assert ae.transfer_structure(t[:1], s).shape == (3, NUM_WS, W_DIM)
    assert ae.transfer_structure(t[:, 0], s[:1, 0]).shape == (3, NUM_WS, W_DIM)  # w is broadcast to every layer
    clip = torch.randn(5, NUM_WS, W_DIM)
    assert ae.transfer_motion(t, clip).shape == (3, 5, NUM_WS, W_DIM)
    rel = ae.transfer_motion(t, clip, relative=True)
    assert rel.shape == (3, 5, NUM_WS, W_DIM)
    torch.testing.assert_close(rel[:, 0], ae(t))  # relative motion starts at the target's own structure
    with pytest.raises(LatentError, match="target_ws has 3 codes and source_ws 2"):
        ae.transfer_structure(t, s[:2])


def test_residual_transfer_keeps_what_the_codes_do_not_hold():
    pool, _, _ = world()
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=3, struct_dim=2, hidden=8).set_normalization(pool)
    t, s = torch.randn(3, NUM_WS, W_DIM), torch.randn(3, NUM_WS, W_DIM)
    # same structure: the residual transfer (the default) returns the target itself (the decoder's error cancels) ...
    torch.testing.assert_close(ae.transfer_structure(t, t, residual=True), t, atol=1e-5, rtol=0)
    # ... while the direct decode returns the reconstruction, which a 5-number code cannot make exact
    assert (ae.transfer_structure(t, t, residual=False) - t).abs().max() > 0.1
    # otherwise it is the target plus the decoder's change of structure at the target's appearance
    a_t, s_t = ae.encode(t)
    _, s_s = ae.encode(s)
    expected = t + ae.decode(a_t, s_s) - ae.decode(a_t, s_t)
    torch.testing.assert_close(ae.transfer_structure(t, s), expected)


def test_motion_pairs_leave_the_other_batch_entries_unchanged():
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, frames=8).fit(pool)
    motion = DirectionVideoMaker(structure, appearance, frames=8, metric="covariance").fit(pool)
    plain = ClipPairSampler(maker, pool, NUM_WS, batch_size=32, seed=3).sample(5)
    both = ClipPairSampler(maker, pool, NUM_WS, batch_size=32, seed=3, motion_maker=motion).sample(5)
    assert set(both) == set(plain) | {"motion_from", "motion_to"}
    for key in plain:
        assert torch.equal(plain[key], both[key]), key
    a64 = torch.from_numpy(appearance).double()
    start, end = (both[k].mean(1).double() @ a64.T for k in ("motion_from", "motion_to"))
    assert torch.allclose(start, end, atol=2e-5)  # covariance-metric clips keep the appearance readouts
    assert ((both["motion_to"] - both["motion_from"]).norm(dim=(1, 2)) > 0.01).all()


def test_motion_decoder_learns_the_moves_of_its_clips(tmp_path):
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, frames=8).fit(pool)
    motion = DirectionVideoMaker(structure, appearance, frames=8, metric="covariance").fit(pool)
    sampler = ClipPairSampler(maker, pool, NUM_WS, batch_size=64, seed=0, val_size=256, motion_maker=motion)
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=12, struct_dim=3, hidden=32, app_weight=0.2,
                               struct_weight=0.2, motion_weight=1.0).set_normalization(pool)
    before = float(ae.training_losses(sampler.validation("cpu"))["motion"])
    train_model(ae, sampler, tmp_path, steps=400, lr=3e-3, device="cpu", progress=False)
    after = float(ae.training_losses(sampler.validation("cpu"))["motion"])
    assert after < 0.2 * before  # seeded run: 0.128 -> 0.007
    t, s = pool[:200, None].repeat(1, NUM_WS, 1), pool[200:400, None].repeat(1, NUM_WS, 1)
    out = ae.transfer_structure(t, s)  # the motion decoder is the default
    torch.testing.assert_close(out, ae.transfer_structure(t, s, mode="motion"))
    torch.testing.assert_close(ae.transfer_structure(t, t), t)  # no change of structure, no move
    st, ap = torch.from_numpy(structure).float(), torch.from_numpy(appearance).float()
    want = (s.mean(1) - t.mean(1)) @ st.T
    got = (out.mean(1) - t.mean(1)) @ st.T
    app_change = (out.mean(1) - t.mean(1)) @ ap.T
    # seeded run: structure readouts taken to 9% (relative), appearance readouts moved 3% of that
    assert (got - want).norm() < 0.2 * want.norm() and app_change.norm() < 0.06 * want.norm()
    # the moves per unit of structure readout are the covariance-metric clips' moves, not the Euclidean ones
    move = np.linalg.lstsq(want.double().numpy(), (out.mean(1) - t.mean(1)).double().numpy(), rcond=None)[0]
    move /= np.linalg.norm(move, axis=1, keepdims=True)
    assert (np.abs((move * motion.moves_).sum(1)) > 0.99).all()  # seeded run: 0.998
    assert (np.abs((move * maker.moves_).sum(1)) < 0.9).all()  # 0.71
    clip = pool[400:405, None].repeat(1, NUM_WS, 1)
    moved = ae.transfer_motion(t[:3], clip)
    assert moved.shape == (3, 5, NUM_WS, W_DIM)
    torch.testing.assert_close(moved[:, 2], ae.transfer_structure(t[:3], clip[2:3]))
    torch.testing.assert_close(ae.transfer_motion(t[:3], clip, relative=True)[:, 0], t[:3])


def test_linear_structure_code_is_affine_in_w():
    pool, _, _ = world()
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=3, hidden=16,
                               linear_structure=True).set_normalization(pool)
    with torch.no_grad():
        ae.encoder.mlp[2].weight.normal_()  # a visible nonlinear branch (zero at init)
        ae.encoder.linear.weight.normal_()
    x = torch.randn(3, 5, W_DIM)
    combo = x[0] + 0.5 * (x[1] - x[2])
    (a0, s0), (a1, s1), (a2, s2), (ac, sc) = (ae.encode(v) for v in (x[0], x[1], x[2], combo))
    torch.testing.assert_close(sc, s0 + 0.5 * (s1 - s2), atol=1e-5, rtol=1e-5)  # float32 sums of O(1) terms
    assert (ac - (a0 + 0.5 * (a1 - a2))).abs().max() > 1e-2  # the appearance code keeps its MLP


def test_invariance_projection_makes_a_linear_structure_code_blind_to_the_augmentations():
    pool, structure, appearance = world()
    maker = DirectionVideoMaker(structure, appearance, frames=8).fit(pool)
    sampler = ClipPairSampler(maker, pool, NUM_WS, batch_size=64, seed=0)
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=2, hidden=16, linear_structure=True,
                               invariance_projection=True).set_normalization(pool)
    with torch.no_grad():
        ae.encoder.linear.weight.normal_()  # structure rows that read every direction of W
    fresh = sampler.sample(12345)

    def change(key):  # structure-code change from the anchor to `key`, relative to the code's spread
        s_a, s_x = ae.encode(fresh["anchor"])[1], ae.encode(fresh[key])[1]
        return float((s_x - s_a).norm() / (s_a - s_a.mean(0)).norm())

    assert change("augmented") > 0.1
    app_before = ae.encode(fresh["anchor"])[0]
    ae.finish_training(sampler, 0)  # what train_model calls at the end
    # the augmentations move every direction of w but the 2 structure ones: the rows no longer read them (float32
    # products of O(1) terms; the null space is exact up to the eigensolver's rounding)
    assert change("augmented") < 1e-5
    assert change("other") > 0.1  # the clip's structure moves still move the code
    torch.testing.assert_close(ae.encode(fresh["anchor"])[0], app_before)  # the appearance code is untouched
    # unmoved directions of the flattened W+ input: the 2 structure ones and every difference between layers (the
    # augmentations move all layers alike)
    assert ae.project_structure_invariant(sampler, 0) == 2 + (NUM_WS - 1) * W_DIM
    # a nonlinear code, or augmentations that move every direction (style mixing of a mean-w code): left alone
    mlp = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=2, hidden=16).set_normalization(pool)
    assert mlp.project_structure_invariant(sampler, 0) == 0
    mixing = ClipPairSampler(StyleMixingVideoMaker(frames=4).fit(pool), pool, NUM_WS, batch_size=64, seed=0)
    mean_w = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=2, hidden=16, w_plus=False,
                                   linear_structure=True).set_normalization(pool)
    weight = mean_w.encoder.linear.weight.clone()
    assert mean_w.project_structure_invariant(mixing, 0) == 0 and torch.equal(mean_w.encoder.linear.weight, weight)
    # ... while a W+ code under style mixing keeps what the swaps of the fine layers never move: the coarse layers
    # (2 of 4) and the differences among the fine layers (all take the same donor's w)
    assert ae.project_structure_invariant(mixing, 0) == 2 * W_DIM + W_DIM


def test_transfer_modes_are_checked():
    pool, _, _ = world()
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=2, hidden=8).set_normalization(pool)
    t = torch.randn(2, NUM_WS, W_DIM)
    with pytest.raises(ValueError, match="motion decoder"):
        ae.transfer_structure(t, t, mode="motion")
    with pytest.raises(ValueError, match="mode must be"):
        ae.transfer_structure(t, t, mode="sideways")
    torch.testing.assert_close(ae.transfer_structure(t, t, mode="direct"), ae.transfer_structure(t, t, residual=False))
    with pytest.raises(ValueError, match="motion_weight"):
        AppearanceStructureAE(NUM_WS, W_DIM, motion_weight=-1.0)


def test_linear_probe_known_answers():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((400, 3))
    y = np.stack([x @ [1.0, -2.0, 0.5], gen.standard_normal(400)], 1)
    r2 = linear_probe_r2(x, y)
    assert r2[0] == pytest.approx(1.0, abs=1e-12) and abs(r2[1]) < 0.05  # exact fit; noise: E[R^2] ~ -3/120


class _Map:
    def __init__(self, directions):
        self.directions = directions


def test_swap_factor_groups_sets_taken_projections_and_keeps_the_others():
    gen = np.random.default_rng(0)
    d = gen.standard_normal((4, W_DIM))
    a, b = gen.standard_normal((5, W_DIM)), gen.standard_normal((5, W_DIM))
    mixed = swap_factor_groups(_Map(d), a, b, take=[1, 3]).double().numpy()
    np.testing.assert_allclose(mixed @ d[[1, 3]].T, b @ d[[1, 3]].T, atol=1e-4)  # float32 result
    np.testing.assert_allclose(mixed @ d[[0, 2]].T, a @ d[[0, 2]].T, atol=1e-4)
    # any directions (e.g. found ones): the same min-norm readout swap
    assert torch.equal(swap_readouts(d, a, b, take=[1, 3]), torch.from_numpy(mixed.astype(np.float32)))


def test_baselines_and_transfer_errors():
    t, s = torch.randn(2, NUM_WS, W_DIM), torch.randn(2, NUM_WS, W_DIM)
    mixed = copy_coarse_layers(t, s, 2)
    assert torch.equal(mixed[:, :2], s[:, :2]) and torch.equal(mixed[:, 2:], t[:, 2:])
    e = torch.eye(W_DIM)[:2]
    proj = projected_difference(t, s, e.numpy())
    assert torch.allclose(proj[..., :2], s[..., :2]) and torch.equal(proj[..., 2:], t[..., 2:])
    err = transfer_errors(proj, t, s, lambda ws: ws.mean(1)[:, :4], keep=[2, 3], take=[0, 1])
    assert err["keep_error"] == pytest.approx(0, abs=1e-7) and err["take_error"] == pytest.approx(0, abs=1e-6)
