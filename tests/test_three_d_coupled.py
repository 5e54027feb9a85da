"""ThreeDCoupledDirections: a planted problem with known atoms, codes, and W directions; the estimator contract."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

from stylegan_disentangle.directions import DirectionSet, ThreeDCoupledDirections
from stylegan_disentangle.directions.three_d_coupled import (
    DEPTH_HEIGHT,
    DEPTH_WIDTH,
    TOP_ALBEDO_COLOUR,
    canonical_regions,
    depth_spread,
    footprint_name,
)
from stylegan_disentangle.errors import LatentError, NotFittedError
from tests.helpers import load_script
from tests.three_d_helpers import (
    W_DIM,
    R,
    best_abs_cos,
    cli,
    find_3d,
    make_tiny_run,
    planted,
    planted_blob,
    planted_part_masks,
)


@pytest.fixture(scope="module")
def fitted():
    w, labels, m, g, atoms_true = planted()
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0).fit(
        w, labels, part_masks=planted_part_masks())
    return est, w, labels, m, g, atoms_true


def test_global_directions_recover_the_planted_ones(fitted):
    est, _, _, _, g, _ = fitted
    for j, name in enumerate(("yaw", "pitch", "light_azimuth")):
        k = est.names_.index(name)
        assert est.kinds_[k] == "global"
        assert float(est.directions_[k] @ g[j]) >= 0.999  # signed: moving along it raises the label
    # the default penalty is chosen per global label (GCV); labels that are linear in w up to the float32 rounding
    # of w need next to none (a label with noise of its own gets orders of magnitude more: test_directions_finders)
    assert set(est.ridge_alpha_) == {"yaw", "pitch", "light_azimuth"}
    w = fitted[1].astype(np.float64)
    mean_eig = np.trace(np.cov(w.T, bias=True)) * len(w) / w.shape[1]
    # float32 rounding of w is ~1e-7 of its scale, so the GCV optimum sits orders of magnitude under 1e-6 of the
    # mean eigenvalue (measured: ~2e-8 of it); a fixed penalty of 1 (the former default) is 1e-3 of it
    assert all(0 < a <= 1e-6 * mean_eig for a in est.ridge_alpha_.values()), (est.ridge_alpha_, mean_eig)


def test_atoms_and_localized_directions_recover_the_planted_ones(fitted):
    est, _, _, m, _, atoms_true = fitted
    assert best_abs_cos(est.atoms_["depth"], np.stack(atoms_true["depth"])).min() >= 0.99
    assert best_abs_cos(est.atoms_["albedo"], np.stack(atoms_true["albedo"])).min() >= 0.99
    local = [k for k, kind in enumerate(est.kinds_) if kind != "global"]
    assert len(local) == 4
    assert best_abs_cos(est.directions_[local], m).min() >= 0.99
    # each localized direction belongs to the atom whose planted direction it matches
    for k in local:
        atom = est.atoms_[est.kinds_[k]][est.atom_index_[k]]
        j = int(np.argmax(best_abs_cos(atom[None], np.stack(atoms_true[est.kinds_[k]]))))
        offset = 0 if est.kinds_[k] == "depth" else 2
        # signed: the atom is the planted (positive) blob, not its negative, and moving along the direction adds
        # the atom (w = codes @ m, maps = codes @ atoms), so atom, code and direction share one sign
        flat = atom.reshape(-1) / np.linalg.norm(atom)
        true = np.stack(atoms_true[est.kinds_[k]])[j].reshape(-1)
        assert float(flat @ true) / np.linalg.norm(true) >= 0.99
        assert float(est.directions_[k] @ m[offset + j]) >= 0.99


def test_localized_directions_are_named_by_part_and_side(fitted):
    est = fitted[0]
    local = sorted(n for n, kind in zip(est.names_, est.kinds_) if kind != "global")
    assert local == ["albedo_eyes_left", "albedo_eyes_right", "depth_mouth", "depth_nose"]
    k = est.names_.index("depth_nose")
    blob = planted_blob(8, 8)
    expected = (blob * planted_part_masks()["nose"]).sum() / blob.sum()  # the planted atom's own share
    assert est.part_shares_[k, est.part_names_.index("nose")] == pytest.approx(expected, abs=0.01)
    assert est.footprints_.shape == (len(est.names_), R, R)
    assert est.footprints_[k].max() == pytest.approx(1.0)
    assert np.all(est.footprints_[est.names_.index("yaw")] == 0)


def test_scores_transform_predict_and_direction_set(fitted, tmp_path):
    est, w, labels, *_ = fitted
    assert est.scores_[est.names_.index("yaw")] > 0.999
    coords = est.transform(w[:5])
    assert coords.shape == (5, len(est.names_))
    np.testing.assert_allclose(coords, (w[:5].astype(np.float64) - est.mean_) @ est.directions_.T.astype(np.float64),
                               rtol=1e-4, atol=1e-4)
    yaw = est.names_.index("yaw")  # the coordinate along yaw's direction moves with the planted yaw label
    assert abs(np.corrcoef(est.transform(w)[:, yaw], labels["yaw"])[0, 1]) > 0.999
    pred = est.predict(w[:50])[:, est.names_.index("yaw")]
    np.testing.assert_allclose(pred, labels["yaw"][:50], atol=1e-3)
    ds = est.to_direction_set()
    assert ds.method == "3d-coupled" and ds.names == est.names_
    np.testing.assert_array_equal(ds.extras["footprint"], est.footprints_)
    ds.save(tmp_path / "dirs")
    back = DirectionSet.load(tmp_path / "dirs")
    np.testing.assert_array_equal(back.extras["footprint"], est.footprints_)
    assert back.info["kinds"] == est.kinds_


def test_ridge_code_regression_and_sparse_pca_atoms_also_recover_directions():
    w, labels, m, _, atoms_true = planted(n=2000, seed=1)
    labels = {k: labels[k] for k in ("yaw", "depth")}
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_regression="ridge", random_state=0).fit(w, labels)
    local = [k for k, kind in enumerate(est.kinds_) if kind == "depth"]
    assert best_abs_cos(est.directions_[local], m[:2]).min() >= 0.99
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", atom_method="sparse_pca", code_alpha=0.5, random_state=0)
    est.fit(w, labels)
    assert best_abs_cos(est.atoms_["depth"], np.stack(atoms_true["depth"])).min() >= 0.98


def test_default_names_come_from_canonical_regions():
    names, masks = canonical_regions(32)
    assert masks.shape == (len(names), 32, 32)
    np.testing.assert_array_equal(masks.sum(0), 1.0)  # a partition
    fp = np.zeros((32, 32))
    fp[20, 15:17] = 1.0  # just below the centre, on the midline: the nose
    assert footprint_name(fp, names, masks)[0] == "nose"
    fp = np.zeros((32, 32))
    fp[10, 8] = 1.0  # upper left: the left eye (image side)
    assert footprint_name(fp, names, masks)[0] == "eyes_left"


def test_sklearn_contract():
    est = ThreeDCoupledDirections(n_atoms=3, alpha=0.01, random_state=4)
    twin = clone(est)
    assert twin.get_params() == est.get_params()
    with pytest.raises(NotFittedError):
        est.transform(np.zeros((2, W_DIM)))
    with pytest.raises(NotFittedError):
        est.to_direction_set()
    w, labels, *_ = planted(n=400)
    assert est.fit(w, {"yaw": labels["yaw"]}) is est
    assert not hasattr(twin, "directions_")


def test_bad_inputs_name_the_problem():
    w, labels, *_ = planted(n=200)
    with pytest.raises(LatentError, match="depth"):
        ThreeDCoupledDirections().fit(w, {"depth": labels["depth"][:100]})
    with pytest.raises(LatentError, match="global_labels"):
        ThreeDCoupledDirections(global_labels=["roll"]).fit(w, labels)
    with pytest.raises(LatentError, match="nothing to fit"):
        ThreeDCoupledDirections().fit(w, {"tz": np.zeros(200)})
    with pytest.raises(ValueError, match="atom_method"):
        ThreeDCoupledDirections(atom_method="pca").fit(w, labels)
    with pytest.raises(ValueError, match="global_loss"):
        ThreeDCoupledDirections(global_loss="l1").fit(w, labels)


def test_a_nan_in_a_scalar_label_is_named_not_dropped_as_constant():
    """NaN makes a label's range NaN: it must be reported (name and row count), not listed as constant in dropped_."""
    w, labels, *_ = planted(n=200)
    yaw = labels["yaw"].astype(np.float64).copy()
    yaw[[3, 50, 199]] = np.nan
    with pytest.raises(LatentError, match=r"'yaw' contains NaN or inf in 3 of 200 rows"):
        ThreeDCoupledDirections().fit(w, {**labels, "yaw": yaw})
    only = np.full(200, np.inf)  # the only label: was 'nothing to fit: no varying scalar labels'
    with pytest.raises(LatentError, match=r"'tz' contains NaN or inf in 200 of 200 rows"):
        ThreeDCoupledDirections(map_labels=()).fit(w, {"tz": only})
    # a NaN in a scalar label that global_labels leaves out is not read
    est = ThreeDCoupledDirections(global_labels=["pitch"], map_labels=(), random_state=0)
    assert est.fit(w, {"pitch": labels["pitch"], "yaw": yaw}).names_ == ["pitch"]


def test_a_nan_in_a_map_label_is_named():
    w, labels, *_ = planted(n=200)
    labels["albedo"] = labels["albedo"].copy()
    labels["albedo"][7, 0, 3, 3] = np.nan
    with pytest.raises(LatentError, match=r"map label 'albedo' contains NaN or inf"):
        ThreeDCoupledDirections(n_atoms=2, atom_scope="map", random_state=0).fit(w, labels)
    # the albedo read off the image stands in for 'albedo'; a NaN there is named as its own label
    labels["image_albedo"], labels["albedo"] = labels["albedo"], labels["albedo"] * 0 + 0.1
    with pytest.raises(LatentError, match=r"map label 'image_albedo' contains NaN or inf"):
        ThreeDCoupledDirections(n_atoms=2, atom_scope="map", random_state=0).fit(w, labels)


def test_part_masks_as_an_array_with_names_equal_the_dict_form(fitted):
    est = fitted[0]
    w, labels, *_ = planted()
    masks = planted_part_masks()
    again = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0).fit(
        w, labels, part_masks=np.stack(list(masks.values())), part_names=list(masks))
    assert again.names_ == est.names_ and again.part_names_ == est.part_names_
    np.testing.assert_array_equal(again.directions_, est.directions_)
    with pytest.raises(LatentError, match="need part_names"):
        ThreeDCoupledDirections(n_atoms=2, atom_scope="map").fit(w, labels, part_masks=np.stack(list(masks.values())))


@pytest.mark.parametrize("params, match", [
    (dict(max_samples=0), r"max_samples must be an integer >= max\(n_atoms, 5\) = 6"),
    (dict(max_samples=4, n_atoms=2), r"max_samples must be an integer >= max\(n_atoms, 5\) = 5"),
    (dict(max_samples=7, n_atoms=8, dict_samples=None), r"max_samples .* = 8"),
    (dict(max_samples=2.5e4), "max_samples must be an integer"),
    (dict(n_atoms=0), "n_atoms must be an integer >= 1"),
    (dict(dict_samples=0), "dict_samples must be None or an integer >= n_atoms"),
    (dict(dict_max_iter=0), "dict_max_iter"),
    (dict(chunk_size=0), "chunk_size"),
    (dict(code_alpha=-0.1), "code_alpha must be >= 0"),
    (dict(code_alpha=float("nan")), "code_alpha must be >= 0"),
    (dict(alpha=0.0), "alpha must be > 0"),
    (dict(alpha=-1e-3), "alpha must be > 0"),
    (dict(alpha=True), "alpha must be > 0"),
    (dict(ridge_alpha=-1.0), "ridge_alpha must be a number >= 0 or 'auto'"),
    (dict(ridge_alpha="gcv"), "ridge_alpha must be a number >= 0 or 'auto'"),
    (dict(epsilon=0.5), "epsilon must be >= 1"),
    (dict(val_fraction=1.0), r"val_fraction must be in \[0, 1\)"),
    (dict(val_fraction=-0.1), r"val_fraction must be in \[0, 1\)"),
    (dict(side_fraction=0.5), r"side_fraction must be in \(0.5, 1\]"),
    (dict(global_labels="yaw"), "global_labels must be a sequence of names"),
    (dict(skip_parts="background"), "skip_parts must be a sequence of names"),
    (dict(part_core=0.0), r"part_core must be in \(0, 1\]"),
    (dict(part_core=1.5), r"part_core must be in \(0, 1\]"),
    (dict(code_regression="elasticnet"), "code_regression must be one of"),
    (dict(atom_method="nmf"), "atom_method must be one of"),
])
def test_bad_parameters_are_named_before_any_work(params, match):
    w, labels, *_ = planted(n=50)
    with pytest.raises(ValueError, match=match):
        ThreeDCoupledDirections(**params).fit(w, labels)


def test_the_smallest_allowed_max_samples_and_zero_code_alpha_fit():
    w, labels, *_ = planted(n=300)
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", max_samples=5, code_alpha=0.0, ridge_alpha=0.0,
                                  random_state=0).fit(w, labels)
    assert est.n_samples_fit_ == 300 and "yaw" in est.names_  # the global regression still streams every row


def test_global_huber_default_resists_a_misread_minority():
    # A decomposer reads most faces closely and some badly: here the yaw label of the 15 % of faces furthest along
    # one other direction is read 3 sd too high. Least squares follows that tail; the default Huber loss does not.
    w, labels, m, g, _ = planted()
    yaw = labels["yaw"].astype(np.float64).copy()
    proj = (w - w.mean(axis=0)) @ m[0]
    yaw[proj > np.quantile(proj, 0.85)] += 3.0 * yaw.std()
    scalars = {"yaw": yaw, "pitch": labels["pitch"]}
    huber = ThreeDCoupledDirections(map_labels=(), random_state=0).fit(w, scalars)
    squared = ThreeDCoupledDirections(map_labels=(), global_loss="squared", random_state=0).fit(w, scalars)
    k = huber.names_.index("yaw")
    assert abs(float(squared.directions_[k] @ g[0])) < 0.85
    assert abs(float(huber.directions_[k] @ g[0])) > 0.97
    assert abs(float(huber.directions_[huber.names_.index("pitch")] @ g[1])) > 0.999


def _planted_readings(seed: int, k: int, noise_scale: float, noise_cols: int, n: int = 4000, d: int = 12):
    """w [n, d], k orthonormal true directions [k, d] and reading noise [n, noise_cols], drawn in that order from
    one seeded generator (the planted light problems below)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, k)))
    return w, q.T, noise_scale * rng.standard_normal((n, noise_cols))


def _confounded_light(n: int = 4000, seed: int = 0):
    """w [n, 12] with orthonormal true light directions (ambient, azimuth, elevation) and a decomposer-like reading of
    the elevation that takes in the ambient (elevation + 0.8 ambient), a diffuse reading that is minus the ambient
    plus a little of a fourth direction, and small noise on every reading."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, 12))
    q, _ = np.linalg.qr(rng.standard_normal((12, 4)))
    amb, az, el, other = q.T
    noise = 0.05 * rng.standard_normal((n, 4))
    labels = {"light_ambient": w @ amb + noise[:, 0], "light_diffuse": -(w @ amb) + 0.3 * (w @ other) + noise[:, 1],
              "light_azimuth": w @ az + noise[:, 2], "light_elevation": w @ el + 0.8 * (w @ amb) + noise[:, 3]}
    return w, labels, dict(amb=amb, az=az, el=el)


def test_the_elevation_is_held_against_the_other_light_readings_by_default():
    w, labels, true = _confounded_light()
    auto = ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None,
                                   random_state=0).fit(w, labels)
    plain = ThreeDCoupledDirections(map_labels=(), global_loss="squared", conditions=None, soft_conditions=None,
                                    random_state=0).fit(w, labels)
    k = auto.names_.index("light_elevation")
    assert abs(float(plain.directions_[k] @ true["el"])) < 0.8  # the reading's own direction leans to the ambient
    assert abs(float(auto.directions_[k] @ true["el"])) > 0.99
    assert auto.conditioned_on_ == {"light_elevation": ["light_ambient", "light_diffuse", "light_azimuth"]}
    assert plain.conditioned_on_ == {}
    others = [i for i, n in enumerate(auto.names_) if n != "light_elevation"]
    np.testing.assert_array_equal(auto.directions_[others], plain.directions_[others])  # left as fitted
    np.testing.assert_array_equal(auto.coef_, plain.coef_)  # the regressions (and `predict`) are unchanged
    assert abs(float(auto.directions_[k] @ auto.directions_[auto.names_.index("light_ambient")])) < 1e-6
    assert auto.to_direction_set().info["conditioned_on"] == auto.conditioned_on_
    # only the conditions that were fitted; none at all without an elevation
    partial = ThreeDCoupledDirections(map_labels=(), global_labels=["light_elevation", "light_ambient"],
                                      random_state=0).fit(w, labels)
    assert partial.conditioned_on_ == {"light_elevation": ["light_ambient"]}
    assert ThreeDCoupledDirections(map_labels=(), global_labels=["light_ambient"]).fit(w, labels).conditioned_on_ == {}
    # conditions of one's own: the ambient held against the azimuth
    own = ThreeDCoupledDirections(map_labels=(), conditions={"light_ambient": ["light_azimuth"]}).fit(w, labels)
    assert own.conditioned_on_ == {"light_ambient": ["light_azimuth"]}


def test_the_elevation_is_also_held_against_the_colour_of_the_top_albedo():
    """A decomposer that reads bright hair above the face as light from above (elevation reading = elevation + 0.6
    hair + 0.4 hair2, two hair-colour factors): its albedo's colour at the top of the canonical face follows the
    hair and not the light (the light only scales the albedo's intensity, here by the ambient), so the elevation
    held against that colour's two W directions loses the hair; without an albedo map the rule is not applied."""
    rng = np.random.default_rng(0)
    n, d, r = 3000, 12, 8
    w = rng.standard_normal((n, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, 5)))
    amb, az, el, hair, hair2 = q.T
    noise = 0.05 * rng.standard_normal((n, 4))
    labels = {"light_ambient": w @ amb + noise[:, 0], "light_azimuth": w @ az + noise[:, 1],
              "light_elevation": w @ el + 0.6 * (w @ hair) + 0.4 * (w @ hair2) + noise[:, 2]}
    # canonical albedo in [-1, 1]: a skin colour, and hair above (rows 0-1 of 8: the canonical 'forehead' region)
    # whose red / blue and green balances follow w @ hair and w @ hair2; the light scales every intensity alike
    intensity = np.full((n, 3, r, r), 0.6) * np.array([1.0, 0.7, 0.5])[None, :, None, None]
    h, h2 = np.tanh(0.4 * (w @ hair))[:, None], np.tanh(0.4 * (w @ hair2))[:, None]
    intensity[:, :, :2, :] = (0.3 * np.stack([1 + h, 1 + h2, 1 - h], axis=1))[..., None]
    intensity *= (1 + 0.3 * np.tanh(w @ amb))[:, None, None, None]
    labels["albedo"] = (2 * intensity - 1 + 0.01 * rng.standard_normal((n, 3, r, r))).astype(np.float32)

    def fit(**kw):
        return ThreeDCoupledDirections(global_loss="squared", n_atoms=1, atom_scope="map", soft_conditions=None,
                                       random_state=0, **kw)

    auto, plain = fit().fit(w, labels), fit(conditions=None).fit(w, labels)
    scalars = {k: v for k, v in labels.items() if k != "albedo"}
    without_maps = fit(map_labels=()).fit(w, scalars)
    k = auto.names_.index("light_elevation")
    assert without_maps.conditioned_on_ == {"light_elevation": ["light_ambient", "light_azimuth"]}
    assert abs(float(without_maps.directions_[k] @ el)) < 0.9  # the hair's lean stays
    assert auto.conditioned_on_ == {"light_elevation": ["light_ambient", "light_azimuth", TOP_ALBEDO_COLOUR]}
    assert abs(float(auto.directions_[k] @ el)) > 0.99
    colour = auto.top_albedo_colour_directions_
    np.testing.assert_allclose(colour @ colour.T, np.eye(2), atol=1e-9)
    assert min(np.linalg.norm(colour @ hair), np.linalg.norm(colour @ hair2)) > 0.99  # the hair, not the light
    assert np.linalg.norm(colour @ el) < 0.1
    others = [i for i, name in enumerate(auto.names_) if name != "light_elevation"]
    np.testing.assert_array_equal(auto.directions_[others], plain.directions_[others])
    assert plain.top_albedo_colour_directions_ is None and without_maps.top_albedo_colour_directions_ is None
    grey = labels["albedo"].mean(axis=1, keepdims=True).repeat(3, axis=1)  # no colour to read: no such condition
    assert fit().fit(w, {**labels, "albedo": grey}).conditioned_on_ == without_maps.conditioned_on_
    with pytest.raises(ValueError, match="needs an RGB albedo map"):
        fit(map_labels=(), conditions={"light_elevation": [TOP_ALBEDO_COLOUR]}).fit(w, scalars)
    with pytest.raises(ValueError, match="is a condition, not a direction"):
        fit(conditions={TOP_ALBEDO_COLOUR: ["light_ambient"]}).fit(w, labels)


def test_the_white_light_prior_pulls_the_light_directions_off_colour_changes():
    """A decomposer that reads a colour change (here `hair`) as ambient: the chroma sensitivity K is large along
    that direction only, and the white-light prior (penalty chroma_alpha * N * b'Kb on the light labels) shrinks
    the ambient direction's hair component as a ridge would, 0.6 -> 0.6 / (1 + chroma_alpha); a label outside
    `light_labels` is fitted as before."""
    rng = np.random.default_rng(0)
    n, d = 4000, 12
    w = rng.standard_normal((n, d))
    q, _ = np.linalg.qr(rng.standard_normal((d, 3)))
    amb, hair, yaw = q.T
    labels = {"light_ambient": w @ amb + 0.6 * (w @ hair) + 0.02 * rng.standard_normal(n),
              "yaw": w @ yaw + 0.6 * (w @ hair) + 0.02 * rng.standard_normal(n)}
    metric, chroma = np.eye(d), np.outer(hair, hair)

    def fit(**kw):
        return ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None, random_state=0,
                                       **kw)

    plain = fit().fit(w, labels, w_metric=metric)
    default = fit().fit(w, labels, w_metric=metric, w_chroma=chroma)
    strong = fit(chroma_alpha=5.0).fit(w, labels, w_metric=metric, w_chroma=chroma)
    k, y = plain.names_.index("light_ambient"), plain.names_.index("yaw")

    def cos(est, i, v):
        return abs(float(est.directions_[i] @ v))

    # the ridge's own shrinkage (metric_alpha 1e-3) is 0.1 %: the hair share is 0.6 / (1 + chroma_alpha)
    for est, share in ((plain, 0.6), (default, 0.6 / 1.2), (strong, 0.6 / 6)):
        assert cos(est, k, amb) == pytest.approx(1 / np.sqrt(1 + share ** 2), abs=0.005)
    assert cos(strong, k, amb) > 0.99 and default.chroma_labels_ == ["light_ambient"] and plain.chroma_labels_ == []
    np.testing.assert_allclose(default.directions_[y], plain.directions_[y], atol=1e-6)  # not a light label
    np.testing.assert_array_equal(fit(chroma_alpha=0.0).fit(w, labels, w_metric=metric, w_chroma=chroma).directions_,
                                  plain.directions_)
    with pytest.raises(ValueError, match="pass w_metric too"):
        fit().fit(w, labels, w_chroma=chroma)
    with pytest.raises(ValueError, match="chroma_alpha must be >= 0"):
        fit(chroma_alpha=-1.0).fit(w, labels, w_metric=metric, w_chroma=chroma)


@pytest.mark.parametrize("conditions, match", [
    ({"light_elevation": ["yaw"]}, r"not fitted global labels"),
    ({"light_elevation": ["light_elevation"]}, "against themselves"),
    ({"light_ambient": ["light_diffuse"], "light_diffuse": ["light_ambient"]}, None),
    ("always", "conditions must be 'auto', None or a dict"),
    ({"light_elevation": "light_ambient"}, "conditions must be 'auto', None or a dict"),
])
def test_bad_conditions_are_named(conditions, match):
    w, labels, _ = _confounded_light(n=300)
    est = ThreeDCoupledDirections(map_labels=(), conditions=conditions)
    if match is None:  # each held against the other, as fitted: allowed (conditions do not chain)
        assert set(est.fit(w, labels).conditioned_on_) == {"light_ambient", "light_diffuse"}
        return
    with pytest.raises(ValueError, match=match):
        est.fit(w, labels)


# ---------------------------------------------------------------------------------------------------------------
# find-directions --method 3d-coupled, end to end on a tiny generator with a random decomposer


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return make_tiny_run(tmp_path_factory.mktemp("tdc"))


def test_cli_3d_coupled_writes_named_directions_and_the_footprint_sheet(tiny_run):
    pkl, dec_path, root = tiny_run
    out = root / "run"
    result = cli(["find-directions", str(pkl), "--method", "3d-coupled", "--decomposer", str(dec_path),
                   "--samples", "120", "--outdir", str(out), "--no-umap", "--effect-samples", "4",
                   "--grid-steps", "3", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    ds = DirectionSet.load(out / "directions")
    assert ds.method == "3d-coupled"
    assert {"yaw", "pitch", "roll", "light_azimuth", "light_elevation", "light_ambient"} <= set(ds.names)
    # an untrained netV does not follow its own re-rendered rotations: no view leak is measured (a warning), the
    # light labels are fitted as read
    assert "label_leaks" not in ds.info
    kinds = ds.info["kinds"]
    assert {"depth", "albedo"} <= set(kinds)
    fp = ds.extras["footprint"]
    assert fp.shape == (len(ds), 32, 32)
    assert all((np.abs(fp[i]).max() > 0) == (kind != "global") for i, kind in enumerate(kinds))
    assert (out / "footprint_sheet.png").stat().st_size > 0
    report = __import__("json").loads((out / "report.json").read_text())
    assert report["files"]["footprint_sheet"].endswith("footprint_sheet.png")
    local = [d for d in report["directions"] if d["kind"] != "global"]
    assert local and all(abs(sum(d["footprint_part_shares"].values()) - 1) < 1e-5 for d in local)
    # each report entry carries its own direction's shares, under the right part names
    for d in local:
        k = ds.names.index(d["name"])
        want = dict(zip(ds.info["part_names"], ds.extras["part_shares"][k].tolist()))
        assert d["footprint_part_shares"] == pytest.approx(want, abs=1e-6), d["name"]


def test_cli_atom_scope_and_n_atoms_reach_the_estimator(tiny_run, tmp_path):
    config = find_3d(tiny_run, tmp_path / "parts", "--atom-scope", "parts")
    assert config["args"]["method_kwargs"] == {"atom_scope": "parts", "taught_light": False}
    ds = DirectionSet.load(tmp_path / "parts" / "directions")
    kinds = ds.info["kinds"]
    # part-scoped footprints: every localized direction is named after a part
    assert all(ds.names[i].split("_")[1] in ds.info["part_names"] for i, k in enumerate(kinds) if k != "global")
    # one whole-map dictionary of 2 atoms: at most 2 localized directions per map
    config = find_3d(tiny_run, tmp_path / "map", "--atom-scope", "map", "--n-atoms", "2")
    assert config["args"]["method_kwargs"] == {"atom_scope": "map", "n_atoms": 2, "taught_light": False}
    kinds = DirectionSet.load(tmp_path / "map" / "directions").info["kinds"]
    assert 0 < kinds.count("depth") <= 2 and 0 < kinds.count("albedo") <= 2
    for option in (["--atom-scope", "parts"], ["--n-atoms", "2"]):
        wrong = cli(["find-directions", str(tiny_run[0]), "--method", "pca", *option, "--outdir",
                      str(tmp_path / "pca")])
        assert wrong.exit_code != 0 and "3d-coupled only" in wrong.output


def test_cli_albedo_source_reaches_the_estimator_and_the_direction_set_records_it(tiny_run, tmp_path):
    """The bank holds both albedos (netA's and the image's); by default the albedo atoms come from the image's,
    with --albedo-source net from netA's, and the two runs' albedo directions differ while the depth's do not."""
    find_3d(tiny_run, tmp_path / "image")
    config = find_3d(tiny_run, tmp_path / "net", "--albedo-source", "net")
    assert config["args"]["method_kwargs"] == {"albedo_source": "net", "taught_light": False}
    image, net = (DirectionSet.load(tmp_path / tag / "directions") for tag in ("image", "net"))
    assert image.info["albedo_source"] == "image" and net.info["albedo_source"] == "net"
    def rows(ds, kind):
        return ds.vectors[[i for i, k in enumerate(ds.info["kinds"]) if k == kind]]

    assert len(rows(image, "depth")) and np.array_equal(rows(image, "depth"), rows(net, "depth"))
    a, b = rows(image, "albedo"), rows(net, "albedo")
    assert len(a) and len(b) and not (a.shape == b.shape and np.allclose(a, b))
    wrong = cli(["find-directions", str(tiny_run[0]), "--method", "pca", "--albedo-source", "net", "--outdir",
                 str(tmp_path / "pca")])
    assert wrong.exit_code == 2 and "--albedo-source applies to --method 3d-coupled only" in wrong.output
    assert not (tmp_path / "pca").exists()


def test_cli_loss_and_conditions_reach_the_estimator(tiny_run, tmp_path):
    config = find_3d(tiny_run, tmp_path / "sq", "--loss", "squared", "--conditions", "none")
    assert config["args"]["method_kwargs"] == {"global_loss": "squared", "conditions": None,
                                               "soft_conditions": None, "part_conditions": None,
                                               "taught_light": False}
    info = DirectionSet.load(tmp_path / "sq" / "directions").info
    assert not {"conditioned_on", "soft_conditioned_on", "part_conditioned_on"} & set(info)  # 'none': no holds
    auto = find_3d(tiny_run, tmp_path / "auto")  # the default holds the elevation against the other light readings
    assert "conditions" not in auto["args"]["method_kwargs"]  # and the colour of the albedo at the top of the face
    assert DirectionSet.load(tmp_path / "auto" / "directions").info["conditioned_on"] == {  # and the ambient
        "light_elevation": ["light_ambient", "light_diffuse", "light_azimuth", TOP_ALBEDO_COLOUR],
        "light_ambient": ["pitch"]}
    soft = DirectionSet.load(tmp_path / "auto" / "directions").info["soft_conditioned_on"]  # and softly, the ambient
    assert {"yaw", "pitch", "light_elevation"} <= set(soft["light_ambient"])
    assert soft["light_elevation"] == [DEPTH_HEIGHT]  # the face's height as the depth map draws it
    # a decomposer whose netL learned from a latent light teacher (its mark in the settings beside the file) gets
    # the taught rule: the elevation held against the top albedo's colour and the roll only
    from stylegan_disentangle.labels.decomposer.labeler import load_decomposer

    taught = load_decomposer(tiny_run[1])
    taught.light_teacher = "0" * 64
    (tmp_path / "taught").mkdir()
    path = taught.save(tmp_path / "taught" / "dec.pth")
    path.with_suffix(".json").write_text(json.dumps({"scalings": {"light_teacher": "0" * 64}}))
    config = find_3d((tiny_run[0], path, None), tmp_path / "taught" / "run")
    assert config["args"]["method_kwargs"] == {"taught_light": True}
    assert DirectionSet.load(tmp_path / "taught" / "run" / "directions").info["conditioned_on"] == {
        "light_elevation": [TOP_ALBEDO_COLOUR, "roll"], "light_ambient": ["pitch"]}
    wrong = cli(["find-directions", str(tiny_run[0]), "--method", "pca", "--conditions", "auto", "--outdir",
                 str(tmp_path / "p")])
    assert wrong.exit_code == 2 and "--conditions applies to --method 3d-coupled only" in wrong.output
    wrong = cli(["find-directions", str(tiny_run[0]), "--method", "pca", "--loss", "huber", "--outdir",
                  str(tmp_path / "p")])
    assert wrong.exit_code != 0 and "linear and 3d-coupled only" in wrong.output


def test_cli_3d_coupled_without_a_decomposer_says_how_to_train_one(tiny_run, tmp_path):
    pkl, _, _ = tiny_run
    result = cli(["find-directions", str(pkl), "--method", "3d-coupled", "--outdir", str(tmp_path / "x")])
    assert result.exit_code != 0
    assert "train-decomposer" in result.output and "--decomposer" in result.output
    assert not (tmp_path / "x").exists()  # nothing is written before the decomposer is known


def test_cli_3d_coupled_with_a_broken_decomposer_names_it_and_writes_nothing(tiny_run, tmp_path):
    pkl, _, _ = tiny_run
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"not a checkpoint")
    result = cli(["find-directions", str(pkl), "--method", "3d-coupled", "--decomposer", str(broken), "--outdir",
                   str(tmp_path / "out")])
    assert result.exit_code != 0
    assert "broken.pth: not a torch checkpoint" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_cli_decomposer_with_another_method_is_a_usage_error(tiny_run, tmp_path):
    """--decomposer is 3d-coupled's labeler: with another method it would be ignored yet recorded in config.json."""
    from stylegan_disentangle.analysis.find_directions import run_find_directions
    from stylegan_disentangle.errors import UsageError

    pkl, dec_path, _ = tiny_run
    wrong = cli(["find-directions", str(pkl), "--method", "pca", "--decomposer", str(dec_path), "--outdir",
                  str(tmp_path / "pca")])
    assert wrong.exit_code == 2 and "--decomposer applies to --method 3d-coupled only" in wrong.output
    assert "Traceback" not in wrong.output and not (tmp_path / "pca").exists()
    with pytest.raises(UsageError, match="decomposer applies to method '3d-coupled' only"):
        run_find_directions(pkl, method="linear", decomposer=dec_path, outdir=tmp_path / "lin")
    assert not (tmp_path / "lin").exists()
    wrong = cli(["find-directions", str(pkl), "--method", "pca", "--view-leak-samples", "8", "--outdir",
                  str(tmp_path / "pca")])
    assert wrong.exit_code == 2 and "--view-leak-samples applies to --method 3d-coupled only" in wrong.output
    with pytest.raises(UsageError, match=r"view_leak_samples must be an integer >= 0 \(0: no view leak\)"):
        run_find_directions(pkl, method="3d-coupled", decomposer=dec_path, view_leak_samples=-1,
                            outdir=tmp_path / "neg")
    assert not (tmp_path / "pca").exists() and not (tmp_path / "neg").exists()


def test_script_accepts_the_3d_coupled_method(tiny_run, tmp_path, capsys):
    pkl, dec_path, _ = tiny_run
    module = load_script("find_directions")
    code = module.main([str(pkl), "--method", "3d-coupled", "--decomposer", str(dec_path), "--samples", "60",
                        "--outdir", str(tmp_path / "s"), "--no-umap", "--effect-samples", "2", "--grid-steps", "3",
                        "--atom-scope", "map", "--n-atoms", "2", "--loss", "squared", "--sensitivity-samples", "3",
                        "--conditions", "none", "--decomposer-crop", "0,0,1,1", "--quiet"])
    assert code == 0
    assert "yaw" in capsys.readouterr().out
    # the options reach the estimator as the CLI passes them
    config = __import__("json").loads((tmp_path / "s" / "config.json").read_text())
    assert config["args"]["method_kwargs"] == {"atom_scope": "map", "n_atoms": 2, "global_loss": "squared",
                                               "conditions": None, "soft_conditions": None, "part_conditions": None,
                                               "taught_light": False}
    assert config["args"]["sensitivity_samples"] == 3 and config["args"]["decomposer_crop"] == [0, 0, 1, 1]
    ds = DirectionSet.load(tmp_path / "s" / "directions")
    assert ds.params["atom_scope"] == "map" and ds.params["n_atoms"] == 2 and ds.params["global_loss"] == "squared"
    assert ds.params["conditions"] is None and "conditioned_on" not in ds.info
    kinds = ds.info["kinds"]
    assert 0 < kinds.count("depth") <= 2 and 0 < kinds.count("albedo") <= 2
    # and are refused with the CLI's messages (argparse's usage error: exit status 2, nothing written)
    for option, message in ((["--method", "pca", "--atom-scope", "parts"], "--atom-scope applies to --method "
                             "3d-coupled only"),
                            (["--method", "pca", "--n-atoms", "2"], "--n-atoms applies to --method 3d-coupled only"),
                            (["--method", "pca", "--loss", "huber"], "--loss applies to --method linear and "
                             "3d-coupled only"),
                            (["--method", "pca", "--decomposer", str(dec_path)], "--decomposer applies to --method "
                             "3d-coupled only"),
                            (["--method", "pca", "--sensitivity-samples", "4"], "--sensitivity-samples applies to "
                             "--method 3d-coupled only"),
                            (["--method", "3d-coupled", "--sensitivity-samples", "-1"], "must be an integer >= 0"),
                            (["--method", "3d-coupled", "--n-atoms", "0"], "must be an integer >= 1"),
                            (["--method", "3d-coupled", "--atom-scope", "face"], "invalid choice: 'face'"),
                            (["--method", "pca", "--conditions", "auto"], "--conditions applies to --method "
                             "3d-coupled only"),
                            (["--method", "3d-coupled", "--decomposer-crop", "0,0,2,1"], "inside the image"),
                            (["--method", "pca", "--decomposer-crop", "0,0,1,1"], "--decomposer-crop applies to "
                             "--method 3d-coupled only")):
        with pytest.raises(SystemExit) as exit_info:
            module.main([str(pkl), *option, "--outdir", str(tmp_path / "bad")])
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    # linear: --loss becomes the estimator's `loss`
    assert module.method_options("linear", loss="huber") == {"loss": "huber"}


def test_missing_world_part_masks_warn_that_the_names_are_positional(monkeypatch, caplog):
    import logging

    from stylegan_disentangle.analysis import find_directions as fd
    from stylegan_disentangle.errors import StyleGANDisentangleError
    from stylegan_disentangle.synthetic import checkpoint

    def missing():
        raise StyleGANDisentangleError("factor_map.npz is missing")

    monkeypatch.setattr(checkpoint, "oracle_labeler", missing)
    with caplog.at_level(logging.WARNING, logger=fd.__name__):
        assert fd._synthetic_part_masks(None, 32) is None
    (record,) = [r for r in caplog.records if r.name == fd.__name__]
    assert record.levelno == logging.WARNING
    assert "factor_map.npz is missing" in record.getMessage()
    assert "fixed regions of the canonical face" in record.getMessage()


def test_the_shipped_checkpoint_gets_the_synthetic_decomposer_and_the_worlds_part_names(tmp_path):
    """No --decomposer for the shipped synthetic checkpoint: the shipped 'synthetic' decomposer, and the localized
    directions are named after the world's own parts (its canonical part masks), not the fixed template regions."""
    from stylegan_disentangle.analysis.find_directions import resolve_decomposer, run_find_directions
    from stylegan_disentangle.errors import StyleGANDisentangleError
    from stylegan_disentangle.synthetic import PART_NAMES
    from stylegan_disentangle.synthetic.checkpoint import SYNTHETIC_CHECKPOINT

    assert resolve_decomposer(None, SYNTHETIC_CHECKPOINT) == "synthetic"
    assert resolve_decomposer("", str(SYNTHETIC_CHECKPOINT.parent / ".." / "data" / SYNTHETIC_CHECKPOINT.name)) == (
        "synthetic")
    assert resolve_decomposer("my.pth", SYNTHETIC_CHECKPOINT) == "my.pth"
    with pytest.raises(StyleGANDisentangleError, match="train-decomposer"):
        resolve_decomposer(None, tmp_path / "other.pkl")

    res = run_find_directions("synthetic", method="3d-coupled", samples=120, outdir=tmp_path / "run", umap=False,
                              effect_samples=2, grid_steps=3, grid_max_rows=2, device="cpu", progress=False,
                              method_kwargs={"n_atoms": 1, "dict_max_iter": 20, "global_loss": "squared"})
    ds = res.direction_set
    config = __import__("json").loads((tmp_path / "run" / "config.json").read_text())
    assert config["args"]["decomposer"] == "synthetic"
    # the shipped netL's view leak, measured on the bank's faces and removed from the light labels before the fit
    assert config["args"]["view_leak_samples"] == 512
    leaks = ds.info["label_leaks"]
    assert set(leaks) == {"light_ambient", "light_diffuse", "light_azimuth", "light_elevation"}
    assert all(set(row) == {"pitch", "yaw", "roll"} for row in leaks.values())
    # the shipped netL was last taught by directions fitted with the leak removed: it reads a nod as little light
    # (|slope| ~0.05 deg per deg; the nets before read ~0.5, BENCHMARKS.md issue 10, thirty-fourth session)
    assert abs(leaks["light_elevation"]["pitch"]) < 0.2
    assert ds.info["part_names"] == list(PART_NAMES)
    local = [n for n, kind in zip(ds.names, ds.info["kinds"]) if kind != "global"]
    assert local and all(n.split("_")[1] in PART_NAMES for n in local), local


def test_atoms_learned_on_a_subset_then_coded_on_every_row():
    """dict_samples: atoms from 600 of the 3000 rows still recover the planted atoms and directions, every row gets
    a code (the regression sees all rows), and dict_samples=None learns on all rows (a different fit)."""
    w, labels, m, _, atoms_true = planted()
    sub = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, dict_samples=600, random_state=0)
    sub.fit(w, labels, part_masks=planted_part_masks())
    assert best_abs_cos(sub.atoms_["depth"], np.stack(atoms_true["depth"])).min() >= 0.99
    assert best_abs_cos(sub.atoms_["albedo"], np.stack(atoms_true["albedo"])).min() >= 0.99
    local = [k for k, kind in enumerate(sub.kinds_) if kind != "global"]
    assert best_abs_cos(sub.directions_[local], m).min() >= 0.99
    full = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, dict_samples=None, random_state=0)
    full.fit(w, labels, part_masks=planted_part_masks())
    assert not np.array_equal(full.atoms_["depth"], sub.atoms_["depth"])
    with pytest.raises(ValueError, match="dict_samples"):
        ThreeDCoupledDirections(n_atoms=4, dict_samples=2).fit(w, labels)


def test_part_scoped_atoms_stay_inside_their_part_and_recover_the_directions():
    """atom_scope='parts': each atom is learned on one part's pixels, so its footprint is zero outside that part and
    its name starts with the part; the planted localized directions are still recovered."""
    w, labels, m, _, _ = planted()
    masks = planted_part_masks()
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="parts", code_alpha=0.05, random_state=0)
    est.fit(w, labels, part_masks=masks)
    local = [k for k, kind in enumerate(est.kinds_) if kind != "global"]
    assert best_abs_cos(est.directions_[local], m).min() >= 0.99
    for k in local:
        part = est.names_[k].split("_")[1]
        outside = est.footprints_[k][masks[part] < 0.5]
        assert part in masks and np.abs(outside).max() == 0.0, est.names_[k]
    # the blobs' parts get directions of their own (eyes: one per eye, by side)
    assert {"albedo_eyes_left", "albedo_eyes_right", "depth_mouth"} <= set(est.names_)
    with pytest.raises(ValueError, match="atom_scope"):
        ThreeDCoupledDirections(atom_scope="regions").fit(w, labels)

    # map+parts: whole-map atoms first, part atoms on the residual; the planted directions are among the union
    both = ThreeDCoupledDirections(n_atoms=2, atom_scope="map+parts", code_alpha=0.05, random_state=0)
    both.fit(w, labels, part_masks=masks)
    local = [k for k, kind in enumerate(both.kinds_) if kind != "global"]
    assert best_abs_cos(both.directions_[local], m).min() >= 0.99
    whole = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0)
    whole.fit(w, labels, part_masks=masks)
    for key in ("depth", "albedo"):  # the first atoms are the whole-map fit's, the part atoms come after them
        np.testing.assert_array_equal(both.atoms_[key][:2], whole.atoms_[key])
        assert both.atoms_[key].shape[0] > 2


def _two_scale_problem(n: int = 3000, seed: int = 1):
    """A big pattern over the mouth rows and a faint blob in the nose rows (1/100 of its amplitude), each driven by
    its own sparse code and W direction."""
    rng = np.random.default_rng(seed)
    codes = rng.laplace(size=(n, 2)) * (rng.random((n, 2)) < 0.3)
    q, _ = np.linalg.qr(rng.normal(size=(W_DIM, W_DIM)))
    w = codes @ q[:2] + 0.3 * rng.normal(size=(n, W_DIM))
    yy = np.mgrid[0:R, 0:R][0]
    big = (yy >= 11).astype(np.float64)
    depth = 1.0 + 0.01 * (codes[:, :1, None] * big + 0.01 * codes[:, 1:, None] * planted_blob(9, 8, radius=1.0))
    return w.astype(np.float32), {"depth": depth.astype(np.float32)}, q[:2]


def test_a_faint_small_part_gets_a_direction_of_its_own():
    """atom_scope='parts' scales each part to unit RMS before learning its atoms: on the map's common scale the
    faint nose blob's codes would fall under the L1 threshold and the nose would get no direction."""
    w, labels, m = _two_scale_problem()
    est = ThreeDCoupledDirections(n_atoms=1, random_state=0).fit(w, labels, part_masks=planted_part_masks())
    assert est.atom_scope == "parts"
    nose = [k for k, name in enumerate(est.names_) if name.startswith("depth_nose")]
    mouth = [k for k, name in enumerate(est.names_) if name.startswith("depth_mouth")]
    assert len(nose) == 1 and len(mouth) == 1, est.names_
    assert abs(float(est.directions_[nose[0]] @ m[1])) >= 0.99
    assert abs(float(est.directions_[mouth[0]] @ m[0])) >= 0.99
    # one dictionary over the whole map (the same code penalty) finds the mouth pattern and no nose direction
    whole = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", random_state=0).fit(w, labels,
                                                                                  part_masks=planted_part_masks())
    assert not any(name.startswith("depth_nose") for name in whole.names_), whole.names_


def test_a_part_atom_is_named_after_its_part_even_where_a_wider_part_overlaps_it():
    """With overlapping part masks a part atom's footprint may hold more of another part's mass (here: the whole
    face's 'skin' covers the nose too); it is still named after the part it was learned in."""
    w, labels, m = _two_scale_problem()
    masks = planted_part_masks()
    masks = {"skin": np.full((R, R), 0.7, np.float32), "nose": 0.3 * masks["nose"], "mouth": 0.3 * masks["mouth"]}
    est = ThreeDCoupledDirections(n_atoms=1, random_state=0).fit(w, labels, part_masks=masks)
    k = next(k for k, name in enumerate(est.names_) if name.startswith("depth_nose"))
    assert footprint_name(est.footprints_[k], list(masks), np.stack(list(masks.values())))[0].startswith("skin")
    assert abs(float(est.directions_[k] @ m[1])) >= 0.99


def test_a_capped_footprint_sheet_takes_every_part_before_a_second_atom_of_any():
    from stylegan_disentangle.analysis.find_directions import _round_robin

    names = ["depth_skin", "depth_skin_2", "depth_skin_3", "depth_eyes_left", "depth_eyes_left_2", "albedo_nose",
             "albedo_nose_2", "albedo_hair_right"]
    order = [names[i] for i in _round_robin(list(range(len(names))), names)]
    assert order[:4] == ["depth_skin", "depth_eyes_left", "albedo_nose", "albedo_hair_right"]
    assert order[4:] == ["depth_skin_2", "depth_eyes_left_2", "albedo_nose_2", "depth_skin_3"]


def test_part_masks_at_another_resolution_are_resampled_to_the_maps(fitted):
    """Masks at 2x the maps' resolution (each pixel repeated) average back to the same masks: the same names and
    part shares as masks at the maps' own resolution."""
    est = fitted[0]
    w, labels, *_ = planted()
    fine = {k: np.kron(v, np.ones((2, 2), dtype=np.float32)) for k, v in planted_part_masks().items()}
    again = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0).fit(
        w, labels, part_masks=fine)
    assert again.names_ == est.names_
    np.testing.assert_allclose(again.part_shares_, est.part_shares_, atol=1e-6)


def test_a_rerun_with_another_decomposer_does_not_reuse_the_first_ones_labels(tiny_run):
    """Two decomposers give the same label names; the bank keeps the labeler's fingerprint, so a second run into the
    same folder with another decomposer is refused instead of fitting on the first decomposer's labels."""
    import torch

    from stylegan_disentangle.labels.decomposer.labeler import DecomposerLabeler, load_decomposer
    from stylegan_disentangle.labels.decomposer.model import Unsup3DDecomposer

    pkl, dec_path, root = tiny_run
    torch.manual_seed(1)
    other = Unsup3DDecomposer(image_size=32, nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)
    other_path = other.save(root / "other.pth")
    first = DecomposerLabeler(load_decomposer(dec_path)).fingerprint
    assert first == DecomposerLabeler(load_decomposer(dec_path)).fingerprint  # the same file: the same print
    assert first != DecomposerLabeler(load_decomposer(other_path)).fingerprint
    out = root / "two_decomposers"
    common = ["find-directions", str(pkl), "--method", "3d-coupled", "--samples", "40", "--outdir", str(out),
              "--no-umap", "--effect-samples", "2", "--grid-steps", "3"]
    assert cli([*common, "--decomposer", str(dec_path)]).exit_code == 0
    assert cli([*common, "--decomposer", str(dec_path)]).exit_code == 0  # the same decomposer: the bank is reused
    again = cli([*common, "--decomposer", str(other_path)])
    assert again.exit_code == 1 and "made with other arguments (labelers:" in again.output
    assert "--overwrite-bank" in again.output
    # asked to, the run discards that bank and labels the faces again with the other decomposer
    rebuilt = cli([*common, "--decomposer", str(other_path), "--overwrite-bank"])
    assert rebuilt.exit_code == 0, rebuilt.output
    meta = json.loads((out / "bank" / "meta.json").read_text())
    assert meta["labelers"][0]["fingerprint"] == DecomposerLabeler(load_decomposer(other_path)).fingerprint
    assert meta["done"] == 40


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--effect-samples", "0"),
                                           ("--num-directions", "0"), ("--grid-steps", "0"),
                                           ("--color-by", "no_such_label")])
def test_find_directions_refuses_bad_numbers_before_writing_and_a_bad_colour_label_before_fitting(tiny_run, option,
                                                                                                   value):
    pkl, dec_path, root = tiny_run
    out = root / f"bad{option}"
    result = cli(["find-directions", str(pkl), "--method", "3d-coupled", "--decomposer", str(dec_path), "--samples",
                   "40", "--outdir", str(out), "--no-umap", option, value])
    assert result.exit_code == 1 and "Traceback" not in result.output
    if option == "--color-by":  # known only once the bank's labels exist: refused before the fit
        assert "color_by 'no_such_label' is not a (varying) label" in result.output
        assert not (out / "directions.json").exists()
    else:
        assert f"{option[2:].replace('-', '_')} must be an integer >= 1, got 0" in result.output
        assert not out.exists()


def test_a_map_that_no_atom_of_moves_with_w_is_dropped_not_fatal(fitted):
    w, labels, *_ = planted()
    noise = np.random.default_rng(7).normal(size=labels["depth"].shape).astype(np.float32)
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, alpha=0.2, random_state=0).fit(
        w, dict(labels, depth=1.0 + 0.01 * noise), part_masks=planted_part_masks())
    assert not any(kind == "depth" for kind in est.kinds_) and any(kind == "albedo" for kind in est.kinds_)
    assert {"depth_atom0", "depth_atom1"} <= set(est.dropped_)


@pytest.mark.parametrize("frac", [0.05, 0.1])
def test_a_rare_yes_no_label_is_fitted_with_the_squared_loss(frac):
    """Huber's scale (a median of absolute residuals) collapses when most rows share one value; such a label gets
    the squared loss and its direction, the others keep Huber."""
    w, labels, m, g, _ = planted()
    pitch = labels["pitch"]
    flag = pitch > np.quantile(pitch, 1 - frac)  # a yes/no label, linear-separable along pitch's direction
    est = ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, random_state=0).fit(
        w, dict(labels, glasses=flag), part_masks=planted_part_masks())
    assert est.global_losses_ == {"yaw": "huber", "pitch": "huber", "light_azimuth": "huber", "glasses": "squared"}
    assert float(est.directions_[est.names_.index("glasses")] @ g[1]) > 0.8  # (Huber: zero, or cos 0.18)


def test_labels_that_are_not_numbers_and_odd_arguments_are_named(fitted):
    est = fitted[0]
    w, labels, *_ = planted(n=200)
    with pytest.raises(LatentError, match=r"label 'kind' holds <U1 values; labels must be numbers"):
        ThreeDCoupledDirections(n_atoms=2, atom_scope="map").fit(w, dict(labels, kind=np.array(["a"] * 200)))
    with pytest.raises(LatentError, match=r"w has w_dim 10 but the directions have 24"):
        est.predict(np.zeros((3, 10)))
    masks = dict(planted_part_masks(), nose=planted_part_masks()["nose"][:8, :8])
    with pytest.raises(LatentError, match=r"part masks must all have one shape \[R, R\]; got .*'nose': \(8, 8\)"):
        ThreeDCoupledDirections(n_atoms=2, atom_scope="map").fit(w, labels, part_masks=masks)
    for params, match in ((dict(map_labels=None), "map_labels must be a sequence of names, got None"),
                          (dict(skip_parts=None), "skip_parts must be a sequence of names, got None"),
                          (dict(part_core=None), "part_core must be in"),
                          (dict(part_core="x"), "part_core must be in")):
        with pytest.raises(ValueError, match=match):
            ThreeDCoupledDirections(**params).fit(w, labels)


def test_a_taught_light_is_held_against_the_roll_not_the_other_light_readings():
    """Readings of a decomposer whose netL learned from a latent light teacher: the ambient reading's direction
    leans toward the elevation's (ambient + 0.3 elevation) and the elevation reading takes in the roll (elevation
    + 0.3 roll). 'auto' with taught_light holds the elevation against the roll only (no albedo map here) and
    recovers it; the untaught rule holds it against the ambient's leaning direction and keeps the roll in."""
    w, (amb, az, el, pitch, roll), noise = _planted_readings(2, 5, 0.05, 5)
    labels = {"pitch": w @ pitch + noise[:, 0], "roll": w @ roll + noise[:, 1],
              "light_ambient": w @ amb + 0.3 * (w @ el) + noise[:, 2], "light_azimuth": w @ az + noise[:, 3],
              "light_elevation": w @ el + 0.3 * (w @ roll) + noise[:, 4]}

    def fit(**kw):
        return ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None, random_state=0,
                                       **kw).fit(w, labels)

    taught, untaught = fit(taught_light=True), fit()
    assert taught.conditioned_on_ == {"light_elevation": ["roll"], "light_ambient": ["pitch"]}
    assert untaught.conditioned_on_ == {"light_elevation": ["light_ambient", "light_azimuth"],
                                        "light_ambient": ["pitch"]}
    e = taught.names_.index("light_elevation")
    assert abs(float(taught.directions_[e] @ el)) > 0.999
    assert abs(float(untaught.directions_[e] @ el)) < 0.96
    kept = [i for i, name in enumerate(taught.names_) if name != "light_elevation"]
    np.testing.assert_array_equal(taught.directions_[kept], untaught.directions_[kept])
    assert clone(taught).get_params()["taught_light"] is True
    # with the roll's share measured and removed (`label_leaks`), 'auto' no longer holds the elevation against it
    # (the hold would also take the true directions' overlap); a dict keeps its hold
    measured = ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None, random_state=0,
                                       taught_light=True).fit(w, labels, label_leaks={"light_elevation": {"roll": 0.3}})
    assert measured.conditioned_on_ == {"light_ambient": ["pitch"]}
    assert abs(float(measured.directions_[e] @ el)) > 0.999
    given = ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None, random_state=0,
                                    conditions={"light_elevation": ["roll"]}).fit(
        w, labels, label_leaks={"light_elevation": {"roll": 0.3}})
    assert given.conditioned_on_ == {"light_elevation": ["roll"]}


def test_the_ambient_is_held_against_the_pitch_by_default():
    """A decomposer whose light mask lets its ambient reading take in the pitch (ambient + 0.4 pitch): 'auto' holds
    the ambient direction against the pitch's, and leaves the elevation's own conditions as they were."""
    w, (amb, az, el, pitch), noise = _planted_readings(1, 4, 0.05, 4)
    labels = {"pitch": w @ pitch + noise[:, 0], "light_ambient": w @ amb + 0.4 * (w @ pitch) + noise[:, 1],
              "light_azimuth": w @ az + noise[:, 2], "light_elevation": w @ el + noise[:, 3]}

    def fit(**kw):
        return ThreeDCoupledDirections(map_labels=(), global_loss="squared", soft_conditions=None, random_state=0,
                                       **kw).fit(w, labels)

    auto, plain = fit(), fit(conditions=None)
    k = auto.names_.index("light_ambient")
    assert abs(float(plain.directions_[k] @ amb)) < 0.95  # the reading's own direction leans to the pitch
    assert abs(float(auto.directions_[k] @ amb)) > 0.999
    assert auto.conditioned_on_ == {"light_elevation": ["light_ambient", "light_azimuth"],
                                    "light_ambient": ["pitch"]}
    kept = [i for i, name in enumerate(auto.names_) if name not in ("light_ambient", "light_elevation")]
    np.testing.assert_array_equal(auto.directions_[kept], plain.directions_[kept])
    # conditions do not chain: the elevation is held against the ambient as fitted, not as held
    e = auto.names_.index("light_elevation")
    assert abs(float(auto.directions_[e] @ plain.directions_[k])) < 1e-6


def test_a_measured_label_leak_is_removed_before_the_fit():
    """A decomposer whose elevation reading takes in 0.5 per unit of its pitch reading, while the true elevation
    direction itself leans toward the pitch's (as the world's do): a hold against the pitch would take the lean out
    with the leak; subtracting the measured slope (`label_leaks`, as `DecomposerLabeler.view_leak` measures it)
    recovers the elevation and leaves every other direction as fitted."""
    w, (el0, pitch, yaw), noise = _planted_readings(4, 3, 0.05, 3)
    el = (el0 + 0.5 * pitch) / np.linalg.norm(el0 + 0.5 * pitch)
    pitch_read = w @ pitch + noise[:, 0]
    labels = {"pitch": pitch_read, "yaw": w @ yaw + noise[:, 1],
              "light_elevation": w @ el + 0.5 * pitch_read + noise[:, 2]}

    def fit(leaks=None, **kw):
        kw = {"conditions": None, "soft_conditions": None, **kw}
        return ThreeDCoupledDirections(map_labels=(), global_loss="squared", random_state=0, **kw).fit(
            w, labels, label_leaks=leaks)

    fixed, plain = fit({"light_elevation": {"pitch": 0.5}}), fit()
    held = fit(conditions={"light_elevation": ["pitch"]})
    e = fixed.names_.index("light_elevation")
    assert abs(float(fixed.directions_[e] @ el)) > 0.999
    assert abs(float(plain.directions_[e] @ el)) < 0.97
    assert abs(float(held.directions_[e] @ el)) < 0.95
    kept = [i for i, name in enumerate(fixed.names_) if name != "light_elevation"]
    np.testing.assert_array_equal(fixed.directions_[kept], plain.directions_[kept])
    assert fixed.label_leaks_ == {"light_elevation": {"pitch": 0.5}} and plain.label_leaks_ == {}
    assert fixed.to_direction_set().info["label_leaks"] == {"light_elevation": {"pitch": 0.5}}
    assert "label_leaks" not in plain.to_direction_set().info
    assert np.array_equal(labels["light_elevation"], w @ el + 0.5 * pitch_read + noise[:, 2])  # caller's untouched
    for leaks, match in [({"light_elevation": {"nope": 1.0}}, "not scalar labels"),
                         ({"light_elevation": {"light_elevation": 1.0}}, "into itself"),
                         ({"light_elevation": {"pitch": float("nan")}}, "not finite"),
                         ({"light_elevation": 0.5}, "must be a dict"), ([("pitch", 1)], "must be a dict")]:
        with pytest.raises(ValueError, match=match):
            fit(leaks)


def test_the_ambient_is_softly_held_against_the_other_global_directions():
    """A decomposer whose ambient reading takes in the pitch and the elevation (ambient + 0.3 pitch + 0.3
    elevation; its diffuse nearly the ambient's negative): 'auto' replaces the ambient direction d by
    (I + s B'B)^-1 d, B the unit directions of the other global labels but the diffuse, as they come out of the
    hard holds. With orthonormal true directions that shrinks each leak by 1 + s (s = 3: 0.3 -> 0.075)."""
    w, (amb, pitch, el, az), noise = _planted_readings(2, 4, 0.02, 5)
    d = w.shape[1]
    labels = {"pitch": w @ pitch + noise[:, 0], "light_azimuth": w @ az + noise[:, 1],
              "light_elevation": w @ el + noise[:, 2],
              "light_ambient": w @ amb + 0.3 * (w @ pitch) + 0.3 * (w @ el) + noise[:, 3]}
    labels["light_diffuse"] = -labels["light_ambient"] + noise[:, 4]

    def fit(**kw):
        return ThreeDCoupledDirections(map_labels=(), global_loss="squared", conditions=None, random_state=0,
                                       **kw).fit(w, labels)

    soft, plain = fit(), fit(soft_conditions=None)
    k = soft.names_.index("light_ambient")
    assert soft.soft_conditioned_on_ == {"light_ambient": ["pitch", "light_azimuth", "light_elevation"]}
    assert plain.soft_conditioned_on_ == {}
    assert abs(float(plain.directions_[k] @ amb)) < 0.93  # 1 / sqrt(1 + 2 * 0.3^2) = 0.92
    assert abs(float(soft.directions_[k] @ amb)) == pytest.approx(1 / np.sqrt(1 + 2 * 0.075 ** 2), abs=0.003)
    # the formula, computed from the unheld fit; the other directions and the regressions are left as fitted
    others = [i for i, name in enumerate(plain.names_) if name in ("pitch", "light_azimuth", "light_elevation")]
    rows = plain.directions_[others].astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    want = np.linalg.solve(np.eye(d) + 3.0 * rows.T @ rows, plain.directions_[k].astype(np.float64))
    np.testing.assert_allclose(soft.directions_[k], want / np.linalg.norm(want), atol=1e-6)
    kept = [i for i in range(len(soft.names_)) if i != k]
    np.testing.assert_array_equal(soft.directions_[kept], plain.directions_[kept])
    np.testing.assert_array_equal(soft.coef_, plain.coef_)
    assert soft.to_direction_set().info["soft_conditioned_on"] == soft.soft_conditioned_on_
    # strength 0 changes nothing; a very large one is the hard hold (orthogonal to the others)
    np.testing.assert_array_equal(fit(soft_strength=0.0).directions_, plain.directions_)
    hard = fit(soft_strength=1e9).directions_[k]
    assert np.abs(rows @ hard).max() < 1e-6
    # a dict of one's own, and bad settings named
    own = fit(soft_conditions={"light_ambient": ["pitch"]})
    assert own.soft_conditioned_on_ == {"light_ambient": ["pitch"]}
    with pytest.raises(ValueError, match=r"soft_conditions name \['yaw'\], which are not fitted global labels"):
        fit(soft_conditions={"light_ambient": ["yaw"]})
    with pytest.raises(ValueError, match="soft_conditions hold"):
        fit(soft_conditions={"pitch": ["pitch"]})
    with pytest.raises(ValueError, match="soft_strength must be >= 0"):
        fit(soft_strength=-1.0)
    with pytest.raises(ValueError, match="soft_conditions must be 'auto', None or a dict"):
        fit(soft_conditions="always")


def test_depth_spread_reads_the_height_and_width_of_the_relief():
    """`depth_spread`: a relief k rows tall and m columns wide, flat within them, spreads over sqrt((k^2 - 1) / 12)
    rows and sqrt((m^2 - 1) / 12) columns, wherever it sits and whatever the depth of the background; shape
    [N, 1, R, R] reads as [N, R, R]."""
    depth = np.full((3, 12, 12), 1.05)
    depth[0, 2:5, 3:9] = 0.95  # 3 rows, 6 columns
    depth[1, 4:11, 1:3] = 1.0  # 7 rows, 2 columns, another background gap
    depth[2] -= 0.02  # no relief at all
    want = np.sqrt(np.maximum((np.array([[3, 6], [7, 2], [1, 1]]) ** 2 - 1) / 12, 0))
    np.testing.assert_allclose(depth_spread(depth, chunk_size=2), want, atol=1e-9)
    np.testing.assert_allclose(depth_spread(depth[:, None], chunk_size=5), want, atol=1e-9)


@pytest.mark.parametrize("light, reading, attribute, axis", [
    ("light_elevation", DEPTH_HEIGHT, "depth_height_direction_", 0),
    ("light_ambient", DEPTH_WIDTH, "depth_width_direction_", 1)])
def test_a_light_is_softly_held_against_the_shape_of_the_depth(light, reading, attribute, axis):
    """A decomposer whose elevation reading takes a taller face for light from below, or whose ambient reading
    takes in a wider face (the light + 0.4 the shape): its canonical depth draws the shape (a bump whose vertical,
    or horizontal, spread grows with w @ shape), so 'auto' reads that spread, regresses it on w and softly holds
    the light against its direction (strength 3: the leak shrinks 0.4 -> 0.1, |cos| 1 / sqrt(1.01) = 0.995);
    without a depth map there is no such condition."""
    w, (true, shape, az), noise = _planted_readings(3, 3, 0.02, 2, n=3000)
    r = 16
    grid = np.mgrid[0:r, 0:r].astype(np.float64)  # rows, columns
    spread = 2.5 * np.exp(0.15 * (w @ shape))[:, None, None]
    bump = np.exp(-0.5 * ((grid[axis] - 7.5) / spread) ** 2 - 0.5 * ((grid[1 - axis] - 7.5) / 3.0) ** 2)
    labels = {light: w @ true + 0.4 * (w @ shape) + noise[:, 0], "light_azimuth": w @ az + noise[:, 1],
              "depth": (1.05 - 0.1 * bump).astype(np.float32)}

    def fit(**kw):
        return ThreeDCoupledDirections(global_loss="squared", n_atoms=1, atom_scope="map", conditions=None,
                                       random_state=0, **kw).fit(w, labels)

    auto, plain = fit(), fit(soft_conditions=None)
    k = auto.names_.index(light)
    assert reading in auto.soft_conditioned_on_[light]
    assert abs(float(getattr(auto, attribute)[0] @ shape)) > 0.99  # the depth's shape, not the light
    assert abs(float(plain.directions_[k] @ true)) < 0.93  # 1 / sqrt(1 + 0.4^2) = 0.928
    assert abs(float(auto.directions_[k] @ true)) == pytest.approx(1 / np.sqrt(1 + 0.1 ** 2), abs=0.005)
    assert getattr(plain, attribute) is None
    scalars = {key: v for key, v in labels.items() if key != "depth"}
    no_depth = ThreeDCoupledDirections(map_labels=(), global_loss="squared", conditions=None).fit(w, scalars)
    assert reading not in no_depth.soft_conditioned_on_.get(light, []) and getattr(no_depth, attribute) is None
    with pytest.raises(ValueError, match="needs a depth map"):
        ThreeDCoupledDirections(map_labels=(), soft_conditions={light: [reading]}).fit(w, scalars)
    with pytest.raises(ValueError, match="is a condition, not a direction"):
        fit(soft_conditions={reading: ["light_azimuth"]})


def test_the_elevation_is_softly_held_against_the_eyes_albedo_directions():
    """'auto' part conditions: the light elevation held softly (strength part_strength) against the localized
    directions named albedo_eyes*, by the soft hold's formula computed from the unheld fit; every other direction
    and every regression is left as fitted. Without an elevation, or with part_conditions=None, nothing is held; a
    dict naming an unfitted direction or a prefix that matches nothing is refused by name."""
    w, labels, *_ = planted()
    labels = dict(labels, light_elevation=labels["pitch"] * 0.5 + w[:, 0])

    def fit(**kw):
        return ThreeDCoupledDirections(n_atoms=2, random_state=0, **kw).fit(w, labels,
                                                                             part_masks=planted_part_masks())

    held, plain = fit(), fit(part_conditions=None)
    eyes = [nm for nm in held.names_ if nm.startswith("albedo_eyes")]
    assert eyes and held.part_conditioned_on_ == {"light_elevation": eyes}
    assert plain.part_conditioned_on_ == {}
    assert held.to_direction_set().info["part_conditioned_on"] == {"light_elevation": eyes}
    assert held.to_direction_set().info["part_strength"] == 0.2
    k = held.names_.index("light_elevation")
    rows = plain.directions_[[plain.names_.index(nm) for nm in eyes]].astype(np.float64)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    want = np.linalg.solve(np.eye(w.shape[1]) + 0.2 * rows.T @ rows, plain.directions_[k].astype(np.float64))
    np.testing.assert_allclose(held.directions_[k], want / np.linalg.norm(want), atol=1e-6)
    assert abs(float(held.directions_[k] @ plain.directions_[k])) < 1 - 1e-6  # the hold did move it
    kept = [i for i in range(len(held.names_)) if i != k]
    np.testing.assert_array_equal(held.directions_[kept], plain.directions_[kept])
    np.testing.assert_array_equal(held.coef_, plain.coef_)
    # a dict names fitted directions and prefixes that match; 'auto' without an elevation holds nothing
    same = fit(part_conditions={"light_elevation": ["albedo_eyes"]})
    np.testing.assert_array_equal(same.directions_, held.directions_)
    with pytest.raises(ValueError, match="light_ambient"):
        fit(part_conditions={"light_ambient": ["albedo_eyes"]})
    with pytest.raises(ValueError, match="albedo_brows"):
        fit(part_conditions={"light_elevation": ["albedo_brows"]})
    with pytest.raises(ValueError, match="part_strength"):
        fit(part_strength=-1)
    no_elevation = {k: v for k, v in labels.items() if k != "light_elevation"}
    est = ThreeDCoupledDirections(n_atoms=2, random_state=0).fit(w, no_elevation, part_masks=planted_part_masks())
    assert est.part_conditioned_on_ == {}


def test_the_worlds_part_masks_follow_the_decomposers_crop(tmp_path):
    """A decomposer that reads a box of each image names its localized directions by the parts inside that box."""
    from stylegan_disentangle.analysis.find_directions import _synthetic_part_masks
    from stylegan_disentangle.latents import LatentBank
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G, _ = load_synthetic()
    bank = LatentBank.create(G, tmp_path / "bank", 4, seed=0, progress=False)
    full, names = _synthetic_part_masks(bank, 32, n=4)
    boxed, same = _synthetic_part_masks(bank, 16, n=4, crop=(0.0, 0.0, 0.5, 0.5))
    assert same == names and boxed.shape == (len(names), 16, 16)
    np.testing.assert_allclose(boxed, full[:, :16, :16], atol=1e-6)  # the top-left box of the 32 px masks
