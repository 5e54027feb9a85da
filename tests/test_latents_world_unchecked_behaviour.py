"""Behaviour of the latent bank, sampling, W statistics, the synthetic world and the labeler protocol that the rest
of the suite left unchecked (found by mutation testing): validation at the boundaries, the bank's resume identity,
known answers of the world's ground truth and of the evaluation helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError
from stylegan_disentangle.labels import (
    ImageStatsLabeler,
    LabelerError,
    apply_labeler,
    get_labeler,
    labeler_from_callable,
    register_labeler,
    unregister_labeler,
)
from stylegan_disentangle.labels.base import check_crop, crop_images, fill_box, resize_images
from stylegan_disentangle.latents import (
    LatentBank,
    WStats,
    as_w,
    bank_seeds,
    generator_fingerprint,
    one_hot,
    sample_latents,
    truncate,
    z_from_seeds,
)
from stylegan_disentangle.synthetic import (
    PART_NAMES,
    SyntheticOracle,
    factor_index,
    factor_names,
    factor_ranges,
    neutral_factors,
    num_factors,
    render,
    sample_factors,
    to_physical,
)
from stylegan_disentangle.synthetic.factor_map import FactorMap
from stylegan_disentangle.synthetic.image_formation import warp_canonical
from tests.helpers import tiny_networks

F = num_factors()


@pytest.fixture(scope="module")
def G() -> torch.nn.Module:
    """An unconditional tiny generator (w_dim 8) with a non-zero w_avg."""
    return tiny_networks("skip16", seed=0)["G_ema"]


@pytest.fixture(scope="module")
def Gc() -> torch.nn.Module:
    """A conditional tiny generator (c_dim 3)."""
    return tiny_networks("resnet_cond16", seed=0)["G_ema"]


def _ws_labeler(name: str = "w0", fn=None):
    """A labeler reading only the ws: by default the first coordinate of the first layer."""
    fn = fn or (lambda img, ws: ws[:, 0, 0])
    return labeler_from_callable(fn, name, needs_ws=True, needs_images=False)


class _Raw:
    """A labeler written by hand (not via labeler_from_callable): returns whatever `out(n)` gives."""

    needs_ws = True
    needs_images = False

    def __init__(self, names, out):
        self.names, self.out = names, out

    def __call__(self, img, ws=None):
        return self.out(ws.shape[0])


# ---------------------------------------------------------------------- the latent bank
def test_the_fingerprint_changes_with_any_weight_value_and_a_bank_of_other_weights_is_refused(G, tmp_path):
    other = tiny_networks("skip16", seed=0)["G_ema"]
    assert generator_fingerprint(other) == generator_fingerprint(G)
    with torch.no_grad():
        other.mapping.w_avg[0] += 1.0  # same names and shapes, one value changed
    assert generator_fingerprint(other) != generator_fingerprint(G)
    LatentBank.create(G, tmp_path / "b", 4, render=False)
    with pytest.raises(LatentError, match="generator_fingerprint"):
        LatentBank.create(other, tmp_path / "b", 4, render=False)


@pytest.mark.parametrize("names, out, message", [
    ([], lambda n: {}, "non-empty `names`"),
    (["a"], lambda n: {"a": torch.zeros(n), "extra": torch.zeros(n)}, "must return a dict with keys"),
    (["a"], lambda n: {"a": torch.zeros(n + 1)}, r"expected \[3, \.\.\.\]"),
    (["a/b"], lambda n: {"a/b": torch.zeros(n)}, "not file-safe"),
], ids=["empty-names", "extra-key", "too-many-rows", "unsafe-name"])
def test_a_malformed_labeler_is_refused_by_the_bank(G, tmp_path, names, out, message):
    with pytest.raises(LatentError, match=message):
        LatentBank.create(G, tmp_path / "b", 3, labelers=[_Raw(names, out)])


def test_two_labelers_with_one_label_name_are_refused(G, tmp_path):
    with pytest.raises(LatentError, match=r"same label name\(s\) \['w0'\]"):
        LatentBank.create(G, tmp_path / "b", 3, labelers=[_ws_labeler(), _ws_labeler()])


def test_overwriting_a_bank_removes_the_old_label_files(G, tmp_path):
    LatentBank.create(G, tmp_path / "b", 4, labelers=[_ws_labeler("old")])
    bank = LatentBank.create(G, tmp_path / "b", 4, labelers=[_ws_labeler("new")], overwrite=True)
    assert sorted(p.name for p in (tmp_path / "b" / "labels").iterdir()) == ["new.npy"]
    assert bank.label_names == ["new"]


def test_an_unconditional_bank_has_no_classes(G, tmp_path):
    bank = LatentBank.create(G, tmp_path / "b", 3, render=False)
    assert bank.classes is None and not (tmp_path / "b" / "classes.npy").exists()


def test_a_conditional_bank_stores_the_drawn_or_the_given_classes(Gc, tmp_path):
    drawn = LatentBank.create(Gc, tmp_path / "drawn", 10, seed=3, render=False, batch_size=4)
    _, expected = z_from_seeds(drawn.seeds, Gc.z_dim, Gc.c_dim)
    np.testing.assert_array_equal(drawn.classes, expected)
    assert len(set(expected.tolist())) > 1
    given = LatentBank.create(Gc, tmp_path / "given", 5, seed=3, class_idx=2, render=False)
    np.testing.assert_array_equal(given.classes, np.full(5, 2))
    lat = sample_latents(Gc, given.seeds, class_idx=2)
    np.testing.assert_allclose(given.w, lat.w.numpy(), rtol=0, atol=1e-6)


def test_a_bank_class_index_must_be_an_int_in_range_and_a_refused_one_leaves_no_bank(G, Gc, tmp_path):
    with pytest.raises(LatentError, match="class_idx must be an int"):
        LatentBank.create(Gc, tmp_path / "f", 2, class_idx=1.5, render=False)
    with pytest.raises(LatentError, match=r"class_idx must be in \[0, 3\)"):
        LatentBank.create(Gc, tmp_path / "c", 2, class_idx=3, render=False)
    assert not (tmp_path / "c" / "meta.json").exists()
    with pytest.raises(LatentError, match="unconditional"):
        LatentBank.create(G, tmp_path / "u", 2, class_idx=0, render=False)
    assert not (tmp_path / "u" / "meta.json").exists()


def _meta(root) -> dict:
    return json.loads((root / "meta.json").read_text())


def _set_meta(root, **changes) -> None:
    meta = _meta(root)
    meta.update(changes)
    (root / "meta.json").write_text(json.dumps(meta))


def test_open_refuses_a_newer_format_and_a_foreign_metadata_file(G, tmp_path):
    LatentBank.create(G, tmp_path / "b", 3, render=False)
    _set_meta(tmp_path / "b", format_version=2)
    with pytest.raises(LatentError, match="format version 2"):
        LatentBank.open(tmp_path / "b")
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "meta.json").write_text(json.dumps({"format": "something else", "count": 3}))
    with pytest.raises(LatentError, match="is not a LatentBank metadata file"):
        LatentBank.open(tmp_path / "x")


def test_open_refuses_a_w_file_longer_than_the_count(G, tmp_path):
    LatentBank.create(G, tmp_path / "b", 3, render=False)
    np.save(tmp_path / "b" / "w.npy", np.zeros((4, G.w_dim), np.float32))
    with pytest.raises(LatentError, match="w has 4 rows, meta.json says 3"):
        LatentBank.open(tmp_path / "b")


class _Crash(Exception):
    pass


def test_an_unfinished_bank_opens_only_when_allowed(G, tmp_path):
    calls = []

    def fn(img, ws):
        calls.append(1)
        if len(calls) == 2:
            raise _Crash
        return ws[:, 0, 0]

    with pytest.raises(_Crash):
        LatentBank.create(G, tmp_path / "b", 6, labelers=[_ws_labeler("w0", fn)], batch_size=2)
    bank = LatentBank.open(tmp_path / "b", allow_incomplete=True)
    assert bank.done == 2 and not bank.complete
    np.testing.assert_allclose(bank.labels["w0"][:2], bank.w[:2, 0], rtol=0, atol=0)


def test_label_matrix_stacks_the_scalar_labels_as_columns(G, tmp_path):
    labelers = [_ws_labeler("a", lambda img, ws: ws[:, 0, 0]), _ws_labeler("b", lambda img, ws: ws[:, 0, 1]),
                _ws_labeler("m", lambda img, ws: {"m": ws[:, 0, :4].reshape(-1, 2, 2)})]
    bank = LatentBank.create(G, tmp_path / "b", 5, labelers=labelers)
    matrix = bank.label_matrix()  # default: every scalar label, the map label left out
    assert matrix.shape == (5, 2) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix, np.asarray(bank.w[:, :2]))
    np.testing.assert_array_equal(bank.label_matrix(["b"])[:, 0], np.asarray(bank.w[:, 1]))


def test_an_image_labeler_without_a_needs_images_attribute_gets_rendered_images(G, tmp_path):
    seen = []

    class Plain:
        names = ["mean"]

        def __call__(self, img, ws=None):
            seen.append(img)
            return {"mean": img.mean(dim=(1, 2, 3))}

    bank = LatentBank.create(G, tmp_path / "b", 3, labelers=[Plain()])
    assert bank.meta["render"] is True and seen[0].shape == (3, 3, 16, 16)
    with pytest.raises(LatentError, match="render=False, but a labeler needs images"):
        LatentBank.create(G, tmp_path / "c", 3, labelers=[Plain()], render=False)


def test_on_the_cpu_a_bank_renders_its_images_in_float32(Gc, tmp_path):
    lab = ImageStatsLabeler(names=["brightness", "contrast"])
    bank = LatentBank.create(Gc, tmp_path / "b", 3, labelers=[lab], device="cpu")
    images = Gc.synthesis(bank.ws(slice(None)), noise_mode="const", force_fp32=True)  # Gc has an fp16 block
    expected = lab(images)
    for name in lab.names:
        np.testing.assert_allclose(bank.labels[name], expected[name].numpy(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("changed, key", [
    (dict(truncation_psi=0.7), "truncation_psi"),
    (dict(truncation_psi=0.5, truncation_cutoff=2), "truncation_cutoff"),
    (dict(noise_mode="none"), "noise_mode"),
], ids=["psi", "cutoff", "noise_mode"])
def test_a_bank_made_with_another_truncation_or_noise_mode_is_refused(G, tmp_path, changed, key):
    LatentBank.create(G, tmp_path / "b", 3, labelers=[ImageStatsLabeler(names=["brightness"])],
                      truncation_psi=0.5)
    with pytest.raises(LatentError, match=key):
        LatentBank.create(G, tmp_path / "b", 3, labelers=[ImageStatsLabeler(names=["brightness"])],
                          **dict(dict(truncation_psi=0.5), **changed))


def test_a_corrupt_or_foreign_meta_json_is_never_overwritten(G, tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "meta.json").write_text("{not json")
    with pytest.raises(LatentError, match="not valid JSON"):
        LatentBank.create(G, tmp_path / "b", 3, render=False)
    assert (tmp_path / "b" / "meta.json").read_text() == "{not json"
    (tmp_path / "b" / "meta.json").write_text(json.dumps({"format": "another tool"}))
    with pytest.raises(LatentError, match="is not a LatentBank metadata file"):
        LatentBank.create(G, tmp_path / "b", 3, render=False)


def test_with_a_cutoff_labels_see_the_truncated_ws_that_bank_ws_rebuilds(G, tmp_path):
    last = _ws_labeler("last", lambda img, ws: ws[:, -1, 0])  # a layer past the cutoff: untruncated
    first = _ws_labeler("first", lambda img, ws: ws[:, 0, 0])  # a layer before it: truncated
    bank = LatentBank.create(G, tmp_path / "b", 6, truncation_psi=0.3, truncation_cutoff=2, labelers=[last, first])
    ws = bank.ws(slice(None))
    np.testing.assert_allclose(bank.labels["last"], ws[:, -1, 0].numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(bank.labels["first"], ws[:, 0, 0].numpy(), rtol=0, atol=1e-6)
    assert np.abs(np.asarray(bank.labels["last"]) - np.asarray(bank.labels["first"])).max() > 1e-3


# ---------------------------------------------------------------------- sampling
def test_bank_seeds_wrap_modulo_2_to_the_32():
    top = 2**32
    first = int(bank_seeds(7, 0, 1)[0])
    tail = bank_seeds(7, top - 3, top)
    np.testing.assert_array_equal(tail, (first + np.arange(top - 3, top, dtype=np.int64)) % top)
    assert tail.max() < top
    z, _ = z_from_seeds(tail, 4)  # every seed is a valid official seed
    assert z.shape == (3, 4)


def test_every_class_can_be_drawn_and_comes_from_the_official_stream():
    seeds = list(range(40))
    _, classes = z_from_seeds(seeds, 4, c_dim=3)
    expected = []
    for seed in seeds:
        rs = np.random.RandomState(seed)
        rs.randn(4)
        expected.append(rs.randint(3))
    assert classes.tolist() == expected and set(expected) == {0, 1, 2}


def test_one_hot_refuses_a_class_equal_to_c_dim():
    assert one_hot(np.array([2, 0]), 3).tolist() == [[0, 0, 1], [1, 0, 0]]
    with pytest.raises(LatentError, match=r"class indices must be in \[0, 3\)"):
        one_hot(np.array([3]), 3)


def test_truncation_with_psi_above_one_extrapolates_away_from_w_avg():
    ws = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    w_avg = torch.tensor([0.5, 0.5])
    out = truncate(ws, w_avg, 1.5)
    torch.testing.assert_close(out, w_avg + 1.5 * (ws - w_avg), rtol=0, atol=1e-6)
    cut = truncate(ws, w_avg, 1.5, cutoff=1)
    torch.testing.assert_close(cut[:, 0], w_avg + 1.5 * (ws[:, 0] - w_avg), rtol=0, atol=1e-6)
    assert torch.equal(cut[:, 1], ws[:, 1])


def test_as_w_promotes_one_code_to_a_row_and_integers_to_float64():
    w = as_w(np.arange(5.0, dtype=np.float32), allow_1d=True)
    assert w.shape == (1, 5) and w.dtype == np.float32
    ints = as_w(np.arange(6).reshape(2, 3))
    assert ints.dtype == np.float64 and ints.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_as_w_finds_a_nan_past_the_first_checked_chunk_and_names_its_row():
    w = np.zeros((70_000, 2), np.float32)
    w[69_999, 1] = np.nan
    with pytest.raises(LatentError, match="first at row 69999"):
        as_w(w)


def test_sampling_restores_the_generator_training_mode(G):
    G.train()
    try:
        sample_latents(G, [0, 1], truncation_psi=0.5)
        assert G.training and G.mapping.training
    finally:
        G.eval()


def test_truncation_arguments_are_checked_and_cutoff_may_be_num_ws(G, Gc):
    with pytest.raises(LatentError, match="truncation_psi must be finite"):
        sample_latents(G, [0], truncation_psi=float("nan"))
    full = sample_latents(G, [0, 1], truncation_psi=0.5, truncation_cutoff=G.num_ws)
    torch.testing.assert_close(full.ws, sample_latents(G, [0, 1], truncation_psi=0.5).ws, rtol=0, atol=0)
    with pytest.raises(LatentError, match=r"class_idx must be in \[0, 3\)"):
        sample_latents(Gc, [0], class_idx=3)


# ---------------------------------------------------------------------- W statistics
def test_wstats_refuse_nan_samples():
    w = np.random.default_rng(0).standard_normal((20, 3))
    w[5, 1] = np.nan
    with pytest.raises(LatentError, match="NaN or inf"):
        WStats().fit(w)


def test_wstats_precision_is_the_inverse_of_the_documented_ridged_covariance():
    w = np.random.default_rng(1).standard_normal((50, 4)) * np.array([3.0, 1.0, 0.5, 0.1])
    stats = WStats(reg=0.1).fit(w)
    cov = np.cov(w, rowvar=False)
    ridged = cov + 0.1 * np.trace(cov) / 4 * np.eye(4)
    np.testing.assert_allclose(stats.precision_, np.linalg.inv(ridged), rtol=1e-9, atol=1e-12)
    d = w[:3] - w.mean(axis=0)
    expected = np.sqrt(np.einsum("ni,ij,nj->n", d, np.linalg.inv(ridged), d))
    np.testing.assert_allclose(stats.mahalanobis(w[:3]), expected, rtol=1e-9)


def test_wstats_explained_variance_is_never_negative_for_rank_deficient_w():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((40, 3))
    w = np.concatenate([x, x[:, :1] + x[:, 1:2], x[:, :1] - 2 * x[:, 2:]], axis=1)  # rank 3 in 5 dims
    stats = WStats(reg=0.0).fit(w)
    assert (stats.explained_variance_ >= 0).all()
    assert np.isfinite(stats.whitening_).all()


def test_wstats_check_quantile_and_w_dim_and_return_float32_tensors(tmp_path):
    w = np.random.default_rng(3).standard_normal((30, 3))
    stats = WStats(reg=0.25).fit(w)
    with pytest.raises(ValueError, match=r"q must be in \[0, 1\]"):
        stats.distance_quantile(1.5)
    with pytest.raises(LatentError, match="w_dim 4 but the statistics were fitted with 3"):
        stats.mahalanobis(np.zeros((2, 4)))
    out = stats.mahalanobis(torch.zeros(2, 3, dtype=torch.float64))
    assert out.dtype == torch.float32
    loaded = WStats.load(stats.save(tmp_path / "s.npz"))
    assert loaded.reg == 0.25 and loaded.n_samples_ == 30


# ---------------------------------------------------------------------- the world's factors
def test_neutral_overrides_are_physical_values_and_samples_depend_on_the_seed():
    f = neutral_factors(2, yaw=35.0, light_elevation=10.0, ambient=0.1)
    assert f[:, factor_index("yaw")].tolist() == [1.0, 1.0]
    assert f[0, factor_index("light_elevation")].item() == pytest.approx(0.0, abs=1e-7)  # middle of [-20, 40]
    assert f[0, factor_index("ambient")].item() == pytest.approx(-1.0, abs=1e-6)
    assert not torch.equal(sample_factors(4, seed=1), sample_factors(4, seed=2))
    assert torch.equal(sample_factors(4, seed=1), sample_factors(4, seed=1))


def test_hair_colour_beyond_blond_stays_blond_and_black_is_the_first_palette_entry():
    from stylegan_disentangle.synthetic.face import HAIR_PALETTE

    hair = factor_index("hair_color")
    base = neutral_factors(3)
    base[:, hair] = torch.tensor([-1.0, 1.0, 1.4])
    _, intr = render(base, 32, return_intrinsics=True)
    assert torch.equal(intr["albedo"][2], intr["albedo"][1])  # the palette position clamps at its end
    inside = intr["canonical_masks"][0, PART_NAMES.index("hair")] > 0.999
    assert inside.sum() > 10
    black = torch.tensor(HAIR_PALETTE[0]) * 2 - 1
    torch.testing.assert_close(intr["albedo"][0][:, inside], black[:, None].expand(3, int(inside.sum())),
                               rtol=0, atol=5e-3)  # ownership > 0.999: other colours weigh < 2 * 0.001 in [0, 1]


def test_albedo_stays_in_range_for_extrapolated_skin():
    f = neutral_factors(1)
    for name in ("skin_r", "skin_g", "skin_b"):
        f[:, factor_index(name)] = 1.5
    _, intr = render(f, 32, return_intrinsics=True)
    assert intr["albedo"].max() <= 1.0 and intr["albedo"].min() >= -1.0


def _canonical_centroid_y(factors: torch.Tensor, part: str, cols: slice | None = None) -> float:
    _, intr = render(factors, 64, return_intrinsics=True)
    m = intr["canonical_masks"][0, PART_NAMES.index(part)]
    if cols is not None:
        m = m[:, cols]
    ys = torch.arange(m.shape[0], dtype=m.dtype)[:, None]
    return float((m * ys).sum() / m.sum())


def _with(**physical: float) -> torch.Tensor:
    f = neutral_factors(1)
    for name, value in physical.items():
        low, high = factor_ranges()[name]
        f[:, factor_index(name)] = (value - low) / (high - low) * 2 - 1
    return f


def test_brow_raise_lifts_the_brows():
    assert _canonical_centroid_y(_with(brow_raise=1.0), "brows") < _canonical_centroid_y(_with(brow_raise=-1.0),
                                                                                        "brows") - 1


def test_a_smile_lifts_the_mouth_corners_and_a_frown_lowers_them():
    centre, corners = slice(30, 34), slice(36, 39)  # |u| < 0.06 and 0.14 < |u| < 0.24 (right half; symmetric)
    for smile, sign in ((1.0, 1), (-0.6, -1)):
        f = _with(smile=smile)
        lift = _canonical_centroid_y(f, "mouth", centre) - _canonical_centroid_y(f, "mouth", corners)
        assert sign * lift > 0.5, (smile, lift)


# ---------------------------------------------------------------------- image formation
def test_a_frontal_view_reads_every_pixel_in_place_at_its_own_depth():
    u = torch.linspace(-1, 1, 16)
    depth = (1.0 - 0.05 * torch.exp(-(u[None, :] ** 2 + u[:, None] ** 2) / 0.2))[None, None]
    maps = torch.rand(1, 2, 16, 16, generator=torch.Generator().manual_seed(0))
    warped, hit = warp_canonical(depth, torch.zeros(1, 6), maps)
    torch.testing.assert_close(warped, maps, rtol=0, atol=1e-5)
    torch.testing.assert_close(hit, depth, rtol=0, atol=1e-5)


def test_pixels_whose_warped_parts_vanish_count_as_skin():
    from stylegan_disentangle.synthetic.renderer import _image_parts

    parts = _image_parts(torch.zeros(1, len(PART_NAMES) - 1, 2, 2), torch.full((1, 1, 2, 2), 0.75))
    assert torch.equal(parts[0, :, 0, 0], torch.tensor([0.75, 0, 0, 0, 0, 0, 0.25]))


# ---------------------------------------------------------------------- the factor map
def _small_map(gain: float = 0.6, curvature: float = 0.04, w_dim: int = 24) -> FactorMap:
    rng = np.random.default_rng(5)
    directions = rng.standard_normal((F, w_dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    partners = np.roll(np.arange(F), 1)  # factor j's partner is j - 1; factor 1's partner is 0
    partners[3] = -1
    return FactorMap(directions.astype(np.float32), rng.standard_normal(w_dim).astype(np.float32),
                     rng.uniform(0.5, 2.0, F).astype(np.float32), partners.astype(np.int64), gain, curvature)


def test_the_factor_map_is_the_documented_formula():
    fmap = _small_map(gain=0.7, curvature=0.2)
    w = np.random.default_rng(6).standard_normal((5, 24))
    s = (w - fmap.mean.astype(np.float64)) @ fmap.directions.T.astype(np.float64) / fmap.sigma.astype(np.float64)
    quad = np.where(fmap.partners >= 0, s[:, np.maximum(fmap.partners, 0)] ** 2 - 1, 0.0)
    expected = np.tanh(0.7 * s + 0.2 * quad)
    got = fmap(torch.as_tensor(w, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)  # float32 projections of O(1) values


def test_the_factor_map_averages_distinct_ws_layers():
    fmap = _small_map()
    ws = torch.randn(3, 5, 24, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(fmap(ws), fmap(ws.mean(dim=1)))


def test_the_factor_map_file_keeps_gain_and_curvature_and_checks_names(tmp_path):
    fmap = _small_map(gain=0.9, curvature=0.1)
    fmap.save(tmp_path / "m.npz")
    loaded = FactorMap.load(tmp_path / "m.npz")
    assert (loaded.gain, loaded.curvature) == (0.9, pytest.approx(0.1))
    w = torch.randn(4, 24, generator=torch.Generator().manual_seed(1))
    assert torch.equal(loaded(w), fmap(w))
    with np.load(tmp_path / "m.npz") as data:
        arrays = dict(data)
    arrays["names"] = np.array(list(reversed(factor_names())))
    np.savez(tmp_path / "other.npz", **arrays)
    with pytest.raises(StyleGANDisentangleError, match="factor names do not match"):
        FactorMap.load(tmp_path / "other.npz")


# ---------------------------------------------------------------------- the oracle
def test_the_oracle_refuses_a_map_with_the_wrong_rows_or_non_finite_values():
    with pytest.raises(LatentError, match="factor map returned shape"):
        SyntheticOracle(lambda ws: torch.zeros(ws.shape[0] + 1, F))(None, torch.zeros(2, 4))
    with pytest.raises(LatentError, match="NaN or inf"):
        SyntheticOracle(lambda ws: torch.full((ws.shape[0], F), float("nan")))(None, torch.zeros(2, 4))


def test_a_physical_oracle_gives_the_same_intrinsics_as_a_normalized_one():
    def fmap(ws):
        return torch.tanh(ws[:, :1] + torch.linspace(-1, 1, F))

    ws = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    a = SyntheticOracle(fmap).intrinsics(ws, resolution=16)
    b = SyntheticOracle(fmap, physical=True).intrinsics(ws, resolution=16)
    assert torch.equal(a["light"], b["light"]) and torch.equal(a["depth"], b["depth"])


def test_a_bank_labelled_only_by_the_oracle_renders_nothing(G, tmp_path):
    oracle = SyntheticOracle(_small_map(w_dim=G.w_dim))
    bank = LatentBank.create(G, tmp_path / "b", 4, labelers=[oracle])
    assert bank.meta["render"] is False
    np.testing.assert_allclose(bank.label_matrix(factor_names()), oracle.factors(bank.ws(slice(None))).numpy(),
                               rtol=0, atol=1e-6)


def test_synthetic_factor_map_reads_the_given_file_and_names_a_missing_one(tmp_path):
    from stylegan_disentangle.synthetic.checkpoint import synthetic_factor_map

    with pytest.raises(StyleGANDisentangleError, match="missing.npz: no such file"):
        synthetic_factor_map(tmp_path / "missing.npz")
    _small_map(gain=0.85).save(tmp_path / "mine.npz")
    assert synthetic_factor_map(tmp_path / "mine.npz").gain == 0.85


# ---------------------------------------------------------------------- decomposer scoring helpers
def test_population_mean_is_zero_where_no_image_has_the_pixel():
    from stylegan_disentangle.synthetic.decomposer_eval import population_mean

    maps = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 4.0]]]])
    mask = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 0.0]]]])
    assert population_mean(maps, mask).tolist() == [[[[2.0, 0.0]]]]


def test_a_face_independent_estimate_has_zero_variation_r():
    from stylegan_disentangle.synthetic.decomposer_eval import variation_pearson

    gen = torch.Generator().manual_seed(3)
    true = torch.rand(3, 1, 6, 6, generator=gen)
    pred = torch.full_like(true, 0.1) + 0.3 * torch.rand(1, 1, 6, 6, generator=gen)  # the same map for every face
    mask = torch.ones(3, 1, 6, 6)
    assert variation_pearson(pred, true, mask).tolist() == [0.0, 0.0, 0.0]


def test_depth_relief_is_the_slope_of_the_estimate_on_the_truth():
    from stylegan_disentangle.synthetic.decomposer_eval import depth_relief

    true = 1.0 + 0.05 * torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    np.testing.assert_allclose(depth_relief(2 * true + 3, true, mask), [2.0, 2.0], rtol=1e-9)


def test_region_pearson_scores_the_hair_and_the_face_separately():
    from stylegan_disentangle.synthetic.decomposer_eval import region_pearson

    true = torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    parts = torch.zeros(1, len(PART_NAMES), 4, 4)
    parts[:, PART_NAMES.index("hair"), :2] = 1.0  # the top two rows are hair
    pred = true.clone()
    pred[..., 2:, :] = -true[..., 2:, :]  # the face proper is anti-correlated
    r = region_pearson(pred, true, torch.ones(1, 1, 4, 4), parts)
    assert r["hair"][0] == pytest.approx(1.0) and r["face"][0] == pytest.approx(-1.0)


def test_faces_from_the_generator_and_from_the_renderer_follow_their_seed_and_yaw_range(G):
    from stylegan_disentangle.synthetic.decomposer_eval import faces_from_generator, faces_from_renderer

    def fmap(ws):
        return torch.tanh(ws.mean(dim=1)[:, :1].repeat(1, F))

    _, factors = faces_from_generator(G, fmap, 3, seed=5, batch_size=2)
    torch.testing.assert_close(factors, fmap(sample_latents(G, [5, 6, 7]).ws))
    _, factors = faces_from_renderer(G, fmap, 4, seed=2, yaw_range=10.0, resolution=8)
    expected = (torch.rand([4], generator=torch.Generator().manual_seed(2)) * 2 - 1) * 10.0
    torch.testing.assert_close(to_physical(factors)[:, factor_index("yaw")], expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- the labeler protocol
def test_shrinking_averages_every_pixel_in():
    img = torch.zeros(1, 1, 8, 8)
    img[0, 0, 0, 0] = 1.0  # one bright pixel in the corner of a 4x4 block
    small = resize_images(img, 2)
    assert small.shape == (1, 1, 2, 2) and small[0, 0, 0, 0] > 0.01


def test_a_crop_past_the_right_edge_is_refused_and_a_thin_one_keeps_a_pixel():
    with pytest.raises(ValueError, match="must lie inside the image"):
        check_crop((0.0, 0.5, 0.5, 0.6))
    img = torch.arange(64.0).reshape(1, 1, 8, 8)
    assert crop_images(img, (0.5, 0.5, 0.01, 0.01)).tolist() == [[[[36.0]]]]


def test_fill_box_paints_the_mean_of_both_top_corners():
    img = torch.zeros(1, 1, 16, 16)
    img[..., :, 8:] = 1.0  # right half white: the top-right corner is 1, the top-left 0
    out = fill_box(img, (0.5, 0.25, 0.25, 0.5))
    assert out[0, 0, 10, 8].item() == 0.5 and out[0, 0, 0, 0].item() == 0.0


def test_apply_labeler_refuses_missing_images():
    with pytest.raises(LabelerError, match="needs images, got None"):
        apply_labeler(ImageStatsLabeler(names=["brightness"]), None, torch.zeros(2, 3, 4))


def test_one_label_name_given_as_a_string_is_one_name():
    assert ImageStatsLabeler(names="brightness").names == ["brightness"]


def test_get_labeler_refuses_a_spec_or_factory_that_is_not_a_labeler():
    with pytest.raises(LabelerError, match="is not callable"):
        get_labeler("stylegan_disentangle.labels.image_stats:IMAGE_STATS")

    class NamesOnly:
        names = ["x"]

    register_labeler("unchecked_not_callable", lambda: NamesOnly())
    try:
        with pytest.raises(LabelerError, match="not a labeler"):
            get_labeler("unchecked_not_callable")
    finally:
        unregister_labeler("unchecked_not_callable")


def test_asymmetry_leaves_out_the_middle_column_of_an_odd_width():
    unit = torch.zeros(3, 4, 5)
    unit[:, :, :3] = 1.0  # columns 0, 1 (left half) and 2 (the middle) white
    out = ImageStatsLabeler(names=["asymmetry_lr"])(unit[None] * 2 - 1)
    assert out["asymmetry_lr"].item() == pytest.approx(1.0, abs=1e-6)


# ---------------------------------------------------------------------- refused arguments (found by the audit, fixed)
@pytest.mark.parametrize("batch_size", [0, -1])
def test_a_bank_refuses_a_batch_size_below_one_before_writing_anything(G, tmp_path, batch_size):
    with pytest.raises(LatentError, match="batch_size"):
        LatentBank.create(G, tmp_path / "b", 4, render=False, batch_size=batch_size)
    assert not (tmp_path / "b" / "meta.json").exists()


@pytest.mark.parametrize("batch_size", [0, -1])
def test_sampling_refuses_a_batch_size_below_one(G, batch_size):
    with pytest.raises(LatentError, match="batch_size must be at least 1"):
        sample_latents(G, [0, 1, 2, 3], batch_size=batch_size)


def test_overwriting_a_conditional_bank_with_an_unconditional_one_drops_the_classes(G, Gc, tmp_path):
    LatentBank.create(Gc, tmp_path / "b", 5, render=False)
    bank = LatentBank.create(G, tmp_path / "b", 3, render=False, overwrite=True)
    assert bank.classes is None and not (tmp_path / "b" / "classes.npy").exists()
    assert LatentBank.open(tmp_path / "b").classes is None


def test_a_bank_whose_classes_file_has_other_rows_is_refused(Gc, tmp_path):
    LatentBank.create(Gc, tmp_path / "b", 5, render=False)
    np.save(tmp_path / "b" / "classes.npy", np.zeros(4, np.int64))
    with pytest.raises(LatentError, match="classes has 4 rows, meta.json says 5"):
        LatentBank.open(tmp_path / "b")


def test_a_bank_of_more_than_2_to_the_32_samples_is_refused_before_anything_is_written(G, tmp_path):
    with pytest.raises(LatentError, match=r"at most 2\*\*32 samples"):
        LatentBank.create(G, tmp_path / "b", 2**32 + 1, render=False)
    assert not (tmp_path / "b").exists()


def test_wstats_refuse_codes_without_dimensions_and_a_chunk_size_below_one():
    with pytest.raises(LatentError, match=r"non-empty \[N, w_dim\] array, got shape \(5, 0\)"):
        WStats().fit(np.zeros((5, 0)))
    with pytest.raises(LatentError, match="chunk_size must be at least 1, got 0"):
        WStats(chunk_size=0).fit(np.zeros((5, 2)))
