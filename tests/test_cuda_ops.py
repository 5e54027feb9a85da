"""The CUDA ops (third_party/stylegan2_ops) agree with the reference ops, forward and backward.

Without a GPU: the kernels' per-element math (sgd_math.h) is compiled for the host (host_reference.cpp, via ctypes)
and driven through the very autograd wrappers the GPU path uses (ops/cuda_kernels.py), so the activation formulas
and derivatives, the tap logic of upfirdn2d, the adjoint (backward) resampling and the separable split are all
checked against the PyTorch reference on CPU. With a GPU (@pytest.mark.gpu): the compiled extension itself, on
random inputs over many shapes, dtypes and layouts, plus the whole generator with and without kernels.
"""

from __future__ import annotations

import ctypes
import functools
import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from stylegan_disentangle.ops import _dispatch, cuda_build, cuda_kernels
from stylegan_disentangle.ops.bias_act import activation_funcs, bias_act, bias_act_ref
from stylegan_disentangle.ops.upfirdn2d import _pair, parse_padding, setup_filter, upfirdn2d, upfirdn2d_ref

SOURCES = Path(__file__).resolve().parents[1] / "third_party" / "stylegan2_ops"
ACTS = sorted(activation_funcs)


# ---------------------------------------------------------------------------------------------------------------
# A host build of the kernel math with the torch.ops.stylegan_disentangle interface (CPU float32/float64 only).


class HostOps:
    """Stand-in for torch.ops.stylegan_disentangle: ops.cpp's argument handling in Python, sgd_math.h in C++."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self.lib = lib
        self.calls = 0
        i64p = ctypes.POINTER(ctypes.c_int64)
        lib.sgd_host_bias_act.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3 + [
            ctypes.c_int, ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double]
        lib.sgd_host_upfirdn2d.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 3 + [i64p] * 4 + [
            ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_double]
        lib.sgd_host_epilogue.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] + [i64p] * 3 + [
            ctypes.c_int, ctypes.c_double, ctypes.c_double, ctypes.c_double]

    @staticmethod
    def _code(t: torch.Tensor) -> int:
        return {torch.float32: 0, torch.float64: 1}[t.dtype]

    def bias_act(self, x, b, g, dim, act, grad_order, alpha, gain, clamp):
        self.calls += 1
        xd = x if cuda_kernels._is_dense(x) else x.contiguous()
        out = torch.empty_like(xd)
        if g is not None and g.stride() != xd.stride():
            g = torch.empty_like(xd).copy_(g)
        b = None if b is None else b.contiguous()
        size = xd.shape[dim]
        stride = xd.stride(dim) if size > 1 else 1
        rc = self.lib.sgd_host_bias_act(
            self._code(xd), xd.data_ptr(), None if b is None else b.data_ptr(), None if g is None else g.data_ptr(),
            out.data_ptr(), xd.numel(), stride, size, act, grad_order, alpha, gain, clamp)
        assert rc == 0
        return out

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
        self.calls += 1
        f = f.contiguous()
        out_h = (x.shape[2] * up_y + pad_y0 + pad_y1 - f.shape[0]) // down_y + 1
        out_w = (x.shape[3] * up_x + pad_x0 + pad_x1 - f.shape[1]) // down_x + 1
        channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        y = torch.empty((x.shape[0], x.shape[1], out_h, out_w), dtype=x.dtype).contiguous(memory_format=fmt)

        def arr(values):
            return (ctypes.c_int64 * len(values))(*values)

        rc = self.lib.sgd_host_upfirdn2d(
            self._code(x), x.data_ptr(), f.data_ptr(), y.data_ptr(),
            arr([x.shape[0], x.shape[1], x.shape[2], x.shape[3], out_h, out_w]), arr(x.stride()), arr(y.stride()),
            arr([up_x, up_y, down_x, down_y, pad_x0, pad_y0]), f.shape[0], f.shape[1], int(flip_filter), gain)
        assert rc == 0
        return y


    def epilogue(self, x, scale, add, b, act, alpha, gain, clamp):
        self.calls += 1
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        assert x.dtype == acc and all(t is None or t.dtype == acc for t in (scale, add, b))
        xd = x if cuda_kernels._is_dense(x) else x.contiguous()
        out = torch.empty_like(xd)
        scale = None if scale is None else scale.contiguous()
        b = None if b is None else b.contiguous()
        sx = [xd.stride(d) if xd.shape[d] > 1 else 1 for d in range(4)]
        sa = [0, 0, 0] if add is None else [add.stride(0) if add.shape[0] > 1 else 0, add.stride(2), add.stride(3)]

        def arr(values):
            return (ctypes.c_int64 * len(values))(*values)

        ptr = lambda t: None if t is None else t.data_ptr()  # noqa: E731
        rc = self.lib.sgd_host_epilogue(self._code(xd), xd.data_ptr(), ptr(scale), ptr(add), ptr(b), out.data_ptr(),
                                        xd.numel(), arr(list(xd.shape)), arr(sx), arr(sa), act, alpha, gain, clamp)
        assert rc == 0
        return out


class CountingOps:
    """Counts calls into an ops namespace (torch.ops.<ns>) so tests can tell whether the compiled op ran."""

    def __init__(self, namespace) -> None:
        self.namespace = namespace
        self.calls = 0

    def bias_act(self, *args):
        self.calls += 1
        return self.namespace.bias_act(*args)

    def upfirdn2d(self, *args):
        self.calls += 1
        return self.namespace.upfirdn2d(*args)

    def epilogue(self, *args):
        self.calls += 1
        return self.namespace.epilogue(*args)


ENV_HOST_EXTENSION = "STYLEGAN_DISENTANGLE_TEST_HOST_EXTENSION"


def _host_compiler() -> str:
    compiler = shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no host C++ compiler to build third_party/stylegan2_ops/host_reference.cpp")
    return compiler


@pytest.fixture(scope="module", params=["ctypes", "torch_extension"])
def host_ops(request, tmp_path_factory):
    """The kernels' math on CPU: via ctypes (always), or through ops.cpp itself built for CPU tensors (slow: set
    STYLEGAN_DISENTANGLE_TEST_HOST_EXTENSION=1; it compiles against torch's headers, ~15 s)."""
    compiler = _host_compiler()
    build = tmp_path_factory.mktemp(f"host_{request.param}")
    if request.param == "ctypes":
        lib = build / "libsgd_host.so"
        subprocess.run([compiler, "-O2", "-shared", "-fPIC", "-std=c++17", f"-I{SOURCES}",
                        str(SOURCES / "host_reference.cpp"), "-o", str(lib)], check=True, capture_output=True)
        return HostOps(ctypes.CDLL(str(lib)))
    if os.environ.get(ENV_HOST_EXTENSION, "0") in ("", "0"):
        pytest.skip(f"set {ENV_HOST_EXTENSION}=1 to build ops.cpp for CPU tensors and run these tests through it")
    from torch.utils import cpp_extension

    cpp_extension.load(
        name="stylegan2_ops_host", sources=[str(SOURCES / "ops.cpp"), str(SOURCES / "host_reference.cpp")],
        extra_cflags=["-O1", "-DSGD_OPS_DEVICE=CPU", "-DSGD_OPS_NAMESPACE=stylegan_disentangle_host",
                      "-DSGD_HOST_LAUNCHERS"],
        extra_include_paths=[str(SOURCES)], build_directory=str(build), is_python_module=False)
    return CountingOps(torch.ops.stylegan_disentangle_host)


def _kernels(ops) -> tuple:
    k = cuda_kernels.make_kernels(ops)
    return k["bias_act"], k["upfirdn2d"]


def _resolved(act: str, alpha=None, gain=None, clamp=None) -> dict:
    spec = activation_funcs[act]
    return dict(act=act, alpha=float(spec.def_alpha if alpha is None else alpha),
                gain=float(spec.def_gain if gain is None else gain), clamp=float(-1 if clamp is None else clamp))


def _grads(fn, inputs: list[torch.Tensor], dy: torch.Tensor) -> list[torch.Tensor]:
    with torch.enable_grad():
        leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
        y = fn(*leaves)
        return list(torch.autograd.grad(y, leaves, dy))


# ---------------------------------------------------------------------------------------------------------------
# bias_act on the host build


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_host_bias_act_forward_and_gradients_match_reference(host_ops, act, clamp):
    kernel, _ = _kernels(host_ops)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5, 4, 3, dtype=torch.float64, generator=gen) * 2
    b = torch.randn(5, dtype=torch.float64, generator=gen)
    dy = torch.randn(3, 5, 4, 3, dtype=torch.float64, generator=gen)
    args = _resolved(act, clamp=clamp)
    y = kernel(x, b, dim=1, **args)
    torch.testing.assert_close(y, bias_act_ref(x, b, dim=1, act=act, clamp=clamp), rtol=1e-12, atol=1e-12)
    got = _grads(lambda x_, b_: kernel(x_, b_, dim=1, **args), [x, b], dy)
    want = _grads(lambda x_, b_: bias_act_ref(x_, b_, dim=1, act=act, clamp=clamp), [x, b], dy)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("act", ACTS)
def test_host_bias_act_second_order_matches_reference(host_ops, act):
    kernel, _ = _kernels(host_ops)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen) * 2
    b = torch.randn(4, dtype=torch.float64, generator=gen)
    dy = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen)
    v = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen)
    args = _resolved(act, clamp=1.5)

    def second(fn):
        with torch.enable_grad():
            x_ = x.clone().requires_grad_(True)
            b_ = b.clone().requires_grad_(True)
            dy_ = dy.clone().requires_grad_(True)
            (dx,) = torch.autograd.grad(fn(x_, b_), x_, dy_, create_graph=True)
            return torch.autograd.grad((dx * v).sum(), [x_, b_, dy_], allow_unused=True, materialize_grads=True)

    got = second(lambda x_, b_: kernel(x_, b_, dim=1, **args))
    want = second(lambda x_, b_: bias_act_ref(x_, b_, dim=1, act=act, clamp=1.5))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("act", ["tanh", "swish", "softplus", "lrelu"])
def test_host_bias_act_passes_gradcheck_and_gradgradcheck(host_ops, act):
    kernel, _ = _kernels(host_ops)
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 3, 4, dtype=torch.float64, generator=gen) + 0.05).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, generator=gen).requires_grad_(True)
    args = _resolved(act)
    with torch.enable_grad():
        assert torch.autograd.gradcheck(lambda x_, b_: kernel(x_, b_, dim=1, **args), (x, b))
        assert torch.autograd.gradgradcheck(lambda x_, b_: kernel(x_, b_, dim=1, **args), (x, b))


def test_host_bias_act_third_derivative_raises_clearly(host_ops):
    kernel, _ = _kernels(host_ops)
    with torch.enable_grad():
        x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
        (dx,) = torch.autograd.grad(kernel(x, None, dim=1, **_resolved("tanh")).sum(), x, create_graph=True)
        (ddx,) = torch.autograd.grad(dx.sum(), x, create_graph=True)
        with pytest.raises(RuntimeError, match="first and second derivatives only"):
            torch.autograd.grad(ddx.sum(), x)


@pytest.mark.parametrize("layout", ["channels_last", "permuted", "sliced", "last_dim"])
def test_host_bias_act_handles_layouts_and_dims(host_ops, layout):
    kernel, _ = _kernels(host_ops)
    gen = torch.Generator().manual_seed(4)
    base = torch.randn(2, 6, 5, 7, dtype=torch.float64, generator=gen)
    dim = 1
    if layout == "channels_last":
        x = base.contiguous(memory_format=torch.channels_last)
    elif layout == "permuted":
        x = base.permute(2, 0, 3, 1).contiguous().permute(1, 3, 0, 2)  # memory order H, N, W, C
    elif layout == "sliced":
        x = base[:, :, ::2, 1:]
    else:
        x, dim = base, -1
    b = torch.randn(x.shape[dim], dtype=torch.float64, generator=gen)
    y = kernel(x, b, dim=dim, **_resolved("lrelu", clamp=1.0))
    want = bias_act_ref(x, b, dim=dim % x.ndim, act="lrelu", clamp=1.0)
    torch.testing.assert_close(y, want, rtol=1e-12, atol=1e-12)
    if layout in ("channels_last", "permuted"):
        assert y.stride() == x.stride()  # dense layouts are processed in place, no copy
    dy = torch.randn(x.shape, dtype=torch.float64, generator=gen).contiguous(memory_format=torch.channels_last)
    got = _grads(lambda x_, b_: kernel(x_, b_, dim=dim, **_resolved("lrelu", clamp=1.0)), [x, b], dy)
    ref = _grads(lambda x_, b_: bias_act_ref(x_, b_, dim=dim % x.ndim, act="lrelu", clamp=1.0), [x, b], dy)
    for g, w in zip(got, ref):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_host_ops_reject_bad_arguments_with_clear_messages(host_ops):
    if isinstance(host_ops, HostOps):
        pytest.skip("argument checks live in ops.cpp (torch_extension variant)")
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64)
    f = torch.ones(4, 4)
    with pytest.raises(RuntimeError, match=r"b must be \[3\]"):
        host_ops.bias_act(x, torch.ones(4, dtype=torch.float64), None, 1, 1, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="g is required"):
        host_ops.bias_act(x, None, None, 1, 1, 1, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="unknown activation"):
        host_ops.bias_act(x, None, None, 1, 42, 0, 0.0, 1.0, -1.0)
    with pytest.raises(RuntimeError, match="smaller than the filter"):
        host_ops.upfirdn2d(x, f, 1, 1, 1, 1, -1, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="2-d float32"):
        host_ops.upfirdn2d(x, f.double(), 1, 1, 1, 1, 0, 0, 0, 0, False, 1.0)
    with pytest.raises(RuntimeError, match="taps"):
        host_ops.upfirdn2d(x, torch.ones(100, 100), 1, 1, 1, 1, 99, 99, 99, 99, False, 1.0)
    with pytest.raises(RuntimeError, match="float32, float64, float16 or bfloat16"):
        host_ops.bias_act(x.to(torch.int32), None, None, 1, 1, 0, 0.0, 1.0, -1.0)


def test_host_bias_act_promotes_dtypes_like_the_reference(host_ops):
    kernel, _ = _kernels(host_ops)
    x = torch.randn(2, 3, 4)
    b = torch.randn(3, dtype=torch.float64)
    y = kernel(x, b, dim=1, **_resolved("relu"))
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, bias_act_ref(x, b, act="relu"))


def test_host_bias_act_float32_matches_reference(host_ops):
    kernel, _ = _kernels(host_ops)
    x = torch.randn(4, 8, 3, 3)
    b = torch.randn(8)
    for act in ACTS:
        torch.testing.assert_close(kernel(x, b, dim=1, **_resolved(act, clamp=2.0)),
                                   bias_act_ref(x, b, act=act, clamp=2.0), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# upfirdn2d on the host build

# (N, C, H, W, up, down, padding, filter taps or shape, separable, flip, gain)
UPFIRDN_CASES = [
    (1, 1, 5, 7, 1, 1, 0, [1, 3, 3, 1], False, False, 1.0),
    (2, 3, 5, 4, 2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False, False, 4.0),
    (1, 2, 7, 5, 1, 2, [1, 1, 1, 1], [1, 3, 3, 1], False, True, 1.0),
    (1, 2, 6, 9, 4, 1, [3, 2, 1, 4], [1, 2, 3, 2, 1], False, False, 2.5),
    (1, 2, 9, 6, 1, 4, [0, 3, 2, 0], [1, 3, 3, 1], False, False, 1.0),
    (2, 1, 5, 5, 2, 2, [-1, 2, 1, -2], [1, 3, 3, 1], False, True, 1.0),
    (1, 2, 8, 8, 1, 1, [-2, -1, -3, 0], [1, 1], False, False, 1.0),
    (1, 1, 7, 6, (2, 1), (1, 2), [2, 1, 0, 3], (3, 2), False, False, 1.0),
    (1, 1, 6, 7, (1, 4), (2, 1), [1, 0, 3, 2], (2, 5), False, True, 0.5),
    (1, 2, 9, 7, 2, 1, [4, 3, 4, 3], list(range(1, 9)), True, False, 4.0),
    (2, 1, 10, 11, 1, 2, [3, 4, 2, 5], list(range(1, 9)), True, True, 1.0),
    (1, 1, 4, 4, 4, 2, [-3, 5, 2, -1], [1, 3, 3, 1], False, False, 3.0),
]


def _filter(taps, separable, gen) -> torch.Tensor:
    if isinstance(taps, tuple):
        return torch.rand(taps, generator=gen, dtype=torch.float64).float() + 0.1
    return setup_filter(taps, separable=separable)


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=[f"case{i}" for i in range(len(UPFIRDN_CASES))])
def test_host_upfirdn2d_forward_and_gradient_match_reference(host_ops, case):
    _, kernel = _kernels(host_ops)
    n, c, h, w, up, down, padding, taps, separable, flip, gain = case
    gen = torch.Generator().manual_seed(5)
    f = _filter(taps, separable, gen)
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=gen)
    kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    y = kernel(x, f, **kwargs)
    want = upfirdn2d_ref(x, f, **kwargs)
    assert y.shape == want.shape
    # The reference rounds f * gain to float32 (f is a float32 buffer); the kernel applies gain in float64.
    torch.testing.assert_close(y, want, rtol=1e-6, atol=1e-7)
    dy = torch.randn(want.shape, dtype=torch.float64, generator=gen)
    (got,) = _grads(lambda x_: kernel(x_, f, **kwargs), [x], dy)
    (ref,) = _grads(lambda x_: upfirdn2d_ref(x_, f, **kwargs), [x], dy)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("case", [UPFIRDN_CASES[1], UPFIRDN_CASES[5], UPFIRDN_CASES[9]], ids=["up2", "crop", "sep"])
def test_host_upfirdn2d_passes_gradcheck_and_gradgradcheck(host_ops, case):
    _, kernel = _kernels(host_ops)
    n, c, h, w, up, down, padding, taps, separable, flip, gain = case
    f = _filter(taps, separable, torch.Generator().manual_seed(6))
    x = torch.randn(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    fn = lambda x_: kernel(x_, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)  # noqa: E731
    with torch.enable_grad():
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


def test_host_upfirdn2d_keeps_channels_last_and_reads_strided_input(host_ops):
    _, kernel = _kernels(host_ops)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 9, 8, dtype=torch.float64)
    y = kernel(x.contiguous(memory_format=torch.channels_last), f, up=2, padding=[2, 1, 2, 1], gain=4)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, upfirdn2d_ref(x, f, up=2, padding=[2, 1, 2, 1], gain=4), rtol=1e-12, atol=1e-12)
    sliced = x[:, 1:4, ::2, 1::3]
    calls = host_ops.calls
    y = kernel(sliced, f, down=2, padding=1)
    assert host_ops.calls == calls + 1  # one pass, no copy beforehand
    torch.testing.assert_close(y, upfirdn2d_ref(sliced, f, down=2, padding=1), rtol=1e-12, atol=1e-12)


def test_host_upfirdn2d_float32_matches_reference(host_ops):
    _, kernel = _kernels(host_ops)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 9, 7)
    for up, down in [(1, 1), (2, 1), (1, 2), (2, 2)]:
        torch.testing.assert_close(kernel(x, f, up=up, down=down, padding=[1, 2, 2, 1], gain=up * up),
                                   upfirdn2d_ref(x, f, up=up, down=down, padding=[1, 2, 2, 1], gain=up * up),
                                   rtol=1e-5, atol=1e-5)


def test_upfirdn2d_wrapper_sends_trainable_filters_to_the_reference(host_ops):
    _, kernel = _kernels(host_ops)
    calls = host_ops.calls
    with torch.enable_grad():
        f = setup_filter([1, 3, 3, 1]).requires_grad_(True)
        x = torch.randn(1, 2, 6, 6)
        kernel(x, f, up=2, padding=2).sum().backward()
    assert host_ops.calls == calls  # the compiled op has no filter gradient
    assert f.grad is not None and f.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# The adjoint resampling, checked with the reference op alone: <A x, y> == <x, A^T y>.


@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=[f"case{i}" for i in range(len(UPFIRDN_CASES))])
def test_transpose_resample_gives_the_adjoint(case):
    n, c, h, w, up, down, padding, taps, separable, flip, gain = case
    gen = torch.Generator().manual_seed(7)
    f = _filter(taps, separable, gen)
    if f.ndim == 1:
        f = torch.outer(f, f)
    resample = (*_pair(up), *_pair(down), *parse_padding(padding))
    x = torch.randn(n, c, h, w, dtype=torch.float64, generator=gen)
    y = upfirdn2d_ref(x, f, up=resample[0:2], down=resample[2:4], padding=resample[4:], flip_filter=flip, gain=gain)
    back = cuda_kernels.transpose_resample(resample, (h, w), tuple(y.shape[2:]), tuple(f.shape))
    v = torch.randn(y.shape, dtype=torch.float64, generator=gen)
    at_v = upfirdn2d_ref(v, f, up=back[0:2], down=back[2:4], padding=back[4:], flip_filter=not flip, gain=gain)
    assert at_v.shape == x.shape
    torch.testing.assert_close((y * v).sum(), (x * at_v).sum(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------------------
# the modulated-conv epilogue on the host build

EPILOGUE_CASES = {
    "demod+const_noise": dict(dcoefs=True, noise=(5, 7)),
    "demod+sample_noise": dict(dcoefs=True, noise=(3, 1, 5, 7)),
    "demod_only": dict(dcoefs=True, noise=None),
    "noise_only": dict(dcoefs=False, noise=(1, 1, 5, 7)),
    "bias_only": dict(dcoefs=False, noise=None),
}


def _epilogue_inputs(case: dict, dtype: torch.dtype, layout: str, gen: torch.Generator):
    x = torch.randn(3, 6, 5, 7, generator=gen, dtype=torch.float64).to(dtype)
    x = _layouts(x)[layout]
    dcoefs = torch.rand(3, 6, generator=gen, dtype=torch.float64).add(0.5).to(dtype) if case["dcoefs"] else None
    noise = torch.randn(case["noise"], generator=gen, dtype=torch.float64).to(dtype) if case["noise"] else None
    b = torch.randn(6, generator=gen, dtype=torch.float64).to(dtype)
    return x, dcoefs, noise, b


@pytest.mark.parametrize("case", sorted(EPILOGUE_CASES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
@pytest.mark.parametrize("act,clamp", [("lrelu", None), ("lrelu", 0.8), ("swish", None), ("linear", 0.5)])
def test_host_epilogue_matches_the_two_pass_reference(host_ops, case, layout, act, clamp):
    from stylegan_disentangle.ops.epilogue import modconv_epilogue_ref

    gen = torch.Generator().manual_seed(5)
    for dtype, tol in [(torch.float64, 1e-12), (torch.float32, 2e-6)]:
        x, dcoefs, noise, b = _epilogue_inputs(EPILOGUE_CASES[case], dtype, layout, gen)
        got = cuda_kernels.epilogue_cuda(x, dcoefs, noise, b, act=act, gain=1.3, clamp=clamp, ops=host_ops)
        want = modconv_epilogue_ref(x.clone(), dcoefs, noise, b, act=act, gain=1.3, clamp=clamp, impl="ref")
        assert got.dtype == dtype and got.stride() == (x if layout != "strided" else x.contiguous()).stride()
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_host_epilogue_declines_inputs_it_does_not_cover(host_ops):
    x = torch.randn(2, 3, 4, 4)
    assert cuda_kernels.epilogue_cuda(x, None, torch.randn(2, 3, 4, 4), None, ops=host_ops) is None  # per-channel
    assert cuda_kernels.epilogue_cuda(x.reshape(2, 3, 16), None, None, None, ops=host_ops) is None  # not 4-d
    with pytest.raises(ValueError, match="bias of shape"):
        cuda_kernels.epilogue_cuda(x, None, None, torch.zeros(4), ops=host_ops)


def test_synthesis_layer_runs_its_epilogue_through_the_dispatch_point(host_ops, monkeypatch):
    """The layer hands (conv output, dcoefs, noise, bias) to ops.modconv_epilogue; with the host kernel standing in
    for CUDA the generator's image is unchanged within float32 rounding, fused and non-fused."""
    from stylegan_disentangle.networks import Generator
    from stylegan_disentangle.ops import epilogue as epilogue_mod

    kernel = functools.partial(cuda_kernels.epilogue_cuda, ops=host_ops)
    torch.manual_seed(3)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()
    for p in G.synthesis.parameters():
        p.data.add_(0.1 * torch.randn_like(p))  # non-zero noise strengths and biases
    z = torch.randn(3, 16)
    for fused in (True, False):
        want = G(z, None, noise_mode="const", fused_modconv=fused)
        before = host_ops.calls
        monkeypatch.setattr(epilogue_mod._dispatch, "kernel_device", lambda x: True)
        monkeypatch.setattr(epilogue_mod._dispatch, "get_kernel",
                            lambda name, required=False: kernel if name == "epilogue" else None)
        got = G(z, None, noise_mode="const", fused_modconv=fused)
        monkeypatch.undo()
        assert host_ops.calls - before == sum(block.num_conv for block in G.synthesis.children())  # every layer
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("architecture", ["skip", "resnet"])
def test_whole_networks_on_the_host_kernels_match_the_reference(host_ops, monkeypatch, architecture):
    """Every op of G and D through the kernel wrappers (the host build standing in for CUDA): G's image fused and
    non-fused, G's parameter gradients, and D's R1 penalty gradient (second order through bias_act and upfirdn2d),
    against the pure-PyTorch path. (float32: the mapping network computes in float32 whatever its weights.)"""
    from stylegan_disentangle.networks import Discriminator, Generator
    from tests.helpers import perturbed

    torch.manual_seed(4)
    G = perturbed(Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=16, img_channels=3,
                            mapping_kwargs=dict(num_layers=2),
                            synthesis_kwargs=dict(channel_base=128, channel_max=8, architecture=architecture)), 1)
    D = perturbed(Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8,
                                architecture=architecture), 2)
    z = torch.randn(3, 8)
    kernels = cuda_kernels.make_kernels(host_ops)

    def run() -> list[torch.Tensor]:
        with torch.no_grad():
            outs = [G(z, None, noise_mode="const", fused_modconv=fused) for fused in (True, False)]
        with torch.enable_grad():
            img = G(z, None, noise_mode="const", fused_modconv=False)
            grads = torch.autograd.grad(img.square().sum(), list(G.synthesis.parameters()), allow_unused=True)
            x = img.detach().requires_grad_(True)
            (r1,) = torch.autograd.grad(D(x, None).sum(), x, create_graph=True)
            d_grads = torch.autograd.grad(r1.square().sum(), list(D.parameters()), allow_unused=True)
        return outs + [g for g in grads + d_grads if g is not None]

    from stylegan_disentangle.ops import cpu_reference_path

    with cpu_reference_path():  # the pure-PyTorch reference ops, not the CPU fast path (issue 13)
        want = run()
    calls = host_ops.calls
    monkeypatch.setattr(_dispatch, "kernel_device", lambda x: True)
    monkeypatch.setattr(_dispatch, "get_kernel", lambda name, required=False: kernels[name])
    got = run()
    assert host_ops.calls - calls > 50  # every bias_act, upfirdn2d and epilogue went through the host kernels
    assert len(got) == len(want)
    for a, b in zip(got, want):
        # float32 summation order: the kernels and the reference add the same terms in other orders, so an element's
        # rounding error follows the size of the terms summed (the tensor's scale), not its own value, which can be
        # small after cancellation (a D gradient element of 0.04 in a tensor of scale 300 differs by 2e-5 on one
        # CPU). Measured: at most 6e-6 of each tensor's largest |value|; a wrong kernel is off by O(1).
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, rtol=1e-4, atol=max(1e-5, 1e-4 * scale))


# ---------------------------------------------------------------------------------------------------------------
# GPU: the compiled extension.

GPU_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64]
# Tolerance of the kernel in `dtype` against the reference in float64 on the same inputs (rounding once).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}


@pytest.fixture(scope="module")
def cuda_ops():
    ops = cuda_build.load_extension()
    if ops is None:
        pytest.fail(f"the CUDA ops did not build on a machine with CUDA: {cuda_build.build_status().reason}")
    return ops


def _layouts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    big = torch.empty(x.shape[:-1] + (2 * x.shape[-1],), dtype=x.dtype, device=x.device)
    big[..., ::2] = x
    out = {"contiguous": x, "strided": big[..., ::2]}
    if x.ndim == 4:
        out["channels_last"] = x.contiguous(memory_format=torch.channels_last)
    return out


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_gpu_bias_act_matches_reference(cuda_ops, dtype, act):
    kernel = cuda_kernels.make_kernels(cuda_ops)["bias_act"]
    gen = torch.Generator(device="cuda").manual_seed(8)
    tol = TOL[dtype]
    cases = [((3, 17, 5, 7), 1, None), ((2, 8, 9, 1), 1, 1.0), ((33, 65), 1, 0.5), ((5, 4, 3), 2, None)]
    for shape, dim, clamp in cases:
        x0 = (torch.randn(shape, device="cuda", generator=gen) * 2).to(dtype)
        b = torch.randn(shape[dim], device="cuda", generator=gen).to(dtype)
        dy = torch.randn(shape, device="cuda", generator=gen).to(dtype)
        args = _resolved(act, clamp=clamp)

        def fast(x_, b_, dim=dim, args=args):
            return kernel(x_, b_, dim=dim, **args)

        def ref(x_, b_, dim=dim, clamp=clamp):
            return bias_act_ref(x_, b_, dim=dim, act=act, clamp=clamp)

        for name, x in _layouts(x0).items():
            y = fast(x, b)
            assert y.dtype == dtype, name
            torch.testing.assert_close(y.double(), ref(x.double(), b.double()), rtol=tol, atol=tol,
                                       msg=f"{name} {shape}")
            got = _grads(fast, [x, b], dy)
            want = _grads(ref, [x.double(), b.double()], dy.double())
            torch.testing.assert_close(got[0].double(), want[0], rtol=tol, atol=tol, msg=f"dx {name} {shape}")
            scale = want[1].abs().max().item() + 1
            torch.testing.assert_close(got[1].double(), want[1], rtol=tol, atol=tol * scale, msg=f"db {name} {shape}")


@pytest.mark.gpu
@pytest.mark.parametrize("act", ACTS)
def test_gpu_bias_act_gradcheck_float64(cuda_ops, act):
    kernel = cuda_kernels.make_kernels(cuda_ops)["bias_act"]
    x = (torch.randn(2, 3, 4, 5, dtype=torch.float64, device="cuda") + 0.05).requires_grad_(True)
    b = torch.randn(3, dtype=torch.float64, device="cuda").requires_grad_(True)
    fn = lambda x_, b_: kernel(x_, b_, dim=1, **_resolved(act, clamp=2.0))  # noqa: E731
    with torch.enable_grad():
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


GPU_UPFIRDN_CASES = UPFIRDN_CASES + [
    (4, 32, 33, 17, 2, 1, [2, 1, 2, 1], [1, 3, 3, 1], False, False, 4.0),
    (3, 16, 64, 64, 1, 2, [1, 1, 1, 1], [1, 3, 3, 1], False, False, 1.0),
    (2, 8, 31, 29, 1, 1, [-3, 2, 5, -1], list(range(1, 13)), True, True, 1.0),
    (2, 5, 16, 16, 4, 4, [1, 2, 3, 4], [1, 3, 3, 1], False, False, 16.0),
]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", GPU_UPFIRDN_CASES, ids=[f"case{i}" for i in range(len(GPU_UPFIRDN_CASES))])
def test_gpu_upfirdn2d_matches_reference(cuda_ops, dtype, case):
    kernel = cuda_kernels.make_kernels(cuda_ops)["upfirdn2d"]
    n, c, h, w, up, down, padding, taps, separable, flip, gain = case
    gen = torch.Generator().manual_seed(9)
    f = _filter(taps, separable, gen).cuda()
    x0 = torch.randn(n, c, h, w, generator=gen).cuda().to(dtype)
    kwargs = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    want = upfirdn2d_ref(x0.double(), f.double(), **kwargs)
    dy = torch.randn(want.shape, generator=gen).cuda().to(dtype)
    (ref,) = _grads(lambda x_: upfirdn2d_ref(x_, f.double(), **kwargs), [x0.double()], dy.double())
    tol = TOL[dtype]
    for name, x in _layouts(x0).items():
        y = kernel(x, f, **kwargs)
        assert y.dtype == dtype and y.shape == want.shape, name
        scale = want.abs().max().item() + 1
        torch.testing.assert_close(y.double(), want, rtol=tol, atol=tol * scale, msg=name)
        (got,) = _grads(lambda x_: kernel(x_, f, **kwargs), [x], dy)
        scale = ref.abs().max().item() + 1
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * scale, msg=f"dx {name}")


@pytest.mark.gpu
@pytest.mark.parametrize("case", UPFIRDN_CASES, ids=[f"case{i}" for i in range(len(UPFIRDN_CASES))])
def test_gpu_upfirdn2d_gradcheck_float64(cuda_ops, case):
    kernel = cuda_kernels.make_kernels(cuda_ops)["upfirdn2d"]
    n, c, h, w, up, down, padding, taps, separable, flip, gain = case
    f = _filter(taps, separable, torch.Generator().manual_seed(10)).cuda()
    x = torch.randn(n, c, h, w, dtype=torch.float64, device="cuda", requires_grad=True)
    fn = lambda x_: kernel(x_, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain)  # noqa: E731
    with torch.enable_grad():
        assert torch.autograd.gradcheck(fn, (x,))
        assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.gpu
def test_gpu_public_ops_dispatch_to_the_kernels(cuda_ops, monkeypatch):
    monkeypatch.delenv(cuda_build.ENV_REFERENCE, raising=False)
    assert _dispatch.get_kernel("bias_act") is not None
    assert _dispatch.get_kernel("upfirdn2d") is not None
    x = torch.randn(2, 4, 8, 8, device="cuda")
    f = setup_filter([1, 3, 3, 1], device="cuda")
    torch.testing.assert_close(bias_act(x, torch.ones(4, device="cuda"), act="lrelu"),
                               bias_act_ref(x, torch.ones(4, device="cuda"), act="lrelu"))
    torch.testing.assert_close(upfirdn2d(x, f, up=2, padding=2, gain=4), upfirdn2d_ref(x, f, up=2, padding=2, gain=4))


@pytest.mark.gpu
def test_gpu_failed_build_warns_once_and_falls_back(monkeypatch, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.delenv(cuda_build.ENV_REFERENCE, raising=False)
    monkeypatch.setenv(cuda_build.ENV_EXTENSIONS_DIR, str(tmp_path))
    monkeypatch.setattr(cuda_build, "_status", cuda_build.BuildStatus())
    monkeypatch.setattr(cuda_kernels, "_kernels", None)
    calls = []

    def broken_load(*args, **kwargs):
        calls.append(kwargs)
        raise RuntimeError("Error building extension 'stylegan2_ops'\nbias_act.cu(3): error: simulated failure")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", cpp_extension.CUDA_HOME or "/usr/local/cuda")
    x = torch.randn(2, 3, 4, 4, device="cuda")
    with pytest.warns(cuda_build.CudaBuildWarning, match="simulated failure") as record:
        first = bias_act(x, torch.ones(3, device="cuda"), act="swish")
        second = upfirdn2d(x, setup_filter([1, 3, 3, 1], device="cuda"), up=2, padding=2)
    assert len([r for r in record if issubclass(r.category, cuda_build.CudaBuildWarning)]) == 1
    assert len(calls) == 1
    torch.testing.assert_close(first, bias_act_ref(x, torch.ones(3, device="cuda"), act="swish"), rtol=0, atol=0)
    torch.testing.assert_close(second, upfirdn2d_ref(x, setup_filter([1, 3, 3, 1], device="cuda"), up=2, padding=2),
                               rtol=0, atol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", GPU_DTYPES, ids=str)
@pytest.mark.parametrize("case", sorted(EPILOGUE_CASES))
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_gpu_epilogue_matches_reference(cuda_ops, dtype, case, layout):
    from stylegan_disentangle.ops.epilogue import modconv_epilogue_ref

    gen = torch.Generator().manual_seed(6)
    x, dcoefs, noise, b = (None if t is None else t.cuda()
                           for t in _epilogue_inputs(EPILOGUE_CASES[case], torch.float64, "contiguous", gen))
    x = _layouts(x.to(dtype))[layout]
    dcoefs = None if dcoefs is None else dcoefs.float() if dtype != torch.float64 else dcoefs
    got = cuda_kernels.epilogue_cuda(x, dcoefs, noise, b, act="lrelu", gain=2**0.5, clamp=0.9, ops=cuda_ops)
    want = modconv_epilogue_ref(x.double(), dcoefs, noise, b, act="lrelu", gain=2**0.5, clamp=0.9, impl="ref")
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.gpu
def test_gpu_epilogue_kernel_runs_in_inference_only(cuda_ops, monkeypatch):
    from stylegan_disentangle.ops import modconv_epilogue

    counting = CountingOps(cuda_ops)
    kernel = functools.partial(cuda_kernels.epilogue_cuda, ops=counting)
    monkeypatch.setattr(_dispatch, "get_kernel", lambda name, required=False: kernel if name == "epilogue" else None)
    x = torch.randn(2, 4, 8, 8, device="cuda")
    b = torch.zeros(4, device="cuda", requires_grad=True)
    with torch.no_grad():
        modconv_epilogue(x, None, None, b, act="lrelu")
    assert counting.calls == 1
    modconv_epilogue(x, None, None, b, act="lrelu").sum().backward()  # autograd: the reference, with gradients
    assert counting.calls == 1 and b.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# GPU: the whole generator with kernels vs with the reference ops.

GEN_KWARGS = dict(z_dim=32, c_dim=0, w_dim=32, img_resolution=32, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=512, channel_max=32,
                                                                           conv_clamp=256))


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fp32", "fp16", "bf16"])
def test_gpu_generator_with_kernels_matches_reference_ops(cuda_ops, monkeypatch, mode):
    from stylegan_disentangle.networks import Generator

    kwargs = {**GEN_KWARGS, "synthesis_kwargs": {**GEN_KWARGS["synthesis_kwargs"],
                                                 "num_fp16_res": 0 if mode == "fp32" else 4}}
    torch.manual_seed(11)
    G = Generator(**kwargs).cuda().eval()
    z = torch.randn(4, G.z_dim, device="cuda")
    half_dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    # Exact float32 on both sides: cuDNN would otherwise run float32 convolutions on TF32 tensor cores.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)

    def run() -> torch.Tensor:
        return G(z, None, truncation_psi=0.7, noise_mode="const", half_dtype=half_dtype).float()

    monkeypatch.setenv(cuda_build.ENV_REFERENCE, "1")
    reference = run()
    monkeypatch.delenv(cuda_build.ENV_REFERENCE)
    assert _dispatch.get_kernel("bias_act") is not None
    fast = run()
    tol = 1e-4 if mode == "fp32" else 2e-2
    assert (fast - reference).abs().max().item() <= tol
    monkeypatch.setenv("STYLEGAN_DISENTANGLE_FUSED_EPILOGUE", "0")  # bias_act + upfirdn2d kernels, no epilogue
    assert (run() - reference).abs().max().item() <= tol


@pytest.mark.gpu
def test_gpu_kernel_combinations_cover_every_up_down_factor(cuda_ops):
    """Many small random configurations (odd sizes, up/down 1/2/4 per axis, crops) in float32."""
    kernel = cuda_kernels.make_kernels(cuda_ops)["upfirdn2d"]
    gen = torch.Generator().manual_seed(12)
    f = setup_filter([1, 3, 3, 1]).cuda()
    for upx, upy, downx, downy in itertools.product([1, 2, 4], repeat=4):
        pad = [int(v) for v in torch.randint(-2, 5, (4,), generator=gen)]
        x = torch.randn(2, 3, 7, 9, generator=gen).cuda()
        kwargs = dict(up=(upx, upy), down=(downx, downy), padding=pad)
        try:
            want = upfirdn2d_ref(x, f, **kwargs)
        except RuntimeError:
            continue  # the configuration leaves no output pixel
        torch.testing.assert_close(kernel(x, f, **kwargs), want, rtol=2e-5, atol=2e-5, msg=str(kwargs))
