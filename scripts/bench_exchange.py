#!/usr/bin/env python
"""Evidence for the attribute exchange model (ELEGANT style) on the synthetic ground-truth world.

1. Samples a w pool from the shipped checkpoint and labels it with a labeler (default: the synthetic oracle's
   factors, as an attribute classifier a user trusts would; `--labeler decomposer3d` for the 3D decomposer's
   pose and light readings, no labels of the world at all).
2. Fits the attribute readout on the pool and trains `AttributeExchangeModel` with the shared loop. Attributes:
   expression (mouth_open, smile, brow_raise), pose (yaw, pitch, roll), illumination (light_azimuth,
   light_elevation, ambient) -- or the decomposer's pose and light readings.
3. Scores swaps of held-out pairs (target A, exemplar B) against the world's truth, for each attribute alone and
   for expression + pose at once: the mean |factor(result) - factor(B)| over the swapped attribute's true factors
   (take) and |factor(result) - factor(A)| over every other factor group (keep), in the factors' normalized units.
   Baselines: add B - A projected on the ridge directions of the swapped attribute's labels (InterFaceGAN-style
   exemplar transfer); the closed-form swap of the same readout (the minimum-norm move that sets the swapped
   labels' readouts to B's and holds every other readout: what the model's losses ask of a linear readout);
   the ground-truth swap of the true factor directions (the floor). The model against the baselines pair by pair
   (mean difference, 95 % bootstrap interval).
4. Writes a PNG (target | exemplar | one column per attribute swapped | all swapped) and a JSON with every figure.

    python scripts/bench_exchange.py --outdir runs/bench_ex --json runs/bench_ex/results.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_models import paired_difference, start_run, synthetic_world, write_record

from stylegan_disentangle.directions import LinearDirections
from stylegan_disentangle.labels import get_labelers
from stylegan_disentangle.latents import LatentBank, generator_fingerprint, sample_latents
from stylegan_disentangle.models import (
    AttributeExchangeModel,
    ExchangeSampler,
    LatentReadout,
    parse_attribute_spec,
    train_model,
)
from stylegan_disentangle.models.evaluate import projected_difference, swap_factor_groups, swap_readouts
from stylegan_disentangle.models.readout import label_columns
from stylegan_disentangle.synthetic.factors import factor_groups
from stylegan_disentangle.utils.images import save_titled_grid, to_uint8
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value

SPECS = {
    "synthetic-oracle": "expression=mouth_open,smile,brow_raise;pose=yaw,pitch,roll;"
                        "illumination=light_azimuth,light_elevation,ambient",
    "decomposer3d": "pose=yaw,pitch,roll;illumination=light_azimuth,light_elevation,light_ambient",
}
TRUE_GROUP = {"expression": "expression", "pose": "pose", "illumination": "illumination"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="runs/bench_ex")
    p.add_argument("--json", default=None)
    p.add_argument("--labeler", default="synthetic-oracle", choices=sorted(SPECS))
    p.add_argument("--held", default="", help="labels held (never swapped): 'identity' (the oracle's identity "
                   "factors) or names, e.g. depth,albedo with --labeler decomposer3d")
    p.add_argument("--map-components", type=positive_int, default=8, help="principal components of a map-valued label")
    p.add_argument("--pool", type=positive_int, default=20000, help="w samples the model trains on")
    p.add_argument("--eval", type=positive_int, default=2000, help="held-out pairs")
    p.add_argument("--steps", type=positive_int, default=3000)
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--lr", type=finite_float, default=1e-3)
    p.add_argument("--readout-hidden", type=nonnegative_int, default=128,
                   help="MLP width of the attribute readout (0: ridge)")
    p.add_argument("--part-dim", type=positive_int, default=8)
    p.add_argument("--hidden", type=nonnegative_int, default=256)
    p.add_argument("--take-weight", type=finite_float, default=1.0)
    p.add_argument("--keep-weight", type=finite_float, default=1.0)
    p.add_argument("--move-weight", type=finite_float, default=0.1)
    p.add_argument("--adv-weight", type=finite_float, default=0.0)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-resume", action="store_true")
    args, out, t0 = start_run(p)
    G, fmap, groups = synthetic_world()
    attributes = parse_attribute_spec(SPECS[args.labeler])
    held = [h for h in args.held.split(",") if h] if args.held != "identity" else factor_groups()["identity"]
    bank = LatentBank.create(G, out / f"bank_{args.labeler}_{args.pool}", args.pool, seed=args.seed,
                             labelers=[get_labelers(args.labeler)], progress=False)
    w_pool = torch.from_numpy(np.array(bank.w, dtype=np.float32))
    attributes, held, labels = label_columns(bank.labels, attributes, held, args.map_components, args.seed)
    model = AttributeExchangeModel(G.num_ws, G.w_dim, attributes, held=held, part_dim=args.part_dim,
                                   hidden=args.hidden, take_weight=args.take_weight, keep_weight=args.keep_weight,
                                   move_weight=args.move_weight, adv_weight=args.adv_weight,
                                   generator_sha256=generator_fingerprint(G))
    readout = LatentReadout(G.w_dim, model.label_names, hidden=args.readout_hidden).fit(w_pool, labels,
                                                                                       seed=args.seed)
    label_s = time.time() - t0
    sampler = ExchangeSampler(w_pool, labels, model.attribute_columns, G.num_ws, batch_size=args.batch,
                              seed=args.seed)
    result = train_model(model.set_normalization(w_pool), sampler, out / "model", steps=args.steps, lr=args.lr,
                         lr_schedule="cosine", seed=args.seed, G=readout, log_every=100, checkpoint_every=500,
                         val_every=250, resume=not args.no_resume, progress=False,
                         config={"script": "bench_exchange.py", "labeler": args.labeler})
    model = result.model

    # baselines' directions: ridge from w to each label on the pool (the readout's rows, in W's own units)
    found = LinearDirections(method="ridge").fit(w_pool.numpy(), {n: labels[:, i]
                                                                  for i, n in enumerate(model.label_names)})
    found_set = found.to_direction_set(seed=args.seed)
    readout_dirs = (readout.weight / readout.w_std).numpy()  # d r_j / d w: the readout's gradient rows

    ev = sample_latents(G, 10_000_000 + np.arange(2 * args.eval)).ws
    ws_a, ws_b = ev[: args.eval], ev[args.eval:]
    f_a, f_b = fmap(ws_a).numpy(), fmap(ws_b).numpy()
    swaps = {a: [a] for a in model.attribute_names}
    if {"expression", "pose"} <= set(swaps):
        swaps["expression + pose"] = ["expression", "pose"]

    def per_pair(res: torch.Tensor, swapped: list[str]) -> dict[str, np.ndarray]:
        f_r = fmap(torch.as_tensor(res)).numpy()
        take = [i for a in swapped for i in groups[TRUE_GROUP[a]]]
        errs = {"take": np.abs(f_r[:, take] - f_b[:, take]).mean(1)}
        for g, idx in groups.items():
            if not set(idx) & set(take):
                errs[f"keep_{g}"] = np.abs(f_r[:, idx] - f_a[:, idx]).mean(1)
        errs["keep"] = np.mean([v for k, v in errs.items() if k.startswith("keep_")], axis=0)
        return errs

    table, paired, results_by_swap = {}, {}, {}
    with torch.no_grad():
        for swap, swapped in swaps.items():
            cols = [c for a in swapped for c in model.attribute_columns[model.attribute_names.index(a)]]
            labs = [model.label_names[c] for c in cols]
            true_take = [i for a in swapped for i in groups[TRUE_GROUP[a]]]
            results = {
                "AttributeExchangeModel": model.swap_attributes(ws_a, ws_b, swapped),
                "projected difference, the labels' ridge directions": projected_difference(
                    ws_a, ws_b, found_set.select(labs).vectors),
                "closed-form swap of the readout's linear part": swap_readouts(
                    readout_dirs, ws_a[:, 0], ws_b[:, 0], cols)[:, None].repeat(1, G.num_ws, 1),
                "ground-truth swap (floor)": swap_factor_groups(fmap, ws_a[:, 0], ws_b[:, 0], true_take)[
                    :, None].repeat(1, G.num_ws, 1),
            }
            results_by_swap[swap] = results
            pairs = {name: per_pair(res, swapped) for name, res in results.items()}
            table[swap] = {name: {k: float(v.mean()) for k, v in errs.items()} for name, errs in pairs.items()}
            paired[swap] = {base: {k: paired_difference(pairs["AttributeExchangeModel"][k], pairs[base][k])
                                   for k in ("take", "keep")}
                            for base in list(results)[1:3]}

    rows = 8
    with torch.no_grad():
        strip = [ws_a[:rows], ws_b[:rows]] + [results_by_swap[s]["AttributeExchangeModel"][:rows] for s in swaps]
        strip.append(model.swap_attributes(ws_a[:rows], ws_b[:rows], None))
        imgs = [to_uint8(G.synthesis(x, noise_mode="const")) for x in strip]
    save_titled_grid(np.stack(imgs, 1), out / "exchange.png",
                     ["target", "exemplar"] + [f"swap {s}" for s in swaps] + ["swap all"])
    write_record({
        "attributes": attributes, "held": held,
        "readout_held_out_r2": dict(zip(model.label_names, readout.r2_.round(4).tolist())),
        "label_pool_seconds": label_s, "train_seconds": result.seconds, "train_steps": result.step,
        "best_step": result.best_step, "last_losses": result.last_losses, "errors": table,
        "paired_model_minus_baseline": paired,
    }, args, t0)


if __name__ == "__main__":
    run_script(main)
