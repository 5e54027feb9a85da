"""Upsample, FIR-filter and downsample a batch of 2-D images, with the official StyleGAN2 semantics.

For each channel of x [N, C, H, W] and a filter f ([fh, fw] non-separable or [k] separable):
  1. upsample by inserting up-1 zeros after every pixel (per axis),
  2. pad with zeros (or crop, for negative padding) by [x0, x1, y0, y1],
  3. convolve with f * gain**(f.ndim / 2) (true convolution, i.e. f flipped, unless flip_filter=True),
  4. keep every down-th pixel.
The output has size (H*up + y0 + y1 - fh) // down + 1 along y (likewise along x).
The reference code below is the definition of correctness; the CUDA kernel must agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from . import _dispatch

IntOrPair = int | Sequence[int]


def _pair(value: IntOrPair) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    if len(value) != 2:
        raise ValueError(f"expected an int or a pair, got {value!r}")
    return int(value[0]), int(value[1])


def parse_padding(padding: IntOrPair) -> tuple[int, int, int, int]:
    """int p -> (p, p, p, p); (px, py) -> (px, px, py, py); (x0, x1, y0, y1) unchanged."""
    if isinstance(padding, int):
        return padding, padding, padding, padding
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        return padding[0], padding[0], padding[1], padding[1]
    if len(padding) == 4:
        return padding[0], padding[1], padding[2], padding[3]
    raise ValueError(f"padding must be an int, a pair or four ints, got {padding!r}")


def filter_size(f: torch.Tensor | None) -> tuple[int, int]:
    """(fw, fh) of a filter; 1x1 when there is none."""
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    return int(f.shape[-1]), int(f.shape[0])


def setup_filter(
    f: Sequence | np.ndarray | torch.Tensor | None,
    device: torch.device | str = "cpu",
    normalize: bool = True,
    flip_filter: bool = False,
    gain: float = 1,
    separable: bool | None = None,
) -> torch.Tensor:
    """Turn filter taps into the float32 tensor upfirdn2d expects.

    1-D taps become their outer product (a 2-D filter) unless `separable` (default: 1-D with >= 8 taps);
    `normalize` divides by the sum; `gain` is spread as gain**(ndim/2) so the overall gain is `gain`.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim not in (0, 1, 2) or f.numel() == 0:
        raise ValueError(f"filter taps must be a scalar, 1-D or 2-D, got shape {tuple(f.shape)}")
    if f.ndim == 0:
        f = f[np.newaxis]
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def resolve_upfirdn2d_args(
    x: torch.Tensor, f: torch.Tensor | None, up: IntOrPair, down: IntOrPair, padding: IntOrPair
) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int], tuple[int, int, int, int]]:
    """Validate x and spell out the arguments: (f or a 1x1 unit filter, (upx, upy), (downx, downy), 4-way padding)."""
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {tuple(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    ups, downs = _pair(up), _pair(down)
    if min(ups + downs) < 1:
        raise ValueError(f"up and down must be positive, got up={up!r} down={down!r}")
    return f, ups, downs, parse_padding(padding)


def upfirdn2d_ref(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
) -> torch.Tensor:
    """Reference implementation: x [N, C, H, W], f [fh, fw] or [k] -> [N, C, H', W']."""
    f, (upx, upy), (downx, downy), (padx0, padx1, pady0, pady1) = resolve_upfirdn2d_args(x, f, up, down, padding)
    n, c, h, w = x.shape

    if upx > 1 or upy > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, upx - 1, 0, 0, 0, upy - 1])
        x = x.reshape(n, c, h * upy, w * upx)

    x = F.pad(x, [max(padx0, 0), max(padx1, 0), max(pady0, 0), max(pady1, 0)])
    x = x[:, :, max(-pady0, 0) : x.shape[2] - max(-pady1, 0), max(-padx0, 0) : x.shape[3] - max(-padx1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    weight = f[None, None].repeat([c, 1] + [1] * f.ndim)
    if f.ndim == 2:
        x = F.conv2d(x, weight, groups=c)
    else:
        x = F.conv2d(x, weight.unsqueeze(2), groups=c)
        x = F.conv2d(x, weight.unsqueeze(3), groups=c)

    return x[:, :, ::downy, ::downx]


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: IntOrPair = 1,
    down: IntOrPair = 1,
    padding: IntOrPair = 0,
    flip_filter: bool = False,
    gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Upsample-filter-downsample; dispatches to the CUDA kernel for CUDA tensors when it is available."""
    if impl != "ref" and _dispatch.kernel_device(x):
        kernel = _dispatch.get_kernel("upfirdn2d", required=(impl == "cuda"))
        if kernel is not None:
            return kernel(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    return upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def filter2d(
    x: torch.Tensor, f: torch.Tensor, padding: IntOrPair = 0, flip_filter: bool = False, gain: float = 1,
    impl: str = "auto",
) -> torch.Tensor:
    """Filter without resampling; output size equals input size plus `padding`."""
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(
    x: torch.Tensor, f: torch.Tensor, up: IntOrPair = 2, padding: IntOrPair = 0, flip_filter: bool = False,
    gain: float = 1, impl: str = "auto",
) -> torch.Tensor:
    """Upsample by `up` with filter f; the zero insertion's energy loss is made up by gain * upx * upy."""
    upx, upy = _pair(up)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [
        padx0 + (fw + upx - 1) // 2,
        padx1 + (fw - upx) // 2,
        pady0 + (fh + upy - 1) // 2,
        pady1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(
    x: torch.Tensor, f: torch.Tensor, down: IntOrPair = 2, padding: IntOrPair = 0, flip_filter: bool = False,
    gain: float = 1, impl: str = "auto",
) -> torch.Tensor:
    """Filter with f, then keep every `down`-th pixel."""
    downx, downy = _pair(down)
    padx0, padx1, pady0, pady1 = parse_padding(padding)
    fw, fh = filter_size(f)
    p = [
        padx0 + (fw - downx + 1) // 2,
        padx1 + (fw - downx) // 2,
        pady0 + (fh - downy + 1) // 2,
        pady1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
