#!/usr/bin/env python
"""How fast is the decomposer's renderer, next to the decomposition it goes with?

Every training step, re-render, view-leak measure and `decompose` reconstruction renders the estimated canonical
depth and albedo into the view: rasterizing the depth grid's mesh (the z-buffer) and warping the shaded canonical
image. Two kinds of scenes, at 32x32 and 64x64 (batch 64, inference):

- *generator faces*: the shipped decomposer's estimates of the shipped generator's faces (at 64x64 the same maps
  upsampled): smooth depth, one silhouette, what a trained decomposer renders;
- *untrained nets*: an official-architecture decomposer at initialization (nf 16, zdim 64, seed 0) on the same
  faces: a rough depth whose mesh folds into many stretched triangles, what every training run starts from.

- *noise depth*: every pixel's depth drawn uniformly in the depth range, rotations of about 10 degrees: the worst
  case (the mesh folds at every pixel), like a decomposer whose weights were perturbed at random.

For each: milliseconds per image for the rasterization alone and for the whole render, and, as the baseline timed
in the same process, the decomposition (the nets' forward) of the same batch by the decomposer that made the scene
where its size is the render's; the ratio render / decomposition says how much of a reconstruction the renderer
costs.

    python scripts/bench_renderer.py --json runs/bench_renderer.json
    python scripts/bench_renderer.py --device cuda      # on a GPU (scripts/gpu_checks.sh decomposer)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.labels.decomposer.reconstruction import renderer_for, view_degrees
from stylegan_disentangle.labels.decomposer.renderer import Renderer
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.utils import atomic_write, resolve_device
from stylegan_disentangle.utils.script_args import nonnegative_int, positive_int, run_script


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _seconds(fn: Callable[[], object], reps: int) -> float:
    """Best of `reps` timed calls after one warm-up call (the minimum is the least disturbed by other work); CUDA
    work is waited for."""
    fn()
    best = float("inf")
    for _ in range(reps):
        _sync()
        start = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def render_times(renderer: Renderer, maps: dict[str, torch.Tensor], reps: int) -> dict[str, float]:
    """Seconds for one rasterization and one render of `maps` (canonical depth [N, 1, S, S], albedo, light, view in
    degrees)."""
    depth, view = maps["depth"], maps["view"]
    return {"rasterize": _seconds(lambda: renderer.warp_canonical_depth(depth, view), reps),
            "render": _seconds(lambda: renderer.render(depth, maps["albedo"], maps["light"], view), reps)}


@torch.no_grad()
def estimate(dec: Unsup3DDecomposer, images: torch.Tensor, size: int) -> dict[str, torch.Tensor]:
    """`dec`'s estimate of `images` as renderer inputs at `size` x `size` (maps upsampled bilinearly if larger)."""
    out = dec.decompose(images, parts=["depth", "albedo", "light", "view"])
    return {"depth": F.interpolate(out["canon_depth"][:, None], size=size, mode="bilinear", align_corners=True),
            "albedo": F.interpolate(out["canon_albedo"], size=size, mode="bilinear", align_corners=True),
            "light": out["light"], "view": view_degrees(out["view"])}


@torch.no_grad()
def decompose_seconds(dec: Unsup3DDecomposer, images: torch.Tensor, reps: int) -> float:
    """Seconds for `dec` to decompose `images` (depth, albedo, light, view): the baseline."""
    return _seconds(lambda: dec.decompose(images, parts=["depth", "albedo", "light", "view"]), reps)


def noise_scene(n: int, size: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Depth uniform in [0.9, 1.1] at every pixel, random albedo and light, rotations N(0, 10 deg)."""
    g = torch.Generator().manual_seed(seed)
    return {"depth": 0.9 + 0.2 * torch.rand([n, 1, size, size], generator=g),
            "albedo": torch.rand([n, 3, size, size], generator=g) * 2 - 1,
            "light": torch.cat([torch.rand([n, 2], generator=g), torch.randn([n, 2], generator=g) * 0.3], 1),
            "view": torch.cat([torch.randn([n, 3], generator=g) * 10, torch.zeros([n, 3])], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--reps", type=positive_int, default=5)
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--device", default="cpu", help="Where the renderer and the nets run (cpu, cuda, cuda:N).")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        p.error(str(exc))

    G, _ = load_synthetic()
    with torch.no_grad():
        faces = G(torch.randn([args.batch, G.z_dim], generator=torch.Generator().manual_seed(0)), None).to(device)
    shipped = load_decomposer("synthetic", device=device)
    results = {}
    print("| scene | size | rasterize ms/img | render ms/img | decomposition ms/img (baseline) | "
          "render / decomposition |")
    print("|---|---|---|---|---|---|")
    for size in (32, 64):
        torch.manual_seed(0)
        untrained = Unsup3DDecomposer(image_size=size, nf=16, zdim=64).eval().to(device)
        upsampled = F.interpolate(faces, size=size, mode="bilinear", align_corners=False)
        scenes = [("generator faces", estimate(shipped, faces, size), shipped if size == shipped.image_size else None,
                   faces),
                  ("untrained nets", estimate(untrained, upsampled, size), untrained, upsampled),
                  ("noise depth", {k: v.to(device) for k, v in noise_scene(args.batch, size).items()}, None, None)]
        for scene, maps, dec, images in scenes:
            times = render_times(renderer_for(shipped), maps, args.reps)
            if dec is not None:
                times["decompose"] = decompose_seconds(dec, images, args.reps)
            r = {f"{k}_ms_per_image": 1e3 * v / args.batch for k, v in times.items()}
            if dec is not None:
                r["render_over_decompose"] = times["render"] / times["decompose"]
            results[f"{scene} {size}"] = r
            base = (f"{r['decompose_ms_per_image']:.3f} | {r['render_over_decompose']:.2f}" if dec is not None
                    else "- | -")
            print(f"| {scene} | {size} | {r['rasterize_ms_per_image']:.3f} | {r['render_ms_per_image']:.3f} | {base} |",
                  flush=True)
    if args.json:
        payload = {"batch": args.batch, "threads": args.threads, "device": str(device), "results": results}
        with atomic_write(args.json, "w") as f:
            json.dump(payload, f, indent=2)


if __name__ == "__main__":
    run_script(main)
