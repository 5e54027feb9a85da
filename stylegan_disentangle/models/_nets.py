"""Small building blocks shared by the W-space models."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["LinearPlusMLP", "reverse_gradient"]


class LinearPlusMLP(nn.Module):
    """y = A x + MLP(x): a linear map with a nonlinear correction (hidden = 0: linear only).

    The MLP's last layer starts at zero, so a fresh net is exactly linear and the correction grows only where the
    data ask for it.
    """

    def __init__(self, d_in: int, d_out: int, hidden: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d_in, d_out)
        self.mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.SiLU(), nn.Linear(hidden, d_out)) if hidden else None
        if self.mlp is not None:
            nn.init.zeros_(self.mlp[2].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + (self.mlp(x) if self.mlp is not None else 0)


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return -grad


def reverse_gradient(x: torch.Tensor) -> torch.Tensor:
    """x unchanged going forward, its gradient negated going back: one loss then trains a discriminator after it to
    minimize the loss and whatever made x to maximize it (adversarial training under one optimizer)."""
    return _ReverseGradient.apply(x)
