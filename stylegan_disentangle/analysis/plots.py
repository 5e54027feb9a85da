"""Pictures of directions and of W: edit grids, PCA / UMAP scatter of W, cosine and label-effect heatmaps.

Every function draws with matplotlib's object API on an Agg canvas (no pyplot, no global backend switch), writes
the PNG atomically, and — except the grid, whose numbers are the ws the caller keeps — writes the plotted numbers
next to it (`<stem>.npz` for scatters, `<stem>.json` for heatmaps).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from ..utils import atomic_write, atomic_write_path

__all__ = [
    "images_to_uint8",
    "plot_cosine_similarity",
    "plot_edit_grid",
    "plot_heatmap",
    "plot_label_effects",
    "plot_w_embedding",
    "cosine_similarity_matrix",
]


def _save(fig: Figure, path: str | os.PathLike, dpi: int = 100) -> Path:
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_write_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def _sidecar_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path.with_suffix(".json"), "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")


def images_to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """img `[..., C, H, W]` in [-1, 1] -> `[..., H, W, 3]` uint8 (grayscale repeated; extra channels dropped)."""
    x = torch.as_tensor(np.asarray(img) if not isinstance(img, torch.Tensor) else img).float()
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    x = x.movedim(-3, -1)
    if x.shape[-1] == 1:
        x = x.expand(*x.shape[:-1], 3)
    return x[..., :3].numpy()


def plot_edit_grid(
    images: torch.Tensor | np.ndarray,
    path: str | os.PathLike,
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    cell_px: int | None = None,
) -> Path:
    """Draw images `[R, S, C, H, W]` (in [-1, 1]) as an R x S grid: rows = directions (or samples), columns = steps.

    `cell_px` is the drawn size of one image (default: its resolution, kept between 64 and 256 pixels).
    """
    arr = images_to_uint8(images)
    if arr.ndim != 5:
        raise StyleGANDisentangleError(f"edit grid needs images [R, S, C, H, W], got shape {tuple(np.shape(images))}")
    rows, cols, h, w, _ = arr.shape
    pad = max(1, h // 32)
    mosaic = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 255, dtype=np.uint8)
    for r in range(rows):
        for s in range(cols):
            y0, x0 = pad + r * (h + pad), pad + s * (w + pad)
            mosaic[y0 : y0 + h, x0 : x0 + w] = arr[r, s]
    cell = cell_px or int(np.clip(h, 64, 256))
    scale = cell / h
    label_w = 0.0 if not row_labels else min(3.0, 0.09 * max(len(str(x)) for x in row_labels) + 0.3)
    top = 0.6 if (title or col_labels) else 0.1
    fig_w = mosaic.shape[1] * scale / 100 + label_w + 0.2
    fig_h = mosaic.shape[0] * scale / 100 + top + 0.1
    fig = Figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes([label_w / fig_w, 0.1 / fig_h, 1 - (label_w + 0.2) / fig_w, 1 - (top + 0.1) / fig_h])
    ax.imshow(mosaic, interpolation="nearest")
    ax.set_xticks([pad + s * (w + pad) + w / 2 for s in range(cols)])
    ax.set_xticklabels(list(col_labels) if col_labels else [""] * cols, fontsize=8)
    ax.xaxis.tick_top()
    ax.set_yticks([pad + r * (h + pad) + h / 2 for r in range(rows)])
    ax.set_yticklabels(list(row_labels) if row_labels else [""] * rows, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.12 / fig_h, va="top")
    return _save(fig, path)


def plot_w_embedding(
    w: Any,
    path: str | os.PathLike,
    color: Any | None = None,
    color_name: str | None = None,
    method: str = "pca",
    max_points: int = 5000,
    seed: int = 0,
    title: str | None = None,
    umap_kwargs: dict[str, Any] | None = None,
) -> np.ndarray:
    """2-D PCA or UMAP scatter of w `[N, w_dim]` coloured by a label `[N]`; returns the coordinates `[M, 2]`.

    At most `max_points` rows (chosen with `seed`) are embedded; `<stem>.npz` stores `coords`, `rows`, `color`.
    """
    w = np.asarray(w.detach().cpu() if isinstance(w, torch.Tensor) else w)
    if w.ndim != 2 or w.shape[0] < 3:
        raise StyleGANDisentangleError(f"w must be [N >= 3, w_dim], got shape {w.shape}")
    n = w.shape[0]
    rows = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).choice(n, max_points, False))
    x = np.asarray(w[rows], dtype=np.float32)
    if isinstance(color, torch.Tensor):  # e.g. a labeler's output, which may still carry its graph
        color = color.detach().cpu()
    col = None if color is None else np.asarray(color, dtype=np.float64).reshape(n)[rows]
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed).fit_transform(x)
        axes = ("PC 1", "PC 2")
    elif method == "umap":
        coords = _umap(x, seed, umap_kwargs or {})
        axes = ("UMAP 1", "UMAP 2")
    else:
        raise StyleGANDisentangleError(f"embedding method must be 'pca' or 'umap', got {method!r}")
    fig = Figure(figsize=(5.2, 4.4))
    ax = fig.add_subplot(1, 1, 1)
    size = float(np.clip(3000 / len(rows), 2, 30))
    if col is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=size, c="tab:blue", alpha=0.7, linewidths=0)
    else:
        sc = ax.scatter(coords[:, 0], coords[:, 1], s=size, c=col, cmap="viridis", alpha=0.8, linewidths=0)
        fig.colorbar(sc, ax=ax, label=color_name or "label")
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.set_title(title or f"W ({method.upper()}, {len(rows)} samples)" + (f" by {color_name}" if color_name else ""),
                 fontsize=10)
    fig.tight_layout()
    path = _save(fig, path)
    with atomic_write_path(path.with_suffix(".npz")) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, coords=coords, rows=rows, color=np.zeros(0) if col is None else col)
    return coords


def _umap(x: np.ndarray, seed: int, umap_kwargs: dict[str, Any]) -> np.ndarray:
    """UMAP embedding `[M, 2]` of x `[M, D]`, with the exact kNN graph from scikit-learn.

    Precomputing the neighbours skips UMAP's own (numba-compiled) neighbour search, which halves the first-call
    compile time; exact neighbours are also what UMAP itself uses for small data.
    """
    import warnings

    import umap  # imported lazily: numba compiles UMAP's kernels on first use (seconds)
    from sklearn.neighbors import NearestNeighbors

    kwargs = dict(n_neighbors=min(15, len(x) - 1), min_dist=0.1, random_state=seed, n_jobs=1)
    if len(x) < 16:  # UMAP's spectral start needs more points than eigenvectors; a handful starts at random
        kwargs["init"] = "random"
    kwargs.update(umap_kwargs)
    if "precomputed_knn" not in kwargs and kwargs.get("metric", "euclidean") == "euclidean":
        dist, idx = NearestNeighbors(n_neighbors=kwargs["n_neighbors"]).fit(x).kneighbors(x)
        kwargs["precomputed_knn"] = (idx, dist.astype(np.float32), None)
    with warnings.catch_warnings():  # no search index: fine, we never transform new points
        warnings.filterwarnings("ignore", message=".*knn_search_index.*")
        return umap.UMAP(**kwargs).fit_transform(x)


def plot_heatmap(
    matrix: np.ndarray,
    path: str | os.PathLike,
    row_names: Sequence[str],
    col_names: Sequence[str],
    title: str = "",
    cbar_label: str = "",
    symmetric: bool = True,
    vmax: float | None = None,
    annotate: bool | None = None,
) -> Path:
    """A labelled heatmap of `[R, C]` (diverging, centred at 0 when `symmetric`); numbers go to `<stem>.json`."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (len(row_names), len(col_names)):
        raise StyleGANDisentangleError(f"heatmap of shape {m.shape} needs {m.shape[0]} row and {m.shape[1]} "
                                       f"column names, got {len(row_names)} and {len(col_names)}")
    r, c = m.shape
    fig = Figure(figsize=(min(16.0, 1.8 + 0.55 * c + 0.06 * max(map(len, row_names), default=1)),
                          min(16.0, 1.4 + 0.4 * r + 0.05 * max(map(len, col_names), default=1))))
    ax = fig.add_subplot(1, 1, 1)
    finite = m[np.isfinite(m)]
    top = vmax if vmax is not None else (float(np.abs(finite).max()) if finite.size else 1.0) or 1.0
    kwargs = dict(cmap="RdBu_r", vmin=-top, vmax=top) if symmetric else dict(cmap="viridis")
    im = ax.imshow(m, aspect="auto", interpolation="nearest", **kwargs)
    fig.colorbar(im, ax=ax, label=cbar_label)
    ax.set_xticks(range(c))
    ax.set_xticklabels(col_names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(r))
    ax.set_yticklabels(row_names, fontsize=8)
    if annotate is None:
        annotate = r * c <= 300
    if annotate:
        for i in range(r):
            for j in range(c):
                if np.isfinite(m[i, j]):
                    strong = abs(m[i, j]) > 0.6 * top if symmetric else False
                    ax.text(j, i, f"{m[i, j]:.2f}".replace("-0.00", "0.00"), ha="center", va="center", fontsize=7,
                            color="white" if strong else "black")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = _save(fig, path)
    _sidecar_json(path, {"title": title, "rows": list(row_names), "cols": list(col_names),
                         "matrix": [[None if not np.isfinite(v) else float(v) for v in row] for row in m]})
    return path


def cosine_similarity_matrix(direction_set: DirectionSet) -> np.ndarray:
    """[K, K] cosine similarities of the directions (per-layer vectors compared flattened)."""
    v = direction_set.vectors.reshape(len(direction_set), -1).astype(np.float64)
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    return v @ v.T


def plot_cosine_similarity(direction_set: DirectionSet, path: str | os.PathLike, title: str | None = None) -> Path:
    """Heatmap of the directions' pairwise cosine similarities."""
    names = list(direction_set.names)
    return plot_heatmap(cosine_similarity_matrix(direction_set), path, names, names,
                        title=title or f"cosine similarity of {direction_set.method} directions",
                        cbar_label="cosine", vmax=1.0)


def plot_label_effects(
    effects: np.ndarray,
    path: str | os.PathLike,
    direction_names: Sequence[str],
    label_names: Sequence[str],
    title: str = "label change per direction",
    unit: str = "label std per direction std",
) -> Path:
    """Heatmap directions x labels of the label change per step (see `analysis.effects`)."""
    return plot_heatmap(effects, path, direction_names, label_names, title=title, cbar_label=unit)
