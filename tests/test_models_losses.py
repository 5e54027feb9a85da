"""InfoNCE: known answers and a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from stylegan_disentangle.models import info_nce


@pytest.mark.parametrize("tau", [0.1, 0.5, 1.0])
def test_aligned_orthonormal_codes_give_the_closed_form(tau):
    # q = k = orthonormal rows: logits are 1/tau on the diagonal and 0 elsewhere.
    n = 5
    q = torch.eye(8, dtype=torch.float64)[:n] * 3.0  # scale is removed by the normalization
    expected = math.log(1 + (n - 1) * math.exp(-1 / tau))
    assert info_nce(q, q.clone(), temperature=tau).item() == pytest.approx(expected, rel=1e-12)
    assert info_nce(q, q.clone(), temperature=tau, symmetric=False).item() == pytest.approx(expected, rel=1e-12)


def test_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(4, 3, generator=gen, dtype=torch.float64), torch.randn(4, 3, generator=gen, dtype=torch.float64)
    tau = 0.3

    def one_way(a, b):
        total = 0.0
        for i in range(len(a)):
            sims = [float(a[i] @ b[j] / (a[i].norm() * b[j].norm())) / tau for j in range(len(b))]
            total += -sims[i] + math.log(sum(math.exp(s) for s in sims))
        return total / len(a)

    assert info_nce(q, k, tau, symmetric=False).item() == pytest.approx(one_way(q, k), rel=1e-12)
    assert info_nce(q, k, tau).item() == pytest.approx((one_way(q, k) + one_way(k, q)) / 2, rel=1e-12)


def test_swapped_positives_cost_more_than_aligned_ones():
    q = torch.eye(4, dtype=torch.float64)
    assert info_nce(q, q.flip(0), 0.1).item() > info_nce(q, q, 0.1).item() + 5  # 1/tau = 10 nats apart, about


@pytest.mark.parametrize("q, k, tau, match", [
    (torch.zeros(4, 3), torch.zeros(4, 2), 0.1, "same shape"),
    (torch.zeros(1, 3), torch.zeros(1, 3), 0.1, "at least 2"),
    (torch.zeros(4, 3), torch.zeros(4, 3), 0.0, "temperature"),
])
def test_bad_input_is_refused(q, k, tau, match):
    with pytest.raises(ValueError, match=match):
        info_nce(q, k, tau)
