"""Is the light determined by the image once the depth is fixed? A per-image check on the synthetic world.

Unsup3D explains an image by depth, albedo, light and view. For faces rendered by the world's renderer (exact truth
known; or, with `--source generator`, the generator's own faces, scored against the world's render of their
factors), this script holds the depth and the view fixed and fits a left-right symmetric albedo and the light to each
image by Adam on the masked L1 of the render (optionally with an albedo prior: total variation, or gradient sparsity
(|gradient| + eps)^p, p < 1, which makes a sharp edge cheaper than a smooth ramp), starting once from
the decomposer's light and once from the true light. If both starts end at the same photometric error, the images
do not choose between the two lights: the light is not identifiable with that depth, and no loss on the images
alone can teach a network the true one. Rows:

- depth and view from the world's truth (the identifiability of the world's images themselves);
- the world's depth stretched to the decomposer's relief (its per-image depth slope on the truth), view from the
  truth: what the relief error alone does;
- depth and view from the decomposer (what its training can reach).

Reported per row and start: the mean masked L1 before and after the fit, and the Pearson r of the fitted light with
the truth: direction (dx, dy) and the ambient fraction a / (a + d) (the world's ambient; the overall scale of the
light trades against the albedo's). Writes JSON and prints a markdown table.

    python scripts/bench_light_identifiability.py --samples 200 --steps 400 --out runs/light_id.json
    python scripts/bench_light_identifiability.py --samples 200 --steps 400 --source generator
    python scripts/bench_light_identifiability.py --samples 200 --steps 400 --source generator --mix 0.5 \
        --depths world
    python scripts/bench_light_identifiability.py --samples 200 --steps 400 --albedo-sparse 0.05 --albedo-sparse-p 0.5
    python scripts/bench_light_identifiability.py --samples 200 --steps 1600 --albedo-sparse 0.05 \
        --albedo-start decomposer

By default the rows with the world's depth start from the world's albedo; `--albedo-start decomposer` starts every
row from the decomposer's albedo, so that the depth is the only difference between the rows.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import torch

from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.labels.decomposer.reconstruction import photometric_loss, reconstruct, renderer_for
from stylegan_disentangle.labels.decomposer.renderer import light_from_world
from stylegan_disentangle.labels.decomposer.trainer import gradient_sparsity, total_variation
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import (
    depth_relief,
    faces_from_generator,
    faces_from_renderer,
    masked_pearson,
)
from stylegan_disentangle.synthetic.renderer import render
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def fit_light(renderer, image: torch.Tensor, valid: torch.Tensor, depth: torch.Tensor, view: torch.Tensor,
              albedo0: torch.Tensor, light0: torch.Tensor, steps: int, albedo_tv: float, albedo_sparse: float = 0.0,
              sparse_p: float = 0.5) -> dict:
    """Adam on a symmetric albedo and the light with depth and view fixed (under the albedo priors' weights);
    returns the L1 before / after, the fitted light and the fitted (symmetric) albedo."""
    light = light0.clone().requires_grad_(True)
    albedo = albedo0.clone().requires_grad_(True)
    opt = torch.optim.Adam([light, albedo], lr=0.01)

    def losses():
        sym = (albedo + albedo.flip(-1)) / 2
        lit = torch.cat([light[:, :2].clamp(0, 2), light[:, 2:]], 1)
        out = renderer.render(depth, sym, lit, view)
        l1 = photometric_loss(out["image"], image, out["mask"] * valid)
        prior = albedo_tv * total_variation(sym)
        if albedo_sparse:
            prior = prior + albedo_sparse * gradient_sparsity(sym, sparse_p)
        return l1, prior

    with torch.no_grad():
        start = float(losses()[0])
    with torch.enable_grad():
        for _ in range(steps):
            l1, prior = losses()
            opt.zero_grad()
            (l1 + prior).backward()
            opt.step()
    with torch.no_grad():
        end = float(losses()[0])
    return {"l1_start": start, "l1_end": end, "light": light.detach(),
            "albedo": ((albedo + albedo.flip(-1)) / 2).detach()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic")
    p.add_argument("--samples", type=positive_int, default=200)
    p.add_argument("--steps", type=positive_int, default=400)
    p.add_argument("--albedo-tv", type=finite_float, default=0.0, help="Albedo total-variation weight in the fit.")
    p.add_argument("--albedo-sparse", type=finite_float, default=0.0,
                   help="Albedo gradient-sparsity weight in the fit.")
    p.add_argument("--albedo-sparse-p", type=finite_float, default=0.5, help="Exponent p of the sparsity prior.")
    p.add_argument("--albedo-start", choices=("own", "decomposer"), default="own",
                   help="Start each row's albedo from its own source (the world's albedo for the world's depth) or "
                        "every row from the decomposer's (so that only the depth differs between rows).")
    p.add_argument("--source", choices=("renderer", "generator"), default="renderer",
                   help="Faces rendered by the world (yaw within +-20 deg), or the generator's own faces, which only "
                        "approximate the world's image formation (the truth is then the world's render of their "
                        "factors).")
    p.add_argument("--mix", type=finite_float, default=1.0,
                   help="With --source generator: the images are the world's render plus MIX times the generator's "
                        "difference from it (0: the world's render, 1: the generator's faces), to find how close to "
                        "the world a generator must be for the light to be identifiable.")
    p.add_argument("--depths", choices=("all", "world"), default="all",
                   help="Fit every row, or only the rows with the world's exact depth and view.")
    p.add_argument("--seed", type=seed_value, default=4242)
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--out", default=None, help="JSON file for the numbers.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G, fmap = load_synthetic()
    dec = load_decomposer(args.decomposer).eval()
    if args.source == "renderer":
        images, factors = faces_from_renderer(G, fmap, args.samples, seed=args.seed, yaw_range=20.0)
    else:
        images, factors = faces_from_generator(G, fmap, args.samples, seed=args.seed)
    world_images, truth = render(factors, dec.image_size, return_intrinsics=True)
    if args.source == "generator" and args.mix != 1.0:
        if images.shape != world_images.shape:
            raise SystemExit(f"--mix needs the generator's resolution ({images.shape[-1]}) to be the decomposer's "
                             f"({world_images.shape[-1]})")
        images = world_images + args.mix * (images - world_images)
    with torch.no_grad():
        est = reconstruct(dec, images, flip=False)
    renderer = renderer_for(dec)
    true_light = light_from_world(truth["light"])
    valid = 1 - truth["masks"][:, -1:]  # the head: the world paints its background flat, Unsup3D renders a wall
    # the true light at the decomposer's overall brightness (the light's scale trades against the albedo's)
    scale = float((est["light"][:, :2].sum(1) / true_light[:, :2].sum(1)).mean())
    starts = {"decomposer light": est["light"], "true light": true_light * torch.tensor([scale, scale, 1.0, 1.0])}
    # the world's depth with the decomposer's relief: each image's true depth stretched about its mean by the
    # slope of the decomposer's depth on it (decomposer_eval's `depth_relief`), to separate relief from shape
    mask = truth["canonical_mask"] > 0.5
    relief = torch.as_tensor(depth_relief(est["canon_depth"].unsqueeze(1).double(), truth["depth"].double(), mask))
    mean = (truth["depth"] * mask).sum((1, 2, 3), keepdim=True) / mask.sum((1, 2, 3), keepdim=True)
    stretched = mean + relief.float().view(-1, 1, 1, 1) * (truth["depth"] - mean)
    print(f"decomposer relief (1 = true): mean {float(relief.mean()):.3f}, sd {float(relief.std()):.3f}")
    # how far the images are from the world's own render of their factors (0 for renderer faces)
    image_gap = float(photometric_loss(est["input"], world_images, valid))
    print(f"masked L1 of the images against the world's render of their factors: {image_gap:.4f}")
    world_albedo = est["canon_albedo"] if args.albedo_start == "decomposer" else truth["albedo"]
    rows = []
    depths = [("world truth", truth["depth"], truth["view"], world_albedo),
              ("world truth, decomposer's relief", stretched, truth["view"], world_albedo),
              ("decomposer", est["canon_depth"].unsqueeze(1), est["view_deg"], est["canon_albedo"])]
    for depth_name, depth, view, albedo0 in depths[:1] if args.depths == "world" else depths:
        for start_name, light0 in starts.items():
            fit = fit_light(renderer, est["input"], valid, depth, view, albedo0, light0, args.steps, args.albedo_tv,
                           args.albedo_sparse, args.albedo_sparse_p)
            light, albedo = fit.pop("light"), fit.pop("albedo")
            frac = light[:, 0] / light[:, :2].sum(1)
            rows.append({"depth_and_view": depth_name, "start": start_name, **fit,
                         "r_dx": _pearson(light[:, 2], true_light[:, 2]),
                         "r_dy": _pearson(light[:, 3], true_light[:, 3]),
                         "r_ambient_fraction": _pearson(frac, truth["light"][:, 0]),
                         "albedo_r": float(np.nanmean(masked_pearson(albedo, truth["albedo"], mask)))})
    print("| depth and view | start | L1 before | L1 after | r dx (azimuth) | r dy (elevation) | r ambient "
          "| albedo r |\n|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['depth_and_view']} | {r['start']} | {r['l1_start']:.4f} | {r['l1_end']:.4f} | {r['r_dx']:.3f} | "
              f"{r['r_dy']:.3f} | {r['r_ambient_fraction']:.3f} | {r['albedo_r']:.3f} |")
    if args.out:
        with atomic_write(args.out, "w") as f:
            finite_rows = [{k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in r.items()}
                           for r in rows]
            json.dump({"args": vars(args), "image_gap_l1": image_gap, "rows": finite_rows}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
