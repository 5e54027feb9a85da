#!/usr/bin/env python
"""Evidence for the appearance / structure autoencoder (issue 12) on the synthetic ground-truth world.

1. Samples a w pool from the shipped checkpoint, labels it with the synthetic oracle, fits the oracle-supervised
   linear finder (ridge) -> a DirectionSet; structure = expression + pose, appearance = identity + illumination.
2. Makes latent videos with `DirectionVideoMaker` and trains `AppearanceStructureAE` with the shared loop.
3. Scores on held-out samples:
   - linear-probe R^2 of each code for each factor group, (a) on natural samples of W and (b) on a ground-truth
     recombination set (identity + illumination of sample A, pose + expression of sample B; the groups are
     independent there), plus the floor on natural samples: R^2 of pose / expression from the identity factors
     themselves (what any code that holds identity inherits from W's correlations);
   - DCI (lasso) and MIG of both codes against all factors (recombination set);
   - transfer (target keeps identity, takes the source's pose + expression): mean abs factor error against the
     baselines (copy the source's coarse ws layers; add the source-minus-target difference projected on the
     structure directions) and the ground-truth recombination as the reference floor; the model's default transfer
     against each baseline pair by pair (mean difference with a 95% bootstrap interval); two references that
     locate the take error (the projected difference on the world's true directions, and the readout swap on the
     clips' own directions) and each result's error in the taken factors' linear readouts.
4. Writes clip strips and a transfer strip (PNG) and a JSON with every figure.

    python scripts/bench_models.py --outdir runs/bench_models --json runs/bench_models/results.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stylegan_disentangle.analysis.metrics import dci, mig
from stylegan_disentangle.directions import LinearDirections
from stylegan_disentangle.directions.direction_set import to_jsonable
from stylegan_disentangle.latents import generator_fingerprint, sample_latents
from stylegan_disentangle.models import (
    AppearanceStructureAE,
    ClipPairSampler,
    DirectionVideoMaker,
    save_clip_strips,
    train_model,
)
from stylegan_disentangle.models.evaluate import (
    copy_coarse_layers,
    linear_probe_r2,
    projected_difference,
    swap_factor_groups,
    swap_readouts,
    transfer_errors,
)
from stylegan_disentangle.synthetic.checkpoint import ground_truth_directions, load_synthetic
from stylegan_disentangle.synthetic.factors import factor_groups, factor_names
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.images import save_titled_grid, to_uint8
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value


def start_run(p: argparse.ArgumentParser) -> tuple[argparse.Namespace, Path, float]:
    """Parse a bench's arguments, make its --outdir, start its clock: (args, outdir, t0)."""
    args = p.parse_args()
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    return args, out, time.time()


def synthetic_world() -> tuple[torch.nn.Module, object, dict[str, list[int]]]:
    """The shipped checkpoint's generator, its ground-truth FactorMap, and each factor group's factor indices."""
    G, fmap = load_synthetic()
    names = factor_names()
    return G, fmap, {g: [names.index(n) for n in ns] for g, ns in factor_groups().items()}


def write_record(record: dict, args: argparse.Namespace, t0: float) -> None:
    """Complete a bench's record (date, arguments, total time, threads), write it to --json atomically, print it."""
    record = {"date": time.strftime("%Y-%m-%d"), "args": vars(args), **record,
              "total_seconds": time.time() - t0, "threads": torch.get_num_threads()}
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump(to_jsonable(record), f, indent=2)
    print(json.dumps(to_jsonable(record), indent=1))


def paired_difference(err_a: np.ndarray, err_b: np.ndarray, reps: int = 2000, seed: int = 0) -> dict[str, float]:
    """Mean of err_a - err_b over the same pairs [N] with a 95% bootstrap interval (pairs resampled together)."""
    diff = err_a - err_b
    idx = np.random.default_rng(seed).integers(0, len(diff), size=(reps, len(diff)))
    boot = diff[idx].mean(axis=1)
    return {"mean": float(diff.mean()), "ci95": [float(np.quantile(boot, 0.025)), float(np.quantile(boot, 0.975))],
            "share_of_pairs_lower": float((diff < 0).mean())}


def group_means(values: np.ndarray, groups: dict[str, list[int]]) -> dict[str, float]:
    return {g: float(np.mean(values[idx])) for g, idx in groups.items()}


def codes_of(ae: AppearanceStructureAE, ws: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        a, s = ae.encode(ws)
    return a.numpy(), s.numpy()


def probe_block(ae, ws, factors, groups) -> dict:
    a, s = codes_of(ae, ws)
    return {"appearance": group_means(linear_probe_r2(a, factors), groups),
            "structure": group_means(linear_probe_r2(s, factors), groups)}


# 3D-coupled names -> the clip's two sides: the view moves (structure), the light stays (appearance); localized
# directions by the part their footprint lies on (mouth / brows: expression, so structure; background: neither).
STRUCTURE_GLOBALS = ("yaw", "pitch", "roll", "tx", "ty", "tz")
APPEARANCE_GLOBALS = ("light_azimuth", "light_elevation", "light_ambient", "light_diffuse")
EXPRESSION_PARTS = ("mouth", "brows")


def three_d_coupled_split(outdir: Path, args) -> tuple:
    """Directions from the unsupervised 3D-coupled finder (no labels) and their structure / appearance names."""
    from stylegan_disentangle.analysis.find_directions import run_find_directions

    ds = run_find_directions("synthetic", method="3d-coupled", samples=args.three_d_samples, outdir=outdir,
                             seed=args.seed, umap=False, progress=False).direction_set
    structure, appearance = [], []
    for name in ds.names:
        head, _, rest = name.partition("_")
        if name in STRUCTURE_GLOBALS or (head in ("depth", "albedo") and rest.startswith(EXPRESSION_PARTS)):
            structure.append(name)
        elif name in APPEARANCE_GLOBALS or (head in ("depth", "albedo") and not rest.startswith("background")):
            appearance.append(name)
    print(f"3d-coupled clips: structure {structure}; appearance {appearance}")
    return ds, structure, appearance


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="runs/bench_models")
    p.add_argument("--json", default=None)
    p.add_argument("--pool", type=positive_int, default=20000, help="w samples for directions, normalization and clips")
    p.add_argument("--eval", type=positive_int, default=4000, help="held-out samples for probes and transfers")
    p.add_argument("--steps", type=positive_int, default=3000)
    p.add_argument("--max-seconds", type=finite_float, default=540.0)
    p.add_argument("--skip-dci", action="store_true", help="skip DCI / MIG (faster sweeps)")
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--lr", type=finite_float, default=1e-3)
    p.add_argument("--app-dim", type=positive_int, default=64)
    p.add_argument("--struct-dim", type=positive_int, default=8)
    p.add_argument("--hidden", type=nonnegative_int, default=256)
    p.add_argument("--w-plus", action="store_true", help="encode the flattened W+ code instead of the mean w")
    p.add_argument("--amplitude", type=finite_float, default=1.0, help="clip trajectory std, in stds of W")
    p.add_argument("--temperature", type=finite_float, default=0.1)
    p.add_argument("--app-weight", type=finite_float, default=0.05)
    p.add_argument("--struct-weight", type=finite_float, default=0.05)
    p.add_argument("--swap-weight", type=finite_float, default=1.0)
    p.add_argument("--frames", type=positive_int, default=16)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--directions", choices=["linear", "ground-truth", "3d-coupled"], default="linear",
                   help="clip directions: the oracle-supervised linear finder (ridge), the true directions "
                        "(an upper bound for what the video maker can give), or the unsupervised 3D-coupled finder "
                        "(no labels; the shipped decomposer)")
    p.add_argument("--three-d-samples", type=positive_int, default=5000, help="bank size of the 3D-coupled finder")
    p.add_argument("--clip-metric", choices=["euclidean", "covariance"], default="euclidean",
                   help="how clip moves keep the appearance readouts (DirectionVideoMaker's metric)")
    p.add_argument("--linear-structure", action="store_true", help="structure code linear in w (MLP: appearance)")
    p.add_argument("--invariance-projection", action="store_true",
                   help="end of training: project the linear structure code onto what the augmentations never move")
    p.add_argument("--motion-weight", type=finite_float, default=1.0,
                   help="weight of the motion decoder (0: none; transfers then decode the codes)")
    p.add_argument("--motion-metric", choices=["euclidean", "covariance"], default="covariance",
                   help="metric of the clips the motion decoder learns from")
    p.add_argument("--no-resume", action="store_true")
    args, out, t0 = start_run(p)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    G, fmap, groups = synthetic_world()
    names, fg = factor_names(), factor_groups()
    structure_names = fg["expression"] + fg["pose"]
    appearance_names = fg["identity"] + fg["illumination"]
    structure_idx = groups["expression"] + groups["pose"]

    pool = sample_latents(G, np.arange(args.pool)).ws[:, 0]
    pool_factors = fmap(pool).numpy()
    if args.directions == "3d-coupled":
        ds, structure_names, appearance_names = three_d_coupled_split(out / "three_d_coupled", args)
    elif args.directions == "linear":
        ds = LinearDirections(method="ridge").fit(pool.numpy(), {n: pool_factors[:, i] for i, n in enumerate(names)})
        ds = ds.to_direction_set(seed=args.seed)
    else:
        ds = ground_truth_directions(fmap)
    def video_maker(metric: str) -> DirectionVideoMaker:
        return DirectionVideoMaker(ds, ds, structure_names=structure_names, appearance_names=appearance_names,
                                   frames=args.frames, amplitude=args.amplitude, metric=metric).fit(pool)

    maker = video_maker(args.clip_metric)
    motion_maker = video_maker(args.motion_metric) if args.motion_weight > 0 else None
    sampler = ClipPairSampler(maker, pool, G.num_ws, batch_size=args.batch, seed=args.seed,
                              motion_maker=motion_maker)
    gen = torch.Generator().manual_seed(123)
    clips = maker.clips(pool[:4], G.num_ws, gen)
    save_clip_strips(G, clips[:, ::2], out / "clips.png", upscale=3)
    clip_drift = (fmap(clips.reshape(-1, G.num_ws, G.w_dim)).view(4, args.frames, -1) - fmap(pool[:4])[:, None]).abs()
    drift = {g: float(clip_drift[..., idx].mean()) for g, idx in groups.items()}
    setup_s = time.time() - t0

    ae = AppearanceStructureAE(G.num_ws, G.w_dim, app_dim=args.app_dim, struct_dim=args.struct_dim,
                               hidden=args.hidden, w_plus=args.w_plus, temperature=args.temperature,
                               app_weight=args.app_weight,
                               struct_weight=args.struct_weight, swap_weight=args.swap_weight,
                               motion_weight=args.motion_weight, linear_structure=args.linear_structure,
                               invariance_projection=args.invariance_projection,
                               generator_sha256=generator_fingerprint(G)).set_normalization(pool)
    with torch.no_grad():
        first = {k: float(v) for k, v in ae.training_losses(sampler.validation("cpu")).items()}
    result = train_model(ae, sampler, out / "ae", steps=args.steps, lr=args.lr, lr_schedule="cosine", seed=args.seed,
                         val_every=250,
                         patience=6, log_every=50, checkpoint_every=250, max_seconds=args.max_seconds,
                         resume=not args.no_resume, progress=False, config={"script": "bench_models.py"})
    ae = result.model
    with torch.no_grad():
        last = {k: float(v) for k, v in ae.training_losses(sampler.validation("cpu")).items()}
    train_s = result.seconds

    # held-out evaluation
    ev = sample_latents(G, 10_000_000 + np.arange(2 * args.eval)).ws
    ws_a, ws_b = ev[: args.eval], ev[args.eval:]
    f_nat = fmap(ws_a).numpy()
    w_mix = swap_factor_groups(fmap, ws_a[:, 0], ws_b[:, 0], structure_idx)
    ws_mix = w_mix[:, None].repeat(1, G.num_ws, 1)
    f_mix = fmap(ws_mix).numpy()
    app_idx = groups["identity"] + groups["illumination"]
    # What any code holding the appearance factors inherits on natural samples: R^2 of pose / expression from the
    # true identity + illumination factors themselves (and the reverse), i.e. W's own factor correlations.
    floor_s = linear_probe_r2(f_nat[:, app_idx], f_nat[:, structure_idx])
    floor_a = linear_probe_r2(f_nat[:, structure_idx], f_nat[:, groups["identity"]])
    probes = {"natural": probe_block(ae, ws_a, f_nat, groups), "recombined": probe_block(ae, ws_mix, f_mix, groups),
              "natural_floor": {"structure_from_true_appearance_factors": float(floor_s.mean()),
                                "identity_from_true_structure_factors": float(floor_a.mean())}}
    a_mix, s_mix = codes_of(ae, ws_mix)
    metrics = {}
    for label, codes in (() if args.skip_dci else
                         (("appearance", a_mix), ("structure", s_mix), ("both", np.concatenate([a_mix, s_mix], 1)))):
        d = dci(codes, f_mix)
        metrics[label] = {"D": d["disentanglement"], "C": d["completeness"], "I": d["informativeness"],
                          "MIG": mig(codes, f_mix)["mig"]}

    # transfers: target = ws_a, source = ws_b
    keep, take = groups["identity"], structure_idx
    with torch.no_grad():
        results = {
            "AppearanceStructureAE (residual)": ae.transfer_structure(ws_a, ws_b, mode="residual"),
            "AppearanceStructureAE (direct decode)": ae.transfer_structure(ws_a, ws_b, mode="direct"),
            "copy coarse ws layers": copy_coarse_layers(ws_a, ws_b, G.num_ws // 2),
            "projected difference": projected_difference(ws_a, ws_b, ds.select(structure_names).vectors),
            "ground-truth recombination (floor)": ws_mix,
            # references that locate the take error: the projected difference on the world's true structure
            # directions (its structure readouts then equal the source's exactly), and the ideal disentangled
            # transfer on the directions the clips were made from (their structure readouts swapped, all others kept)
            "projected difference, true directions (reference)": projected_difference(
                ws_a, ws_b, ground_truth_directions(fmap).select(fg["expression"] + fg["pose"]).vectors),
            "readout swap on the clips' directions (reference)": swap_readouts(
                ds.vectors, ws_a[:, 0], ws_b[:, 0], [ds.names.index(n) for n in structure_names])[:, None].repeat(
                1, G.num_ws, 1),
        }
        if ae.has_motion_decoder:
            results = {"AppearanceStructureAE (motion decoder, default)": ae.transfer_structure(ws_a, ws_b,
                                                                                               mode="motion"),
                       **results}
    transfer = {}
    for name, res in results.items():
        err = transfer_errors(res, ws_a, ws_b, fmap, keep, take)
        err["illumination_change"] = transfer_errors(res, ws_a, ws_b, fmap, groups["illumination"], take)[
            "keep_error"]
        # the taken factors' linear readouts (standardized d_j . w, before the factor map's nonlinearity)
        err["take_readout_error"] = float((fmap.standardized(torch.as_tensor(res))[:, take]
                                           - fmap.standardized(ws_b)[:, take]).abs().mean())
        transfer[name] = err
    # paired comparison of the model's default transfer with each baseline on the same held-out pairs: per-pair
    # mean abs factor errors, their difference (model - baseline; < 0: the model is better) with a bootstrap interval
    f_a, f_b = fmap(ws_a).numpy(), fmap(ws_b).numpy()

    def per_pair(res):
        f_r = fmap(torch.as_tensor(res)).numpy()
        return np.abs(f_r[:, keep] - f_a[:, keep]).mean(1), np.abs(f_r[:, take] - f_b[:, take]).mean(1)

    model_name = next(iter(results))
    model_keep, model_take = per_pair(results[model_name])
    paired = {}
    for name in ("copy coarse ws layers", "projected difference"):
        base_keep, base_take = per_pair(results[name])
        paired[name] = {"keep": paired_difference(model_keep, base_keep),
                        "take": paired_difference(model_take, base_take)}
    rows = 8
    with torch.no_grad():
        titles = {"AppearanceStructureAE (motion decoder, default)": "AE motion",
                  "AppearanceStructureAE (residual)": "AE residual", "AppearanceStructureAE (direct decode)":
                  "AE direct", "copy coarse ws layers": "coarse copy", "projected difference": "projected diff."}
        shown = [k for k in results if k in titles]
        strip = [ws_a[:rows], ws_b[:rows]] + [results[k][:rows] for k in shown]
        imgs = [to_uint8(G.synthesis(x, noise_mode="const")) for x in strip]
    save_titled_grid(np.stack(imgs, 1), out / "transfer.png", ["target", "source"] + [titles[k] for k in shown])
    record = {
        "setup_seconds": setup_s, "train_seconds": train_s,
        "train_steps": result.step, "best_step": result.best_step, "stopped_early": result.stopped_early,
        "losses_before": first, "losses_after": last, "clip_factor_drift": drift, "probes": probes,
        "dci_mig_recombined": metrics, "transfer": transfer, "paired_vs_baselines": {"model": model_name, **paired},
        "structure_directions": structure_names, "appearance_directions": appearance_names,
    }
    write_record(record, args, t0)


if __name__ == "__main__":
    run_script(main)
