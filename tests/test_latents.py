"""Latent sampling, truncation, the on-disk LatentBank (determinism, resume, memmaps) and W statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import LatentError, NotFittedError
from stylegan_disentangle.labels import ImageStatsLabeler, labeler_from_callable
from stylegan_disentangle.latents import (
    LatentBank,
    WStats,
    bank_seeds,
    check_ws,
    sample_latents,
    truncate,
    z_from_seeds,
)
from stylegan_disentangle.networks import Generator


def _tiny(c_dim: int = 0) -> Generator:
    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=c_dim, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(16))  # a non-zero w_avg makes truncation visible
    return G.eval()


@pytest.fixture(scope="module")
def G() -> Generator:
    return _tiny()


# ---------------------------------------------------------------------- sampling
def test_z_matches_official_per_seed_draw():
    z, classes = z_from_seeds([0, 5, 123456], 16)
    assert classes is None
    for row, seed in zip(z, [0, 5, 123456]):
        np.testing.assert_array_equal(row, np.random.RandomState(seed).randn(1, 16)[0].astype(np.float32))


def test_classes_are_drawn_after_z_from_the_same_stream():
    _, classes = z_from_seeds([7, 8], 16, c_dim=5)
    for cls, seed in zip(classes, [7, 8]):
        rs = np.random.RandomState(seed)
        rs.randn(16)
        assert cls == rs.randint(5)


def test_bank_seeds_are_consecutive_and_depend_on_the_bank_seed():
    a = bank_seeds(0, 0, 10)
    np.testing.assert_array_equal(bank_seeds(0, 4, 7), a[4:7])
    assert np.all(np.diff(a) % 2**32 == 1)  # consecutive (mod 2**32)
    assert not np.intersect1d(a, bank_seeds(1, 0, 10)).size


def test_sampling_does_not_depend_on_batch_size(G):
    seeds = bank_seeds(3, 0, 37)
    a = sample_latents(G, seeds, truncation_psi=0.7, batch_size=5)
    b = sample_latents(G, seeds, truncation_psi=0.7, batch_size=64)
    assert torch.equal(a.z, b.z)
    torch.testing.assert_close(a.ws, b.ws, rtol=0, atol=1e-6)


def test_truncation_psi_zero_gives_w_avg_exactly(G):
    lat = sample_latents(G, [1, 2, 3], truncation_psi=0.0)
    assert torch.equal(lat.ws, G.mapping.w_avg.expand(3, G.num_ws, G.w_dim))


def test_truncation_equals_the_mapping_networks_own(G):
    lat = sample_latents(G, [1, 2, 3], truncation_psi=0.7, truncation_cutoff=2)
    with torch.no_grad():
        ref = G.mapping(lat.z, lat.c, truncation_psi=0.7, truncation_cutoff=2)
    assert torch.equal(lat.ws, ref)
    # layers past the cutoff keep the raw w; the ones before are pulled 30% toward w_avg
    assert torch.equal(lat.ws[:, 2:], lat.w_raw[:, None].expand(-1, G.num_ws - 2, -1))
    expected = G.mapping.w_avg + 0.7 * (lat.w_raw - G.mapping.w_avg)
    torch.testing.assert_close(lat.ws[:, 0], expected, rtol=0, atol=1e-6)


def test_truncate_is_identity_at_psi_one():
    ws = torch.randn(2, 3, 4)
    assert truncate(ws, torch.zeros(4), 1.0) is ws


def test_conditional_classes_random_or_given():
    Gc = _tiny(c_dim=3)
    lat = sample_latents(Gc, [10, 11, 12, 13])
    _, drawn = z_from_seeds([10, 11, 12, 13], 16, 3)
    np.testing.assert_array_equal(lat.classes, drawn)
    assert torch.equal(lat.c.argmax(1), torch.as_tensor(drawn))
    fixed = sample_latents(Gc, [10, 11], class_idx=2)
    assert fixed.classes.tolist() == [2, 2] and torch.equal(fixed.c, torch.tensor([[0.0, 0, 1], [0, 0, 1]]))
    with pytest.raises(LatentError, match="class_idx"):
        sample_latents(Gc, [1], class_idx=3)


def test_class_idx_on_unconditional_net_is_an_error(G):
    with pytest.raises(LatentError, match="unconditional"):
        sample_latents(G, [1], class_idx=0)


def test_check_ws_broadcasts_w_and_rejects_nan():
    assert check_ws(torch.zeros(2, 4), num_ws=3, w_dim=4).shape == (2, 3, 4)
    bad = torch.zeros(2, 3, 4)
    bad[1, 0, 0] = float("nan")
    with pytest.raises(LatentError, match=r"NaN or inf \(samples \[1\]\)"):
        check_ws(bad, num_ws=3, w_dim=4)
    with pytest.raises(LatentError, match="must be"):
        check_ws(torch.zeros(2, 5, 4), num_ws=3, w_dim=4)


# ---------------------------------------------------------------------- LatentBank
def _stats() -> ImageStatsLabeler:
    return ImageStatsLabeler(names=["brightness", "com_x"])


def test_bank_arrays_do_not_depend_on_chunk_size(G, tmp_path):
    a = LatentBank.create(G, tmp_path / "a", 24, seed=5, truncation_psi=0.8, labelers=[_stats()], batch_size=7)
    b = LatentBank.create(G, tmp_path / "b", 24, seed=5, truncation_psi=0.8, labelers=[_stats()], batch_size=24)
    np.testing.assert_array_equal(a.seeds, b.seeds)
    np.testing.assert_allclose(a.w, b.w, rtol=0, atol=1e-6)
    for name in ("brightness", "com_x"):
        np.testing.assert_allclose(a.labels[name], b.labels[name], rtol=0, atol=1e-5)
    # and the stored w is what sample_latents gives for the stored seeds
    lat = sample_latents(G, a.seeds, truncation_psi=0.8)
    np.testing.assert_allclose(a.w, lat.w.numpy(), rtol=0, atol=1e-6)


class _Interrupt(Exception):
    pass


class _FailingLabeler(ImageStatsLabeler):
    """Image stats that raise on the k-th call (simulates a crash half-way through a bank)."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__(names=["brightness", "asymmetry_lr"])
        self.calls, self.fail_at = 0, fail_at

    def __call__(self, img, ws=None):
        self.calls += 1
        if self.calls == self.fail_at:
            raise _Interrupt
        return super().__call__(img, ws)


def test_resumed_bank_equals_uninterrupted_one(G, tmp_path):
    full = LatentBank.create(G, tmp_path / "full", 27, seed=1, labelers=[_FailingLabeler(None)], batch_size=6)
    with pytest.raises(_Interrupt):
        LatentBank.create(G, tmp_path / "part", 27, seed=1, labelers=[_FailingLabeler(3)], batch_size=6)
    meta = json.loads((tmp_path / "part" / "meta.json").read_text())
    assert meta["done"] == 12  # two chunks of 6 finished before the crash
    with pytest.raises(LatentError, match="incomplete"):
        LatentBank.open(tmp_path / "part")
    resumed_labeler = _FailingLabeler(None)
    part = LatentBank.create(G, tmp_path / "part", 27, seed=1, labelers=[resumed_labeler], batch_size=6)
    assert resumed_labeler.calls == 3  # only the missing chunks (12..27) were computed
    np.testing.assert_array_equal(part.w, full.w)
    np.testing.assert_array_equal(part.seeds, full.seeds)
    for name in full.labels:
        np.testing.assert_array_equal(part.labels[name], full.labels[name])


def test_finished_bank_is_reopened_as_memmaps(G, tmp_path):
    made = LatentBank.create(G, tmp_path / "b", 12, seed=2, labelers=[_stats()], batch_size=5)
    bank = LatentBank.open(tmp_path / "b")
    assert isinstance(bank.w, np.memmap) and isinstance(bank.labels["com_x"], np.memmap)
    assert bank.w.shape == (12, 16) and bank.w.dtype == np.float32
    np.testing.assert_array_equal(bank.w, made.w)
    assert bank.meta["done"] == 12 and bank.meta["label_names"] == ["brightness", "com_x"]
    assert bank.meta["seed"] == 2 and bank.meta["truncation_psi"] == 1.0
    assert len(bank.meta["generator_fingerprint"]) == 64
    assert bank.label_matrix().shape == (12, 2)
    again = LatentBank.create(G, tmp_path / "b", 12, seed=2, labelers=[_stats()])  # complete: nothing recomputed
    np.testing.assert_array_equal(again.w, made.w)


def test_bank_refuses_other_arguments_unless_overwrite(G, tmp_path):
    LatentBank.create(G, tmp_path / "b", 6, seed=2, render=False)
    with pytest.raises(LatentError, match="seed: 2 there vs 3 now"):
        LatentBank.create(G, tmp_path / "b", 6, seed=3, render=False)
    bank = LatentBank.create(G, tmp_path / "b", 6, seed=3, render=False, overwrite=True)
    np.testing.assert_array_equal(bank.seeds, bank_seeds(3, 0, 6))


def test_bank_with_cutoff_stores_raw_w_and_rebuilds_truncated_ws(G, tmp_path):
    bank = LatentBank.create(G, tmp_path / "b", 9, seed=4, truncation_psi=0.5, truncation_cutoff=3, render=False)
    lat = sample_latents(G, bank.seeds, truncation_psi=0.5, truncation_cutoff=3)
    np.testing.assert_allclose(bank.w, lat.w_raw.numpy(), rtol=0, atol=1e-6)
    torch.testing.assert_close(bank.ws(slice(None)), lat.ws, rtol=0, atol=1e-6)
    assert bank.ws(4).shape == (1, G.num_ws, 16)
    assert bank.meta["w_truncated"] is False


def test_ws_only_labeler_runs_without_rendering(G, tmp_path):
    norm = labeler_from_callable(lambda img, ws: ws[:, 0].norm(dim=1), "w_norm", needs_ws=True, needs_images=False)
    bank = LatentBank.create(G, tmp_path / "b", 10, labelers=[norm], batch_size=4)
    assert bank.meta["render"] is False
    np.testing.assert_allclose(bank.labels["w_norm"], np.linalg.norm(bank.w, axis=1), rtol=1e-5)


def test_labeler_returning_nan_is_rejected(G, tmp_path):
    bad = labeler_from_callable(lambda img: torch.full([img.shape[0]], float("nan")), "bad")
    with pytest.raises(LatentError, match="'bad'.*NaN"):
        LatentBank.create(G, tmp_path / "b", 4, labelers=[bad])


def test_open_non_bank_directory_names_the_file(tmp_path):
    with pytest.raises(LatentError, match="meta.json does not exist"):
        LatentBank.open(tmp_path)


# ---------------------------------------------------------------------- WStats
@pytest.fixture(scope="module")
def correlated_w() -> np.ndarray:
    rng = np.random.default_rng(0)
    mix = rng.standard_normal((6, 6))
    return (rng.standard_normal((3000, 6)) @ mix + rng.standard_normal(6)).astype(np.float32)


def test_wstats_match_numpy(correlated_w):
    stats = WStats(reg=0.0, chunk_size=512).fit(correlated_w)
    w64 = correlated_w.astype(np.float64)
    np.testing.assert_allclose(stats.mean_, w64.mean(0), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(stats.cov_, np.cov(w64.T), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.precision_, np.linalg.inv(np.cov(w64.T)), rtol=1e-6, atol=1e-8)
    eigval = np.linalg.eigvalsh(np.cov(w64.T))[::-1]
    np.testing.assert_allclose(stats.explained_variance_, eigval, rtol=1e-9)
    # principal axes: orthonormal and diagonalise the covariance
    np.testing.assert_allclose(stats.components_ @ stats.components_.T, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(stats.components_ @ stats.cov_ @ stats.components_.T, np.diag(eigval), atol=1e-8)


def test_mahalanobis_matches_the_formula_for_numpy_and_torch(correlated_w):
    stats = WStats(reg=0.0).fit(correlated_w)
    x = correlated_w[:5].astype(np.float64) + 1.5
    diff = x - stats.mean_
    expected = np.sqrt(np.einsum("ni,ij,nj->n", diff, np.linalg.inv(np.cov(correlated_w.T.astype(np.float64))), diff))
    np.testing.assert_allclose(stats.mahalanobis(x), expected, rtol=1e-6)
    got = stats.mahalanobis(torch.as_tensor(x[:, None].repeat(3, axis=1)))  # [N, num_ws, w_dim] -> [N, num_ws]
    assert got.shape == (5, 3)
    np.testing.assert_allclose(got[:, 1].numpy(), expected, rtol=1e-5)


def test_distance_quantiles_are_those_of_the_samples(correlated_w):
    stats = WStats().fit(correlated_w)
    dist = stats.mahalanobis(correlated_w)
    assert stats.distance_quantile(0.9) == pytest.approx(np.quantile(dist, 0.9), rel=1e-9)
    assert np.isclose(np.mean(dist <= stats.distance_quantile(0.5)), 0.5, atol=1e-3)


def test_wstats_save_load_and_not_fitted(correlated_w, tmp_path):
    with pytest.raises(NotFittedError):
        WStats().mahalanobis(correlated_w)
    stats = WStats().fit(correlated_w)
    loaded = WStats.load(stats.save(tmp_path / "s.npz"))
    np.testing.assert_array_equal(loaded.mahalanobis(correlated_w[:4]), stats.mahalanobis(correlated_w[:4]))
    with pytest.raises(LatentError, match="NaN"):
        WStats().fit(np.full((4, 2), np.nan))


def test_a_non_finite_w_is_named_by_its_file_and_first_row(tmp_path):
    from stylegan_disentangle.latents.sampling import as_w

    w = np.zeros([10, 4], np.float32)
    w[7, 2] = np.nan
    np.save(tmp_path / "w.npy", w)
    with pytest.raises(LatentError, match=r"w \(.*w\.npy\) contains NaN or inf \(first at row 7\)"):
        as_w(np.load(tmp_path / "w.npy", mmap_mode="r"))
    with pytest.raises(LatentError, match=r"^w contains NaN or inf \(first at row 7\)"):
        as_w(w)


def test_complex_sparse_and_text_codes_are_refused():
    import scipy.sparse

    from stylegan_disentangle.latents.sampling import as_w

    w = np.random.default_rng(0).standard_normal((5, 3))
    for bad, words in ((w.astype(complex), "real numbers"), (scipy.sparse.csr_matrix(w), "sparse matrix"),
                       (np.array([["a", "b"], ["c", "d"]]), "real numbers")):
        with pytest.raises(LatentError, match=words):
            as_w(bad)
    assert as_w(w.astype(object)).dtype == np.float64  # numbers held as objects are numbers
