"""Autograd wrappers around the compiled CUDA ops, registered as the `bias_act` / `upfirdn2d` / `epilogue` kernel
providers.

Importing this module is cheap and compiles nothing: it only registers providers with ops/_dispatch.py. The first
CUDA call of an op asks its provider for a kernel, which builds or loads the library (ops/cuda_build.py) once; when
that fails the provider returns None and the op runs its reference implementation.

The compiled ops (third_party/stylegan2_ops/ops.cpp) compute forward values only; gradients are defined here:

bias_act, with z = x + b and y = clamp(act(z) * gain, -clamp, clamp):
    dL/dz = dL/dy * gain * act'(z) * [|act(z) * gain| <= clamp]     (the op with grad_order=1)
    dL/dx = dL/dz,  dL/db = dL/dz summed over every dim except `dim`
  The backward is itself differentiable once more (grad_order=2 gives act''), so second-order gradients
  (R1 / path-length penalties) work; asking for a third derivative raises a RuntimeError saying so.

upfirdn2d: the op is linear in x and its adjoint is again an upfirdn2d. Along one axis, with input size H, output
size H' = (H * up + p0 + p1 - k) // down + 1 and filter length k, the output y[o] collects u[o * down + i - p0] * w[i]
for the zero-upsampled input u. Transposing that map gives
    dL/dx = upfirdn2d(dL/dy, f, up=down, down=up, flip_filter=not flip_filter, same gain,
                      padding p0' = k - 1 - p0,  p1' = H * up - H' * down + p0 - up + 1),
  which has exactly H outputs. Being an upfirdn2d itself, it is differentiable to any order. No gradient flows
  to the filter (it is a fixed buffer in StyleGAN2); a filter that requires grad is sent to the reference path.

Layouts: bias_act works in place on any dense layout (contiguous, channels_last, permuted) and makes other inputs
contiguous first (one copy); upfirdn2d reads any strides and writes channels_last output for channels_last input,
contiguous otherwise. Dtypes: float32, float64, float16, bfloat16 (arithmetic in float32, float64 for float64);
anything else goes to the reference path. A 1-D (separable) filter runs as two 1-D passes, x then y.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any

import torch

from . import _dispatch, cuda_build
from .bias_act import _resolve as resolve_activation
from .bias_act import activation_funcs, bias_act_ref
from .upfirdn2d import IntOrPair, resolve_upfirdn2d_args, upfirdn2d_ref

logger = logging.getLogger(__name__)

SUPPORTED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
MAX_FILTER_TAPS = 8192  # kMaxFilterTaps in third_party/stylegan2_ops/sgd_ops.h

# (up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1)
Resample = tuple[int, int, int, int, int, int, int, int]


# ---------------------------------------------------------------------------------------------------------------
# bias_act


def _sum_to_bias(dz: torch.Tensor, dim: int) -> torch.Tensor:
    """dz [..] -> [dz.shape[dim]]: the bias gradient."""
    dims = [i for i in range(dz.ndim) if i != dim]
    return dz.sum(dim=dims) if dims else dz


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, dim, act, alpha, gain, clamp, ops):  # noqa: D102
        ctx.save_for_backward(x, b)
        ctx.config = (dim, act, alpha, gain, clamp, ops)
        return ops.bias_act(x, b, None, dim, act, 0, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        x, b = ctx.saved_tensors
        dim = ctx.config[0]
        dz = _BiasActGrad.apply(dy, x, b, *ctx.config)
        dx = dz if ctx.needs_input_grad[0] else None
        db = _sum_to_bias(dz, dim) if b is not None and ctx.needs_input_grad[1] else None
        return dx, db, None, None, None, None, None, None


class _BiasActGrad(torch.autograd.Function):
    """dz = dy * d(bias_act)/dz, differentiable once more (w.r.t. dy, x and b)."""

    @staticmethod
    def forward(ctx, dy, x, b, dim, act, alpha, gain, clamp, ops):  # noqa: D102
        ctx.save_for_backward(dy, x, b)
        ctx.config = (dim, act, alpha, gain, clamp, ops)
        return ops.bias_act(x, b, dy, dim, act, 1, alpha, gain, clamp)

    @staticmethod
    def backward(ctx, d_dz):  # noqa: D102
        dy, x, b = ctx.saved_tensors
        dim, act, alpha, gain, clamp, ops = ctx.config
        d_dy = d_x = d_b = None
        with torch.no_grad():
            if ctx.needs_input_grad[0]:
                d_dy = ops.bias_act(x, b, d_dz, dim, act, 1, alpha, gain, clamp)
            if ctx.needs_input_grad[1] or (b is not None and ctx.needs_input_grad[2]):
                d_z = ops.bias_act(x, b, d_dz * dy, dim, act, 2, alpha, gain, clamp)
                d_x = d_z if ctx.needs_input_grad[1] else None
                d_b = _sum_to_bias(d_z, dim) if b is not None and ctx.needs_input_grad[2] else None
        if torch.is_grad_enabled():  # create_graph=True: a third derivative must fail loudly, not come out zero
            deps = [t for t in (d_dz, dy, x, b) if t is not None and t.requires_grad]
            if deps:
                d_dy, d_x, d_b = (None if t is None else _NoHigherOrder.apply(t, *deps) for t in (d_dy, d_x, d_b))
        return d_dy, d_x, d_b, None, None, None, None, None, None


class _NoHigherOrder(torch.autograd.Function):
    """Passes `value` through, attached to the tensors it was computed from, and refuses to be differentiated."""

    @staticmethod
    def forward(ctx, value, *deps):  # noqa: D102
        return value.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        raise RuntimeError(
            "the CUDA bias_act kernel provides first and second derivatives only; for third-order gradients call "
            "bias_act(..., impl='ref') or set STYLEGAN_DISENTANGLE_REFERENCE_OPS=1"
        )


def bias_act_cuda(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float = 0.0,
    gain: float = 1.0,
    clamp: float = -1.0,
    *,
    ops: Any,
) -> torch.Tensor:
    """bias_act on the compiled op `ops.bias_act`; x [..], b [x.shape[dim]] -> like x (alpha/gain/clamp resolved)."""
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    if x.ndim == 0:
        raise ValueError("bias_act needs a tensor with at least one dimension")
    dim = dim % x.ndim
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[{dim}] = {x.shape[dim]}")
        dtype = torch.promote_types(x.dtype, b.dtype)  # as `x + b` in the reference
        x, b = x.to(dtype), b.to(dtype)
    if x.dtype not in SUPPORTED_DTYPES or x.numel() == 0:
        return bias_act_ref(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    spec = activation_funcs[act]
    return _BiasAct.apply(x, b, dim, spec.cuda_id, float(alpha), float(gain), float(clamp), ops)


# ---------------------------------------------------------------------------------------------------------------
# upfirdn2d


def transpose_resample(resample: Resample, in_hw: tuple[int, int], out_hw: tuple[int, int],
                       f_hw: tuple[int, int]) -> Resample:
    """The resampling of the adjoint (backward) upfirdn2d; see the module docstring.

    resample: (up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1) of the forward pass; in_hw / out_hw:
    its input and output (H, W); f_hw: the filter's (fh, fw). The result maps [.., out_h, out_w] to [.., in_h, in_w].
    """
    upx, upy, downx, downy, px0, px1, py0, py1 = resample
    (in_h, in_w), (out_h, out_w), (fh, fw) = in_hw, out_hw, f_hw
    return (
        downx, downy, upx, upy,
        fw - 1 - px0, in_w * upx - out_w * downx + px0 - upx + 1,
        fh - 1 - py0, in_h * upy - out_h * downy + py0 - upy + 1,
    )


class _Upfirdn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, resample, flip_filter, gain, ops):  # noqa: D102
        ctx.save_for_backward(f)
        ctx.config = (resample, flip_filter, gain, ops, tuple(x.shape[2:]))
        return ops.upfirdn2d(x, f, *resample, flip_filter, gain)

    @staticmethod
    def backward(ctx, dy):  # noqa: D102
        (f,) = ctx.saved_tensors
        resample, flip_filter, gain, ops, in_hw = ctx.config
        dx = None
        if ctx.needs_input_grad[0]:
            back = transpose_resample(resample, in_hw, tuple(dy.shape[2:]), (f.shape[0], f.shape[1]))
            dx = _Upfirdn2d.apply(dy, f, back, not flip_filter, gain, ops)
        return dx, None, None, None, None, None


def upfirdn2d_cuda(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    *,
    ops: Any,
) -> torch.Tensor:
    """upfirdn2d on the compiled op `ops.upfirdn2d`: x [N, C, H, W], f [fh, fw] or [k] -> [N, C, H', W']."""
    f, (upx, upy), (downx, downy), (px0, px1, py0, py1) = resolve_upfirdn2d_args(x, f, up, down, padding)
    if (
        x.dtype not in SUPPORTED_DTYPES
        or f.ndim not in (1, 2)
        or f.numel() > MAX_FILTER_TAPS
        or (f.requires_grad and torch.is_grad_enabled())
        or min(upx, upy, downx, downy) < 1
        or x.numel() == 0
    ):
        return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    f = f.detach().to(torch.float32)
    if f.ndim == 2:
        return _Upfirdn2d.apply(x, f, (upx, upy, downx, downy, px0, px1, py0, py1), bool(flip_filter), float(gain), ops)
    # Separable: the same 1-D filter along x, then along y, each with half of the gain (as the reference does).
    half_gain = float(gain) ** 0.5
    x = _Upfirdn2d.apply(x, f.reshape(1, -1), (upx, 1, downx, 1, px0, px1, 0, 0), bool(flip_filter), half_gain, ops)
    return _Upfirdn2d.apply(x, f.reshape(-1, 1), (1, upy, 1, downy, 0, 0, py0, py1), bool(flip_filter), half_gain, ops)


# ---------------------------------------------------------------------------------------------------------------
# the modulated-convolution epilogue (forward only: ops/epilogue.py calls it in inference)


def epilogue_cuda(
    x: torch.Tensor,
    dcoefs: torch.Tensor | None,
    noise: torch.Tensor | None,
    b: torch.Tensor | None,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    *,
    ops: Any,
) -> torch.Tensor | None:
    """One pass of bias_act(x * dcoefs + noise, b) on `ops.epilogue`; None when the inputs need the reference
    (unsupported dtype or shapes), which the caller then runs."""
    spec, alpha, gain, clamp = resolve_activation(act, alpha, gain, clamp)
    if x.ndim != 4 or x.dtype not in SUPPORTED_DTYPES or x.numel() == 0:
        return None
    n, c, h, w = x.shape
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    scale = add = bias = None
    if dcoefs is not None:
        if dcoefs.numel() != n * c:
            return None
        scale = dcoefs.detach().to(acc).reshape(n, c)
    if noise is not None:
        add = noise.detach().to(acc)
        add = add.reshape((1,) * (4 - add.ndim) + tuple(add.shape)) if add.ndim <= 4 else add
        if add.ndim != 4 or add.shape[0] not in (1, n) or add.shape[1] != 1 or tuple(add.shape[2:]) != (h, w):
            return None
    if b is not None:
        if b.ndim != 1 or b.shape[0] != c:
            raise ValueError(f"bias of shape {tuple(b.shape)} does not match x.shape[1] = {c}")
        bias = b.detach().to(acc)
    return ops.epilogue(x, scale, add, bias, spec.cuda_id, alpha, gain, clamp)


# ---------------------------------------------------------------------------------------------------------------
# providers


def make_kernels(ops: Any) -> dict[str, Callable]:
    """The kernels for _dispatch (reference signatures), running on `ops` (torch.ops.stylegan_disentangle, or a
    stand-in with the same three functions)."""
    return {
        "bias_act": functools.partial(bias_act_cuda, ops=ops),
        "upfirdn2d": functools.partial(upfirdn2d_cuda, ops=ops),
        "epilogue": functools.partial(epilogue_cuda, ops=ops),
    }


_kernels: dict[str, Callable] | None = None
_kernels_lock = threading.Lock()


def _provide(name: str) -> Callable | None:
    """Build/load the compiled ops once (cuda_build remembers success or failure) and return kernel `name`."""
    global _kernels
    if _kernels is None:
        ops = cuda_build.load_extension()
        if ops is None:
            return None
        with _kernels_lock:
            if _kernels is None:
                _register_fakes()
                _kernels = make_kernels(ops)
    return _kernels[name]


def _is_dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill its memory without gaps or overlaps in some dim order (as c10 defines it)."""
    expected = 1
    for stride, size in sorted((s, n) for s, n in zip(t.stride(), t.shape) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _fake_bias_act(x, b, g, dim, act, grad_order, alpha, gain, clamp):
    return torch.empty_like(x if _is_dense(x) else x.contiguous())


def _fake_upfirdn2d(x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
    out_h = (x.shape[2] * up_y + pad_y0 + pad_y1 - f.shape[0]) // down_y + 1
    out_w = (x.shape[3] * up_x + pad_x0 + pad_x1 - f.shape[1]) // down_x + 1
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.new_empty((x.shape[0], x.shape[1], out_h, out_w)).contiguous(memory_format=fmt)


def _fake_epilogue(x, scale, add, b, act, alpha, gain, clamp):
    return torch.empty_like(x if _is_dense(x) else x.contiguous())


def _register_fakes() -> None:
    """Shape functions so torch.compile can trace through the ops (eager mode does not need them)."""
    ns = cuda_build.OPS_NAMESPACE
    try:
        torch.library.register_fake(f"{ns}::bias_act")(_fake_bias_act)
        torch.library.register_fake(f"{ns}::upfirdn2d")(_fake_upfirdn2d)
        torch.library.register_fake(f"{ns}::epilogue")(_fake_epilogue)
    except Exception as exc:  # noqa: BLE001 - only torch.compile needs these; eager mode is unaffected
        logger.warning("could not register fake kernels for torch.compile: %s", exc)


_dispatch.register_provider("bias_act", functools.partial(_provide, "bias_act"))
_dispatch.register_provider("upfirdn2d", functools.partial(_provide, "upfirdn2d"))
_dispatch.register_provider("epilogue", functools.partial(_provide, "epilogue"))
