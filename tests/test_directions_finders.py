"""Direction finders recover planted directions on synthetic W with a known linear label model."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.decomposition import PCA, DictionaryLearning, IncrementalPCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import Lasso, Ridge, RidgeCV
from threadpoolctl import threadpool_limits

from stylegan_disentangle.directions import (
    ClosedFormDirections,
    DirectionSet,
    LinearDirections,
    PCADirections,
    SparseDirections,
    ThreeDCoupledDirections,
)
from stylegan_disentangle.directions._dictionary import learn_dictionary
from stylegan_disentangle.directions._moments import compute_moments, lasso_surrogate, split_mask
from stylegan_disentangle.directions.closed_form import ws_index_of
from stylegan_disentangle.directions.direction_set import to_jsonable
from stylegan_disentangle.errors import LatentError, NotFittedError

D = 24


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _unit(v):
    return v / np.linalg.norm(v)


def _latents(n: int = 4000, seed: int = 0) -> np.ndarray:
    """Correlated, offset W samples [n, D] float32 (like a mapping network's output, not white noise)."""
    rng = np.random.default_rng(seed)
    mix = np.eye(D) + 0.3 * rng.standard_normal((D, D)) / np.sqrt(D)
    return (rng.standard_normal((n, D)) @ mix + 0.5).astype(np.float32)


def _planted(seed: int = 1) -> np.ndarray:
    return _unit(np.random.default_rng(seed).standard_normal(D))


# ---------------------------------------------------------------- PCA
def test_pca_recovers_dominant_variance_axis():
    rng = np.random.default_rng(0)
    u = _planted()
    w = (rng.standard_normal((3000, D)) + 6.0 * rng.standard_normal((3000, 1)) * u).astype(np.float32)
    est = PCADirections(n_components=3).fit(w)
    assert abs(_cos(est.directions_[0], u)) >= 0.99
    assert est.explained_variance_[0] > 20 * est.explained_variance_[1]
    np.testing.assert_allclose(est.std_, np.sqrt(est.explained_variance_))
    assert est.names_ == ["pc0", "pc1", "pc2"]


# The wrapper runs scikit-learn under one BLAS thread (blas_threads=1). scikit-learn's float32 paths (randomized SVD,
# IncrementalPCA) sum in an order that depends on the BLAS thread count, so the guarantee is twofold: under the same
# threading our numbers ARE scikit-learn's (bit for bit), and across thread counts they agree to float32 rounding.
U32 = 2.0**-24  # unit roundoff of float32


def _float32_component_tolerance(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rounding bounds for the first k principal axes and variances of float32 samples w [n, d].

    Each entry of the scatter matrix C = Xc^T Xc is a float32 dot product of length n: its rounding error is about
    sqrt(n) * u * |x||y| (Higham's probabilistic bound), so ||dC||_2 <~ sqrt(n) * u * ||C||_2. An eigenvector moves
    by at most ||dC||_2 / gap_k (gap_k: distance of lambda_k to the nearest other eigenvalue), an eigenvalue by
    ||dC||_2; two independently rounded computations differ by twice that.
    """
    n, _ = w.shape
    xc = w.astype(np.float64) - w.astype(np.float64).mean(axis=0)
    lam = np.linalg.eigvalsh(xc.T @ xc)[::-1]
    dc = np.sqrt(n) * U32 * lam[0]
    gaps = np.array([np.min(np.abs(np.delete(lam, i) - lam[i])) for i in range(k)])
    return 2 * dc / gaps, 2 * dc / lam[:k]


@pytest.mark.parametrize("solver", ["full", "randomized", "covariance_eigh"])
def test_pca_matches_sklearn_exactly_under_the_same_blas_threads(solver):
    w = _latents(2000)
    est = PCADirections(n_components=5, svd_solver=solver, random_state=0).fit(w)
    with threadpool_limits(limits=1, user_api="blas"):  # what PCADirections(blas_threads=1) runs under
        ref = PCA(n_components=5, svd_solver=solver, random_state=0).fit(w)
        ref_proj = ref.transform(w)
    comp = ref.components_.astype(np.float32)
    np.testing.assert_array_equal(est.directions_, comp / np.linalg.norm(comp, axis=1, keepdims=True))
    np.testing.assert_array_equal(est.explained_variance_, ref.explained_variance_)
    np.testing.assert_array_equal(est.mean_, ref.mean_)
    # transform = (w - mean) @ directions^T in float32 over d terms: |error| <= d * u * |w - mean| . |direction|.
    bound = D * U32 * (np.abs(w - ref.mean_) @ np.abs(comp.T))
    assert np.all(np.abs(est.transform(w) - ref_proj) <= 2 * bound + 1e-30)


@pytest.mark.parametrize("solver", ["randomized", "covariance_eigh"])
def test_pca_agrees_across_blas_thread_counts_to_float32_rounding(solver):
    w = _latents(2000)
    one = PCADirections(n_components=5, svd_solver=solver, random_state=0, blas_threads=1).fit(w)
    many = PCADirections(n_components=5, svd_solver=solver, random_state=0, blas_threads=2).fit(w)
    vec_tol, val_rtol = _float32_component_tolerance(w, 5)
    sign = np.sign(np.sum(one.directions_ * many.directions_, axis=1, keepdims=True))
    assert np.all(np.abs(one.directions_ - sign * many.directions_).max(axis=1) <= vec_tol)
    assert np.all(np.abs(one.explained_variance_ / many.explained_variance_ - 1) <= val_rtol)


def test_pca_n_components_as_a_variance_fraction_or_none_is_sklearns():
    w = _latents(2000)
    with threadpool_limits(limits=1, user_api="blas"):
        ref = PCA(n_components=0.8, svd_solver="full").fit(w)
    est = PCADirections(n_components=0.8, svd_solver="full").fit(w)
    assert len(est.names_) == ref.n_components_ and est.explained_variance_ratio_.sum() >= 0.8
    assert len(est.explained_variance_ratio_[:-1]) == 0 or est.explained_variance_ratio_[:-1].sum() < 0.8
    assert len(PCADirections(n_components=None).fit(w[:5]).names_) == 5  # min(N, w_dim)
    for bad, words in ((0, "an integer in"), (1.5, "in \\(0, 1\\)"), (True, "an integer in")):
        with pytest.raises(ValueError, match=words):
            PCADirections(n_components=bad).fit(w)
    with pytest.raises(ValueError, match="incremental=False"):
        PCADirections(n_components=0.5, incremental=True).fit(w)


def test_incremental_pca_matches_sklearn_incremental():
    w = _latents(2500)
    est = PCADirections(n_components=4, incremental=True, batch_size=1000).fit(w)
    with threadpool_limits(limits=1, user_api="blas"):
        ref = IncrementalPCA(n_components=4, batch_size=1000).fit(w)
    comp = ref.components_.astype(np.float32)
    np.testing.assert_array_equal(est.directions_, comp / np.linalg.norm(comp, axis=1, keepdims=True))
    np.testing.assert_array_equal(est.explained_variance_, ref.explained_variance_)


# ---------------------------------------------------------------- closed form
def _sefa_reference(mats, k):
    a = np.concatenate(mats, axis=0).astype(np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    val, vec = np.linalg.eigh(a.T @ a)
    order = np.argsort(val)[::-1][:k]
    return val[order], vec[:, order].T


def _assert_same_up_to_sign(dirs, ref):
    for d, r in zip(dirs, ref):
        assert abs(_cos(d, r)) >= 1 - 1e-6


def test_closed_form_matches_numpy_eigendecomposition_on_dict():
    rng = np.random.default_rng(0)
    weights = {0: rng.standard_normal((8, D)), 1: rng.standard_normal((6, D)), 2: rng.standard_normal((10, D))}
    est = ClosedFormDirections(n_components=5).fit(weights)
    val, vec = _sefa_reference(list(weights.values()), 5)
    np.testing.assert_allclose(est.eigenvalues_, val, rtol=1e-10)
    _assert_same_up_to_sign(est.directions_, vec)
    sub = ClosedFormDirections(n_components=4, layers=[1, 2]).fit(weights)
    val, vec = _sefa_reference([weights[1], weights[2]], 4)
    np.testing.assert_allclose(sub.eigenvalues_, val, rtol=1e-10)
    _assert_same_up_to_sign(sub.directions_, vec)
    assert sub.to_direction_set().layer_ranges == [(1, 3)] * 4
    assert est.to_direction_set().layer_ranges == [None] * 5


def test_closed_form_finds_the_weights_principal_input_direction():
    rng = np.random.default_rng(1)
    u = _planted()
    # every style channel reads mostly u: the top eigenvector must be u
    weights = {i: rng.standard_normal((12, 1)) * 5 * u + 0.1 * rng.standard_normal((12, D)) for i in range(3)}
    est = ClosedFormDirections(n_components=2).fit(weights)
    assert abs(_cos(est.directions_[0], u)) >= 0.99


class _Affine(torch.nn.Module):
    def __init__(self, w_dim, channels, gen):
        super().__init__()
        self.affine = torch.nn.Linear(w_dim, channels)
        with torch.no_grad():
            self.affine.weight.copy_(torch.randn(channels, w_dim, generator=gen))


class _TinyGenerator(torch.nn.Module):
    """Parameter names as in the official StyleGAN2 Generator (only the style affines)."""

    def __init__(self, w_dim=D):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.synthesis = torch.nn.Module()
        self.synthesis.b4 = torch.nn.Module()
        self.synthesis.b4.conv1 = _Affine(w_dim, 8, gen)
        self.synthesis.b4.torgb = _Affine(w_dim, 8, gen)
        self.synthesis.b8 = torch.nn.Module()
        self.synthesis.b8.conv0 = _Affine(w_dim, 8, gen)
        self.synthesis.b8.conv1 = _Affine(w_dim, 6, gen)
        self.synthesis.b8.torgb = _Affine(w_dim, 6, gen)


def test_ws_index_table_matches_stylegan2():
    assert ws_index_of(4, "conv1") == 0 and ws_index_of(4, "torgb") == 1
    assert [ws_index_of(8, x) for x in ("conv0", "conv1", "torgb")] == [1, 2, 3]
    assert [ws_index_of(1024, x) for x in ("conv0", "conv1", "torgb")] == [15, 16, 17]


@pytest.mark.parametrize(
    "torgb, used",
    [
        ("last", ["b4.conv1", "b8.conv0", "b8.conv1", "b8.torgb"]),
        ("all", ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]),
        ("none", ["b4.conv1", "b8.conv0", "b8.conv1"]),
    ],
)
def test_closed_form_on_torch_module_matches_numpy(torgb, used):
    G = _TinyGenerator()
    est = ClosedFormDirections(n_components=6, torgb=torgb).fit(G)
    params = dict(G.named_parameters())
    mats = [params[f"synthesis.{name}.affine.weight"].detach().double().numpy() for name in used]
    val, vec = _sefa_reference(mats, 6)
    np.testing.assert_allclose(est.eigenvalues_, val, rtol=1e-8)
    _assert_same_up_to_sign(est.directions_, vec)
    assert [n.removeprefix("synthesis.").removesuffix(".affine.weight") for n in est.layer_names_] == used
    # the synthesis network alone (no 'synthesis.' prefix) and the state dict give the same answer
    np.testing.assert_array_equal(ClosedFormDirections(6, torgb=torgb).fit(G.synthesis).directions_, est.directions_)
    np.testing.assert_array_equal(ClosedFormDirections(6, torgb=torgb).fit(G.state_dict()).directions_, est.directions_)


def test_closed_form_on_a_real_stylegan2_generator_covers_every_ws_index():
    from tests.helpers import tiny_networks

    G = tiny_networks("skip16")["G_ema"]
    est = ClosedFormDirections(n_components=4).fit(G)
    assert est.layers_ == list(range(G.num_ws))  # every ws index read by a conv, the last one by the final ToRGB
    assert est.directions_.shape == (4, G.w_dim)
    # a unit step along direction k changes the (row-normalised) styles by exactly sqrt(eigenvalue k)
    params = dict(G.named_parameters())
    a = torch.cat([params[name] for name in est.layer_names_]).double()
    a = a / a.norm(dim=1, keepdim=True)
    gain = (a @ torch.from_numpy(est.directions_).double().T).pow(2).sum(0).numpy()
    np.testing.assert_allclose(gain, est.eigenvalues_, rtol=1e-5)
    assert np.all(np.diff(est.eigenvalues_) <= 0)
    sub = ClosedFormDirections(n_components=2, layers=[0, 1, 2]).fit(G).to_direction_set()
    assert sub.layer_ranges == [(0, 3), (0, 3)]


def test_closed_form_rejects_unknown_layers():
    with pytest.raises(ValueError, match="available ws indices"):
        ClosedFormDirections(layers=[9]).fit(_TinyGenerator())
    with pytest.raises(ValueError, match="no style affine"):
        ClosedFormDirections().fit(torch.nn.Linear(3, 3))


# ---------------------------------------------------------------- supervised linear
def test_ridge_recovers_planted_direction_and_matches_sklearn():
    w = _latents()
    a = _planted()
    rng = np.random.default_rng(2)
    y = w @ a * 2.0 + 0.05 * rng.standard_normal(len(w))
    est = LinearDirections(method="ridge", alpha=3.0, val_fraction=0).fit(w, {"yaw": y})
    assert est.names_ == ["yaw"] and est.kinds_ == ["ridge"]
    assert _cos(est.directions_[0], a) >= 0.99
    ref = Ridge(alpha=3.0).fit(w.astype(np.float64), y)
    # The moments are dot products over one chunk of n rows, each rounded to about sqrt(n) * u relative
    # (Higham's probabilistic bound); solving the ridge system multiplies that by its condition number.
    xc = w.astype(np.float64) - w.astype(np.float64).mean(axis=0)
    eig = np.linalg.eigvalsh(xc.T @ xc + 3.0 * np.eye(D))
    cond = eig[-1] / eig[0]
    for x, u in ((w, U32), (w.astype(np.float64), 2.0**-53)):  # float32 chunk products, float64 sums; float64
        got = LinearDirections(method="ridge", alpha=3.0, val_fraction=0).fit(x, {"yaw": y})
        bound = 2 * cond * np.sqrt(len(w)) * u * np.linalg.norm(ref.coef_)
        assert np.linalg.norm(got.coef_[0] - ref.coef_) <= bound
        assert abs(got.intercept_[0] - ref.intercept_) <= bound * np.linalg.norm(w.astype(np.float64).mean(axis=0))


def test_ridge_multi_label_and_heldout_r2():
    w = _latents()
    rng = np.random.default_rng(3)
    a, b = _planted(1), _planted(2)
    y = np.stack([w @ a + 0.1 * rng.standard_normal(len(w)), w @ b + 0.1 * rng.standard_normal(len(w))], 1)
    est = LinearDirections(random_state=0).fit(w, y, label_names=["a", "b"])
    assert _cos(est.directions_[0], a) >= 0.99 and _cos(est.directions_[1], b) >= 0.99
    assert np.all(est.scores_ > 0.95) and np.all(est.scores_ <= 1)
    # pure-noise label: held-out R^2 near zero, not inflated
    noise = LinearDirections(random_state=0).fit(w, rng.standard_normal(len(w)))
    assert noise.scores_[0] < 0.05


def _noisy_anisotropic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """W with a third of its axes 30x narrower, a direction in the wide axes and a label with heavy noise."""
    rng = np.random.default_rng(seed)
    scale = np.where(np.arange(D) < D // 3, 1 / 30, 1.0)
    w = rng.standard_normal((n, D)) * scale + 0.5
    a = np.where(np.arange(D) < D // 3, 0.0, rng.standard_normal(D))
    y = w @ _unit(a) + 1.0 * rng.standard_normal(n)
    return w, _unit(a), y


def test_ridge_auto_alpha_is_sklearn_ridgecvs_gcv_choice():
    w, a, y = _noisy_anisotropic(2000, 7)
    y2 = np.stack([y, w @ _planted(3) + 0.01 * np.random.default_rng(8).standard_normal(len(w))], 1)
    est = LinearDirections(method="ridge", alpha="auto", random_state=0).fit(w, y2, label_names=["noisy", "clean"])
    train = ~split_mask(len(w), 0.1, 0)
    xt = w[train] - w[train].mean(axis=0)
    grid = np.trace(xt.T @ xt) / D * np.logspace(-8.0, 0.0, 33)
    for j in range(2):
        cv = RidgeCV(alphas=grid, store_cv_results=True).fit(w[train], y2[train, j])
        loo = cv.cv_results_.mean(axis=0)  # sklearn's efficient leave-one-out squared errors per alpha
        (hit,) = np.flatnonzero(np.isclose(grid, est.alpha_[j], rtol=1e-9, atol=0))  # the same grid, up to rounding
        # GCV approximates LOO to O(1/n): the chosen penalty's LOO error is within 1 % of sklearn's best
        assert loo[hit] <= loo.min() * 1.01
        ref = Ridge(alpha=est.alpha_[j]).fit(w[train], y2[train, j])
        np.testing.assert_allclose(est.coef_[j], ref.coef_, rtol=1e-7, atol=1e-9 * np.abs(ref.coef_).max())
    # the noisy label needs a real penalty, the clean one almost none
    assert est.alpha_[0] > 100 * est.alpha_[1]


def test_ridge_auto_alpha_follows_the_scale_of_w():
    # A fixed penalty means more or less depending on the units of w; the chosen one scales with the gram, so
    # codes in other units (x 1000) get the same direction and the same held-out R^2.
    w, a, y = _noisy_anisotropic(600, 9)
    auto = LinearDirections(method="ridge", alpha="auto", random_state=0).fit(w, y)
    auto_k = LinearDirections(method="ridge", alpha="auto", random_state=0).fit(w * 1000.0, y)
    np.testing.assert_allclose(auto_k.alpha_, auto.alpha_ * 1e6, rtol=1e-9)
    assert _cos(auto_k.directions_[0], auto.directions_[0]) > 1 - 1e-6
    np.testing.assert_allclose(auto_k.scores_, auto.scores_, rtol=1e-6)
    fixed = LinearDirections(method="ridge", alpha=1.0, random_state=0).fit(w, y)
    fixed_k = LinearDirections(method="ridge", alpha=1.0, random_state=0).fit(w / 1000.0, y)
    assert _cos(fixed.directions_[0], fixed_k.directions_[0]) < 0.99  # alpha=1 is a large penalty on tiny codes


def test_ridge_auto_alpha_rejects_what_it_cannot_do():
    w = _latents(200)
    y = w @ _planted()
    with pytest.raises(ValueError, match="top_bottom_percent"):
        LinearDirections(method="ridge", alpha="auto", top_bottom_percent=10).fit(w, y)
    for bad in ("gcv", None, -1.0, float("nan")):
        with pytest.raises(ValueError, match="'auto'"):
            LinearDirections(method="ridge", alpha=bad).fit(w, y)


def _misread_minority(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A labeler's label: w . a read closely on most rows; on the 15% of rows with high w . c it is read 3 sd too
    high (a confound that fires on part of the data: the tail pulls least squares toward c, not the core)."""
    rng = np.random.default_rng(seed)
    w = _latents(n, seed)
    a, c = _planted(seed + 1), _planted(seed + 2)
    c = _unit(c - (c @ a) * a)
    y = (w @ a + 0.05 * rng.standard_normal(n)).astype(np.float64)
    proj = (w - w.mean(axis=0)) @ c
    y[proj > np.quantile(proj, 0.85)] += 3.0 * y.std()
    return w, a, c, y


def test_huber_loss_keeps_the_direction_a_misread_minority_pulls_ridge_off():
    w, a, c, y = _misread_minority(4000, 11)
    ridge = LinearDirections(method="ridge", alpha="auto", random_state=0).fit(w, y)
    huber = LinearDirections(method="ridge", alpha="auto", loss="huber", random_state=0).fit(w, y)
    assert _cos(ridge.directions_[0], a) < 0.95  # the premise: least squares is pulled toward the confound
    assert _cos(huber.directions_[0], a) > 0.99
    assert abs(_cos(huber.directions_[0], c)) < abs(_cos(ridge.directions_[0], c))
    # the coefficients stay in label units per unit w (the planted slope is 1 along a)
    assert huber.coef_[0] @ a == pytest.approx(1.0, abs=0.05)
    # 'auto' chooses the penalty again on the Huber fit's weights: the tails no longer count as noise
    assert huber.alpha_[0] < ridge.alpha_[0] / 2
    fixed = LinearDirections(method="ridge", alpha=float(ridge.alpha_[0]), loss="huber", random_state=0).fit(w, y)
    np.testing.assert_array_equal(fixed.alpha_, ridge.alpha_)  # a given penalty is kept
    assert _cos(fixed.directions_[0], a) > 0.99
    assert huber.scores_[0] < ridge.scores_[0]  # R^2 charges the tails at full weight; the ridge minimises it


def test_huber_loss_equals_ridge_on_gaussian_errors_and_follows_the_scale_of_w():
    w, a, y = _noisy_anisotropic(3000, 12)
    ridge = LinearDirections(method="ridge", alpha="auto", random_state=0).fit(w, y)
    huber = LinearDirections(method="ridge", alpha="auto", loss="huber", random_state=0).fit(w, y)
    # the same estimand; Huber's efficiency on Gaussian errors is 95 %, so the two differ by sampling noise only
    assert _cos(huber.directions_[0], ridge.directions_[0]) > 0.995
    scaled = LinearDirections(method="ridge", alpha="auto", loss="huber", random_state=0).fit(w * 1000.0, y * 3.0)
    assert _cos(scaled.directions_[0], huber.directions_[0]) > 1 - 1e-5  # lbfgs tolerance, not exactness
    np.testing.assert_allclose(scaled.coef_[0] * 1000.0 / 3.0, huber.coef_[0], rtol=1e-3,
                               atol=1e-3 * np.abs(huber.coef_[0]).max())


def test_huber_refit_warns_with_the_label_name_when_it_stops_early():
    from stylegan_disentangle.directions._robust import huber_from_rows

    w, a, c, y = _misread_minority(1000, 13)
    x = w.astype(np.float64)
    xc = x - x.mean(axis=0)
    coef = np.linalg.solve(xc.T @ xc + np.eye(D), xc.T @ (y - y.mean()))[:, None]
    intercept = np.array([y.mean() - x.mean(axis=0) @ coef[:, 0]])
    with pytest.warns(ConvergenceWarning, match="'yaw'"):
        huber_from_rows(x, y[:, None], coef, intercept, 1.0, max_iter=1, names=["yaw"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        b, b0, alphas = huber_from_rows(x, y[:, None], coef, intercept, 1.0, names=["yaw"])
    assert _cos(b[:, 0], a) > 0.99 and alphas[0] == 1.0


def test_huber_loss_rejects_what_it_cannot_do():
    w = _latents(200)
    y = w @ _planted()
    with pytest.raises(ValueError, match="top_bottom_percent"):
        LinearDirections(method="ridge", loss="huber", top_bottom_percent=10).fit(w, y)
    with pytest.raises(ValueError, match="loss must be one of"):
        LinearDirections(method="ridge", loss="l1").fit(w, y)
    for bad in (0.9, None, "1.35", True, float("nan")):
        with pytest.raises(ValueError, match="epsilon must be a number >= 1"):
            LinearDirections(method="ridge", loss="huber", epsilon=bad).fit(w, y)


@pytest.mark.parametrize("method", ["svm", "logistic"])
def test_classifiers_with_top_bottom_recover_planted_direction(method):
    w = _latents(6000)
    a = _planted()
    y = w @ a + 0.02 * np.random.default_rng(4).standard_normal(len(w))
    est = LinearDirections(method=method, top_bottom_percent=10, C=10.0, random_state=0).fit(w, {"smile": y})
    assert est.kinds_ == [method]
    assert _cos(est.directions_[0], a) >= 0.99
    assert est.scores_[0] >= 0.95


def test_auto_uses_svm_for_binary_labels():
    w = _latents(6000)
    a = _planted()
    y = (w @ a - np.median(w @ a) + 0.05 * np.random.default_rng(5).standard_normal(len(w))) > 0
    est = LinearDirections(random_state=0, C=10.0).fit(w, y.astype(int))
    assert est.kinds_ == ["svm"]
    assert _cos(est.directions_[0], a) >= 0.99


def test_linear_direction_points_towards_increasing_label():
    w = _latents()
    a = _planted()
    for kw in (dict(method="ridge"), dict(method="logistic", top_bottom_percent=5)):
        est = LinearDirections(random_state=0, **kw).fit(w, -(w @ a))
        assert _cos(est.directions_[0], -a) > 0.9


def test_linear_rejects_constant_label():
    with pytest.raises(ValueError, match="constant"):
        LinearDirections().fit(_latents(100), np.ones(100))


# ---------------------------------------------------------------- sparse
def _independent_latents(n=4000, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32) + 0.3


def test_lasso_finds_planted_support():
    w = _independent_latents()
    rng = np.random.default_rng(6)
    beta = np.zeros(D)
    beta[[3, 7, 11]] = [1.0, -0.6, 0.8]
    y = w @ beta + 0.1 * rng.standard_normal(len(w))
    est = SparseDirections("lasso", alpha=0.02, random_state=0).fit(w, {"nose": y})
    assert est.support_[0].tolist() == [3, 7, 11]
    assert _cos(est.directions_[0], beta) >= 0.99
    assert est.scores_[0] > 0.95


def test_lasso_via_moments_matches_sklearn_lasso_on_raw_rows():
    w = _independent_latents(1500).astype(np.float64)
    rng = np.random.default_rng(7)
    beta = np.zeros(D)
    beta[[0, 5]] = [0.7, 0.4]
    y = w @ beta + 0.3 * rng.standard_normal(len(w))
    (m,) = compute_moments(w, y[:, None])
    x_s, y_s = lasso_surrogate(m)
    ours = Lasso(alpha=0.05, fit_intercept=False, tol=1e-10, max_iter=100000).fit(x_s, y_s[:, 0]).coef_
    ref = Lasso(alpha=0.05, tol=1e-10, max_iter=100000).fit(w, y).coef_
    np.testing.assert_allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize("method", ["elasticnet", "multitask"])
def test_elasticnet_and_multitask_support(method):
    w = _independent_latents()
    rng = np.random.default_rng(8)
    b1, b2 = np.zeros(D), np.zeros(D)
    b1[[2, 9]] = [1.0, 0.5]
    b2[[2, 9]] = [-0.4, 1.0]
    y = np.stack([w @ b1, w @ b2], 1) + 0.05 * rng.standard_normal((len(w), 2))
    est = SparseDirections(method, alpha=0.02, l1_ratio=0.9, random_state=0).fit(w, y, label_names=["l", "r"])
    for k, b in enumerate((b1, b2)):
        assert est.support_[k].tolist() == [2, 9]
        assert _cos(est.directions_[k], b) >= 0.99


def test_sparse_drops_labels_without_signal_with_warning():
    w = _independent_latents()
    y = {"real": w[:, 4] * 1.0, "noise": np.random.default_rng(9).standard_normal(len(w))}
    with pytest.warns(UserWarning, match="noise"):
        est = SparseDirections("lasso", alpha=0.2).fit(w, y)
    assert est.names_ == ["real"] and est.dropped_ == ["noise"]


def _planted_maps(n=2500, side=8, seed=0, sparse_codes=False):
    """Label maps [n, side, side] = baseline + 3 localized blobs whose amplitudes depend on w along planted dirs.

    Dense codes are linear in w; sparse codes are relu(w . d - 0.8) (about 20% active), whose least-squares
    regression on Gaussian w still points along d (Stein's lemma).
    """
    rng = np.random.default_rng(seed)
    w = _independent_latents(n, seed)
    yy, xx = np.mgrid[0:side, 0:side]
    centres = [(1.5, 1.5), (1.5, 6), (6, 3.5)]
    atoms = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5) for cy, cx in centres]).reshape(3, -1)
    atoms[atoms < 0.05] = 0
    dirs = np.stack([_unit(rng.standard_normal(D)) for _ in range(3)])
    codes = (w - 0.3) @ dirs.T
    if sparse_codes:
        codes = np.maximum(codes - 0.8, 0.0)
    maps = 2.0 + codes @ atoms + 0.01 * rng.standard_normal((n, side * side))
    return w, maps.reshape(n, side, side), atoms, dirs


def test_sparse_pca_on_label_maps_recovers_localized_atoms_and_directions():
    w, maps, atoms, dirs = _planted_maps(n=1500)
    est = SparseDirections("sparse_pca", n_components=3, code_alpha=2.0, random_state=0)
    est.fit(w, {"depth": maps})
    assert est.components_.shape == (3, 64) and est.label_shape_ == (8, 8)
    assert est.names_ == ["depth_atom0", "depth_atom1", "depth_atom2"]
    for atom, d in zip(atoms, dirs):
        match = int(np.argmax([abs(_cos(c, atom)) for c in est.components_]))
        assert abs(_cos(est.components_[match], atom)) >= 0.95
        assert abs(_cos(est.directions_[match], d)) >= 0.95
    ds = est.to_direction_set()
    assert ds.extras["components"].shape == (3, 64) and ds.info["label_shape"] == [8, 8]


def test_dictionary_learning_recovers_atoms_of_sparse_codes_and_their_directions():
    w, maps, atoms, dirs = _planted_maps(n=1500, seed=1, sparse_codes=True)
    est = SparseDirections("dictionary", n_components=3, code_alpha=0.5, random_state=0)
    est.fit(w, maps.reshape(len(w), -1))
    assert est.label_shape_ == (64,)
    for atom, d in zip(atoms, dirs):
        match = int(np.argmax([abs(_cos(c, atom)) for c in est.components_]))
        assert abs(_cos(est.components_[match], atom)) >= 0.98
        assert _cos(est.directions_[match], d) >= 0.9  # relu codes: the direction is noisier than for linear codes
    np.testing.assert_allclose(est.label_center_, 2.0, atol=0.05)


def test_refit_with_another_method_drops_stale_attributes():
    w, maps, _, _ = _planted_maps(n=600)
    est = SparseDirections("sparse_pca", n_components=3, code_alpha=2.0, random_state=0).fit(w, maps)
    assert hasattr(est, "components_")
    est.set_params(method="lasso", alpha=0.01).fit(w, {"a": w[:, 3]})
    assert not hasattr(est, "components_") and est.names_ == ["a"]
    assert "components" not in est.to_direction_set().extras


def test_vectorized_dictionary_learning_reaches_sklearns_objective():
    _, maps, _, _ = _planted_maps(n=400, seed=2, sparse_codes=True)
    y = maps.reshape(400, -1)
    y = y - np.median(y, axis=0)
    alpha = 0.5
    atoms, codes, _ = learn_dictionary(y, 3, alpha, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = DictionaryLearning(
            3, alpha=alpha, fit_algorithm="cd", transform_algorithm="lasso_cd", transform_alpha=alpha, random_state=0
        ).fit(y)
        ref_codes = ref.transform(y)

    def objective(a, c):
        r = y - c @ a
        return 0.5 * np.sum(r * r) + alpha * np.abs(c).sum()

    assert objective(atoms, codes) <= objective(ref.components_, ref_codes) * (1 + 1e-4)
    np.testing.assert_array_less(np.linalg.norm(atoms, axis=1), 1 + 1e-9)


# ---------------------------------------------------------------- estimator protocol
FINDERS = [
    (PCADirections(n_components=3), False),
    (LinearDirections(method="ridge"), True),
    (LinearDirections(method="svm", top_bottom_percent=10), True),
    (SparseDirections("lasso", alpha=0.01), True),
    # scalar labels only (the map labels it would decompose are absent: global directions); tuple-valued params
    (ThreeDCoupledDirections(n_atoms=2, random_state=0), True),
]


@pytest.mark.parametrize("est, supervised", FINDERS)
def test_not_fitted_error_before_fit(est, supervised):
    est = clone(est)
    with pytest.raises(NotFittedError, match="not fitted"):
        est.transform(_latents(10))
    with pytest.raises(NotFittedError):
        est.to_direction_set()


def test_closed_form_not_fitted():
    with pytest.raises(NotFittedError):
        ClosedFormDirections().to_direction_set()


@pytest.mark.parametrize("est, supervised", FINDERS)
def test_clone_get_params_and_to_direction_set(est, supervised, tmp_path):
    params = est.get_params()
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    w = _latents(2000)
    y = {"t": w @ _planted()} if supervised else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fitted = twin.fit(w, y) if supervised else twin.fit(w)
    assert fitted is twin
    coords = twin.transform(w[:5])
    assert coords.shape == (5, len(twin.names_))
    np.testing.assert_allclose(coords, (w[:5] - twin.mean_) @ twin.directions_.T, rtol=1e-4, atol=1e-4)
    ds = twin.to_direction_set(checkpoint_sha256="00" * 32, seed=3)
    assert isinstance(ds, DirectionSet) and ds.n_samples == 2000 and ds.seed == 3
    # the set holds the params as JSON gives them back (tuples as lists), and they rebuild the estimator
    assert ds.params == to_jsonable(params)
    assert to_jsonable(type(est)(**ds.params).get_params()) == ds.params
    np.testing.assert_allclose([hi for _, hi in ds.step_ranges], 3 * twin.std_, rtol=1e-6)
    ds.save(tmp_path / "d")
    assert DirectionSet.load(tmp_path / "d") == ds
    np.testing.assert_allclose(np.linalg.norm(twin.directions_, axis=1), 1, atol=1e-6)


def test_bad_latents_raise_latent_error():
    with pytest.raises(LatentError, match="w_dim"):
        PCADirections().fit(np.zeros((10, 3, 4)))
    bad = _latents(50)
    bad[7, 2] = np.nan
    with pytest.raises(LatentError, match="NaN"):
        LinearDirections().fit(bad, np.arange(50.0))
    with pytest.raises(LatentError, match="rows"):
        LinearDirections().fit(_latents(50), np.arange(49.0))


def test_pca_n_components_takes_numpy_numbers():
    w = _latents(500)
    assert len(PCADirections(n_components=np.int64(3)).fit(w).names_) == 3
    assert len(PCADirections(n_components=np.float32(3)).fit(w).names_) == 3
