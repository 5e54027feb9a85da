"""Low-level ops with the official StyleGAN2 semantics: a pure-PyTorch reference for each, and a dispatch point for
the CUDA kernels in third_party/ (built lazily on first CUDA use, never at import)."""

from .bias_act import activation_funcs, bias_act, bias_act_ref
from .conv2d_resample import conv2d_resample
from .cpu_synthesis import cpu_fast_path_enabled, cpu_reference_path
from .epilogue import modconv_epilogue, modconv_epilogue_ref
from .modulated_conv import modulated_conv2d
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upfirdn2d_ref, upsample2d

__all__ = [
    "activation_funcs",
    "bias_act",
    "bias_act_ref",
    "conv2d_resample",
    "cpu_fast_path_enabled",
    "cpu_reference_path",
    "downsample2d",
    "filter2d",
    "modconv_epilogue",
    "modconv_epilogue_ref",
    "modulated_conv2d",
    "setup_filter",
    "upfirdn2d",
    "upfirdn2d_ref",
    "upsample2d",
]

from . import cuda_kernels as _cuda_kernels  # noqa: E402,F401  (registers lazy CUDA providers; compiles nothing)
