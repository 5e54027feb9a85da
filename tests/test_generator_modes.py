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
