"""CPU fast path of the synthesis network's layers: the reference math, arranged for the CPU.

SynthesisLayer (modulated 3x3 conv, optional FIR upsampling x2, noise, bias, activation, clamp):
    d[n, o] = rsqrt(sum_i s[n, i]^2 * sum_{kh, kw} w[o, i, kh, kw]^2 + 1e-8)      (demodulation as one matmul)
    y[n]    = clamp(act(g * (conv(x[n], w * s[n] * d[n]) + noise + b)), -clamp, clamp)
ToRGBLayer (modulated 1x1 conv, no demodulation): y[n] = (w * s[n]) @ x[n] + b, as one batched matmul.
upsample2d of the skip image: one depthwise transposed convolution (stride 2, the 4x4 FIR as its kernel).

How it differs from the reference ops (ops/modulated_conv.py, epilogue.py, upfirdn2d.py), all within float32
rounding of them:
- activations are channels_last: oneDNN's conv_transpose2d and depthwise FIR are 2-5x faster in it;
- batch 1: styles, demodulation and the activation gain are folded into the weights (one plain convolution);
  batch > 1: styles scale the input, one convolution with the shared weights, and the demodulation scale is
  applied to its output (a grouped convolution with per-sample weights is 2-5x slower on CPU);
- layers whose output per sample has PER_SAMPLE_MIN_OUTPUT elements or more run one sample at a time (batch-1
  arrangement; a batch of such activations streams through memory in every pass);
- the gain of a positively homogeneous activation (linear, relu, lrelu: act(g*y) = g*act(y)) is folded into the
  scale, the bias rides in the convolution (or in the FIR's depthwise convolution) when it can; the same folding
  makes FullyConnectedLayer (mapping, affines) two ops in inference (networks/layers.py);
- when nothing requires grad the epilogue works in place and what depends on the weights alone (their channels_last
  copy, sum of squares, FIR kernels) is kept between calls, keyed on the tensor's version counter and storage
  (so optimizer steps, load_state_dict and `copy_` refresh it; a write through `.data` bypasses the version
  counter: call clear_cpu_cache() after one); otherwise the same math runs out of place and uncached, so autograd
  (training, projection) goes through it too.
Used for float32 CPU tensors (not where the CUDA kernels run); `cpu_reference_path()` or the environment variable
STYLEGAN_DISENTANGLE_CPU_FAST=0 selects the reference ops instead, for comparison.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.weak import WeakIdKeyDictionary

from . import _dispatch
from .bias_act import _resolve

ENV_CPU_FAST = "STYLEGAN_DISENTANGLE_CPU_FAST"
HOMOGENEOUS_ACTIVATIONS = ("linear", "relu", "lrelu")
# Output elements per sample from which a batch runs one sample at a time (measured on 256^2 and 1024^2 networks).
PER_SAMPLE_MIN_OUTPUT = 2**18

_local = threading.local()
_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()


@contextlib.contextmanager
def cpu_reference_path() -> Iterator[None]:
    """Run the synthesis network on the reference ops in this thread (what the benchmarks compare against)."""
    previous = getattr(_local, "reference", False)
    _local.reference = True
    try:
        yield
    finally:
        _local.reference = previous


def cpu_fast_path_enabled() -> bool:
    """False inside cpu_reference_path() or when STYLEGAN_DISENTANGLE_CPU_FAST=0."""
    if getattr(_local, "reference", False):
        return False
    return os.environ.get(ENV_CPU_FAST, "1") not in ("", "0", "false", "False")


def cpu_fast_path_applies(x: torch.Tensor) -> bool:
    """Whether tensor x (a synthesis activation) takes the CPU fast path: float32, on the CPU, not where the
    compiled kernels run, and not switched off."""
    return (x.dtype == torch.float32 and x.device.type == "cpu" and not _dispatch.kernel_device(x)
            and cpu_fast_path_enabled())


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def clear_cpu_cache() -> None:
    """Forget every tensor derived from weights (needed only after writing to a weight through `.data`)."""
    _cache.clear()


def derived(t: torch.Tensor, key: str, fn):
    """fn(t), remembered while t's data is unchanged (same version counter and storage); not when autograd
    needs the graph back to t, nor for a weight made under torch.inference_mode (it has no version counter).
    What is remembered is made outside inference mode, so that a call under inference_mode leaves nothing that a
    later call with autograd could not save for backward (project's gradients to ws)."""
    if (torch.is_grad_enabled() and t.requires_grad) or torch.compiler.is_compiling() or t.is_inference():
        return fn(t)
    stamp = (t._version, t.data_ptr(), t.device)
    entry = _cache.get(t)
    if entry is None or entry[0] != stamp:
        entry = (stamp, {})
        _cache[t] = entry
    if key not in entry[1]:
        with torch.inference_mode(False), torch.no_grad():
            entry[1][key] = fn(t)
    return entry[1][key]


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """weight [O, I, kh, kw], styles [N, I] -> d [N, O] = 1 / ||w[o] * s[n]||, as the matmul s^2 @ (sum_k w^2)^T."""
    wsq = derived(weight, "sum_sq", lambda w: w.square().sum(dim=[2, 3]).t())
    return (styles.square() @ wsq + 1e-8).rsqrt()


def _up_fir_padding(kernel: int, padding: int, f: torch.Tensor) -> int | None:
    """The FIR's (symmetric) padding after conv_transpose2d(stride 2, padding 0), as conv2d_resample computes it
    for up=2; None when the layout would need asymmetric padding or cropping (then the reference path runs)."""
    fh, fw = f.shape
    p0 = padding + (fw + 1) // 2 - (kernel - 1)
    p1 = padding + (fw - 2) // 2 - (kernel - 2)
    if fh != fw or p0 != p1 or p0 < 0:
        return None
    return p0


def _fir_weight(f: torch.Tensor, channels: int, gain: float) -> torch.Tensor:
    """The depthwise conv2d weight [C, 1, fh, fw] that applies upfirdn2d's (flipped) filter f * gain."""
    w = (f.flip([0, 1]) * gain).to(torch.float32)
    return w[None, None].expand(channels, 1, *f.shape).contiguous(memory_format=torch.channels_last)


def synthesis_layer_supported(weight: torch.Tensor, up: int, padding: int, resample_filter: torch.Tensor | None,
                              flip_weight: bool) -> bool:
    """Whether synthesis_layer_cpu handles this layer configuration (else the layer uses the reference ops)."""
    kh, kw = weight.shape[2:]
    if kh != kw:
        return False
    if up == 1:
        return flip_weight or kh == 1
    return (up == 2 and not flip_weight and resample_filter is not None and resample_filter.ndim == 2
            and _up_fir_padding(kh, padding, resample_filter) is not None)


def synthesis_layer_cpu(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None,
    bias: torch.Tensor,
    up: int = 1,
    padding: int = 1,
    resample_filter: torch.Tensor | None = None,
    act: str = "lrelu",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """x [N, I, H, W] float32, weight [O, I, k, k], styles [N, I], noise broadcastable to [N, 1, H', W'] or None,
    bias [O] -> [N, O, H', W'] (channels_last), H' = H * up. Demodulated; flip_weight = (up == 1) as in the
    official SynthesisLayer (check synthesis_layer_supported first)."""
    n, channels = x.shape[0], weight.shape[0]
    if n > 1 and channels * (x.shape[2] * up) * (x.shape[3] * up) >= PER_SAMPLE_MIN_OUTPUT:
        # Large activations: one sample at a time (weights folded in, nothing extra to stream through memory).
        per_noise = noise is not None and noise.ndim == 4 and noise.shape[0] == n
        return torch.cat([
            synthesis_layer_cpu(x[i:i + 1], weight, styles[i:i + 1], noise[i:i + 1] if per_noise else noise, bias,
                                up=up, padding=padding, resample_filter=resample_filter, act=act, alpha=alpha,
                                gain=gain, clamp=clamp)
            for i in range(n)])
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    grad = needs_grad(x, weight, styles, noise, bias)
    fold = act in HOMOGENEOUS_ACTIVATIONS and gain > 0
    pre = gain if fold else 1.0
    scale = demodulation_coefficients(weight, styles)  # [N, O]
    if pre != 1:
        scale = scale * pre if grad else scale.mul_(pre)
    b = derived(bias, f"times{pre!r}", lambda t: t * pre)
    x = x.contiguous(memory_format=torch.channels_last)
    # The kernel in the layout the convolution takes, channels_last: conv2d [O, I, k, k], conv_transpose2d [I, O, k, k].
    if up == 1:
        kernel = derived(weight, "conv_cl", lambda w: w.contiguous(memory_format=torch.channels_last))
    else:
        kernel = derived(weight, "convT_cl",
                          lambda w: w.transpose(0, 1).contiguous(memory_format=torch.channels_last))
    per_sample = n == 1
    if per_sample:
        # Fold styles (input channels) and scale (output channels) into the kernel: one multiply over [A, k*k, B].
        a, b_, kh, kw = kernel.shape
        factor = (scale.reshape(-1, 1) * styles) if up == 1 else (styles.reshape(-1, 1) * scale)  # [A, B]
        kernel = (kernel.permute(0, 2, 3, 1).reshape(a, kh * kw, b_) * factor.unsqueeze(1))
        kernel = kernel.reshape(a, kh, kw, b_).permute(0, 3, 1, 2)
    else:
        x = x * styles.reshape(n, -1, 1, 1)

    if up == 1:
        y = F.conv2d(x, kernel, b if per_sample else None, padding=padding)
    else:
        fir_pad = _up_fir_padding(weight.shape[2], padding, resample_filter)
        y = F.conv_transpose2d(x, kernel, stride=2)
        fir = derived(resample_filter, f"fir{channels}", lambda f: _fir_weight(f, channels, up * up))
        y = F.conv2d(y, fir, b if per_sample else None, padding=fir_pad, groups=channels)

    if not per_sample:
        scale = scale.reshape(n, -1, 1, 1)
        b = b.reshape(1, -1, 1, 1)
        if noise is not None and (noise.ndim < 4 or noise.shape[0] == 1):
            b = b + noise * pre  # batch-shared noise: fold it into the bias map ([1, O, H', W'], 1/N of a pass)
            noise = None
        y = torch.addcmul(b, y, scale) if grad else torch.addcmul(b, y, scale, out=y)
    if noise is not None:
        noise = noise * pre if pre != 1 else noise
        y = y + noise if grad else y.add_(noise)

    if fold:
        if act == "lrelu":
            y = F.leaky_relu(y, alpha) if grad else F.leaky_relu_(y, alpha)
        elif act == "relu":
            y = F.relu(y) if grad else y.relu_()
    else:
        y = spec.func(y, alpha)
        if gain != 1:
            y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp) if grad else y.clamp_(-clamp, clamp)
    return y


def torgb_cpu(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, bias: torch.Tensor,
              clamp: float | None = None) -> torch.Tensor:
    """Modulated 1x1 conv without demodulation: x [N, I, H, W] float32, weight [O, I, 1, 1], styles [N, I]
    (weight gain included), bias [O] -> [N, O, H, W] = clamp((w * s[n]) @ x[n] + b), one batched matmul."""
    n, _, h, wd = x.shape
    out_channels = weight.shape[0]
    w = weight.reshape(1, out_channels, -1) * styles.unsqueeze(1)  # [N, O, I]
    xv = x.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1).reshape(n, h * wd, -1)
    y = torch.baddbmm(bias.reshape(1, 1, out_channels), xv, w.transpose(1, 2))  # [N, H*W, O]
    y = y.reshape(n, h, wd, out_channels).permute(0, 3, 1, 2)
    if clamp is not None and clamp >= 0:
        y = y.clamp(-clamp, clamp) if needs_grad(x, weight, styles, bias) else y.clamp_(-clamp, clamp)
    return y


def upsample2d_cpu(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor | None:
    """upsample2d(x, f) (up 2, gain 4) as one depthwise conv_transpose2d: x [N, C, H, W] -> [N, C, 2H, 2W];
    None for filters it does not handle (2-D, even and square only)."""
    if f.ndim != 2 or f.shape[0] != f.shape[1] or f.shape[0] % 2:
        return None
    channels, taps = x.shape[1], f.shape[0]
    # upfirdn2d pads the zero-inserted image by (taps // 2, taps // 2 - 1) and correlates with the flipped filter:
    # that is a transposed convolution with the unflipped filter and padding taps // 2 - 1.
    w = derived(f, f"up2_{channels}", lambda f: (f * 4)[None, None].expand(channels, 1, taps, taps).contiguous())
    return F.conv_transpose2d(x, w, stride=2, padding=taps // 2 - 1, groups=channels)
