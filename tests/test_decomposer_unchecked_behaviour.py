"""Behaviour of the decomposer's light teacher, view leak, scenes, image bank and checkpoints that the other tests
left unchecked (found by mutation testing): known answers, exact draws, refusals naming what is wrong."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import CheckpointError, StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.light_teacher import LatentLightTeacher
from stylegan_disentangle.labels.decomposer.reconstruction import renderer_for, view_degrees
from stylegan_disentangle.labels.decomposer.scenes import (
    check_albedo_step,
    light_turn_loss,
    recolour_above_hairline,
    rerender_scene,
)

TINY = dict(nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)


def _tiny(image_size: int = 32, seed: int = 0, **kwargs) -> Unsup3DDecomposer:
    torch.manual_seed(seed)
    return Unsup3DDecomposer(image_size=image_size, **{**TINY, **kwargs}).eval()


# ---------------------------------------------------------------------------------------------- light teacher
def _linear_faces(n: int = 10, dim: int = 4, seed: int = 0):
    """w [n, dim] and ambient / diffuse readings that vary with it."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(n, dim))
    dirs = {"light_ambient": rng.normal(size=dim), "light_diffuse": rng.normal(size=dim)}
    readings = {"light_ambient": 0.4 + 0.05 * w @ dirs["light_ambient"] + 0.01 * rng.normal(size=n),
                "light_diffuse": 0.6 - 0.03 * w @ dirs["light_diffuse"] + 0.01 * rng.normal(size=n)}
    return w, dirs, readings


def test_the_teacher_fit_needs_three_faces_and_one_reading_per_face():
    w, dirs, readings = _linear_faces()
    teacher = LatentLightTeacher(dirs)
    with pytest.raises(StyleGANDisentangleError, match=r">= 3 faces.*missing \[\], 2 faces"):
        teacher.fit(w[:2], {k: v[:2] for k, v in readings.items()})
    assert teacher.fit(w[:3], {k: v[:3] for k, v in readings.items()}).names_ == ["light_ambient", "light_diffuse"]
    with pytest.raises(StyleGANDisentangleError, match=r"one per face \(10\)"):
        teacher.fit(w, {k: v[:7] for k, v in readings.items()})


def test_the_teacher_loss_is_the_mean_square_gap_in_units_of_the_readings_spread():
    """reading_std_ is the readings' (population) standard deviation, and the loss sums over the labels the mean of
    (gap / std)^2: gaps of different sizes per face tell a mean square from a mean absolute gap."""
    w, dirs, readings = _linear_faces()
    teacher = LatentLightTeacher(dirs).fit(w, readings)
    std = np.array([np.std(readings["light_ambient"]), np.std(readings["light_diffuse"])])
    np.testing.assert_allclose(teacher.reading_std_, std, rtol=1e-12)
    assert std.max() < 0.5  # a spread far from 1, so that a loss in raw units would differ
    wt = torch.from_numpy(w).float()
    target = teacher.predict(wt)
    gap_a = torch.linspace(-0.02, 0.05, len(w))
    gap_d = torch.linspace(0.03, -0.01, len(w))
    light = torch.stack([target["light_ambient"] + gap_a, target["light_diffuse"] + gap_d,
                         torch.full((len(w),), 0.2), torch.full((len(w),), -0.1)], 1)
    want = float((gap_a.double() ** 2).mean()) / std[0] ** 2 + float((gap_d.double() ** 2).mean()) / std[1] ** 2
    # float32 light and predictions: the gaps are exact to ~1e-7 of values ~1, i.e. ~1e-5 relative
    assert float(teacher.loss(light, wt)) == pytest.approx(want, rel=1e-4)


def test_the_teachers_fingerprint_names_its_labels():
    """The same vector taught as another label is another teacher: a resumed run must not accept it."""
    v = np.arange(1.0, 5.0)
    as_ambient = LatentLightTeacher({"light_ambient": v}).fingerprint()
    assert as_ambient == LatentLightTeacher({"light_ambient": 3 * v}).fingerprint()  # the length does not count
    assert as_ambient != LatentLightTeacher({"light_diffuse": v}).fingerprint()


def test_saving_a_teacher_is_atomic(tmp_path, monkeypatch):
    w, dirs, readings = _linear_faces()
    teacher = LatentLightTeacher(dirs).fit(w, readings)
    path = tmp_path / "teacher.npz"
    teacher.save(path)
    before = path.read_bytes()

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        LatentLightTeacher(dirs).fit(w, {k: 2 * v for k, v in readings.items()}).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["teacher.npz"]
    np.testing.assert_array_equal(LatentLightTeacher.load(path).slope_, teacher.slope_)


# ---------------------------------------------------------------------------------------------- scenes
def _scene_batch(n: int = 8):
    """A tiny decomposer and a batch estimate: a disc standing out of the wall, random albedo and input."""
    dec = _tiny()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    disc = ((xx ** 2 + yy ** 2) < 0.4).float()
    out = {"canon_depth": (dec.border_depth - 0.08 * disc).expand(n, 32, 32).clone(),
           "canon_albedo": torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8,
           "input": torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1,
           "view_raw": torch.zeros(n, 6), "light_raw": torch.zeros(n, 4)}
    return dec, out


def test_random_rerender_draws_its_view_and_light_as_documented_and_lights_the_wall():
    """'random': the view uniform with the rotations within `rotation_fraction`, the light uniform with (dx, dy)
    within `light_xy_fraction` (never the batch's intensities), drawn in that order; the render shown wherever it
    is valid, the wall included (no head mask), the corner colour elsewhere."""
    dec, out = _scene_batch()
    out["light_raw"] = torch.full((8, 4), 0.9)  # batch intensities that a uniform draw would never all give
    scene = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="random", light_xy_fraction=0.4,
                           rotation_fraction=0.25)
    gen = torch.Generator().manual_seed(3)
    view_raw = torch.rand([8, 6], generator=gen) * 2 - 1
    view_raw[:, :3] *= 0.25
    light_raw = torch.rand([8, 4], generator=gen) * 2 - 1
    light_raw[:, 2:] *= 0.4
    torch.testing.assert_close(scene["view_raw"], view_raw, rtol=0, atol=0)
    torch.testing.assert_close(scene["light_raw"], light_raw, rtol=0, atol=0)
    rendered = renderer_for(dec).render(out["canon_depth"].unsqueeze(1), out["canon_albedo"],
                                        dec.scale_light(light_raw)["light"], view_degrees(dec.scale_view(view_raw)))
    x = out["input"]
    corners = torch.stack([x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]], 0).mean(0)[..., None, None]
    want = rendered["image"] * rendered["mask"] + (1 - rendered["mask"]) * corners
    assert float(rendered["mask"][:, :, :4, :4].mean()) > 0.25  # much of the wall is in view
    torch.testing.assert_close(scene["image"], want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", [32, 64])
def test_the_hairline_crosses_the_centre_at_7_to_13_rows_of_32_and_drops_up_to_8_at_the_sides(size):
    """With one gain (lo == hi) the recolouring is known per pixel: ratio = 1 - above * (1 - gain), so the logistic
    step `above` can be read back and its 0.5 crossing located to far below a pixel, per image."""
    n, scale = 400, size / 32
    albedo = torch.zeros(n, 3, size, size)
    out = recolour_above_hairline(albedo, torch.ones(n, 1, size, size), torch.Generator().manual_seed(0), (0.5, 0.5))
    above = ((1 - (out + 1)) / 0.5).double()[:, 0]  # reflectance 0.5, gain 0.5: out + 1 = 1 - 0.5 * above

    def crossing(col: int) -> np.ndarray:
        a = above[:, :, col].clamp(1e-9, 1 - 1e-9)
        row = (a - 0.5).abs().argmin(1)
        a_row = a[torch.arange(n), row]
        return (row.double() + 0.7 * torch.log(a_row / (1 - a_row))).numpy()  # centre + drop * u^2 - row = 0.7 logit

    u_mid = float(torch.linspace(-1, 1, size)[size // 2])
    mid, edge = crossing(size // 2), crossing(0)
    drop = (edge - mid) / (1 - u_mid ** 2)
    centre = mid - drop * u_mid ** 2
    assert centre.min() >= 7 * scale - 1e-3 and centre.max() <= 13 * scale + 1e-3
    assert centre.min() < 7.3 * scale and centre.max() > 12.7 * scale  # 400 uniform draws cover the range
    assert drop.min() >= -1e-3 and drop.max() <= 8 * scale + 1e-3 and drop.max() > 7.5 * scale


def test_recolouring_clips_the_reflectance_to_one():
    albedo = torch.full((2, 3, 32, 32), 0.6)  # reflectance 0.8
    head = torch.ones(2, 1, 32, 32)
    bright = recolour_above_hairline(albedo, head, torch.Generator().manual_seed(0), (2.0, 2.0))
    assert float(bright.max()) == 1.0 and torch.equal(bright[:, :, 0], torch.ones(2, 3, 32))  # 1.6 clipped to 1
    torch.testing.assert_close(bright[:, :, -1], albedo[:, :, -1], rtol=0, atol=1e-6)  # the chin: below the line
    dark = recolour_above_hairline(albedo, head, torch.Generator().manual_seed(0), (0.5, 0.5))
    # the crown: 0.8 * 0.5 = 0.4 -> -0.2, up to the step's tail (sigmoid(7 / 0.7) = 1 - 4.5e-5)
    torch.testing.assert_close(dark[:, :, 0, 16], torch.full((2, 3), -0.2), rtol=0, atol=1e-4)


def test_check_albedo_step_takes_an_ordered_positive_pair():
    assert check_albedo_step(None) is None
    assert check_albedo_step(["0.5", 1]) == (0.5, 1.0)
    assert check_albedo_step((0.7, 0.7)) == (0.7, 0.7)
    for bad in ((1.2, 0.5), (0.0, 1.0), (-1.0, 1.0), (0.5, math.inf)):
        with pytest.raises(StyleGANDisentangleError, match="0 < low <= high"):
            check_albedo_step(bad)
    with pytest.raises(StyleGANDisentangleError, match=r"\(low, high\) gain pair"):
        check_albedo_step((0.5,))


def test_light_turn_loss_is_the_mean_absolute_gap_of_netLs_raw_reading():
    dec = _tiny()
    img = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        reading = dec.decompose(img, parts=["light"])["light_raw"]
        gap = torch.linspace(-0.3, 0.1, 16).view(4, 4)  # mixed signs and sizes: |gap| and gap^2 means differ
        loss = light_turn_loss(dec, img, reading + gap)
    assert float(loss) == pytest.approx(float(gap.abs().mean()), rel=1e-5)  # float32 differences of values < 1


# ---------------------------------------------------------------------------------------------- image bank
@pytest.fixture(scope="module")
def tiny_G():
    """A 16-px generator whose noise inputs matter (perturbed noise strengths), unconditional."""
    from tests.helpers import tiny_networks

    return tiny_networks("skip16")["G"]


def _chunk_latents(G, seed: int, chunk: int, n: int, truncation_psi: float = 1.0):
    """The first n z of a bank chunk (its documented seed) and their ws."""
    from stylegan_disentangle.labels.decomposer.image_bank import CHUNK

    z = torch.randn([CHUNK, G.z_dim], generator=torch.Generator().manual_seed(seed * 1_000_003 + chunk))[:n]
    with torch.no_grad():
        return z, G.mapping(z, torch.zeros([n, 0]), truncation_psi=truncation_psi)


def _uint8(img: torch.Tensor) -> np.ndarray:
    return ((img.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def test_bank_images_use_the_constant_noise_and_batches_read_both_arrays(tiny_G, tmp_path):
    from stylegan_disentangle.labels.decomposer.image_bank import ImageBank

    G = tiny_G
    bank = ImageBank.open_or_build(G, tmp_path, 5, 16, seed=3, progress=False)
    _, ws = _chunk_latents(G, 3, 0, 5)
    with torch.no_grad():
        const = _uint8(G.synthesis(ws, noise_mode="const"))
        other = [_uint8(G.synthesis(ws, noise_mode="random")) for _ in range(2)]
    stored = np.array(bank.images).astype(np.int16)
    assert np.abs(stored - const).max() <= 1  # the same pixels, up to float noise across batch sizes
    assert all(np.abs(stored - o).max() > 3 for o in other)  # this generator's noise shows
    images, twins, w = bank.batch(torch.Generator().manual_seed(0), 6)
    idx = np.sort(torch.randint(0, 5, [6], generator=torch.Generator().manual_seed(0)).numpy())
    # uint8 levels back to [-1, 1]: level / 127.5 - 1 (levels 0 and 255 are exactly -1 and 1)
    torch.testing.assert_close(images, torch.from_numpy(np.array(bank.images)[idx]).float() / 127.5 - 1, rtol=0,
                               atol=1e-7)
    torch.testing.assert_close(twins, torch.from_numpy(np.array(bank.jitter)[idx]).float() / 127.5 - 1, rtol=0,
                               atol=1e-7)
    assert not torch.equal(images, twins)
    assert torch.equal(w, torch.from_numpy(np.array(bank.ws)[idx]))


def test_each_bank_chunk_has_its_own_seed_and_the_truncation_applies(tiny_G, tmp_path):
    from stylegan_disentangle.labels.decomposer.image_bank import CHUNK, ImageBank

    G = tiny_G
    bank = ImageBank.open_or_build(G, tmp_path, CHUNK + 2, 16, seed=1, truncation_psi=0.7, progress=False)
    for chunk, rows in ((0, slice(0, 2)), (1, slice(CHUNK, CHUNK + 2))):
        _, ws = _chunk_latents(G, 1, chunk, 2, truncation_psi=0.7)
        # float32 matmuls of another batch size: equal to rounding
        np.testing.assert_allclose(np.array(bank.ws[rows]), ws[:, 0].numpy(), rtol=0, atol=1e-5)
        with torch.no_grad():
            img = _uint8(G.synthesis(ws, noise_mode="const"))
        assert np.abs(np.array(bank.images[rows]).astype(np.int16) - img).max() <= 1
    _, untruncated = _chunk_latents(G, 1, 0, 2)
    assert np.abs(np.array(bank.ws[:2]) - untruncated[:, 0].numpy()).max() > 1e-2


def test_a_resumed_bank_build_generates_only_the_missing_chunks(tiny_G, tmp_path, monkeypatch):
    from stylegan_disentangle.labels.decomposer.image_bank import CHUNK, ImageBank

    real_chunk = ImageBank._chunk
    calls, died = [], []

    def dies_at_chunk_1(*args):
        calls.append(args[2])
        if args[2] == 1 and not died:
            died.append(True)
            raise KeyboardInterrupt
        return real_chunk(*args)

    monkeypatch.setattr(ImageBank, "_chunk", staticmethod(dies_at_chunk_1))
    with pytest.raises(KeyboardInterrupt):
        ImageBank.open_or_build(tiny_G, tmp_path / "b", CHUNK + 2, 16, seed=2, progress=False)
    calls.clear()
    resumed = ImageBank.open_or_build(tiny_G, tmp_path / "b", CHUNK + 2, 16, seed=2, progress=False)
    assert calls == [0, 1]  # the generator check, then chunk 1 only: chunk 0 was kept
    monkeypatch.undo()
    straight = ImageBank.open_or_build(tiny_G, tmp_path / "a", CHUNK + 2, 16, seed=2, progress=False)
    assert np.array_equal(straight.images, resumed.images) and np.array_equal(straight.ws, resumed.ws)


@pytest.mark.parametrize("size, resolution", [(0, 16), (3, 3)])
def test_a_bank_of_no_images_or_too_few_pixels_is_refused_before_any_file(tiny_G, tmp_path, size, resolution):
    from stylegan_disentangle.labels.decomposer.image_bank import ImageBank

    with pytest.raises(StyleGANDisentangleError, match=rf"size >= 1 and resolution >= 4, got {size}, {resolution}"):
        ImageBank.open_or_build(tiny_G, tmp_path / "bank", size, resolution, progress=False)
    assert not (tmp_path / "bank").exists()


def test_a_bank_keeps_the_crop_it_was_made_with(tiny_G, tmp_path):
    """crop (top, left, height, width) = the centre half: 8x8 of the 16-px images, stored at 8 px (no resize); the
    crop is one of the bank's settings, and the generator check compares cropped images."""
    from stylegan_disentangle.labels.decomposer.image_bank import ImageBank

    crop = (0.25, 0.25, 0.5, 0.5)
    bank = ImageBank.open_or_build(tiny_G, tmp_path, 3, 8, seed=0, crop=crop, progress=False)
    _, ws = _chunk_latents(tiny_G, 0, 0, 3)
    with torch.no_grad():
        img = _uint8(tiny_G.synthesis(ws, noise_mode="const")[:, :, 4:12, 4:12])
    assert np.abs(np.array(bank.images).astype(np.int16) - img).max() <= 1
    assert len(ImageBank.open_or_build(tiny_G, tmp_path, 3, 8, seed=0, crop=crop, progress=False)) == 3
    with pytest.raises(StyleGANDisentangleError, match="other settings"):
        ImageBank.open_or_build(tiny_G, tmp_path, 3, 8, seed=0, progress=False)


def test_a_bank_of_a_slightly_different_generator_is_refused(tiny_G, tmp_path):
    """The generator check allows one uint8 level (rounding), not more: a generator nudged by 1% of its weights'
    scale moves some pixels by far more than one level, but far less than the whole range."""
    import copy

    from stylegan_disentangle.labels.decomposer.image_bank import ImageBank

    ImageBank.open_or_build(tiny_G, tmp_path, 4, 16, seed=0, progress=False)
    nudged = copy.deepcopy(tiny_G)
    with torch.no_grad():
        for p in nudged.synthesis.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    with pytest.raises(StyleGANDisentangleError, match="another generator"):
        ImageBank.open_or_build(nudged, tmp_path, 4, 16, seed=0, progress=False)


# ---------------------------------------------------------------------------------------------- view leak
def test_the_view_leak_is_the_same_whatever_the_batch_size(monkeypatch):
    """The Jacobians are averaged over all the faces, every batch counted: 12 faces read in batches of 5 (5, 5, 2)
    give the Jacobians and slopes of one batch of 12, to float32 rounding of readings in degrees over 10-degree
    differences. J_R is per rendered degree: the shipped netV reads 0.5-1.2 of each (and the MIN_FOLLOW check is
    made on it, not on a multiple of it)."""
    from stylegan_disentangle.labels.decomposer import decomposer_labeler, view_leak
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G, _ = load_synthetic()
    with torch.no_grad():
        img = G(torch.randn([12, G.z_dim], generator=torch.Generator().manual_seed(3)), None, noise_mode="const")
    seen = []
    real = view_leak.leak_slopes
    monkeypatch.setattr(view_leak, "leak_slopes", lambda j_l, j_r: seen.append((j_l, j_r)) or real(j_l, j_r))
    whole = decomposer_labeler("synthetic", maps=False).view_leak(img)
    batched = decomposer_labeler("synthetic", maps=False, batch_size=5).view_leak(img)
    (j_l, j_r), (j_l5, j_r5) = seen
    np.testing.assert_allclose(j_r5, j_r, rtol=0, atol=1e-4)
    np.testing.assert_allclose(j_l5, j_l, rtol=0, atol=1e-4)
    assert np.all((np.diag(j_r) > 0.5) & (np.diag(j_r) < 1.2)), j_r
    for light, slopes in whole.items():
        for rot, slope in slopes.items():
            assert batched[light][rot] == pytest.approx(slope, abs=1e-4), (light, rot)


# ---------------------------------------------------------------------------------------------- checkpoints
def test_a_known_generator_alone_is_recorded_in_the_checkpoint(tmp_path):
    from stylegan_disentangle.labels import load_unsup3d
    from stylegan_disentangle.labels.decomposer import read_unsup3d_checkpoint

    dec = _tiny()  # the official scalings: no settings to record, only the generator
    dec.trained_on = "ab" * 32
    path = dec.save(tmp_path / "dec.pth")
    assert read_unsup3d_checkpoint(path)["stylegan_disentangle"] == {"settings": {}, "trained_on": "ab" * 32}
    assert load_unsup3d(path).trained_on == "ab" * 32


def _save_with_record(path, record):
    dec = _tiny()
    torch.save({**{name: getattr(dec, name).state_dict() for name in dec.present_nets}, "epoch": 0,
                "stylegan_disentangle": record}, path)


def test_a_settings_record_cannot_override_the_shapes_and_may_omit_its_settings(tmp_path):
    from stylegan_disentangle.labels import load_unsup3d

    _save_with_record(tmp_path / "sizes.pth", {"settings": {"nf": 999, "nets": ["netD"], "fov": 12.0}})
    dec = load_unsup3d(tmp_path / "sizes.pth")
    assert (dec.nf, dec.fov) == (16, 12.0) and dec.present_nets == ("netD", "netA", "netL", "netV", "netC")
    _save_with_record(tmp_path / "gen.pth", {"trained_on": "f" * 64})
    dec = load_unsup3d(tmp_path / "gen.pth")
    assert dec.trained_on == "f" * 64 and dec.get_config() == _tiny().get_config()


def test_a_file_without_netD_takes_its_depth_sizes_from_netA(tmp_path):
    """nf / zdim default to netA's when netD is absent: the config describes the nets the file has."""
    from stylegan_disentangle.labels import load_unsup3d
    from stylegan_disentangle.labels.decomposer import infer_unsup3d_sizes

    dec = _tiny()
    torch.save({"netA": dec.netA.state_dict(), "netL": dec.netL.state_dict()}, tmp_path / "albedo.pth")
    loaded = load_unsup3d(tmp_path / "albedo.pth")
    assert (loaded.nf, loaded.zdim, loaded.nf_albedo, loaded.zdim_albedo) == (16, 16, 16, 16)
    assert infer_unsup3d_sizes({"netA": dec.netA.state_dict()})["zdim"] == 16


def test_a_file_naming_any_foreign_global_is_refused_not_stood_in_for(tmp_path):
    """Only `unsup3d.*` classes get inert stand-ins; an ordinary library class in the file is refused by name."""
    import argparse

    from stylegan_disentangle.labels.decomposer import read_unsup3d_checkpoint

    dec = _tiny()
    torch.save({"netD": dec.netD.state_dict(), "cfgs": argparse.Namespace(lr=1e-4)}, tmp_path / "ns.pth")
    with pytest.raises(CheckpointError, match=r"ns\.pth: refusing to load: .*global argparse\.Namespace"):
        read_unsup3d_checkpoint(tmp_path / "ns.pth")


def test_a_teacher_refuses_mismatched_lengths_by_name_not_with_a_numpy_error():
    """Directions of different lengths, readings of different lengths per label, and a w of another width are
    each named as the teacher's error (numpy's stacking and broadcasting errors came first before)."""
    w, dirs, readings = _linear_faces()
    with pytest.raises(StyleGANDisentangleError, match=r"one length; got lengths \{'light_ambient': 4, "
                                                       r"'light_diffuse': 5\}"):
        LatentLightTeacher({"light_ambient": np.ones(4), "light_diffuse": np.ones(5)}).fingerprint()
    with pytest.raises(StyleGANDisentangleError, match=r"one per face \(10\); got \{'light_ambient': 10, "
                                                       r"'light_diffuse': 7\}"):
        LatentLightTeacher(dirs).fit(w, {"light_ambient": readings["light_ambient"],
                                         "light_diffuse": readings["light_diffuse"][:7]})
    teacher = LatentLightTeacher(dirs).fit(w, readings)
    for bad in (w[:, :3], torch.as_tensor(w[:, :3]), torch.zeros(2, 3, 5)):
        with pytest.raises(StyleGANDisentangleError, match="light teacher: w"):
            teacher.predict(bad)
    np.testing.assert_allclose(teacher.predict(torch.as_tensor(w))["light_ambient"].numpy(),
                               teacher.predict(w)["light_ambient"], rtol=1e-12)
