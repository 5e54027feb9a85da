"""Equalized-learning-rate building blocks shared by the generator and the discriminator.

Weights are stored with unit variance and scaled at run time (`weight_gain = lr_multiplier / sqrt(fan_in)`), as in
the official StyleGAN2 code, so that parameter tensors (and their names) match the official state dict exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..ops import bias_act, conv2d_resample, setup_filter
from ..ops.bias_act import Activation, activation_funcs
from ..ops.cpu_synthesis import HOMOGENEOUS_ACTIVATIONS, cpu_fast_path_applies, derived, needs_grad
from .persistence import persistent_class

DEFAULT_FILTER = (1, 3, 3, 1)


def check_activation(activation: str) -> Activation:
    """The named activation of `ops.bias_act`, refused by name when a layer is built (not at its first forward)."""
    if activation not in activation_funcs:
        raise ValueError(f"unknown activation {activation!r}; expected one of {sorted(activation_funcs)}")
    return activation_funcs[activation]


@persistent_class
class FullyConnectedLayer(nn.Module):
    """y = act(x @ (weight * weight_gain).T + bias * bias_gain); x [N, in_features] -> [N, out_features]."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1,
        bias_init: float = 0,
    ) -> None:
        super().__init__()
        check_activation(activation)
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (self.activation in HOMOGENEOUS_ACTIVATIONS and cpu_fast_path_applies(x)
                and not needs_grad(x, self.weight, self.bias)):
            return self._forward_cpu_inference(x)
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x.matmul(w.t()), b, act=self.activation)

    def _forward_cpu_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same layer in two ops (float32 CPU, no autograd): the gains, including the activation's
        (act(g y) = g act(y) for linear / relu / lrelu), live in weight and bias copies kept between calls."""
        gain = activation_funcs[self.activation].def_gain
        w = derived(self.weight, f"fc_t{self.weight_gain * gain!r}", lambda t: (t * (self.weight_gain * gain)).t())
        if self.bias is None:
            y = x.matmul(w)
        else:
            b = derived(self.bias, f"fc{self.bias_gain * gain!r}", lambda t: t * (self.bias_gain * gain))
            y = torch.addmm(b.unsqueeze(0), x, w)
        if self.activation == "lrelu":
            return F.leaky_relu_(y, activation_funcs["lrelu"].def_alpha)
        return y.relu_() if self.activation == "relu" else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"


@persistent_class
class Conv2dLayer(nn.Module):
    """Equalized-lr 2-D convolution with optional FIR up/down-sampling, bias, activation and clamp."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        bias: bool = True,
        activation: str = "linear",
        up: int = 1,
        down: int = 1,
        resample_filter: Sequence[float] = DEFAULT_FILTER,
        conv_clamp: float | None = None,
        channels_last: bool = False,
        trainable: bool = True,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size**2))
        self.act_gain = check_activation(activation).def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias_value = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias_value is not None else None
        else:
            self.register_buffer("weight", weight)
            if bias_value is not None:
                self.register_buffer("bias", bias_value)
            else:
                self.bias = None

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        """x [N, in_channels, H, W] -> [N, out_channels, H*up/down, W*up/down]."""
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample(x, w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                            padding=self.padding, flip_weight=(self.up == 1))
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
                f"up={self.up}, down={self.down}")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x so that the mean of its squares along `dim` is 1 (pixel norm)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
