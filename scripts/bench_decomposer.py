#!/usr/bin/env python
"""How good and how fast is a 3D decomposer? Scored against the synthetic world's exact decomposition.

    python scripts/bench_decomposer.py                          # the shipped decomposer, 1000 + 1000 fresh faces
    python scripts/bench_decomposer.py --decomposer runs/decomposer32/checkpoint.pth --json out.json

Two tables (see stylegan_disentangle/synthetic/decomposer_eval.py for every number): faces drawn from the shipped
generator (fresh seeds) and faces rendered by the world itself with yaw up to +-45 degrees (images the generator
never made, poses beyond its range). Then decomposition throughput (images/s, batch 64, inference) at 32x32 and
64x64 for the decomposer's sizes and the official ones, with the generator's own image rate in the same process
as the baseline (the ratio says whether labelling or generating dominates a labelled latent bank).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import check_light_mask, load_decomposer, parse_light_mask
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import (
    SCALARS,
    faces_from_generator,
    faces_from_renderer,
    score_decomposer,
)
from stylegan_disentangle.utils import atomic_write, resolve_device
from stylegan_disentangle.utils.script_args import nonnegative_int, positive_int, run_script

GOALS = {"yaw": 3.0, "pitch": 3.0, "roll": 3.0, "light_azimuth": 5.0, "light_elevation": 5.0}


def _table(title: str, scores: dict) -> str:
    lines = [f"### {title} (n = {scores['n']})", "", "| factor | Pearson r | MAE after affine calibration | goal |",
             "|---|---|---|---|"]
    for name in SCALARS:
        s = scores["scalars"][name]
        unit = "" if name == "ambient" else " deg"
        goal = f"r >= 0.95, MAE <= {GOALS[name]:g}{unit}" if name in GOALS else "r >= 0.95"
        lines.append(f"| {name} | {s['pearson_r']:.3f} | {s['calibrated_mae']:.3f}{unit} | {goal} |")
    lines += ["", f"canonical depth r (in mask) {scores['depth_pearson_r']:.3f} (goal >= 0.9), scale-invariant depth "
              f"error {scores['depth_side']:.4f}, relief {scores['depth_relief']:.2f} (1 = true), normal angle "
              f"error {scores['normal_angle_deg']:.1f} deg, albedo r {scores['albedo_pearson_r']:.3f} (goal >= 0.9), "
              f"reconstruction PSNR {scores['recon_psnr_db']:.2f} dB", "",
              f"what the maps' r owe to the mean face: the world's mean map of these faces alone scores depth r "
              f"{scores['depth_mean_face_r']:.3f} and albedo r {scores['albedo_mean_face_r']:.3f}; the deviation "
              f"from the population mean reads depth r {scores['depth_variation_r']:.3f}, albedo r "
              f"{scores['albedo_variation_r']:.3f}", "",
              f"albedo r by region: the face without its hair {scores['albedo_face_r']:.3f}, the hair "
              f"{scores['albedo_hair_r']:.3f}", ""]
    return "\n".join(lines)


def _rate(fn, n: int, reps: int, device: torch.device) -> float:
    """Images per second of fn (n images a call); on CUDA the clock waits for the kernels."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    sync()
    return n * reps / (time.perf_counter() - t)


@torch.no_grad()
def throughput(dec: Unsup3DDecomposer, G, reps: int, device: torch.device = torch.device("cpu")) -> list[dict]:
    rows = []
    z = torch.randn([64, G.z_dim], device=device)
    G = G.to(device)
    gen_rate = _rate(lambda: G(z, None, noise_mode="const"), 64, reps, device)
    rows.append({"what": f"generator {G.img_resolution}x{G.img_resolution} (baseline)", "img_per_s": gen_rate})
    configs = [("this decomposer", dec)]
    for res in (32, 64):
        configs.append((f"official sizes at {res}x{res}", Unsup3DDecomposer(image_size=res).eval().to(device)))
        if res != dec.image_size:
            configs.append((f"this decomposer's sizes at {res}x{res}",
                            Unsup3DDecomposer(**{**dec.get_config(), "image_size": res}).eval().to(device)))
    for name, d in configs:
        img = torch.rand(64, 3, d.image_size, d.image_size, device=device) * 2 - 1
        rate = _rate(lambda d=d, img=img: d.decompose(img), 64, reps, device)
        rows.append({"what": name, "img_per_s": rate, "vs_generator": rate / gen_rate})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic")
    p.add_argument("--samples", type=positive_int, default=1000,
                   help="Faces per table (half calibrate, half evaluate).")
    p.add_argument("--threads", type=nonnegative_int, default=1)
    p.add_argument("--device", default="cpu", help="Where the decomposer runs (cpu, cuda, cuda:N); the faces are "
                                                    "drawn on the CPU and the scores computed there.")
    p.add_argument("--reps", type=positive_int, default=3)
    p.add_argument("--light-mask", default=None, metavar="TOP,LEFT,HEIGHT,WIDTH|none",
                   help="The box netL does not see (default: the decomposer's own; 'none': the whole image, e.g. to "
                        "score the shipped nets as they were before their light mask).")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    try:
        light_mask = None if args.light_mask is None else check_light_mask(parse_light_mask(args.light_mask))
    except ValueError as exc:
        p.error(f"--light-mask: {exc}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    G, fmap = load_synthetic()
    dec = load_decomposer(args.decomposer, device=device)
    if args.light_mask is not None:
        dec.light_mask = light_mask
    images, factors = faces_from_generator(G, fmap, args.samples, seed=20_000_000)
    gen_scores = score_decomposer(dec, images, factors)
    print(_table("faces from the shipped generator (fresh seeds)", gen_scores))
    images, factors = faces_from_renderer(G, fmap, args.samples, seed=30_000_000)
    ren_scores = score_decomposer(dec, images, factors)
    print(_table("faces rendered by the world, yaw up to +-45 deg", ren_scores))
    rows = throughput(dec, G, args.reps, device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"### throughput (batch 64, {where})\n\n| what | images/s | vs generator |\n|---|---|---|")
    for r in rows:
        ratio = f"{r['vs_generator']:.2f}x" if "vs_generator" in r else "1.00x"
        print(f"| {r['what']} | {r['img_per_s']:.1f} | {ratio} |")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"generator_faces": gen_scores, "renderer_faces": ren_scores, "throughput": rows,
                       "decomposer": args.decomposer, "threads": args.threads, "device": str(device),
                       "light_mask": None if dec.light_mask is None else list(dec.light_mask)}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
