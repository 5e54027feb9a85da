"""Turn generator output into pictures ([-1, 1] float images -> uint8, grids, PNG files, written atomically), and
read image files back as such tensors (`image_files`, `load_images`)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import StyleGANDisentangleError
from .atomic import atomic_write_path

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")  # what a folder given as images is read for


def image_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The image files named by `paths`: files as given, folders expanded to their images (IMAGE_SUFFIXES, any
    case; sorted by name, not recursive). A missing path or an empty result is an error naming it."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise StyleGANDisentangleError(f"{path}: a folder with no images ({', '.join(IMAGE_SUFFIXES)})")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise StyleGANDisentangleError(f"{path}: no such file or folder")
    if not files:
        raise StyleGANDisentangleError("no images given")
    return files


def _upright_rgb(image: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB, turned as its EXIF orientation says (as viewers show a phone's photo); 16-bit
    and 32-bit grey levels are scaled to 8 bits instead of clipped (PIL's own conversion turns them white)."""
    image = ImageOps.exif_transpose(image)
    if image.mode.startswith("I") or image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        top = float(grey.max()) if grey.size else 0.0
        if image.mode == "F":
            scale = 255.0 if top <= 1.0 else 1.0  # float images in [0, 1], or already in 8-bit units
        else:
            scale = 1 / 257 if image.mode.startswith("I;16") or top > 255 else 1.0  # 65535 -> 255
        image = Image.fromarray(np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")


def load_images(files: Sequence[str | os.PathLike], size: int) -> torch.Tensor:
    """Image files -> float [N, 3, size, size] in [-1, 1]: each one converted to RGB, cut to its central square
    and resized with Lanczos (antialiased) filtering. A file that is no readable image is an error naming it."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    out = torch.empty([len(files), 3, size, size])
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                rgb = _upright_rgb(image)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise StyleGANDisentangleError(f"{path}: not a readable image ({type(exc).__name__}: {exc})") from None
        w, h = rgb.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        square = rgb.resize((size, size), Image.Resampling.LANCZOS, box=box)
        out[i] = torch.from_numpy(np.asarray(square, dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1.0
    return out


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """img [N, C, H, W] in about [-1, 1] -> uint8 array [N, H, W, C] (C = 1 or 3)."""
    if img.ndim != 4:
        raise ValueError(f"expected images [N, C, H, W], got shape {tuple(img.shape)}")
    img = (img.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return img.permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, cols: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images [N, H, W, C] into one [rows*(H+pad)-pad, cols*(W+pad)-pad, C] image."""
    n, h, w, c = images.shape
    if n == 0:
        raise ValueError("image_grid needs at least one image, got none")
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    grid = np.full([rows * (h + pad) - pad, cols * (w + pad) - pad, c], pad_value, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[r * (h + pad): r * (h + pad) + h, q * (w + pad): q * (w + pad) + w] = images[i]
    return grid


def save_png(array: np.ndarray, path: str | os.PathLike, upscale: int = 1) -> None:
    """Write a uint8 [H, W, C] image as PNG, optionally enlarged by nearest-neighbour `upscale` (small nets)."""
    if upscale > 1:
        array = array.repeat(upscale, axis=0).repeat(upscale, axis=1)
    image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
    with atomic_write_path(path) as tmp:
        image.save(tmp, format="PNG")


def save_titled_grid(pictures: np.ndarray, path: str | os.PathLike, column_titles: list[str] | None = None,
                     row_labels: list[str] | None = None, cell_inches: float = 1.6) -> None:
    """Write uint8 pictures [rows, cols, H, W, C] as one PNG with column titles and row labels (matplotlib,
    atomically): the figure people look at, where a bare grid would leave them guessing which column is which."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, cols = pictures.shape[:2]
    fig, axes = plt.subplots(n, cols, figsize=(cell_inches * cols, cell_inches * n + 0.3), squeeze=False)
    for i in range(n):
        for j in range(cols):
            ax = axes[i, j]
            picture = pictures[i, j]
            ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, interpolation="nearest",
                      cmap="gray" if picture.shape[-1] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0 and column_titles is not None:
                ax.set_title(column_titles[j], fontsize=9)
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout(pad=0.3)
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
