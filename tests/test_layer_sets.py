"""Directions on explicit ws index sets (issue 9): SeFa on ws {0, 2} must edit ws 0 and 2 and leave ws 1 alone.

Covers the whole path: ClosedFormDirections -> DirectionSet (exact save / load, old files) -> edit / extrapolate ->
the CLI's `--layers` -> the InterFaceGAN export.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.analysis import direction_offset, edit, extrapolate, parse_layers
from stylegan_disentangle.checkpoints import load_network_pkl, save_network_pkl
from stylegan_disentangle.cli import main
from stylegan_disentangle.directions import ClosedFormDirections, DirectionSet
from stylegan_disentangle.errors import StyleGANDisentangleError, UsageError
from stylegan_disentangle.latents import sample_latents
from stylegan_disentangle.networks import Generator

W_DIM = 16
NUM_WS = 6  # 16x16 synthesis: b4 (ws 0, 1), b8 (ws 1-3), b16 (ws 3-5)


def _make_G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


@pytest.fixture(scope="module")
def G() -> Generator:
    return _make_G()


@pytest.fixture(scope="module")
def sefa02(G) -> DirectionSet:
    return ClosedFormDirections(n_components=3, layers=[0, 2]).fit(G).to_direction_set()


def _unit_rows(rng: np.random.Generator, *shape: int) -> np.ndarray:
    v = rng.standard_normal(shape)
    flat = v.reshape(shape[0], -1)
    return (flat / np.linalg.norm(flat, axis=1, keepdims=True)).reshape(shape).astype(np.float32)


def _mixed_set() -> DirectionSet:
    """Flat set with all four kinds of layers: all, a range, an explicit set, a single index."""
    rng = np.random.default_rng(3)
    return DirectionSet(["all", "range", "gap", "one"], _unit_rows(rng, 4, W_DIM),
                        layers=[None, range(1, 4), [5, 0, 2, 2], {3}], method="test",
                        extras={"std": np.array([1.0, 2.0, 0.5, 0.25], np.float32)})


# ---------------------------------------------------------------------- the bug
def test_closed_form_on_layers_0_2_stores_exactly_those_ws(G, sefa02):
    assert G.num_ws == NUM_WS
    assert sefa02.layers == [(0, 2)] * 3
    assert sefa02.layers_of("sefa0") == (0, 2) and sefa02.ws_indices("sefa1", NUM_WS) == [0, 2]
    with pytest.raises(ValueError, match=r"ws \[0, 2\], which is not a range"):
        sefa02.layer_range("sefa0")  # no (start, stop) can say {0, 2}; the old code stored (0, 3)


def test_closed_form_edit_on_layers_0_2_moves_ws_0_and_2_and_leaves_the_rest_bit_identical(G, sefa02):
    ws = sample_latents(G, [0, 1, 2]).ws
    steps = torch.tensor([-2.0, 1.5])
    out = edit(G, ws, sefa02, "sefa0", steps.tolist())
    for i in (1, 3, 4, 5):
        assert torch.equal(out[:, :, i], ws[None, :, i].expand(2, -1, -1)), f"ws {i} moved"
    v = torch.as_tensor(sefa02["sefa0"])
    for i in (0, 2):
        # float32: ws + s * v rounds once per element; |s * v| <= 2, |ws| small -> a few ulps of 4 at most
        torch.testing.assert_close(out[:, :, i], ws[None, :, i] + steps[:, None, None] * v, rtol=0, atol=2e-6)
        assert not torch.equal(out[1, :, i], ws[:, i])


def test_closed_form_all_layers_is_every_ws_and_a_range_stays_a_range(G):
    assert ClosedFormDirections(n_components=2).fit(G).to_direction_set().layers == [None, None]
    ds = ClosedFormDirections(n_components=2, layers=range(1, 4)).fit(G).to_direction_set()
    assert ds.layers == [(1, 2, 3)] * 2 and ds.layer_ranges == [(1, 4)] * 2


# ---------------------------------------------------------------------- DirectionSet
def test_layers_are_canonicalised_and_checked():
    ds = _mixed_set()
    assert ds.layers == [None, (1, 2, 3), (0, 2, 5), (3,)]
    assert ds.layer_range("range") == (1, 4) and ds.layer_range("one") == (3, 4) and ds.layer_range("all") is None
    with pytest.raises(ValueError, match="not a range"):
        _ = ds.layer_ranges
    with pytest.raises(ValueError, match=r"'gap' acts on ws \{0, 2, 5\}.*only 4 ws layers"):
        ds.ws_indices("gap", 4)
    vec = _unit_rows(np.random.default_rng(0), 1, W_DIM)
    for kwargs, match in [
        (dict(layers=[[]]), "empty"),
        (dict(layers=[[-1, 2]]), "non-negative"),
        (dict(layers=[[0.5]]), "integers"),
        (dict(layers=["0,2"]), "ws indices"),
        (dict(layers=[[0]], layer_ranges=[None]), "not both"),
        (dict(layer_ranges=[(0, 2, 4)]), r"\(start, stop\)"),
        (dict(layer_ranges=[np.array([0, 2])]), "range / set"),
    ]:
        with pytest.raises(ValueError, match=match):
            DirectionSet(["a"], vec, **kwargs)
    per_layer = _unit_rows(np.random.default_rng(1), 1, 4, W_DIM)
    with pytest.raises(ValueError, match=r"ws \{0, 5\} but the vectors have only 4 ws layers"):
        DirectionSet(["a"], per_layer, layers=[[0, 5]])
    # layer_ranges also takes explicit sets (how finders pass them) and still reads (start, stop) pairs
    assert DirectionSet(["a"], vec, layer_ranges=[frozenset({2, 0})]).layers == [(0, 2)]
    assert DirectionSet(["a"], vec, layer_ranges=[(0, 2)]).layers == [(0, 1)]


def test_explicit_sets_round_trip_exactly_as_format_2(tmp_path):
    ds = _mixed_set()
    _, js = ds.save(tmp_path / "d")
    meta = json.loads(js.read_text())
    assert meta["format_version"] == 2 and "layer_ranges" not in meta
    assert meta["layers"] == [None, [1, 2, 3], [0, 2, 5], [3]]
    back = DirectionSet.load(tmp_path / "d")
    assert back == ds and back.layers == ds.layers
    sub = back.select(["one", "gap"]).rename({"gap": "g"})
    assert sub.layers == [(3,), (0, 2, 5)]
    sub.save(tmp_path / "s")
    assert DirectionSet.load(tmp_path / "s") == sub


def test_range_only_sets_are_still_written_as_format_1(tmp_path):
    ds = _mixed_set().select(["all", "range", "one"])
    _, js = ds.save(tmp_path / "d")
    meta = json.loads(js.read_text())
    assert meta["format_version"] == 1 and "layers" not in meta
    assert meta["layer_ranges"] == [None, [1, 4], [3, 4]]
    assert DirectionSet.load(tmp_path / "d") == ds


def test_a_file_in_the_old_format_still_loads_with_the_same_layers(tmp_path):
    # written by hand exactly as the version-1 writer did (np.savez of vectors + extra/*, then the json with the
    # npz's sha256 and [start, stop] layer ranges)
    rng = np.random.default_rng(5)
    vectors = _unit_rows(rng, 2, NUM_WS, 8)
    std = np.array([0.5, 2.0], np.float32)
    np.savez(tmp_path / "old.npz", vectors=vectors, **{"extra/std": std})
    sha = hashlib.sha256((tmp_path / "old.npz").read_bytes()).hexdigest()
    meta = {
        "format": "stylegan_disentangle.DirectionSet", "format_version": 1, "package_version": "0.1.0",
        "names": ["a", "b"], "vectors_shape": [2, NUM_WS, 8], "layer_ranges": [[0, 3], None],
        "step_ranges": [[-3.0, 3.0], [-1.0, 2.0]], "step_unit": "w", "method": "pca", "params": {"k": 2},
        "checkpoint_sha256": None, "n_samples": 10, "seed": 0, "extras": ["std"], "info": {},
        "npz_file": "old.npz", "npz_sha256": sha,
    }
    (tmp_path / "old.json").write_text(json.dumps(meta, indent=2))
    ds = DirectionSet.load(tmp_path / "old")
    assert ds.layers == [(0, 1, 2), None] and ds.layer_ranges == [(0, 3), None]
    assert ds == DirectionSet(["a", "b"], vectors, layer_ranges=[(0, 3), None], step_ranges=[(-3, 3), (-1, 2)],
                              method="pca", params={"k": 2}, n_samples=10, seed=0, extras={"std": std})
    # and it edits exactly ws 0..2 as before
    offset = direction_offset(ds, "a", NUM_WS)
    assert torch.equal(offset[:3], torch.as_tensor(vectors[0, :3])) and torch.count_nonzero(offset[3:]) == 0


def test_flat_vectors_of_a_per_layer_set_average_over_the_explicit_set():
    per_layer = _unit_rows(np.random.default_rng(2), 1, NUM_WS, W_DIM)
    ds = DirectionSet(["p"], per_layer, layers=[[1, 4]])
    mean = per_layer[0, [1, 4]].astype(np.float64).mean(0)
    np.testing.assert_allclose(ds.flat_vectors()[0], mean / np.linalg.norm(mean), rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------- edit / extrapolate / parse
def test_parse_layers_reads_ranges_and_explicit_lists():
    assert parse_layers("0,2") == [0, 2] and parse_layers("0-2,5") == [0, 1, 2, 5] and parse_layers("1:3") == [1, 2]
    assert parse_layers(range(2, 4)) == [2, 3] and parse_layers([4, 0, 4]) == [0, 4] and parse_layers("all") is None
    for bad in ["3:1", "0,x", "-1", [], [-2], (0, 2)]:
        with pytest.raises(UsageError):
            parse_layers(bad)


def test_edit_honours_each_directions_set_and_an_explicit_override(G):
    ds = _mixed_set()
    ws = sample_latents(G, [7]).ws
    for name, moved in [("all", set(range(NUM_WS))), ("range", {1, 2, 3}), ("gap", {0, 2, 5}), ("one", {3})]:
        delta = edit(G, ws, ds, name, [1.0])[0, 0] - ws[0]
        assert {i for i in range(NUM_WS) if torch.count_nonzero(delta[i])} == moved, name
    out = edit(G, ws, ds, "all", [2.0], layers="1,4")
    changed = {i for i in range(NUM_WS) if not torch.equal(out[0, 0, i], ws[0, i])}
    assert changed == {1, 4}
    with pytest.raises(StyleGANDisentangleError, match="exceed"):
        edit(G, ws, ds, "all", [1.0], layers=[0, NUM_WS])


def test_edit_refuses_a_set_beyond_the_generators_layers(G):
    ds = DirectionSet(["deep"], _unit_rows(np.random.default_rng(0), 1, W_DIM), layers=[[0, 17]])
    with pytest.raises(StyleGANDisentangleError, match=r"\{0, 17\}.*only 6 ws layers"):
        edit(G, sample_latents(G, [0]).ws, ds, "deep", [1.0])


def test_extrapolate_walks_only_the_directions_ws(G, sefa02):
    ws = sample_latents(G, [3, 4]).ws
    res = extrapolate(G, ws, sefa02, "sefa1", step_size=0.5, max_steps=3)
    for i in (1, 3, 4, 5):
        assert torch.equal(res.ws[:, :, i], ws[None, :, i].expand(4, -1, -1))
    assert torch.count_nonzero(res.ws[-1, :, [0, 2]] - ws[:, [0, 2]]) > 0
    over = extrapolate(G, ws, sefa02, "sefa1", step_size=0.5, max_steps=2, layers="3")
    changed = {i for i in range(NUM_WS) if not torch.equal(over.ws[-1, :, i], ws[:, i])}
    assert changed == {3}


# ---------------------------------------------------------------------- InterFaceGAN export
def test_interfacegan_export_writes_w_boundaries_and_their_ws_indices(tmp_path, sefa02):
    ds = _mixed_set()
    paths = ds.export_interfacegan(tmp_path)
    manifest = json.loads((tmp_path / "layers.json").read_text())
    assert manifest["w_dim"] == W_DIM
    assert manifest["boundaries"] == {
        "boundary_all.npy": {"direction": "all", "ws_layers": None},
        "boundary_gap.npy": {"direction": "gap", "ws_layers": [0, 2, 5]},
        "boundary_one.npy": {"direction": "one", "ws_layers": [3]},
        "boundary_range.npy": {"direction": "range", "ws_layers": [1, 2, 3]},
    }
    for p in paths:
        assert np.load(p).shape == (1, W_DIM)  # what InterFaceGAN's tools load
    # applying a boundary on its listed ws rows reproduces `edit`
    ws = torch.randn(1, NUM_WS, W_DIM)
    entry = manifest["boundaries"]["boundary_gap.npy"]
    by_hand = ws.clone()
    by_hand[:, entry["ws_layers"]] += 1.5 * torch.as_tensor(np.load(tmp_path / "boundary_gap.npy"))
    torch.testing.assert_close(by_hand, ws + 1.5 * direction_offset(ds, "gap", NUM_WS)[None], rtol=0, atol=0)
    # a second export into the same folder keeps the entries it does not overwrite
    sefa02.select(["sefa0"]).export_interfacegan(tmp_path)
    manifest = json.loads((tmp_path / "layers.json").read_text())
    assert manifest["boundaries"]["boundary_sefa0.npy"]["ws_layers"] == [0, 2]
    assert manifest["boundaries"]["boundary_gap.npy"]["ws_layers"] == [0, 2, 5]


# ---------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def tiny_pkl(tmp_path_factory) -> Path:
    from stylegan_disentangle.networks import Discriminator

    G = _make_G()
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32).eval()
    path = tmp_path_factory.mktemp("net") / "tiny.pkl"
    save_network_pkl(path, dict(G=G, G_ema=G, D=D, training_set_kwargs=None, augment_pipe=None))
    return path


def _edit_cli(pkl: Path, dirs: Path, out: Path, *extra: str):
    return CliRunner().invoke(main, ["--quiet", "edit", str(pkl), str(dirs), "--name", "d", "--steps", "0,2",
                                     "--unit", "w", "--seeds", "0-1", "--outdir", str(out), *extra],
                              catch_exceptions=False)


def test_cli_layers_list_edits_exactly_those_ws(tiny_pkl, tmp_path):
    G = load_network_pkl(tiny_pkl)["G_ema"]
    v = _unit_rows(np.random.default_rng(4), 1, W_DIM)
    DirectionSet(["d"], v).save(tmp_path / "set")
    result = _edit_cli(tiny_pkl, tmp_path / "set", tmp_path / "e", "--layers", "0,2")
    assert result.exit_code == 0, result.output
    ws = np.load(tmp_path / "e" / "ws_d.npy")
    base = sample_latents(G, [0, 1]).ws.numpy()
    np.testing.assert_array_equal(ws[0], base)
    np.testing.assert_array_equal(ws[1][:, [1, 3, 4, 5]], base[:, [1, 3, 4, 5]])
    np.testing.assert_allclose(ws[1][:, [0, 2]], base[:, [0, 2]] + 2.0 * v[0], rtol=0, atol=2e-6)
    config = json.loads((tmp_path / "e" / "config.json").read_text())
    assert config["args"]["layers"] == [0, 2] and config["args"]["edited_ws"] == {"d": [0, 2]}


def test_cli_uses_the_sets_own_explicit_layers_and_rejects_bad_specs(tiny_pkl, tmp_path):
    v = _unit_rows(np.random.default_rng(6), 1, W_DIM)
    DirectionSet(["d"], v, layers=[[1, 5]]).save(tmp_path / "set")
    result = _edit_cli(tiny_pkl, tmp_path / "set", tmp_path / "e")
    assert result.exit_code == 0, result.output
    ws = np.load(tmp_path / "e" / "ws_d.npy")
    moved = [i for i in range(NUM_WS) if not np.array_equal(ws[1][:, i], ws[0][:, i])]
    assert moved == [1, 5]
    bad = _edit_cli(tiny_pkl, tmp_path / "set", tmp_path / "e2", "--layers", "2,x")
    assert bad.exit_code != 0 and "layers '2,x'" in bad.output
    beyond = _edit_cli(tiny_pkl, tmp_path / "set", tmp_path / "e3", "--layers", "0-6")
    assert beyond.exit_code != 0 and "exceed" in beyond.output
