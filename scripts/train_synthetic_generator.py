#!/usr/bin/env python
"""Distil the synthetic face renderer into a small StyleGAN2 (our networks, official layout).

The mapping network stays frozen at its seeded random initialisation; a fixed FactorMap turns each w into known
factors; the synthesis network is trained by regression to reproduce render(factors(w)). No GAN training.
Deterministic given --seed (on one device / thread count). Resumable: re-running continues from the last state.

    python scripts/train_synthetic_generator.py --outdir runs/synthetic --steps 20000
    # the result: runs/synthetic/synthetic64.pkl, factor_map.npz, training.json (PSNR on held-out w), samples.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stylegan_disentangle.checkpoints import save_network_pkl
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.networks import Generator
from stylegan_disentangle.synthetic.factor_map import FactorMap
from stylegan_disentangle.synthetic.renderer import render
from stylegan_disentangle.utils import atomic_write, atomic_write_path, resolve_device
from stylegan_disentangle.utils.images import image_grid, save_png, to_uint8
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value


def generator_kwargs(args) -> dict:
    return dict(z_dim=args.w_dim, c_dim=0, w_dim=args.w_dim, img_resolution=args.resolution, img_channels=3,
                mapping_kwargs=dict(num_layers=4),
                synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max))


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak = the full range)."""
    mse = ((a - b) ** 2).mean().item() / 4
    return 10 * math.log10(1 / max(mse, 1e-12))


def build_dataset(G: Generator, fmap: FactorMap, n: int, seed: int, resolution: int, path: Path) -> dict:
    """z, w and rendered target images for n seeded samples; cached (and resumed) in an .npz."""
    if path.is_file():
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    with torch.no_grad():
        w = G.mapping(z, None)[:, 0]
    images = np.zeros([n, 3, resolution, resolution], dtype=np.uint8)
    chunk = 256
    for start in tqdm(range(0, n, chunk), desc=f"render {path.name}"):
        with torch.no_grad():
            img = render(fmap(w[start: start + chunk]), resolution=resolution)
        images[start: start + chunk] = ((img + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
    data = dict(z=z.numpy(), w=w.numpy(), images=images)
    with atomic_write_path(path) as tmp:
        np.savez(tmp, **data)
    return data


def _check_same_run(path: Path, args: argparse.Namespace) -> None:
    """A rerun into the same --outdir resumes the run there (its factor map, datasets and state): it must be asked
    for with the same arguments, which the first call records in `path`."""
    asked = {k: v for k, v in vars(args).items() if k not in ("outdir", "device")}
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(k for k in set(recorded) | set(asked) if recorded.get(k) != asked.get(k))
        if changed:
            raise StyleGANDisentangleError(
                f"{path.parent} holds a run made with "
                + ", ".join(f"--{k.replace('_', '-')} {recorded.get(k)}" for k in changed)
                + "; resume it with the same arguments or use another --outdir")
        return
    with atomic_write(path, "w") as f:
        json.dump(asked, f, indent=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument("--resolution", type=positive_int, default=64)
    parser.add_argument("--w-dim", type=positive_int, default=128)
    parser.add_argument("--channel-base", type=positive_int, default=4096)
    parser.add_argument("--channel-max", type=positive_int, default=128)
    parser.add_argument("--n-train", type=positive_int, default=16384)
    parser.add_argument("--n-val", type=positive_int, default=512)
    parser.add_argument("--steps", type=positive_int, default=20000)
    parser.add_argument("--batch", type=positive_int, default=32)
    parser.add_argument("--lr", type=finite_float, default=2e-3)
    parser.add_argument("--eval-every", type=nonnegative_int, default=500)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    try:  # the sizes are checked by building the network, before anything is written
        G = Generator(**generator_kwargs(args)).eval()
    except ValueError as exc:
        raise StyleGANDisentangleError(f"the generator's sizes: {exc}") from None
    G.requires_grad_(False)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_run(out / "run_args.json", args)

    # The factor map is built from the W distribution of the frozen mapping network.
    fmap_path = out / "factor_map.npz"
    with torch.no_grad():
        z_stats = torch.randn([100_000, G.z_dim], generator=torch.Generator().manual_seed(args.seed + 1))
        w_stats = torch.cat([G.mapping(z, None)[:, 0] for z in z_stats.split(10_000)])
        G.mapping.w_avg.copy_(w_stats.mean(dim=0))
    if fmap_path.is_file():
        fmap = FactorMap.load(fmap_path)
    else:
        fmap = FactorMap.build(w_stats.numpy(), seed=args.seed)
        fmap.save(fmap_path)

    train = build_dataset(G, fmap, args.n_train, args.seed + 2, args.resolution, out / "train_set.npz")
    val = build_dataset(G, fmap, args.n_val, args.seed + 3, args.resolution, out / "val_set.npz")
    G = G.to(device)
    train_w = torch.from_numpy(train["w"]).to(device)
    train_img = torch.from_numpy(train["images"])
    val_w = torch.from_numpy(val["w"]).to(device)
    val_img = torch.from_numpy(val["images"]).float().div(127.5).sub(1).to(device)

    trainable = [p for n, p in G.synthesis.named_parameters() if not n.endswith("noise_strength")]
    for p in trainable:
        p.requires_grad_(True)
    opt = torch.optim.Adam(trainable, lr=args.lr, betas=(0.9, 0.99))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps, eta_min=args.lr * 0.02)
    state_path = out / "train_state.pt"
    log = {"args": vars(args), "evals": []}
    step = 0
    if state_path.is_file():
        state = torch.load(state_path, weights_only=False)
        G.load_state_dict(state["G"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        step, log = state["step"], state["log"]

    def evaluate() -> float:
        G.synthesis.eval()
        with torch.no_grad():
            pred = torch.cat([G.synthesis(w.unsqueeze(1).repeat([1, G.num_ws, 1]), noise_mode="const")
                              for w in val_w.split(128)])
        return psnr(pred, val_img)

    gen = torch.Generator().manual_seed(args.seed + 4 + step)
    bar = tqdm(total=args.steps, initial=step, desc="train")
    start_time = time.time()
    while step < args.steps:
        G.synthesis.train()
        idx = torch.randint(0, len(train_w), [args.batch], generator=gen)
        ws = train_w[idx].unsqueeze(1).repeat([1, G.num_ws, 1])
        target = train_img[idx].float().div(127.5).sub(1).to(device)
        pred = G.synthesis(ws, noise_mode="const")
        loss = (pred - target).abs().mean() + ((pred - target) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        step += 1
        bar.update(1)
        if step % args.eval_every == 0 or step == args.steps:
            val_psnr = evaluate()
            log["evals"].append(dict(step=step, val_psnr=val_psnr, loss=loss.item(), seconds=time.time() - start_time))
            bar.set_postfix(val_psnr=f"{val_psnr:.2f}")
            with atomic_write_path(state_path) as tmp:
                torch.save(dict(G=G.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), step=step,
                                log=log), tmp)
            with atomic_write(out / "training.json", "w") as f:
                json.dump(log, f, indent=2)
    bar.close()

    G = G.cpu().eval().requires_grad_(False)
    final_psnr = evaluate() if device.type == "cpu" else log["evals"][-1]["val_psnr"]
    log["final_val_psnr"] = final_psnr
    save_network_pkl(out / f"synthetic{args.resolution}.pkl",
                     dict(G=G, D=None, G_ema=G, training_set_kwargs=dict(
                         source="stylegan_disentangle.synthetic.render", resolution=args.resolution,
                         seed=args.seed, steps=args.steps, val_psnr=final_psnr), augment_pipe=None))
    with torch.no_grad():
        pred = G.synthesis(val_w[:16].cpu().unsqueeze(1).repeat([1, G.num_ws, 1]), noise_mode="const")
    pairs = torch.stack([val_img[:16].cpu(), pred], dim=1).flatten(0, 1)
    save_png(image_grid(to_uint8(pairs), cols=8), out / "samples.png", upscale=2)
    with atomic_write(out / "training.json", "w") as f:
        json.dump(log, f, indent=2)
    print(f"done: val PSNR {final_psnr:.2f} dB -> {out}")


if __name__ == "__main__":
    run_script(main)
