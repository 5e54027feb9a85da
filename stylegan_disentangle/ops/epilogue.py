"""The epilogue of a synthesis layer's modulated convolution: demodulation scale, noise, bias, activation, clamp.

    y = bias_act(x * dcoefs[n, c] + noise, b, act, gain, clamp)

The reference runs it as the official code does, in two passes over the convolution output (addcmul or add, then
bias_act); on CUDA, in inference (nothing requires grad), one kernel (third_party/stylegan2_ops/epilogue.cu) reads
x once, sums in float32 and rounds once. STYLEGAN_DISENTANGLE_FUSED_EPILOGUE=0 turns the kernel off, so
scripts/bench_generator.py can measure what it buys.
"""

from __future__ import annotations

import os

import torch

from . import _dispatch
from .bias_act import bias_act

ENV_FUSED_EPILOGUE = "STYLEGAN_DISENTANGLE_FUSED_EPILOGUE"


def fused_epilogue_enabled() -> bool:
    """False when the user turned the one-pass epilogue kernel off (the bias_act kernel may still run)."""
    return os.environ.get(ENV_FUSED_EPILOGUE, "1") not in ("", "0", "false", "False")


def modconv_epilogue_ref(
    x: torch.Tensor,
    dcoefs: torch.Tensor | None,
    noise: torch.Tensor | None,
    b: torch.Tensor | None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """The official sequence: (x * dcoefs + noise) in x's dtype, then bias_act. May modify x in place."""
    if dcoefs is not None:
        scale = dcoefs.to(x.dtype).reshape(x.shape[0], -1, 1, 1)
        x = torch.addcmul(noise.to(x.dtype), x, scale) if noise is not None else x * scale
    elif noise is not None:
        x = x.add_(noise)
    return bias_act(x, b.to(x.dtype) if b is not None else None, act=act, alpha=alpha, gain=gain, clamp=clamp,
                    impl=impl)


def modconv_epilogue(
    x: torch.Tensor,
    dcoefs: torch.Tensor | None,
    noise: torch.Tensor | None,
    b: torch.Tensor | None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """x [N, C, H, W] (a convolution's output), dcoefs [N, C] or None, noise broadcastable to [N, 1, H, W] or None,
    b [C] or None -> like x. `impl`: 'auto' (the fused kernel when usable), 'cuda' (require it) or 'ref'."""
    if impl != "ref" and _dispatch.kernel_device(x) and fused_epilogue_enabled():
        tensors = [t for t in (x, dcoefs, noise, b) if t is not None]
        inference = not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        kernel = _dispatch.get_kernel("epilogue", required=(impl == "cuda")) if inference else None
        if kernel is not None:
            y = kernel(x, dcoefs, noise, b, act=act, alpha=alpha, gain=gain, clamp=clamp)
            if y is not None:
                return y
        if impl == "cuda":
            raise RuntimeError("the fused epilogue kernel cannot run here (autograd or unsupported inputs)")
    return modconv_epilogue_ref(x, dcoefs, noise, b, act=act, alpha=alpha, gain=gain, clamp=clamp,
                                impl="ref" if impl == "ref" else "auto")
