"""Known-answer checks of the pure-PyTorch ops (the definition of correctness for the CUDA kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from stylegan_disentangle.ops import (
    bias_act,
    conv2d_resample,
    downsample2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upsample2d,
)


def _upfirdn_numpy(x, f, up, down, pad):
    """Direct loop implementation of upsample / pad / convolve / downsample on one channel."""
    h, w = x.shape
    u = np.zeros([h * up, w * up])
    u[::up, ::up] = x
    x0, x1, y0, y1 = pad
    p = np.pad(u, [(max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))])
    p = p[max(-y0, 0): p.shape[0] - max(-y1, 0), max(-x0, 0): p.shape[1] - max(-x1, 0)]
    fh, fw = f.shape
    out = np.zeros([p.shape[0] - fh + 1, p.shape[1] - fw + 1])
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            out[i, j] = (p[i: i + fh, j: j + fw] * f[::-1, ::-1]).sum()  # true convolution
    return out[::down, ::down]


@pytest.mark.parametrize("up,down,pad", [(1, 1, (1, 2, 0, 1)), (2, 1, (2, 1, 2, 1)), (1, 2, (1, 1, 1, 1)),
                                         (2, 2, (0, 0, 3, -1)), (3, 1, (-1, 2, 1, 0))])
def test_upfirdn2d_matches_direct_loops(up, down, pad):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn([1, 1, 7, 9], generator=gen, dtype=torch.float64)
    f = torch.randn([3, 4], generator=gen, dtype=torch.float64)
    ours = upfirdn2d(x, f, up=up, down=down, padding=pad)[0, 0].numpy()
    assert np.allclose(ours, _upfirdn_numpy(x[0, 0].numpy(), f.numpy(), up, down, pad))


def test_setup_filter_is_normalized_outer_product():
    f = setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and torch.allclose(f.sum(), torch.tensor(1.0))
    assert torch.allclose(f, torch.outer(torch.tensor([1, 3, 3, 1.0]), torch.tensor([1, 3, 3, 1.0])) / 64)
    assert setup_filter([1] * 8).ndim == 1  # long 1-D filters stay separable


def test_upsample_then_downsample_preserves_constants():
    x = torch.full([2, 3, 8, 8], 0.75)
    f = setup_filter([1, 3, 3, 1])
    up = upsample2d(x, f)
    assert up.shape == (2, 3, 16, 16) and torch.allclose(up[:, :, 2:-2, 2:-2], x[:, :, :1, :1].expand(2, 3, 12, 12))
    assert torch.allclose(downsample2d(up, f)[:, :, 1:-1, 1:-1], torch.full([2, 3, 6, 6], 0.75))


def test_bias_act_formula():
    x = torch.tensor([[-2.0, 0.5], [3.0, -1.0]])
    b = torch.tensor([1.0, -1.0])
    y = bias_act(x, b, act="lrelu", clamp=1.0)
    expected = F.leaky_relu(x + b, 0.2) * np.sqrt(2)
    assert torch.allclose(y, expected.clamp(-1, 1))
    assert torch.allclose(bias_act(x, None, act="swish", gain=1.0), torch.sigmoid(x) * x)
    with pytest.raises(ValueError, match="unknown activation"):
        bias_act(x, act="gelu2")


@pytest.mark.parametrize("up,down", [(1, 1), (2, 1), (1, 2)])
def test_conv2d_resample_equals_explicit_composition(up, down):
    """up: zero-insert, pad, filter (gain 4), conv; down: pad, filter, strided conv (3x3 kernel, padding 1)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn([2, 4, 8, 8], generator=gen, dtype=torch.float64)
    w = torch.randn([5, 4, 3, 3], generator=gen, dtype=torch.float64)
    f = setup_filter([1, 3, 3, 1])
    ours = conv2d_resample(x, w, f=f, up=up, down=down, padding=1)
    if up == 2:  # filter padding (4 + 2 - 1) // 2 = 2 and (4 - 2) // 2 = 1, plus the conv's 1
        ref = F.conv2d(upfirdn2d(x, f, up=2, padding=[3, 2, 3, 2], gain=4), w)
    elif down == 2:  # filter padding (4 - 2 + 1) // 2 = 1 and (4 - 2) // 2 = 1, plus the conv's 1
        ref = F.conv2d(upfirdn2d(x, f, padding=[2, 2, 2, 2]), w, stride=2)
    else:
        ref = F.conv2d(x, w, padding=1)
    assert ours.shape == ref.shape == (2, 5, 8 * up // down, 8 * up // down)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modconv_agree(up):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn([3, 4, 8, 8], generator=gen)
    weight = torch.randn([6, 4, 3, 3], generator=gen)
    styles = torch.randn([3, 4], generator=gen)
    noise = torch.randn([3, 1, 8 * up, 8 * up], generator=gen)
    f = setup_filter([1, 3, 3, 1])
    kwargs = dict(noise=noise, up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    fused = modulated_conv2d(x, weight, styles, fused_modconv=True, **kwargs)
    unfused = modulated_conv2d(x, weight, styles, fused_modconv=False, **kwargs)
    assert torch.allclose(fused, unfused, atol=1e-5)


def test_demodulation_normalizes_output_channels():
    gen = torch.Generator().manual_seed(3)
    weight = torch.randn([6, 4, 1, 1], generator=gen)
    styles = torch.rand([2, 4], generator=gen) + 0.5
    x = torch.zeros([2, 4, 1, 1])
    x[:, 0] = 1  # one-hot input picks one input channel
    y = modulated_conv2d(x, weight, styles)
    w = weight[None, :, :, 0, 0] * styles[:, None, :]
    expected = w[:, :, 0] / w.square().sum(dim=2).add(1e-8).sqrt()
    assert torch.allclose(y[:, :, 0, 0], expected, atol=1e-6)
