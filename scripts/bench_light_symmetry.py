#!/usr/bin/env python
"""How much of a light change can a left-right symmetric albedo absorb? The identifiable part of the light.

Unsup3D renders the canonical image (albedo / 2 + 1/2) * shading * 2 - 1 with a symmetric albedo. A light change
multiplies each pixel's shading by some factor k(p). When k is itself left-right symmetric, the symmetric albedo
divided by k renders the very same image: that light change is invisible to the model, whatever the depth. For a
symmetric face, a change of the light's elevation or of its ambient share gives a symmetric k only when the light
has no azimuth; otherwise the lit and the shaded side respond differently, and that difference is all the images
say about the elevation and the ambient. An azimuth change (antisymmetric) is the control.

For the world's exact canonical depth, albedo and light of the shipped checkpoint's faces (no network involved),
per light step: the mean absolute change of the canonical image inside the world's canonical face mask, and what is
left of it after the best symmetric albedo has absorbed it (per mirror pair of pixels, the least-squares albedo),
by the light's |azimuth|. Next to them: how far the generator's images are from the world's render of their factors
(the masked L1 of `bench_light_identifiability.py --source generator`), the error a decomposer trained on the
generator's faces must explain besides the light.

    python scripts/bench_light_symmetry.py                      # 2000 faces, steps of 10 deg and 0.1 ambient
    python scripts/bench_light_symmetry.py --samples 500 --json runs/light_symmetry.json --png runs/light_symmetry.png
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from stylegan_disentangle.labels.decomposer.reconstruction import photometric_loss
from stylegan_disentangle.labels.decomposer.renderer import Renderer, light_angles, light_from_angles, light_from_world
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import faces_from_generator
from stylegan_disentangle.synthetic.renderer import render
from stylegan_disentangle.utils import atomic_write, atomic_write_path
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value


def stepped_light(light: torch.Tensor, kind: str, step: float) -> torch.Tensor:
    """This renderer's light [N, 4] moved by `step`: degrees of elevation or azimuth, or ambient share (the
    diffuse falls by as much, as in the world, where it is 1 - ambient)."""
    angles = light_angles(light)
    ambient, diffuse = light[:, 0], light[:, 1]
    if kind == "ambient":
        return light_from_angles(ambient + step, diffuse - step, angles[:, 0], angles[:, 1])
    azimuth, elevation = angles[:, 0] + (step if kind == "azimuth" else 0.0), angles[:, 1]
    return light_from_angles(ambient, diffuse, azimuth, elevation + (step if kind == "elevation" else 0.0))


def unabsorbed(target: torch.Tensor, shading: torch.Tensor) -> torch.Tensor:
    """Residual of the best symmetric albedo under `shading` [N, 1, S, S] for `target` = (albedo + 1) * old shading
    [N, 3, S, S]: per mirror pair (p, p'), u = (s(p) t(p) + s(p') t(p')) / (s(p)^2 + s(p')^2), residual u s - t."""
    mirror_t, mirror_s = target.flip(-1), shading.flip(-1)
    u = (shading * target + mirror_s * mirror_t) / (shading**2 + mirror_s**2).clamp_min(1e-12)
    return u * shading - target


def _masked_abs_mean(x: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Per-image mean |x| over the mask's pixels (all channels)."""
    m = mask.expand_as(x)
    return ((x.abs() * m).sum((1, 2, 3)) / m.sum((1, 2, 3)).clamp_min(1)).numpy()


def plot(results: dict, gap: float, path: str) -> None:
    """Two panels by |azimuth| bin: what each light step leaves after a symmetric albedo (L1, with the generator's
    own error as a line), and that as a share of the step's whole change."""
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    left_ax, share_ax = fig.subplots(1, 2)
    for kind, res in results.items():
        rows = res["rows"][1:]  # the bins (row 0 is every face)
        x = [f"{r['abs_azimuth'][0]:g}-{r['abs_azimuth'][1]:g}" for r in rows]
        unit = " deg" if kind != "ambient" else ""
        left_ax.plot(x, [r["unabsorbed_l1"] for r in rows], "o-", label=f"{kind} {res['step']:+g}{unit}")
        share_ax.plot(x, [r["unabsorbed_fraction"] for r in rows], "o-", label=f"{kind} {res['step']:+g}{unit}")
    left_ax.axhline(gap, color="k", ls="--", label="generator vs world (image L1)")
    left_ax.set(xlabel="|light azimuth| (deg)", ylabel="canonical L1 left", ylim=(0, None),
                title="what a symmetric albedo cannot absorb")
    share_ax.set(xlabel="|light azimuth| (deg)", ylabel="share of the change left", ylim=(0, 1.05),
                 title="share of each light step that stays visible")
    left_ax.legend(fontsize=8)
    share_ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=positive_int, default=2000)
    p.add_argument("--elevation-step", type=finite_float, default=10.0, help="degrees")
    p.add_argument("--azimuth-step", type=finite_float, default=10.0, help="degrees")
    p.add_argument("--ambient-step", type=finite_float, default=0.1,
                   help="ambient share (the world's range is 0.1-0.6)")
    p.add_argument("--bins", default="0,10,20,35,60", help="|azimuth| bin edges, degrees")
    p.add_argument("--seed", type=seed_value, default=4242)
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--json", default=None)
    p.add_argument("--png", default=None, help="Plot of the table (PNG).")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G, fmap = load_synthetic()
    images, factors = faces_from_generator(G, fmap, args.samples, seed=args.seed)
    world_images, truth = render(factors, G.img_resolution, return_intrinsics=True)
    gap = float(photometric_loss(images, world_images, 1 - truth["masks"][:, -1:]))
    renderer = Renderer()
    depth, albedo, mask = truth["depth"], truth["albedo"], (truth["canonical_mask"] > 0.5).float()
    light = light_from_world(truth["light"])
    normals = renderer.normals_from_depth(depth)
    asym = {"albedo": float(_masked_abs_mean(albedo - albedo.flip(-1), mask).mean()),
            "depth": float(_masked_abs_mean(depth - depth.flip(-1), mask).mean())}
    shading = renderer.shade(normals, light)
    target = (albedo + 1) * shading
    azimuth = light_angles(light)[:, 0].abs().numpy()
    edges = [float(e) for e in args.bins.split(",")]
    bins = [(lo, hi) for lo, hi in zip(edges[:-1], edges[1:])]
    steps = {"elevation": args.elevation_step, "ambient": args.ambient_step, "azimuth": args.azimuth_step}
    results: dict = {}
    for kind, step in steps.items():
        new_shading = renderer.shade(normals, stepped_light(light, kind, step))
        change = _masked_abs_mean((albedo + 1) * new_shading - target, mask)
        left = _masked_abs_mean(unabsorbed(target, new_shading), mask)
        rows = []
        for lo, hi in [(edges[0], edges[-1]), *bins]:
            sel = (azimuth >= lo) & (azimuth < hi)
            rows.append({"abs_azimuth": [lo, hi], "n": int(sel.sum()), "change_l1": float(change[sel].mean()),
                         "unabsorbed_l1": float(left[sel].mean()),
                         "unabsorbed_fraction": float(left[sel].mean() / change[sel].mean())})
        results[kind] = {"step": step, "rows": rows}
    print(f"{args.samples} faces; the world's canonical albedo / depth left-right asymmetry (mean |x - flip x| in "
          f"the mask): {asym['albedo']:.2e} / {asym['depth']:.2e}")
    print(f"masked L1 of the generator's images against the world's render of their factors: {gap:.4f}\n")
    print("| light step | abs(azimuth) deg | faces | canonical change L1 | left by a symmetric albedo | share left |")
    print("|---|---|---|---|---|---|")
    for kind, res in results.items():
        unit = "deg" if kind != "ambient" else ""
        for r in res["rows"]:
            print(f"| {kind} {res['step']:+g} {unit} | {r['abs_azimuth'][0]:g}-{r['abs_azimuth'][1]:g} | {r['n']} | "
                  f"{r['change_l1']:.4f} | {r['unabsorbed_l1']:.4f} | {r['unabsorbed_fraction']:.2f} |")
    if args.png:
        plot(results, gap, args.png)
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"args": vars(args), "generator_gap_l1": gap, "world_asymmetry": asym, "steps": results}, f,
                      indent=2)


if __name__ == "__main__":
    run_script(main)
