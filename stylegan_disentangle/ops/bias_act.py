"""Fused bias + activation + gain + clamp.

    y = clamp(act(x + b[broadcast along dim]; alpha) * gain, -clamp, +clamp)

`gain` defaults to the activation's variance-preserving gain (sqrt(2) for relu / lrelu / swish, 1 otherwise) and
`alpha` to its default slope (0.2 for lrelu); a negative or missing `clamp` means no clamping. The pure-PyTorch code
below is the definition of correctness; the CUDA kernel (third_party/stylegan2_ops) must agree with it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _dispatch


@dataclass(frozen=True)
class Activation:
    """One activation function: its formula, default slope and default gain."""

    func: Callable[[torch.Tensor, float], torch.Tensor]
    def_alpha: float
    def_gain: float
    cuda_id: int


activation_funcs: dict[str, Activation] = {
    "linear": Activation(lambda x, alpha: x, 0.0, 1.0, 1),
    "relu": Activation(lambda x, alpha: F.relu(x), 0.0, math.sqrt(2), 2),
    "lrelu": Activation(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, math.sqrt(2), 3),
    "tanh": Activation(lambda x, alpha: torch.tanh(x), 0.0, 1.0, 4),
    "sigmoid": Activation(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, 5),
    "elu": Activation(lambda x, alpha: F.elu(x), 0.0, 1.0, 6),
    "selu": Activation(lambda x, alpha: F.selu(x), 0.0, 1.0, 7),
    "softplus": Activation(lambda x, alpha: F.softplus(x), 0.0, 1.0, 8),
    "swish": Activation(lambda x, alpha: torch.sigmoid(x) * x, 0.0, math.sqrt(2), 9),
}


def _resolve(
    act: str, alpha: float | None, gain: float | None, clamp: float | None
) -> tuple[Activation, float, float, float]:
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(spec.def_alpha if alpha is None else alpha)
    gain = float(spec.def_gain if gain is None else gain)
    clamp = float(-1 if clamp is None else clamp)
    return spec, alpha, gain, clamp


def bias_act_ref(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Reference implementation: x [..], b [x.shape[dim]] -> same shape and dtype as x.

    bfloat16 input is computed in float32 and rounded once, as the CUDA kernel does: with 8 mantissa bits, rounding
    after each of bias, activation, gain and clamp would cost several times the error of the conv feeding it.
    (float16 keeps the official op-by-op arithmetic, which the reference outputs are compared against.)"""
    if x.dtype == torch.bfloat16:
        b = b.float() if b is not None else None
        return bias_act_ref(x.float(), b, dim, act, alpha, gain, clamp).to(torch.bfloat16)
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[{dim}] = {x.shape[dim]}")
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """Bias + activation with the official semantics; `impl` is 'auto' (CUDA kernel when usable), 'cuda' or 'ref'."""
    if impl != "ref" and _dispatch.kernel_device(x):
        kernel = _dispatch.get_kernel("bias_act", required=(impl == "cuda"))
        if kernel is not None:
            spec, alpha_, gain_, clamp_ = _resolve(act, alpha, gain, clamp)
            return kernel(x, b, dim=dim, act=act, alpha=alpha_, gain=gain_, clamp=clamp_)
    return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
