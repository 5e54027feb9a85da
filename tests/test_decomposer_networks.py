"""The Unsup3D networks (official key names and shapes, the 32x32 variant) and the decomposer's output scalings."""

from __future__ import annotations

import math

import pytest
import torch

from stylegan_disentangle.errors import UsageError
from stylegan_disentangle.labels import DecomposerError, Unsup3DDecomposer, resize_images
from stylegan_disentangle.labels.decomposer import ConfNet, EDDeconv, Encoder

TINY = dict(nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)


def _tiny(image_size: int = 64, seed: int = 0, **kwargs) -> Unsup3DDecomposer:
    torch.manual_seed(seed)
    return Unsup3DDecomposer(image_size=image_size, **{**TINY, **kwargs}).eval()


def _images(n: int, size: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=gen) * 2 - 1


# ---------------------------------------------------------------------------------------------- networks
def test_official_64_nets_have_the_official_keys_and_shapes():
    # Facts of the official nets (unsup3d/networks.py): EDDeconv's last conv is network.42 (a 5x5 conv to cout),
    # its bottleneck conv network.11, the nearest upsampling sits at index 35 (no parameters); the Encoder's 1x1
    # output conv is network.10; ConfNet's full map comes from out_net1.6, its quarter map from out_net2.0.
    shapes = {k: tuple(v.shape) for k, v in EDDeconv(3, 1, zdim=256, nf=64, tanh=False).state_dict().items()}
    assert len(shapes) == 38 and list(shapes)[-1] == "network.42.weight"
    assert shapes["network.0.weight"] == (64, 3, 4, 4) and shapes["network.11.weight"] == (256, 512, 4, 4)
    assert shapes["network.13.weight"] == (256, 512, 4, 4)  # ConvTranspose2d weight is [cin, cout, k, k]
    assert shapes["network.42.weight"] == (1, 64, 5, 5) and "network.35.weight" not in shapes
    enc = {k: tuple(v.shape) for k, v in Encoder(3, 6, nf=32).state_dict().items()}
    assert list(enc) == [f"network.{i}.weight" for i in (0, 2, 4, 6, 8, 10)]
    assert enc["network.8.weight"] == (256, 256, 4, 4) and enc["network.10.weight"] == (6, 256, 1, 1)
    conf = {k: tuple(v.shape) for k, v in ConfNet(3, 2, zdim=128, nf=64).state_dict().items()}
    assert conf["network.11.weight"] == (128, 512, 4, 4) and conf["out_net1.6.weight"] == (2, 64, 5, 5)
    assert conf["out_net2.0.weight"] == (2, 128, 3, 3) and len(conf) == 26


@pytest.mark.parametrize("size", [32, 64])
def test_nets_map_images_to_the_documented_shapes(size):
    x = _images(2, size)
    assert EDDeconv(3, 3, zdim=16, nf=16, image_size=size)(x).shape == (2, 3, size, size)
    assert Encoder(3, 6, nf=8, image_size=size)(x).shape == (2, 6)
    full, quarter = ConfNet(3, 2, zdim=16, nf=16, image_size=size)(x)
    assert full.shape == (2, 2, size, size) and quarter.shape == (2, 2, size // 4, size // 4)
    assert (full > 0).all() and (quarter > 0).all()  # softplus


def test_32x32_nets_drop_the_outermost_level_and_keep_the_inner_shapes():
    # The 32x32 EDDeconv = the 64x64 one minus its first down stage (3 layers) and the nearest upsampling: the input
    # conv maps 3 -> 2*nf; every later parameter keeps its shape (indices shift by 3, then by 4 after the upsampling).
    s64 = {k: tuple(v.shape) for k, v in EDDeconv(3, 1, zdim=16, nf=16, tanh=False).state_dict().items()}
    s32 = {k: tuple(v.shape) for k, v in EDDeconv(3, 1, zdim=16, nf=16, tanh=False, image_size=32).state_dict().items()}
    assert s32["network.0.weight"] == (32, 3, 4, 4)
    assert list(s32.values())[3:] == list(s64.values())[6:]
    assert list(s32)[-1] == "network.38.weight"
    enc32 = Encoder(3, 4, nf=8, image_size=32).state_dict()
    assert list(enc32) == [f"network.{i}.weight" for i in (0, 2, 4, 6, 8)]
    conf32 = ConfNet(3, 2, zdim=16, nf=16, image_size=32).state_dict()
    assert tuple(conf32["out_net2.0.weight"].shape) == (2, 64, 3, 3)  # reads the 4*nf trunk at R/4 = 8


def test_unsupported_resolution_is_refused():
    with pytest.raises(UsageError, match="image_size"):
        EDDeconv(image_size=128)
    with pytest.raises(UsageError, match="image_size"):
        Unsup3DDecomposer(image_size=48)


def test_gradients_reach_every_net():
    dec = _tiny(32).train()
    with torch.enable_grad():
        out = dec.decompose(_images(2, 32))
        loss = sum(out[k].float().pow(2).mean() for k in ("canon_depth", "canon_albedo", "light", "view",
                                                           "conf_sigma_l1", "conf_sigma_percl"))
        loss.backward()
    for name in ("netD", "netA", "netL", "netV", "netC"):
        grads = [p.grad for p in getattr(dec, name).parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads), name


# ---------------------------------------------------------------------------------------------- scalings
def test_scale_depth_known_answers():
    dec = _tiny()
    raw = torch.zeros(2, 8, 8)
    raw[1, 3, 4] = 64.0  # one spike: mean 1, so the spike maps to tanh(63) ~ 1 and the rest to tanh(-1)
    depth = dec.scale_depth(raw)
    assert torch.allclose(depth[0, :, 2:6], torch.full((8, 4), 1.0))  # tanh(0) -> the middle of [0.9, 1.1]
    assert depth[1, 3, 4] == pytest.approx(1.1, abs=1e-6)
    t = math.tanh(-1.0)
    assert depth[1, 0, 3] == pytest.approx((1 + t) / 2 * 1.1 + (1 - t) / 2 * 0.9, abs=1e-6)
    # the official border: 2 columns on each side, all rows, at 0.7 * 1.1 + 0.3 * 0.9 = 1.04
    assert torch.all(depth[:, :, :2] == torch.tensor(1.04)) and torch.all(depth[:, :, -2:] == torch.tensor(1.04))
    assert _tiny(border_depth=1.05).scale_depth(raw)[0, 5, 0] == pytest.approx(1.05)


def test_scale_light_known_answers():
    out = _tiny().scale_light(torch.tensor([[1.0, -1.0, 0.0, 0.0], [0.0, 0.5, 1.0, -1.0]]))
    assert torch.allclose(out["light"], torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.5, 0.75, 1.0, -1.0]]))
    r3 = 1 / math.sqrt(3)
    assert torch.allclose(out["light_dir"], torch.tensor([[0.0, 0.0, 1.0], [r3, -r3, r3]]), atol=1e-7)


def test_scale_view_known_answers():
    raw = torch.tensor([[1.0, -0.5, 0.25, 1.0, -1.0, 1.0]])
    view = _tiny().scale_view(raw)
    expected = torch.tensor([[math.radians(60), math.radians(-30), math.radians(15), 0.1, -0.1, 0.0]])
    assert torch.allclose(view, expected, atol=1e-7)
    assert _tiny(z_translation_range=0.1).scale_view(raw)[0, 5] == pytest.approx(0.1)


@pytest.mark.parametrize("size", [32, 64])
def test_decompose_lands_in_the_documented_ranges(size):
    dec = _tiny(size, z_translation_range=0.1)
    with torch.no_grad():
        for p in dec.parameters():  # large weights push every tanh towards its limits
            p.mul_(3.0)
    out = dec.decompose(_images(6, size))
    n = 6
    assert out["canon_depth"].shape == (n, size, size)
    assert out["canon_depth"].min() >= 0.9 and out["canon_depth"].max() <= 1.1
    assert torch.all(out["canon_depth"][:, :, [0, 1, -2, -1]] == torch.tensor(1.04))
    assert out["canon_albedo"].shape == (n, 3, size, size) and out["canon_albedo"].abs().max() <= 1
    light = out["light"]
    assert light.shape == (n, 4) and light[:, :2].min() >= 0 and light[:, :2].max() <= 1
    assert light[:, 2:].abs().max() <= 1
    assert torch.allclose(out["light_dir"].norm(dim=1), torch.ones(n)) and (out["light_dir"][:, 2] > 0).all()
    view = out["view"]
    assert view.shape == (n, 6) and view[:, :3].abs().max() <= math.radians(60) + 1e-6
    assert view[:, 3:].abs().max() <= 0.1 + 1e-7
    assert torch.allclose(out["rotation_deg"], torch.rad2deg(view[:, :3]))
    assert out["conf_sigma_l1"].shape == (n, 2, size, size) and (out["conf_sigma_l1"] > 0).all()
    assert out["conf_sigma_percl"].shape == (n, 2, size // 4, size // 4)


def test_tz_is_zero_with_the_official_default_range():
    out = _tiny(32).decompose(_images(3, 32), parts=["view"])
    assert set(out) == {"view_raw", "view", "rotation_deg"} and torch.all(out["view"][:, 5] == 0)


def test_decompose_resizes_other_resolutions():
    dec = _tiny(32)
    img = _images(2, 64)
    out = dec.decompose(img, parts=["depth", "light"])
    ref = dec.decompose(resize_images(img, 32), parts=["depth", "light"])
    assert out["canon_depth"].shape == (2, 32, 32)
    assert torch.equal(out["canon_depth"], ref["canon_depth"]) and torch.equal(out["light"], ref["light"])


def test_decompose_refuses_non_images():
    with pytest.raises(DecomposerError, match=r"\[N, 3, H, W\].*\(2, 1, 32, 32\)"):
        _tiny(32).decompose(torch.zeros(2, 1, 32, 32))
    with pytest.raises(DecomposerError, match="unknown decomposition parts"):
        _tiny(32).decompose(_images(1, 32), parts=["shape"])


def test_absent_nets_are_none_and_fail_only_when_used():
    dec = Unsup3DDecomposer(image_size=32, nets=("netD", "netA", "netL", "netV"), **TINY)
    assert dec.netC is None and dec.present_nets == ("netD", "netA", "netL", "netV")
    out = dec.decompose(_images(1, 32))
    assert "conf_sigma_l1" not in out and "canon_depth" in out
    with pytest.raises(DecomposerError, match="netC is needed but absent"):
        dec.decompose(_images(1, 32), parts=["confidence"])
    no_view = Unsup3DDecomposer(image_size=32, nets=("netD",), **TINY)
    assert set(no_view.decompose(_images(1, 32), parts=["depth"])) == {"canon_depth_raw", "canon_depth"}
    with pytest.raises(DecomposerError, match="netA is needed but absent"):
        no_view.decompose(_images(1, 32))


def test_config_rebuilds_the_same_architecture():
    dec = _tiny(32, nets=("netD", "netL"))
    again = Unsup3DDecomposer(**dec.get_config())
    assert again.present_nets == ("netD", "netL")
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in dec.state_dict().items()}


def test_config_holds_every_constructor_argument_and_round_trips_the_scalings():
    """The trainer stores get_config() and rebuilds from it: a dropped scaling (say fov) would come back at its
    default."""
    import inspect
    import json

    params = set(inspect.signature(Unsup3DDecomposer.__init__).parameters) - {"self"}
    assert set(_tiny(32).get_config()) == params - {"input_crop", "light_mask", "light_teacher"}  # only when set
    odd = dict(min_depth=0.85, max_depth=1.15, border_depth=1.05, min_amb_light=0.1, max_amb_light=0.9,
               min_diff_light=0.05, max_diff_light=0.8, xyz_rotation_range=45.0, xy_translation_range=0.05,
               z_translation_range=0.1, fov=12.0, xy_light_range=2.0, antialias=True, input_crop=(0.1, 0.2, 0.5, 0.6),
               light_mask=(0.0, 0.0, 0.25, 1.0), light_teacher="f" * 64)
    config = _tiny(32, **odd).get_config()
    assert set(config) == params
    again = Unsup3DDecomposer(**json.loads(json.dumps(config)))  # as train_state.json stores it
    assert {k: getattr(again, k) for k in odd} == odd


def test_binomial_blur_removes_the_checkerboard_and_keeps_ramps():
    from stylegan_disentangle.labels.decomposer.model import _binomial_blur

    i, j = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    checker = ((-1.0) ** (i + j)).expand(2, 3, 8, 8)
    ramp = (0.5 * i - 0.25 * j + 1.0).expand(2, 3, 8, 8)
    assert float(_binomial_blur(checker)[..., 1:-1, 1:-1].abs().max()) < 1e-6
    assert torch.allclose(_binomial_blur(ramp)[..., 1:-1, 1:-1], ramp[..., 1:-1, 1:-1], atol=1e-6)
    assert torch.allclose(_binomial_blur(torch.full((1, 1, 4, 4), 0.3)), torch.full((1, 1, 4, 4), 0.3))


def test_antialias_filters_depth_and_albedo_and_survives_the_config(tmp_path):
    from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
    from stylegan_disentangle.labels.decomposer.model import _binomial_blur

    plain = _tiny(32)
    smooth = Unsup3DDecomposer(**{**plain.get_config(), "antialias": True})
    smooth.load_state_dict(plain.state_dict())
    x = _images(2, 32)
    a, b = plain.decompose(x), smooth.decompose(x)
    assert torch.equal(a["canon_depth_raw"], b["canon_depth_raw"])  # netD's own output is untouched
    expected = plain.scale_depth(_binomial_blur(a["canon_depth_raw"].unsqueeze(1)).squeeze(1))
    assert torch.allclose(b["canon_depth"], expected, atol=1e-6)
    assert torch.allclose(b["canon_albedo"], _binomial_blur(a["canon_albedo"]), atol=1e-6)
    assert torch.equal(a["light"], b["light"]) and not plain.antialias
    # a saved decomposer with its settings beside it (as the trainer writes them) loads with the filter on
    import json

    smooth.save(tmp_path / "checkpoint.pth")
    (tmp_path / "train_state.json").write_text(json.dumps({"config": {"decomposer": smooth.get_config()}}))
    assert load_decomposer(tmp_path / "checkpoint.pth").antialias


@pytest.mark.parametrize("arg, value, words", [
    ("nf", 20, r"nf=20: netD's GroupNorm .* multiple of 16"),
    ("nf_albedo", 8, r"nf_albedo=8: netA's GroupNorm .* multiple of 16"),
    ("nf_conf", 24, r"nf_conf=24: netC's GroupNorm .* multiple of 16"),
    ("nf", 0, r"nf \(netD's width\) must be a positive integer, got 0"),
    ("zdim", -1, r"zdim \(netD's bottleneck\) must be a positive integer"),
    ("nf_light", 0, r"nf_light \(netL's width\) must be a positive integer"),
])
def test_sizes_the_nets_cannot_have_are_refused_with_the_valid_values(arg, value, words):
    with pytest.raises(DecomposerError, match=words):
        Unsup3DDecomposer(image_size=32, **{**TINY, arg: value})
    # only the nets that are built are checked: a width for an absent net is no error
    absent = {"nf": "netD", "nf_albedo": "netA", "nf_conf": "netC", "zdim": "netD", "nf_light": "netL"}[arg]
    nets = [n for n in ("netD", "netA", "netL", "netV", "netC") if n != absent]
    kwargs = {**TINY, arg: value, **({"nf_albedo": 16, "zdim_albedo": 16} if absent == "netD" else {})}
    assert Unsup3DDecomposer(image_size=32, nets=nets, **kwargs).present_nets == tuple(nets)
    # every multiple of 16 works (Encoders take any positive width)
    assert Unsup3DDecomposer(image_size=32, nets=("netD", "netL"), nf=48, zdim=8, nf_light=3).nf == 48
