"""Behaviour no test checked (a mutation audit of the 3D-coupled directions, their footprints and names, the labelers,
the label calibration, the synthetic factor map and its oracle): known answers on tiny planted problems."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.directions import ThreeDCoupledDirections
from stylegan_disentangle.directions._footprint_names import resize_masks
from stylegan_disentangle.directions.three_d_coupled import _unique, canonical_regions, footprint_name
from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError
from stylegan_disentangle.labels import (
    ImageStatsLabeler,
    LabelerError,
    apply_labeler,
    available_labelers,
    combine_labelers,
    crop_images,
    get_labeler,
    labeler_from_callable,
    register_labeler,
    resize_images,
    unregister_labeler,
)
from stylegan_disentangle.labels.calibration import (
    LabelCalibration,
    fit_label_calibration,
    load_calibration_images,
)
from stylegan_disentangle.synthetic import FACTORS, SyntheticOracle, factor_names, num_factors
from stylegan_disentangle.synthetic.factor_map import MIN_FIT_COSINE, FactorMap
from tests.three_d_helpers import W_DIM, R, best_abs_cos, planted, planted_blob, planted_part_masks

# -- label calibration -------------------------------------------------------------------------------------------


def test_a_decreasing_calibration_keeps_the_sign_of_r():
    x = np.linspace(-10, 10, 21)
    cal = LabelCalibration("yaw").fit(x, -0.5 * x + 3.0)
    # exact affine data: float64 least squares is exact to rounding of sums of ~20 terms of size ~10
    assert cal.slope_ == pytest.approx(-0.5, abs=1e-12) and cal.intercept_ == pytest.approx(3.0, abs=1e-12)
    assert cal.r_ == pytest.approx(-1.0, abs=1e-12)  # anti-correlated, not |r|


@pytest.mark.parametrize("y, match", [([5.0, 5.0, 5.0, 5.0], "constant"), ([1.0, 2.0, np.inf, 4.0], "NaN or inf")])
def test_a_constant_or_infinite_reference_is_refused(y, match):
    with pytest.raises(StyleGANDisentangleError, match=match):
        LabelCalibration("yaw").fit([1.0, 2.0, 3.0, 4.0], y)


def test_the_calibration_record_round_trips_every_statistic():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    cal = LabelCalibration("yaw").fit(x, 2.0 * x + 0.3 * rng.normal(size=200))
    assert cal.n_samples_fit_ == 200 and cal.r_ != pytest.approx(cal.residual_std_, rel=0.1)
    record = cal.to_dict()
    assert record["n_samples"] == 200
    again = LabelCalibration.from_dict(json.loads(json.dumps(record)))
    for attr in ("label", "slope_", "intercept_", "r_", "residual_std_", "reference_range_", "n_samples_fit_"):
        assert getattr(again, attr) == getattr(cal, attr), attr  # JSON keeps float64 exactly


def test_fit_label_calibration_refuses_images_that_are_not_rgb():
    class Mean:
        names = ["yaw"]

        def __call__(self, img, ws=None):
            return {"yaw": img.mean(dim=(1, 2, 3))}

    gray = torch.linspace(-1, 1, 4)[:, None, None, None].expand(4, 1, 8, 8)
    with pytest.raises(StyleGANDisentangleError, match=r"must be \[N, 3, H, W\], got \(4, 1, 8, 8\)"):
        fit_label_calibration(Mean(), gray, np.arange(4.0), "yaw")


def test_load_calibration_images_maps_uint8_to_unit_range_and_keeps_rows_columns_and_channels(tmp_path):
    img = np.zeros((3, 4, 6, 3), np.uint8)  # [N, H, W, 3], H != W
    img[:, 1, 5, 0] = 255  # red at row 1, column 5
    img[:, 2, 0, 2] = 255  # blue at row 2, column 0
    np.savez(tmp_path / "c.npz", images=img, yaw=np.array([0.0, 1.0, 2.0]))
    tensor, values = load_calibration_images(tmp_path / "c.npz", "yaw")
    expected = -torch.ones(3, 3, 4, 6)  # 0 -> -1, 255 -> +1 (x / 127.5 - 1: exact in float32)
    expected[:, 0, 1, 5] = 1.0
    expected[:, 2, 2, 0] = 1.0
    assert torch.equal(tensor, expected)
    np.testing.assert_array_equal(values, [0.0, 1.0, 2.0])


def test_load_calibration_images_refuses_constant_values_and_non_finite_images(tmp_path):
    np.savez(tmp_path / "same.npz", images=np.zeros((4, 8, 8, 3), np.uint8), yaw=np.full(4, 7.0))
    with pytest.raises(StyleGANDisentangleError, match="same.npz: a calibration needs at least 3 images whose 'yaw'"):
        load_calibration_images(tmp_path / "same.npz", "yaw")
    bad = np.zeros((4, 3, 8, 8), np.float32)
    bad[2, 1, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", images=bad, yaw=np.arange(4.0))
    with pytest.raises(StyleGANDisentangleError, match="nan.npz: 'images' contains NaN or inf"):
        load_calibration_images(tmp_path / "nan.npz", "yaw")


# -- the labeler registry -----------------------------------------------------------------------------------------


class _Factories:
    """A factory reached by a dotted 'module:Class.attribute' spec."""

    @staticmethod
    def make(**kwargs):
        return ImageStatsLabeler(**kwargs)


def test_register_labeler_overwrites_only_when_asked_and_checks_names_and_factories():
    register_labeler("audit_a", lambda: ImageStatsLabeler(names=["brightness"]))
    try:
        register_labeler("audit_a", lambda: ImageStatsLabeler(names=["contrast"]), overwrite=True)
        assert get_labeler("audit_a").names == ["contrast"]
    finally:
        unregister_labeler("audit_a")
    for name in ("my:lab", "a,b"):  # ':' marks a module spec, ',' separates names in get_labelers
        with pytest.raises(LabelerError, match="without ':' or ','"):
            register_labeler(name, ImageStatsLabeler)
    with pytest.raises(LabelerError, match="must be callable or a 'module:attribute' string"):
        register_labeler("audit_b", "stylegan_disentangle.labels.image_stats.ImageStatsLabeler")
    assert "audit_b" not in available_labelers()


def test_unregistering_an_unknown_labeler_is_a_labeler_error():
    with pytest.raises(LabelerError, match="no labeler named 'audit_none'"):
        unregister_labeler("audit_none")


def test_a_factory_that_returns_no_labeler_is_refused():
    register_labeler("audit_c", lambda: 42)
    try:
        with pytest.raises(LabelerError, match="returned 42, which is not a labeler"):
            get_labeler("audit_c")
    finally:
        unregister_labeler("audit_c")


def test_module_specs_reach_dotted_attributes_and_refuse_non_callables():
    lab = get_labeler(f"{__name__}:_Factories.make", names=["com_y"])
    assert isinstance(lab, ImageStatsLabeler) and lab.names == ["com_y"]
    with pytest.raises(LabelerError, match="is not callable"):
        get_labeler("stylegan_disentangle.labels.image_stats:IMAGE_STATS")


# -- image statistics ---------------------------------------------------------------------------------------------


def test_an_odd_width_leaves_the_middle_column_out_of_both_halves():
    unit = torch.zeros(3, 2, 3)
    unit[:, :, 0], unit[:, :, 1] = 1.0, 0.5  # columns: white, gray, black
    out = ImageStatsLabeler(names=["asymmetry_lr"])(unit[None] * 2 - 1)
    assert out["asymmetry_lr"].item() == pytest.approx(1.0, abs=1e-6)  # 1 - 0, the gray middle in neither half


def test_brightness_weights_green_and_blue_by_their_luma_coefficients():
    for channel, weight in ((1, 0.587), (2, 0.114)):
        unit = torch.zeros(3, 4, 4)
        unit[channel] = 1.0
        assert ImageStatsLabeler(names=["brightness"])(unit[None] * 2 - 1)["brightness"].item() == pytest.approx(
            weight, abs=1e-6)


def test_image_stats_read_the_images_at_the_input_resolution():
    img = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(0)) * 2 - 1
    at_4 = ImageStatsLabeler(input_resolution=4)(img)
    expected = ImageStatsLabeler()(resize_images(img, 4))
    native = ImageStatsLabeler()(img)
    for name in at_4:
        assert torch.equal(at_4[name], expected[name]), name
    assert not torch.equal(at_4["contrast"], native["contrast"])  # the area-averaged 4x4 image is smoother


# -- the labeler protocol -----------------------------------------------------------------------------------------


def test_a_tiny_crop_box_keeps_one_pixel():
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    # both edges round to pixel 4: the box still keeps that one pixel
    assert torch.equal(crop_images(img, (0.5, 0.5, 0.01, 0.01)), img[..., 4:5, 4:5])


def test_apply_labeler_refuses_labels_the_labeler_does_not_name():
    lab = labeler_from_callable(lambda img: {"a": img[:, 0, 0, 0], "b": img[:, 0, 0, 0]}, "a")
    with pytest.raises(LabelerError, match=r"must return a dict with keys \['a'\], got \['a', 'b'\]"):
        apply_labeler(lab, torch.zeros(2, 3, 4, 4))


def test_an_image_labeler_given_no_images_is_refused():
    with pytest.raises(LabelerError, match="needs images, got None"):
        apply_labeler(ImageStatsLabeler(names=["brightness"]), None, torch.zeros(2, 3, 4))


def test_unit_preprocessing_clamps_to_zero_one():
    lab = labeler_from_callable(lambda img: img.amax(dim=(1, 2, 3)), "peak", preprocess="unit")
    img = torch.zeros(2, 3, 4, 4)
    img[0, 0, 0, 0] = 3.0  # a generator overshooting [-1, 1]
    assert apply_labeler(lab, img)["peak"].tolist() == [1.0, 0.5]


def test_value_ranges_are_kept_and_combined():
    a = labeler_from_callable(lambda img: img[:, 0, 0, 0], "a", value_ranges={"a": (0.0, 2.0)})
    b = labeler_from_callable(lambda img: img[:, 0, 0, 0], "b")
    assert a.value_ranges == {"a": (0.0, 2.0)} and b.value_ranges == {"b": (-np.inf, np.inf)}
    both = combine_labelers([a, b, ImageStatsLabeler(names=["contrast"])])
    assert both.value_ranges == {"a": (0.0, 2.0), "b": (-np.inf, np.inf), "contrast": (0.0, 0.5)}


def test_label_names_must_be_file_safe():
    with pytest.raises(LabelerError, match=r"label names \['a/b', 'c d'\] are not file-safe"):
        labeler_from_callable(lambda img: img[:, :2, 0, 0], ["a/b", "c d"])


# -- the synthetic factor map -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_fmap():
    rng = np.random.default_rng(2)
    w = (rng.standard_normal([4000, 32]) * np.linspace(0.3, 2.0, 32)).astype(np.float32)
    return FactorMap.build(w, seed=1)


def test_at_the_mean_every_factor_is_tanh_of_minus_the_curvature(small_fmap):
    # build gives every factor a partner (a ring); at the mean s = 0, so f = tanh(curvature * (0 - 1))
    assert (small_fmap.partners >= 0).all() and 0 in small_fmap.partners
    f = small_fmap(torch.as_tensor(small_fmap.mean[None]))[0].numpy()
    np.testing.assert_allclose(f, np.tanh(-small_fmap.curvature), atol=1e-6)  # float32 rounding


def test_a_factor_without_a_partner_has_no_quadratic_term_and_partner_zero_is_a_partner():
    f = num_factors()
    partners = np.full(f, -1)
    partners[1] = 0  # factor 1's quadratic term is factor 0's square
    fmap = FactorMap(np.eye(f, 32, dtype=np.float32), np.zeros(32, np.float32), np.ones(f, np.float32), partners,
                     gain=0.5, curvature=0.1)
    w = torch.zeros(1, 32)
    w[0, 0] = 2.0  # s_0 = 2, every other s_j = 0
    out = fmap(w)[0].double().numpy()
    assert out[0] == pytest.approx(np.tanh(0.5 * 2.0), abs=1e-6)
    assert out[1] == pytest.approx(np.tanh(0.1 * (2.0**2 - 1)), abs=1e-6)
    np.testing.assert_allclose(out[2:], 0.0, atol=1e-7)


def test_ws_of_different_layers_are_averaged(small_fmap):
    rng = np.random.default_rng(3)
    ws = torch.as_tensor(rng.standard_normal([5, 4, 32]).astype(np.float32))
    torch.testing.assert_close(small_fmap(ws), small_fmap(ws.mean(dim=1)))


def test_a_factor_map_file_for_other_factor_names_is_refused(small_fmap, tmp_path):
    names = factor_names()
    names[0] = "not_a_factor"
    np.savez(tmp_path / "other.npz", directions=small_fmap.directions, mean=small_fmap.mean, sigma=small_fmap.sigma,
             partners=small_fmap.partners, gain=small_fmap.gain, curvature=small_fmap.curvature, names=np.array(names))
    with pytest.raises(StyleGANDisentangleError, match="factor names do not match"):
        FactorMap.load(tmp_path / "other.npz")


def _fit_cosines(fmap, w):
    factors = fmap(torch.from_numpy(w.astype(np.float32))).double().numpy()
    coef = np.linalg.lstsq(w - w.mean(axis=0), factors - factors.mean(axis=0), rcond=None)[0].T
    return np.abs((coef / np.linalg.norm(coef, axis=1, keepdims=True) * fmap.directions).sum(axis=1))


def test_skewed_axes_are_avoided_at_any_scale_of_w():
    # the largest principal axis is a centred exponential (skewness 2), at 1/100 of the scale of the build test's
    rng = np.random.default_rng(1)
    w = rng.standard_normal([20_000, 32]) * np.linspace(2.0, 0.3, 32)
    w[:, 0] = 3.0 * (rng.exponential(size=len(w)) - 1)
    fmap = FactorMap.build((0.01 * w).astype(np.float32), seed=0)
    assert abs(fmap.directions[:, 0]).max() < 0.5, "skewness is scale-free: no factor may lean on the skewed axis"


def test_build_redraws_the_directions_whose_fit_is_poor():
    # half the axes skewed and a strong quadratic term: the first draws leave some factors' fits below
    # MIN_FIT_COSINE (measured: 4, then 2, then none), and build must redraw them rather than give up
    rng = np.random.default_rng(1)
    w = rng.standard_normal([10_000, 32]) * np.linspace(2.0, 0.3, 32)
    w[:, :16] = 0.5 * (rng.exponential(size=(len(w), 16)) - 1)
    fmap = FactorMap.build(w.astype(np.float32), seed=1, curvature=0.5)
    assert _fit_cosines(fmap, w).min() >= MIN_FIT_COSINE


# -- the synthetic oracle -----------------------------------------------------------------------------------------


def _tanh_map(ws):
    w = ws[:, 0] if ws.dim() == 3 else ws
    return torch.tanh(w[:, : num_factors()])


def test_the_oracle_refuses_a_factor_map_of_another_batch_or_with_nan():
    ws = torch.zeros(3, 40)
    with pytest.raises(LatentError, match=r"returned shape \(2, .*expected \[3, "):
        SyntheticOracle(lambda w: _tanh_map(w)[:2])(None, ws)
    with pytest.raises(LatentError, match="NaN or inf"):
        SyntheticOracle(lambda w: _tanh_map(w) * float("nan"))(None, ws)


def test_a_physical_oracles_intrinsics_are_those_of_the_normalized_factors():
    ws = torch.randn(2, 40, generator=torch.Generator().manual_seed(0))
    phys = SyntheticOracle(_tanh_map, physical=True).intrinsics(ws, resolution=16)
    norm = SyntheticOracle(_tanh_map).intrinsics(ws, resolution=16)
    for key in ("depth", "albedo", "light"):
        assert torch.equal(phys[key], norm[key]), key


def test_a_physical_oracle_states_the_range_of_every_factor():
    ranges = SyntheticOracle(_tanh_map, physical=True).value_ranges
    assert list(ranges) == factor_names()
    assert all(ranges[f.name] == (f.low, f.high) for f in FACTORS)


# -- 3D-coupled directions: names, footprints and the options -----------------------------------------------------


@pytest.fixture(scope="module")
def parts_fit():
    w, labels, m, g, atoms_true = planted()
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="parts", code_alpha=0.05, random_state=0).fit(
        w, labels, part_masks=planted_part_masks())
    return est, w, labels, atoms_true


def test_repeated_names_get_2_3_suffixes():
    assert _unique(["a", "b", "a", "a"]) == ["a", "b", "a_2", "a_3"]
    assert _unique(["a", "a", "a_2"]) == ["a", "a_2", "a_2_2"]  # a suffixed name never collides with a real one


def test_two_atoms_of_one_part_are_named_part_and_part_2(parts_fit):
    est = parts_fit[0]
    assert len(set(est.names_)) == len(est.names_)
    assert {"depth_nose", "depth_nose_2", "depth_mouth", "depth_mouth_2"} <= set(est.names_), est.names_


def test_the_map_centre_is_the_per_pixel_median_and_the_scale_the_rms(parts_fit):
    est, _, labels, _ = parts_fit
    # each planted code is 0 on ~70% of rows, so at every pixel most depth maps are exactly 1.0: the median
    np.testing.assert_array_equal(est.map_center_["depth"], np.ones((R, R), np.float32))
    y = labels["depth"].reshape(len(labels["depth"]), -1).astype(np.float64) - 1.0
    assert est.map_scale_["depth"] == pytest.approx(np.sqrt((y**2).sum(axis=1).mean()), rel=1e-5)  # float32 sums


def test_std_is_the_spread_of_w_along_each_direction(parts_fit):
    est, w, *_ = parts_fit
    proj = (w.astype(np.float64) - w.astype(np.float64).mean(axis=0)) @ est.directions_.T.astype(np.float64)
    np.testing.assert_allclose(est.std_, proj.std(axis=0), rtol=1e-5)  # ddof 0, as the streamed covariance


def test_part_atoms_of_an_rgb_map_keep_its_colour(parts_fit):
    est, _, _, atoms_true = parts_fit
    eyes = [est.atoms_["albedo"][est.atom_index_[k]] for k, nm in enumerate(est.names_) if nm.startswith("albedo_eyes")]
    # the planted albedo atoms are one blob in the ratio 1 : 0.5 : 0.25 over R, G, B
    assert best_abs_cos(np.stack(eyes), np.stack(atoms_true["albedo"])).min() >= 0.99


def test_part_masks_need_one_name_per_mask():
    w, labels, *_ = planted(n=300)
    masks = np.stack(list(planted_part_masks().values()))  # 3 masks
    with pytest.raises(LatentError, match=r"\[P, R, R\] with P names; got shape \(3, 16, 16\) for 2 names"):
        ThreeDCoupledDirections(n_atoms=1).fit(w, labels, part_masks=masks, part_names=["eyes", "nose"])


def test_skipped_parts_get_no_atoms():
    w, labels, *_ = planted(n=1500)
    masks = {**planted_part_masks(), "background": np.ones((R, R), np.float32)}
    est = ThreeDCoupledDirections(n_atoms=1, random_state=0).fit(w, labels, part_masks=masks)
    assert not any("background" in nm for nm in est.names_), est.names_
    assert any(nm.startswith("depth_nose") for nm in est.names_)
    no_nose = ThreeDCoupledDirections(n_atoms=1, skip_parts=("background", "nose"), random_state=0)
    no_nose.fit(w, labels, part_masks=masks)
    assert not any("nose" in nm for nm in no_nose.names_), no_nose.names_


def test_a_part_is_its_core_pixels_only():
    """A part atom is learned on the pixels where the part's mask reaches part_core: a faint halo of the nose mask
    over the whole face (0.1 < 0.2) does not let the nose's atoms take the mouth's blob."""
    w, labels, *_ = planted(n=1500)
    masks = planted_part_masks()
    masks["nose"] = np.maximum(masks["nose"], 0.1)
    est = ThreeDCoupledDirections(n_atoms=2, map_labels=("depth",), random_state=0).fit(w, labels, part_masks=masks)
    nose = [k for k, nm in enumerate(est.names_) if nm.startswith("depth_nose")]
    assert nose
    for k in nose:
        assert np.abs(est.footprints_[k][masks["nose"] < 0.2]).max() == 0.0, est.names_[k]


def _faint_nose_problem(n: int = 3000, seed: int = 1, nose_rows: int | None = None):
    """Depth maps: a pattern over the mouth rows and a blob in the nose rows at 1/100 of its amplitude, each driven
    by its own sparse code and W direction (the nose's only on `nose_rows` rows, if given)."""
    rng = np.random.default_rng(seed)
    codes = rng.laplace(size=(n, 2)) * (rng.random((n, 2)) < 0.3)
    if nose_rows is not None:
        codes[:, 1] = 0.0
        codes[:nose_rows, 1] = rng.choice([-2.0, 2.0], size=nose_rows)
    q, _ = np.linalg.qr(rng.normal(size=(W_DIM, W_DIM)))
    w = codes @ q[:2] + 0.3 * rng.normal(size=(n, W_DIM))
    big = (np.mgrid[0:R, 0:R][0] >= 11).astype(np.float64)
    blob = planted_blob(9, 8, radius=1.0)
    depth = 1.0 + 0.01 * (codes[:, :1, None] * big + 0.01 * codes[:, 1:, None] * blob)
    return w.astype(np.float32), {"depth": depth.astype(np.float32)}, q[:2], blob


def test_part_codes_are_in_the_maps_units():
    """Each part is scaled to unit RMS for its atoms, and its codes are scaled back: a unit step along the nose's
    true W direction predicts (map_scale_ * code change * atom) the change it makes in the depth, 1e-4 * blob,
    shrunk only by the regression's attenuation (code variance 0.6 against w noise 0.09: 0.87) and the codes' L1."""
    w, labels, q, blob = _faint_nose_problem()
    est = ThreeDCoupledDirections(n_atoms=1, random_state=0).fit(w, labels, part_masks=planted_part_masks())
    k = next(k for k, nm in enumerate(est.names_) if nm.startswith("depth_nose"))
    step = est.map_scale_["depth"] * float(est.coef_[k] @ q[1]) * est.atoms_["depth"][est.atom_index_[k]]
    ratio = float((step * blob).sum() / (1e-4 * (blob * blob).sum()))
    assert 0.5 < ratio < 1.2, ratio


def test_an_atom_coded_on_too_few_rows_is_dropped():
    """An atom enters the code regression only when 0.5% of the rows (here 15 of 3000) use it."""
    w, labels, _, _ = _faint_nose_problem(nose_rows=10)
    est = ThreeDCoupledDirections(n_atoms=1, random_state=0).fit(w, labels, part_masks=planted_part_masks())
    assert not any(nm.startswith("depth_nose") for nm in est.names_), est.names_
    assert any(nm.startswith("depth_mouth") for nm in est.names_)
    assert any(d.startswith("depth_atom") for d in est.dropped_), est.dropped_


def test_max_samples_limits_the_code_regression_and_not_the_global_one():
    w, labels, *_ = planted(n=1500)
    kw = dict(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0)
    full = ThreeDCoupledDirections(**kw).fit(w, labels, part_masks=planted_part_masks())
    same = ThreeDCoupledDirections(max_samples=1500, **kw).fit(w, labels, part_masks=planted_part_masks())
    sub = ThreeDCoupledDirections(max_samples=300, **kw).fit(w, labels, part_masks=planted_part_masks())
    np.testing.assert_array_equal(same.directions_, full.directions_)  # all rows: the default
    glob = [k for k, kind in enumerate(full.kinds_) if kind == "global"]
    np.testing.assert_array_equal(sub.directions_[glob], full.directions_[glob])
    local = [k for k, kind in enumerate(full.kinds_) if kind != "global"]
    local_sub = [k for k, kind in enumerate(sub.kinds_) if kind != "global"]
    assert not np.array_equal(sub.coef_[local_sub], full.coef_[local])  # 300 rows' atoms and codes


def test_a_fixed_ridge_alpha_is_the_penalty_of_the_global_and_the_code_regressions():
    w, labels, *_ = planted(n=1500)
    kw = dict(n_atoms=2, atom_scope="map", code_regression="ridge", global_loss="squared", random_state=0)
    weak = ThreeDCoupledDirections(ridge_alpha=0.0, **kw).fit(w, labels, part_masks=planted_part_masks())
    strong = ThreeDCoupledDirections(ridge_alpha=1e12, **kw).fit(w, labels, part_masks=planted_part_masks())
    assert strong.ridge_alpha_ == {"yaw": 1e12, "pitch": 1e12, "light_azimuth": 1e12}
    # a penalty 1e12 against X^T X ~ 1e3 shrinks every coefficient about 1e9-fold
    for est in (weak, strong):
        assert [kind for kind in est.kinds_ if kind != "global"] == ["depth", "depth", "albedo", "albedo"]
    ratio = np.linalg.norm(strong.coef_, axis=1) / np.linalg.norm(weak.coef_, axis=1)
    assert ratio.max() < 1e-6, ratio


def test_a_removed_label_leak_keeps_the_labels_mean():
    w, labels, *_ = planted(n=1500)
    scalars = {"yaw": labels["yaw"] + 0.5 * (labels["pitch"] + 5.0), "pitch": labels["pitch"] + 5.0}
    est = ThreeDCoupledDirections(map_labels=(), global_loss="squared", val_fraction=0.0, random_state=0).fit(
        w, scalars, label_leaks={"yaw": {"pitch": 0.5}})
    pred = est.predict(w)[:, est.names_.index("yaw")]
    # least squares with an intercept: the fitted values' mean is the label's (float rounding of 1500 rows)
    assert pred.mean() == pytest.approx(float(np.mean(scalars["yaw"], dtype=np.float64)), abs=1e-6)


def test_label_leaks_do_not_chain():
    """Each leak is removed with the other labels as given: pitch's known share of the azimuth is removed from
    pitch, and yaw's share of pitch (as read, azimuth included) from yaw."""
    w, labels, _, g, _ = planted(n=1500)
    pitch = labels["pitch"] + 0.8 * labels["light_azimuth"]
    scalars = {"yaw": labels["yaw"] + 0.5 * pitch, "pitch": pitch, "light_azimuth": labels["light_azimuth"]}
    est = ThreeDCoupledDirections(map_labels=(), global_loss="squared", random_state=0).fit(
        w, scalars, label_leaks={"pitch": {"light_azimuth": 0.8}, "yaw": {"pitch": 0.5}})
    for j, name in enumerate(("yaw", "pitch", "light_azimuth")):
        # exact linear labels of float32 w: the recovered direction is the planted one to ~1e-6
        assert float(est.directions_[est.names_.index(name)] @ g[j]) >= 0.999, name


# -- footprint names ----------------------------------------------------------------------------------------------


def test_the_middle_column_counts_half_for_the_side():
    masks = np.ones((1, 5, 5), np.float32)
    fp = np.zeros((5, 5))
    fp[2, 1], fp[2, 2] = 0.5, 1.0  # left share (0.5 + 0.5 * 1) / 1.5 = 2/3 <= 0.7: no side
    assert footprint_name(fp, ["face"], masks)[0] == "face"
    fp[2, 1] = 2.0  # (2 + 0.5) / 3 = 0.83 > 0.7
    assert footprint_name(fp, ["face"], masks)[0] == "face_left"


@pytest.mark.parametrize("row, col, part", [
    (3, 10, "forehead"),  # y = -0.65
    (6, 5, "eyes"),  # y = -0.35, x = -0.45
    (11, 10, "nose"),  # y = 0.15, x = 0.05
    (15, 10, "mouth"),  # y = 0.55, x = 0.05
    (11, 16, "cheeks"),  # y = 0.15, x = 0.65
    (17, 14, "chin"),  # y = 0.75, x = 0.45
    (17, 16, "outline"),  # y = 0.75, x = 0.65
    (11, 19, "outline"),  # y = 0.15, x = 0.95
])
def test_canonical_regions_follow_their_documented_rules(row, col, part):
    names, masks = canonical_regions(20)  # pixel centres at (i + 0.5) / 10 - 1
    assert masks[names.index(part), row, col] == 1.0


def test_part_masks_are_area_averaged_down_and_bilinear_up():
    checker = (np.indices((4, 4)).sum(axis=0) % 2).astype(np.float32)[None]
    np.testing.assert_allclose(resize_masks(checker, 2), np.full((1, 2, 2), 0.5), atol=1e-7)
    halves = np.array([[[0.0, 1.0], [0.0, 1.0]]], np.float32)
    np.testing.assert_allclose(resize_masks(halves, 4)[0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-7)
