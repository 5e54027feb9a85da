#!/usr/bin/env python
"""Benchmark: end-to-end `find-directions` (sample + render + label a bank, fit, name, plot) on a reference network.

Runs `run_find_directions` on `--pkl` (default ../shared/reference/sg2ada_skip_32.pkl, 32x32, w_dim 256) and reports
the per-stage wall-clock times from the run's report.json. When `--measure-samples` is smaller than `--samples`,
it runs the smaller bank and extrapolates to `--samples`: the bank (mapping + rendering + labelling) and the
sample-based stages (fit, sample naming) scale linearly with N; the rendered naming, the edit grid and the plots
use fixed sample counts (UMAP / scatter capped at 5000 points) and are kept as measured.

The machine is shared: the load average before and after is recorded; `--threads` sets torch's intra-op threads
(on a contended 2-core machine one thread is usually faster).

Examples:
    python scripts/bench_find_directions.py --samples 100000 --measure-samples 5000 --json bench_fd.json
    python scripts/bench_find_directions.py --samples 100000           # the full run (tens of minutes on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from stylegan_disentangle.analysis.find_directions import METHODS, run_find_directions
from stylegan_disentangle.utils.script_args import nonnegative_int, positive_int, run_script

LINEAR_STAGES = ("bank", "fit", "name_samples")
DEFAULT_PKL = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "sg2ada_skip_32.pkl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pkl", default=str(DEFAULT_PKL))
    p.add_argument("--method", choices=METHODS, default="pca")
    p.add_argument("--samples", type=positive_int, default=100_000, help="target bank size")
    p.add_argument("--labeler", default="image_stats",
                   help="labeler ('none' skips rendering the bank: times sampling, fitting and plots alone)")
    p.add_argument("--measure-samples", type=nonnegative_int, default=None,
                   help="run this many and extrapolate to --samples")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--threads", type=nonnegative_int, default=None,
                   help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--outdir", default=None, help="keep the run here (default: a temporary directory, removed)")
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()  # recorded now: UMAP's numba run resets it at the end
    n_run = min(args.samples, args.measure_samples or args.samples)
    outdir = Path(args.outdir) if args.outdir else Path(tempfile.mkdtemp(prefix="bench_fd_"))
    load_before = os.getloadavg()
    start = time.perf_counter()
    result = run_find_directions(args.pkl, method=args.method, samples=n_run, labeler=args.labeler, outdir=outdir,
                                 seed=0, device=args.device, batch_size=args.batch_size, umap=args.umap,
                                 progress=False)
    total = time.perf_counter() - start
    stages = dict(result.report["timings_s"])
    scale = args.samples / n_run
    projected = {k: (v * scale if k in LINEAR_STAGES else v) for k, v in stages.items()}
    record = {
        "pkl": args.pkl,
        "method": args.method,
        "labeler": args.labeler,
        "device": args.device,
        "torch_threads": threads,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "measured_samples": n_run,
        "measured_total_s": round(total, 2),
        "measured_stages_s": stages,
        "bank_rate_samples_per_s": round(n_run / stages["bank"], 1),
        "target_samples": args.samples,
        "extrapolated": n_run != args.samples,
        "target_total_s": round(sum(projected.values()) + (total - sum(stages.values())), 1),
        "target_stages_s": {k: round(v, 2) for k, v in projected.items()},
    }
    print(json.dumps(record, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    if not args.outdir:
        shutil.rmtree(outdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    run_script(main)
