"""Map-valued labels (a depth or albedo map per image): the labeler protocol, the latent bank and the rendered effect
measurement handle them beside scalar labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis import measure_label_effects
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.labels import apply_labeler, labeler_from_callable
from stylegan_disentangle.latents import LatentBank, sample_latents
from stylegan_disentangle.networks import Generator

W_DIM = 16
PATTERN = torch.arange(12, dtype=torch.float32).reshape(3, 4) / 11 - 0.3  # a fixed 3x4 "footprint"


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


U = np.random.default_rng(1).standard_normal(W_DIM).astype(np.float32)


def _map_labeler():
    """proj = ws[:, 0] . u (scalar) and depth = proj * PATTERN (a [3, 4] map): linear in w, so the answers are exact."""
    def fn(img, ws):
        proj = ws[:, 0] @ torch.as_tensor(U)
        return {"proj": proj, "depth": proj[:, None, None] * PATTERN}

    return labeler_from_callable(fn, ["proj", "depth"], needs_ws=True, needs_images=False)


def test_labeler_protocol_accepts_maps(G):
    ws = sample_latents(G, [0, 1]).ws
    out = apply_labeler(_map_labeler(), None, ws)
    assert out["proj"].shape == (2,) and out["depth"].shape == (2, 3, 4)


def test_bank_stores_map_labels_per_sample_on_disk(G, tmp_path):
    bank = LatentBank.create(G, tmp_path / "bank", n=10, seed=0, labelers=[_map_labeler()], batch_size=4)
    again = LatentBank(tmp_path / "bank")
    assert isinstance(again.labels["depth"], np.memmap) and again.labels["depth"].shape == (10, 3, 4)
    proj = np.asarray(again.labels["proj"])
    np.testing.assert_allclose(again.labels["depth"], proj[:, None, None] * PATTERN.numpy(), rtol=1e-6, atol=1e-6)
    assert again.label_matrix().shape == (10, 1)  # only scalar labels stack into [N, L]
    assert bank.label_names == again.label_names


def test_label_effects_measure_change_maps_of_map_labels(G):
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, W_DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ds = DirectionSet(["a", "b"], v.astype(np.float32), extras={"std": np.array([1.5, 0.5], np.float32)})
    ws = sample_latents(G, list(range(6))).ws
    eff = measure_label_effects(G, ws, ds, _map_labeler())
    slope = ds.vectors.astype(np.float64) @ U.astype(np.float64)  # proj change per unit step along each direction
    pattern = PATTERN.double().numpy()
    assert eff.label_names == ["proj", "depth"] and set(eff.change_maps) == {"depth"}
    # float32 labels of O(1) values, differenced over a step of O(1): errors of a few float32 ulps
    np.testing.assert_allclose(eff.change_maps["depth"], slope[:, None, None] * pattern, rtol=1e-4, atol=1e-5)
    rms = np.sqrt(np.mean(pattern**2))
    np.testing.assert_allclose(eff.per_unit[:, 1], np.abs(slope) * rms, rtol=1e-4)
    np.testing.assert_allclose(eff.per_unit[:, 0], slope, rtol=1e-4, atol=1e-5)
    # the map's std is the scalar's std times the pattern's rms, so both columns give the same effect size
    np.testing.assert_allclose(eff.label_std[1], eff.label_std[0] * rms, rtol=1e-4)
    np.testing.assert_allclose(eff.effects[:, 1], np.abs(eff.effects[:, 0]), rtol=1e-4)
    assert eff.to_dict()["map_labels"] == ["depth"]
    assert set(eff.select_labels(["proj"]).change_maps) == set()


class _Interrupt(Exception):
    pass


def _shaped_labeler(shape: tuple[int, int], fail_at_call: int | None = None):
    """depth = proj * a [shape] pattern, with an optional interruption at a given call (a killed bank build)."""
    calls = []

    def fn(img, ws):
        calls.append(1)
        if fail_at_call is not None and len(calls) == fail_at_call:
            raise _Interrupt
        proj = ws[:, 0] @ torch.as_tensor(U)
        return {"proj": proj, "depth": proj[:, None, None] * torch.ones(shape)}

    return labeler_from_callable(fn, ["proj", "depth"], needs_ws=True, needs_images=False)


def test_a_bank_with_map_labels_resumes_to_the_uninterrupted_one_and_checks_the_maps_against_w(G, tmp_path):
    full = LatentBank.create(G, tmp_path / "full", n=14, seed=3, labelers=[_shaped_labeler((3, 4))], batch_size=4)
    with pytest.raises(_Interrupt):
        LatentBank.create(G, tmp_path / "part", n=14, seed=3, labelers=[_shaped_labeler((3, 4), 3)], batch_size=4)
    part = LatentBank.create(G, tmp_path / "part", n=14, seed=3, labelers=[_shaped_labeler((3, 4))], batch_size=4)
    np.testing.assert_array_equal(part.labels["depth"], full.labels["depth"])  # rows 0-7 kept, 8-13 added
    # and against the samples' own w (not only against another stored label)
    proj = np.asarray(full.w) @ U
    np.testing.assert_allclose(full.labels["depth"], np.broadcast_to(proj[:, None, None], (14, 3, 4)), rtol=1e-5,
                               atol=1e-5)


def test_a_map_of_another_shape_is_refused_when_a_bank_resumes(G, tmp_path):
    from stylegan_disentangle.errors import LatentError

    with pytest.raises(_Interrupt):
        LatentBank.create(G, tmp_path / "b", n=12, seed=0, labelers=[_shaped_labeler((3, 4), 2)], batch_size=4)
    for shape in ((3, 5), (1, 4)):  # (1, 4) would broadcast silently into the stored [3, 4]
        with pytest.raises(LatentError, match=rf"label 'depth' has per-sample shape \[{shape[0]}, {shape[1]}\] but "
                                              r"the bank stores \[3, 4\]"):
            LatentBank.create(G, tmp_path / "b", n=12, seed=0, labelers=[_shaped_labeler(shape)], batch_size=4)


class _Weighted:
    """A labeler with weights of its own: the same names whatever the weights, so only its fingerprint tells."""

    needs_ws, needs_images, names = True, False, ["proj"]

    def __init__(self, scale: float):
        self.scale = scale
        self.fingerprint = f"scale={scale}"

    def __call__(self, img, ws=None):
        return {"proj": self.scale * (ws[:, 0] @ torch.as_tensor(U))}


def test_a_bank_labelled_by_another_labeler_of_the_same_names_is_refused(G, tmp_path):
    from stylegan_disentangle.errors import LatentError

    LatentBank.create(G, tmp_path / "b", n=6, seed=0, labelers=[_Weighted(1.0)])
    assert LatentBank.create(G, tmp_path / "b", n=6, seed=0, labelers=[_Weighted(1.0)]).meta["labelers"] == [
        {"class": "_Weighted", "names": ["proj"], "fingerprint": "scale=1.0"}]  # the same one: reused
    with pytest.raises(LatentError, match=r"made with other arguments \(labelers: .*scale=1\.0.* there vs "
                                          r".*scale=2\.0.* now\)"):
        LatentBank.create(G, tmp_path / "b", n=6, seed=0, labelers=[_Weighted(2.0)])


def test_a_map_file_that_contradicts_meta_or_a_meta_without_count_is_refused(G, tmp_path):
    import json

    from stylegan_disentangle.errors import LatentError

    LatentBank.create(G, tmp_path / "b", n=6, seed=0, labelers=[_map_labeler()], batch_size=4)
    np.save(tmp_path / "b" / "labels" / "depth.npy", np.zeros((6, 5), np.float32))
    with pytest.raises(LatentError, match=r"label 'depth' is stored as \[5\] per sample, meta.json says \[3, 4\]"):
        LatentBank(tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "meta.json").read_text())
    del meta["count"]
    (tmp_path / "b" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(LatentError, match=r"is damaged: .*meta\.json has no valid 'count'"):
        LatentBank(tmp_path / "b")


def test_a_nan_in_a_map_label_is_refused_by_the_protocol_and_the_bank(G, tmp_path):
    from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError

    def fn(img, ws):
        depth = (ws[:, 0] @ torch.as_tensor(U))[:, None, None] * PATTERN
        depth[0, 1, 2] = float("nan")
        return {"depth": depth}

    lab = labeler_from_callable(fn, ["depth"], needs_ws=True, needs_images=False)
    with pytest.raises(StyleGANDisentangleError, match=r"label .depth. of .* contains NaN or inf"):
        apply_labeler(lab, None, sample_latents(G, [0, 1]).ws)
    with pytest.raises(LatentError, match=r"label 'depth' from .* contains NaN or inf"):
        LatentBank.create(G, tmp_path / "b", n=4, seed=0, labelers=[lab])


def test_the_change_map_of_a_curved_map_label_and_its_standard_error(G):
    """depth = proj^2 * PATTERN: the central difference is exact for a quadratic, 2 proj_i slope PATTERN per base
    code i, so the mean change map, its RMS and the RMS of the per-pixel standard error have closed forms."""
    def fn(img, ws):
        proj = ws[:, 0] @ torch.as_tensor(U)
        return {"depth": (proj**2)[:, None, None] * PATTERN}

    lab = labeler_from_callable(fn, ["depth"], needs_ws=True, needs_images=False)
    v = np.random.default_rng(2).standard_normal((1, W_DIM))
    v /= np.linalg.norm(v)
    ds = DirectionSet(["a"], v.astype(np.float32), extras={"std": np.array([0.5], np.float32)})
    ws = sample_latents(G, list(range(8))).ws
    eff = measure_label_effects(G, ws, ds, lab)
    slope = float(v[0].astype(np.float64) @ U.astype(np.float64))
    proj = ws[:, 0].double().numpy() @ U.astype(np.float64)
    pattern = PATTERN.double().numpy()
    rms = np.sqrt(np.mean(pattern**2))
    # float32 labels of O(1-10) differenced over a 0.5 step: ~1e-6 relative; 1e-3 leaves room, and a wrong formula
    # (a missing factor 2, a biased std, no sqrt(n)) is off by 6 % or more
    np.testing.assert_allclose(eff.change_maps["depth"][0], 2 * proj.mean() * slope * pattern, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(eff.per_unit[0, 0], abs(2 * proj.mean() * slope) * rms, rtol=1e-3)
    want_err = 2 * abs(slope) * rms * proj.std(ddof=1) / np.sqrt(len(proj))
    np.testing.assert_allclose(eff.stderr[0, 0], want_err, rtol=1e-3)
