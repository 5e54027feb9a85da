#!/usr/bin/env python
"""Score every direction finder against the ground truth of the shipped synthetic checkpoint.

Samples w from the checkpoint's mapping network, labels them with the synthetic oracle (exact factors, read from
the ws), fits each finder, and prints one table: method x (recovery, leakage, DCI, fit time).
- recovery: |cosine| of each direction to the true direction of the factor it claims (supervised methods name
  their factor; unsupervised ones are matched one-to-one to factors by the Hungarian method on |cosine|), averaged;
  `pose+light` restricts the mean to the pose and illumination factors;
- leakage: change of all other factors relative to the claimed factor per unit step (0 = isolated edit), averaged;
- DCI (lasso importances) of the codes each method defines (projections of w on its directions).

    python scripts/bench_methods.py --samples 20000 --json methods.json
    python scripts/bench_methods.py --samples 20000 --methods "svm" --per-factor   # the two SVM modes
    python scripts/bench_methods.py --samples 20000 --methods 3d-coupled pca closed-form ridge   # issue 11

The `3d-coupled` row uses no labels: it renders the samples, decomposes them with the 3D decomposer (`--decomposer`,
default the shipped one; its fit time includes rendering and decomposition) and names its global directions after
the decomposer's labels (`light_ambient` claims the factor `ambient`); its localized directions are matched to the
remaining factors like unsupervised directions.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from stylegan_disentangle.analysis.metrics import dci, direction_recovery, factor_change_per_step, leakage
from stylegan_disentangle.directions import (
    ClosedFormDirections,
    LinearDirections,
    PCADirections,
    SparseDirections,
    ThreeDCoupledDirections,
)
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.factors import factor_groups
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import positive_int, run_script, seed_value

ALIASES = {"light_ambient": "ambient"}  # decomposer label -> factor of the world


def _three_d_coupled(G, spec: str):
    """Fit on w [N, w_dim] from the decomposer's labels of G's images (rendered and decomposed here)."""
    from stylegan_disentangle.analysis.sensitivity import SENSITIVITY_SAMPLES, sensitivities
    from stylegan_disentangle.labels.decomposer.labeler import decomposer_labeler
    from stylegan_disentangle.labels.decomposer.view_leak import VIEW_LEAK_SAMPLES
    from stylegan_disentangle.synthetic import PART_NAMES
    from stylegan_disentangle.synthetic.checkpoint import oracle_labeler

    def fit(w, y):
        lab = decomposer_labeler(spec, maps=True)
        labels: dict = {}
        with torch.no_grad():
            for i in range(0, w.shape[0], 512):
                ws = torch.as_tensor(w[i:i + 512]).unsqueeze(1).repeat(1, G.num_ws, 1)
                img = G.synthesis(ws, noise_mode="const", force_fp32=True).clamp(-1, 1)
                for k, v in lab(img).items():
                    if k != "confidence":
                        labels.setdefault(k, []).append(v.numpy())
            ws = torch.as_tensor(w[:256]).unsqueeze(1).repeat(1, G.num_ws, 1)
            masks = oracle_labeler().intrinsics(ws, resolution=lab.input_resolution)["canonical_masks"].mean(0)
        labels = {k: np.concatenate(v) for k, v in labels.items()}
        # the regressions' prior and the light readings' view leak, as find-directions fits them
        metric, chroma = sensitivities(G, w[:SENSITIVITY_SAMPLES], resolution=lab.input_resolution, progress=False)
        with torch.no_grad():
            ws = torch.as_tensor(w[:VIEW_LEAK_SAMPLES]).unsqueeze(1).repeat(1, G.num_ws, 1)
            leaks = lab.view_leak(G.synthesis(ws, noise_mode="const", force_fp32=True).clamp(-1, 1))
        return ThreeDCoupledDirections(taught_light=lab.taught_light, random_state=0).fit(
            w, labels, part_masks=masks.numpy(), part_names=list(PART_NAMES), w_metric=metric, w_chroma=chroma,
            label_leaks=leaks)

    return fit


def _finders(G, n_factors: int, decomposer: str = "synthetic") -> dict:
    return {
        "3d-coupled (no labels)": _three_d_coupled(G, decomposer),
        "pca": (lambda w, y: PCADirections(n_components=n_factors, random_state=0).fit(w)),
        "closed-form": (lambda w, y: ClosedFormDirections(n_components=n_factors).fit(G)),
        "linear (ridge)": (lambda w, y: LinearDirections(method="ridge").fit(w, y)),
        **{f"linear (svm {mode}, top/bottom {p}%)": _svm(mode, p) for p in (2, 10)
           for mode in ("interfacegan", "standardized")},
        "sparse (lasso)": (lambda w, y: SparseDirections(method="lasso", alpha=0.01, random_state=0).fit(w, y)),
    }


def _svm(mode: str, percent: float):
    """InterFaceGAN's selection at `percent`, both SVM modes on the same 70/30 train/validation fraction."""
    return lambda w, y: LinearDirections(method="svm", svm_mode=mode, top_bottom_percent=percent, val_fraction=0.3,
                                         random_state=0).fit(w, y)


def _claims(found: np.ndarray, names: list[str], truth: np.ndarray, truth_names: list[str]) -> list[str]:
    """The factor each direction claims: its own name (or its ALIASES entry) if it is a factor, else a one-to-one
    Hungarian match of the other directions to the other factors."""
    claims = [ALIASES.get(n, n) for n in names]
    named = [i for i, n in enumerate(claims) if n in truth_names]
    if len(named) == len(names):
        return claims
    free = [i for i in range(len(names)) if i not in named]
    left = [j for j, n in enumerate(truth_names) if n not in {claims[i] for i in named}]
    cos = np.abs(found[free] @ truth[left].T / np.linalg.norm(found[free], axis=1)[:, None]
                 / np.linalg.norm(truth[left], axis=1)[None])
    rows, cols = linear_sum_assignment(-cos)
    claims = [claims[i] if i in named else f"unmatched:{names[i]}" for i in range(len(names))]
    for r, c in zip(rows, cols):
        claims[free[r]] = truth_names[left[c]]
    return claims


def score(method: str, estimator, w: np.ndarray, factors: np.ndarray, fmap, seconds: float) -> dict:
    truth_names = list(fmap.names)
    found = estimator.directions_
    claims = _claims(found, list(estimator.names_), fmap.directions, truth_names)
    rec = direction_recovery(found, claims, fmap.directions, truth_names)
    groups = factor_groups()
    pose_light = [n for n in claims if n in groups["pose"] + groups["illumination"]]
    probe = w[:2000]
    factors_of = lambda x: fmap(torch.as_tensor(x, dtype=torch.float32)).numpy()  # noqa: E731
    leaks = [leakage(factor_change_per_step(probe, d, factors_of, step=0.5), claim, truth_names)
             for d, claim in zip(found, claims) if claim in truth_names]
    codes = estimator.transform(w)
    d = dci(codes, factors)
    return {
        "recovery": rec["mean_abs_cosine"],
        "recovery_pose_light": float(np.mean([rec["abs_cosine"][n] for n in pose_light])) if pose_light else None,
        "factors_found_cos_0.9": int(sum(v > 0.9 for v in rec["abs_cosine"].values())),
        "leakage": float(np.median(leaks)),
        "dci_disentanglement": d["disentanglement"],
        "dci_completeness": d["completeness"],
        "dci_informativeness": d["informativeness"],
        "fit_seconds": seconds,
        "directions": len(found),
        "abs_cosine": {n: float(v) for n, v in rec["abs_cosine"].items()},
    }


def print_per_factor(results: dict, names: list[str]) -> None:
    """|cos| to the true direction per factor (rows) for every method that names its factors (columns)."""
    methods = [m for m, r in results.items() if set(names) <= set(r["abs_cosine"])]
    if not methods:
        return
    print("\n|cos| to the true direction per factor")
    print(f"{'factor':16s} " + " ".join(f"{m[:22]:>22s}" for m in methods))
    for n in names + ["mean"]:
        vals = [np.nanmean([results[m]["abs_cosine"][f] for f in names]) if n == "mean" else results[m]["abs_cosine"][n]
                for m in methods]
        print(f"{n:16s} " + " ".join(f"{v:22.3f}" for v in vals))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=positive_int, default=20000)
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--methods", nargs="+", default=None,
                        help="subset of the methods: a full name, its first word, or a part of the name")
    parser.add_argument("--pkl", default=None, help="a synthetic checkpoint other than the shipped one")
    parser.add_argument("--factor-map", default=None, help="its factor map (.npz)")
    parser.add_argument("--json", default=None, help="also write {method: {metric: value}} here")
    parser.add_argument("--per-factor", action="store_true", help="also print |cos| per factor of supervised methods")
    parser.add_argument("--decomposer", default="synthetic", help="3d-coupled: 'synthetic' or an Unsup3D checkpoint")
    args = parser.parse_args()

    G, fmap = load_synthetic(pkl=args.pkl, factor_map=args.factor_map)
    gen = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        w = G.mapping(torch.randn([args.samples, G.z_dim], generator=gen), None)[:, 0]
        factors = fmap(w).numpy()
    w = w.numpy()
    labels = {name: factors[:, j] for j, name in enumerate(fmap.names)}

    results = {}
    print(f"{args.samples} samples, {len(fmap.names)} factors (oracle labels)")
    header = f"{'method':42s} {'recovery':>9} {'pose+light':>10} {'found':>6} {'leakage':>8} {'D':>6} {'C':>6} " \
             f"{'I':>6} {'fit s':>7}"
    print(header)
    for method, fit in _finders(G, len(fmap.names), args.decomposer).items():
        if args.methods and not any(m == method or m == method.split(" ")[0] or m in method for m in args.methods):
            continue
        start = time.perf_counter()
        estimator = fit(w, labels)
        seconds = time.perf_counter() - start
        r = results[method] = score(method, estimator, w, factors, fmap, seconds)
        pl = f"{r['recovery_pose_light']:.3f}" if r["recovery_pose_light"] is not None else "-"
        print(f"{method:42s} {r['recovery']:9.3f} {pl:>10} {r['factors_found_cos_0.9']:6d} {r['leakage']:8.3f} "
              f"{r['dci_disentanglement']:6.3f} {r['dci_completeness']:6.3f} {r['dci_informativeness']:6.3f} "
              f"{r['fit_seconds']:7.2f}", flush=True)
    if args.per_factor:
        print_per_factor(results, list(fmap.names))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    run_script(main)
