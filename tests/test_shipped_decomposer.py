"""The decomposer shipped for the synthetic checkpoint: it loads by name, and a fresh sample reproduces its record."""

from __future__ import annotations

import json
import math

import pytest

from stylegan_disentangle.labels import get_labeler, load_decomposer
from stylegan_disentangle.labels.decomposer.labeler import SHIPPED
from stylegan_disentangle.synthetic.checkpoint import load_synthetic, synthetic_factor_map
from stylegan_disentangle.synthetic.decomposer_eval import SCALARS, faces_from_generator, score_decomposer

N = 300


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads(SHIPPED["synthetic"].with_suffix(".json").read_text())


@pytest.fixture(scope="module")
def scores() -> dict:
    G, _ = load_synthetic()
    images, factors = faces_from_generator(G, synthetic_factor_map(), N, seed=55_000_000)
    return score_decomposer(load_decomposer("synthetic"), images, factors)


def test_shipped_decomposer_loads_by_name_with_its_settings(record):
    dec = load_decomposer("synthetic")
    assert dec.image_size == 32 and dec.netC is not None
    assert dec.xy_light_range == record["scalings"]["xy_light_range"]
    assert dec.antialias == record["scalings"].get("antialias", False)
    assert get_labeler("decomposer3d").decomposer.get_config() == dec.get_config()


@pytest.mark.parametrize("name", SCALARS)
def test_fresh_sample_reproduces_the_recorded_correlations(record, scores, name):
    r_rec = abs(record["scores_fresh_sample"]["scalars"][name]["pearson_r"])
    r_new = abs(scores["scalars"][name]["pearson_r"])
    # sampling error of Pearson's r: about (1 - r^2) / sqrt(n) for each of the two samples; allow 4 standard errors
    tol = 4 * (1 - r_rec**2) * math.sqrt(1 / N + 1 / record["scores_fresh_sample"]["n"]) + 1e-3
    assert r_new >= r_rec - tol, (name, r_new, r_rec, tol)


@pytest.mark.parametrize("name", ["depth", "albedo"])
def test_fresh_sample_reproduces_the_recorded_map_correlations(record, name):
    """The headline map figures: mean per-image Pearson r of the canonical depth / albedo with the world's, inside
    the face mask."""
    import numpy as np

    from stylegan_disentangle.synthetic.decomposer_eval import _masked_r, decomposer_estimates
    from stylegan_disentangle.synthetic.renderer import render

    G, _ = load_synthetic()
    images, factors = faces_from_generator(G, synthetic_factor_map(), N, seed=56_000_000)
    est = decomposer_estimates(load_decomposer("synthetic"), images)
    _, truth = render(factors, 32, return_intrinsics=True)
    pred = est["canon_depth"].unsqueeze(1) if name == "depth" else est["canon_albedo"]
    r = _masked_r(pred.double(), truth[name].double(), truth["canonical_mask"] > 0.5)
    r = r[np.isfinite(r)]
    recorded = record["scores_fresh_sample"][f"{name}_pearson_r"]
    # a mean of per-image values: its standard error from this sample's spread, for both samples; 4 errors allowed
    se = float(np.std(r)) * math.sqrt(1 / len(r) + 1 / record["scores_fresh_sample"]["n"])
    assert len(r) > 0.9 * N and float(np.mean(r)) >= recorded - 4 * se, (len(r), np.mean(r), recorded, se)
