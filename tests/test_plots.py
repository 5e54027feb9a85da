"""Plots: PNGs are written (atomically, non-empty, the expected size) with their numbers beside them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from stylegan_disentangle.analysis import (
    cosine_similarity_matrix,
    plot_cosine_similarity,
    plot_edit_grid,
    plot_label_effects,
    plot_w_embedding,
)
from stylegan_disentangle.analysis.plots import images_to_uint8
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.errors import StyleGANDisentangleError


def _png(path) -> np.ndarray:
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def test_images_to_uint8_maps_the_generator_range():
    img = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 2, 2)
    out = images_to_uint8(img)
    assert out.shape == (1, 2, 2, 3) and out[0, :, :, 0].tolist() == [[0, 128], [255, 255]]


def test_edit_grid_places_each_image_in_its_cell(tmp_path):
    # rows get distinct colours, columns get brighter: the drawn grid must show both
    r, s = 3, 4
    img = torch.zeros(r, s, 3, 16, 16)
    for i in range(r):
        img[i, :, i] = 1.0
    img += torch.linspace(-1, 0, s)[None, :, None, None, None]
    path = plot_edit_grid(img, tmp_path / "grid.png", row_labels=["a", "bb", "ccc"],
                          col_labels=[f"{x:+.1f}" for x in range(s)], title="test grid", cell_px=64)
    pic = _png(path)
    assert pic.shape[0] > r * 64 and pic.shape[1] > s * 64
    assert not list(tmp_path.glob(".grid.png*"))  # no temporary file left behind
    # the mosaic is drawn at 4x: find the red/green/blue dominant pixels in the three rows
    rgb = pic[..., :3]
    dominant = rgb.argmax(axis=2)[(rgb.max(axis=2) - rgb.min(axis=2)) > 0.3]
    assert {0, 1, 2} <= set(np.unique(dominant).tolist())
    with pytest.raises(StyleGANDisentangleError, match=r"\[R, S, C, H, W\]"):
        plot_edit_grid(img[0], tmp_path / "bad.png")


def test_pca_scatter_writes_png_and_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 8)) * np.array([5, 2, 1, 1, 1, 1, 1, 1])
    coords = plot_w_embedding(w, tmp_path / "w_pca.png", color=w[:, 0], color_name="w0", method="pca")
    _png(tmp_path / "w_pca.png")
    saved = np.load(tmp_path / "w_pca.npz")
    np.testing.assert_allclose(saved["coords"], coords)
    # the first PCA axis is the high-variance w0 (up to sign)
    assert abs(np.corrcoef(coords[:, 0], w[:, 0])[0, 1]) > 0.99
    with pytest.raises(StyleGANDisentangleError, match="'pca' or 'umap'"):
        plot_w_embedding(w, tmp_path / "x.png", method="tsne")


def test_umap_scatter_separates_two_clusters(tmp_path):
    rng = np.random.default_rng(0)
    w = np.concatenate([rng.standard_normal((150, 8)), rng.standard_normal((150, 8)) + 8.0])
    label = np.repeat([0.0, 1.0], 150)
    coords = plot_w_embedding(w, tmp_path / "w_umap.png", color=label, color_name="cluster", method="umap",
                              umap_kwargs=dict(n_epochs=100))
    _png(tmp_path / "w_umap.png")
    a, b = coords[:150].mean(0), coords[150:].mean(0)
    spread = max(coords[:150].std(0).max(), coords[150:].std(0).max())
    assert np.linalg.norm(a - b) > 3 * spread


@pytest.mark.parametrize("n", [3, 5])
def test_umap_of_a_handful_of_points(tmp_path, n):
    """UMAP's spectral start needs more points than eigenvectors; a handful (find-directions --samples 3) still
    gets its scatter."""
    w = np.random.default_rng(n).standard_normal((n, 6))
    coords = plot_w_embedding(w, tmp_path / "few.png", method="umap", umap_kwargs=dict(n_epochs=20))
    assert coords.shape == (n, 2) and np.isfinite(coords).all()
    _png(tmp_path / "few.png")


def test_heatmaps_write_png_and_json(tmp_path):
    v = np.eye(4, 6, dtype=np.float32)
    v[1] = np.array([1, 1, 0, 0, 0, 0]) / np.sqrt(2)
    ds = DirectionSet(["a", "b", "c", "d"], v)
    cos = cosine_similarity_matrix(ds)
    assert cos[0, 1] == pytest.approx(1 / np.sqrt(2)) and cos[2, 3] == 0
    path = plot_cosine_similarity(ds, tmp_path / "cos.png")
    _png(path)
    data = json.loads((tmp_path / "cos.json").read_text())
    assert data["rows"] == ["a", "b", "c", "d"] and data["matrix"][0][1] == pytest.approx(1 / np.sqrt(2))
    eff = np.array([[0.5, -0.2], [0.0, 1.0], [np.nan, 0.1], [0.3, 0.3]])
    _png(plot_label_effects(eff, tmp_path / "eff.png", ds.names, ["brightness", "com_x"]))
    assert json.loads((tmp_path / "eff.json").read_text())["matrix"][2][0] is None
    with pytest.raises(StyleGANDisentangleError, match="names"):
        plot_label_effects(eff, tmp_path / "bad.png", ds.names[:2], ["x", "y"])


def test_a_colour_tensor_that_carries_its_graph_is_plotted(tmp_path):
    import torch

    w = np.random.default_rng(0).standard_normal((30, 4))
    color = torch.linspace(0, 1, 30, requires_grad=True) * 2  # e.g. a labeler's output before .detach()
    plot_w_embedding(w, tmp_path / "c.png", color=color, color_name="label")
    assert np.allclose(np.load(tmp_path / "c.npz")["color"], color.detach().numpy())
