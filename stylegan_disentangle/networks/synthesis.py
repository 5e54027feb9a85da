"""The StyleGAN2 synthesis network: ws [N, num_ws, w_dim] -> img [N, img_channels, R, R] in about [-1, 1].

Architectures: 'orig' (one ToRGB at the end), 'skip' (ToRGB at every resolution, images summed after upsampling)
and 'resnet' (residual blocks, ToRGB at the end). Blocks at the top `num_fp16_res` resolutions run in fp16 unless
`force_fp32`; `conv_clamp` clamps pre-activations there. Parameter names follow the official state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..ops import bias_act, modconv_epilogue, modulated_conv2d, setup_filter, upsample2d
from ..ops.cpu_synthesis import (
    cpu_fast_path_applies,
    synthesis_layer_cpu,
    synthesis_layer_supported,
    torgb_cpu,
    upsample2d_cpu,
)
from .checks import check_latents
from .layers import DEFAULT_FILTER, Conv2dLayer, FullyConnectedLayer, check_activation
from .persistence import persistent_class

NOISE_MODES = ("random", "const", "none")
HALF_DTYPES = (torch.float16, torch.bfloat16)
ARCHITECTURES = ("orig", "skip", "resnet")


@persistent_class
class SynthesisLayer(nn.Module):
    """Modulated 3x3 convolution (optionally upsampling x2) + per-pixel noise + bias + activation."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = check_activation(activation).def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = True,
        gain: float = 1,
    ) -> torch.Tensor:
        """x [N, in_channels, r, r], w [N, w_dim] -> [N, out_channels, resolution, resolution]."""
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength

        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        if cpu_fast_path_applies(x) and synthesis_layer_supported(self.weight, self.up, self.padding,
                                                                  self.resample_filter, flip_weight=(self.up == 1)):
            # float32 on CPU: the same math arranged for the CPU (ops/cpu_synthesis.py); fused_modconv is moot there.
            return synthesis_layer_cpu(x, self.weight, styles, noise, self.bias, up=self.up, padding=self.padding,
                                       resample_filter=self.resample_filter, act=self.activation, gain=act_gain,
                                       clamp=act_clamp)
        x, dcoefs = modulated_conv2d(x, self.weight, styles, up=self.up, padding=self.padding,
                                     resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                                     fused_modconv=fused_modconv, return_dcoefs=True)
        # Demodulation scale (non-fused path), noise, bias, activation and clamp: one pass on CUDA in inference.
        return modconv_epilogue(x, dcoefs, noise, self.bias, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}, "
                f"resolution={self.resolution}, up={self.up}, activation={self.activation}")


@persistent_class
class ToRGBLayer(nn.Module):
    """Modulated (not demodulated) 1x1 convolution to image channels, + bias and clamp."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
        conv_clamp: float | None = None, channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = nn.Parameter(
            torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = True) -> torch.Tensor:
        """x [N, in_channels, r, r], w [N, w_dim] -> [N, img_channels, r, r]."""
        styles = self.affine(w) * self.weight_gain
        if cpu_fast_path_applies(x) and self.weight.shape[2:] == (1, 1):
            return torgb_cpu(x, self.weight, styles, self.bias, clamp=self.conv_clamp)
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, w_dim={self.w_dim}"


@persistent_class
class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: [conv0 (up x2)], conv1, [torgb], [resnet skip]."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        is_last: bool,
        architecture: str = "skip",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        fused_modconv_default: bool | str | None = None,
        fp32_on_cpu: bool = False,
        **layer_kwargs,
    ) -> None:
        super().__init__()
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        # None: the StyleGAN2-ADA rule (fused in eval mode for fp32 or batch 1); True / False / 'inference_only':
        # the StyleGAN3 repo's explicit setting.
        self.fused_modconv_default = fused_modconv_default
        # The StyleGAN3 repo's classes run fp16 blocks in fp32 on CPU; StyleGAN2-ADA's run them in fp16 everywhere.
        self.fp32_on_cpu = fp32_on_cpu
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == "skip":
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def _fused(self, fused_modconv: bool | str | None, dtype: torch.dtype, batch_size: int) -> bool:
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv is None:
            return (not self.training) and (dtype == torch.float32 or batch_size == 1)
        if fused_modconv == "inference_only":
            return not self.training
        return bool(fused_modconv)

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        force_fp32: bool = False,
        fused_modconv: bool | str | None = None,
        update_emas: bool = False,
        half_dtype: torch.dtype = torch.float16,
        **layer_kwargs,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, in_channels, r/2, r/2] (None for the first block), img [N, C, r/2, r/2] or None,
        ws [N, num_conv + num_torgb, w_dim] -> (x [N, out_channels, r, r], img [N, C, r, r] or None).

        half_dtype: what the `use_fp16` blocks run in: float16 (the official behaviour) or bfloat16 (ours; same
        range as float32, so no overflow guard is needed, 3 fewer mantissa bits than float16)."""
        if half_dtype not in HALF_DTYPES:
            raise ValueError(f"half_dtype must be one of {HALF_DTYPES}, got {half_dtype!r}")
        w_iter = iter(ws.unbind(dim=1))
        if self.fp32_on_cpu and ws.device.type != "cuda":
            force_fp32 = True
        use_fp16 = self.use_fp16 and not force_fp32
        dtype = half_dtype if use_fp16 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        cpu_fast = dtype == torch.float32 and cpu_fast_path_applies(ws)
        if cpu_fast:
            memory_format = torch.channels_last  # what the CPU fast path's convolutions run fastest in
        fused = self._fused(fused_modconv, dtype, ws.shape[0])

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.contiguous(memory_format=memory_format)
        else:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused, **layer_kwargs)
        elif self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused, **layer_kwargs)

        if img is not None:
            up_img = upsample2d_cpu(img, self.resample_filter) if cpu_fast and img.dtype == torch.float32 else None
            img = up_img if up_img is not None else upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == "skip":
            # bfloat16 blocks hand ToRGB float32 activations: the image sum is where rounding would accumulate
            # (measured on the reference networks: max error vs fp32 0.061 / 0.089 instead of 0.068 / 0.101).
            x_rgb = x.float() if x.dtype == torch.bfloat16 else x
            y = self.torgb(x_rgb, next(w_iter), fused_modconv=fused)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img.add_(y) if img is not None else y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, architecture={self.architecture}, use_fp16={self.use_fp16}"


@persistent_class
class SynthesisNetwork(nn.Module):
    """Stack of SynthesisBlocks from 4x4 to img_resolution; consumes ws [N, num_ws, w_dim]."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        **block_kwargs,
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            is_last = res == self.img_resolution
            block = SynthesisBlock(in_channels, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=is_last, use_fp16=(res >= fp16_resolution),
                                   **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f"b{res}", block)

    def block_ws_ranges(self) -> dict[int, tuple[int, int]]:
        """Which slice [start, stop) of ws each block reads (a block's ToRGB shares the next block's first w)."""
        ranges, w_idx = {}, 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            ranges[res] = (w_idx, w_idx + block.num_conv + block.num_torgb)
            w_idx += block.num_conv
        return ranges

    def forward(self, ws: torch.Tensor, **block_kwargs) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> img [N, img_channels, img_resolution, img_resolution] (float32)."""
        check_latents(ws, "ws", (None, self.num_ws, self.w_dim))
        ws = ws.to(torch.float32)
        x = img = None
        for res, (start, stop) in self.block_ws_ranges().items():
            x, img = getattr(self, f"b{res}")(x, img, ws[:, start:stop], **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}")
