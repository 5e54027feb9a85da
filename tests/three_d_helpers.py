"""Shared by the 3D-coupled tests: a planted problem with known atoms, codes and W directions, and a tiny
generator + random decomposer for end-to-end find-directions runs."""

from __future__ import annotations

import json

import numpy as np

R = 16
W_DIM = 24
# Four blobs on the canonical face: (map, row, col) centres and the part each lies in.
BLOBS = [("depth", 8, 8, "nose"), ("depth", 12, 8, "mouth"), ("albedo", 4, 4, "eyes"), ("albedo", 4, 12, "eyes")]


def planted_blob(cy: int, cx: int, radius: float = 1.6) -> np.ndarray:
    yy, xx = np.mgrid[0:R, 0:R]
    g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * radius**2))
    g[g < 0.02] = 0.0  # compact support: the atoms do not overlap
    return g


def planted_part_masks() -> dict[str, np.ndarray]:
    yy, xx = np.mgrid[0:R, 0:R]
    eyes = (yy < 7).astype(np.float32)
    mouth = (yy >= 11).astype(np.float32)
    nose = ((yy >= 7) & (yy < 11)).astype(np.float32)
    return {"eyes": eyes, "nose": nose, "mouth": mouth}


def planted(n: int = 3000, seed: int = 0):
    """Sparse codes C [n, 4] drive both the maps (C @ atoms) and w (C @ M, M orthonormal rows), plus 3 scalars
    that are exact linear functions of w (directions G)."""
    rng = np.random.default_rng(seed)
    codes = rng.laplace(size=(n, 4)) * (rng.random((n, 4)) < 0.3)
    q, _ = np.linalg.qr(rng.normal(size=(W_DIM, W_DIM)))
    m = q[:4]  # [4, D] the true localized directions
    g = q[4:7]  # [3, D] the true global directions
    w = codes @ m + rng.normal(size=(n, 3)) @ g + 0.3 * rng.normal(size=(n, W_DIM))  # full-rank W, as a mapping gives
    atoms_true = {"depth": [], "albedo": []}
    for key, cy, cx, _ in BLOBS:
        blob = planted_blob(cy, cx)
        atoms_true[key].append(blob if key == "depth" else np.stack([blob, 0.5 * blob, 0.25 * blob]))
    depth = 1.0 + 0.01 * np.einsum("nk,khw->nhw", codes[:, :2], np.stack(atoms_true["depth"]))
    albedo = 0.1 + 0.2 * np.einsum("nk,kchw->nchw", codes[:, 2:], np.stack(atoms_true["albedo"]))
    scalars = {name: w @ g[j] for j, name in enumerate(("yaw", "pitch", "light_azimuth"))}
    labels = dict(scalars, depth=depth.astype(np.float32), albedo=albedo.astype(np.float32))
    return w.astype(np.float32), labels, m, g, atoms_true


def best_abs_cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of b, the largest |cos| to any row of a."""
    a = a.reshape(a.shape[0], -1) / np.linalg.norm(a.reshape(a.shape[0], -1), axis=1, keepdims=True)
    b = b.reshape(b.shape[0], -1) / np.linalg.norm(b.reshape(b.shape[0], -1), axis=1, keepdims=True)
    return np.abs(b @ a.T).max(axis=1)

def make_tiny_run(root):
    """A tiny generator (16 px, w_dim 16) saved in the official layout and a random 32 px decomposer under root."""
    import torch

    from stylegan_disentangle.checkpoints import save_network_pkl
    from stylegan_disentangle.labels.decomposer.model import Unsup3DDecomposer
    from stylegan_disentangle.networks import Generator

    torch.manual_seed(0)
    G = Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()
    pkl = root / "tiny.pkl"
    save_network_pkl(pkl, dict(G=G, G_ema=G, D=None, training_set_kwargs=None, augment_pipe=None))
    dec = Unsup3DDecomposer(image_size=32, nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)
    dec_path = dec.save(root / "dec.pth")
    return pkl, dec_path, root


def cli(args):
    from click.testing import CliRunner

    from stylegan_disentangle.cli import main

    return CliRunner().invoke(main, ["--quiet", *args], catch_exceptions=False)


def find_3d(tiny_run, out, *options) -> dict:
    """find-directions --method 3d-coupled on the tiny run with extra options; returns its config.json."""
    pkl, dec_path, _ = tiny_run
    result = cli(["find-directions", str(pkl), "--method", "3d-coupled", "--decomposer", str(dec_path),
                   "--samples", "80", "--outdir", str(out), "--no-umap", "--effect-samples", "2",
                   "--grid-steps", "3", *options])
    assert result.exit_code == 0, result.output
    return json.loads((out / "config.json").read_text())

