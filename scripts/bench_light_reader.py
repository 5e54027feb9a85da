"""Can the decomposer's light net learn the light from its own re-renders, and does that reading carry over to the
generator's faces? A diagnosis of the re-render stabilizer on the synthetic world.

The re-render term (`scenes.rerender_scene`) renders the decomposer's depth and albedo under a known new view and
light and asks netL to read that light back: the only place where netL sees a known answer. This script measures,
for the shipped decomposer and on the shipped synthetic checkpoint:

1. how well its netL reads the light of its own re-renders (`random` mode: uniform views and light over a lit
   wall, the training default; `data` mode: the batch's views and intensities, the head over a flat unlit
   background);
2. a fresh netL trained only on re-renders for `--steps` steps (Adam 1e-3, batch 32; the other nets frozen), with
   the scenes (views, light intensities in "data" mode, depth and albedo) made by the decomposer under test, its
   depth and / or albedo optionally replaced by the world's truth: its read-back on held-out re-renders, and the
   Pearson r of its light on fresh generator faces (the transfer);
3. the same fresh netL trained on the generator's faces with the world's true light (supervised): what the
   architecture reads at this length when the answers are right.

Read-back r is per raw light channel (ambient, diffuse, dx, dy); transfer r is the bench's (azimuth, elevation,
ambient fraction). Writes JSON and prints a markdown table.

    python scripts/bench_light_reader.py --steps 400 --out runs/light_reader.json
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch

from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.labels.decomposer.reconstruction import reconstruct
from stylegan_disentangle.labels.decomposer.renderer import light_from_world
from stylegan_disentangle.labels.decomposer.scenes import rerender_scene
from stylegan_disentangle.labels.decomposer.trainer import draw_images
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from stylegan_disentangle.synthetic.decomposer_eval import faces_from_generator, score_decomposer
from stylegan_disentangle.synthetic.renderer import render
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script

LIGHTS = ("light_azimuth", "light_elevation", "ambient")


def _r(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


class SceneSource:
    """Batches of re-render scenes from generator images: the (frozen) decomposer's estimate, optionally with the
    world's depth and / or albedo put in its place. The scenes never depend on the netL being trained."""

    def __init__(self, dec, G, fmap, depth: str, albedo: str, mode: str, light_xy: float):
        self.dec, self.G, self.fmap = dec, G, fmap
        self.depth, self.albedo, self.mode, self.light_xy = depth, albedo, mode, light_xy

    @torch.no_grad()
    def batch(self, seed: int, n: int = 32) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        ws, img = draw_images(self.G, n, gen)
        out = reconstruct(self.dec, img, flip=False)
        if "world" in (self.depth, self.albedo):
            _, truth = render(torch.as_tensor(self.fmap(ws)).float(), self.dec.image_size, return_intrinsics=True)
            out = dict(out)
            if self.depth == "world":
                out["canon_depth"] = truth["depth"][:, 0]
            if self.albedo == "world":
                out["canon_albedo"] = truth["albedo"]
        return rerender_scene(self.dec, out, gen, self.mode, self.light_xy)


def fresh_light_net(dec, seed: int = 0):
    """The decomposer with a re-initialised netL (the other nets frozen), and an Adam on netL."""
    dec = load_decomposer(dec) if isinstance(dec, str) else dec
    dec.requires_grad_(False).eval()
    torch.manual_seed(seed)
    for module in dec.netL.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()
    dec.netL.requires_grad_(True)
    return dec, torch.optim.Adam(dec.netL.parameters(), lr=1e-3)


def train_on(dec, opt, batches, steps: int) -> None:
    dec.netL.train()
    for step in range(steps):
        x, target = batches(step)
        loss = (dec.netL(x) - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    dec.netL.eval()


def readback(dec, source: SceneSource) -> list[float]:
    scene = source.batch(5, 256)
    with torch.no_grad():
        light = dec.netL(scene["image"])
    return [round(_r(light[:, k], scene["light_raw"][:, k]), 3) for k in range(4)]


def transfer(dec, images, factors) -> dict[str, float]:
    with torch.no_grad():
        scores = score_decomposer(dec, images, factors)["scalars"]
    return {k: round(scores[k]["pearson_r"], 3) for k in LIGHTS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decomposer", default="synthetic")
    p.add_argument("--steps", type=positive_int, default=400, help="Training steps of each fresh netL.")
    p.add_argument("--light-xy", type=finite_float, default=0.4, help="Re-render light direction range (fraction).")
    p.add_argument("--samples", type=positive_int, default=1000, help="Generator faces for the transfer scores.")
    p.add_argument("--threads", type=nonnegative_int, default=2)
    p.add_argument("--out", default=None, help="JSON file for the numbers.")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    G, fmap = load_synthetic()
    images, factors = faces_from_generator(G, fmap, args.samples, seed=20_000_000)
    rows = []
    shipped = load_decomposer(args.decomposer).eval()
    for mode in ("random", "data"):
        source = SceneSource(shipped, G, fmap, "decomposer", "decomposer", mode, 1.0 if mode == "random" else
                             args.light_xy)
        rows.append({"net": "shipped netL", "scenes": f"{mode}: decomposer depth, decomposer albedo",
                     "readback_r": readback(shipped, source), **transfer(shipped, images, factors)})
    for mode, depth, albedo in (("random", "decomposer", "decomposer"), ("data", "decomposer", "decomposer"),
                                ("data", "world", "decomposer"), ("data", "world", "world"),
                                ("random", "world", "world")):
        dec, opt = fresh_light_net(args.decomposer)
        source = SceneSource(shipped, G, fmap, depth, albedo, mode, args.light_xy)

        def batches(step, source=source):
            scene = source.batch(1000 + step)
            return scene["image"], scene["light_raw"]

        train_on(dec, opt, batches, args.steps)
        rows.append({"net": f"fresh netL, {args.steps} steps on re-renders",
                     "scenes": f"{mode}: {depth} depth, {albedo} albedo", "readback_r": readback(dec, source),
                     **transfer(dec, images, factors)})
    # supervised reference: generator faces with the world's light as the raw target
    dec, opt = fresh_light_net(args.decomposer)
    train_images, train_factors = faces_from_generator(G, fmap, 32 * 200, seed=123)
    _, truth = render(train_factors, dec.image_size, return_intrinsics=True)
    light = light_from_world(truth["light"])
    target = torch.cat([light[:, :2] * 2 - 1, light[:, 2:] / dec.xy_light_range], 1).clamp(-1, 1)
    x = dec.prepare(train_images)

    def supervised(step):
        idx = torch.randint(0, len(x), [32], generator=torch.Generator().manual_seed(step))
        return x[idx], target[idx]

    train_on(dec, opt, supervised, args.steps)
    rows.append({"net": f"fresh netL, {args.steps} steps supervised", "scenes": "generator faces, true light",
                 "readback_r": None, **transfer(dec, images, factors)})
    print("| netL | trained on / read back on | read-back r (amb, diff, dx, dy) | azimuth r | elevation r | "
          "ambient r |\n|---|---|---|---|---|---|")
    for r in rows:
        back = "-" if r["readback_r"] is None else " / ".join(f"{v:.2f}" for v in r["readback_r"])
        print(f"| {r['net']} | {r['scenes']} | {back} | {r['light_azimuth']:.3f} | {r['light_elevation']:.3f} | "
              f"{r['ambient']:.3f} |")
    if args.out:
        with atomic_write(args.out, "w") as f:
            json.dump({"args": vars(args), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    run_script(main)
