"""Behaviour the other tests left unchecked (found by mutation testing): metrics on hand-built codes with known
values, extrapolation stop rules and their options, augmentation options, DirectionSet file checks, the finders'
fitted attributes against their definitions, and the W statistics' file and scale handling."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis.augmentation import export_augmentation, parse_target
from stylegan_disentangle.analysis.extrapolate import extrapolate
from stylegan_disentangle.analysis.metrics import dci, direction_recovery, factor_change_per_step, leakage, sap
from stylegan_disentangle.directions import (
    ClosedFormDirections,
    DirectionSet,
    LinearDirections,
    PCADirections,
    SparseDirections,
)
from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError
from stylegan_disentangle.labels import labeler_from_callable
from stylegan_disentangle.latents import WStats, bank_seeds, sample_latents
from stylegan_disentangle.networks import Generator
from tests.helpers import ConstantImageG, MeanD


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _e(i: int, d: int) -> np.ndarray:
    v = np.zeros(d, np.float32)
    v[i] = 1.0
    return v


# ================================================================ metrics


def test_dci_of_a_perfect_code_padded_with_noise_dimensions_is_one():
    """Dead code dimensions have no importance, so no weight in D: two exact factor codes plus two noise dimensions
    score D = C = 1 (weighting every code dimension equally would give D = 1/2)."""
    rng = np.random.default_rng(0)
    f = rng.uniform(-1, 1, (1000, 2))
    codes = np.c_[f, rng.normal(size=(1000, 2))]
    result = dci(codes, f)
    np.testing.assert_allclose(result["importance"][2:], 0.0, atol=1e-12)  # the lasso drops the noise exactly
    np.testing.assert_allclose(result["code_weights"][2:], 0.0, atol=1e-12)
    assert result["disentanglement"] == pytest.approx(1.0, abs=1e-9)
    assert result["completeness"] == pytest.approx(1.0, abs=1e-9)


def test_dci_entropies_use_the_factor_count_for_d_and_the_code_count_for_c():
    """Codes f0 + f1 and f0 - f1 (plus two noise dimensions) against two factors: each used code dimension serves
    both factors equally (D = 1 - H_2(1/2, 1/2) = 0) and each factor is spread over two of the four code dimensions
    (C = 1 - H_4(1/2, 1/2, 0, 0) = 1 - log 2 / log 4 = 1/2). Lasso shrinkage is symmetric here; the tolerance covers
    the sampling asymmetry of the two fits."""
    rng = np.random.default_rng(1)
    f = rng.uniform(-1, 1, (1000, 2))
    codes = np.c_[f[:, 0] + f[:, 1], f[:, 0] - f[:, 1], rng.normal(size=(1000, 2))]
    result = dci(codes, f)
    assert result["disentanglement"] == pytest.approx(0.0, abs=0.02)
    assert result["completeness"] == pytest.approx(0.5, abs=0.02)


def test_dci_informativeness_error_is_in_units_of_the_factors_std():
    """A noisy code of a factor: the NRMSE (RMSE / factor std) and R^2 are tied by NRMSE^2 ~ 1 - R^2, whatever the
    factor's units (x 10 here). Test and train std differ by sampling noise only (300 test rows): 10 %."""
    rng = np.random.default_rng(2)
    f = 10.0 * rng.uniform(-1, 1, (1000, 1))
    code = f[:, 0] / 10.0 + rng.normal(scale=0.4, size=1000)
    result = dci(code, f)
    assert 0.3 < result["informativeness"] < 0.9
    assert result["informativeness_error"] == pytest.approx(math.sqrt(1 - result["informativeness"]), rel=0.1)


def test_dci_standardises_codes_so_a_small_scale_code_still_informs():
    """The Lasso penalty acts on standardised codes: a perfect code in tiny units (1e-3) is as informative as one
    in unit scale (on raw codes the penalty would zero its coefficient)."""
    rng = np.random.default_rng(3)
    f = rng.uniform(-1, 1, (1000, 2))
    result = dci(f * np.array([1.0, 1e-3]), f)
    assert result["test_r2"] == pytest.approx([1.0, 1.0], abs=0.01)


def test_sap_clips_negative_r2_and_takes_the_second_best_code():
    """One factor; codes: the factor itself (R^2 1), the factor plus equal-variance noise (R^2 1/2), pure noise
    (test R^2 slightly below 0, clipped to 0). SAP = top - second = 1 - 1/2, not 1 - 0 (the worst code)."""
    rng = np.random.default_rng(4)
    f = rng.uniform(-1, 1, (3000, 1))
    noise_var = 1 / 3  # the variance of U(-1, 1)
    codes = np.c_[f, f + rng.normal(scale=math.sqrt(noise_var), size=(3000, 1)), rng.normal(size=(3000, 1))]
    result = sap(codes, f)
    score = result["score_matrix"][:, 0]
    assert score[0] == pytest.approx(1.0, abs=1e-9)
    assert score[1] == pytest.approx(0.5, abs=0.05)
    assert score[2] == 0.0  # this seed's test R^2 is negative: clipped to exactly 0
    assert result["sap"] == pytest.approx(score[0] - score[1], abs=1e-12)


def test_sap_discrete_score_is_balanced_accuracy():
    """Imbalanced classes (10 % positive). The code puts every positive and half the negatives at 1, the other
    negatives at -1: the classifier says 'positive' at 1, so recall is 1 for positives and ~1/2 for negatives:
    balanced accuracy ~3/4 (plain accuracy would be ~0.55)."""
    rng = np.random.default_rng(5)
    n = 4000
    label = (rng.uniform(size=n) < 0.1).astype(float)
    code = np.where((label == 1) | (rng.uniform(size=n) < 0.5), 1.0, -1.0)
    result = sap(np.c_[code, rng.normal(size=n)], label, discrete=True)
    assert result["score_matrix"][0, 0] == pytest.approx(0.75, abs=0.04)


def test_factor_change_forward_difference_and_step_check():
    """Forward difference of x^2 over step s is exactly 2x + s; a step <= 0 is refused."""
    w = np.random.default_rng(6).normal(size=(30, 2))
    d = np.array([1.0, 0.0])
    result = factor_change_per_step(w, d, lambda x: x**2, step=0.5, symmetric=False)
    np.testing.assert_allclose(result["change"], [2 * w[:, 0].mean() + 0.5, 0.0], atol=1e-12)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="step must be positive"):
            factor_change_per_step(w, d, lambda x: x, step=bad)


def test_direction_recovery_refuses_zero_directions_and_repeated_names():
    with pytest.raises(ValueError, match="zero-length"):
        direction_recovery(np.zeros((1, 3)), ["a"], np.eye(3), ["a", "b", "c"])
    with pytest.raises(ValueError, match="unique"):
        direction_recovery(np.eye(3)[:2], ["a", "a"], np.eye(3), ["a", "b", "c"])


def test_leakage_treats_a_zero_spread_factor_at_unit_scale():
    """A factor with no spread (scale 0) is measured in raw units rather than divided by zero."""
    assert leakage(np.array([1.0, 0.5]), 0, scale=np.array([1.0, 0.0])) == pytest.approx(0.5)


# ================================================================ extrapolation




@pytest.fixture(scope="module")
def prior() -> WStats:
    return WStats().fit(np.random.default_rng(0).standard_normal((4000, 4)) * 0.5)  # std 0.5 per axis


def test_saturation_fires_on_a_label_that_stops_changing_even_at_fraction_zero():
    """A clamped label (w0 capped at 1) changes 0.5, 0.5, then 0: with saturation_fraction 0 the rule fires on the
    zero change at t = 3 (|change| <= 0 * first), so the walk keeps t = 2. A label that never responds stops at
    t = 1: position 1 only sets the first rate, the rule first looks at t = 2."""
    G = ConstantImageG()
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    clamped = labeler_from_callable(lambda img, ws: ws[:, 0, 0].clamp(max=1.0), "t", needs_ws=True,
                                    needs_images=False)
    res = extrapolate(G, torch.zeros(1, 3, 4), ds, "e0", step_size=0.5, max_steps=10, labeler=clamped,
                      saturation_fraction=0.0)
    assert res.stop_step.tolist() == [2] and res.stop_reason == ["saturation"]
    flat = labeler_from_callable(lambda img, ws: ws[:, 0, 1], "t", needs_ws=True, needs_images=False)
    res = extrapolate(G, torch.zeros(1, 3, 4), ds, "e0", step_size=0.5, max_steps=10, labeler=flat)
    assert res.stop_step.tolist() == [1] and res.stop_reason == ["saturation"]


def test_saturation_fraction_outside_zero_one_is_refused():
    lab = labeler_from_callable(lambda img, ws: ws[:, 0, 0], "t", needs_ws=True, needs_images=False)
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    for bad in (1.0, -0.1):
        with pytest.raises(StyleGANDisentangleError, match=r"saturation_fraction must be in \[0, 1\)"):
            extrapolate(ConstantImageG(), torch.zeros(1, 3, 4), ds, "e0", 0.5, 3, labeler=lab, saturation_fraction=bad)


def test_the_saturation_label_is_picked_by_its_change_relative_to_its_range():
    """'wide' moves 0.5 per step on a range of 200, 'narrow' 0.05 on a range of 0.2: relative to its range
    'narrow' moves most, and it is the label followed."""
    lab = labeler_from_callable(lambda img, ws: {"wide": ws[:, 0, 0], "narrow": 0.1 * ws[:, 0, 0]},
                                ["wide", "narrow"], value_ranges={"wide": (-100.0, 100.0), "narrow": (-0.1, 0.1)},
                                needs_ws=True, needs_images=False)
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    res = extrapolate(ConstantImageG(), torch.zeros(1, 3, 4), ds, "e0", 0.5, 3, labeler=lab)
    assert res.thresholds["saturation_label"] == "narrow"


def test_when_rules_fire_together_mahalanobis_is_the_reason(prior):
    """From the prior's mean along w0 at 0.5 (one std) per step: distance ~t passes 2.5 at t = 3, and D = -w0 =
    -1.5 falls below -1.25 at t = 3 too. Both fire; the reason is the first rule, mahalanobis."""
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    ws = torch.as_tensor(prior.mean_, dtype=torch.float32).expand(1, 3, 4).clone()
    ws[..., 0] = 0.0
    res = extrapolate(ConstantImageG(), ws, ds, "e0", step_size=0.5, max_steps=6, w_stats=prior,
                      mahalanobis_threshold=2.5, D=MeanD(), d_threshold=-1.25)
    assert res.stop_step.tolist() == [2] and res.stop_reason == ["mahalanobis"]


def test_the_mahalanobis_rule_reads_the_max_over_exactly_the_edited_layers(prior):
    """The direction edits ws 1 and 2. ws 0 (never moved) sits 10 std outside the prior: it must not stop the walk.
    ws 1 starts at the mean (distance t at step t), ws 2 one std behind (distance |t - 1|): the max, t, passes 2.5
    at t = 3 (the mean of the two would first at t = 4)."""
    ds = DirectionSet(["e0"], _e(0, 4)[None], layer_ranges=[(1, 3)])
    ws = torch.as_tensor(prior.mean_, dtype=torch.float32).expand(1, 3, 4).clone()
    ws[0, 0, 1] += 5.0
    ws[0, 2, 0] -= 0.5
    res = extrapolate(ConstantImageG(), ws, ds, "e0", step_size=0.5, max_steps=8, w_stats=prior,
                      mahalanobis_threshold=2.5)
    assert res.stop_step.tolist() == [2] and res.stop_reason == ["mahalanobis"]
    assert res.mahalanobis[2, 0] == pytest.approx(2.0, rel=0.05)


def test_an_extrapolation_saved_as_a_npz_name_keeps_its_stem(tmp_path):
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    res = extrapolate(ConstantImageG(), torch.zeros(1, 3, 4), ds, "e0", 0.5, 2)
    npz, js = res.save(tmp_path / "walk.npz")
    assert (npz.name, js.name) == ("walk.npz", "walk.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.json", "walk.npz"]


def _failing_savez(*args, **kwargs):
    f = args[0]
    if hasattr(f, "write"):
        f.write(b"PK\x03\x04 half a zip")
    else:
        with open(f, "wb") as out:
            out.write(b"PK\x03\x04 half a zip")
    raise OSError("disk full")


def test_a_crash_while_saving_an_extrapolation_keeps_the_previous_file(tmp_path, monkeypatch):
    ds = DirectionSet(["e0"], _e(0, 4)[None])
    res = extrapolate(ConstantImageG(), torch.zeros(1, 3, 4), ds, "e0", 0.5, 2)
    npz, _ = res.save(tmp_path / "walk")
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        res.save(tmp_path / "walk")
    monkeypatch.undo()
    assert np.load(npz)["ws"].shape == (3, 1, 3, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["walk.json", "walk.npz"]


# ================================================================ augmentation


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


def _w0_labeler():
    return labeler_from_callable(lambda img, ws: ws[:, 0, 0], "yaw", needs_ws=True, needs_images=False)


def _yaw_set() -> DirectionSet:
    return DirectionSet(["yaw"], _e(0, 16)[None], method="test")


def test_augmentation_stops_its_walks_at_the_given_mahalanobis_quantile(G, tmp_path):
    """With mahalanobis_quantile 0.5 the walks stop at the prior's median distance, not at extrapolate's default
    quantile 0.99: a written code lies between accepted positions (inside that distance; the distance is convex),
    or is its base itself when the base already lies beyond it (the first step then fires)."""
    out = tmp_path / "aug"
    res = export_augmentation(G, _yaw_set(), "yaw", _w0_labeler(), "-10:10", 8, out, step=0.5, max_steps=40,
                              stats_samples=500, seed=0, mahalanobis_quantile=0.5)
    stats = WStats().fit(sample_latents(G, bank_seeds(1, 0, 500)).ws[:, 0].numpy())  # the export's own prior
    threshold = stats.distance_quantile(0.5)
    assert res.summary["walk_stops"] == {"-": {"mahalanobis": 4}, "+": {"mahalanobis": 4}}
    seeds = [r["base_seed"] for r in json.loads((out / "labels.json").read_text())["images"]]
    base = stats.mahalanobis(sample_latents(G, seeds).ws[:, 0].double().numpy())
    written = stats.mahalanobis(res.ws[:, 0].double().numpy())
    assert (base < threshold).sum() >= 2  # bases inside the median distance walk, and must stop at it
    assert np.all(written <= np.maximum(base, threshold) * (1 + 1e-6))


def test_one_augmentation_image_aims_at_the_middle_of_the_range(G, tmp_path):
    res = export_augmentation(G, _yaw_set(), "yaw", _w0_labeler(), "-1:3", 1, tmp_path / "one", step=0.5,
                              max_steps=10, mahalanobis_quantile=None)
    np.testing.assert_array_equal(res.targets, [1.0])
    assert res.labels["yaw"][0] == pytest.approx(1.0, abs=1e-4)  # a linear label is hit exactly (float32)


def test_an_empty_target_range_is_refused():
    with pytest.raises(StyleGANDisentangleError, match="LO < HI"):
        parse_target("5:5")
    with pytest.raises(StyleGANDisentangleError, match="LO < HI"):
        parse_target((2.0, 2.0))


def test_the_augmentation_folder_gets_the_usual_permissions(G, tmp_path):
    """The export is built in a mkdtemp folder (mode 0700) and renamed into place: it must end with the mode a
    plain mkdir gives, not private to its writer."""
    export_augmentation(G, _yaw_set(), "yaw", _w0_labeler(), "-1:1", 2, tmp_path / "aug", max_steps=3,
                        mahalanobis_quantile=None)
    (tmp_path / "plain").mkdir()
    assert (tmp_path / "aug").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777


# ================================================================ DirectionSet files


def _saved(tmp_path) -> tuple[DirectionSet, dict]:
    ds = DirectionSet(["a", "b"], np.eye(2, 4, dtype=np.float32), extras={"std": np.array([1.0, 2.0], np.float32)})
    ds.save(tmp_path / "d")
    return ds, json.loads((tmp_path / "d.json").read_text())


@pytest.mark.parametrize("key, value, match", [
    ("format_version", 3, "format version 3; this package reads up to 2"),
    ("step_unit", "sigma", "stores step ranges in unit 'sigma'"),
    ("extras", [], "extras"),
    ("vectors_shape", [2, 5], "vectors have shape"),
])
def test_a_hand_edited_set_json_is_refused_with_its_reason(tmp_path, key, value, match):
    """The npz is untouched (its sha256 still matches): these checks alone stand between the edit and a set that
    silently means something else."""
    _, meta = _saved(tmp_path)
    meta[key] = value
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(StyleGANDisentangleError, match=match):
        DirectionSet.load(tmp_path / "d")


def test_a_layer_range_may_not_start_below_zero():
    """(-1, 2) would make ws[-1], the last layer, part of the edit."""
    with pytest.raises(ValueError, match="0 <= start < stop"):
        DirectionSet(["a"], np.eye(1, 4, dtype=np.float32), layer_ranges=[(-1, 2)])


def test_a_std_extra_must_be_one_number_per_direction():
    with pytest.raises(ValueError, match=r"extras\['std'\]"):
        DirectionSet(["a", "b"], np.eye(2, 4, dtype=np.float32), extras={"std": np.ones((2, 2))})


def test_interfacegan_names_that_collide_once_file_safe_are_refused(tmp_path):
    ds = DirectionSet(["a b", "a_b"], np.eye(2, 4, dtype=np.float32))
    with pytest.raises(ValueError, match="collide.*boundary_a_b.npy"):
        ds.export_interfacegan(tmp_path)


def test_interfacegan_replace_deletes_only_boundary_files(tmp_path):
    """A layers.json listing other names (hand-edited, or another tool's) never makes replace delete them."""
    for name in ("boundary_old.npy", "notes.npy", "boundary_keep.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "layers.json").write_text(json.dumps({"boundaries": {
        n: {"direction": n, "ws_layers": None} for n in ("boundary_old.npy", "notes.npy", "boundary_keep.txt")}}))
    DirectionSet(["new"], np.eye(1, 4, dtype=np.float32)).export_interfacegan(tmp_path, replace=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boundary_keep.txt", "boundary_new.npy", "layers.json",
                                                          "notes.npy"]


# ================================================================ finders


def test_incremental_pca_merges_a_short_last_batch_as_sklearn_does():
    """1003 rows in batches of 500 leave 3 rows, fewer than the 4 components IncrementalPCA needs per batch: they
    join the previous batch (sklearn's own fit does the same), instead of failing."""
    from sklearn.decomposition import IncrementalPCA
    from threadpoolctl import threadpool_limits

    w = np.random.default_rng(0).standard_normal((1003, 8)).astype(np.float32)
    est = PCADirections(n_components=4, incremental=True, batch_size=500).fit(w)
    with threadpool_limits(limits=1, user_api="blas"):
        ref = IncrementalPCA(n_components=4, batch_size=500).fit(w)
    np.testing.assert_array_equal(est.explained_variance_, ref.explained_variance_)


def test_pca_inverse_transform_undoes_transform_with_every_component():
    w = (np.random.default_rng(1).standard_normal((300, 6)) + 4.0).astype(np.float64)
    est = PCADirections(n_components=6).fit(w)
    np.testing.assert_allclose(est.inverse_transform(est.transform(w)), w, atol=1e-5)  # float32 directions


def test_closed_form_without_normalisation_factorises_the_raw_weights():
    rng = np.random.default_rng(2)
    weights = {0: rng.standard_normal((8, 6)) * np.arange(1, 9)[:, None], 1: rng.standard_normal((5, 6))}
    est = ClosedFormDirections(n_components=3, normalize=False).fit(weights)
    a = np.concatenate([weights[0], weights[1]])
    np.testing.assert_allclose(est.eigenvalues_, np.linalg.eigvalsh(a.T @ a)[::-1][:3], rtol=1e-10)


def test_closed_form_refuses_a_bad_count_or_torgb():
    rng = np.random.default_rng(3)
    weights = {0: rng.standard_normal((8, 6))}
    for k in (0, 7):
        with pytest.raises(ValueError, match=r"n_components must be in \[1, w_dim=6\]"):
            ClosedFormDirections(n_components=k).fit(weights)
    state = {"synthesis.b4.conv1.affine.weight": rng.standard_normal((8, 6)),
             "synthesis.b4.torgb.affine.weight": rng.standard_normal((8, 6))}
    with pytest.raises(ValueError, match="torgb must be 'last', 'all' or 'none'"):
        ClosedFormDirections(torgb="first").fit(state)


def _anisotropic(n: int = 6000, seed: int = 0):
    rng = np.random.default_rng(seed)
    scale = np.array([10.0, 3.0, 1.0, 0.3, 0.1, 1.0])
    w = rng.standard_normal((n, 6)) * scale + 5.0
    a = rng.standard_normal(6)
    return w, a / np.linalg.norm(a)


@pytest.mark.parametrize("kw", [dict(method="logistic"), dict(method="svm", svm_mode="standardized")])
def test_standardized_classifiers_report_w_units(kw):
    """The classifiers fit on standardized w; their normal and intercept are mapped back to W units: on W whose
    axes differ 100x in scale the direction is the planted boundary normal, and w . coef + intercept > 0 splits the
    top from the bottom rows."""
    w, a = _anisotropic()
    y = w @ a
    est = LinearDirections(top_bottom_percent=10, C=100.0, val_fraction=0, random_state=0, max_iter=20000,
                           **kw).fit(w, y)
    assert _cos(est.directions_[0], a) > 0.99
    order = np.argsort(y)
    top, bottom = order[-600:], order[:600]
    assert np.all(w[top] @ est.coef_[0] + est.intercept_[0] > 0)
    assert np.all(w[bottom] @ est.coef_[0] + est.intercept_[0] < 0)


def test_ridge_mean_and_std_are_those_of_all_the_rows():
    """mean_ (the centre of transform) is the mean of every row, validation rows included; std_ (the sigma unit of
    edits) is the std of the rows along each direction."""
    w, a = _anisotropic(2000, 1)
    y = w @ a + 0.1 * np.random.default_rng(1).standard_normal(len(w))
    est = LinearDirections(method="ridge", random_state=0).fit(w, y)  # default: 10 % validation rows
    np.testing.assert_allclose(est.mean_, w.mean(axis=0), rtol=1e-12)
    alone = LinearDirections(method="ridge", val_fraction=0).fit(w, y)
    np.testing.assert_allclose(alone.std_, [np.std(w @ alone.directions_[0].astype(np.float64))], rtol=1e-9)


def test_ridge_on_top_bottom_rows_uses_its_penalty():
    """With a huge penalty the ridge on 0/1 targets of the selected rows tends to X^T t on standardized rows, i.e.
    cov(w_i, t) / var(w_i) per coordinate in W units (without the penalty it would be the least-squares normal)."""
    w, a = _anisotropic(3000, 2)
    w[:, 1] += 2.0 * w[:, 0]  # correlated coordinates: the two answers differ
    y = w @ a
    est = LinearDirections(method="ridge", top_bottom_percent=10, alpha=1e12, val_fraction=0).fit(w, y)
    k = int(round(len(w) * 0.1))
    order = np.argsort(y, kind="stable")
    rows = np.r_[order[:k], order[-k:]]
    x, t = w[rows], np.r_[np.zeros(k), np.ones(k)]
    expected = ((x - x.mean(0)) * (t - t.mean())[:, None]).mean(0) / x.var(0)
    assert _cos(est.directions_[0], expected) > 1 - 1e-6


def test_linear_refuses_out_of_range_selection_and_validation_fractions():
    w, a = _anisotropic(200, 3)
    for kw in (dict(top_bottom_percent=60), dict(top_bottom_percent=0), dict(val_fraction=1.0)):
        with pytest.raises(ValueError, match="must be in"):
            LinearDirections(method="logistic", **kw).fit(w, w @ a)


def test_sparse_mean_and_std_are_those_of_the_rows():
    w, a = _anisotropic(2000, 4)
    y = w @ a
    est = SparseDirections("lasso", alpha=0.01, val_fraction=0).fit(w, y)
    np.testing.assert_allclose(est.mean_, w.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(est.std_, [np.std(w @ est.directions_[0].astype(np.float64))], rtol=1e-6)


def test_elasticnet_with_l1_ratio_one_is_the_lasso():
    w, a = _anisotropic(2000, 5)
    y = w @ a + np.random.default_rng(5).standard_normal(len(w))
    lasso = SparseDirections("lasso", alpha=0.05, random_state=0).fit(w, y)
    enet = SparseDirections("elasticnet", alpha=0.05, l1_ratio=1.0, random_state=0).fit(w, y)
    np.testing.assert_allclose(enet.coef_, lasso.coef_, rtol=1e-9, atol=1e-12)


def test_sparse_refuses_a_constant_label():
    w, _ = _anisotropic(200, 6)
    with pytest.raises(ValueError, match=r"\['flat'\] are constant"):
        SparseDirections("lasso").fit(w, {"flat": np.full(len(w), 3.0)})


def test_atom_directions_raise_their_atom():
    """Label maps = 2 - code_k * blob_k (the blobs darken as w moves along d_k). Atoms are signed with their largest
    entry positive, so the code of each learned (positive) atom is -w . d_k: its direction must be -d_k, the way
    that increases the atom's code, whatever sign the decomposition found the atom with."""
    rng = np.random.default_rng(0)
    n, side = 1500, 8
    w = rng.standard_normal((n, 24)).astype(np.float32)
    yy, xx = np.mgrid[0:side, 0:side]
    atoms = np.stack([np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 1.5) for cy, cx in ((1.5, 1.5), (6, 3.5))])
    atoms = atoms.reshape(2, -1)
    atoms[atoms < 0.05] = 0
    dirs = np.linalg.qr(rng.standard_normal((24, 2)))[0].T
    maps = 2.0 - (w @ dirs.T) @ atoms + 0.01 * rng.standard_normal((n, side * side))
    for method in ("sparse_pca", "dictionary"):
        est = SparseDirections(method, n_components=2, code_alpha=1.0, random_state=0).fit(w, maps)
        for atom, d in zip(atoms, dirs):
            match = int(np.argmax([abs(_cos(c, atom)) for c in est.components_]))
            assert _cos(est.components_[match], atom) > 0.9, method
            assert _cos(est.directions_[match], -d) > 0.9, method


def test_sparse_atoms_are_learned_on_at_most_max_samples_rows(monkeypatch):
    from stylegan_disentangle.directions import sparse

    seen, real = [], sparse.learn_dictionary

    def recording(y, *args, **kwargs):
        seen.append(y.shape)
        return real(y, *args, **kwargs)

    monkeypatch.setattr(sparse, "learn_dictionary", recording)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((900, 6))
    maps = np.maximum(w[:, :2] @ rng.standard_normal((2, 10)), 0.0)
    SparseDirections("dictionary", n_components=2, max_samples=300, random_state=0).fit(w, maps)
    assert seen == [(300, 10)]


# ================================================================ W statistics


def test_wstats_regularisation_is_relative_so_distances_ignore_the_units_of_w():
    """reg is relative to the mean eigenvalue: codes in other units (x 1e-3) are at the same distances."""
    w = np.random.default_rng(0).standard_normal((2000, 5)) * np.array([1.0, 2.0, 0.5, 1.0, 3.0])
    x = w[:10] + 1.0
    big = WStats(reg=1e-2).fit(w)
    small = WStats(reg=1e-2).fit(w * 1e-3)
    np.testing.assert_allclose(small.mahalanobis(x * 1e-3), big.mahalanobis(x), rtol=1e-6)


def test_wstats_quantile_outside_zero_one_is_refused():
    stats = WStats().fit(np.random.default_rng(1).standard_normal((100, 3)))
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
            stats.distance_quantile(bad)


def test_wstats_needs_two_samples():
    with pytest.raises(LatentError, match="at least 2 samples"):
        WStats().fit(np.zeros((1, 3)))


def test_wstats_file_round_trip_keeps_reg_and_sample_count(tmp_path):
    stats = WStats(reg=0.25).fit(np.random.default_rng(2).standard_normal((50, 3)))
    back = WStats.load(stats.save(tmp_path / "s.npz"))
    assert back.reg == 0.25 and back.n_samples_ == 50
    np.testing.assert_array_equal(back.distance_quantiles_, stats.distance_quantiles_)


def test_wstats_load_of_a_foreign_file_is_a_latent_error(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    for name in ("junk.npz", "other.npz"):
        with pytest.raises(LatentError, match=f"{name} is not a WStats file"):
            WStats.load(tmp_path / name)


def test_a_crash_while_saving_wstats_keeps_the_previous_file(tmp_path, monkeypatch):
    stats = WStats().fit(np.random.default_rng(3).standard_normal((50, 3)))
    path = stats.save(tmp_path / "s.npz")
    monkeypatch.setattr(np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        stats.save(path)
    monkeypatch.undo()
    assert WStats.load(path).n_samples_ == 50
    assert os.listdir(tmp_path) == ["s.npz"]
