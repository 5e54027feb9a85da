"""Images are synthesized a bounded number at a time (`render_chunk_size`): a bank chunk, an edit render or a
decomposer's input batch of a large network is never held whole at full size, and the chunking changes no value."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis.edit import render
from stylegan_disentangle.labels import labeler_from_callable
from stylegan_disentangle.latents import LatentBank, render_chunk_size, sample_latents, sampling, synthesize_in_chunks
from stylegan_disentangle.networks import Generator

# float32 images in [-1, 1] from convolutions whose summation order may depend on the batch size: a few ulps of the
# accumulated sums (at most ~1e-6 here), far below any label or pixel difference that matters
ATOL = 1e-5


def _tiny() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2),
                     synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


class _Recorder:
    """Wraps G.synthesis and records how many codes each call got."""

    def __init__(self, G):
        self.sizes: list[int] = []
        self._synthesis = G.synthesis.forward

        def forward(ws, *args, **kwargs):
            self.sizes.append(len(ws))
            return self._synthesis(ws, *args, **kwargs)

        G.synthesis.forward = forward


def _mean_rgb():
    return labeler_from_callable(lambda img: {"r": img[:, 0].mean((1, 2)), "g": img[:, 1].mean((1, 2))},
                                 ["r", "g"])


@pytest.mark.parametrize(("resolution", "requested", "expected"),
                         [(32, 256, 256), (256, 256, 16), (512, 256, 4), (1024, 256, 1), (1024, 0, 1), (256, 5, 5)])
def test_chunk_size_keeps_one_call_under_the_pixel_budget(resolution, requested, expected):
    class _G:
        img_resolution = resolution

    assert render_chunk_size(_G(), requested) == expected
    assert expected * resolution**2 <= max(sampling.RENDER_PIXEL_BUDGET, resolution**2)


def test_bank_labels_are_the_same_rendered_in_small_chunks(tmp_path, monkeypatch):
    G = _tiny()
    whole = LatentBank.create(G, tmp_path / "whole", 20, seed=3, labelers=[_mean_rgb()], batch_size=20)
    monkeypatch.setattr(sampling, "RENDER_PIXEL_BUDGET", 3 * 16 * 16)  # three 16x16 images per synthesis call
    rec = _Recorder(G)
    chunked = LatentBank.create(G, tmp_path / "chunked", 20, seed=3, labelers=[_mean_rgb()], batch_size=20)
    assert rec.sizes == [3] * 6 + [2]
    np.testing.assert_array_equal(chunked.w, whole.w)
    for name in ("r", "g"):
        np.testing.assert_allclose(chunked.labels[name], whole.labels[name], rtol=0, atol=ATOL)
        assert np.ptp(whole.labels[name]) > 100 * ATOL  # the labels vary: the comparison can see a lost row


def test_edit_render_and_chunked_synthesis_hold_at_most_the_budget(monkeypatch):
    G = _tiny()
    ws = sample_latents(G, list(range(10))).ws
    full = G.synthesis(ws, noise_mode="const", force_fp32=True)
    monkeypatch.setattr(sampling, "RENDER_PIXEL_BUDGET", 4 * 16 * 16)
    rec = _Recorder(G)
    out = render(G, ws, batch_size=32)
    assert rec.sizes == [4, 4, 2]
    torch.testing.assert_close(out, full, rtol=0, atol=ATOL)
    rec.sizes.clear()
    pooled = synthesize_in_chunks(G, ws, force_fp32=True, chunk=3,
                                  postprocess=lambda im: torch.nn.functional.avg_pool2d(im, 4))
    assert rec.sizes == [3, 3, 3, 1] and pooled.shape == (10, 3, 4, 4)
    torch.testing.assert_close(pooled, torch.nn.functional.avg_pool2d(full, 4), rtol=0, atol=ATOL)


def test_the_decomposer_trainers_draws_render_in_chunks_and_equal_one_call(monkeypatch):
    from stylegan_disentangle.labels.decomposer.trainer import draw_images

    G = _tiny()
    ws_whole, whole = draw_images(G, 7, torch.Generator().manual_seed(2))
    monkeypatch.setattr(sampling, "RENDER_PIXEL_BUDGET", 3 * 16 * 16)
    rec = _Recorder(G)
    ws_chunked, chunked = draw_images(G, 7, torch.Generator().manual_seed(2))
    assert rec.sizes == [3, 3, 1]
    assert torch.equal(ws_chunked, ws_whole)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=ATOL)


def test_bank_progress_moves_per_rendered_sub_chunk(tmp_path, monkeypatch):
    """The bar advances after each synthesis call's codes are labelled, not once per bank chunk: at 1024x1024 on a
    CPU a 256-code chunk is ~10 minutes with nothing shown; the counts still add up to the bank's size."""
    updates: list[int] = []

    class _Bar:
        def __init__(self, *args, **kwargs):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            updates.append(n)

    monkeypatch.setattr("stylegan_disentangle.latents.bank.tqdm", _Bar)
    monkeypatch.setattr(sampling, "RENDER_PIXEL_BUDGET", 3 * 16 * 16)
    LatentBank.create(_tiny(), tmp_path / "bank", 20, seed=3, labelers=[_mean_rgb()], batch_size=8)
    assert updates == [3, 3, 2, 3, 3, 2, 3, 1]  # chunks of 8, 8, 4, each rendered three codes at a time
    updates.clear()
    LatentBank.create(_tiny(), tmp_path / "unlabelled", 20, seed=3, labelers=[], batch_size=8)
    assert updates == [8, 8, 4]  # nothing rendered: one step per chunk
