#!/usr/bin/env python
"""Benchmark the peak memory of labelling a latent bank of a large network: images rendered and labelled
`render_chunk_size` codes at a time (ours, the default) against the whole bank chunk rendered at once (the
baseline: the behaviour before the pixel budget), in one run of this script.

Each row builds the same bank (random weights of the FFHQ configuration at `--resolution`, the `image_stats`
labeler, one bank chunk of `--samples` codes) in a fresh child process, so that each peak resident set size is its
own; the last line printed is the ratio of the peaks (and of the times), baseline / ours.

    python scripts/bench_render_memory.py --resolution 256 --samples 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from stylegan_disentangle.labels import ImageStatsLabeler
from stylegan_disentangle.latents import LatentBank, sampling
from stylegan_disentangle.networks import Generator
from stylegan_disentangle.utils.script_args import positive_int, run_script

UNBOUNDED = 1 << 62  # a pixel budget no bank chunk reaches: the whole chunk in one synthesis call


def ffhq_generator(resolution: int) -> Generator:
    """Random weights of the official FFHQ configuration at `resolution` (8 mapping layers, channel_base 16384
    up to 256x256, 32768 above)."""
    torch.manual_seed(0)
    return Generator(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                     mapping_kwargs=dict(num_layers=8),
                     synthesis_kwargs=dict(channel_base=16384 if resolution <= 256 else 32768,
                                           channel_max=512)).eval()


def child(args: argparse.Namespace) -> None:
    """One row, in its own process: build the bank and print {'seconds', 'peak_rss_mb', 'labels'} as JSON."""
    torch.set_num_threads(args.threads)
    if args.mode == "whole":
        sampling.RENDER_PIXEL_BUDGET = UNBOUNDED
    G = ffhq_generator(args.resolution)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        bank = LatentBank.create(G, Path(tmp) / "bank", args.samples, seed=0, labelers=[ImageStatsLabeler()],
                                 batch_size=args.samples, progress=False)
        seconds = time.perf_counter() - start
        brightness = [float(v) for v in bank.labels["brightness"][:4]]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_mb, "brightness": brightness}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolution", type=positive_int, default=256, help="network resolution (power of two)")
    parser.add_argument("--samples", type=positive_int, default=64, help="codes in the bank's one chunk")
    parser.add_argument("--threads", type=positive_int, default=1)
    parser.add_argument("--mode", choices=["chunked", "whole"], help=argparse.SUPPRESS)  # a child process's row
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    step = sampling.render_chunk_size(ffhq_generator(args.resolution), args.samples)
    print(f"bank of {args.samples} codes at {args.resolution}x{args.resolution}, image_stats labels, "
          f"{args.threads} thread(s); ours renders {step} codes per synthesis call, the baseline {args.samples}")
    rows = {}
    for mode in ("whole", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--resolution", str(args.resolution), "--samples",
                              str(args.samples), "--threads", str(args.threads), "--mode", mode],
                             capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise SystemExit(f"the {mode} row failed (exit {out.returncode}): {out.stderr.strip()[-2000:]}")
        rows[mode] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{mode:8s} peak RSS {rows[mode]['peak_rss_mb']:8.0f} MB  {rows[mode]['seconds']:7.1f} s")
    same = max(abs(a - b) for a, b in zip(rows["whole"]["brightness"], rows["chunked"]["brightness"]))
    print(f"labels of the first codes differ by at most {same:.2e}")
    print(f"ratio baseline / ours: peak RSS {rows['whole']['peak_rss_mb'] / rows['chunked']['peak_rss_mb']:.2f}x, "
          f"time {rows['whole']['seconds'] / rows['chunked']['seconds']:.2f}x")


if __name__ == "__main__":
    run_script(main)
