"""The decomposer shipped for the synthetic checkpoint: it loads by name, and a fresh sample reproduces its record."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from stylegan_disentangle.labels import get_labeler, load_decomposer
from stylegan_disentangle.labels.decomposer.labeler import SHIPPED, DecomposerLabeler
from stylegan_disentangle.synthetic import factor_index, to_physical
from stylegan_disentangle.synthetic.checkpoint import load_synthetic, synthetic_factor_map
from stylegan_disentangle.synthetic.decomposer_eval import SCALARS, faces_from_generator

# Fresh faces for the scalar labels: enough that every label's check can fail. The standard error of Pearson's r is
# about (1 - r^2) / sqrt(n), one for this sample and one for the record's (n = 1000), and the check allows 4 of
# them. For the weakest label, light elevation (recorded r = 0.23), that allowance is 0.25 at 300 faces: the bound
# fell below 0, so a decomposer that reads no elevation passed. At 1500 faces it is 0.155 and the bound, 0.070,
# exceeds 2 / sqrt(1500) = 0.052, two standard errors of r for a label with no signal. Cost: ~6 s (the images).
N_SCALARS = 1500
N_MAPS = 300  # the maps' check uses the first N_MAPS of these faces


@contextmanager
def _one_thread() -> Iterator[None]:
    """One torch thread, as conftest sets per test (module fixtures run before it; the nets are tiny, and on a shared
    2-core machine a second thread makes them several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(SHIPPED["synthetic"].with_suffix(".json").read_text())


def test_the_shipped_record_names_the_network_it_was_trained_on(record):
    """The fingerprint beside the shipped nets is the shipped synthetic checkpoint's: decomposing its faces does
    not warn, and a checkpoint retrained without its record updated would fail here."""
    from stylegan_disentangle.latents import generator_fingerprint

    G, _ = load_synthetic()
    assert record["generator_sha256"] == generator_fingerprint(G)
    assert load_decomposer("synthetic").trained_on == record["generator_sha256"]


@pytest.fixture(scope="module")
def faces():
    G, _ = load_synthetic()
    with _one_thread():
        return faces_from_generator(G, synthetic_factor_map(), N_SCALARS, seed=55_000_000)


@pytest.fixture(scope="module")
def scalar_r(faces) -> dict[str, float]:
    """Pearson r of each scalar label with the world's factor, as `score_decomposer` computes it (its ambient is
    a / (a + d)), from netL and netV alone (the maps' nets and the render are not needed for the scalars)."""
    images, factors = faces
    with _one_thread():
        labels = DecomposerLabeler(load_decomposer("synthetic"), maps=False)(images)
    labels["ambient"] = labels["light_ambient"] / (labels["light_ambient"] + labels["light_diffuse"]).clamp_min(1e-6)
    phys = to_physical(factors).double().numpy()
    return {name: float(np.corrcoef(labels[name].double().numpy(), phys[:, factor_index(name)])[0, 1])
            for name in SCALARS}


def test_shipped_decomposer_loads_by_name_with_its_settings(record):
    dec = load_decomposer("synthetic")
    assert dec.image_size == 32 and dec.netC is not None
    assert dec.xy_light_range == record["scalings"]["xy_light_range"]
    assert dec.antialias == record["scalings"].get("antialias", False)
    assert get_labeler("decomposer3d").decomposer.get_config() == dec.get_config()


def test_shipped_file_holds_float16_weights_that_run_in_float32(record):
    """Package data of a few MB: the file keeps float16 weights (as its record says); the nets run in float32."""
    from stylegan_disentangle.labels.decomposer import read_unsup3d_checkpoint

    raw = read_unsup3d_checkpoint(SHIPPED["synthetic"])
    stored = {t.dtype for name in ("netD", "netA", "netL", "netV", "netC") for t in raw[name].values()}
    assert stored == {getattr(torch, record["weights_dtype"])} == {torch.float16}
    assert SHIPPED["synthetic"].stat().st_size < 5e6
    assert {p.dtype for p in load_decomposer("synthetic").parameters()} == {torch.float32}


@pytest.mark.parametrize("name", SCALARS)
def test_fresh_sample_reproduces_the_recorded_correlations(record, scalar_r, name):
    """Guards each label against losing its recorded correlation (a sign flip included: r is signed, as the
    labels follow the world's conventions) beyond what sampling explains."""
    r_rec = record["scores_fresh_sample"]["scalars"][name]["pearson_r"]
    tol = 4 * (1 - r_rec**2) * math.sqrt(1 / N_SCALARS + 1 / record["scores_fresh_sample"]["n"]) + 1e-3
    # the check can fail: a label with no signal (r ~ N(0, 1/sqrt(N))) lands below the bound 97.7 % of the time
    assert r_rec - tol > 2 / math.sqrt(N_SCALARS), (name, r_rec, tol, "raise N_SCALARS")
    assert scalar_r[name] >= r_rec - tol, (name, scalar_r[name], r_rec, tol)


@pytest.fixture(scope="module")
def map_r(faces) -> dict[str, np.ndarray]:
    """Per-image Pearson r of the canonical depth / albedo with the world's, inside the face mask."""
    from stylegan_disentangle.synthetic.decomposer_eval import decomposer_estimates, masked_pearson
    from stylegan_disentangle.synthetic.renderer import render

    images, factors = faces[0][:N_MAPS], faces[1][:N_MAPS]
    with _one_thread():
        est = decomposer_estimates(load_decomposer("synthetic"), images)
        _, truth = render(factors, 32, return_intrinsics=True)
    mask = truth["canonical_mask"] > 0.5
    return {"depth": masked_pearson(est["canon_depth"].unsqueeze(1).double(), truth["depth"].double(), mask),
            "albedo": masked_pearson(est["canon_albedo"].double(), truth["albedo"].double(), mask)}


@pytest.mark.parametrize("name", ["depth", "albedo"])
def test_fresh_sample_reproduces_the_recorded_map_correlations(record, map_r, name):
    """The headline map figures: mean per-image Pearson r of the canonical depth / albedo with the world's, inside
    the face mask."""
    r = map_r[name][np.isfinite(map_r[name])]
    recorded = record["scores_fresh_sample"][f"{name}_pearson_r"]
    # a mean of per-image values: its standard error from this sample's spread, for both samples; 4 errors allowed
    se = float(np.std(r)) * math.sqrt(1 / len(r) + 1 / record["scores_fresh_sample"]["n"])
    assert len(r) > 0.9 * N_MAPS and float(np.mean(r)) >= recorded - 4 * se, (len(r), np.mean(r), recorded, se)


def test_bench_script_scores_and_times_on_the_named_device(tmp_path, monkeypatch):
    """scripts/bench_decomposer.py --device (what a GPU session runs) on the CPU: tables, throughput rows, JSON."""
    import sys

    from tests.helpers import load_script

    script = load_script("bench_decomposer")
    monkeypatch.setattr(sys, "argv", ["bench_decomposer.py", "--samples", "40", "--reps", "1", "--device", "cpu",
                                      "--json", str(tmp_path / "b.json")])
    with _one_thread():
        script.main()
    record = json.loads((tmp_path / "b.json").read_text())
    assert record["device"] == "cpu" and record["generator_faces"]["n"] == 40
    # its table is score_decomposer's on the bench's fresh seeds (20,000,000 on), as BENCHMARKS.md quotes it
    from stylegan_disentangle.synthetic.decomposer_eval import score_decomposer

    G, fmap = load_synthetic()
    images, factors = faces_from_generator(G, fmap, 40, seed=20_000_000)
    with _one_thread():
        direct = score_decomposer(load_decomposer("synthetic"), images, factors)
    for name, score in direct["scalars"].items():
        assert record["generator_faces"]["scalars"][name]["pearson_r"] == pytest.approx(score["pearson_r"], abs=1e-9)
    assert record["generator_faces"]["albedo_pearson_r"] == pytest.approx(direct["albedo_pearson_r"], abs=1e-9)
    for key in ("depth_mean_face_r", "albedo_mean_face_r", "depth_variation_r", "albedo_variation_r", "albedo_face_r",
                "albedo_hair_r"):
        assert record["generator_faces"][key] == pytest.approx(direct[key], abs=1e-9), key
    # the shipped maps' per-face r is mostly the mean face: their deviations from it correlate far less
    assert direct["albedo_variation_r"] < direct["albedo_pearson_r"] - 0.1
    assert [r["what"] for r in record["throughput"]][:2] == ["generator 32x32 (baseline)", "this decomposer"]
    assert all(r["img_per_s"] > 0 for r in record["throughput"])
