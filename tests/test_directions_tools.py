"""orthogonalize (conditional editing) and name_directions (automatic naming)."""

from __future__ import annotations

import numpy as np
import pytest

from stylegan_disentangle.directions import DirectionSet, PCADirections, name_directions, orthogonalize

D = 16


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ---------------------------------------------------------------- orthogonalize
def test_orthogonalize_gives_exact_orthogonality_to_k_conditions():
    rng = np.random.default_rng(0)
    v = _unit(rng.standard_normal((4, D)))
    cond = _unit(rng.standard_normal((3, D)))
    out = orthogonalize(v, cond)
    np.testing.assert_allclose(out @ cond.T, 0, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1, atol=1e-12)
    # the result is the normalised projection onto the orthogonal complement
    q, _ = np.linalg.qr(cond.T)
    expected = _unit(v - (v @ q) @ q.T)
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_two_attribute_case_is_interfacegans_formula():
    rng = np.random.default_rng(1)
    n1, n2 = _unit(rng.standard_normal(D)), _unit(rng.standard_normal(D))
    out = orthogonalize(n1, n2)
    np.testing.assert_allclose(out, _unit(n1 - (n1 @ n2) * n2), atol=1e-12)
    assert out.shape == (D,)


def test_already_orthogonal_direction_is_unchanged():
    e = np.eye(D)
    out = orthogonalize(e[0].astype(np.float32), e[1:4])
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, e[0].astype(np.float32))


def test_near_collinear_and_duplicated_conditions_are_handled():
    rng = np.random.default_rng(2)
    c = _unit(rng.standard_normal(D))
    cond = np.stack([c, c, (c + 1e-9 * rng.standard_normal(D)).astype(np.float32)])
    v = _unit(rng.standard_normal(D))
    out = orthogonalize(v, cond)
    np.testing.assert_allclose(out, _unit(v - (v @ c) * c), atol=1e-6)


def test_direction_inside_the_span_raises():
    e = np.eye(D)
    with pytest.raises(ValueError, match="span"):
        orthogonalize(_unit(e[0] + e[1]), e[:2])


def test_orthogonalize_direction_set_by_names_keeps_conditions():
    rng = np.random.default_rng(3)
    vecs = _unit(rng.standard_normal((3, D))).astype(np.float32)
    ds = DirectionSet(["age", "glasses", "smile"], vecs, method="linear")
    out = orthogonalize(ds, ["glasses", "smile"])
    assert isinstance(out, DirectionSet) and out.names == ds.names
    np.testing.assert_array_equal(out["glasses"], ds["glasses"])
    np.testing.assert_array_equal(out["smile"], ds["smile"])
    assert abs(float(out["age"] @ ds["glasses"])) < 1e-6 and abs(float(out["age"] @ ds["smile"])) < 1e-6
    assert out.info["conditioned_on"] == {"age": ["glasses", "smile"]}
    tagged = DirectionSet(["pc0:+age", "pc1:-glasses", "smile"], vecs, method="pca")
    by_id = orthogonalize(tagged, ["pc1", "smile"])  # the short id, as edit takes it
    np.testing.assert_array_equal(by_id["pc0:+age"], out["age"])


def test_orthogonalize_per_layer_set_against_flat_vectors():
    rng = np.random.default_rng(4)
    vecs = rng.standard_normal((2, 3, D))
    vecs /= np.linalg.norm(vecs.reshape(2, -1), axis=1)[:, None, None]
    ds = DirectionSet(["a", "b"], vecs.astype(np.float32))
    cond = _unit(rng.standard_normal(D))
    out = orthogonalize(ds, cond)
    np.testing.assert_allclose(np.einsum("knd,d->kn", out.vectors.astype(np.float64), cond), 0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out.vectors.reshape(2, -1), axis=1), 1, atol=1e-6)


# ---------------------------------------------------------------- naming
def _labelled_samples(n=4000, seed=0):
    """W [n, D] with PCA axes along coordinates 0, 1, 2 (decreasing variance); labels planted on some of them."""
    rng = np.random.default_rng(seed)
    scales = np.ones(D)
    scales[:3] = [4.0, 3.0, 2.0]
    w = (rng.standard_normal((n, D)) * scales).astype(np.float32)
    labels = {
        "yaw": 0.5 * w[:, 1] + 0.05 * rng.standard_normal(n),  # on pc1, positive
        "smile": -0.3 * w[:, 2] + 0.05 * rng.standard_normal(n),  # on pc2, negative
        "noise": rng.standard_normal(n),
    }
    return w, labels


def test_name_directions_names_planted_directions_by_their_label():
    w, labels = _labelled_samples()
    est = PCADirections(n_components=3).fit(w)
    est.directions_ *= np.sign(est.directions_[np.arange(3), np.arange(3)])[:, None]  # make pc_i point along +e_i
    result = name_directions(est, w, labels, top_k=2)
    assert result.label_names == ["yaw", "smile", "noise"]
    assert result.names == ["pc0", "pc1:+yaw", "pc2:-smile"]
    assert result.table[1][0][0] == "yaw" and result.table[1][0][1] > 0.95
    assert result.table[2][0][0] == "smile" and result.table[2][0][1] < -0.95
    assert len(result.table[0]) == 2
    assert np.all(np.abs(result.effects[:, 2]) < 0.05)  # noise label: no effect anywhere
    # per-unit change: label yaw = 0.5 * w1, so a unit step along +e1 raises yaw by 0.5
    np.testing.assert_allclose(result.per_unit[1, 0], 0.5, atol=0.01)
    np.testing.assert_allclose(result.correlations[1, 0], 1.0, atol=0.01)


def test_naming_applied_to_a_direction_set_renames_and_records_effects(tmp_path):
    w, labels = _labelled_samples()
    est = PCADirections(n_components=3).fit(w)
    ds = est.to_direction_set()
    result = name_directions(ds, w, labels)
    named = result.apply(ds)
    assert named.names == result.names and named.names[1].endswith("yaw")
    assert named.extras["label_effects"].shape == (3, 3)
    assert named.info["label_names"] == ["yaw", "smile", "noise"]
    assert named.info["label_effects"][named.names[1]][0][0] == "yaw"
    named.save(tmp_path / "named")
    assert DirectionSet.load(tmp_path / "named") == named
    kept = result.apply(ds, rename=False)
    assert kept.names == ds.names


def test_naming_plain_array_uses_generic_names():
    w, labels = _labelled_samples()
    e = np.eye(D)[[2, 5]]
    result = name_directions(e, w, labels, min_effect=0.5)
    assert result.names == ["d0:-smile", "d1"]
