"""The locality bound of `scripts/bench_three_d_coupled.py` on a linear generator whose answer is known."""

from __future__ import annotations

import numpy as np
import torch

from tests.helpers import load_script


class _LinearG:
    """A 2x2-pixel generator, linear in w: axis 0 changes pixels (0, 1), axis 1 pixels (1, 2), axis 2 pixels
    (2, 3), the same in every channel."""

    w_dim, num_ws, img_resolution = 3, 2, 2
    basis = torch.tensor([[1.0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]])

    def synthesis(self, ws, noise_mode="const", force_fp32=True):
        pixels = (ws[:, 0] @ self.basis.to(ws.dtype)).reshape(-1, 1, 2, 2)
        return pixels.repeat(1, 3, 1, 1)


class _Oracle:
    """Image-space part masks: the nose is pixel 0, the eyes pixel 3, every other part the whole image."""

    def __init__(self, part_names):
        masks = torch.ones(len(part_names), 4)
        masks[part_names.index("nose")] = torch.tensor([1.0, 0, 0, 0])
        masks[part_names.index("eyes")] = torch.tensor([0.0, 0, 0, 1])
        self.masks = masks.reshape(-1, 2, 2)

    def intrinsics(self, ws, resolution):
        return {"masks": self.masks.expand(ws.shape[0], -1, -1, -1)}


def test_locality_bound_finds_the_best_direction_of_a_linear_generator():
    """For pixel 0 the change of u is (u0, u0 + u1, u1 + u2, u2). Its largest squared share is 3/4 (u = (1, -2/3,
    1/3), a generalised eigenproblem), and its largest L1 share 1/2: by the triangle inequality
    |u0 + u1| + |u1 + u2| + |u2| >= |u0|. Pixel 3 is the mirror image; a part that covers the image gets 1."""
    bench = load_script("bench_three_d_coupled")
    oracle = _Oracle(list(bench.PART_NAMES))
    w = np.random.default_rng(0).normal(size=(4, 3))
    out = bench.locality_bound(_LinearG(), oracle, w, faces=4, steps=300)
    assert set(out) == set(bench.PART_FACTORS)
    # the Jacobian is a float32 forward difference (step 0.05, |image| ~ 3): entries off by ~2 * 6e-8 * 3 / 0.05
    tol = 1e-5
    for part in ("nose", "eyes"):
        assert abs(out[part]["max_squared_share"] - 0.75) < tol
        assert 0.5 - 1e-3 < out[part]["max_locality"] <= 0.5 + tol  # Adam on the sphere, from the eigenvector
        assert out[part]["mask_area"] == 0.25
    for part in set(out) - {"nose", "eyes"}:
        assert abs(out[part]["max_squared_share"] - 1) < tol and abs(out[part]["max_locality"] - 1) < tol


class _LayeredG(_LinearG):
    """The same image for the same w on both ws layers (layer 0's basis A plus layer 1's B is _LinearG's basis),
    but layer 1 alone moves pixel 1 only, so a W+ direction (A's axis 0 against twice B's axis 0) moves pixel 0
    alone, and the row space of A and B is every image."""

    layer1 = torch.tensor([[0.0, -1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    layer0 = _LinearG.basis - layer1

    def synthesis(self, ws, noise_mode="const", force_fp32=True):
        pixels = (ws[:, 0] @ self.layer0.to(ws.dtype) + ws[:, 1] @ self.layer1.to(ws.dtype)).reshape(-1, 1, 2, 2)
        return pixels.repeat(1, 3, 1, 1)


def test_locality_bound_in_w_plus_reaches_what_w_cannot():
    """In W the layered generator is _LinearG (share 3/4, locality 1/2 for pixels 0 and 3); in W+ its layers move
    pixel 0 and pixel 3 alone, so both bounds are 1."""
    bench = load_script("bench_three_d_coupled")
    oracle = _Oracle(list(bench.PART_NAMES))
    w = np.random.default_rng(0).normal(size=(4, 3))
    in_w = bench.locality_bound(_LayeredG(), oracle, w, faces=4, steps=300, space="w")
    in_w_plus = bench.locality_bound(_LayeredG(), oracle, w, faces=4, steps=300, space="w+")
    tol = 1e-5  # float32 forward differences, as above
    for part in ("nose", "eyes"):
        assert abs(in_w[part]["max_squared_share"] - 0.75) < tol and in_w[part]["max_locality"] <= 0.5 + tol
        assert abs(in_w_plus[part]["max_squared_share"] - 1) < tol
        assert in_w_plus[part]["max_locality"] > 1 - 1e-3
    try:
        bench.locality_bound(_LayeredG(), oracle, w, faces=4, space="s")
    except ValueError as exc:
        assert "'w' or 'w+'" in str(exc)
    else:
        raise AssertionError("space='s' was accepted")
