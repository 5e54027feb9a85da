#!/usr/bin/env python
"""The seed's data-augmentation claim on the ground-truth world: does guided extrapolation along the 3D-coupled yaw
direction help a downstream yaw regressor on poses the training set lacks?

1. Fit the 3D-coupled global directions (no labels: the decomposer's yaw) on `--fit-samples` codes of the shipped
   synthetic checkpoint (or read a DirectionSet with `--dirs`).
2. Export `--aug-count` images spread evenly over `--target` (decomposer yaw, degrees) with `export_augmentation`.
3. Narrow training set: `--train-count` generator images whose *true* yaw (the world's factor map) has |yaw| < 15.
4. Test set: `--test-count` images drawn by the world's renderer with true |yaw| in [25, 45] (beyond the narrow set;
   `faces_from_renderer`).
5. Train the same small CNN regressor (seeded) on (a) the narrow set, (b) narrow + exported images labelled with the
   decomposer's yaw (the unsupervised pipeline), (c) narrow + a second export whose yaw is calibrated on the narrow
   set (`export_augmentation(calibration=...)`: the decomposer's yaw mapped affinely onto the narrow set's own
   labels, so the exported labels are in the downstream model's units; the target range is then in true degrees),
   (d) narrow + the export of (b) labelled with its true yaw (what the images alone bring, for reference). Report
   the test mean absolute error (degrees) of each.

    python scripts/bench_augmentation.py --json aug.json
    python scripts/bench_augmentation.py --decomposer runs/decomposer32/checkpoint.pth --aug-count 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from stylegan_disentangle.analysis.augmentation import export_augmentation
from stylegan_disentangle.analysis.sensitivity import SENSITIVITY_SAMPLES, image_sensitivity
from stylegan_disentangle.directions import DirectionSet, ThreeDCoupledDirections
from stylegan_disentangle.labels.calibration import fit_label_calibration
from stylegan_disentangle.labels.decomposer.labeler import decomposer_labeler
from stylegan_disentangle.latents import bank_seeds, sample_latents
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import faces_from_renderer
from stylegan_disentangle.synthetic.factors import factor_index, to_physical
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import positive_int, run_script, seed_value

YAW = factor_index("yaw")


def true_yaw(fmap, ws: torch.Tensor) -> np.ndarray:
    return to_physical(torch.as_tensor(fmap(ws)).float())[:, YAW].double().numpy()


@torch.no_grad()
def render(G, ws: torch.Tensor, batch: int = 256) -> torch.Tensor:
    return torch.cat([G.synthesis(ws[i:i + batch], noise_mode="const", force_fp32=True).float().clamp(-1, 1)
                      for i in range(0, ws.shape[0], batch)])


@torch.no_grad()
def narrow_set(G, fmap, count: int, max_abs_yaw: float, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """`count` generator images with true |yaw| < max_abs_yaw (rejection sampling over per-sample seeds)."""
    keep_ws, keep_y, start = [], [], 0
    while sum(len(y) for y in keep_y) < count:
        ws = sample_latents(G, bank_seeds(seed, start, 4096)).ws
        y = true_yaw(fmap, ws)
        sel = np.flatnonzero(np.abs(y) < max_abs_yaw)
        keep_ws.append(ws[sel])
        keep_y.append(y[sel])
        start += 4096
    ws, y = torch.cat(keep_ws)[:count], np.concatenate(keep_y)[:count]
    return render(G, ws), y


def yaw_directions(G, labeler, n: int, seed: int) -> DirectionSet:
    """3D-coupled global directions from the decomposer's labels of n generator samples (the generator's image
    sensitivity as their prior, as `find-directions` fits them)."""
    lat = sample_latents(G, bank_seeds(seed, 0, n))
    img = render(G, lat.ws)
    labels = {k: v.numpy() for k, v in labeler(img).items() if v.ndim == 1}
    w = lat.ws[:, 0].numpy()
    # the regressions' prior, as find-directions fits them
    metric = image_sensitivity(G, w[:SENSITIVITY_SAMPLES], resolution=labeler.input_resolution, progress=False)
    est = ThreeDCoupledDirections(global_labels=["yaw", "pitch", "roll"], map_labels=(), random_state=seed)
    return est.fit(w, labels, w_metric=metric).to_direction_set()


class SmallRegressor(nn.Module):
    """Three stride-2 convolutions and a linear head: image [N, 3, 32, 32] -> yaw / 45."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(2 * width, 1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)[:, 0]


def train_and_test(x: torch.Tensor, y: np.ndarray, x_test: torch.Tensor, y_test: np.ndarray, epochs: int,
                   seed: int) -> float:
    """Train SmallRegressor (Adam, L1 loss, horizontal flips with negated yaw) and return the test MAE (degrees)."""
    torch.manual_seed(seed)
    model = SmallRegressor()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    target = torch.as_tensor(y / 45.0, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            idx = perm[i:i + 64]
            xb, yb = x[idx], target[idx]
            flip = torch.rand(idx.shape[0], generator=gen) < 0.5  # yaw + turns the nose to image left: mirror flips it
            xb = torch.where(flip[:, None, None, None], xb.flip(-1), xb)
            yb = torch.where(flip, -yb, yb)
            loss = (model(xb) - yb).abs().mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        pred = model(x_test).double().numpy() * 45.0
    return float(np.abs(pred - y_test).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic", help="'synthetic' (shipped) or an Unsup3D checkpoint")
    p.add_argument("--dirs", default=None, help="a DirectionSet with 'yaw' (default: fit 3d-coupled directions)")
    p.add_argument("--fit-samples", type=positive_int, default=4000)
    p.add_argument("--target", default="-45:45")
    p.add_argument("--aug-count", type=positive_int, default=2000)
    p.add_argument("--train-count", type=positive_int, default=2000)
    p.add_argument("--test-count", type=positive_int, default=1000)
    p.add_argument("--epochs", type=positive_int, default=15)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--outdir", default=None, help="keep the exported images here (default: a temporary directory)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    G, fmap = load_synthetic()
    labeler = decomposer_labeler(args.decomposer, maps=False)
    ds = DirectionSet.load(args.dirs) if args.dirs else yaw_directions(G, labeler, args.fit_samples, args.seed)
    x_n, y_n = narrow_set(G, fmap, args.train_count, 15.0, seed=args.seed + 2)
    cal = fit_label_calibration(labeler, x_n, y_n, "yaw")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.outdir) if args.outdir else Path(tmp)
        exp = export_augmentation(G, ds, "yaw", labeler, args.target, args.aug_count, out / "aug", seed=args.seed + 1,
                                  overwrite=True)
        exp_cal = export_augmentation(G, ds, "yaw", labeler, args.target, args.aug_count, out / "aug_calibrated",
                                      seed=args.seed + 1, overwrite=True, calibration=cal)
    aug_img, cal_img = render(G, exp.ws), render(G, exp_cal.ws)
    aug_dec, aug_true = exp.labels["yaw"], true_yaw(fmap, exp.ws)
    cal_yaw, cal_true = exp_cal.labels["yaw"], true_yaw(fmap, exp_cal.ws)
    x_t, f_t = faces_from_renderer(G, fmap, 4 * args.test_count, seed=args.seed + 3, yaw_range=45.0)
    y_t = to_physical(f_t)[:, YAW].double().numpy()
    sel = np.flatnonzero((np.abs(y_t) >= 25) & (np.abs(y_t) <= 45))[: args.test_count]
    x_t, y_t = x_t[sel].float().clamp(-1, 1), y_t[sel]
    setup_s = time.perf_counter() - t0
    with torch.enable_grad():
        results = {
            "narrow (|yaw| < 15, true labels)": train_and_test(x_n, y_n, x_t, y_t, args.epochs, args.seed),
            "narrow + exported (decomposer yaw labels)": train_and_test(
                torch.cat([x_n, aug_img]), np.concatenate([y_n, aug_dec]), x_t, y_t, args.epochs, args.seed),
            "narrow + exported (decomposer yaw calibrated on the narrow set)": train_and_test(
                torch.cat([x_n, cal_img]), np.concatenate([y_n, cal_yaw]), x_t, y_t, args.epochs, args.seed),
            "narrow + exported (true yaw labels, reference)": train_and_test(
                torch.cat([x_n, aug_img]), np.concatenate([y_n, aug_true]), x_t, y_t, args.epochs, args.seed),
        }
    base = results["narrow (|yaw| < 15, true labels)"]
    print(f"decomposer {args.decomposer}; exported {args.aug_count} images over {args.target} (decomposer yaw "
          f"{aug_dec.min():.1f}..{aug_dec.max():.1f}, true yaw {aug_true.min():.1f}..{aug_true.max():.1f}, "
          f"reached {100 * exp.summary['reached_fraction']:.0f}%, corr(decomposer, true) "
          f"{np.corrcoef(aug_dec, aug_true)[0, 1]:.3f}); test: {len(y_t)} renderer faces, |yaw| in [25, 45]")
    print(f"calibration on the narrow set: {cal}; calibrated export: yaw {cal_yaw.min():.1f}..{cal_yaw.max():.1f}, "
          f"true {cal_true.min():.1f}..{cal_true.max():.1f}, reached {100 * exp_cal.summary['reached_fraction']:.0f}%, "
          f"label MAE vs true {np.abs(cal_yaw - cal_true).mean():.2f} deg (uncalibrated export: "
          f"{np.abs(aug_dec - aug_true).mean():.2f})")
    print(f"{'training set':64s} {'test MAE (deg)':>14s} {'vs narrow':>10s}")
    for name, mae in results.items():
        print(f"{name:64s} {mae:14.2f} {100 * (mae - base) / base:+9.0f}%")
    print(f"setup {setup_s:.0f} s, total {time.perf_counter() - t0:.0f} s")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"args": vars(args), "test_mae_deg": results, "export": exp.summary,
                       "calibrated_export": exp_cal.summary,
                       "true_yaw_of_exported": [float(aug_true.min()), float(aug_true.max())],
                       "true_yaw_of_calibrated_export": [float(cal_true.min()), float(cal_true.max())]}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
