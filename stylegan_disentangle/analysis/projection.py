"""Real-image embedding: the W (or W+) code whose image best matches a target image.

The code starts at the mean of W and is moved by Adam on the squared pixel error between G's image and the target
(at G's resolution). Two schedules from the official StyleGAN2 projector's recipe keep it from settling early:
Gaussian noise on the code, `initial_noise` times W's spread, fading quadratically to zero over the first
`noise_ramp` of the steps, and a learning rate that rises over the first `lr_rampup` of the steps and falls on a
cosine over the last `lr_rampdown`. The synthesis noise is held constant (`noise_mode='const'`), not optimized.

The loss is pixel-wise only: the official projector's perceptual (LPIPS / VGG16) distance needs pretrained weights
that this package does not download. A projection therefore matches colours and layout first; on a generator of
photographs it reaches the face's look rather than its fine texture. The projected codes are ordinary ws: `edit`
(`--ws`) moves them along any DirectionSet.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import StyleGANDisentangleError
from ..labels.base import resize_images
from ..latents import eval_mode, render_chunk_size

logger = logging.getLogger(__name__)

__all__ = ["Projection", "project", "psnr", "run_projection", "w_statistics"]


@dataclass
class Projection:
    """What `project` found. ws: `[N, num_ws, w_dim]` (a W code repeated over the layers, or a W+ code); images:
    G's images of them `[N, C, H, W]`; loss_trace: `[steps, N]` squared pixel error per step; psnr: `[N]` dB of
    the final images against the targets (peak-to-peak 2)."""

    ws: torch.Tensor
    images: torch.Tensor
    loss_trace: np.ndarray
    psnr: np.ndarray


def psnr(images: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Peak signal-to-noise ratio (dB) per image of `[N, C, H, W]` images in [-1, 1] (peak-to-peak 2)."""
    mse = ((images.double() - targets.double()) ** 2).flatten(1).mean(1).clamp_min(1e-20)
    return (10 * torch.log10(4.0 / mse)).cpu().numpy()


def _lr_factor(frac: float, rampup: float, rampdown: float) -> float:
    """The learning rate's multiplier at the fraction `frac` of the run: a linear rise over `rampup`, a cosine
    fall over the last `rampdown`."""
    down = min(1.0, (1.0 - frac) / rampdown) if rampdown > 0 else 1.0
    factor = 0.5 - 0.5 * math.cos(down * math.pi)
    return factor * (min(1.0, frac / rampup) if rampup > 0 else 1.0)


def _check(G: nn.Module, target: torch.Tensor, steps: int, space: str, class_idx: int | None) -> None:
    if not torch.is_tensor(target) or target.ndim != 4 or target.shape[0] == 0 or target.shape[1] != G.img_channels:
        got = tuple(target.shape) if torch.is_tensor(target) else type(target).__name__
        raise StyleGANDisentangleError(f"targets must be images [N, {G.img_channels}, H, W] in [-1, 1], got {got}")
    if not bool(torch.isfinite(target).all()):
        raise StyleGANDisentangleError("targets hold NaN or infinite pixels")
    if space not in ("w", "w+"):
        raise StyleGANDisentangleError(f"space must be 'w' or 'w+', got {space!r}")
    if int(steps) < 2:  # the schedule's learning rate rises from 0: its first step moves nothing
        raise StyleGANDisentangleError(f"steps must be >= 2 (the learning rate of the first step is 0), got {steps}")
    if G.c_dim and class_idx is None:
        raise StyleGANDisentangleError(f"this network is conditional ({G.c_dim} classes): give the class to "
                                       "project into")
    if class_idx is not None and not (G.c_dim and 0 <= int(class_idx) < G.c_dim):
        raise StyleGANDisentangleError(f"class_idx must be in [0, {G.c_dim}) for this network, got {class_idx}")


def _w_stats_of(G: nn.Module, z: torch.Tensor, class_idx: int | None) -> tuple[torch.Tensor, float]:
    """W's mean (float64 [w_dim]) and RMS distance from it over the codes z map to."""
    device = next(G.parameters()).device
    c = None
    if G.c_dim:
        c = torch.zeros([1, G.c_dim], device=device)
        c[0, int(class_idx)] = 1
    with torch.no_grad():
        z = z.to(device)
        w = torch.cat([G.mapping(z[i:i + 4096], None if c is None else c.expand(len(z[i:i + 4096]), -1))[:, 0]
                       for i in range(0, len(z), 4096)]).double()
        w_avg = w.mean(0)
        return w_avg, float(((w - w_avg) ** 2).sum(1).mean().sqrt())


def w_statistics(G: nn.Module, w_avg_samples: int = 10_000, class_idx: int | None = None, seed: int = 0
                 ) -> tuple[torch.Tensor, float]:
    """(W's mean, RMS distance from it) as `project` computes them from `w_avg_samples` codes drawn with `seed`."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return _w_stats_of(G, torch.randn([int(w_avg_samples), G.z_dim], generator=gen), class_idx)


def project(G: nn.Module, target: torch.Tensor, *, steps: int = 300, space: str = "w", lr: float = 0.1,
            initial_noise: float = 0.05, noise_ramp: float = 0.75, lr_rampup: float = 0.05,
            lr_rampdown: float = 0.25, w_avg_samples: int = 10_000, class_idx: int | None = None, seed: int = 0,
            w_stats: tuple[torch.Tensor, float] | None = None, progress: bool | None = None) -> Projection:
    """Project the images `target` `[N, C, H, W]` in [-1, 1] (resized to G's resolution) into G's W space
    (`space='w'`: one w per image, repeated over the layers) or W+ (`'w+'`: one per layer), all images at once.

    W's mean and spread come from `w_avg_samples` codes of z drawn with `seed` (`w_statistics`; pass them as
    `w_stats` to skip the mapping when projecting several batches); `seed` also draws the code noise, so a run is
    deterministic on the CPU, with or without `w_stats`. `class_idx`: the class of a conditional network.
    """
    _check(G, target, steps, space, class_idx)
    device = next(G.parameters()).device
    target = resize_images(target.float(), G.img_resolution).to(device)
    n = target.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    z = torch.randn([int(w_avg_samples), G.z_dim], generator=gen)  # drawn either way: the noise follows it
    w_avg, w_std = w_stats if w_stats is not None else _w_stats_of(G, z, class_idx)
    w_avg = w_avg.to(device)
    fp32 = device.type == "cpu"  # fp16 layers run in float32 on the CPU
    layers = 1 if space == "w" else G.num_ws
    code = w_avg.float().expand(n, layers, -1).clone().requires_grad_(True)
    opt = torch.optim.Adam([code], lr=lr, betas=(0.9, 0.999))
    trace = np.empty([int(steps), n])
    requires, training = [p.requires_grad for p in G.parameters()], G.training
    G.requires_grad_(False).eval()  # gradients reach the code only
    disable = (not progress) if progress is not None else None
    try:
        with torch.enable_grad():
            for t in tqdm(range(int(steps)), desc="project", disable=disable):
                frac = t / int(steps)
                for group in opt.param_groups:
                    group["lr"] = lr * _lr_factor(frac, lr_rampup, lr_rampdown)
                scale = w_std * initial_noise * max(0.0, 1.0 - frac / noise_ramp) ** 2 if noise_ramp > 0 else 0.0
                noisy = code + torch.randn(code.shape, generator=gen).to(device) * scale
                img = G.synthesis(noisy.expand(n, G.num_ws, -1), noise_mode="const", force_fp32=fp32).float()
                per_image = ((img - target) ** 2).flatten(1).mean(1)
                opt.zero_grad(set_to_none=True)
                per_image.sum().backward()
                opt.step()
                trace[t] = per_image.detach().cpu().numpy()
    finally:
        for p, flag in zip(G.parameters(), requires):
            p.requires_grad_(flag)
        G.train(training)
    with torch.no_grad(), eval_mode(G):
        ws = code.detach().expand(n, G.num_ws, -1).contiguous()
        images = G.synthesis(ws, noise_mode="const", force_fp32=fp32).float().clamp(-1, 1)
    return Projection(ws.cpu(), images.cpu(), trace, psnr(images, target.clamp(-1, 1)))


PICTURE_ROWS = 32  # images drawn in projection.png; ws.npy and projection.json hold every one
PROJECTION_PIXEL_BUDGET = 1 << 18
"""Image pixels one projection batch may hold: the optimisation keeps every layer's activations for the backward
pass (8 images at 256x256 took 4.3 GB on the CPU), so a batch holds at most 4 images at 256x256 and one from
512x512 up (8 at 1024x1024 would need about 60 GB)."""


def run_projection(pkl: str | os.PathLike, images: Sequence[str | os.PathLike], outdir: str | os.PathLike, *,
                   steps: int = 300, space: str = "w", class_idx: int | None = None, seed: int = 0,
                   batch_size: int = 8, device: str | torch.device = "auto",
                   progress: bool | None = None) -> dict[str, str]:
    """`stylegan-disentangle project`: project image files (or folders of them) into PKL's W / W+ and write into
    `outdir` ws.npy (`[N, num_ws, w_dim]` float32, in the files' order, ready for `edit --ws`), projection.png
    (rows: target | projection, the first PICTURE_ROWS), loss.png (the pixel error per step), projection.json
    (per file its sha256, PSNR and final error; the settings, the checkpoint's sha256, the version) and
    config.json. The images are projected `batch_size` at a time (fewer for a large network:
    PROJECTION_PIXEL_BUDGET; config.json records the batch used); each batch draws its own code noise from `seed`,
    so a run is repeatable for the same files, order and batch size. Returns the written paths."""
    from ..utils import atomic_write_path, sha256_file
    from ..utils.images import image_files, load_images, save_titled_grid, to_uint8
    from ._run import Timer, load_generator, run_header, write_json

    files = image_files(images)
    timer = Timer()
    with timer("load"):
        G, _, provenance = load_generator(pkl, device)
        targets = load_images(files, G.img_resolution)
    _check(G, targets, steps, space, class_idx)  # before the folder is made: a refused run leaves nothing
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    used = render_chunk_size(G, int(batch_size), budget=PROJECTION_PIXEL_BUDGET)
    if used < int(batch_size):
        logger.info("projecting %d images at a time (not %d): %dx%d images keep large activations for the "
                    "backward pass", used, batch_size, G.img_resolution, G.img_resolution)
    args = dict(pkl=str(pkl), images=[str(f) for f in files], steps=int(steps), space=space, class_idx=class_idx,
                seed=int(seed), batch_size=int(batch_size), batch_size_used=used, device=str(device))
    with timer("project"):
        stats = w_statistics(G, class_idx=class_idx, seed=seed)  # once, not per batch
        parts = [project(G, targets[i:i + used], steps=steps, space=space, class_idx=class_idx, seed=seed,
                         w_stats=stats, progress=progress) for i in range(0, len(files), used)]
    result = Projection(torch.cat([p.ws for p in parts]), torch.cat([p.images for p in parts]),
                        np.concatenate([p.loss_trace for p in parts], axis=1),
                        np.concatenate([p.psnr for p in parts]))
    with atomic_write_path(outdir / "ws.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, result.ws.numpy().astype(np.float32))
    shown = min(len(files), PICTURE_ROWS)
    pictures = np.stack([to_uint8(targets[:shown].clamp(-1, 1)), to_uint8(result.images[:shown])], 1)
    save_titled_grid(pictures, outdir / "projection.png", ["target", f"projection ({space})"],
                     [f"{f.name}\n{p:.1f} dB" for f, p in zip(files[:shown], result.psnr[:shown])])
    _plot_losses(result.loss_trace, outdir / "loss.png")
    record = {**run_header("project", args), **provenance,
              "images": [{"file": str(f), "sha256": sha256_file(f), "psnr_db": float(p), "final_mse": float(e)}
                         for f, p, e in zip(files, result.psnr, result.loss_trace[-1])],
              "timings_s": timer.seconds}
    write_json(outdir / "projection.json", record)
    write_json(outdir / "config.json", {**run_header("project", args), **provenance})
    return {name: str(outdir / name) for name in ("ws.npy", "projection.png", "loss.png", "projection.json")}


def _plot_losses(trace: np.ndarray, path: Path) -> None:
    """The squared pixel error per step of every image (log scale), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..utils import atomic_write_path

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(trace) + 1), trace, lw=0.8, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("mean squared pixel error")
    ax.set_title("projection: one line per image", fontsize=9)
    fig.tight_layout()
    with atomic_write_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
