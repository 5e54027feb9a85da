"""The StyleGAN2 discriminator: img [N, C, R, R] (+ class label c) -> logits [N, 1].

Architectures 'orig', 'skip' and 'resnet' (default); a minibatch-stddev epilogue; conditional nets project the
final features onto a mapped label embedding (cmap). Parameter names follow the official state dict.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import LatentError
from ..ops import downsample2d, setup_filter
from .checks import check_latents
from .layers import DEFAULT_FILTER, Conv2dLayer, FullyConnectedLayer
from .mapping import MappingNetwork
from .persistence import persistent_class
from .synthesis import ARCHITECTURES


@persistent_class
class DiscriminatorBlock(nn.Module):
    """One resolution: [fromrgb], conv0, conv1 (down x2), [resnet skip]; layers below `freeze_layers` are frozen."""

    def __init__(
        self,
        in_channels: int,
        tmp_channels: int,
        out_channels: int,
        resolution: int,
        img_channels: int,
        first_layer_idx: int,
        architecture: str = "resnet",
        activation: str = "lrelu",
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        use_fp16: bool = False,
        fp16_channels_last: bool = False,
        freeze_layers: int = 0,
        fp32_on_cpu: bool = False,
    ) -> None:
        super().__init__()
        if in_channels not in (0, tmp_channels):
            raise ValueError(f"in_channels must be 0 or tmp_channels ({tmp_channels}), got {in_channels}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = use_fp16 and fp16_channels_last
        # The StyleGAN3 repo's classes run fp16 blocks in fp32 on CPU; StyleGAN2-ADA's run them in fp16 everywhere.
        self.fp32_on_cpu = fp32_on_cpu
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_layers = 0

        def next_trainable() -> bool:
            trainable = first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return trainable

        common = dict(activation=activation, conv_clamp=conv_clamp, channels_last=self.channels_last)
        if in_channels == 0 or architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, trainable=next_trainable(), **common)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, trainable=next_trainable(), **common)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, down=2, trainable=next_trainable(),
                                 resample_filter=resample_filter, **common)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, force_fp32: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [N, in_channels, r, r] or None, img [N, C, r, r] or None -> (x [N, out, r/2, r/2], img or None)."""
        if self.fp32_on_cpu and (x if x is not None else img).device.type != "cuda":
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if x is not None:
            x = x.to(dtype=dtype, memory_format=memory_format)

        if self.in_channels == 0 or self.architecture == "skip":
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None

        if self.architecture == "resnet":
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)
        return x, img


@persistent_class
class MinibatchStdLayer(nn.Module):
    """Append the std of features across groups of `group_size` samples as `num_channels` extra channels."""

    def __init__(self, group_size: int | None, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] -> [N, C + num_channels, H, W]; N must be divisible by the group size."""
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        if n % g != 0:
            raise ValueError(f"batch size {n} must be divisible by the minibatch-std group size {g}")
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])
        y = y.reshape(-1, f, 1, 1)
        y = y.repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


@persistent_class
class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: [fromrgb], minibatch std, conv, fc, out (projected onto cmap when conditional)."""

    def __init__(
        self,
        in_channels: int,
        cmap_dim: int,
        resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        mbstd_group_size: int | None = 4,
        mbstd_num_channels: int = 1,
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution**2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(
        self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None, force_fp32: bool = False
    ) -> torch.Tensor:
        """x [N, in_channels, 4, 4] -> logits [N, 1]; always float32."""
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == "skip":
            x = x + self.fromrgb(img.to(dtype=torch.float32, memory_format=torch.contiguous_format))
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)
        if self.cmap_dim > 0:
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return x


@persistent_class
class Discriminator(nn.Module):
    """img [N, img_channels, R, R], c [N, c_dim] -> logits [N, 1]."""

    def __init__(
        self,
        c_dim: int,
        img_resolution: int,
        img_channels: int,
        architecture: str = "resnet",
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,
        conv_clamp: float | None = None,
        cmap_dim: int | None = None,
        block_kwargs: dict | None = None,
        mapping_kwargs: dict | None = None,
        epilogue_kwargs: dict | None = None,
    ) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        if cmap_dim is None:
            cmap_dim = channels[4]
        if c_dim == 0:
            cmap_dim = 0

        common = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels[res] if res < img_resolution else 0
            block = DiscriminatorBlock(in_channels, channels[res], channels[res // 2], resolution=res,
                                       first_layer_idx=layer_idx, use_fp16=(res >= fp16_resolution),
                                       **(block_kwargs or {}), **common)
            setattr(self, f"b{res}", block)
            layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4, **(epilogue_kwargs or {}),
                                        **common)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None, update_emas: bool = False,
                **block_kwargs) -> torch.Tensor:
        """img [N, C, R, R] in [-1, 1], c [N, c_dim] -> logits [N, 1]."""
        expected = (self.img_channels, self.img_resolution, self.img_resolution)
        if not isinstance(img, torch.Tensor):
            raise LatentError(f"img must be a torch.Tensor, got {type(img).__name__}")
        if img.ndim != 4 or tuple(img.shape[1:]) != expected:
            raise ValueError(f"img must be [N, {', '.join(map(str, expected))}], got {list(img.shape)}")
        if self.c_dim > 0:  # one label per image, not one broadcast over the batch
            if c is None:
                raise LatentError(f"this discriminator is conditional: pass c of shape [{img.shape[0]}, "
                                  f"{self.c_dim}]")
            check_latents(c, "c", (img.shape[0], self.c_dim))
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f"b{res}")(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap)

    def extra_repr(self) -> str:
        return f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}"
