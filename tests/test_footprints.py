"""The footprint sheet of localized directions: footprint heat maps keep every map pixel visible, and each row holds
its own direction's footprint followed by its own edit strip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis import footprints
from stylegan_disentangle.analysis.footprints import footprint_images, plot_footprint_sheet
from stylegan_disentangle.errors import StyleGANDisentangleError


def _lit(img: torch.Tensor) -> torch.Tensor:
    """Pixels [3, H, W] brighter than magma's black."""
    return (img + 1).abs().amax(0) > 0.05


@pytest.mark.parametrize("size, want", [(16, [(0, 0)]), (32, [(1, 1)]),
                                        (64, [(2, 2), (2, 3), (3, 2), (3, 3)])])
def test_a_one_pixel_footprint_stays_visible_at_any_image_size(size, want):
    fp = np.zeros((1, 32, 32), np.float32)
    fp[0, 1, 1] = 0.7
    img = footprint_images(fp, size)
    assert img.shape == (1, 3, size, size) and float(img.min()) >= -1 and float(img.max()) <= 1
    assert sorted(map(tuple, torch.nonzero(_lit(img[0])).tolist())) == want
    # each footprint is scaled to its own peak: the peak pixel gets magma's brightest colour
    torch.testing.assert_close(img[0, :, want[0][0], want[0][1]], footprint_images(np.ones((1, 2, 2)), 2)[0, :, 0, 0])


def test_each_row_holds_its_own_footprint_then_its_own_edit_strip(tmp_path, monkeypatch):
    k, s = 3, 4
    fp = np.zeros((k, 8, 8), np.float32)
    for i in range(k):
        fp[i, i, i] = 1.0  # row i's footprint lights pixel (i, i)
    strips = torch.stack([torch.full((s, 3, 16, 16), -0.9 + 0.5 * i) for i in range(k)])  # row i: grey level i
    strips = strips + torch.linspace(0, 0.05, s)[None, :, None, None, None]
    captured = {}

    def capture(grid, path, row_labels=None, col_labels=None, title=None):
        captured.update(grid=grid, rows=row_labels, cols=col_labels)
        return path

    monkeypatch.setattr(footprints, "plot_edit_grid", capture)
    plot_footprint_sheet(fp, strips, tmp_path / "sheet.png", ["a", "b", "c"], col_labels=["-1", "-0", "+0", "+1"])
    grid = captured["grid"]
    assert grid.shape == (k, s + 1, 3, 16, 16)
    assert captured["rows"] == ["a", "b", "c"] and captured["cols"] == ["footprint", "-1", "-0", "+0", "+1"]
    torch.testing.assert_close(grid[:, 0], footprint_images(fp, 16))
    torch.testing.assert_close(grid[:, 1:], strips)
    for i in range(k):  # the heat map of row i lights the 2x2 block of map pixel (i, i)
        assert sorted(map(tuple, torch.nonzero(_lit(grid[i, 0])).tolist())) == [
            (2 * i + a, 2 * i + b) for a in (0, 1) for b in (0, 1)]
    with pytest.raises(StyleGANDisentangleError, match="2 names and 3 footprints for 3 strips"):
        plot_footprint_sheet(fp, strips, tmp_path / "bad.png", ["a", "b"])


def test_the_sheet_is_written_as_a_png(tmp_path):
    fp = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    path = plot_footprint_sheet(fp, torch.zeros(2, 3, 3, 16, 16), tmp_path / "sheet.png", ["x", "y"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not list(tmp_path.glob(".sheet.png*"))
