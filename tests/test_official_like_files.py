"""Files with the traits of real official pickles load exactly: protocol 4, numpy 1.x names, numpy scalars, EasyDict
kwargs, full embedded source, augment pipes, SG3-repo kwargs, and the inert `lod` variable of TF networks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.checkpoints import load_network_pkl, open_network_pkl, save_network_pkl
from stylegan_disentangle.checkpoints.tf_convert import INERT_TF_VARIABLES
from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import CheckpointError
from stylegan_disentangle.networks import Discriminator, Generator
from tests.helpers import TINY_CONFIGS, perturbed, tiny_networks
from tests.official_fixtures import write_official_pickle, write_tf_pickle
from tests.test_checkpoint_roundtrip import D_TF_KWARGS, G_TF_KWARGS, _assert_same_network


def _tf_nets():
    from stylegan_disentangle.checkpoints import tf_convert

    torch.manual_seed(0)
    G = perturbed(Generator(**tf_convert.generator_kwargs_from_tf(G_TF_KWARGS)), 1)
    D = perturbed(Discriminator(**tf_convert.discriminator_kwargs_from_tf(D_TF_KWARGS)), 2)
    return G, D


def _same_outputs(G, G2, c=None):
    z = torch.randn([3, G.z_dim], generator=torch.Generator().manual_seed(3))
    if G.c_dim:
        c = torch.nn.functional.one_hot(torch.arange(3) % G.c_dim, G.c_dim).float()
    for kwargs in (dict(noise_mode="const"), dict(noise_mode="none", force_fp32=True)):
        assert torch.equal(G(z, c, truncation_psi=0.7, **kwargs), G2(z, c, truncation_psi=0.7, **kwargs))


# --- the fixtures really have the traits they claim ---------------------------------------------------------------
def test_tf_fixture_has_the_traits_of_official_tf_pickles(tmp_path):
    G, D = _tf_nets()
    raw = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS).read_bytes()
    assert raw[:2] == b"\x80\x04"  # protocol 4
    assert b"numpy.core.multiarray" in raw and b"numpy._core" not in raw  # numpy 1.x names only
    assert b"scalar" in raw and b"lod" in raw  # lod is a numpy scalar
    assert b"dnnlib.util" in raw and b"EasyDict" in raw and b"dnnlib.tflib.network" in raw
    assert b"class SynthesisNetwork" in raw and b"def forward" in raw  # the embedded source text


def test_official_fixture_has_the_traits_of_official_pickles(tmp_path):
    from stylegan_disentangle.checkpoints.unpickler import restricted_load

    path = write_official_pickle(tmp_path / "ada.pkl", tiny_networks("skip16"))
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"
    assert b"dnnlib.util" in raw and b"EasyDict" in raw and b"numpy.core.multiarray" in raw
    assert b"AugmentPipe" in raw and b"class SynthesisNetwork" in raw
    with open(path, "rb") as f:
        top = restricted_load(f)
    for key in ("G", "D", "G_ema"):  # every module carries the full source text
        assert all(d.module_src_len > 10_000 for _, d in top[key].walk())
    assert type(top["G_ema"].init_kwargs["mapping_kwargs"]).__name__ == "EasyDictDescription"


# --- original TF StyleGAN2 pickles ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", [2, 4])
def test_tf_pickle_with_lod_converts_exactly_and_reports_what_it_ignored(tmp_path, protocol):
    G, D = _tf_nets()
    path = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, protocol=protocol)
    loaded = open_network_pkl(path)
    assert loaded.flavor == "tf"
    for key in ("G", "G_ema"):
        _assert_same_network(G, loaded.data[key])
    _assert_same_network(D, loaded.data["D"])
    _same_outputs(G, loaded.data["G_ema"])
    assert loaded.ignored == {"G": {"lod": 0.0}, "G_ema": {"lod": 0.0}, "D": {}}


def test_info_says_which_tf_variables_were_ignored(tmp_path):
    G, D = _tf_nets()
    path = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, lod=0.0)
    result = CliRunner().invoke(main, ["info", str(path), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["flavor"] == "tf"
    assert summary["ignored_variables"] == {"G": {"lod": 0.0}, "G_ema": {"lod": 0.0}}
    text = CliRunner().invoke(main, ["info", str(path)]).output
    assert "ignored_variables" in text and "lod" in text


def test_tf_pickle_without_lod_reports_nothing_ignored(tmp_path):
    G, D = _tf_nets()
    loaded = open_network_pkl(write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, lod=None))
    assert loaded.ignored == {"G": {}, "G_ema": {}, "D": {}}
    _assert_same_network(G, loaded.data["G_ema"])


def test_training_time_lod_of_g_main_is_ignored_whatever_its_value(tmp_path):
    # G_main reads lod only for style mixing during training; the synthesis of config E/F never reads it.
    G, D = _tf_nets()
    loaded = open_network_pkl(write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, lod=2.0))
    assert loaded.ignored["G_ema"] == {"lod": 2.0}
    _same_outputs(G, loaded.data["G_ema"])


def test_unknown_tf_variable_is_still_refused(tmp_path):
    G, D = _tf_nets()
    path = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS,
                           extra={"mystery_scale": np.float32(1.5)})
    with pytest.raises(CheckpointError, match=r"tf\.pkl: TF generator: variables with no PyTorch counterpart: "
                                              r"\['mystery_scale'\]"):
        load_network_pkl(path)


def test_inert_variable_that_is_not_a_scalar_is_refused(tmp_path):
    G, D = _tf_nets()
    path = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, lod=None,
                           extra={"lod": np.zeros(3, np.float32)})
    with pytest.raises(CheckpointError, match=r"variables with no PyTorch counterpart: \['lod'\]"):
        load_network_pkl(path)
    assert "lod" in INERT_TF_VARIABLES


def test_tf_embedded_build_source_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    G, D = _tf_nets()
    path = write_tf_pickle(tmp_path / "tf.pkl", G, D, G_TF_KWARGS, D_TF_KWARGS, marker=marker)
    load_network_pkl(path)
    assert not marker.exists()


# --- StyleGAN2-ADA-pytorch and StyleGAN3-repository pickles ---------------------------------------------------------
@pytest.mark.parametrize("config", sorted(TINY_CONFIGS))
def test_official_like_pickle_loads_exactly(tmp_path, config):
    marker = tmp_path / "pwned"
    nets = tiny_networks(config)
    path = write_official_pickle(tmp_path / "net.pkl", nets, marker=marker)
    loaded = load_network_pkl(path)
    assert not marker.exists()
    for key in ("G", "G_ema", "D"):
        _assert_same_network(nets[key], loaded[key])
    _same_outputs(nets["G_ema"], loaded["G_ema"])
    kwargs = loaded["training_set_kwargs"]
    assert type(kwargs) is dict and kwargs["max_size"] == 70000 and kwargs["resolution"] == nets["G_ema"].img_resolution
    assert loaded["augment_pipe"] is not None  # kept as its description, never run


@pytest.mark.parametrize("config", sorted(TINY_CONFIGS))
def test_official_like_pickle_saved_again_loads_again(tmp_path, config):
    """A loaded official file written back with save_network_pkl (its EasyDict kwargs and augment pipe included) is
    an official-layout file that loads again to the same networks and data."""
    nets = tiny_networks(config)
    loaded = load_network_pkl(write_official_pickle(tmp_path / "net.pkl", nets))
    save_network_pkl(tmp_path / "again.pkl", loaded)
    assert b"stylegan_disentangle.checkpoints" not in (tmp_path / "again.pkl").read_bytes()  # no class of ours named
    again = load_network_pkl(tmp_path / "again.pkl")
    for key in ("G", "G_ema", "D"):
        _assert_same_network(loaded[key], again[key])
        assert type(again[key]._init_kwargs) is dict
    _same_outputs(loaded["G_ema"], again["G_ema"])
    assert again["training_set_kwargs"] == loaded["training_set_kwargs"]
    pipe, pipe_again = loaded["augment_pipe"], again["augment_pipe"]
    assert pipe_again.class_name == "AugmentPipe" and pipe_again.init_kwargs == pipe.init_kwargs
    assert torch.equal(pipe_again.state["_buffers"]["Hz_geom"], pipe.state["_buffers"]["Hz_geom"])


def test_sg3_repo_pickle_with_inference_only_fused_modconv(tmp_path):
    kwargs = dict(TINY_CONFIGS["sg3_flat16"], fused_modconv_default="inference_only")
    torch.manual_seed(0)
    nets = dict(G=perturbed(Generator(**kwargs), 1), G_ema=perturbed(Generator(**kwargs), 2),
                D=perturbed(Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128,
                                          channel_max=16), 3))
    loaded = open_network_pkl(write_official_pickle(tmp_path / "sg3.pkl", nets))
    assert loaded.flavor == "sg3"
    G = loaded.data["G_ema"]
    assert G.synthesis.b16.fused_modconv_default == "inference_only"
    _assert_same_network(nets["G_ema"], G)
    _same_outputs(nets["G_ema"], G)


def test_reference_tf_pickle_with_official_extras_gives_the_official_outputs(reference_dir, tmp_path):
    """The official TF network of ../shared/reference, re-pickled with what real TF files also carry (G_main's `lod`,
    protocol 4, numpy 1.x names, numpy scalars), still reproduces the official conversion's outputs."""
    from stylegan_disentangle.checkpoints.unpickler import restricted_load
    from tests.official_fixtures import Network, dump_official_like, easy
    from tests.test_conformance import FP32_TOL, _outputs

    with open(reference_dir / "tf_stylegan2_32.pkl", "rb") as f:
        raw = restricted_load(f)

    def rebuild(desc, top_extra=()):
        state = dict(desc.state)
        state["static_kwargs"] = easy(dict(state.get("static_kwargs", {})))
        state["variables"] = [(k, np.asarray(v)) for k, v in state.get("variables", [])] + list(top_extra)
        state["components"] = easy({k: rebuild(v) for k, v in state.get("components", {}).items()})
        return Network(state)

    lod = [("lod", np.float32(0.0))]
    path = dump_official_like(tmp_path / "tf_real.pkl", (rebuild(raw[0], lod), rebuild(raw[1]), rebuild(raw[2], lod)))
    loaded = open_network_pkl(path)
    assert loaded.ignored["G_ema"] == {"lod": 0.0} and loaded.ignored["D"] == {}
    expected = np.load(reference_dir / "tf_stylegan2_32.expected.npz")
    for key, value in _outputs(loaded.data, expected).items():
        if key in expected.files and key != "img_const_default":
            assert np.abs(value.numpy() - expected[key]).max() <= FP32_TOL, key
