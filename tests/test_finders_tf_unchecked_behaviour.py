"""Behaviour of the direction finders, their moment / robust solvers and the TF conversion that no other test pins.

Each test checks one behaviour against an independently computed answer (numpy on the raw rows, a planted
boundary, a hand-made TF variable) on tiny data.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

from stylegan_disentangle.checkpoints import tf_convert
from stylegan_disentangle.checkpoints.unpickler import TFNetworkDescription
from stylegan_disentangle.directions import (
    ClosedFormDirections,
    DirectionSet,
    LinearDirections,
    PCADirections,
    SparseDirections,
    name_directions,
    orthogonalize,
)
from stylegan_disentangle.directions._moments import (
    compute_moments,
    r2_from_moments,
    ridge_alpha_grid,
    select_ridge_alpha,
    split_mask,
)
from stylegan_disentangle.directions._robust import huber_from_rows, mad_scale
from stylegan_disentangle.directions.closed_form import affine_weights, ws_index_of
from stylegan_disentangle.errors import CheckpointError
from stylegan_disentangle.networks import Discriminator, Generator
from tests.helpers import perturbed
from tests.official_fixtures import to_tf_variables


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# --- PCA ------------------------------------------------------------------------------------------------------------

def test_pca_variance_fraction_with_a_randomized_solver_is_refused_with_our_message():
    w = _rng(0).normal(size=(40, 6))
    with pytest.raises(ValueError, match="needs svd_solver 'auto', 'full' or 'covariance_eigh', got 'randomized'"):
        PCADirections(n_components=0.5, svd_solver="randomized").fit(w)


def test_pca_more_directions_than_min_n_wdim_is_refused_with_the_allowed_range():
    w = _rng(1).normal(size=(40, 5))
    with pytest.raises(ValueError, match=r"n_components must be an integer in \[1, min\(N, w_dim\)\] = \[1, 5\]"):
        PCADirections(n_components=6).fit(w)


# --- closed form (SeFa) ---------------------------------------------------------------------------------------------

def test_closed_form_zero_affine_row_counts_for_nothing():
    """A style channel whose affine row is all zero changes no style: normalising must not divide by its zero norm."""
    a = _rng(2).normal(size=(5, 4))
    with_zero = np.vstack([a, np.zeros((1, 4))])
    ref = ClosedFormDirections(n_components=4).fit({0: a})
    got = ClosedFormDirections(n_components=4).fit({0: with_zero})
    assert np.isfinite(got.directions_).all()
    np.testing.assert_allclose(got.eigenvalues_, ref.eigenvalues_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.directions_, ref.directions_, atol=1e-6)


def test_closed_form_directions_have_their_largest_entry_positive():
    """Attribute doc: 'sign: largest entry positive' — and they are the eigenvectors of the row-normalised gram."""
    rng = _rng(3)
    for seed in range(4):
        a = np.random.default_rng(seed).normal(size=(7, 5)) * rng.uniform(0.5, 3.0, size=(7, 1))
        est = ClosedFormDirections(n_components=None).fit({0: a})
        d = est.directions_.astype(np.float64)
        idx = np.argmax(np.abs(d), axis=1)
        assert (d[np.arange(d.shape[0]), idx] > 0).all()
        an = a / np.linalg.norm(a, axis=1, keepdims=True)
        gram = an.T @ an
        np.testing.assert_allclose(gram @ d.T, d.T * est.eigenvalues_[None], atol=1e-5)


# --- linear (standardized classifiers) ------------------------------------------------------------------------------

def _planted_binary(n: int, d: int, seed: int, constant_col: int | None = None):
    rng = _rng(seed)
    w = rng.normal(size=(n, d))
    normal = _unit(rng.normal(size=d))
    if constant_col is not None:
        w[:, constant_col] = 3.0
        normal[constant_col] = 0.0
        normal = _unit(normal)
    y = (w @ normal > 0).astype(np.float64)
    return w, normal, y


def test_standardized_svm_keeps_a_constant_w_coordinate_out_of_the_direction():
    w, normal, y = _planted_binary(300, 5, 4, constant_col=2)
    est = LinearDirections(method="svm", svm_mode="standardized", random_state=0).fit(w, y)
    d = est.directions_[0].astype(np.float64)
    assert np.isfinite(d).all()
    assert d[2] == 0.0
    assert d @ normal > 0.95


@pytest.mark.parametrize("kw", [dict(method="svm", svm_mode="standardized"), dict(method="logistic")])
def test_standardized_classifier_on_a_binary_label_points_toward_its_larger_value(kw):
    w, normal, y = _planted_binary(300, 4, 5)
    est = LinearDirections(random_state=0, **kw).fit(w, {"smile": y * 2.0 - 1.0})  # classes -1 / +1
    assert est.directions_[0].astype(np.float64) @ normal > 0.95


def test_ridge_on_top_bottom_rows_scores_validation_rows_at_the_half_way_threshold():
    """0/1 targets regressed: a row is predicted positive when its fit exceeds 0.5; a wide margin scores 1."""
    rng = _rng(6)
    w = rng.normal(size=(400, 3))
    normal = _unit([1.0, -0.5, 0.25])
    score = w @ normal
    est = LinearDirections(method="ridge", top_bottom_percent=25, alpha=1e-3, val_fraction=0.3,
                           random_state=0).fit(w, score)
    assert est.n_val_[0] == 60
    assert est.scores_[0] == 1.0


# --- moments --------------------------------------------------------------------------------------------------------

def test_moments_of_masked_groups_are_each_groups_own_centred_sums():
    rng = _rng(7)
    w = rng.normal(size=(300, 4)) + 2.0
    y = rng.normal(size=(300, 2)) * 3.0 + w[:, :2]
    mask = np.zeros(300, dtype=bool)
    mask[:100] = True  # the first rows (whose mean is the shift) and the rest: groups with other means
    w[~mask] += 5.0
    y[~mask] -= 7.0
    for group, m in zip([mask, ~mask], compute_moments(w, y, masks=[mask, ~mask], chunk_size=64)):
        x, t = w[group], y[group]
        xc, tc = x - x.mean(axis=0), t - t.mean(axis=0)
        assert m.n == group.sum()
        np.testing.assert_allclose(m.mean, x.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(m.y_mean, t.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(m.gram, xc.T @ xc, rtol=1e-10)
        np.testing.assert_allclose(m.cross, xc.T @ tc, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(m.y_ss, (tc**2).sum(axis=0), rtol=1e-10)


def test_r2_from_moments_is_one_minus_sse_over_sst_for_any_model():
    rng = _rng(8)
    w = rng.normal(size=(200, 3)) + 1.0
    y = w @ np.array([[1.0], [2.0], [-1.0]]) + rng.normal(size=(200, 1)) + 4.0
    coef = np.array([[0.9], [2.1], [-1.2]])
    intercept = np.array([3.0])  # off by about one: the constant offset must count in the error
    (m,) = compute_moments(w, y)
    sse = ((y - w @ coef - intercept) ** 2).sum(axis=0)
    sst = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    np.testing.assert_allclose(r2_from_moments(m, coef, intercept), 1.0 - sse / sst, rtol=1e-10)


def test_gcv_error_counts_the_intercept_as_a_degree_of_freedom():
    """GCV(alpha) = n RSS / (n - tr H)^2 with H the hat matrix of ridge with an (unpenalized) intercept."""
    rng = _rng(9)
    n, d = 30, 4
    w = rng.normal(size=(n, d))
    y = w @ rng.normal(size=(d, 1)) + rng.normal(size=(n, 1))
    (m,) = compute_moments(w, y)
    alphas = ridge_alpha_grid(m, num=5)
    _, gcv = select_ridge_alpha(m, alphas)
    xc = w - w.mean(axis=0)
    for i, alpha in enumerate(alphas):
        hat = np.full((n, n), 1.0 / n) + xc @ np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T)
        resid = y[:, 0] - hat @ y[:, 0]
        expected = n * (resid @ resid) / (n - np.trace(hat)) ** 2
        assert gcv[i, 0] == pytest.approx(expected, rel=1e-9)


def test_gcv_tie_goes_to_the_largest_penalty():
    rng = _rng(10)
    w = rng.normal(size=(20, 3))
    y = np.full((20, 1), 2.5)  # every penalty fits a constant label exactly: GCV is 0 for all
    (m,) = compute_moments(w, y)
    alphas = np.array([0.1, 1.0, 10.0])
    chosen, gcv = select_ridge_alpha(m, alphas)
    np.testing.assert_array_equal(gcv, 0.0)
    assert chosen[0] == 10.0


@pytest.mark.parametrize("fraction", [1.0, 1.5, -0.2])
def test_split_mask_refuses_a_fraction_outside_zero_one(fraction):
    with pytest.raises(ValueError, match=r"val_fraction must be in \[0, 1\)"):
        split_mask(100, fraction, 0)


# --- Huber ----------------------------------------------------------------------------------------------------------

def test_huber_intercept_is_in_the_units_of_uncentred_w():
    rng = _rng(11)
    n = 400
    w = rng.normal(size=(n, 3)) + np.array([5.0, -3.0, 2.0])
    b = np.array([1.0, 0.5, -2.0])
    y = (w @ b + 7.0 + 0.1 * rng.standard_t(3, size=n))[:, None]
    xc = w - w.mean(axis=0)
    coef = np.linalg.solve(xc.T @ xc + np.eye(3), xc.T @ (y - y.mean()))
    intercept = y.mean(axis=0) - w.mean(axis=0) @ coef
    hc, hi, _ = huber_from_rows(w, y, coef, intercept, 1.0)
    np.testing.assert_allclose(hc[:, 0], b, atol=0.05)
    assert hi[0] == pytest.approx(7.0, abs=0.2)
    assert np.median(y[:, 0] - w @ hc[:, 0] - hi[0]) == pytest.approx(0.0, abs=0.05)


# --- sparse coding of label maps ------------------------------------------------------------------------------------

def test_atoms_of_two_label_maps_at_once_are_refused():
    rng = _rng(12)
    w = rng.normal(size=(30, 4))
    maps = {"depth": rng.normal(size=(30, 3, 3)), "albedo": rng.normal(size=(30, 3, 3))}
    with pytest.raises(ValueError, match=r"learns atoms of one label map; got 2 labels \['depth', 'albedo'\]"):
        SparseDirections("dictionary", n_components=2).fit(w, maps)


def test_label_maps_with_another_row_count_than_w_are_refused():
    rng = _rng(13)
    with pytest.raises(ValueError, match="label maps have 29 rows but w has 30"):
        SparseDirections("sparse_pca", n_components=2).fit(rng.normal(size=(30, 4)), rng.normal(size=(29, 3, 3)))


def test_more_atoms_than_map_entries_are_refused():
    rng = _rng(14)
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 4\], got 5"):
        SparseDirections("dictionary", n_components=5).fit(rng.normal(size=(30, 4)), rng.normal(size=(30, 2, 2)))


# --- orthogonalize --------------------------------------------------------------------------------------------------

def test_orthogonalize_against_no_condition_only_normalises():
    np.testing.assert_allclose(orthogonalize(np.array([3.0, 4.0]), []), [0.6, 0.8], rtol=1e-15)
    per_layer = np.arange(1.0, 7.0).reshape(1, 2, 3)
    out = orthogonalize(per_layer, [])
    np.testing.assert_allclose(out, per_layer / np.linalg.norm(per_layer), rtol=1e-15)


def test_orthogonalize_twice_records_both_conditions_in_order():
    rng = _rng(15)
    vecs = rng.normal(size=(3, 6))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ds = DirectionSet(["age", "glasses", "smile"], vecs, method="linear")
    once = orthogonalize(ds, "glasses")
    twice = orthogonalize(once, "smile")
    assert twice.info["conditioned_on"] == {"age": ["glasses", "smile"], "smile": ["glasses"], "glasses": ["smile"]}


# --- naming ---------------------------------------------------------------------------------------------------------

def test_naming_reads_effects_per_unit_step_whatever_the_scale_of_the_given_vectors():
    rng = _rng(16)
    w = rng.normal(size=(500, 4)) * np.array([2.0, 1.0, 1.0, 0.5])
    y = {"yaw": 0.5 * w[:, 0] - 0.25 * w[:, 3] + 0.01 * rng.normal(size=500)}
    unit = np.eye(4)[[0, 3]]
    ref = name_directions(unit, w, y, alpha=1e-6)
    scaled = name_directions(unit * np.array([[5.0], [0.1]]), w, y, alpha=1e-6)
    np.testing.assert_allclose(ref.per_unit[:, 0], [0.5, -0.25], atol=2e-3)
    np.testing.assert_allclose(scaled.per_unit, ref.per_unit, rtol=1e-12)
    np.testing.assert_allclose(scaled.effects, ref.effects, rtol=1e-12)


def test_naming_refuses_a_name_count_that_differs_from_the_direction_count():
    rng = _rng(17)
    w = rng.normal(size=(50, 4))
    with pytest.raises(ValueError, match="1 names for 2 directions"):
        name_directions(np.eye(4)[:2], w, {"yaw": w[:, 0]}, names=["only"])


def test_naming_refuses_samples_of_another_w_dim():
    rng = _rng(18)
    w = rng.normal(size=(50, 5))
    with pytest.raises(ValueError, match="w has w_dim 5 but the directions have 4"):
        name_directions(np.eye(4)[:2], w, {"yaw": w[:, 0]})


def test_names_computed_for_one_set_are_not_applied_to_another():
    rng = _rng(19)
    w = rng.normal(size=(80, 4))
    ds = DirectionSet(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    result = name_directions(ds, w, {"yaw": w[:, 0] + 0.1 * rng.normal(size=80)})
    other = DirectionSet(["a", "c"], np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(ValueError, match=r"computed for directions \['a', 'b'\], not \['a', 'c'\]"):
        result.apply(other)


# --- TF conversion --------------------------------------------------------------------------------------------------

G_TF = dict(latent_size=8, label_size=0, dlatent_size=8, resolution=16, num_channels=3, mapping_layers=2,
            fmap_base=64, fmap_max=16, architecture="skip")
D_TF = dict(label_size=0, resolution=16, num_channels=3, architecture="resnet", fmap_base=64, fmap_max=16,
            mbstd_group_size=2)


@pytest.mark.parametrize("extra", [dict(fmap_decay=0.5), dict(fmap_min=4)])
def test_tf_generator_with_fmap_decay_or_min_is_refused(extra):
    with pytest.raises(CheckpointError, match="fmap_decay / fmap_min other than 1"):
        tf_convert.generator_kwargs_from_tf({**G_TF, **extra})


def test_tf_generator_option_the_converter_does_not_know_is_refused_by_name():
    with pytest.raises(CheckpointError, match=r"TF generator has options this converter does not understand: "
                                              r"\['mystery_option'\]"):
        tf_convert.generator_kwargs_from_tf({**G_TF, "mystery_option": 3})
    with pytest.raises(CheckpointError, match=r"TF discriminator has options .*\['mystery_option'\]"):
        tf_convert.discriminator_kwargs_from_tf({**D_TF, "mystery_option": 3})


def _tf_generator_variables(seed: int = 1) -> tuple[Generator, dict[str, np.ndarray]]:
    G = perturbed(Generator(**tf_convert.generator_kwargs_from_tf(G_TF)), seed)
    return G, dict(to_tf_variables(G, tf_convert._G_RULES, "generator"))


def _tf_net(kwargs: dict, variables: dict[str, np.ndarray]) -> TFNetworkDescription:
    return TFNetworkDescription(state=dict(name="G", static_kwargs=dict(kwargs), variables=list(variables.items())))


@pytest.mark.parametrize("shape", [(3,), (1,)])  # (1,) would broadcast into the 8 biases if it were copied
def test_tf_variable_of_the_wrong_shape_is_refused(shape):
    _, variables = _tf_generator_variables()
    variables["mapping/Dense0/bias"] = np.ones(shape, dtype=np.float32)
    with pytest.raises(CheckpointError, match=rf"mapping/Dense0/bias has shape \({shape[0]},\) after conversion, "
                                              r"expected \(8,\) for mapping.fc0.bias"):
        tf_convert.convert_tf_generator(_tf_net(G_TF, variables))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_tf_variable_holding_nan_or_inf_is_refused(bad):
    _, variables = _tf_generator_variables()
    value = variables["synthesis/8x8/Conv1/weight"].copy()
    value[0, 1, 2, 3] = bad
    variables["synthesis/8x8/Conv1/weight"] = value
    with pytest.raises(CheckpointError, match=r"synthesis/8x8/Conv1/weight holds 1 NaN or inf value\(s\) of "):
        tf_convert.convert_tf_generator(_tf_net(G_TF, variables))


# --- batch 2: PCA extras, SeFa inputs, linear validation -------------------------------------------------------------

def test_pca_direction_set_stores_the_variance_ratios_of_a_known_covariance():
    rng = _rng(20)
    scales = np.array([4.0, 2.0, 1.0, 0.5])
    w = rng.normal(size=(4000, 4)) * scales
    ds = PCADirections(n_components=2).fit(w).to_direction_set()
    total = np.var(w, axis=0, ddof=1).sum()
    ratio = ds.extras["explained_variance_ratio"]
    np.testing.assert_allclose(ratio, scales[:2] ** 2 / (scales**2).sum(), rtol=0.1)  # sampling: a few % at N=4000
    np.testing.assert_allclose(ds.extras["explained_variance"] / total, ratio, rtol=1e-6)


@pytest.mark.parametrize("resolution", [12, 2, 3])
def test_ws_index_of_refuses_a_block_resolution_that_is_not_a_power_of_two_from_4(resolution):
    with pytest.raises(ValueError, match=f"block resolution must be a power of two >= 4, got {resolution}"):
        ws_index_of(resolution, "conv0")


def test_affine_weights_of_something_that_is_neither_module_nor_dict_is_a_type_error():
    with pytest.raises(TypeError, match="expected a generator module or a state dict, got list"):
        affine_weights([np.eye(3)])


def test_closed_form_stacks_a_list_of_weights_given_for_one_ws_index():
    rng = _rng(21)
    a, b = rng.normal(size=(3, 4)), rng.normal(size=(5, 4))
    listed = ClosedFormDirections(n_components=4).fit({0: [a, b], 2: b})
    stacked = ClosedFormDirections(n_components=4).fit({0: np.vstack([a, b]), 2: b})
    np.testing.assert_allclose(listed.eigenvalues_, stacked.eigenvalues_, rtol=1e-12)
    np.testing.assert_allclose(listed.directions_, stacked.directions_, atol=1e-6)
    assert listed.layer_names_ == ["ws0[0]", "ws0[1]", "ws2[0]"]


@pytest.mark.parametrize("alpha", [-1e-3, -0.5])
def test_linear_refuses_a_negative_ridge_penalty(alpha):
    w = _rng(22).normal(size=(30, 3))
    with pytest.raises(ValueError, match="alpha must be a number >= 0 or 'auto'"):
        LinearDirections(method="ridge", alpha=alpha).fit(w, w[:, 0])


def test_linear_needs_four_rows_left_after_dropping_invalid_labels():
    rng = _rng(23)
    w = rng.normal(size=(20, 3))
    y = np.full(20, -1.0)
    y[:3] = [0.0, 1.0, 0.5]
    with pytest.raises(ValueError, match=r"'smile': 3 rows remain after dropping invalid_value=-1.0; need at least 4"):
        LinearDirections(method="svm", invalid_value=-1.0).fit(w, {"smile": y})


def test_interfacegan_svm_uses_the_given_c():
    """A binary label with no validation split trains on every row: the normal is sklearn SVC(kernel='linear', C)'s."""
    rng = _rng(24)
    w = rng.normal(size=(120, 3))
    y = (w @ np.array([1.0, 0.5, 0.0]) + 0.8 * rng.normal(size=120) > 0).astype(np.float64)  # overlapping classes
    soft = LinearDirections(method="svm", C=0.01, val_fraction=0, random_state=0).fit(w, y)
    ref_soft = SVC(kernel="linear", C=0.01).fit(w, y).coef_[0]
    ref_hard = SVC(kernel="linear", C=1.0).fit(w, y).coef_[0]
    assert np.linalg.norm(ref_soft - ref_hard) > 0.1 * np.linalg.norm(ref_hard)  # the premise: C matters here
    np.testing.assert_allclose(soft.coef_[0], ref_soft, atol=0.02 * np.linalg.norm(ref_soft))  # libsvm tol 1e-3


@pytest.mark.parametrize("n", [101, 103])
def test_standardized_top_bottom_50_percent_puts_every_row_in_exactly_one_class(n):
    rng = _rng(25)
    w = rng.normal(size=(n, 3))
    est = LinearDirections(method="logistic", top_bottom_percent=50, val_fraction=0).fit(w, w[:, 0])
    assert est.n_train_[0] == n and est.n_val_[0] == 0


def test_a_random_state_object_seeds_the_split_reproducibly():
    rng = _rng(26)
    w = rng.normal(size=(200, 3))
    y = w @ np.array([1.0, -1.0, 0.5]) + 0.5 * rng.normal(size=200)
    fits = [LinearDirections(method="svm", top_bottom_percent=30, random_state=np.random.RandomState(5)).fit(w, y)
            for _ in range(2)]
    np.testing.assert_array_equal(fits[0].coef_, fits[1].coef_)
    assert fits[0].scores_[0] == fits[1].scores_[0]


def test_classifier_fit_reports_the_mean_of_all_rows():
    rng = _rng(27)
    w = rng.normal(size=(90, 3)) + np.array([1.0, -2.0, 3.0])
    est = LinearDirections(method="svm", chunk_size=32, random_state=0).fit(w, (w[:, 0] > 1.0).astype(float))
    np.testing.assert_allclose(est.mean_, w.mean(axis=0), rtol=1e-12)


@pytest.mark.parametrize(("n", "fraction"), [(10, 0.1), (20, 0.95), (3, 0.5)])
def test_split_mask_holds_out_nothing_when_either_side_would_have_under_two_rows(n, fraction):
    assert split_mask(n, fraction, 0) is None


def test_split_mask_holds_out_the_rounded_fraction():
    mask = split_mask(50, 0.1, 0)
    assert mask.dtype == bool and mask.sum() == 5
    np.testing.assert_array_equal(mask, split_mask(50, 0.1, 0))


def test_mad_scale_is_the_gaussian_consistent_median_absolute_deviation():
    resid = np.array([[-1.0, 10.0], [0.0, 10.0], [1.0, 12.0], [2.0, 10.0], [5.0, 6.0]])
    # column 0: median 1, absolute deviations [2, 1, 0, 1, 4] -> 1; column 1: median 10, deviations [0, 0, 2, 0, 4] -> 0
    np.testing.assert_allclose(mad_scale(resid), [1.4826, 0.0], rtol=1e-15)
    big = _rng(28).normal(size=(200_000, 1)) * 3.0
    assert mad_scale(big)[0] == pytest.approx(3.0, rel=0.01)


def test_sparse_coding_defaults_to_ten_atoms():
    rng = _rng(29)
    with pytest.raises(ValueError, match=r"n_components must be in \[1, 9\], got 10"):
        SparseDirections("dictionary").fit(rng.normal(size=(30, 4)), rng.normal(size=(30, 3, 3)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_label_maps_with_nan_or_inf_are_refused(bad):
    rng = _rng(30)
    maps = rng.normal(size=(30, 2, 2))
    maps[4, 1, 0] = bad
    with pytest.raises(ValueError, match="label maps contain NaN or inf"):
        SparseDirections("sparse_pca", n_components=2).fit(rng.normal(size=(30, 4)), maps)


def test_per_layer_direction_inside_the_span_of_flat_conditions_is_refused():
    cond = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    inside = np.array([[[1.0, 2.0, 0.0], [0.0, -1.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]])
    with pytest.raises(ValueError, match=r"direction\(s\) \['0'\] lie in the span of the conditions"):
        orthogonalize(inside, cond)


def test_naming_correlations_are_pearson_correlations_of_the_projection_and_the_label():
    rng = _rng(31)
    w = rng.normal(size=(60, 3)) * np.array([1.0, 2.0, 0.5])
    y = np.stack([w[:, 0] + rng.normal(size=60), rng.normal(size=60)], axis=1)
    v = _unit([1.0, 1.0, -2.0])
    result = name_directions(v[None], w, y)
    expected = [np.corrcoef(w @ v, y[:, j])[0, 1] for j in range(2)]
    np.testing.assert_allclose(result.correlations[0], expected, rtol=1e-10)


def test_naming_per_unit_change_is_the_ridge_fit_with_the_given_penalty():
    rng = _rng(32)
    w = rng.normal(size=(40, 3))
    y = w @ np.array([1.0, -0.5, 0.2]) + 0.3 * rng.normal(size=40)
    v = np.eye(3)
    for alpha in (0.0, 25.0):
        xc, yc = w - w.mean(axis=0), y - y.mean()
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(3), xc.T @ yc)
        result = name_directions(v, w, y, alpha=alpha)
        np.testing.assert_allclose(result.per_unit[:, 0], coef, rtol=1e-9)


def test_applied_names_record_only_the_directions_that_were_renamed():
    rng = _rng(33)
    w = rng.normal(size=(200, 4))
    ds = DirectionSet(["a", "b"], np.eye(4, dtype=np.float32)[[0, 3]])
    result = name_directions(ds, w, {"yaw": 3.0 * w[:, 0] + 0.15 * rng.normal(size=200)})
    assert result.names == ["a:+yaw", "b"]
    named = result.apply(ds)
    assert named.info["original_names"] == {"a:+yaw": "a"}
    np.testing.assert_array_equal(named.extras["label_effects"], result.effects.astype(np.float32))
    assert result.per_unit[0, 0] == pytest.approx(3.0, abs=0.05)  # label units per unit step ...
    assert result.effects[0, 0] == pytest.approx(1.0, abs=0.02)  # ... and label stds per std step
    quiet = name_directions(ds, w, {"yaw": w[:, 0]}, min_effect=2.0)
    assert "original_names" not in quiet.apply(ds).info


def test_tf_kwargs_left_out_of_a_pickle_take_the_official_converters_defaults():
    """Official TF pickles only store the kwargs their config set; the rest follow StyleGAN2-ADA's legacy converter."""
    g = tf_convert.generator_kwargs_from_tf({})
    assert (g["z_dim"], g["w_dim"], g["img_resolution"], g["c_dim"]) == (512, 512, 1024, 0)
    assert g["mapping_kwargs"]["lr_multiplier"] == 0.01 and g["mapping_kwargs"]["w_avg_beta"] == 0.995
    assert g["mapping_kwargs"]["num_layers"] == 8
    assert g["synthesis_kwargs"]["channel_base"] == 32768 and g["synthesis_kwargs"]["channel_max"] == 512
    d = tf_convert.discriminator_kwargs_from_tf({})
    assert d["epilogue_kwargs"]["mbstd_group_size"] is None  # the whole batch, as the official conversion
    assert d["epilogue_kwargs"]["mbstd_num_channels"] == 1
    assert d["mapping_kwargs"]["lr_multiplier"] == 0.1 and d["architecture"] == "resnet"
    assert d["channel_base"] == 32768


def test_synthesis_lod_is_dropped_at_zero_and_refused_mid_fade_in():
    G, variables = _tf_generator_variables()
    ignored: dict = {}
    converted = tf_convert.convert_tf_generator(_tf_net(G_TF, {**variables, "synthesis/lod": np.float32(0.0)}),
                                                ignored=ignored)
    assert ignored == {"synthesis/lod": 0.0}
    for name, tensor in G.state_dict().items():
        np.testing.assert_array_equal(converted.state_dict()[name].numpy(), tensor.numpy(), err_msg=name)
    with pytest.raises(CheckpointError, match=r"variables with no PyTorch counterpart: \['synthesis/lod'\]"):
        tf_convert.convert_tf_generator(_tf_net(G_TF, {**variables, "synthesis/lod": np.float32(0.5)}))


def test_tf_run_time_options_do_not_change_the_converted_generator():
    runtime = dict(truncation_psi=0.7, randomize_noise=False, use_noise=True, fused_modconv=True, dtype="float32",
                   num_fp16_res=0, conv_clamp=None, return_dlatents=False, is_validation=False)
    assert tf_convert.generator_kwargs_from_tf({**G_TF, **runtime}) == tf_convert.generator_kwargs_from_tf(G_TF)


def test_lasso_support_counts_every_nonzero_coefficient_however_small_in_label_units():
    rng = _rng(34)
    w = rng.normal(size=(300, 4))
    y = 1e-4 * w[:, 1] + 1e-6 * rng.normal(size=300)  # a label measured in tiny units
    est = SparseDirections("lasso", alpha=0.01, val_fraction=0).fit(w, {"tiny": y})
    assert 0 < abs(est.coef_[0, 1]) < 1e-3
    np.testing.assert_array_equal(est.support_[0], np.flatnonzero(est.coef_[0]))
    assert 1 in est.support_[0]
    assert est.directions_[0, 1] == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize("method", ["dictionary", "sparse_pca"])
def test_atoms_without_a_direction_are_dropped_with_their_footprints(method):
    """Maps that vary along one pattern only: the other atoms' codes are zero, so they give no direction."""
    rng = _rng(35)
    w = rng.normal(size=(60, 4))
    pattern = np.zeros(9)
    pattern[[0, 1]] = [1.0, 0.5]
    maps = (np.maximum(w[:, 0], 0.0)[:, None] * pattern).reshape(60, 3, 3)
    with pytest.warns(UserWarning, match=r"\['label_atom1', 'label_atom2'\] got all-zero coefficients"):
        est = SparseDirections(method, n_components=3, code_alpha=0.1, val_fraction=0, random_state=0).fit(w, maps)
    assert est.names_ == ["label_atom0"] and est.dropped_ == ["label_atom1", "label_atom2"]
    assert est.components_.shape == (1, 9)
    assert abs(_unit(est.components_[0]) @ _unit(pattern)) > 0.999
    assert est.directions_[0, 0] > 0.99  # the code of the pattern follows w[:, 0]


def _asymmetric(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return _rng(seed).normal(size=shape).astype(np.float32)


def test_tf_generator_variables_land_in_our_layout():
    """TF dense [in, out] -> [out, in]; conv [kh, kw, in, out] -> [out, in, kh, kw]; Conv0_up flipped in space;
    style bias stored minus one; noise{i} is the i-th noise input in layer order."""
    G, variables = _tf_generator_variables()
    dense = _asymmetric(variables["mapping/Dense1/weight"].shape, 40)
    conv1 = _asymmetric(variables["synthesis/8x8/Conv1/weight"].shape, 41)
    conv0_up = _asymmetric(variables["synthesis/8x8/Conv0_up/weight"].shape, 42)
    conv4 = _asymmetric(variables["synthesis/4x4/Conv/weight"].shape, 43)
    mod_bias = _asymmetric(variables["synthesis/8x8/ToRGB/mod_bias"].shape, 44)
    noise = {i: _asymmetric(variables[f"synthesis/noise{i}"].shape, 50 + i) for i in range(5)}
    variables.update({"mapping/Dense1/weight": dense, "synthesis/8x8/Conv1/weight": conv1,
                      "synthesis/8x8/Conv0_up/weight": conv0_up, "synthesis/4x4/Conv/weight": conv4,
                      "synthesis/8x8/ToRGB/mod_bias": mod_bias, **{f"synthesis/noise{i}": v for i, v in noise.items()}})
    state = {k: v.numpy() for k, v in tf_convert.convert_tf_generator(_tf_net(G_TF, variables)).state_dict().items()}
    assert dense.shape[0] == dense.shape[1]  # square: only the values tell a transpose
    np.testing.assert_array_equal(state["mapping.fc1.weight"], dense.T)
    np.testing.assert_array_equal(state["synthesis.b8.conv1.weight"], conv1.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["synthesis.b4.conv1.weight"], conv4.transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["synthesis.b8.conv0.weight"], conv0_up[::-1, ::-1].transpose(3, 2, 0, 1))
    np.testing.assert_array_equal(state["synthesis.b8.torgb.affine.bias"], mod_bias + 1)
    for i, name in enumerate(["b4.conv1", "b8.conv0", "b8.conv1", "b16.conv0", "b16.conv1"]):
        np.testing.assert_array_equal(state[f"synthesis.{name}.noise_const"], noise[i][0, 0], err_msg=name)


def test_tf_discriminator_variables_land_in_our_layout():
    D = perturbed(Discriminator(**tf_convert.discriminator_kwargs_from_tf(D_TF)), 2)
    variables = dict(to_tf_variables(D, tf_convert._D_RULES, "discriminator"))
    out_w = _asymmetric(variables["Output/weight"].shape, 45)
    down = _asymmetric(variables["16x16/Conv1_down/weight"].shape, 46)
    conv0 = _asymmetric(variables["16x16/Conv0/weight"].shape, 47)
    variables.update({"Output/weight": out_w, "16x16/Conv1_down/weight": down, "16x16/Conv0/weight": conv0})
    net = TFNetworkDescription(state=dict(name="D", static_kwargs=dict(D_TF), variables=list(variables.items())))
    state = {k: v.numpy() for k, v in tf_convert.convert_tf_discriminator(net).state_dict().items()}
    np.testing.assert_array_equal(state["b4.out.weight"], out_w.T)
    np.testing.assert_array_equal(state["b16.conv1.weight"], down.transpose(3, 2, 0, 1))  # not flipped: a plain conv
    np.testing.assert_array_equal(state["b16.conv0.weight"], conv0.transpose(3, 2, 0, 1))


def test_tf_conditional_networks_label_mappings_are_transposed_dense_layers():
    g_kwargs = {**G_TF, "label_size": 3}
    G = perturbed(Generator(**tf_convert.generator_kwargs_from_tf(g_kwargs)), 3)
    g_vars = dict(to_tf_variables(G, tf_convert._G_RULES, "generator"))
    embed = _asymmetric(g_vars["mapping/LabelEmbed/weight"].shape, 48)
    assert embed.shape == (3, 8)  # TF [c_dim, features]
    g_vars["mapping/LabelEmbed/weight"] = embed
    g_state = tf_convert.convert_tf_generator(_tf_net(g_kwargs, g_vars)).state_dict()
    np.testing.assert_array_equal(g_state["mapping.embed.weight"].numpy(), embed.T)

    d_kwargs = {**D_TF, "label_size": 3, "mapping_layers": 1, "mapping_fmaps": 8}
    D = perturbed(Discriminator(**tf_convert.discriminator_kwargs_from_tf(d_kwargs)), 4)
    d_vars = dict(to_tf_variables(D, tf_convert._D_RULES, "discriminator"))
    fc = _asymmetric(d_vars["Mapping0/weight"].shape, 49)
    assert fc.shape[0] == fc.shape[1]
    d_vars["Mapping0/weight"] = fc
    net = TFNetworkDescription(state=dict(name="D", static_kwargs=d_kwargs, variables=list(d_vars.items())))
    np.testing.assert_array_equal(tf_convert.convert_tf_discriminator(net).state_dict()["mapping.fc0.weight"].numpy(),
                                  fc.T)


def test_closed_form_transform_is_a_plain_projection_without_centring():
    a = _rng(36).normal(size=(6, 4))
    est = ClosedFormDirections(n_components=2).fit({0: a})
    w = _rng(37).normal(size=(5, 4)) + 3.0
    np.testing.assert_array_equal(est.mean_, np.zeros(4))
    np.testing.assert_allclose(est.transform(w), w @ est.directions_.astype(np.float64).T, rtol=1e-6, atol=1e-6)


def test_orthogonalize_against_another_set_records_that_sets_names():
    rng = _rng(38)
    vecs = rng.normal(size=(2, 5))
    vecs = (vecs / np.linalg.norm(vecs, axis=1, keepdims=True)).astype(np.float32)
    ds = DirectionSet(["a", "b"], vecs)
    against = DirectionSet(["x", "y"], np.eye(5, dtype=np.float32)[:2])
    out = orthogonalize(ds, against)
    assert out.info["conditioned_on"] == {"a": ["x", "y"], "b": ["x", "y"]}
    np.testing.assert_allclose(out.vectors[:, :2], 0.0, atol=1e-7)


def test_sparse_pca_centres_the_maps_on_their_mean():
    rng = _rng(39)
    w = rng.normal(size=(40, 3))
    maps = rng.exponential(size=(40, 2, 2))  # skewed: the median is not the mean
    est = SparseDirections("sparse_pca", n_components=2, val_fraction=0, random_state=0).fit(w, maps)
    maps32 = maps.reshape(40, -1).astype(np.float32)  # the maps are read as float32
    np.testing.assert_allclose(est.label_center_, maps32.mean(axis=0, dtype=np.float64), rtol=1e-12)


def test_naming_defaults_list_three_labels_and_name_from_an_effect_of_one_tenth():
    rng = _rng(40)
    n = 500
    w = rng.normal(size=(n, 2))
    y = np.stack([0.15 * w[:, 0] + 0.98 * w[:, 1], w[:, 1], -w[:, 1] + 0.1 * rng.normal(size=n),
                  rng.normal(size=n)], axis=1)
    result = name_directions(np.eye(2)[:1], w, y, label_names=["yaw", "a", "b", "c"], alpha=0.0)
    expected = 0.15 * w[:, 0].std() / y[:, 0].std()
    assert 0.1 < expected < 0.2
    assert result.effects[0, 0] == pytest.approx(expected, rel=1e-9)
    assert len(result.table[0]) == 3
    assert result.names == ["d0:+yaw"]


def _orthonormal_design(n: int, d: int, seed: int) -> np.ndarray:
    """Columns centred, exactly uncorrelated, unit variance (ddof 0)."""
    x = _rng(seed).normal(size=(n, d))
    q, _ = np.linalg.qr(x - x.mean(axis=0))
    return q * np.sqrt(n)


def test_lasso_default_penalty_soft_thresholds_the_standardized_correlations_by_a_hundredth():
    """Orthonormal design: Lasso's solution is sign(c) max(|c| - alpha, 0), c = x^T y / n with y at unit std."""
    n = 200
    x = _orthonormal_design(n, 4, 41)
    resid = _orthonormal_design(n, 5, 42)[:, 4]
    resid = resid - x @ (x.T @ resid) / n  # exactly orthogonal to the design
    y = 0.03 * x[:, 0] + 0.5 * x[:, 1] - 0.2 * x[:, 2] + resid
    est = SparseDirections("lasso", val_fraction=0).fit(x, {"y": y})
    s = y.std()
    c = x.T @ (y - y.mean()) / n / s
    expected = np.sign(c) * np.maximum(np.abs(c) - 0.01, 0.0) * s
    np.testing.assert_allclose(est.coef_[0], expected, atol=1e-5)
    assert est.coef_[0, 0] != 0.0


def test_closed_form_default_takes_the_convolutions_and_only_the_final_torgb():
    rng = _rng(43)
    state = {f"synthesis.{name}.affine.weight": rng.normal(size=(3, 4))
             for name in ["b4.conv1", "b4.torgb", "b8.conv0", "b8.conv1", "b8.torgb"]}
    est = ClosedFormDirections(n_components=2).fit(state)
    assert est.layer_names_ == ["synthesis.b4.conv1.affine.weight", "synthesis.b8.conv0.affine.weight",
                                "synthesis.b8.conv1.affine.weight", "synthesis.b8.torgb.affine.weight"]
    assert est.layers_ == [0, 1, 2, 3]


def test_multitask_lasso_group_soft_thresholds_each_coordinate_across_labels():
    """Orthonormal design: row j of MultiTaskLasso's solution is C_j max(0, 1 - alpha / ||C_j||), one support."""
    n = 200
    x = _orthonormal_design(n, 6, 44)
    noise = _orthonormal_design(n, 8, 45)[:, 6:]
    noise = noise - x @ (x.T @ noise) / n
    y = np.stack([0.5 * x[:, 0] + 0.04 * x[:, 1] + noise[:, 0], -0.3 * x[:, 0] + 0.02 * x[:, 2] + noise[:, 1]], 1)
    est = SparseDirections("multitask", alpha=0.05, val_fraction=0).fit(x, y)
    s = y.std(axis=0)
    c = x.T @ (y - y.mean(axis=0)) / n / s  # [D, L]
    norms = np.linalg.norm(c, axis=1, keepdims=True)
    expected = (c * np.maximum(0.0, 1.0 - 0.05 / norms)) * s
    np.testing.assert_allclose(est.coef_, expected.T, atol=1e-5)
    np.testing.assert_array_equal(est.support_mask_[0], est.support_mask_[1])


def test_pca_defaults_to_ten_directions():
    est = PCADirections().fit(_rng(46).normal(size=(50, 12)))
    assert est.directions_.shape == (10, 12) and est.names_[-1] == "pc9"


# --- defects found by this audit (fixed) ----------------------------------------------------------------------

def test_orthogonalize_refuses_a_zero_direction_even_without_conditions():
    with pytest.raises(ValueError, match=r"are zero \(or not finite\); nothing is left to normalise"):
        orthogonalize(np.zeros(3), [])


def test_naming_refuses_an_all_zero_direction():
    w = _rng(47).normal(size=(50, 3))
    with pytest.raises(ValueError, match=r"direction\(s\) \['d0'\] are zero"):
        name_directions(np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), w, {"y": w[:, 0]})


def test_closed_form_checks_torgb_and_n_components_for_a_dict_of_weights_too():
    weights = {0: _rng(48).normal(size=(4, 3)), 1: _rng(49).normal(size=(4, 3))}
    with pytest.raises(ValueError, match="torgb must be 'last', 'all' or 'none', got 'bogus'"):
        ClosedFormDirections(torgb="bogus").fit(weights)
    with pytest.raises(ValueError, match="n_components must be an integer or None, got 1.7"):
        ClosedFormDirections(n_components=1.7).fit(weights)
    assert ClosedFormDirections(n_components=2.0).fit(weights).directions_.shape == (2, 3)
