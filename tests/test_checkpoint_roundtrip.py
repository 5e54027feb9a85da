"""save_network_pkl -> load_network_pkl is exact, and TF-layout pickles written by our own helper convert exactly."""

from __future__ import annotations

import pytest
import torch

from stylegan_disentangle.checkpoints import load_network_pkl, open_network_pkl, save_network_pkl, tf_convert
from stylegan_disentangle.errors import CheckpointError
from stylegan_disentangle.networks import Generator
from tests.helpers import TINY_CONFIGS, perturbed, tiny_networks
from tests.official_fixtures import write_tf_pickle


def _assert_same_network(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for (name, ma), (_, mb) in zip(a.named_modules(), b.named_modules()):
        assert type(ma) is type(mb), name
        for attr in ("use_fp16", "conv_clamp", "fp32_on_cpu", "fused_modconv_default", "w_avg_beta", "architecture"):
            assert getattr(ma, attr, None) == getattr(mb, attr, None), f"{name}.{attr}"


@pytest.mark.parametrize("config", sorted(TINY_CONFIGS))
def test_round_trip_is_exact(tmp_path, config):
    nets = tiny_networks(config)
    path = tmp_path / "net.pkl"
    save_network_pkl(path, nets)
    loaded = load_network_pkl(path)
    for key in ("G", "G_ema", "D"):
        _assert_same_network(nets[key], loaded[key])
    assert loaded["training_set_kwargs"] == nets["training_set_kwargs"]
    G0, G1 = nets["G_ema"], loaded["G_ema"]
    z = torch.randn([2, G0.z_dim])
    c = torch.nn.functional.one_hot(torch.tensor([0, 1]), G0.c_dim).float() if G0.c_dim else None
    for kwargs in (dict(noise_mode="const"), dict(noise_mode="none", force_fp32=True)):
        assert torch.equal(G0(z, c, truncation_psi=0.7, **kwargs), G1(z, c, truncation_psi=0.7, **kwargs))


def test_written_file_has_the_official_layout(tmp_path):
    path = tmp_path / "net.pkl"
    save_network_pkl(path, tiny_networks("skip16"))
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"
    assert b"torch_utils.persistence" in raw and b"_reconstruct_persistent_obj" in raw
    assert b"_init_kwargs" in raw and b"module_src" in raw
    from stylegan_disentangle.checkpoints.unpickler import restricted_load

    with open(path, "rb") as f:
        top = restricted_load(f)
    assert list(top) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
    assert top["G_ema"].class_name == "Generator" and top["G_ema"].version == 6
    assert top["G_ema"].submodules["synthesis"].class_name == "SynthesisNetwork"


def test_sg3_flat_form_round_trips_with_its_defaults(tmp_path):
    nets = tiny_networks("sg3_flat16")
    assert nets["G_ema"].mapping.w_avg_beta == 0.998 and nets["G_ema"].synthesis.b16.use_fp16
    path = tmp_path / "sg3.pkl"
    save_network_pkl(path, nets)
    loaded = open_network_pkl(path)
    assert loaded.flavor == "sg3"
    _assert_same_network(nets["G_ema"], loaded.data["G_ema"])


def test_failed_save_leaves_no_file(tmp_path):
    path = tmp_path / "net.pkl"
    nets = tiny_networks("skip16")
    nets["training_set_kwargs"] = {"not_picklable": lambda: None}
    with pytest.raises(CheckpointError, match="not plain data"):
        save_network_pkl(path, nets)
    assert list(tmp_path.iterdir()) == []


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "net.pkl"
    save_network_pkl(path, tiny_networks("skip16", seed=1))
    before = path.read_bytes()
    bad = tiny_networks("skip16", seed=2)
    bad["extra"] = lambda: None
    with pytest.raises(CheckpointError, match="not plain data"):
        save_network_pkl(path, bad)
    assert path.read_bytes() == before


# --- TF layout: files like the official TF StyleGAN2 pickles (tests/official_fixtures.py) -----------------

G_TF_KWARGS = dict(latent_size=8, label_size=0, dlatent_size=8, resolution=16, num_channels=3, mapping_layers=2,
                  fmap_base=64, fmap_max=16, architecture="skip", truncation_psi=0.5)
D_TF_KWARGS = dict(label_size=0, resolution=16, num_channels=3, architecture="resnet", fmap_base=64, fmap_max=16,
                   mbstd_group_size=2)


def _tf_fixture(tmp_path, drop=None):
    from stylegan_disentangle.networks import Discriminator

    torch.manual_seed(0)
    G = perturbed(Generator(**tf_convert.generator_kwargs_from_tf(G_TF_KWARGS)), 1)
    D = perturbed(Discriminator(**tf_convert.discriminator_kwargs_from_tf(D_TF_KWARGS)), 2)
    path = tmp_path / "tf.pkl"
    write_tf_pickle(path, G, D, G_TF_KWARGS, D_TF_KWARGS, drop=drop)
    return path, G, D


def test_tf_layout_fixture_converts_exactly(tmp_path):
    path, G, D = _tf_fixture(tmp_path)
    loaded = open_network_pkl(path)
    assert loaded.flavor == "tf"
    _assert_same_network(G, loaded.data["G_ema"])
    _assert_same_network(G, loaded.data["G"])
    _assert_same_network(D, loaded.data["D"])
    z = torch.randn([4, 8])
    img = G(z, None, noise_mode="const")
    assert torch.equal(img, loaded.data["G_ema"](z, None, noise_mode="const"))
    assert torch.equal(D(img, None), loaded.data["D"](img, None))


def test_tf_pickle_with_a_missing_variable_is_refused(tmp_path):
    path, _, _ = _tf_fixture(tmp_path, drop="synthesis/8x8/Conv1/weight")
    with pytest.raises(CheckpointError, match=r"tf\.pkl: TF generator: variable synthesis/8x8/Conv1/weight"):
        load_network_pkl(path)
