#!/usr/bin/env python
"""Train the Unsup3D decomposer of the shipped synthetic checkpoint (or of any network) and optionally ship it.

    python scripts/train_decomposer.py --outdir runs/decomposer32 --steps 2000          # resumable, deterministic
    python scripts/train_decomposer.py --outdir runs/decomposer32 --steps 2000 --ship   # then copy into the package
    python scripts/train_decomposer.py --outdir runs/more --init synthetic --steps 4000 --stabilize-after 0 --seed 1
                                                                          # continue the shipped nets 4000 steps

`--ship` writes the trained nets (official Unsup3D layout, no optimizer states, float16 weights) to
stylegan_disentangle/labels/decomposer/data/synthetic32_decomposer.pth and a JSON record beside it (settings that the
official layout cannot hold, the command, steps, wall time and the ground-truth scores of a fresh sample). Continued
from the shipped nets (`--init synthetic`), the record keeps the earlier phases as its history; `--phase-note` says in
a sentence what this phase did.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from stylegan_disentangle.checkpoints import load_network_pkl
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer.labeler import SHIPPED, parse_light_mask
from stylegan_disentangle.labels.decomposer.trainer import bank_seconds, train_decomposer, trained_nets_only
from stylegan_disentangle.utils import atomic_write, resolve_device
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, seed_value


def _gain_pair(text: str | None) -> tuple[float, float] | None:
    """'LO,HI' -> (LO, HI); the trainer checks the values."""
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise SystemExit(f"--rerender-albedo-step must be LO,HI (two numbers), got {text!r}") from None
    return lo, hi


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pkl", default="synthetic")
    p.add_argument("--outdir", required=True)
    p.add_argument("--steps", type=positive_int, default=2000)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=finite_float, default=2e-4)
    p.add_argument("--weight-decay", type=finite_float, default=5e-4,
                   help="Adam's (coupled, L2) weight decay on every net; 5e-4 as the official trainer.")
    p.add_argument("--nf", type=positive_int, default=16, help="netD / netA width (multiple of 16).")
    p.add_argument("--zdim", type=positive_int, default=64, help="netD / netA bottleneck.")
    p.add_argument("--nf-small", type=positive_int, default=8, help="netL / netV width; netC's is twice this.")
    p.add_argument("--light-range", type=finite_float, default=2.0)
    p.add_argument("--rerender", type=finite_float, default=1.0)
    p.add_argument("--rerender-light-xy", type=finite_float, default=None,
                   help="Fraction of the light direction's range (--light-range) the re-render term draws from "
                        "(default 1).")
    p.add_argument("--rerender-mode", choices=("random", "data"), default=None,
                   help="Re-render term's scenes: uniform random views and light over a lit wall (the default), or "
                        "the batch's own views and light intensities permuted, with the head over a flat, unlit "
                        "background.")
    p.add_argument("--rerender-intensities", choices=("batch", "uniform"), default=None,
                   help="--rerender-mode data: the re-renders' ambient / diffuse from other images of the batch (the "
                        "default), or uniform and independent over netL's range (with netL frozen: an albedo that "
                        "holds under other light intensities).")
    p.add_argument("--rerender-albedo-step", default=None, metavar="LO,HI",
                   help="Render the re-render scenes' albedo recoloured above a random hairline by a gain "
                        "log-uniform in [LO, HI] (e.g. 0.35,1.25): a darker or lighter top of the head that is "
                        "albedo, not light. Off by default.")
    p.add_argument("--rerender-yaw", type=finite_float, default=None, metavar="DEG",
                   help="Redraw the re-render scenes' yaw uniformly within +-DEG (heads turned further than the "
                        "generator turns them, with the answer known). Default: the scenes' own.")
    p.add_argument("--light-from-rerender", action="store_true",
                   help="netL learns only from the re-render term (the photometric loss does not reach it).")
    p.add_argument("--light-turn", type=finite_float, default=0.0,
                   help="Weight of the turned-head term: each batch's estimate re-rendered under its own light with "
                        "the yaw drawn within +-(--light-turn-yaw) deg, and netL must read the same light there "
                        "(0 = off).")
    p.add_argument("--light-turn-yaw", type=finite_float, default=None, metavar="DEG",
                   help="Largest |yaw| (deg) of --light-turn's renders. Default: 45.")
    p.add_argument("--light-turn-pitch", type=finite_float, default=None, metavar="DEG",
                   help="Redraw --light-turn's pitch within +-DEG as well (netL must not read a nod as light from "
                        "above). Default: each image's own pitch.")
    p.add_argument("--jitter", type=finite_float, default=0.5)
    p.add_argument("--smooth", type=finite_float, default=0.0,
                   help="depth smoothness weight (mean |depth gradient|; 0 = off as official)")
    p.add_argument("--perceptual", action="store_true",
                   help="Add the perceptual term (weight 1) on the network's own discriminator features (--pkl must "
                        "hold a D; the shipped synthetic checkpoint has none).")
    p.add_argument("--albedo-tv", type=finite_float, default=0.0,
                   help="albedo total-variation weight (a Retinex prior: piecewise-flat albedo leaves smooth, "
                        "symmetric shading to the light; 0 = off as official)")
    p.add_argument("--albedo-sparse", type=finite_float, default=0.0,
                   help="albedo gradient-sparsity weight, mean (|gradient| + eps)^p (p < 1: a sharp edge costs less "
                        "than a ramp of the same rise, so features go to the albedo and ramps to the shading; 0 = off)")
    p.add_argument("--albedo-sparse-p", type=finite_float, default=0.3, help="exponent p of --albedo-sparse")
    p.add_argument("--antialias", action="store_true",
                   help="Smooth the depth and albedo decoders' outputs with a fixed 3x3 binomial filter (removes the "
                        "transposed convolutions' checkerboard; also set on --init nets).")
    p.add_argument("--stabilize-after", type=nonnegative_int, default=1200, help="Step at which the stabilizers start.")
    p.add_argument("--train-nets", default=None,
                   help="Comma-separated nets to train (e.g. netL); the others stay frozen. Default: all.")
    p.add_argument("--bank", type=nonnegative_int, default=0,
                   help="Train on an on-disk bank of this many generator images (built once in OUTDIR/bank) instead "
                        "of drawing every batch; 0 = draw every batch.")
    p.add_argument("--threads", type=nonnegative_int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N.")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--init", default=None,
                   help="Start from this decomposer (\"synthetic\" = the shipped one, or a checkpoint path) instead of "
                        "fresh nets; its sizes replace --nf/--zdim/--nf-small/--light-range. --steps counts from it.")
    p.add_argument("--light-mask", default=None, metavar="TOP,LEFT,HEIGHT,WIDTH|none",
                   help="A box of the image netL does not see (fractions, e.g. 0,0,0.22,1: the hair above the face), "
                        "kept as the decomposer's light mask; 'none': without one. Default: --init's own, else none.")
    p.add_argument("--light-teacher", default=None, metavar="DIRS",
                   help="Teach netL the light from a DirectionSet's light directions (a find-directions --method "
                        "3d-coupled output folder, or its directions.npz): each image's w projected on them, in the "
                        "units of --init's readings (needs --init; the other nets learn as usual). Several, "
                        "comma-separated: the mean of their directions.")
    p.add_argument("--teacher-weight", type=finite_float, default=1.0, help="Weight of the --light-teacher term.")
    p.add_argument("--eval-samples", type=nonnegative_int, default=1000, help="Faces scored after training (0: none).")
    p.add_argument("--ship", action="store_true", help="Copy the result into the package (synthetic only).")
    p.add_argument("--ship-dtype", choices=("float16", "float32"), default="float16",
                   help="Weight precision of the shipped file: float16 halves it (the labels move by < 0.01 deg, "
                        "BENCHMARKS.md); the nets run in float32 either way.")
    p.add_argument("--phase-note", default=None,
                   help="With --ship: what this phase did, in a sentence, kept in the shipped record as phase_note "
                        "(and in its history entry once a later phase ships from it).")
    args = p.parse_args()
    if args.phase_note is not None and not args.ship:
        p.error("--phase-note is for --ship")
    light_mask = None
    if args.light_mask is not None:
        try:
            light_mask = parse_light_mask(args.light_mask)
        except ValueError as exc:
            p.error(f"--light-mask: {exc}")
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    net = load_network_pkl(args.pkl, device=device)
    G, D = net["G_ema"], net.get("D")
    if args.perceptual and D is None:
        raise SystemExit(f"{args.pkl} has no discriminator: --perceptual needs one")
    kwargs = dict(nf=args.nf, zdim=args.zdim, nf_light=args.nf_small, nf_view=args.nf_small, nf_conf=2 * args.nf_small,
                  zdim_conf=args.zdim // 2, xy_light_range=args.light_range, antialias=args.antialias)
    init = None
    if args.init:
        from stylegan_disentangle.labels.decomposer.labeler import load_decomposer

        init = load_decomposer(args.init, device=device)
        init.antialias = init.antialias or args.antialias
    teacher = None
    if args.light_teacher:
        from stylegan_disentangle.directions.light_teacher_sets import light_teacher_from_spec

        teacher = light_teacher_from_spec(args.light_teacher)
    t0 = time.time()
    dec = train_decomposer(G, args.outdir, args.steps, decomposer_kwargs=kwargs, init=init, batch_size=args.batch_size,
                           lr=args.lr, weight_decay=args.weight_decay, lam_rerender=args.rerender,
                           rerender_light_xy=args.rerender_light_xy,
                           rerender_mode=args.rerender_mode, rerender_intensities=args.rerender_intensities,
                           rerender_albedo_step=_gain_pair(args.rerender_albedo_step),
                           rerender_yaw=args.rerender_yaw,
                           light_from_rerender=args.light_from_rerender,
                           lam_light_turn=args.light_turn, light_turn_yaw=args.light_turn_yaw,
                           light_turn_pitch=args.light_turn_pitch,
                           lam_jitter=args.jitter, lam_smooth=args.smooth,
                           lam_perc=1.0 if args.perceptual else 0.0, D=D if args.perceptual else None,
                           lam_albedo_tv=args.albedo_tv, lam_albedo_sparse=args.albedo_sparse,
                           albedo_sparse_p=args.albedo_sparse_p, seed=args.seed, bank_size=args.bank,
                           stabilize_after=args.stabilize_after,
                           train_nets=args.train_nets.split(",") if args.train_nets else None, light_mask=light_mask,
                           light_teacher=teacher, lam_teacher=args.teacher_weight, device=device,
                           checkpoint_every=100, log_every=10, preview_every=250)
    wall = time.time() - t0
    state = json.loads((Path(args.outdir) / "train_state.json").read_text())
    state["bank_seconds"] = bank_seconds(args.outdir)
    print(f"training {state['train_seconds']:.0f} s + image bank {state['bank_seconds']:.0f} s")
    scores = None
    if args.ship:  # score the nets as they will ship: weights rounded to the shipped precision
        with torch.no_grad():
            for param in dec.parameters():
                param.copy_(param.to(getattr(torch, args.ship_dtype)).float())
    if args.pkl == "synthetic" and args.eval_samples:
        from stylegan_disentangle.synthetic.checkpoint import synthetic_factor_map
        from stylegan_disentangle.synthetic.decomposer_eval import faces_from_generator, score_decomposer

        images, factors = faces_from_generator(G.cpu(), synthetic_factor_map(), args.eval_samples, seed=10_000_000)
        scores = score_decomposer(dec.cpu(), images, factors)
        print(json.dumps(scores, indent=2))
    if args.ship:
        if args.pkl != "synthetic":
            sys.exit("--ship is for the shipped synthetic checkpoint only")
        target = SHIPPED["synthetic"]
        target.parent.mkdir(parents=True, exist_ok=True)
        before = target.with_suffix(".json")
        history = []
        if args.init == "synthetic" and before.is_file():  # continued from the shipped nets: keep their record
            prev = json.loads(before.read_text())
            history = prev.get("history", []) + [{k: prev.get(k) for k in ("command", "steps", "train_seconds_total",
                                                                             "scores_fresh_sample")}]
            if prev.get("phase_note"):
                history[-1]["phase_note"] = prev["phase_note"]
        trained_nets_only(dec).save(target, weights_dtype=getattr(torch, args.ship_dtype))
        scalings = {k: v for k, v in dec.get_config().items()
                    if k not in ("image_size", "nf", "zdim", "nf_albedo", "zdim_albedo", "nf_light", "nf_view",
                                 "nf_conf", "zdim_conf", "nets")}
        record = {"scalings": scalings, "config": state["config"], "steps": state["step"],
                  "generator_sha256": state["generator_sha256"],
                  "train_seconds_total": state["train_seconds"] + state["bank_seconds"],
                  "bank_seconds": state["bank_seconds"], "wall_seconds_this_call": wall,
                  "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
                  "hardware": f"2-core CPU, torch threads = {args.threads}", "scores_fresh_sample": scores,
                  "weights_dtype": args.ship_dtype, "history": history,
                  **({"phase_note": args.phase_note} if args.phase_note else {}),
                  "steps_all_phases": state["step"] + sum(int(h.get("steps") or 0) for h in history),
                  "train_seconds_all_phases": state["train_seconds"] + sum(float(h.get("train_seconds_total") or 0)
                                                                           for h in history)}
        with atomic_write(target.with_suffix(".json"), "w") as f:
            json.dump(record, f, indent=2)
        print(f"shipped {target} ({target.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    try:
        main()
    except StyleGANDisentangleError as exc:  # our errors name the file or argument: no traceback
        sys.exit(f"error: {exc}")
