#!/usr/bin/env python
"""Decomposer training speed: batches drawn from the generator every step (baseline) against an on-disk image bank.

Runs `train_decomposer` for the same number of steps both ways in this process (same nets, seed and stabilizers)
and prints the training seconds per step, the ratio to the baseline, and the bank's one-off build time with the
number of steps after which it has paid for itself.

    python scripts/bench_decomposer_training.py --steps 40 --bank 2048 --threads 2
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from stylegan_disentangle.checkpoints import load_network_pkl
from stylegan_disentangle.labels.decomposer.trainer import bank_seconds, train_decomposer
from stylegan_disentangle.utils import atomic_write, resolve_device
from stylegan_disentangle.utils.script_args import nonnegative_int, positive_int, run_script

SHIPPED_SIZES = dict(nf=16, zdim=64, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32, xy_light_range=2.0,
                     antialias=True)


def _seconds_per_step(G, outdir: Path, steps: int, warmup: int, **kwargs) -> float:
    train_decomposer(G, outdir, warmup, progress=False, **kwargs)
    before = json.loads((outdir / "train_state.json").read_text())["train_seconds"]
    train_decomposer(G, outdir, warmup + steps, progress=False, **kwargs)
    after = json.loads((outdir / "train_state.json").read_text())["train_seconds"]
    return (after - before) / steps


def _break_even(steps: float | None) -> str:
    return "never (the bank is not faster here)" if steps is None else f"{steps:.0f} steps"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pkl", default="synthetic")
    p.add_argument("--steps", type=positive_int, default=40)
    p.add_argument("--warmup", type=nonnegative_int, default=5)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--bank", type=nonnegative_int, default=2048,
                   help="Bank size for the timed run (the build is timed too).")
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (the generator, the bank's images and the "
                                                    "nets all move there).")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    G = load_network_pkl(args.pkl)["G_ema"]
    common = dict(batch_size=args.batch_size, decomposer_kwargs=SHIPPED_SIZES, lr=2e-4, checkpoint_every=10**9,
                  preview_every=10**9, log_every=10**9, device=device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for stabilizers, (rerender, jitter) in (("official objective", (0.0, 0.0)), ("+ jitter", (0.0, 0.5)),
                                                ("+ jitter + re-render", (1.0, 0.5))):
            kw = dict(common, lam_rerender=rerender, lam_jitter=jitter)
            fresh = _seconds_per_step(G, Path(tmp) / f"fresh{len(rows)}", args.steps, args.warmup, **kw)
            out = Path(tmp) / f"bank{len(rows)}"
            if rows:  # one bank serves every row: the first row builds it, the others reuse it
                out.mkdir()
                (out / "bank").symlink_to(Path(tmp) / "bank0" / "bank", target_is_directory=True)
            t0 = time.perf_counter()
            banked = _seconds_per_step(G, out, args.steps, args.warmup, bank_size=args.bank, **kw)
            build = rows[0]["bank_build_s"] if rows else bank_seconds(out)
            rows.append({"stabilizers": stabilizers, "fresh_s_per_step": fresh, "bank_s_per_step": banked,
                         "speedup": fresh / banked, "bank_build_s": build,
                         "break_even_steps": build / (fresh - banked) if fresh > banked else None,
                         "wall_s": time.perf_counter() - t0})
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{args.threads} thread(s)"
    print(f"{args.pkl}, batch {args.batch_size}, {where}, {args.steps} timed steps; bank of "
          f"{args.bank} images built in {rows[0]['bank_build_s']:.1f} s\n")
    print("| stabilizers | fresh batches (s/step) | bank (s/step) | speed-up | bank pays off after |\n"
          "|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stabilizers']} | {r['fresh_s_per_step']:.3f} | {r['bank_s_per_step']:.3f} | "
              f"{r['speedup']:.2f}x | {_break_even(r['break_even_steps'])} |")
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
