"""Scoring W-space models against known factors (the synthetic world's oracle, or any labeler of ws).

- `linear_probe_r2`: held-out R^2 of a linear regression from codes to each factor (the issue's probe).
- `swap_factor_groups`: a ground-truth recombination set — w of sample A with the factors `take` of sample B,
  built with the true factor directions (min-norm move) — on which the two factor groups are independent, so a
  probe measures what a code *encodes*, not what it inherits from correlated factors of W's samples;
  `swap_readouts` does the same on any directions (e.g. found ones).
- `transfer_errors`: after a transfer, mean |factor(result) - factor(target)| over the kept factors and
  mean |factor(result) - factor(source)| over the taken ones (normalized factor units).
- the naive transfer baselines: `copy_coarse_layers` and `projected_difference`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LinearRegression

from ..errors import LatentError

__all__ = ["copy_coarse_layers", "linear_probe_r2", "projected_difference", "swap_factor_groups", "swap_readouts",
           "transfer_errors"]


def _np(x: Any) -> np.ndarray:
    return (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)).astype(np.float64)


def linear_probe_r2(codes: Any, factors: Any, train_fraction: float = 0.7, seed: int = 0) -> np.ndarray:
    """Held-out R^2 [F] of least-squares linear probes codes [N, K] -> factors [N, F] (random split, `seed`)."""
    x, y = _np(codes), _np(factors)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise LatentError(f"probe needs codes [N, K] and factors [N, F]; got {x.shape} and {y.shape}")
    perm = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(train_fraction * len(x)))
    tr, te = perm[:n_train], perm[n_train:]
    if len(tr) <= x.shape[1] or len(te) < 2:
        raise LatentError(f"probe needs more than {x.shape[1]} training and 2 test samples; got {len(x)} samples")
    pred = LinearRegression().fit(x[tr], y[tr]).predict(x[te])
    resid = ((y[te] - pred) ** 2).sum(0)
    total = ((y[te] - y[te].mean(0)) ** 2).sum(0)
    return 1 - resid / np.where(total > 0, total, 1.0)


def swap_factor_groups(factor_map: Any, w_a: Any, w_b: Any, take: Sequence[int]) -> torch.Tensor:
    """w [N, w_dim]: each w_a [N, w_dim] moved (minimum-norm, within the span of the true factor directions) so that
    its standardized projections on the factors `take` equal w_b's and all others stay. `factor_map` needs
    `directions` [F, w_dim] (a synthetic FactorMap)."""
    return swap_readouts(factor_map.directions, w_a, w_b, take)


def swap_readouts(directions: Any, w_a: Any, w_b: Any, take: Sequence[int]) -> torch.Tensor:
    """w [N, w_dim]: each w_a moved (minimum norm, within the span of `directions` [F, w_dim]) so that its readouts
    `directions[j] . w` for j in `take` equal w_b's and the other readouts stay: the ideal disentangled transfer
    on those directions (on the true factor directions: `swap_factor_groups`)."""
    d = _np(directions)
    a, b = _np(w_a), _np(w_b)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != d.shape[1]:
        raise LatentError(f"w_a and w_b must both be [N, {d.shape[1]}]; got {a.shape} and {b.shape}")
    mask = np.zeros(len(d))
    mask[list(take)] = 1.0
    target = ((b - a) @ d.T) * mask  # [N, F] change of d_j . w wanted (unstandardized: sigma cancels)
    move = target @ np.linalg.pinv(d).T  # min-norm solution of d @ move = target
    return torch.from_numpy((a + move).astype(np.float32))


def transfer_errors(result_ws: Any, target_ws: Any, source_ws: Any, factor_fn: Callable[[torch.Tensor], Any],
                    keep: Sequence[int], take: Sequence[int]) -> dict[str, float]:
    """{'keep_error', 'take_error'}: mean |f(result) - f(target)| over `keep`, |f(result) - f(source)| over `take`."""
    f = [_np(factor_fn(torch.as_tensor(x))) for x in (result_ws, target_ws, source_ws)]
    return {"keep_error": float(np.abs(f[0][:, keep] - f[1][:, keep]).mean()),
            "take_error": float(np.abs(f[0][:, take] - f[2][:, take]).mean())}


def copy_coarse_layers(target_ws: torch.Tensor, source_ws: torch.Tensor, coarse: int) -> torch.Tensor:
    """Baseline: the target's ws with layers [0, coarse) taken from the source (style mixing)."""
    if target_ws.shape != source_ws.shape or target_ws.ndim != 3:
        raise LatentError(f"target and source must both be ws [N, num_ws, w_dim]; got {tuple(target_ws.shape)} and "
                          f"{tuple(source_ws.shape)}")
    out = target_ws.clone()
    out[:, :coarse] = source_ws[:, :coarse]
    return out


def projected_difference(target_ws: torch.Tensor, source_ws: torch.Tensor, directions: Any) -> torch.Tensor:
    """Baseline: target + (source - target) projected orthogonally on the span of `directions` [K, w_dim]."""
    v = _np(directions)
    u, s, _ = np.linalg.svd(v.T, full_matrices=False)
    basis = torch.from_numpy(u[:, s > 1e-6 * s.max()].T.astype(np.float32)).to(target_ws.device)
    delta = source_ws - target_ws
    return target_ws + (delta @ basis.T) @ basis
