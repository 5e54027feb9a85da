"""Execution modes of our generator agree with each other: fused / non-fused modconv, channels_last, fp16 blocks."""

from __future__ import annotations

import torch

from stylegan_disentangle.networks import Generator
from tests.helpers import perturbed

KWARGS = dict(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3, mapping_kwargs=dict(num_layers=2))


def _pair(**synthesis):
    torch.manual_seed(0)
    a = perturbed(Generator(**KWARGS, synthesis_kwargs=dict(channel_base=128, channel_max=16)), 1)
    b = Generator(**KWARGS, synthesis_kwargs=dict(channel_base=128, channel_max=16, **synthesis)).eval()
    b.load_state_dict(a.state_dict())
    return a, b


def test_fused_and_non_fused_modconv_agree():
    G, _ = _pair()
    z = torch.randn([4, 8])
    fused = G(z, None, noise_mode="const", fused_modconv=True)
    split = G(z, None, noise_mode="const", fused_modconv=False)
    assert torch.allclose(fused, split, atol=1e-5)


def test_channels_last_fp16_blocks_match_contiguous_ones():
    _, contiguous = _pair(num_fp16_res=2, conv_clamp=256)
    _, channels_last = _pair(num_fp16_res=2, conv_clamp=256, fp16_channels_last=True)
    assert channels_last.synthesis.b16.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    z = torch.randn([2, 8])
    a = contiguous(z, None, noise_mode="const")
    b = channels_last(z, None, noise_mode="const")
    assert torch.allclose(a, b, atol=2e-2)


def test_fp16_blocks_stay_close_to_fp32():
    fp32, fp16 = _pair(num_fp16_res=2, conv_clamp=256)
    z = torch.randn([2, 8])
    assert (fp16(z, None, noise_mode="const") - fp32(z, None, noise_mode="const")).abs().max() < 2e-2
    assert torch.equal(fp16(z, None, noise_mode="const", force_fp32=True), fp32(z, None, noise_mode="const"))


def test_bf16_blocks_run_in_bfloat16_close_to_fp32():
    fp32, half = _pair(num_fp16_res=2, conv_clamp=256)
    z = torch.randn([4, 8])
    seen = []
    hook = half.synthesis.b16.conv1.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    out = half(z, None, noise_mode="const", half_dtype=torch.bfloat16)
    hook.remove()
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    expected = fp32(z, None, noise_mode="const")
    fp16_err = (half(z, None, noise_mode="const") - expected).abs().max().item()
    bf16_err = (out - expected).abs().max().item()
    # bfloat16 has 3 mantissa bits fewer than float16: about 8x its rounding error, and no more.
    assert 0 < bf16_err < 12 * fp16_err and bf16_err < 0.02 * expected.abs().max().item()


def test_bf16_bias_act_rounds_once():
    from stylegan_disentangle.ops.bias_act import bias_act_ref

    x = torch.randn([4, 16, 5, 5]).to(torch.bfloat16)
    b = torch.randn([16])
    got = bias_act_ref(x, b, act="lrelu", clamp=1.5)
    want = bias_act_ref(x.float(), b, act="lrelu", clamp=1.5).to(torch.bfloat16)
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)


def test_bad_half_dtype_is_refused():
    _, half = _pair(num_fp16_res=2, conv_clamp=256)
    try:
        half(torch.randn([1, 8]), None, half_dtype=torch.float64)
    except ValueError as exc:
        assert "half_dtype must be one of" in str(exc)
    else:
        raise AssertionError("float64 half_dtype was accepted")
