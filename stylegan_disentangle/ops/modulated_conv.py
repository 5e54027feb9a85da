"""Modulated (and optionally demodulated) convolution: the core of the StyleGAN2 synthesis layer.

For sample n with styles s[n] [I] and weight w [O, I, k, k]:
    w'[n] = w * s[n]                                  (modulation, scales input channels)
    w''[n] = w'[n] / sqrt(sum_{i,kh,kw} w'[n]^2 + 1e-8)   (demodulation, per output channel)
    y[n] = conv2d_resample(x[n], w''[n]) (+ noise)
`fused=True` runs it as one grouped convolution over the whole batch; `fused=False` scales the activations before
and after a shared convolution instead (same result up to rounding, faster for large batches in fp16).
For fp16 inputs the weight and styles are pre-normalised by their max-norm to avoid overflow, as the official code does.
"""

from __future__ import annotations

import numpy as np
import torch

from .conv2d_resample import conv2d_resample


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    down: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    flip_weight: bool = True,
    fused_modconv: bool = True,
    return_dcoefs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
    """x [N, I, H, W], weight [O, I, k, k], styles [N, I], noise broadcastable to [N, O, H', W'] -> [N, O, H', W'].

    return_dcoefs=True (no noise): leave the epilogue to the caller (ops.modconv_epilogue) and return
    (y, dcoefs): the non-fused path's y is not yet demodulated and dcoefs [N, O] is the scale still owed; the
    fused path (demodulation folded into the weights) and demodulate=False return dcoefs None."""
    if return_dcoefs and noise is not None:
        raise ValueError("return_dcoefs=True leaves the noise to the caller; pass noise=None")
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    if styles.shape != (batch_size, in_channels):
        raise ValueError(f"styles must be [{batch_size}, {in_channels}], got {tuple(styles.shape)}")

    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float("inf"), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float("inf"), dim=1, keepdim=True)

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                            flip_weight=flip_weight)
        if return_dcoefs:
            return x, dcoefs
        if demodulate and noise is not None:
            return torch.addcmul(noise.to(x.dtype), x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1))
        if demodulate:
            return x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        if noise is not None:
            return x.add_(noise.to(x.dtype))
        return x

    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample(x, w.to(x.dtype), f=resample_filter, up=up, down=down, padding=padding,
                        groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if return_dcoefs:
        return x, None
    if noise is not None:
        x = x.add_(noise)
    return x
