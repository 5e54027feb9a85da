"""The five Unsup3D networks, with the official layer order so that state-dict keys equal the official ones.

Three architectures (Wu et al., "Unsupervised Learning of Probably Symmetric Deformable 3D Objects", CVPR 2020):

- `EDDeconv`  encoder-decoder, image `[N, cin, R, R]` -> map `[N, cout, R, R]` (netD: depth, cout 1, no final
  activation; netA: albedo, cout 3, final tanh). Encoder: stride-2 4x4 convs down to 4x4 (GroupNorm + LeakyReLU 0.2
  on all but the deepest), a 4x4 conv to `[N, zdim, 1, 1]` + ReLU. Decoder: 4x4 transposed conv to 4x4, a 3x3
  conv, then per octave a stride-2 transposed conv and a 3x3 conv (GroupNorm + ReLU after each), a nearest x2
  upsampling (64x64 only), 3x3, 5x5 convs (GroupNorm + ReLU) and a 5x5 conv to `cout`.
- `Encoder`   image -> vector `[N, cout]` in (-1, 1): stride-2 4x4 convs + ReLU down to 4x4, a 4x4 conv, ReLU, a
  1x1 conv, tanh (netL: cout 4, netV: cout 6).
- `ConfNet`   image -> two softplus maps `(conf_full [N, cout, R, R], conf_quarter [N, cout, R/4, R/4])`; the same
  encoder as EDDeconv, a decoder to R/4 (`network`), then `out_net1` (two stride-2 transposed convs and a 5x5 conv)
  and `out_net2` (one 3x3 conv). `cout` is 2: channel 0 for the reconstruction, channel 1 for its flipped twin.

No conv has a bias. GroupNorm has 16 * (channel multiplier) groups, i.e. nf/16 channels per group, so `nf` must be
a multiple of 16 for the nets that use GroupNorm (EDDeconv, ConfNet).

Resolutions: 64 is the official one (`image_size=64`; keys and shapes equal the official nets'). For the 32x32
synthetic generator, `image_size=32` drops the outermost 64x64 level of every net:
  - encoders (all three architectures) drop their first stride-2 stage: the input conv maps `cin` straight to
    `2*nf` channels (with GroupNorm where the 64x64 net has it), then 4*nf and 8*nf as in the official net;
  - EDDeconv drops its nearest x2 upsampling (its last three convs run at 32x32); every other layer keeps its
    channel counts, so its layer indices shift by 3 (encoder) and by 1 more after the upsampling;
  - ConfNet drops the last transposed-conv stage of its trunk, so the trunk ends at 8x8 (R/4) with 4*nf channels
    and `out_net1` / `out_net2` read 4*nf channels; its second map stays at R/4 (8x8).
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import UsageError

__all__ = ["SUPPORTED_IMAGE_SIZES", "ConfNet", "EDDeconv", "Encoder", "encoder_multipliers"]

SUPPORTED_IMAGE_SIZES = (32, 64)


def encoder_multipliers(image_size: int) -> tuple[int, ...]:
    """Channel multipliers (x nf) of the stride-2 stages from `image_size` down to 4x4: (1, 2, 4, 8) at 64."""
    if image_size == 64:
        return (1, 2, 4, 8)
    if image_size == 32:
        return (2, 4, 8)
    raise UsageError(f"Unsup3D networks support image_size {SUPPORTED_IMAGE_SIZES}, got {image_size!r}")


def _conv(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size=kernel, stride=stride, padding=padding, bias=False)


def _deconv(cin: int, cout: int, stride: int = 2, padding: int = 1) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=stride, padding=padding, bias=False)


def _norm(mult: int, nf: int) -> nn.GroupNorm:
    return nn.GroupNorm(16 * mult, nf * mult)


def _image_encoder(cin: int, nf: int, zdim: int, image_size: int) -> list[nn.Module]:
    """EDDeconv / ConfNet encoder: `[N, cin, R, R]` -> `[N, zdim, 1, 1]`."""
    layers: list[nn.Module] = []
    mults = encoder_multipliers(image_size)
    channels = cin
    for mult in mults:
        layers.append(_conv(channels, nf * mult, 4, stride=2, padding=1))
        if mult != mults[-1]:
            layers.append(_norm(mult, nf))
        layers.append(nn.LeakyReLU(0.2))
        channels = nf * mult
    layers += [_conv(channels, zdim, 4), nn.ReLU()]
    return layers


class EDDeconv(nn.Module):
    """Encoder-decoder `[N, cin, R, R]` -> `[N, cout, R, R]` (official Unsup3D netD / netA; see module docstring).

    Parameters: cin, cout channels; zdim bottleneck width; nf base width (multiple of 16); tanh: end in tanh
    (netA) or not (netD); image_size 64 (official) or 32.
    """

    def __init__(self, cin: int = 3, cout: int = 1, zdim: int = 256, nf: int = 64, tanh: bool = True,
                 image_size: int = 64) -> None:
        super().__init__()
        self.cin, self.cout, self.zdim, self.nf, self.tanh, self.image_size = cin, cout, zdim, nf, tanh, image_size
        layers = _image_encoder(cin, nf, zdim, image_size)
        layers += [_deconv(zdim, nf * 8, stride=1, padding=0), nn.ReLU(),
                   _conv(nf * 8, nf * 8, 3, padding=1), nn.ReLU()]
        for mult in (4, 2, 1):  # 4 -> 8 -> 16 -> 32
            layers += [_deconv(nf * mult * 2, nf * mult), _norm(mult, nf), nn.ReLU(),
                       _conv(nf * mult, nf * mult, 3, padding=1), _norm(mult, nf), nn.ReLU()]
        if image_size == 64:
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
        layers += [_conv(nf, nf, 3, padding=1), _norm(1, nf), nn.ReLU(),
                   _conv(nf, nf, 5, padding=2), _norm(1, nf), nn.ReLU(),
                   _conv(nf, cout, 5, padding=2)]
        if tanh:
            layers.append(nn.Tanh())
        self.network = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """`[N, cin, R, R]` -> `[N, cout, R, R]`."""
        return self.network(img)


class Encoder(nn.Module):
    """Image `[N, cin, R, R]` -> vector `[N, cout]` in (-1, 1) (official Unsup3D netL / netV)."""

    def __init__(self, cin: int = 3, cout: int = 4, nf: int = 32, image_size: int = 64) -> None:
        super().__init__()
        self.cin, self.cout, self.nf, self.image_size = cin, cout, nf, image_size
        layers: list[nn.Module] = []
        channels = cin
        for mult in encoder_multipliers(image_size):
            layers += [_conv(channels, nf * mult, 4, stride=2, padding=1), nn.ReLU()]
            channels = nf * mult
        layers += [_conv(channels, nf * 8, 4), nn.ReLU(), _conv(nf * 8, cout, 1), nn.Tanh()]
        self.network = nn.Sequential(*layers)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """`[N, cin, R, R]` -> `[N, cout]`."""
        return self.network(img).reshape(img.shape[0], -1)


class ConfNet(nn.Module):
    """Confidence maps: image -> (`[N, cout, R, R]`, `[N, cout, R/4, R/4]`), both softplus (official Unsup3D netC)."""

    def __init__(self, cin: int = 3, cout: int = 2, zdim: int = 128, nf: int = 64, image_size: int = 64) -> None:
        super().__init__()
        self.cin, self.cout, self.zdim, self.nf, self.image_size = cin, cout, zdim, nf, image_size
        layers = _image_encoder(cin, nf, zdim, image_size)
        layers += [_deconv(zdim, nf * 8, stride=1, padding=0), nn.ReLU()]
        trunk = (4, 2) if image_size == 64 else (4,)  # decoder stops at R/4
        for mult in trunk:
            layers += [_deconv(nf * mult * 2, nf * mult), _norm(mult, nf), nn.ReLU()]
        self.network = nn.Sequential(*layers)
        width = nf * trunk[-1]
        self.out_net1 = nn.Sequential(_deconv(width, nf), _norm(1, nf), nn.ReLU(),
                                      _deconv(nf, nf), _norm(1, nf), nn.ReLU(),
                                      _conv(nf, cout, 5, padding=2), nn.Softplus())
        self.out_net2 = nn.Sequential(_conv(width, cout, 3, padding=1), nn.Softplus())

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`[N, cin, R, R]` -> (full-resolution map `[N, cout, R, R]`, quarter map `[N, cout, R/4, R/4]`)."""
        features = self.network(img)
        return self.out_net1(features), self.out_net2(features)
