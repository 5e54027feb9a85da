"""The single point where ops choose between a compiled CUDA kernel and the pure-PyTorch reference.

`get_kernel(name)` returns a callable with the reference function's signature, or None when the reference path
must be used (CPU tensors, the env var STYLEGAN_DISENTANGLE_REFERENCE_OPS=1, or a kernel that failed to build).
Nothing is compiled at import time: the first CUDA call triggers the (cached) build.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_providers: dict[str, Callable[[], Callable | None]] = {}


def register_provider(name: str, provider: Callable[[], Callable | None]) -> None:
    """Register a zero-argument function that builds (once) and returns the CUDA kernel `name`, or None."""
    _providers[name] = provider


def kernel_device(x) -> bool:
    """Whether tensor x lives where the compiled kernels run (CUDA). The one place ops ask; tests replace it to
    drive the host build of the kernels through the whole generator on CPU."""
    return bool(x.is_cuda)


def reference_forced() -> bool:
    """True when the user asked for the pure-PyTorch path everywhere."""
    return os.environ.get("STYLEGAN_DISENTANGLE_REFERENCE_OPS", "0") not in ("", "0", "false", "False")


def get_kernel(name: str, required: bool = False) -> Callable | None:
    """Return the CUDA kernel `name` when it is available, else None (or raise if `required`)."""
    kernel = None
    if not reference_forced():
        provider = _providers.get(name)
        kernel = provider() if provider is not None else None
    if kernel is None and required:
        raise RuntimeError(f"the CUDA kernel {name!r} was requested (impl='cuda') but is not available")
    return kernel
