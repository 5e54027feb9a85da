"""Our loader + generator + discriminator reproduce what the official implementation computed (../shared/reference)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.checkpoints import load_network_pkl, open_network_pkl

REFERENCES = ["sg2ada_skip_32", "sg2ada_resnet_cond_32", "sg2ada_orig_16", "sg3_stylegan2_32", "tf_stylegan2_32"]
FP32_TOL = 1e-4
FP16_TOL = 2e-2


def _outputs(data: dict, expected: np.lib.npyio.NpzFile) -> dict[str, torch.Tensor]:
    G, G_raw, D = data["G_ema"], data["G"], data["D"]
    z, c = torch.from_numpy(expected["z"]), torch.from_numpy(expected["c"])
    ws07 = G.mapping(z, c, truncation_psi=0.7)
    out = {
        "ws_psi1": G.mapping(z, c, truncation_psi=1),
        "ws_psi07": ws07,
        "ws_psi05_cut4": G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=4),
        "img_const_fp32": G.synthesis(ws07, noise_mode="const", force_fp32=True),
        "img_none_fp32": G.synthesis(ws07, noise_mode="none", force_fp32=True),
        "img_G_const_fp32": G_raw.synthesis(G_raw.mapping(z, c, truncation_psi=1), noise_mode="const",
                                            force_fp32=True),
        "img_const_default": G.synthesis(ws07, noise_mode="const"),
        "D_logits": D(torch.from_numpy(expected["img_const_fp32"]), c),
        "G_full_psi07_const": G(z, c, truncation_psi=0.7, noise_mode="const", force_fp32=True),
    }
    return {k: v for k, v in out.items() if k in expected.files}


@pytest.mark.parametrize("name", REFERENCES)
def test_reference_outputs_match(reference_dir, name):
    data = load_network_pkl(reference_dir / f"{name}.pkl")
    expected = np.load(reference_dir / f"{name}.expected.npz")
    outputs = _outputs(data, expected)
    assert set(outputs) == set(expected.files) - {"z", "c"}, "every expected array must be checked"
    for key, value in outputs.items():
        tol = FP16_TOL if key == "img_const_default" else FP32_TOL
        err = np.abs(value.numpy() - expected[key]).max()
        assert value.shape == expected[key].shape, key
        assert err <= tol, f"{name}: {key} differs by {err:.3g} (tolerance {tol})"


@pytest.mark.parametrize("name", REFERENCES)
def test_state_dict_keys_and_order_match_official(reference_dir, name):
    data = load_network_pkl(reference_dir / f"{name}.pkl")
    info = json.loads((reference_dir / f"{name}.json").read_text())
    for key in ("G_ema", "D"):
        assert list(data[key].state_dict()) == info["state_dict_keys"][key]
        if "param_count" in info:
            assert sum(p.numel() for p in data[key].parameters()) == info["param_count"][key]


@pytest.mark.parametrize("name", [n for n in REFERENCES if not n.startswith("tf")])
def test_constructor_kwargs_build_the_same_layout(reference_dir, name):
    """Building from the JSON's constructor arguments (either official form) gives the same state-dict layout."""
    from stylegan_disentangle.networks import Discriminator, Generator

    info = json.loads((reference_dir / f"{name}.json").read_text())
    G = Generator(**info["generator_kwargs"])
    D = Discriminator(**info["discriminator_kwargs"])
    assert list(G.state_dict()) == info["state_dict_keys"]["G_ema"]
    assert list(D.state_dict()) == info["state_dict_keys"]["D"]
    assert G.num_ws == info["num_ws"]


def test_flavours_are_detected(reference_dir):
    flavours = {name: open_network_pkl(reference_dir / f"{name}.pkl").flavor for name in REFERENCES}
    assert flavours == {"sg2ada_skip_32": "sg2ada", "sg2ada_resnet_cond_32": "sg2ada", "sg2ada_orig_16": "sg2ada",
                        "sg3_stylegan2_32": "sg3", "tf_stylegan2_32": "tf"}


def test_sg3_defaults_come_from_its_repository(reference_dir):
    G = load_network_pkl(reference_dir / "sg3_stylegan2_32.pkl")["G_ema"]
    assert G.mapping.w_avg_beta == 0.998
    assert [G.synthesis.get_submodule(f"b{r}").use_fp16 for r in (4, 8, 16, 32)] == [False, True, True, True]
    assert G.synthesis.b32.conv1.conv_clamp == 256


def test_tf_conversion_kwargs_match_official_conversion(reference_dir):
    from stylegan_disentangle.checkpoints.tf_convert import discriminator_kwargs_from_tf, generator_kwargs_from_tf
    from stylegan_disentangle.checkpoints.unpickler import restricted_load

    info = json.loads((reference_dir / "tf_stylegan2_32.json").read_text())
    with open(reference_dir / "tf_stylegan2_32.pkl", "rb") as f:
        tf_G, tf_D, _ = restricted_load(f)
    assert generator_kwargs_from_tf(tf_G.static_kwargs) == info["converted_generator_init_kwargs"]
    assert discriminator_kwargs_from_tf(tf_D.static_kwargs) == info["converted_discriminator_init_kwargs"]
