#!/usr/bin/env python
"""Benchmark our StyleGAN2 generator: images/s and ms/image with random weights.

Configurations: 256x256 (channel_base 16384) and 1024x1024 config-F (channel_base 32768, 8 mapping layers), batch 1
and 8, fused vs non-fused modulated convolution. Each row also prints the speed ratio against the non-fused baseline
measured in the same process. Runs on CPU, and on CUDA when present (--device).

    python scripts/bench_generator.py                       # full table on the default device
    python scripts/bench_generator.py --resolutions 256 --batches 1 --reps 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from stylegan_disentangle.networks import Generator
from stylegan_disentangle.utils import atomic_write, resolve_device

CONFIGS = {
    256: dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
              mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=16384, channel_max=512)),
    1024: dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=1024, img_channels=3,
               mapping_kwargs=dict(num_layers=8), synthesis_kwargs=dict(channel_base=32768, channel_max=512)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_generator(G: Generator, batch: int, fused: bool, reps: int, device: torch.device) -> float:
    """Median seconds for one G(z) call of `batch` images (after one warm-up call)."""
    z = torch.randn([batch, G.z_dim], device=device)
    times = []
    with torch.no_grad():
        for i in range(reps + 1):
            _sync(device)
            start = time.perf_counter()
            G(z, None, noise_mode="const", fused_modconv=fused)
            _sync(device)
            if i > 0:
                times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[256, 1024], choices=sorted(CONFIGS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per row (median is reported)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--json", default=None, help="also write the rows as JSON to this path")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device={device} ({hardware}), torch {torch.__version__}, threads={torch.get_num_threads()}")
    print(f"{'res':>5} {'batch':>5} {'modconv':>9} {'img/s':>9} {'ms/img':>10} {'vs non-fused':>13}")
    rows = []
    for res in args.resolutions:
        torch.manual_seed(0)
        G = Generator(**CONFIGS[res]).eval().to(device)
        for batch in args.batches:
            baseline = time_generator(G, batch, fused=False, reps=args.reps, device=device)
            for fused, seconds in ((False, baseline), (True, time_generator(G, batch, True, args.reps, device))):
                row = dict(resolution=res, batch=batch, modconv="fused" if fused else "non-fused",
                           images_per_s=batch / seconds, ms_per_image=1000 * seconds / batch,
                           speedup_vs_non_fused=baseline / seconds)
                rows.append(row)
                print(f"{res:>5} {batch:>5} {row['modconv']:>9} {row['images_per_s']:>9.3f} "
                      f"{row['ms_per_image']:>10.1f} {row['speedup_vs_non_fused']:>12.2f}x", flush=True)
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(dict(device=str(device), hardware=hardware, torch=torch.__version__,
                           threads=torch.get_num_threads(), rows=rows), f, indent=2)


if __name__ == "__main__":
    main()
