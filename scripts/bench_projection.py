#!/usr/bin/env python
"""How well does real-image embedding (`analysis.projection.project`) recover a face, scored on the ground-truth
world?

Two sets of `--count` images of the shipped synthetic checkpoint's world, projected into its W (`--space`):

- the generator's own images (fresh seeds): the answer is in W, so this is the method's best case;
- faces rendered by the world itself (`faces_from_renderer`, yaw within +-`--yaw-range` degrees): images the
  generator never made, the synthetic stand-in for real photographs.

Reported per set: PSNR of the projections (mean and lowest), the mean face's PSNR as the baseline (the image of W's
mean, where every projection starts), and for each factor of the world the Pearson r between the true factor and
the world's readout of the projected code (its factor map), i.e. whether the found code carries the face's
semantics and not only its pixels. Time per image on this machine.

    python scripts/bench_projection.py --json proj.json
    python scripts/bench_projection.py --count 64 --steps 500 --space w+
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from stylegan_disentangle.analysis.projection import project, psnr
from stylegan_disentangle.latents import sample_latents
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import _pearson, faces_from_renderer
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value


def score(G, factor_map, images: torch.Tensor, factors: np.ndarray, args) -> dict:
    """Project `images` in batches and score the projections against the images and the true factors."""
    start = time.perf_counter()
    parts = [project(G, images[i:i + args.batch_size], steps=args.steps, space=args.space, seed=args.seed,
                     progress=False) for i in range(0, len(images), args.batch_size)]
    seconds = time.perf_counter() - start
    ws = torch.cat([p.ws for p in parts])
    got = np.asarray(factor_map(ws))
    values = np.concatenate([p.psnr for p in parts])
    with torch.no_grad():
        mean_face = G.synthesis(G.mapping.w_avg.expand(len(images), G.num_ws, -1), noise_mode="const").clamp(-1, 1)
    return {"psnr_mean": float(values.mean()), "psnr_min": float(values.min()),
            "mean_face_psnr": float(psnr(mean_face, images).mean()),
            "factor_r": {name: _pearson(factors[:, k], got[:, k]) for k, name in enumerate(factor_map.names)},
            "seconds_per_image": seconds / len(images)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=positive_int, default=48)
    parser.add_argument("--steps", type=positive_int, default=300)
    parser.add_argument("--space", choices=["w", "w+"], default="w")
    parser.add_argument("--batch-size", type=positive_int, default=8)
    parser.add_argument("--yaw-range", type=finite_float, default=30.0)
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--threads", type=nonnegative_int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    G, factor_map = load_synthetic()
    seeds = list(range(70_000_000, 70_000_000 + args.count))
    with torch.no_grad():
        own_ws = sample_latents(G, seeds).ws
        own = G.synthesis(own_ws, noise_mode="const").clamp(-1, 1)
    rendered, rendered_factors = faces_from_renderer(G, factor_map, args.count, seed=71_000_000,
                                                     yaw_range=args.yaw_range)
    results = {"args": vars(args),
               "generator_images": score(G, factor_map, own, np.asarray(factor_map(own_ws)), args),
               "world_renders": score(G, factor_map, rendered.clamp(-1, 1), rendered_factors.numpy(), args)}
    print(f"projection into {args.space}, {args.steps} steps, {args.count} images per set, "
          f"{args.threads} thread(s)\n")
    print("| set | PSNR mean / lowest (dB) | mean face (dB) | s per image |")
    print("|---|---|---|---|")
    for key, r in results.items():
        if key != "args":
            print(f"| {key} | {r['psnr_mean']:.1f} / {r['psnr_min']:.1f} | {r['mean_face_psnr']:.1f} | "
                  f"{r['seconds_per_image']:.2f} |")
    names = factor_map.names
    print("\nPearson r of each true factor with the projected code's readout:\n")
    print("| set | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for key, r in results.items():
        if key != "args":
            print(f"| {key} | " + " | ".join(f"{r['factor_r'][n]:.2f}" for n in names) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    run_script(main)
