#!/usr/bin/env python
"""Can a light change be told from an albedo change by the *pattern* it leaves on the canonical face?

An unsupervised way to the global light directions that does not trust netL's labels: regress the decomposer's
canonical log-appearance, log((albedo / 2 + 1/2) * shading), on w (ridge, over the head: the world's mean head
mask, a choice of pixels only), and compare what each
direction of W does to it with the Lambertian templates, the derivatives of log shading with respect to the light
(ambient fraction, dx, dy) at the decomposer's mean normal and mean light. The appearance is the product of albedo
and shading, so how the decomposer splits a change between the two does not matter here.

Reported, on the shipped synthetic generator, for the whole head and for its lower part (canonical rows >= r0,
below the hair):

- for each true factor direction of the world (the scoring truth, used only to explain): the norm of its response
  map and the cosine of that map with each template. A factor whose response looks like a template is
  indistinguishable from that light change by this route;
- the template directions (the regression maps projected on each template, and the three templates fitted jointly
  to each face's map) and, as the baseline, the ridge
  directions of netL's own labels: their |cos| with the true light directions.

    python scripts/bench_light_patterns.py                         # 20,000 faces, the shipped decomposer
    python scripts/bench_light_patterns.py --samples 5000 --rows 12,16 --json patterns.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.labels.decomposer.reconstruction import reconstruct, renderer_for
from stylegan_disentangle.labels.decomposer.renderer import light_angles
from stylegan_disentangle.synthetic.checkpoint import load_synthetic, oracle_labeler
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import (
    finite_float,
    int_list,
    nonnegative_int,
    positive_int,
    run_script,
    seed_value,
)

FACTORS = ("light_elevation", "light_azimuth", "ambient", "hair_color", "skin_r", "pitch")
TEMPLATE_OF = {"light_azimuth": "dx", "light_elevation": "dy", "ambient": "ambient_fraction"}


def canonical_appearance(dec, G, w: torch.Tensor, batch: int = 500) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """log canonical appearance [N, 3, R, R], the mean canonical normal [3, R, R] and netL's light [N, 4]."""
    logs, lights, normal_sum = [], [], 0
    for i in range(0, len(w), batch):
        ws = w[i:i + batch, None].repeat(1, G.num_ws, 1)
        out = reconstruct(dec, G.synthesis(ws, noise_mode="const").clamp(-1, 1), flip=False)
        appearance = (out["canon_albedo"] / 2 + 0.5) * out["shading"]
        logs.append(appearance.clamp_min(1e-3).log().numpy())
        lights.append(out["light"])
        normal_sum = normal_sum + out["canon_normal"].sum(0)
    return np.concatenate(logs), normal_sum / normal_sum.norm(dim=0, keepdim=True), torch.cat(lights)


def templates(dec, normal: torch.Tensor, light: torch.Tensor) -> dict[str, np.ndarray]:
    """d log(shading) / d light at `normal` [3, R, R] and `light` [4]: dx, dy and the ambient fraction (ambient up,
    diffuse down by as much)."""
    renderer = renderer_for(dec)
    with torch.enable_grad():
        jac = torch.autograd.functional.jacobian(lambda t: renderer.shade(normal[None], t[None])[0, 0].log(), light)
    return {"ambient_fraction": (jac[..., 0] - jac[..., 1]).numpy(), "dx": jac[..., 2].numpy(),
            "dy": jac[..., 3].numpy()}


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic")
    p.add_argument("--samples", type=positive_int, default=20000)
    p.add_argument("--rows", type=int_list, default=[12, 16],
                   help="Lower-face regions: canonical rows >= each of these (a comma list).")
    p.add_argument("--ridge", type=finite_float, default=1e-3,
                   help="Ridge strength, relative to the mean variance of w.")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    G, fmap = load_synthetic()
    dec = load_decomposer(args.decomposer).eval()
    gen = torch.Generator().manual_seed(args.seed)
    w = G.mapping(torch.randn([args.samples, G.z_dim], generator=gen), None)[:, 0]
    logs, normal, light = canonical_appearance(dec, G, w)
    res = dec.image_size
    masks = oracle_labeler().intrinsics(w[:256, None].repeat(1, G.num_ws, 1), resolution=res)["canonical_masks"]
    head = ((1 - masks[:, -1]).mean(0) > 0.5).numpy()  # the last part is the background
    tpl = templates(dec, normal, light.mean(0))

    wc = w.double().numpy()
    wc = wc - wc.mean(0)
    gram = wc.T @ wc
    gram += args.ridge * np.trace(gram) / len(gram) * np.eye(len(gram))
    truth = fmap.directions / np.linalg.norm(fmap.directions, axis=1, keepdims=True)

    def true_cos(v: np.ndarray, factor: str) -> float:
        return float(abs(v @ truth[fmap.names.index(factor)]) / np.linalg.norm(v))

    angles = light_angles(light).numpy()
    labels = {"light_azimuth": angles[:, 0], "light_elevation": angles[:, 1],
              "ambient": (light[:, 0] / light[:, :2].sum(1)).numpy()}
    baseline = {f: true_cos(np.linalg.solve(gram, wc.T @ (y - y.mean())), f) for f, y in labels.items()}

    # one ridge solve over the head; each pixel's column is independent, so a region is a slice of it
    y = logs[:, :, head]
    coef_head = np.linalg.solve(gram, wc.T @ (y - y.mean(0)).reshape(len(w), -1)).reshape(len(gram), 3, -1)
    rows = np.arange(res)[:, None].repeat(res, 1)
    regions = {"whole head": head} | {f"rows >= {r0}": head & (rows >= r0) for r0 in args.rows}
    report = {"args": vars(args), "netL_label_ridge_abs_cos": baseline, "regions": {}}
    for region, sel in regions.items():
        coef = coef_head[:, :, sel[head]].reshape(len(gram), -1)  # [w_dim, 3 * pixels]
        t = {k: np.tile(v[sel], 3) for k, v in tpl.items()}
        responses = {}
        for f in FACTORS:
            m = coef.T @ truth[fmap.names.index(f)]
            responses[f] = {"norm": float(np.linalg.norm(m))} | {k: _cos(m, v) for k, v in t.items()}
        found = {f: true_cos(coef @ t[k], f) for f, k in TEMPLATE_OF.items()}
        # jointly: each face's least-squares coefficients on the three templates at once, regressed on w
        basis = np.stack([t[k] for k in TEMPLATE_OF.values()], 1)
        joint = coef @ basis @ np.linalg.inv(basis.T @ basis)
        found_joint = {f: true_cos(joint[:, i], f) for i, f in enumerate(TEMPLATE_OF)}
        report["regions"][region] = {"pixels": int(sel.sum()), "responses": responses, "template_abs_cos": found,
                                     "joint_template_abs_cos": found_joint}

    print(f"{args.samples} faces; netL labels' ridge |cos| with the truth: "
          + ", ".join(f"{f} {c:.3f}" for f, c in baseline.items()))
    for region, r in report["regions"].items():
        print(f"\n#### {region} ({r['pixels']} pixels)\n\n| factor | response norm | cos dx | cos dy | cos ambient "
              f"fraction |\n|---|---|---|---|---|")
        for f, v in r["responses"].items():
            print(f"| {f} | {v['norm']:.2f} | {v['dx']:.2f} | {v['dy']:.2f} | {v['ambient_fraction']:.2f} |")
        print("\ntemplate directions' |cos| with the truth: "
              + ", ".join(f"{f} {c:.3f}" for f, c in r["template_abs_cos"].items())
              + "; fitted jointly: " + ", ".join(f"{f} {c:.3f}" for f, c in r["joint_template_abs_cos"].items()))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    run_script(main)
