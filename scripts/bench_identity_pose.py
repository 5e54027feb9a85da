#!/usr/bin/env python
"""Evidence for the identity / pose recombination model (IP-GAN style) on the synthetic ground-truth world.

1. Samples a w pool from the shipped checkpoint and reads each face with the shipped 3D decomposer
   (`DecomposerMeasure`: head rotation; canonical depth and albedo). No label of the world is used for training.
2. Trains `IdentityPoseModel` with the shared loop, the decomposer measuring every recombined face.
3. Scores recombinations of held-out pairs (identity from A, pose from B) against the world's truth: the mean
   |factor(result) - factor(A)| over the identity factors (kept; expression and illumination reported beside) and
   |factor(result) - factor(B)| over yaw / pitch / roll (taken), in the factors' standardized units; and in the
   decomposer's own readings (rotation error in degrees, identity maps' mean squared standardized error). Baselines:
   copy B's coarse ws layers (style mixing); add B - A projected on the pose directions that a ridge regression of
   the decomposer's rotation readings on w finds (the 3D-coupled finder's global directions, label-free);
   references: the same on the world's true pose directions, and the ground-truth recombination (the floor).
   The model's default against each baseline pair by pair (mean difference, 95 % bootstrap interval).
   And what each code holds: held-out R^2 of linear probes from the identity and the pose code to each factor group.
4. Writes a PNG (identity | pose | model | baselines | ground truth) and a JSON with every figure.

    python scripts/bench_identity_pose.py --outdir runs/bench_ip --json runs/bench_ip/results.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from bench_models import paired_difference, start_run, synthetic_world, write_record

from stylegan_disentangle.directions import LinearDirections
from stylegan_disentangle.labels import load_decomposer
from stylegan_disentangle.labels.decomposer.view_leak import ROTATION_LABELS
from stylegan_disentangle.latents import generator_fingerprint, sample_latents
from stylegan_disentangle.models import DecomposerMeasure, IdentityPoseModel, RecombinationSampler, train_model
from stylegan_disentangle.models.evaluate import (
    copy_coarse_layers,
    linear_probe_r2,
    projected_difference,
    swap_factor_groups,
)
from stylegan_disentangle.synthetic.checkpoint import ground_truth_directions
from stylegan_disentangle.utils.images import save_titled_grid, to_uint8
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value

POSE = ["yaw", "pitch", "roll"]  # the world's pose factors; the decomposer's rotations are ROTATION_LABELS


@torch.no_grad()
def measured_errors(measure: DecomposerMeasure, res: torch.Tensor, m_a: dict, m_b: dict) -> dict[str, float]:
    """The decomposer's view of a recombination: rotation error to B (degrees, per axis) and the identity maps'
    mean squared standardized error to A."""
    m = {k: [] for k in ("pose", "identity")}
    for s in range(0, len(res), 256):
        for k, v in measure(res[s:s + 256]).items():
            m[k].append(v)
    pose, ident = torch.cat(m["pose"]), torch.cat(m["identity"])
    deg = ((pose - m_b["pose"]) * measure.pose_std).abs().mean(0)
    return {"rotation_error_deg": dict(zip(ROTATION_LABELS, deg.tolist())),
            "identity_map_error": float((ident - m_a["identity"]).pow(2).mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="runs/bench_ip")
    p.add_argument("--json", default=None)
    p.add_argument("--pool", type=positive_int, default=20000, help="w samples the model trains on")
    p.add_argument("--eval", type=positive_int, default=2000, help="held-out pairs")
    p.add_argument("--steps", type=positive_int, default=1500)
    p.add_argument("--max-seconds", type=finite_float, default=900.0)
    p.add_argument("--batch", type=positive_int, default=64)
    p.add_argument("--lr", type=finite_float, default=1e-3)
    p.add_argument("--id-dim", type=positive_int, default=64)
    p.add_argument("--pose-dim", type=positive_int, default=8)
    p.add_argument("--hidden", type=nonnegative_int, default=256)
    p.add_argument("--cycle-weight", type=finite_float, default=0.1)
    p.add_argument("--pose-weight", type=finite_float, default=10.0)
    p.add_argument("--identity-weight", type=finite_float, default=1.0)
    p.add_argument("--move-weight", type=finite_float, default=0.3)
    p.add_argument("--components", type=positive_int, default=16,
                   help="whitened leading components of the kept readings")
    p.add_argument("--kept", default="depth,albedo,image_albedo,light",
                   help="the decomposer's readings a recombination keeps")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-resume", action="store_true")
    args, out, t0 = start_run(p)
    G, fmap, groups = synthetic_world()
    measure = DecomposerMeasure(G, load_decomposer("synthetic"), kept=args.kept.split(","),
                                components=args.components)
    pool = sample_latents(G, np.arange(args.pool)).ws
    pool_measures = measure.calibrate(pool, progress=False)
    measure_s = time.time() - t0
    sampler = RecombinationSampler(pool, pool_measures, G.num_ws, batch_size=args.batch, seed=args.seed)
    model = IdentityPoseModel(G.num_ws, G.w_dim, id_dim=args.id_dim, pose_dim=args.pose_dim, hidden=args.hidden,
                              cycle_weight=args.cycle_weight, pose_weight=args.pose_weight,
                              identity_weight=args.identity_weight, move_weight=args.move_weight,
                              generator_sha256=generator_fingerprint(G)).set_normalization(pool)
    result = train_model(model, sampler, out / "model", steps=args.steps, lr=args.lr, lr_schedule="cosine",
                         seed=args.seed, G=measure, log_every=50, checkpoint_every=100,
                         max_seconds=args.max_seconds, resume=not args.no_resume, progress=False,
                         config={"script": "bench_identity_pose.py"})
    model = result.model

    # the label-free baseline's directions: ridge from w to the decomposer's rotation readings on the pool
    raw_pose = pool_measures["pose"].numpy() * measure.pose_std.numpy() + measure.pose_mean.numpy()
    found = LinearDirections(method="ridge").fit(pool[:, 0].numpy(),
                                                 {n: raw_pose[:, i] for i, n in enumerate(ROTATION_LABELS)})
    found_pose = found.to_direction_set(seed=args.seed).vectors

    ev = sample_latents(G, 10_000_000 + np.arange(2 * args.eval)).ws
    ws_a, ws_b = ev[: args.eval], ev[args.eval:]
    with torch.no_grad():
        m_a, m_b = measure(ws_a), measure(ws_b)
        results = {
            "IdentityPoseModel (residual, default)": model.recombine(ws_a, ws_b),
            "IdentityPoseModel (direct decode)": model.recombine(ws_a, ws_b, mode="direct"),
            "copy coarse ws layers": copy_coarse_layers(ws_a, ws_b, G.num_ws // 2),
            "projected difference, decomposer's pose directions": projected_difference(ws_a, ws_b, found_pose),
            "projected difference, true pose directions (reference)": projected_difference(
                ws_a, ws_b, ground_truth_directions(fmap).select(POSE).vectors),
            "ground-truth recombination (floor)": swap_factor_groups(fmap, ws_a[:, 0], ws_b[:, 0], groups["pose"])[
                :, None].repeat(1, G.num_ws, 1),
        }
    f_a, f_b = fmap(ws_a).numpy(), fmap(ws_b).numpy()
    take = groups["pose"]

    def per_pair(res: torch.Tensor) -> dict[str, np.ndarray]:
        f_r = fmap(torch.as_tensor(res)).numpy()
        errs = {f"keep_{g}": np.abs(f_r[:, groups[g]] - f_a[:, groups[g]]).mean(1)
                for g in ("identity", "expression", "illumination")}
        errs["take_pose"] = np.abs(f_r[:, take] - f_b[:, take]).mean(1)
        return errs

    pairs = {name: per_pair(res) for name, res in results.items()}
    table = {name: {**{k: float(v.mean()) for k, v in errs.items()},
                    **measured_errors(measure, results[name], m_a, m_b)} for name, errs in pairs.items()}
    model_name = next(iter(results))
    paired = {base: {k: paired_difference(pairs[model_name][k], pairs[base][k])
                     for k in ("keep_identity", "take_pose")}
              for base in ("copy coarse ws layers", "projected difference, decomposer's pose directions")}

    with torch.no_grad():
        id_code, pose_code = (c.numpy() for c in model.encode(ws_a))
    probes = {}
    for code_name, code in (("identity code", id_code), ("pose code", pose_code)):
        r2 = linear_probe_r2(code, f_a, seed=args.seed)
        probes[code_name] = {g: float(r2[idx].mean()) for g, idx in groups.items()}

    rows = 8
    titles = {"IdentityPoseModel (residual, default)": "model", "copy coarse ws layers": "coarse copy",
              "projected difference, decomposer's pose directions": "projected diff.",
              "ground-truth recombination (floor)": "truth"}
    with torch.no_grad():
        strip = [ws_a[:rows], ws_b[:rows]] + [results[k][:rows] for k in titles]
        imgs = [to_uint8(G.synthesis(x, noise_mode="const")) for x in strip]
    save_titled_grid(np.stack(imgs, 1), out / "recombination.png", ["identity", "pose"] + list(titles.values()))
    write_record({
        "measure_pool_seconds": measure_s, "train_seconds": result.seconds, "train_steps": result.step,
        "last_losses": result.last_losses, "errors": table, "paired_vs_baselines": {"model": model_name, **paired},
        "code_probes_r2": probes,
    }, args, t0)


if __name__ == "__main__":
    run_script(main)
