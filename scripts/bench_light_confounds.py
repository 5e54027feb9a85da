#!/usr/bin/env python
"""What does a decomposer's light read? Its light labels against every factor of the synthetic world.

Two measurements, both on the shipped synthetic generator:

- between samples: the Pearson r of each light label (light_elevation, ambient, light_azimuth) with every world
  factor over fresh faces, and the R^2 of a linear fit of the label on all factors. A label that tracks the wrong
  factor (the hair colour, say) has its largest r there, not on its own factor.
- within a sample: each face is moved along a *pure* factor direction of W (the direction that changes one
  factor's standardized projection and no other's: the columns of the pseudo-inverse of the world's direction
  matrix; the ground-truth directions themselves overlap, e.g. light elevation shares 0.4 with pitch), by +-`step`
  standard deviations. Reported: the mean change of the label, its slope on the true change of the moved factor
  (label units per factor unit, physical units), the share of faces where it moves the right way, and the mean
  |change| of the canonical albedo. A label that moves more for another factor's change than for its own is
  confounded with it.

    python scripts/bench_light_confounds.py                        # the shipped decomposer
    python scripts/bench_light_confounds.py --decomposer runs/x/checkpoint.pth --json out.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.latents import sample_latents
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import decomposer_estimates, faces_from_generator
from stylegan_disentangle.synthetic.factors import factor_index, to_physical
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script

LABELS = ("light_elevation", "ambient", "light_azimuth")
# (moved factor, label read): each light label for its own factor, and for the factors found to leak into it
RESPONSES = (("light_elevation", "light_elevation"), ("hair_color", "light_elevation"), ("pitch", "light_elevation"),
             ("ambient", "ambient"), ("hair_color", "ambient"), ("skin_r", "ambient"),
             ("light_azimuth", "light_azimuth"), ("yaw", "light_azimuth"))


def between_samples(dec, G, fmap, n: int, seed: int) -> dict:
    images, factors = faces_from_generator(G, fmap, n, seed=seed)
    with torch.no_grad():
        est = decomposer_estimates(dec, images)
    f = factors.double().numpy()
    f = (f - f.mean(0)) / f.std(0)
    design = np.c_[f, np.ones(n)]
    out = {}
    for label in LABELS:
        y = est[label].double().numpy()
        y = (y - y.mean()) / y.std()
        coef = np.linalg.lstsq(design, y, rcond=None)[0]
        r = {name: float(np.corrcoef(f[:, i], y)[0, 1]) for i, name in enumerate(fmap.names)}
        out[label] = {"r2_all_factors": float(1 - ((y - design @ coef) ** 2).mean()), "r": r}
    return out


def within_sample(dec, G, fmap, n: int, seed: int, step: float) -> list[dict]:
    ws = sample_latents(G, list(range(seed, seed + n))).ws
    pure = torch.as_tensor(fmap.pure_directions())
    rows = []
    for moved, label in RESPONSES:
        j = factor_index(moved)
        reads, truth, albedo = [], [], []
        for t in (-step, step):
            w2 = ws + t * pure[:, j].view(1, 1, -1)
            with torch.no_grad():
                est = decomposer_estimates(dec, G.synthesis(w2, noise_mode="const").float().clamp(-1, 1))
            reads.append(est[label].double())
            truth.append(to_physical(torch.as_tensor(fmap(w2)).float())[:, j].double())
            albedo.append(est["canon_albedo"])
        d_read, d_true = reads[1] - reads[0], truth[1] - truth[0]
        rows.append({"moved": moved, "label": label, "true_change": float(d_true.mean()),
                     "label_change": float(d_read.mean()), "label_change_sd": float(d_read.std()),
                     "slope": float((d_read * d_true).sum() / (d_true * d_true).sum()),
                     "same_sign": float(((d_read * d_true) > 0).double().mean()),
                     "albedo_change": float((albedo[1] - albedo[0]).abs().mean())})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic")
    p.add_argument("--samples", type=positive_int, default=1500, help="Faces for the between-sample correlations.")
    p.add_argument("--pairs", type=positive_int, default=200, help="Faces moved along each pure factor direction.")
    p.add_argument("--step", type=finite_float, default=0.5, help="Move +-step standard deviations of the factor.")
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--json", default=None, help="JSON file for the numbers.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G, fmap = load_synthetic()
    dec = load_decomposer(args.decomposer).eval()
    between = between_samples(dec, G, fmap, args.samples, seed=20_000_000)
    within = within_sample(dec, G, fmap, args.pairs, seed=9000, step=args.step)
    print(f"between samples (n = {args.samples}): the label's largest correlations with the world's factors\n")
    print("| label | R^2 on all factors | r with its own factor | largest r (factor) |\n|---|---|---|---|")
    for label, b in between.items():
        top = sorted(b["r"].items(), key=lambda kv: -abs(kv[1]))[:3]
        print(f"| {label} | {b['r2_all_factors']:.3f} | {b['r'][label]:.3f} | "
              + ", ".join(f"{v:.2f} ({k})" for k, v in top) + " |")
    print(f"\nwithin a sample (n = {args.pairs}, +-{args.step} sd along pure factor directions)\n")
    print("| moved factor | label | true change | label change (sd) | slope | right sign | albedo |change| |\n"
          "|---|---|---|---|---|---|---|")
    for r in within:
        print(f"| {r['moved']} | {r['label']} | {r['true_change']:.3f} | {r['label_change']:.3f} "
              f"({r['label_change_sd']:.3f}) | {r['slope']:.3f} | {r['same_sign']:.2f} | {r['albedo_change']:.4f} |")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"args": vars(args), "between_samples": between, "within_sample": within}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
