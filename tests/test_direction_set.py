"""DirectionSet: validation, access, exact save/load round trip, InterFaceGAN export, corrupt-file errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.errors import StyleGANDisentangleError


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.standard_normal(shape)
    flat = v.reshape(shape[0], -1)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(shape).astype(np.float32)


def _flat_set() -> DirectionSet:
    rng = np.random.default_rng(0)
    return DirectionSet(
        names=["pc0", "pc1", "yaw"],
        vectors=_unit(rng, 3, 16),
        layer_ranges=[None, (0, 4), (2, 6)],
        step_ranges=[(-3.0, 3.0), (-1.5, 2.25), (-0.1, 0.1)],
        method="pca",
        params={"n_components": 3, "nested": {"a": (1, 2)}, "alpha": np.float64(0.5)},
        checkpoint_sha256="ab" * 32,
        n_samples=1000,
        seed=7,
        extras={
            "std": np.array([1.0, 0.5, 0.25], dtype=np.float32),
            "support": np.array([[True, False], [False, True], [True, True]]),
            "global_w_mean": rng.standard_normal(16),
        },
        info={"labels": {"yaw": "head yaw"}, "note": "test", "value": 1.0 / 3.0, "missing": float("nan")},
    )


def _per_layer_set() -> DirectionSet:
    rng = np.random.default_rng(1)
    return DirectionSet(names=["a", "b"], vectors=_unit(rng, 2, 6, 8), layer_ranges=[(0, 3), None], method="x")


def test_defaults_and_access():
    ds = _flat_set()
    assert len(ds) == 3 and ds.w_dim == 16 and not ds.per_layer and ds.num_ws is None
    assert ds.index("yaw") == 2
    np.testing.assert_array_equal(ds["yaw"], ds.vectors[2])
    np.testing.assert_array_equal(ds[1], ds.vectors[1])
    assert ds.vectors.dtype == np.float32
    assert ds.params["nested"] == {"a": [1, 2]} and isinstance(ds.params["alpha"], float)
    assert ds.info["missing"] is None  # strict JSON: NaN becomes null
    np.testing.assert_array_equal(ds.stds, [1.0, 0.5, 0.25])
    plain = DirectionSet(["d"], ds.vectors[:1])
    assert plain.layer_ranges == [None] and plain.step_ranges == [(-3.0, 3.0)]
    with pytest.raises(KeyError, match="nope"):
        ds["nope"]


def test_resolve_name_takes_a_finders_id_and_names_close_ones():
    """The finders name directions 'pc0:-color_b': 'pc0' picks it when it is the only one with that id; an unknown
    name is refused with the close ones suggested, an ambiguous id with both."""
    rng = np.random.default_rng(2)
    ds = DirectionSet(names=["pc0:-color_b", "pc1:+com_y", "yaw", "a:+x", "a:-y"], vectors=_unit(rng, 5, 8))
    assert ds.resolve_name("yaw") == "yaw" and ds.resolve_name("pc1:+com_y") == "pc1:+com_y"
    assert ds.resolve_name("pc0") == "pc0:-color_b"
    with pytest.raises(StyleGANDisentangleError, match=r"'pcc1' in the set; did you mean 'pc1:\+com_y'\?"):
        ds.resolve_name("pcc1")
    with pytest.raises(StyleGANDisentangleError, match=r"'yawn' in the set; did you mean 'yaw'\?"):
        ds.resolve_name("yawn")
    with pytest.raises(StyleGANDisentangleError, match=r"did you mean 'a:\+x', 'a:-y'\?"):
        ds.resolve_name("a")
    with pytest.raises(StyleGANDisentangleError, match=r"no direction named 'zzz' in the set; known: "):
        ds.resolve_name("zzz")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(names=["a", "a"]), "unique"),
        (dict(names=["a"]), "2 vectors"),
        (dict(vectors=np.ones((2, 4), np.float32)), "unit norm"),
        (dict(layer_ranges=[(0, 2)]), "layer ranges"),
        (dict(layer_ranges=[(3, 2), None]), "start < stop"),
        (dict(step_ranges=[(1.0, -1.0), (0.0, 1.0)]), "low <= high"),
        (dict(extras={"std": np.ones(3)}), "leading axis"),
        (dict(params={"f": object()}), "JSON"),
        (dict(vectors=np.ones((2, 2, 2, 2))), "shape"),
    ],
)
def test_invalid_construction_raises_value_error(kwargs, match):
    base = dict(names=["a", "b"], vectors=np.eye(2, 4, dtype=np.float32))
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        DirectionSet(**base)


def test_per_layer_range_must_fit_num_ws():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="only 6 ws layers"):
        DirectionSet(["a"], _unit(rng, 1, 6, 8), layer_ranges=[(0, 7)])


@pytest.mark.parametrize("make", [_flat_set, _per_layer_set])
@pytest.mark.parametrize("suffix", ["", ".npz", ".json"])
def test_save_load_round_trip_is_exact(tmp_path, make, suffix):
    ds = make()
    npz, js = ds.save(tmp_path / f"dirs{suffix}")
    assert npz.name == "dirs.npz" and js.name == "dirs.json"
    back = DirectionSet.load(tmp_path / "dirs")
    assert back == ds
    for field in ("names", "layer_ranges", "step_ranges", "method", "params", "checkpoint_sha256", "n_samples", "seed"):
        assert getattr(back, field) == getattr(ds, field), field
    assert back.info == ds.info
    np.testing.assert_array_equal(back.vectors, ds.vectors)
    assert back.vectors.dtype == np.float32
    for key, value in ds.extras.items():
        assert back.extras[key].dtype == value.dtype
        np.testing.assert_array_equal(back.extras[key], value)
    assert not list(tmp_path.glob(".*")), "temporary files left behind"
    assert json.loads(js.read_text())["step_unit"] == "w"


def test_equality_detects_differences():
    ds = _flat_set()
    other = DirectionSet.__new__(DirectionSet)
    other.__dict__.update(ds.__dict__)
    other.extras = dict(ds.extras, std=np.array([1.0, 0.5, 0.3], dtype=np.float32))
    assert ds != other
    assert ds != ds.rename({"yaw": "yaw2"})


def test_select_and_rename_carry_per_direction_data():
    ds = _flat_set()
    sub = ds.select(["yaw", "pc0"])
    assert sub.names == ["yaw", "pc0"]
    np.testing.assert_array_equal(sub.vectors, ds.vectors[[2, 0]])
    assert sub.layer_ranges == [(2, 6), None]
    np.testing.assert_array_equal(sub.extras["std"], [0.25, 1.0])
    np.testing.assert_array_equal(sub.extras["global_w_mean"], ds.extras["global_w_mean"])
    assert sub.info["labels"] == {"yaw": "head yaw"}
    ren = ds.rename({"yaw": "pc2:+yaw"})
    assert ren.names == ["pc0", "pc1", "pc2:+yaw"] and ren.info["labels"] == {"pc2:+yaw": "head yaw"}
    with pytest.raises(KeyError):
        ds.rename({"missing": "x"})
    with pytest.raises(ValueError, match="unique"):
        ds.rename({"pc0": "pc1"})


def test_export_interfacegan_flat(tmp_path):
    ds = _flat_set()
    paths = ds.export_interfacegan(tmp_path / "ifg")
    assert [p.name for p in paths] == ["boundary_pc0.npy", "boundary_pc1.npy", "boundary_yaw.npy"]
    for i, p in enumerate(paths):
        b = np.load(p)
        assert b.shape == (1, 16) and b.dtype == np.float32
        np.testing.assert_array_equal(b[0], ds.vectors[i])


def test_export_interfacegan_merges_by_default_and_replaces_on_request(tmp_path):
    first = _flat_set()
    first.export_interfacegan(tmp_path)
    other = DirectionSet(["smile"], first.vectors[:1])
    other.export_interfacegan(tmp_path)  # another set's boundaries join the folder
    listed = json.loads((tmp_path / "layers.json").read_text())["boundaries"]
    assert sorted(listed) == ["boundary_pc0.npy", "boundary_pc1.npy", "boundary_smile.npy", "boundary_yaw.npy"]
    (tmp_path / "mine.npy").write_bytes(b"a file of the user's, never listed")
    other.export_interfacegan(tmp_path, replace=True)  # a rerun's set replaces what the folder listed
    assert list(json.loads((tmp_path / "layers.json").read_text())["boundaries"]) == ["boundary_smile.npy"]
    assert sorted(p.name for p in tmp_path.glob("*.npy")) == ["boundary_smile.npy", "mine.npy"]


def test_export_interfacegan_per_layer_uses_mean_over_layer_range(tmp_path):
    ds = _per_layer_set()
    paths = ds.export_interfacegan(tmp_path)
    a = np.load(paths[0])[0]
    expected = ds.vectors[0, 0:3].astype(np.float64).mean(0)
    np.testing.assert_allclose(a, expected / np.linalg.norm(expected), rtol=1e-6, atol=1e-7)
    b = np.load(paths[1])[0]
    expected = ds.vectors[1].astype(np.float64).mean(0)
    np.testing.assert_allclose(b, expected / np.linalg.norm(expected), rtol=1e-6, atol=1e-7)
    assert np.load(paths[1]).shape == (1, 8)


def test_load_missing_file_names_it(tmp_path):
    _flat_set().save(tmp_path / "d")
    (tmp_path / "d.npz").unlink()
    with pytest.raises(StyleGANDisentangleError, match=r"d\.npz"):
        DirectionSet.load(tmp_path / "d")


def test_load_reads_the_set_in_a_find_directions_folder(tmp_path):
    """find-directions writes `<outdir>/directions.npz/.json`; its folder is what users pass on to edit / export."""
    ds = _per_layer_set()
    ds.save(tmp_path / "run" / "directions")
    assert DirectionSet.load(tmp_path / "run") == ds
    # a set saved beside a folder of the same stem is still read as that stem
    other = _flat_set()
    other.save(tmp_path / "run")
    assert DirectionSet.load(tmp_path / "run") == other


def test_load_folder_without_a_set_says_what_it_holds(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StyleGANDisentangleError, match=r"empty is a folder without a DirectionSet.*directions\.npz"):
        DirectionSet.load(tmp_path / "empty")
    # half a set in the folder: the missing half is named
    _flat_set().save(tmp_path / "half" / "directions")
    (tmp_path / "half" / "directions.json").unlink()
    with pytest.raises(StyleGANDisentangleError, match=r"half/directions\.json does not exist"):
        DirectionSet.load(tmp_path / "half")


def test_load_corrupt_npz_names_file(tmp_path):
    _flat_set().save(tmp_path / "d")
    (tmp_path / "d.npz").write_bytes(b"not a zip file")
    with pytest.raises(StyleGANDisentangleError, match=r"d\.npz"):
        DirectionSet.load(tmp_path / "d")


def test_load_mismatched_pair_raises(tmp_path):
    _flat_set().save(tmp_path / "d")
    _per_layer_set().save(tmp_path / "e")
    (tmp_path / "e.npz").replace(tmp_path / "d.npz")
    with pytest.raises(StyleGANDisentangleError, match=r"d\.npz.*d\.json|do not match"):
        DirectionSet.load(tmp_path / "d")


def test_load_corrupt_json_names_file(tmp_path):
    _flat_set().save(tmp_path / "d")
    (tmp_path / "d.json").write_text("{ truncated")
    with pytest.raises(StyleGANDisentangleError, match=r"d\.json"):
        DirectionSet.load(tmp_path / "d")


def test_load_inconsistent_metadata_raises(tmp_path):
    _flat_set().save(tmp_path / "d")
    meta = json.loads((tmp_path / "d.json").read_text())
    meta["names"] = ["only_one"]
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(StyleGANDisentangleError, match=r"d\.json"):
        DirectionSet.load(tmp_path / "d")


@pytest.mark.parametrize("version", ["1", None, 1.5])
def test_load_a_hand_edited_format_version_names_the_file(tmp_path, version):
    _flat_set().save(tmp_path / "d")
    meta = json.loads((tmp_path / "d.json").read_text())
    meta["format_version"] = version
    (tmp_path / "d.json").write_text(json.dumps(meta))
    with pytest.raises(StyleGANDisentangleError, match=r"d\.json: format_version must be an integer"):
        DirectionSet.load(tmp_path / "d")


@pytest.mark.parametrize("bad", [np.nan, -1.0])
def test_a_std_that_is_no_spread_is_refused(bad):
    """extras['std'] converts sigma steps to W units: NaN would make every edit NaN, a negative one flip it."""
    std = np.array([1.0, bad, 2.0])
    with pytest.raises(ValueError, match=r"extras\['std'\]"):
        DirectionSet(["a", "b", "c"], np.eye(3, 4, dtype=np.float32), extras={"std": std})
