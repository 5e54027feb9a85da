"""Known-answer tests for analysis/metrics.py: hand-built codes, hand-computed mutual information, planted edits."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stylegan_disentangle.analysis.metrics import (
    dci,
    direction_recovery,
    factor_change_per_step,
    leakage,
    locality,
    mig,
    sap,
)

HADAMARD = 0.5 * np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]], dtype=float)


@pytest.fixture(scope="module")
def factors() -> np.ndarray:
    """1000 samples of 4 independent uniform factors."""
    return np.random.default_rng(0).uniform(-1, 1, size=(1000, 4))


@pytest.fixture(scope="module")
def permuted_code(factors) -> np.ndarray:
    """A perfect code: each dimension is one factor, permuted, rescaled and shifted."""
    return factors[:, [2, 0, 3, 1]] * np.array([3.0, -0.5, 2.0, 1.5]) + np.array([1.0, 0.0, -2.0, 5.0])


@pytest.fixture(scope="module")
def mixed_code(factors) -> np.ndarray:
    """Every factor mixed into every code dimension with equal weight (an orthogonal Hadamard rotation)."""
    return factors @ HADAMARD


# -- direction recovery ------------------------------------------------------------------------------------------


def test_direction_recovery_is_one_for_the_truth_up_to_sign_scale_and_order():
    truth = np.linalg.qr(np.random.default_rng(1).normal(size=(16, 3)))[0].T  # 3 orthonormal rows in R^16
    names = ["yaw", "smile", "ambient"]
    found = np.stack([-2.0 * truth[2], 0.5 * truth[0], truth[1]])
    result = direction_recovery(found, ["ambient", "yaw", "smile"], truth, names)
    assert result["abs_cosine"] == pytest.approx({"ambient": 1.0, "yaw": 1.0, "smile": 1.0})
    assert result["mean_abs_cosine"] == pytest.approx(1.0)


def test_direction_recovery_reports_the_cosine_of_a_tilted_direction_and_skips_unknown_names():
    truth = np.eye(3)
    theta = math.radians(30)
    found = np.array([[math.cos(theta), math.sin(theta), 0.0], [0.0, 0.0, 1.0]])
    result = direction_recovery(found, ["a", "pc7"], truth, ["a", "b", "c"])
    assert result["abs_cosine"]["a"] == pytest.approx(math.cos(theta))
    assert math.isnan(result["abs_cosine"]["pc7"])
    assert result["matched"] == ["a"]
    assert result["mean_abs_cosine"] == pytest.approx(math.cos(theta))
    assert result["best_match"]["pc7"] == ("c", pytest.approx(1.0))
    assert result["cosine_matrix"].shape == (2, 3)


def test_direction_recovery_rejects_mismatched_dimensions():
    with pytest.raises(ValueError, match="dimensions"):
        direction_recovery(np.ones((1, 4)), ["a"], np.ones((1, 5)), ["a"])


# -- factor change and leakage ------------------------------------------------------------------------------------


def test_factor_change_per_step_of_a_linear_map_is_the_matrix_times_the_direction():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(3, 5))
    w = rng.normal(size=(50, 5))
    d = rng.normal(size=5)
    result = factor_change_per_step(w, d, lambda x: x @ a.T, step=0.7)
    np.testing.assert_allclose(result["change"], a @ d, atol=1e-12)
    np.testing.assert_allclose(result["abs_change"], np.abs(a @ d), atol=1e-12)


def test_factor_change_per_step_central_difference_is_exact_for_a_quadratic_map():
    w = np.random.default_rng(3).normal(size=(40, 2))
    d = np.array([1.0, 0.0])
    result = factor_change_per_step(w, d, lambda x: x**2, step=0.5)
    np.testing.assert_allclose(result["change"], [2 * w[:, 0].mean(), 0.0], atol=1e-12)
    np.testing.assert_allclose(result["abs_change"], [2 * np.abs(w[:, 0]).mean(), 0.0], atol=1e-12)


def test_factor_change_per_step_works_on_ws_with_a_per_layer_direction():
    ws = np.random.default_rng(4).normal(size=(10, 3, 4))
    d = np.zeros((3, 4))
    d[1, 2] = 1.0
    result = factor_change_per_step(ws, d, lambda x: x[:, :, 2].sum(1, keepdims=True))
    assert result["change"] == pytest.approx([1.0])


def test_leakage_is_zero_for_an_isolated_edit_and_the_mean_relative_change_otherwise():
    assert leakage(np.array([2.0, 0.0, 0.0]), 0) == 0.0
    assert leakage(np.array([1.0, 0.5, 0.0]), "a", names=["a", "b", "c"]) == pytest.approx(0.25)
    # scales: the other factor moves 0.5 on a scale of 0.25 -> 2 units; the target 1 on a scale of 1
    assert leakage(np.array([1.0, 0.5]), 0, scale=np.array([1.0, 0.25])) == pytest.approx(2.0)


def test_leakage_uses_the_factor_spread_from_factor_change_per_step():
    rng = np.random.default_rng(5)
    w = rng.normal(size=(2000, 2)) * np.array([1.0, 0.1])  # factor 1 varies 10x less
    result = factor_change_per_step(w, np.array([1.0, 0.1]), lambda x: x)
    assert leakage(result, 0) == pytest.approx(1.0, rel=0.05)  # both move one standard deviation per step


# -- DCI ---------------------------------------------------------------------------------------------------------


def test_dci_of_a_permuted_perfect_code_is_one(factors, permuted_code):
    for model in ("lasso", "gbt"):
        result = dci(permuted_code, factors, model=model, n_estimators=30)
        assert result["disentanglement"] > 0.95, model
        assert result["completeness"] > 0.95, model
        assert result["informativeness"] > 0.95, model
    # the importance matrix recovers the permutation
    importance = dci(permuted_code, factors)["importance"]
    assert list(importance.argmax(0)) == [1, 3, 0, 2]


def test_dci_of_a_fully_mixed_code_is_low_but_informative(factors, mixed_code):
    for model, min_informativeness in (("lasso", 0.95), ("gbt", 0.8)):  # 30 small trees approximate sums coarsely
        result = dci(mixed_code, factors, model=model, n_estimators=30)
        assert result["disentanglement"] < 0.1, model
        assert result["completeness"] < 0.1, model
        assert result["informativeness"] > min_informativeness, model  # mixing loses no information


def test_dci_informativeness_is_near_zero_for_a_code_unrelated_to_the_factors(factors):
    noise = np.random.default_rng(6).normal(size=factors.shape)
    assert dci(noise, factors)["informativeness"] < 0.05


# -- MIG ---------------------------------------------------------------------------------------------------------


def test_mig_matches_a_hand_computation_on_a_tiny_discrete_example():
    v = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    u = np.array([0, 1, 0, 1, 0, 1, 0, 1])
    z3 = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    codes = np.stack([v, u, z3], 1).astype(float)
    factors = np.stack([v, u], 1).astype(float)
    log = math.log
    mi_z3_v = 3 / 8 * log(2) + 1 / 8 * log(2 / 5) + 1 / 2 * log(8 / 5)
    mi_z3_u = 1 / 4 * log(4 / 3) + 1 / 8 * log(2 / 3) + 1 / 4 * log(4 / 5) + 3 / 8 * log(6 / 5)
    expected_v = (log(2) - mi_z3_v) / log(2)  # best code: v itself (I = H = log 2), second: z3
    expected_u = (log(2) - mi_z3_u) / log(2)
    result = mig(codes, factors)
    np.testing.assert_allclose(result["mutual_information"][2], [mi_z3_v, mi_z3_u], atol=1e-12)
    np.testing.assert_allclose(result["factor_entropy"], [log(2), log(2)], atol=1e-12)
    np.testing.assert_allclose(result["per_factor"], [expected_v, expected_u], atol=1e-12)
    assert result["mig"] == pytest.approx((expected_v + expected_u) / 2)


def test_mig_of_a_permuted_perfect_code_is_near_one_and_of_a_mixed_code_low(factors, permuted_code, mixed_code):
    assert mig(permuted_code, factors)["mig"] > 0.9
    assert mig(mixed_code, factors)["mig"] < 0.3


# -- SAP ---------------------------------------------------------------------------------------------------------


def test_sap_of_a_perfect_code_is_near_one_and_of_a_mixed_code_near_zero(factors, permuted_code, mixed_code):
    assert sap(permuted_code, factors)["sap"] > 0.95
    assert sap(mixed_code, factors)["sap"] < 0.1


def test_sap_with_discrete_factors_uses_classification_accuracy():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 2, size=(600, 2))
    codes = np.stack([labels[:, 1] + 0.05 * rng.normal(size=600), labels[:, 0] + 0.05 * rng.normal(size=600),
                      rng.normal(size=600)], 1)
    result = sap(codes, labels, discrete=True)
    assert result["score_matrix"][1, 0] > 0.95 and result["score_matrix"][0, 1] > 0.95
    assert result["sap"] > 0.4  # the best code is perfect, the second-best at chance (0.5)


# -- locality ----------------------------------------------------------------------------------------------------


def test_locality_is_the_share_of_change_inside_the_mask():
    before = np.zeros((3, 8, 8))
    after = before.copy()
    after[:, :4, :4] = 1.0  # change the top-left quarter
    quarter = np.zeros((8, 8))
    quarter[:4, :4] = 1
    assert locality(before, after, quarter) == pytest.approx(1.0)
    assert locality(before, after, 1 - quarter) == pytest.approx(0.0)
    left_half = np.zeros((8, 8))
    left_half[:, :2] = 1
    assert locality(before, after, left_half) == pytest.approx(0.5)


def test_locality_batches_and_returns_nan_for_no_change():
    before = np.zeros((2, 3, 4, 4))
    after = before.copy()
    after[0, 0, 0, 0] = 1.0
    masks = np.ones((2, 1, 4, 4))
    result = locality(before, after, masks)
    assert result.shape == (2,)
    assert result[0] == pytest.approx(1.0) and math.isnan(result[1])


def test_a_constant_factor_is_left_out_of_every_mean():
    """A constant factor carries no information: DCI's completeness and informativeness, SAP and MIG all leave it
    out, so a perfect code scores as it does without it."""
    rng = np.random.default_rng(0)
    f = rng.uniform(-1, 1, (2000, 3))
    with_constant = np.c_[f, np.zeros(2000)]
    d = dci(f, with_constant)
    assert d["completeness"] == pytest.approx(dci(f, f)["completeness"]) and d["completeness"] > 0.99
    assert math.isnan(d["per_factor_completeness"][3]) and math.isnan(d["test_r2"][3])
    assert d["informativeness"] == pytest.approx(dci(f, f)["informativeness"])
    s = sap(f, with_constant)
    assert s["sap"] == pytest.approx(sap(f, f)["sap"]) and math.isnan(s["per_factor"][3])
    assert mig(f, with_constant)["mig"] == pytest.approx(mig(f, f)["mig"])


def test_sap_takes_a_discrete_factors_values_as_its_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, (400, 2)).astype(float)
    codes = labels + 0.1 * rng.normal(size=(400, 2))
    expected = sap(codes, labels, discrete=True)["sap"]
    assert expected > 0.4
    for encoded in (labels - 0.5, 3 * labels + 7):  # the same classes under other numbers
        assert sap(codes, encoded, discrete=True)["sap"] == pytest.approx(expected)


def test_mig_bins_a_handful_of_continuous_samples():
    """Fewer samples than bins, all distinct: binned, not each its own class (which gave every code the same mutual
    information and a gap of 0 for a perfect code)."""
    f = np.random.default_rng(0).uniform(-1, 1, (20, 3))
    assert mig(f, f, bins=5)["mig"] > 0.5
    steps = np.repeat(np.arange(4.0), 5)[:, None]  # a discrete factor: 4 values that repeat keep their classes
    assert mig(steps, steps)["mig"] == pytest.approx(1.0)


def test_the_held_out_metrics_need_ten_samples():
    f = np.random.default_rng(0).uniform(-1, 1, (8, 2))
    for metric in (dci, sap):
        with pytest.raises(ValueError, match="at least 10 samples"):
            metric(f, f)
