"""Pose-pair agreement: the same face seen from two poses must decompose to one canonical depth and albedo.

A single view leaves Unsup3D's depth relief and its rotation angles free to trade (a face k times deeper turned by
about 1/k of the angle makes nearly the same image); several views of one face under one shape do not. The frozen
generator can show one face under several poses: move its w along a pose direction of W. No labels are needed for
that direction: it is the ridge regression of the decomposer's own yaw (or pitch) on w, as in the 3D-coupled
directions of `directions/three_d_coupled.py`.

`fit_pose_directions` finds the directions once (saved with the run, so a resumed run uses the same ones);
`pose_pair_loss` draws fresh faces, moves each along one of the directions by up to `POSE_STEP_SD` standard deviations
of the data's spread along it, and asks the two decompositions for the same canonical depth and albedo (both sides
carry gradients, as the jitter agreement does).
"""

from __future__ import annotations

import torch
from torch import nn

from .model import Unsup3DDecomposer
from .reconstruction import reconstruct

__all__ = ["POSE_LABELS", "POSE_STEP_SD", "fit_pose_directions", "pose_pair_loss", "scaled_ridge_direction"]

POSE_LABELS = ("yaw", "pitch")
POSE_STEP_SD = 1.5  # a pair's pose step: uniform within +-1.5 standard deviations of w along the direction
RIDGE_ALPHA = 1.0


@torch.no_grad()
def fit_pose_directions(dec: Unsup3DDecomposer, G: nn.Module, n: int = 4096, seed: int = 0,
                        batch_size: int = 512) -> torch.Tensor:
    """Directions [len(POSE_LABELS), w_dim] in W: each the unit ridge direction of one pose label of `dec` on w
    (n fresh samples of G), scaled to the standard deviation of the samples' w along it."""
    from .labeler import scalar_labels
    from .trainer import draw_images

    device = next(dec.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    ws, labels = [], {k: [] for k in POSE_LABELS}
    was_training = dec.training
    dec.eval()
    for start in range(0, n, batch_size):
        w, img = draw_images(G, min(batch_size, n - start), gen, device=device)
        out = scalar_labels(reconstruct(dec, img, flip=False))
        ws.append(w[:, 0].double().cpu())
        for k in POSE_LABELS:
            labels[k].append(out[k].double().cpu())
    dec.train(was_training)
    x = torch.cat(ws)
    return torch.stack([scaled_ridge_direction(x, torch.cat(labels[k])) for k in POSE_LABELS]).float()


def scaled_ridge_direction(x: torch.Tensor, y: torch.Tensor, alpha: float = RIDGE_ALPHA) -> torch.Tensor:
    """The unit ridge-regression direction of y [n] on x [n, d] (both centred), times the standard deviation of
    x along it: a step of 1 moves a sample by one spread of the data in that direction."""
    x = x - x.mean(0)
    coef = torch.linalg.solve(x.T @ x + alpha * torch.eye(x.shape[1], dtype=x.dtype), x.T @ (y - y.mean()))
    unit = coef / coef.norm()
    return unit * (x @ unit).std()


def pose_pair_loss(dec: Unsup3DDecomposer, G: nn.Module, directions: torch.Tensor, gen: torch.Generator,
                   n: int) -> torch.Tensor:
    """Mean L1 between the canonical depth (over its range) and albedo of n fresh faces and of the same faces
    moved along one random pose direction each (see the module docstring)."""
    from .trainer import draw_images

    device = directions.device
    ws, img = draw_images(G, n, gen, device=device)
    pick = torch.randint(0, directions.shape[0], [n], generator=gen).to(device)
    step = ((torch.rand([n, 1], generator=gen) * 2 - 1) * POSE_STEP_SD).to(device)
    with torch.no_grad():
        moved = G.synthesis(ws + (step * directions[pick]).unsqueeze(1), noise_mode="const").float().clamp(-1, 1)
    est = dec.decompose(torch.cat([img, moved]), parts=["depth", "albedo"])
    depth, albedo = est["canon_depth"].split(n), est["canon_albedo"].split(n)
    return ((depth[0] - depth[1]).abs().mean() / (dec.max_depth - dec.min_depth)
            + (albedo[0] - albedo[1]).abs().mean())
