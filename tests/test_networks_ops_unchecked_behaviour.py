"""Behaviour of the networks, the CPU paths of the ops and the small utilities that no other test pins down (found by
mutation testing, log in mutation_log_A.md): each test fails when the check, gain or rule it names is dropped or
bent.

Tolerances: float32 results are compared with `_close`, whose bound is a few ulps of the largest magnitude times the
number of terms summed (each product rounds to within eps32 of itself and a sum of K terms adds at most K * eps32 of
the largest partial sum); float64 known answers use 1e-12. A mutant moves the results by orders of magnitude more.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.networks import (
    Conv2dLayer,
    Discriminator,
    DiscriminatorBlock,
    FullyConnectedLayer,
    Generator,
    MappingNetwork,
    MinibatchStdLayer,
    SynthesisBlock,
    SynthesisLayer,
    SynthesisNetwork,
    ToRGBLayer,
)
from stylegan_disentangle.networks import synthesis as synthesis_module
from stylegan_disentangle.ops import (
    _dispatch,
    bias_act,
    conv2d_resample,
    cpu_reference_path,
    cpu_synthesis,
    cuda_build,
    downsample2d,
    filter2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
)
from stylegan_disentangle.utils.atomic import atomic_write
from stylegan_disentangle.utils.images import image_files, image_grid, load_images, save_png, to_uint8
from tests.helpers import TINY_CONFIGS, perturbed

EPS32 = torch.finfo(torch.float32).eps


def _close(got: torch.Tensor, expected: torch.Tensor, terms: int = 1) -> bool:
    """|got - expected| within float32 rounding of a sum of `terms` products, relative to the largest magnitude."""
    bound = 4 * (terms + 1) * EPS32 * max(expected.abs().max().item(), 1.0)
    return got.shape == expected.shape and (got.double() - expected.double()).abs().max().item() <= bound


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _tiny_mapping(**kwargs) -> MappingNetwork:
    torch.manual_seed(0)
    args = dict(z_dim=8, c_dim=0, w_dim=8, num_ws=3, num_layers=2) | kwargs
    return perturbed(MappingNetwork(**args), 1)


# --- networks/checks.py ---------------------------------------------------------------------------------------------

def test_latents_with_an_extra_trailing_axis_are_refused_by_shape():
    """Only the declared dims are compared pairwise; the number of dims must match too ([N, z_dim, 1] is no z)."""
    mapping = _tiny_mapping()
    with pytest.raises(LatentError, match=r"z must have shape \[N, 8\], got \[2, 8, 1\]"):
        mapping(torch.zeros([2, 8, 1]), None)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
def test_infinite_latents_are_refused_like_nan(bad):
    mapping = _tiny_mapping()
    z = torch.zeros([2, 8])
    z[1, 3] = bad
    with pytest.raises(LatentError, match="z contains NaN or inf values"):
        mapping(z, None)


# --- networks/mapping.py --------------------------------------------------------------------------------------------

def test_w_avg_moves_by_one_minus_beta_towards_the_batch_mean_in_training():
    """w_avg <- beta * w_avg + (1 - beta) * mean_n(w_n), the official exponential moving average."""
    mapping = _tiny_mapping(w_avg_beta=0.9)
    z = torch.randn([5, 8], generator=_gen(0))
    before = mapping.w_avg.clone()
    w = mapping(z, None)[:, 0]
    assert torch.equal(mapping.w_avg, before)  # eval mode: no update
    mapping.train()
    mapping(z, None)
    expected = 0.9 * before.double() + 0.1 * w.double().mean(dim=0)
    assert _close(mapping.w_avg, expected, terms=5)
    assert (mapping.w_avg - before).abs().max() > 1e-3


def test_skip_w_avg_update_keeps_w_avg_in_training_mode():
    mapping = _tiny_mapping().train()
    before = mapping.w_avg.clone()
    mapping(torch.randn([4, 8], generator=_gen(1)), None, skip_w_avg_update=True)
    assert torch.equal(mapping.w_avg, before)
    mapping(torch.randn([4, 8], generator=_gen(1)), None)
    assert not torch.equal(mapping.w_avg, before)


def test_a_label_batch_of_another_size_than_z_is_a_latent_error():
    torch.manual_seed(0)
    mapping = MappingNetwork(z_dim=4, c_dim=3, w_dim=4, num_ws=2, num_layers=1).eval()
    with pytest.raises(LatentError, match=r"c must have shape \[4, 3\], got \[1, 3\]"):
        mapping(torch.zeros([4, 4]), torch.eye(3)[:1])


def test_truncation_without_w_avg_is_a_value_error_naming_w_avg_beta():
    mapping = _tiny_mapping(w_avg_beta=None)
    z = torch.zeros([1, 8])
    assert mapping(z, None).shape == (1, 3, 8)
    with pytest.raises(ValueError, match="w_avg_beta=None"):
        mapping(z, None, truncation_psi=0.5)


# --- networks/layers.py ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("activation", ["linear", "lrelu", "tanh"])
def test_fully_connected_layer_applies_lr_multiplier_to_weight_and_bias_on_every_path(activation):
    """y = act(x @ (W * lr / sqrt(in)).T + b * lr) * gain, whether it runs the CPU inference path (no grad) or the
    autograd path (a parameter requiring grad)."""
    torch.manual_seed(0)
    layer = FullyConnectedLayer(6, 4, activation=activation, lr_multiplier=0.25, bias_init=0.5)
    with torch.no_grad():
        layer.bias.add_(torch.randn([4], generator=_gen(2)))
    x = torch.randn([3, 6], generator=_gen(3))
    pre = x.double() @ (layer.weight.double() * 0.25 / math.sqrt(6)).T + layer.bias.double() * 0.25
    expected = {"linear": pre, "lrelu": F.leaky_relu(pre, 0.2) * math.sqrt(2), "tanh": torch.tanh(pre)}[activation]
    inference = layer(x)
    with torch.enable_grad():
        training = layer(x)
        assert training.requires_grad
    assert _close(inference, expected, terms=7) and _close(training.detach(), expected, terms=7)


def test_upsampling_conv2d_layer_is_a_true_convolution_of_the_upsampled_input():
    """Conv2dLayer(up=2) = conv(upfirdn2d(x, f, up=2, gain=4), w) with the kernel flipped (true convolution), as the
    official layer's flip_weight=(up == 1) says."""
    torch.manual_seed(0)
    layer = Conv2dLayer(2, 3, kernel_size=3, up=2)
    x = torch.randn([1, 2, 5, 5], generator=_gen(4))
    w = layer.weight.double() * layer.weight_gain
    expected = F.conv2d(upfirdn2d(x.double(), setup_filter([1, 3, 3, 1]), up=2, padding=[3, 2, 3, 2], gain=4),
                        w.flip([2, 3]))
    assert expected.shape == (1, 3, 10, 10)
    assert _close(layer(x), expected, terms=16 + 18)  # 16 filter taps, then 2 * 3 * 3 kernel taps


def test_conv2d_layer_clamp_scales_with_the_gain():
    """The clamp applies to the gained activation: conv_clamp * gain (the resnet blocks pass gain = sqrt(0.5))."""
    layer = Conv2dLayer(1, 1, kernel_size=1, activation="linear", conv_clamp=4.0)
    with torch.no_grad():
        layer.weight.fill_(100.0)
    x = torch.ones([1, 1, 2, 2])
    assert torch.equal(layer(x), torch.full([1, 1, 2, 2], 4.0))
    assert torch.equal(layer(x, gain=0.5), torch.full([1, 1, 2, 2], 2.0))
    assert torch.equal(layer(-x, gain=0.25), torch.full([1, 1, 2, 2], -1.0))


def test_discriminator_freezes_exactly_its_first_freeze_layers_layers():
    """Layers with index < freeze_layers are buffers (not trained); the state dict keeps every name either way."""
    kwargs = dict(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=16)
    torch.manual_seed(0)
    free = Discriminator(**kwargs)
    torch.manual_seed(0)
    frozen = Discriminator(**kwargs, block_kwargs=dict(freeze_layers=2))
    frozen_names = {n for n, _ in free.named_parameters()} - {n for n, _ in frozen.named_parameters()}
    # b16: fromrgb (layer 0), conv0 (1), conv1 (2), skip (3)
    assert frozen_names == {"b16.fromrgb.weight", "b16.fromrgb.bias", "b16.conv0.weight", "b16.conv0.bias"}
    assert sorted(frozen.state_dict()) == sorted(free.state_dict())
    img = torch.randn([2, 3, 16, 16], generator=_gen(5))
    assert torch.equal(frozen(img, None), free(img, None))


# --- networks/synthesis.py ------------------------------------------------------------------------------------------

def _tiny_synthesis_layer(seed: int = 0, **kwargs) -> SynthesisLayer:
    torch.manual_seed(seed)
    args = dict(in_channels=3, out_channels=4, w_dim=5, resolution=6) | kwargs
    return SynthesisLayer(**args).eval()


@pytest.mark.parametrize("reference", [False, True])
def test_random_noise_is_scaled_by_noise_strength(reference):
    """noise_strength 0 (a fresh layer) adds nothing, whatever noise is drawn; strength s adds s * N(0, 1)."""
    layer = _tiny_synthesis_layer(activation="linear")
    x = torch.randn([2, 3, 6, 6], generator=_gen(6))
    w = torch.randn([2, 5], generator=_gen(7))
    with cpu_reference_path() if reference else contextlib.nullcontext():
        without = layer(x, w, noise_mode="none")
        torch.manual_seed(1)
        assert torch.equal(layer(x, w, noise_mode="random"), without)
        layer.noise_strength.fill_(0.5)
        torch.manual_seed(1)
        drawn = torch.randn([2, 1, 6, 6])
        torch.manual_seed(1)
        noisy = layer(x, w, noise_mode="random")
    assert _close(noisy, without + 0.5 * drawn, terms=27)  # fan-in 3 * 3 * 3


def test_an_unknown_noise_mode_is_refused():
    layer = _tiny_synthesis_layer()
    with pytest.raises(ValueError, match=r"noise_mode must be one of .*got 'constant'"):
        layer(torch.zeros([1, 3, 6, 6]), torch.zeros([1, 5]), noise_mode="constant")


def test_torgb_clamps_on_the_reference_path_as_on_the_fast_path():
    torch.manual_seed(0)
    torgb = ToRGBLayer(4, 3, w_dim=5, conv_clamp=0.5).eval()
    x = 10 * torch.randn([2, 4, 3, 3], generator=_gen(8))
    w = torch.randn([2, 5], generator=_gen(9))
    fast = torgb(x, w)
    with cpu_reference_path():
        reference = torgb(x, w)
    assert fast.abs().max() == 0.5 and reference.abs().max() == 0.5
    assert _close(reference, fast, terms=4)


def test_inference_only_fused_modconv_means_non_fused_in_training(monkeypatch):
    """fused_modconv_default='inference_only' (StyleGAN3 repo): grouped (fused) convolutions in eval mode only."""
    seen = []
    original = synthesis_module.modulated_conv2d

    def spy(*args, **kwargs):
        seen.append(kwargs["fused_modconv"])
        return original(*args, **kwargs)

    monkeypatch.setattr(synthesis_module, "modulated_conv2d", spy)
    torch.manual_seed(0)
    block = SynthesisBlock(0, 4, w_dim=5, resolution=4, img_channels=3, is_last=True,
                           fused_modconv_default="inference_only")
    ws = torch.randn([2, 2, 5], generator=_gen(10))
    with cpu_reference_path():
        block.train()(None, None, ws)
        assert seen == [False, False]
        seen.clear()
        block.eval()(None, None, ws)
        assert seen == [True, True]


def test_stylegan3_repo_networks_run_their_fp16_blocks_in_fp32_on_the_cpu():
    """The StyleGAN3 repo's classes (flat synthesis kwargs, fp32_on_cpu) ignore use_fp16 on the CPU: the default call
    equals force_fp32=True bit for bit (StyleGAN2-ADA's nets do run fp16 there)."""
    torch.manual_seed(0)
    G = perturbed(Generator(**TINY_CONFIGS["sg3_flat16"]), 1)
    assert G.synthesis.b16.use_fp16
    z = torch.randn([2, 8], generator=_gen(11))
    assert torch.equal(G(z, None, noise_mode="const"), G(z, None, noise_mode="const", force_fp32=True))


@pytest.mark.parametrize("resolution", [2, 12, 24])
def test_a_resolution_that_is_no_power_of_two_is_refused(resolution):
    with pytest.raises(ValueError, match=f"power of two >= 4, got {resolution}"):
        SynthesisNetwork(w_dim=4, img_resolution=resolution, img_channels=3)
    with pytest.raises(ValueError, match=f"power of two >= 4, got {resolution}"):
        Discriminator(c_dim=0, img_resolution=resolution, img_channels=3)


# --- networks/generator.py ------------------------------------------------------------------------------------------

def test_stylegan3_form_mapping_defaults_yield_to_the_callers_mapping_kwargs():
    base = dict(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    assert Generator(**base, mapping_kwargs=dict(num_layers=1)).mapping.w_avg_beta == 0.998
    assert Generator(**base, mapping_kwargs=dict(num_layers=1, w_avg_beta=0.9)).mapping.w_avg_beta == 0.9


def test_synthesis_options_in_both_forms_at_once_are_refused():
    with pytest.raises(TypeError, match="not both"):
        Generator(z_dim=4, c_dim=0, w_dim=4, img_resolution=8, img_channels=3,
                  synthesis_kwargs=dict(channel_base=64), channel_max=8)


def test_generator_call_passes_the_truncation_cutoff_to_the_mapping():
    torch.manual_seed(0)
    G = perturbed(Generator(**TINY_CONFIGS["skip16"]), 1)
    z = torch.randn([2, 8], generator=_gen(12))
    ws = G.mapping(z, None, truncation_psi=0.5, truncation_cutoff=2)
    assert torch.equal(ws[:, 2:], G.mapping(z, None)[:, 2:]) and not torch.equal(ws[:, :2], G.mapping(z, None)[:, :2])
    img = G(z, None, truncation_psi=0.5, truncation_cutoff=2, noise_mode="const")
    assert torch.equal(img, G.synthesis(ws, noise_mode="const"))


# --- networks/discriminator.py --------------------------------------------------------------------------------------

def test_a_discriminator_block_with_in_channels_other_than_zero_or_tmp_is_refused():
    with pytest.raises(ValueError, match=r"in_channels must be 0 or tmp_channels \(8\), got 4"):
        DiscriminatorBlock(4, 8, 8, resolution=8, img_channels=3, first_layer_idx=0)


def test_minibatch_std_with_fewer_samples_than_the_group_size_uses_one_group():
    """group size min(G, N): the std of each feature over the N samples, averaged over C, H, W."""
    x = torch.randn([2, 3, 4, 4], generator=_gen(13), dtype=torch.float64)
    y = MinibatchStdLayer(group_size=4)(x)
    std = (x.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
    assert y.shape == (2, 4, 4, 4) and torch.equal(y[:, :3], x)
    assert torch.allclose(y[:, 3], std.expand(2, 4, 4), atol=1e-12, rtol=0)


def test_minibatch_std_of_identical_samples_is_sqrt_of_its_epsilon():
    x = torch.randn([1, 2, 3, 3], generator=_gen(14)).repeat(4, 1, 1, 1)
    y = MinibatchStdLayer(group_size=4)(x)
    assert torch.equal(y[:, 2], torch.full([4, 3, 3], 1e-8).sqrt())


def test_discriminator_refuses_images_of_another_size_or_channel_count():
    torch.manual_seed(0)
    D = Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=64, channel_max=8)
    for shape in ([2, 3, 16, 16], [2, 1, 8, 8]):
        with pytest.raises(ValueError, match=r"img must be \[N, 3, 8, 8\], got " + re.escape(str(shape))):
            D(torch.zeros(shape), None)


def test_skip_discriminator_blocks_hand_the_downsampled_image_on():
    """architecture='skip': every block adds fromrgb(image at its resolution); the image is FIR-downsampled by 2."""
    torch.manual_seed(0)
    D = perturbed(Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture="skip", channel_base=128,
                                channel_max=16), 1)
    img = torch.randn([2, 3, 16, 16], generator=_gen(15))
    x, img8 = D.b16(None, img)
    assert x.shape == (2, 16, 8, 8) and torch.equal(img8, downsample2d(img, setup_filter([1, 3, 3, 1])))
    logits = D(img, None)
    assert logits.shape == (2, 1) and torch.isfinite(logits).all()


# --- ops/bias_act.py ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("act, formula", [
    ("linear", lambda x: x),
    ("relu", lambda x: x.clamp(min=0) * math.sqrt(2)),
    ("lrelu", lambda x: torch.where(x >= 0, x, 0.2 * x) * math.sqrt(2)),
    ("tanh", torch.tanh),
    ("sigmoid", lambda x: 1 / (1 + torch.exp(-x))),
    ("elu", lambda x: torch.where(x > 0, x, torch.exp(x) - 1)),
    ("softplus", lambda x: torch.log1p(torch.exp(x))),
    ("swish", lambda x: x / (1 + torch.exp(-x)) * math.sqrt(2)),
])
def test_each_activation_with_its_default_slope_and_gain(act, formula):
    x = torch.linspace(-3, 3, 13, dtype=torch.float64).reshape(1, 13)
    assert torch.allclose(bias_act(x, act=act), formula(x), atol=1e-12, rtol=1e-12)


def test_clamp_zero_clamps_everything_to_zero_and_a_negative_clamp_does_nothing():
    x = torch.tensor([[-2.0, 0.5, 3.0]])
    assert torch.equal(bias_act(x, clamp=0), torch.zeros([1, 3]))
    assert torch.equal(bias_act(x, clamp=-1), x) and torch.equal(bias_act(x, clamp=None), x)
    assert torch.equal(bias_act(x, clamp=1), torch.tensor([[-1.0, 0.5, 1.0]]))


@pytest.mark.parametrize("size", [1, 2])
def test_a_bias_of_another_length_than_the_channel_axis_is_refused(size):
    with pytest.raises(ValueError, match=rf"bias of shape \({size},\) does not match x.shape\[1\] = 3"):
        bias_act(torch.zeros([2, 3, 4]), torch.zeros([size]))


def test_bias_goes_along_the_given_dim():
    x = torch.zeros([2, 3, 4])
    b = torch.arange(4.0)
    assert torch.equal(bias_act(x, b, dim=2), b.expand(2, 3, 4))
    assert torch.equal(bias_act(x, b[:2], dim=0), b[:2].reshape(2, 1, 1).expand(2, 3, 4))


# --- ops/upfirdn2d.py -----------------------------------------------------------------------------------------------

def test_setup_filter_gain_is_the_overall_gain_for_separable_and_2d_filters():
    """gain is spread as gain ** (ndim / 2): a separable filter applied along both axes multiplies by gain once."""
    separable = setup_filter([1] * 8, gain=4)
    assert separable.ndim == 1 and torch.allclose(separable, torch.full([8], 0.25))
    ones = torch.ones([1, 1, 10, 10])
    assert torch.allclose(upfirdn2d(ones, separable), torch.full([1, 1, 3, 3], 4.0))
    assert torch.allclose(setup_filter([1, 3, 3, 1], gain=4).sum(), torch.tensor(4.0))


def test_filter2d_centres_an_even_filter_one_tap_before_its_middle():
    """filter2d pads by (f // 2, (f - 1) // 2): a delta at (r, c) spreads into y[r - 1 + a, c - 1 + b] = f[a, b] for
    a 4x4 filter (true convolution), and the output keeps the input's size."""
    f = torch.arange(1.0, 17.0, dtype=torch.float64).reshape(4, 4)
    x = torch.zeros([1, 1, 8, 8], dtype=torch.float64)
    x[0, 0, 3, 4] = 1
    y = filter2d(x, f)
    expected = torch.zeros([8, 8], dtype=torch.float64)
    expected[2:6, 3:7] = f
    assert torch.equal(y[0, 0], expected)


def test_a_padding_pair_is_x_then_y():
    x = torch.randn([1, 2, 5, 6], generator=_gen(16))
    f = setup_filter([1, 2, 1])
    y = upfirdn2d(x, f, padding=(1, 2))
    assert y.shape == (1, 2, 5 + 4 - 2, 6 + 2 - 2)
    assert torch.equal(y, upfirdn2d(x, f, padding=[1, 1, 2, 2]))


def test_setup_filter_flip_reverses_both_axes():
    f = setup_filter([[1, 2], [3, 4]], normalize=False, flip_filter=True)
    assert torch.equal(f, torch.tensor([[4.0, 3.0], [2.0, 1.0]]))
    assert torch.equal(setup_filter([1, 2, 5], normalize=False, flip_filter=True, separable=True),
                       torch.tensor([5.0, 2.0, 1.0]))


# --- ops/conv2d_resample.py -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kh, kw", [(1, 3), (3, 1), (3, 3)])
def test_true_convolution_flips_kernels_that_are_long_in_one_axis_only(kh, kw):
    x = torch.randn([1, 2, 6, 6], generator=_gen(17), dtype=torch.float64)
    w = torch.randn([3, 2, kh, kw], generator=_gen(18), dtype=torch.float64)
    assert torch.allclose(conv2d_resample(x, w, flip_weight=False), F.conv2d(x, w.flip([2, 3])), atol=1e-12)
    assert torch.allclose(conv2d_resample(x, w, flip_weight=True), F.conv2d(x, w), atol=1e-12)


def test_up_and_down_together_upsample_convolve_then_downsample():
    """up=2, down=2: zero-insert + FIR (gain 4), convolve, FIR + keep every 2nd pixel; the size is kept."""
    x = torch.randn([1, 2, 8, 8], generator=_gen(19), dtype=torch.float64)
    w = torch.randn([3, 2, 3, 3], generator=_gen(20), dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    got = conv2d_resample(x, w, f=f, up=2, down=2, padding=1)
    expected = upfirdn2d(F.conv2d(upfirdn2d(x, f, up=2, padding=[4, 3, 4, 3], gain=4), w), f, down=2)
    assert got.shape == expected.shape == (1, 3, 8, 8)
    assert torch.allclose(got, expected, atol=1e-12)


def test_negative_padding_crops_the_convolution_output():
    x = torch.randn([1, 2, 7, 7], generator=_gen(21), dtype=torch.float64)
    w = torch.randn([3, 2, 3, 3], generator=_gen(22), dtype=torch.float64)
    assert torch.allclose(conv2d_resample(x, w, padding=-1), F.conv2d(x, w)[:, :, 1:-1, 1:-1], atol=1e-12)


# --- ops/modulated_conv.py ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fused", [True, False])
def test_modulated_conv_without_demodulation_adds_the_noise(fused):
    """demodulate=False: y[n] = conv(x[n] * s[n], w) + noise, on the fused and the non-fused path."""
    x = torch.randn([2, 3, 5, 5], generator=_gen(23), dtype=torch.float64)
    w = torch.randn([4, 3, 3, 3], generator=_gen(24), dtype=torch.float64)
    s = torch.randn([2, 3], generator=_gen(25), dtype=torch.float64)
    noise = torch.randn([2, 1, 5, 5], generator=_gen(26), dtype=torch.float64)
    expected = F.conv2d(x * s[:, :, None, None], w, padding=1) + noise
    got = modulated_conv2d(x, w, s, noise=noise, padding=1, demodulate=False, fused_modconv=fused)
    assert torch.allclose(got, expected, atol=1e-12)


def test_modulated_conv_refuses_noise_with_return_dcoefs_and_styles_of_the_wrong_shape():
    x, w = torch.zeros([2, 3, 4, 4]), torch.zeros([4, 3, 3, 3])
    with pytest.raises(ValueError, match="pass noise=None"):
        modulated_conv2d(x, w, torch.ones([2, 3]), noise=torch.zeros([2, 1, 4, 4]), padding=1, return_dcoefs=True)
    for styles in (torch.ones([1, 3]), torch.ones([2, 4]), torch.ones([6])):
        with pytest.raises(ValueError, match=r"styles must be \[2, 3\], got " + re.escape(str(tuple(styles.shape)))):
            modulated_conv2d(x, w, styles, padding=1)


# --- ops/cpu_synthesis.py -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("batch", [1, 3])
def test_the_gain_argument_reaches_the_bias_on_the_fast_path_whatever_gain_ran_before(batch):
    """The fast path keeps gain * bias between calls; a call with another gain must not reuse the old product."""
    layer = perturbed(_tiny_synthesis_layer(), 2)
    x = torch.randn([batch, 3, 6, 6], generator=_gen(27))
    w = torch.randn([batch, 5], generator=_gen(28))
    for gain in (1.0, 0.5, 2.0):
        fast = layer(x, w, noise_mode="const", gain=gain)
        with cpu_reference_path():
            reference = layer(x, w, noise_mode="const", gain=gain)
        assert _close(fast, reference, terms=27), gain


@pytest.mark.parametrize("batch", [1, 3])
def test_a_zero_conv_clamp_zeroes_the_layer_on_both_paths(batch):
    layer = perturbed(_tiny_synthesis_layer(conv_clamp=0.0), 3)
    x = torch.randn([batch, 3, 6, 6], generator=_gen(29))
    w = torch.randn([batch, 5], generator=_gen(30))
    assert torch.equal(layer(x, w, noise_mode="const"), torch.zeros([batch, 4, 6, 6]))
    with cpu_reference_path():
        assert torch.equal(layer(x, w, noise_mode="const"), torch.zeros([batch, 4, 6, 6]))


def test_an_odd_resample_filter_gives_the_same_images_on_the_fast_path():
    """With a 3-tap filter the FIR padding after the transposed conv is asymmetric and the image upsampling is not
    a plain transposed conv: the fast path must hand those to the reference ops, not compute something else."""
    torch.manual_seed(0)
    kwargs = dict(TINY_CONFIGS["skip16"])
    kwargs["synthesis_kwargs"] = dict(kwargs["synthesis_kwargs"], resample_filter=[1, 2, 1])
    G = perturbed(Generator(**kwargs), 1)
    z = torch.randn([2, 8], generator=_gen(31))
    fast = G(z, None, noise_mode="const")
    with cpu_reference_path():
        reference = G(z, None, noise_mode="const")
    assert _close(fast, reference, terms=8 * 16 * 9)
    img = torch.randn([1, 3, 4, 4], generator=_gen(32))
    assert cpu_synthesis.upsample2d_cpu(img, setup_filter([1, 2, 1])) is None


def test_a_true_convolution_without_upsampling_is_not_claimed_by_the_fast_path():
    """synthesis_layer_cpu correlates when up == 1; a 3x3 layer asking for a true convolution is not supported."""
    weight, f = torch.zeros([4, 3, 3, 3]), setup_filter([1, 3, 3, 1])
    assert cpu_synthesis.synthesis_layer_supported(weight, 1, 1, f, flip_weight=True)
    assert not cpu_synthesis.synthesis_layer_supported(weight, 1, 1, f, flip_weight=False)
    assert cpu_synthesis.synthesis_layer_supported(weight[:, :, :1, :1], 1, 0, f, flip_weight=False)


@pytest.mark.parametrize("value, enabled", [("0", False), ("false", False), ("False", False), ("", False),
                                            ("1", True), ("yes", True)])
def test_the_cpu_fast_path_environment_switch(monkeypatch, value, enabled):
    monkeypatch.setenv(cpu_synthesis.ENV_CPU_FAST, value)
    assert cpu_synthesis.cpu_fast_path_enabled() is enabled
    assert cpu_synthesis.cpu_fast_path_applies(torch.zeros([1, 1, 2, 2])) is enabled


# --- ops/_dispatch.py -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, forced", [("1", True), ("true", True), ("yes", True), ("0", False),
                                           ("false", False), ("False", False), ("", False)])
def test_the_reference_ops_environment_switch(monkeypatch, value, forced):
    monkeypatch.setenv("STYLEGAN_DISENTANGLE_REFERENCE_OPS", value)
    assert _dispatch.reference_forced() is forced


# --- ops/cuda_build.py (pure-Python logic; nothing is compiled) -------------------------------------------------

@pytest.mark.parametrize("name", ["sgd_math.h", "sgd_types.cuh"])
def test_the_cache_key_covers_the_headers(tmp_path, name):
    src = tmp_path / "src"
    shutil.copytree(cuda_build.source_dir(), src)
    before = cuda_build.cache_key(src, archs="9.0")
    with open(src / name, "a") as f:
        f.write("\n// one more line\n")
    assert cuda_build.cache_key(src, archs="9.0") != before


# --- utils/atomic.py ------------------------------------------------------------------------------------------------

def test_atomically_written_files_get_the_usual_permissions(tmp_path):
    previous = os.umask(0o027)
    try:
        with atomic_write(tmp_path / "out.bin") as f:
            f.write(b"data")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out.bin").stat().st_mode) == 0o640
    assert (tmp_path / "out.bin").read_bytes() == b"data"


def test_atomic_write_replaces_the_directory_entry_instead_of_writing_into_the_old_file(tmp_path):
    """Someone holding the old file (here: a hard link to it) keeps the complete old content."""
    target, link = tmp_path / "out.txt", tmp_path / "old_link.txt"
    target.write_text("old")
    os.link(target, link)
    with atomic_write(target, "w") as f:
        f.write("new")
    assert target.read_text() == "new" and link.read_text() == "old"
    assert [p.name for p in sorted(tmp_path.iterdir())] == ["old_link.txt", "out.txt"]


# --- utils/images.py ------------------------------------------------------------------------------------------------

def test_to_uint8_maps_minus_one_zero_one_to_0_128_255_and_clips_outside():
    img = torch.tensor([-3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 4.0]).reshape(1, 1, 1, 7)
    # floor(x * 127.5 + 128) clipped to [0, 255]
    assert to_uint8(img).reshape(-1).tolist() == [0, 0, 64, 128, 191, 255, 255]
    assert to_uint8(img).shape == (1, 1, 7, 1) and to_uint8(img).dtype == np.uint8


def test_image_grid_fills_rows_of_ceil_sqrt_n_columns_left_to_right():
    images = np.stack([np.full([2, 2, 1], 10 * (i + 1), dtype=np.uint8) for i in range(5)])
    grid = image_grid(images, pad=1, pad_value=7)
    assert grid.shape == (2 * 3 - 1, 3 * 3 - 1, 1)  # 3 columns, 2 rows
    for i in range(5):
        r, q = divmod(i, 3)
        assert (grid[3 * r: 3 * r + 2, 3 * q: 3 * q + 2] == 10 * (i + 1)).all(), i
    assert (grid[3:5, 6:8] == 7).all() and (grid[2, :] == 7).all() and (grid[:, 2] == 7).all()
    assert image_grid(images, cols=5, pad=0).shape == (2, 10, 1)


def test_a_folder_yields_its_images_whatever_the_case_of_their_suffix(tmp_path):
    for name in ("b.png", "A.PNG", "c.JpEg"):
        save_png(np.zeros([2, 2, 3], dtype=np.uint8), tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files([tmp_path])] == ["A.PNG", "b.png", "c.JpEg"]


def test_image_helpers_refuse_bad_sizes_and_shapes(tmp_path):
    save_png(np.zeros([4, 4, 3], dtype=np.uint8), tmp_path / "a.png")
    with pytest.raises(ValueError, match="size must be >= 1, got 0"):
        load_images([tmp_path / "a.png"], 0)
    with pytest.raises(ValueError, match=r"expected images \[N, C, H, W\], got shape \(3, 4, 4\)"):
        to_uint8(torch.zeros([3, 4, 4]))


# --- refused arguments (found by the audit, fixed) --------------------------------------------------------------------

@pytest.mark.parametrize("build", [
    lambda: Conv2dLayer(2, 2, kernel_size=3, activation="gelu"),
    lambda: SynthesisLayer(2, 2, w_dim=4, resolution=4, activation="gelu"),
    lambda: Discriminator(c_dim=0, img_resolution=8, img_channels=3, block_kwargs=dict(activation="gelu")),
], ids=["Conv2dLayer", "SynthesisLayer", "Discriminator"])
def test_an_unknown_activation_of_a_convolution_is_refused_like_that_of_a_dense_layer(build):
    with pytest.raises(ValueError, match="unknown activation 'gelu'"):
        build()


@pytest.mark.parametrize("factors", [dict(up=0), dict(down=0), dict(up=(2, 0)), dict(down=(-1, 1))])
def test_upfirdn2d_refuses_a_factor_below_one(factors):
    with pytest.raises(ValueError, match="up and down must be positive"):
        upfirdn2d(torch.zeros([1, 1, 4, 4]), setup_filter([1, 3, 3, 1]), **factors)


def test_a_grid_of_no_images_is_refused_by_name():
    with pytest.raises(ValueError, match="image_grid needs at least one image"):
        image_grid(np.zeros([0, 4, 4, 3], np.uint8))
