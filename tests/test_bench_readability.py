"""The readability diagnostics of `scripts/bench_three_d_coupled.py` (cross-part spans, generator fidelity, part
readability) on problems whose answers are known."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers import load_script

bench = load_script("bench_three_d_coupled")
PART_FACTOR_NAMES = [f for fs in bench.PART_FACTORS.values() for f in fs]


def test_cross_part_spans_planted():
    """Truth = the unit axes; the nose's directions are nose length and (nose width + smile) / sqrt 2: nose length
    lies in their span (1), nose width and smile each at 1/sqrt 2, every other factor at 0. A part without
    directions is left out."""
    names = PART_FACTOR_NAMES + ["yaw"]
    truth = np.eye(len(names))
    e = {f: truth[names.index(f)] for f in names}
    directions = np.stack([e["nose_length"], (e["nose_width"] + e["smile"]) / np.sqrt(2), e["eye_spacing"], e["yaw"]])
    out = bench.cross_part_spans(directions, ["nose", "nose", "eyes", None], truth, names)
    assert set(out) == {"nose", "eyes"}
    for f in PART_FACTOR_NAMES:
        want_nose = {"nose_length": 1.0, "nose_width": 0.5**0.5, "smile": 0.5**0.5}.get(f, 0.0)
        assert abs(out["nose"][f] - want_nose) < 1e-12
        assert abs(out["eyes"][f] - (f == "eye_spacing")) < 1e-12


class _FakeFactorMap:
    """A factor map with the world's names: factors = w @ directions^T on the first row of ws."""

    def __init__(self, names, w_dim, seed=0):
        self.names = list(names)
        self.directions = np.random.default_rng(seed).normal(size=(len(names), w_dim))

    def __call__(self, ws):
        return torch.as_tensor(ws)[:, 0].double() @ torch.as_tensor(self.directions).T


class _WorldAsGenerator:
    """A generator that draws exactly what the world renders, `gain` times its change from a fixed face, with the
    factors in `blind` held at 0 (not drawn)."""

    img_resolution = 32

    def __init__(self, fmap, gain=1.0, blind=()):
        self.fmap, self.gain, self.blind = fmap, gain, [fmap.names.index(b) for b in blind]

    def synthesis(self, ws, noise_mode="const", force_fp32=True):
        f = torch.as_tensor(self.fmap(ws)).float().clone()
        f[:, self.blind] = 0
        return self.gain * bench.world_render(f, self.img_resolution)


def _world_fmap():
    from stylegan_disentangle.synthetic.factors import factor_names

    return _FakeFactorMap(factor_names(), w_dim=24)


def test_generator_fidelity_of_the_world_itself_and_of_a_blind_generator():
    """The world drawn by itself scores cosine 1 and norm ratio 1 on every factor (the same render of the same
    factors; float32 renders, so 1e-5). Drawn at half the contrast it keeps cosine 1 and halves the ratio. A
    generator blind to the nose width hardly changes its image there (norm ratio ~ 0) and keeps nearly 1 elsewhere."""
    fmap = _world_fmap()
    rng = np.random.default_rng(1)
    base = torch.as_tensor(rng.normal(size=(3, 1, 24)) * 0.3, dtype=torch.float32).repeat(1, 2, 1)
    spread = rng.normal(size=(500, 24))
    exact = bench.generator_fidelity(_WorldAsGenerator(fmap), fmap, base, spread)
    assert set(exact) == set(fmap.names)
    for v in exact.values():
        assert abs(v["cosine"] - 1) < 1e-5 and abs(v["norm_ratio"] - 1) < 1e-5
    half = bench.generator_fidelity(_WorldAsGenerator(fmap, gain=0.5), fmap, base, spread)
    for v in half.values():
        assert abs(v["cosine"] - 1) < 1e-5 and abs(v["norm_ratio"] - 0.5) < 1e-5
    blind = bench.generator_fidelity(_WorldAsGenerator(fmap, blind=("nose_width",)), fmap, base, spread)
    # the other factors move by float32 rounding of w along the dual direction (~1e-7 relative): its image barely
    # changes, and its cosine is that of rounding noise
    assert blind["nose_width"]["norm_ratio"] < 1e-3
    assert blind["nose_width"]["generator_change"] < 1e-3 * exact["nose_width"]["generator_change"]
    # the other factors are drawn in full, on faces whose nose differs from the world's, so their changes differ
    # where the nose is: a little for most (0.986-1 here), more for the nose length, which draws the same nose
    assert min(v["cosine"] for f, v in blind.items() if f not in ("nose_width", "nose_length")) > 0.98


def test_part_readability_tells_a_factor_shown_in_its_part_from_one_shown_elsewhere():
    """Maps whose nose region shows the nose factors, whose mouth region shows the mouth opening, and whose skin
    region shows the smile; the brow raise is shown only by an extra input (an "image"). Read from its own region
    the nose width is exact (R^2 ~ 1, |cos| ~ 1); the smile and the brow raise are not there at all (R^2 ~ 0),
    while the whole maps and image read them exactly."""
    names = PART_FACTOR_NAMES + ["yaw"]
    rng = np.random.default_rng(0)
    n, w_dim, res = 2000, 16, 8
    truth = np.linalg.qr(rng.normal(size=(w_dim, len(names))))[0].T  # orthonormal true directions
    w = rng.normal(size=(n, w_dim))
    z = w @ truth.T
    masks = np.zeros((len(bench.PART_NAMES), res, res))
    regions = {"nose": (0, slice(0, 4)), "eyes": (1, slice(0, 4)), "mouth": (2, slice(0, 4)),
               "brows": (3, slice(0, 4)), "skin": (4, slice(0, 8)), "hair": (5, slice(0, 8))}
    for part, (row, cols) in regions.items():
        masks[bench.PART_NAMES.index(part), row, cols] = 1.0
    shown_in = {"nose_length": "nose", "nose_width": "nose", "eye_spacing": "eyes", "mouth_open": "mouth",
                "smile": "skin", "head_width": "skin", "head_height": "skin",
                "jaw_width": "skin", "hair_color": "hair"}
    maps = np.zeros((n, 1, res, res))
    for f, part in shown_in.items():
        row, cols = regions[part]
        pattern = rng.normal(size=maps[0, 0, row, cols].shape)
        maps[:, 0, row, cols] += z[:, names.index(f), None] * pattern
    maps += 1e-4 * rng.normal(size=maps.shape)
    image = z[:, names.index("brow_raise"), None] * rng.normal(size=(1, 5)) + 1e-4 * rng.normal(size=(n, 5))
    out = bench.part_readability({"map": maps}, w, z, truth, names, masks, extra={"image": image})
    assert set(out) == set(PART_FACTOR_NAMES)
    # the nose's 4 pixels carry its 2 factors; 1e-4 noise against unit signals
    assert out["nose_width"]["part_region_r2"] > 0.999 and out["nose_width"]["part_region"] > 0.999
    assert out["smile"]["part_region_r2"] < 0.01
    assert out["smile"]["whole_r2"] > 0.999 and out["smile"]["whole"] > 0.999
    assert out["brow_raise"]["part_region_r2"] < 0.01
    assert out["brow_raise"]["whole_r2"] > 0.999 and out["brow_raise"]["whole"] > 0.999
    assert out["nose_width"]["region_pixels"] == 4 and out["smile"]["part"] == "mouth"


def test_bench_main_writes_the_diagnostics(tmp_path, monkeypatch):
    """A small end-to-end run of the bench with --readability on the shipped checkpoint and decomposer: the JSON
    holds every diagnostic, the cross-part table's own-part entries are the span goal's figures, and every
    reported |cos| is one."""
    out = tmp_path / "bench.json"
    monkeypatch.setattr("sys.argv", ["bench_three_d_coupled.py", "--samples", "600", "--probe", "2", "--bound-faces",
                                     "0", "--readability", "--sensitivity-samples", "2", "--json", str(out)])
    bench.main()
    import json

    report = json.loads(out.read_text())
    for part, row in report["span"].items():
        for f, v in row.items():
            assert report["cross_part_span"][part][f] == v
    assert set(report["generator_fidelity"]) >= set(PART_FACTOR_NAMES)
    assert set(report["part_readability"]) == set(PART_FACTOR_NAMES)
    for v in report["part_readability"].values():
        assert 0 <= v["part_region"] <= 1 + 1e-12 and 0 <= v["whole"] <= 1 + 1e-12


def test_part_readability_reads_at_most_max_rows():
    """With max_rows the readers see only the first rows: a factor shown only after them is unreadable."""
    names = PART_FACTOR_NAMES
    rng = np.random.default_rng(3)
    n, w_dim, res = 1200, 12, 4
    truth = np.linalg.qr(rng.normal(size=(w_dim, len(names))))[0].T
    w = rng.normal(size=(n, w_dim))
    z = w @ truth.T
    masks = np.ones((len(bench.PART_NAMES), res, res))
    maps = np.zeros((n, 1, res, res))
    maps[:, 0, 0, 0] = z[:, names.index("smile")]
    maps[:, 0, 0, 1] = z[:, names.index("brow_raise")] * (np.arange(n) >= 600)  # shown only after row 600
    maps += 1e-4 * rng.normal(size=maps.shape)
    full = bench.part_readability({"map": maps}, w, z, truth, names, masks)
    cut = bench.part_readability({"map": maps}, w, z, truth, names, masks, max_rows=600)
    # on all rows the reader learns from 300 rows that do not show it and 600 that do, so it is close, not exact
    assert full["brow_raise"]["whole_r2"] > 0.9 and cut["brow_raise"]["whole_r2"] < 0.01
    assert cut["smile"]["whole_r2"] > 0.999
