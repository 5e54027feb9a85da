#!/usr/bin/env python
"""Evidence for the factor mapper (DiscoFaceGAN style) on the synthetic ground-truth world.

1. Samples a w pool from the shipped checkpoint and labels it (default: the synthetic oracle's factors, grouped as
   identity, expression, pose and illumination; `--labeler decomposer3d`: the 3D decomposer's pose and light
   readings, everything else left to the noise code).
2. Fits the mapper's readout and label prior on the pool and trains `FactorMapper` with the shared loop.
3. Scores it against the world's truth, in the factors' normalized units:
   - imitation: prior codes -> w; mean |true factor - the label the codes ask for| per factor;
   - control: the same codes with one factor redrawn; the redrawn factor's error to what it asks for (take) and
     how far every other factor group moves (keep: 0 is perfect independence);
   - coverage: Frechet distance in standardized W to held-out real ws, of the faces mapped from real faces' codes
     (every face has codes) and of prior samples (whose factors are independent by design, unlike W's samples),
     next to the distance between two real sets of the same size (the sampling floor);
   - real faces: encode -> map, the relative squared error in W and the true factors' error; editing a real face's
     pose to another's codes (`edit`), take and keep as above.
   Baseline: the linear-Gaussian factor mapper (the least-squares map from the whitened labels to w, plus the
   residual's leading principal components as the noise), scored the same way.
4. Writes a PNG (one row per factor: a face with that factor's code swept from -2 to 2, the rest fixed) and a JSON.

    python scripts/bench_factor_mapper.py --outdir runs/bench_fm --json runs/bench_fm/results.json
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from bench_models import start_run, synthetic_world, write_record

from stylegan_disentangle.labels import get_labelers
from stylegan_disentangle.latents import LatentBank, generator_fingerprint, sample_latents
from stylegan_disentangle.models import FactorMapper, FactorSampler, parse_attribute_spec, train_model
from stylegan_disentangle.models.readout import label_columns
from stylegan_disentangle.synthetic.factors import factor_groups
from stylegan_disentangle.utils.images import save_titled_grid, to_uint8
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value

SPECS = {
    "synthetic-oracle": "identity=" + ",".join(factor_groups()["identity"])
                        + ";expression=mouth_open,smile,brow_raise;pose=yaw,pitch,roll;"
                          "illumination=light_azimuth,light_elevation,ambient",
    "decomposer3d": "pose=yaw,pitch,roll;illumination=light_azimuth,light_elevation,light_ambient",
}
TRUE_GROUP = {"identity": "identity", "expression": "expression", "pose": "pose", "illumination": "illumination"}


def frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to x and y [N, D]."""
    from scipy.linalg import sqrtm

    mx, my = x.mean(0), y.mean(0)
    cx, cy = np.cov(x.T), np.cov(y.T)
    root = sqrtm(cx @ cy).real
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * root))


class LinearGaussianMapper:
    """Baseline: w = mean + B z_f + U diag(s) z_n, B by least squares from the whitened labels, U, s the residual's
    leading principal directions and spreads."""

    def __init__(self, mapper: FactorMapper, w: np.ndarray, labels: np.ndarray) -> None:
        self.mapper = mapper
        codes = np.concatenate([c.cpu().numpy() for c in mapper.labels_to_codes(labels).values()], 1)
        x = np.concatenate([codes, np.ones((len(codes), 1))], 1)
        coef = np.linalg.lstsq(x, w, rcond=None)[0]
        self.B, self.mean = coef[:-1], coef[-1]
        resid = w - x @ coef
        _, s, vt = np.linalg.svd(resid - resid.mean(0), full_matrices=False)
        k = mapper.noise_dim
        self.U, self.s = vt[:k], s[:k] / np.sqrt(len(w) - 1)

    def map(self, z: np.ndarray) -> np.ndarray:
        k = self.B.shape[0]
        return self.mean + z[:, :k] @ self.B + (z[:, k:] * self.s) @ self.U

    def encode(self, w: np.ndarray) -> np.ndarray:
        """Real w [N, w_dim] -> codes: the mapper's factor codes (read from w), the residual's noise coordinates."""
        codes = np.concatenate([c.cpu().numpy() for c in self.mapper.encode(torch.from_numpy(w))[0].values()], 1)
        noise = ((w - self.mean - codes @ self.B) @ self.U.T) / self.s
        return np.concatenate([codes, noise], 1).astype(np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--outdir", default="runs/bench_fm")
    p.add_argument("--json", default=None)
    p.add_argument("--labeler", default="synthetic-oracle", choices=sorted(SPECS))
    p.add_argument("--factors", default=None, help="factor spec (default: the labeler's in SPECS); a map label "
                   "such as depth or albedo stands for its leading principal components")
    p.add_argument("--map-components", type=positive_int, default=8)
    p.add_argument("--pool", type=positive_int, default=20000)
    p.add_argument("--eval", type=positive_int, default=2000)
    p.add_argument("--steps", type=positive_int, default=3000)
    p.add_argument("--batch", type=positive_int, default=256)
    p.add_argument("--lr", type=finite_float, default=3e-3)
    p.add_argument("--noise-dim", type=nonnegative_int, default=32)
    p.add_argument("--hidden", type=nonnegative_int, default=256)
    p.add_argument("--readout-hidden", type=nonnegative_int, default=128)
    p.add_argument("--rec-weight", type=finite_float, default=1.0)
    p.add_argument("--imitate-weight", type=finite_float, default=1.0)
    p.add_argument("--contrast-weight", type=finite_float, default=1.0)
    p.add_argument("--prior-weight", type=finite_float, default=0.1)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--no-resume", action="store_true")
    args, out, t0 = start_run(p)
    G, fmap, groups = synthetic_world()

    bank = LatentBank.create(G, out / f"bank_{args.labeler}_{args.pool}", args.pool, seed=args.seed,
                             labelers=[get_labelers(args.labeler)], progress=False)
    w_pool = torch.from_numpy(np.array(bank.w, dtype=np.float32))
    factors, _, labels = label_columns(bank.labels, parse_attribute_spec(args.factors or SPECS[args.labeler]),
                                       components=args.map_components, seed=args.seed)
    mapper = FactorMapper(G.num_ws, G.w_dim, factors, noise_dim=args.noise_dim, hidden=args.hidden,
                          readout_hidden=args.readout_hidden, rec_weight=args.rec_weight,
                          imitate_weight=args.imitate_weight, contrast_weight=args.contrast_weight,
                          prior_weight=args.prior_weight,
                          generator_sha256=generator_fingerprint(G))
    mapper.fit_prior(w_pool, labels, seed=args.seed).set_normalization(w_pool)
    sampler = FactorSampler(w_pool, mapper.code_dims, mapper.noise_dim, G.num_ws, batch_size=args.batch,
                            seed=args.seed)
    result = train_model(mapper, sampler, out / "model", steps=args.steps, lr=args.lr, lr_schedule="cosine",
                         seed=args.seed, log_every=100, checkpoint_every=500, val_every=250,
                         resume=not args.no_resume, progress=False,
                         config={"script": "bench_factor_mapper.py", "labeler": args.labeler})
    mapper = result.model.eval()
    baseline = LinearGaussianMapper(mapper, w_pool.numpy(), labels)

    # prior codes and the same codes with each factor redrawn
    gen = torch.Generator().manual_seed(10_000 + args.seed)
    z = torch.randn(args.eval, sampler.dim, generator=gen)
    slices = mapper._slices()
    label_index = {name: [mapper.label_names.index(n) for n in labs] for name, labs in factors.items()}

    def asked(zz: torch.Tensor) -> np.ndarray:
        codes = {name: zz[:, sl] for name, sl in slices.items()}
        return mapper.codes_to_labels(codes).cpu().numpy()

    def mappers():
        return {"FactorMapper": lambda zz: mapper._map(zz.to(mapper.device)).cpu(),
                "linear-Gaussian mapper (baseline)": lambda zz: torch.from_numpy(
                    baseline.map(zz.numpy()).astype(np.float32))[:, None].repeat(1, G.num_ws, 1)}

    fnames = list(fmap.names)
    real = sample_latents(G, 20_000_000 + np.arange(2 * args.eval)).ws[:, 0]
    std = w_pool.std(0).numpy()
    table = {}
    with torch.no_grad():
        for mname, fn in mappers().items():
            ws = fn(z)
            f = fmap(ws).numpy()
            want = asked(z)
            row = {"imitation": {}, "control": {}}
            for name, idx in label_index.items():
                true_idx = [fnames.index(n) for n in factors[name]] if args.labeler == "synthetic-oracle" else None
                if true_idx is not None:
                    row["imitation"][name] = float(np.abs(f[:, true_idx] - want[:, idx]).mean())
            for name, sl in slices.items():
                z_alt = z.clone()
                z_alt[:, sl] = torch.randn(args.eval, sl.stop - sl.start, generator=gen)
                f_alt = fmap(fn(z_alt)).numpy()
                moved = {g: float(np.abs(f_alt[:, idx] - f[:, idx]).mean()) for g, idx in groups.items()
                         if g != TRUE_GROUP.get(name)}
                take = None
                if args.labeler == "synthetic-oracle":
                    true_idx = [fnames.index(n) for n in factors[name]]
                    take = float(np.abs(f_alt[:, true_idx] - asked(z_alt)[:, label_index[name]]).mean())
                row["control"][name] = {"take": take, "keep": moved}
            noise_alt = z.clone()
            noise_alt[:, sum(mapper.code_dims):] = torch.randn(args.eval, mapper.noise_dim, generator=gen)
            f_noise = fmap(fn(noise_alt)).numpy()
            row["noise_redrawn_moves"] = {g: float(np.abs(f_noise[:, idx] - f[:, idx]).mean())
                                          for g, idx in groups.items()}
            row["frechet_w_prior_samples"] = frechet(ws[:, 0].numpy() / std, real[: args.eval].numpy() / std)
            z_real = (mapper._encode(mapper.check_ws(real[: args.eval])).cpu() if mname == "FactorMapper"
                      else torch.from_numpy(baseline.encode(real[: args.eval].numpy())))
            coded = fn(z_real)[:, 0]
            row["frechet_w_encoded_real"] = frechet(coded.numpy() / std, real[args.eval:].numpy() / std)
            row["reconstruction_rel_mse_w"] = float(((coded - real[: args.eval]) ** 2).mean() / (std**2).mean())
            table[mname] = row
    floor = frechet(real[: args.eval].numpy() / std, real[args.eval:].numpy() / std)

    with torch.no_grad():  # real faces: reconstruction and an edit of the pose to another face's
        a, b = real[: args.eval], real[args.eval:]
        codes_a, _ = mapper.encode(a)
        rec = mapper._map(mapper._encode(mapper.check_ws(a)))
        rec_err = float(((rec[:, 0] - a) ** 2).mean() / (w_pool.std(0) ** 2).mean())
        f_a, f_b, f_rec = fmap(a).numpy(), fmap(b).numpy(), fmap(rec).numpy()
        real_faces = {"reconstruction_rel_mse_w": rec_err,
                      "reconstruction_factor_error": {g: float(np.abs(f_rec[:, idx] - f_a[:, idx]).mean())
                                                      for g, idx in groups.items()}}
        if "pose" in factors:
            edited = mapper.edit(a, {"pose": mapper.encode(b)[0]["pose"]})
            f_e = fmap(edited).numpy()
            real_faces["edit_pose"] = {"take": float(np.abs(f_e[:, groups["pose"]] - f_b[:, groups["pose"]]).mean()),
                                       "keep": {g: float(np.abs(f_e[:, idx] - f_a[:, idx]).mean())
                                                for g, idx in groups.items() if g != "pose"}}

    rows, steps = [], np.linspace(-2, 2, 7)
    with torch.no_grad():
        base = torch.randn(1, sampler.dim, generator=torch.Generator().manual_seed(args.seed))
        for sl in slices.values():
            zz = base.repeat(len(steps), 1)
            zz[:, sl.start] = torch.as_tensor(steps, dtype=torch.float32)  # the factor's first code dimension
            rows.append(to_uint8(G.synthesis(mapper._map(zz), noise_mode="const")))
    save_titled_grid(np.stack(rows), out / "factors.png", [f"{s:+.1f}" for s in steps],
                     [f"{name} ({factors[name][0]})" for name in slices])
    write_record({
        "factors": factors, "readout_held_out_r2": dict(zip(mapper.label_names, mapper.readout.r2_.round(4).tolist())),
        "train_seconds": result.seconds, "train_steps": result.step, "best_step": result.best_step,
        "last_losses": result.last_losses, "errors": table, "frechet_w_real_vs_real": floor, "real_faces": real_faces,
    }, args, t0)


if __name__ == "__main__":
    run_script(main)
