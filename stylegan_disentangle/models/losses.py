"""Contrastive losses for W-space models.

InfoNCE (van den Oord et al. 2018; the symmetric form of SimCLR / CLIP). For codes q, k [N, D] whose rows i are two
views of the same thing (positives) and rows j != i of different things (negatives):

    u_i = q_i / |q_i|,  v_j = k_j / |k_j|,  logits_ij = u_i . v_j / tau
    L(q, k) = mean_i [ -logits_ii + log sum_j exp(logits_ij) ]            (cross-entropy with target j = i)
    info_nce(q, k) = (L(q, k) + L(k, q)) / 2                              (symmetric, the default)

Known answer: orthonormal, perfectly aligned codes (q = k, rows orthonormal) give logits_ii = 1/tau and 0 elsewhere,
so the loss is log(1 + (N - 1) exp(-1/tau)); its floor for any codes is 0 and for random codes about log N.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["info_nce"]


def info_nce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.1, symmetric: bool = True) -> torch.Tensor:
    """InfoNCE of two views q, k [N, D] (row i of q and of k are positives; all other rows of k are negatives).

    Returns a scalar tensor (nats). `temperature` > 0 divides the cosine similarities.
    """
    if q.ndim != 2 or q.shape != k.shape:
        raise ValueError(f"info_nce needs two code batches of the same shape [N, D]; got {tuple(q.shape)} and "
                         f"{tuple(k.shape)}")
    if q.shape[0] < 2:
        raise ValueError(f"info_nce needs at least 2 rows (one positive and one negative); got {q.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(q, dim=1) @ F.normalize(k, dim=1).T / temperature
    target = torch.arange(q.shape[0], device=q.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = (loss + F.cross_entropy(logits.T, target)) / 2
    return loss
