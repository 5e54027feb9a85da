#!/usr/bin/env python
"""3D-coupled directions on the ground-truth world: global recovery, locality and span of the localized directions.

No labels are used to find the directions: the samples of the shipped synthetic checkpoint are rendered and
decomposed by the 3D decomposer (`--decomposer`, default the shipped one), then `ThreeDCoupledDirections` is fitted
with the world's mean canonical part masks for naming. Reported:

- fit time (rendering + decomposition, and the estimator alone);
- |cos| of each global direction to the true factor direction (yaw, pitch, roll, light_azimuth, light_elevation,
  light_ambient -> ambient);
- locality: for each localized direction named after a part, the share of the rendered edit's pixel change
  (+-1 std, `--probe` base codes) inside that part's image-space mask (`analysis.metrics.locality`);
- span: for each part, the norm of the projection of each true direction of the factors acting on it onto the span
  of the directions named after that part;
- the locality ceiling: for each factor acting on a part, the locality of the exact single-factor change (the
  min-norm W move that changes that factor's readout by one std and no other factor's), rendered by the generator
  and by the world's own renderer: what a perfect localized direction would score on this world;
- the locality bound: the best locality any direction of W (or, `--bound-spaces w w+`, of W+, where each ws
  layer moves on its own) reaches on each part, to first order, on `--bound-faces` faces (`locality_bound`),
  whatever finder chose it;
- the cross-part spans: every part factor's span on each part's directions (`cross_part_spans`);
- with `--readability`, two diagnostics that use the world's truth: how faithfully the generator draws each
  factor (`generator_fidelity`: its image change along the single-factor move against the world's), and what a
  part's region of the maps shows of its factors against the whole maps and image (`part_readability`: supervised
  linear readers, their W directions against the true ones).

`--sensitivity-samples N` (default 16; 0: none) estimates the generator's image sensitivity (the mean Gram of its
Jacobian) on N samples and fits with it as the regressions' prior (`ThreeDCoupledDirections.fit(w_metric=...)`),
as `find-directions` does. `--view-leak-samples N` (default 512; 0: none) measures on N faces how much of the
view the decomposer's light readings take in, on its own re-renders (`DecomposerLabeler.view_leak`), and removes it
from the light labels before the fit (`fit(label_leaks=...)`), as `find-directions` does.

`--decomposer oracle` replaces the trained decomposer by the world's exact decomposition (its depth, albedo, light
and view): the method's own ceiling, apart from what any learned decomposer adds.

    python scripts/bench_three_d_coupled.py --samples 20000 --json 3d.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from stylegan_disentangle.analysis.metrics import locality
from stylegan_disentangle.analysis.sensitivity import SENSITIVITY_SAMPLES, sensitivities
from stylegan_disentangle.directions import ThreeDCoupledDirections
from stylegan_disentangle.labels.decomposer.labeler import decomposer_labeler, parse_light_mask, scalar_labels
from stylegan_disentangle.labels.decomposer.view_leak import VIEW_LEAK_SAMPLES, ViewLeakError
from stylegan_disentangle.synthetic import PART_NAMES
from stylegan_disentangle.synthetic.checkpoint import load_synthetic, oracle_labeler
from stylegan_disentangle.synthetic.decomposer_eval import render as world_render
from stylegan_disentangle.utils import atomic_write
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value

ALIASES = {"light_ambient": "ambient"}
PART_FACTORS = {"nose": ["nose_length", "nose_width"], "eyes": ["eye_spacing"], "mouth": ["mouth_open", "smile"],
                "brows": ["brow_raise"], "skin": ["head_width", "head_height", "jaw_width"], "hair": ["hair_color"]}


def _ws(G, w: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(w), dtype=torch.float32).unsqueeze(1).repeat(1, G.num_ws, 1)


def exact_decomposition_labels(oracle, ws: torch.Tensor, resolution: int) -> dict[str, torch.Tensor]:
    """The decomposer3d labels (scalars, depth, albedo) of the world's exact decomposition of the faces behind ws."""
    intr = oracle.intrinsics(ws, resolution=resolution)
    view = intr["view"]
    labels = scalar_labels({"rotation_deg": view[:, :3], "view": view, "light": intr["light"]})
    return {**labels, "depth": intr["depth"][:, 0], "albedo": intr["albedo"]}


def _single_factor_renders(G, fmap, base: torch.Tensor, spread_w: np.ndarray, factors: list[str],
                           step_std: float = 1.0):
    """For each factor: (name, G's images, the world's renders) of `base` moved by -+`step_std` of the factor's
    std over `spread_w` along its exact single-factor W move (the dual direction: it changes the factor's readout
    and no other factor's)."""
    d = np.asarray(fmap.directions, dtype=np.float64)
    dual = np.linalg.pinv(d)  # column j: changes d_j . w by 1 and every other d_k . w by 0
    for f in factors:
        j = fmap.names.index(f)
        step = torch.as_tensor(dual[:, j] * step_std * float(np.std(spread_w @ d[j])), dtype=torch.float32)
        ends = [base - step, base + step]
        yield (f, [G.synthesis(e, noise_mode="const", force_fp32=True) for e in ends],
               [world_render(torch.as_tensor(fmap(e)).float(), G.img_resolution) for e in ends])


def locality_ceiling(G, fmap, base: torch.Tensor, img_masks: torch.Tensor, w: np.ndarray) -> dict[str, dict]:
    """Locality of each part factor's exact single-factor change (+-1 std), rendered by G and by the world."""
    part_of = {f: part for part, factors in PART_FACTORS.items() for f in factors}
    out = {}
    for f, gen, world in _single_factor_renders(G, fmap, base, w, list(part_of)):
        mask = img_masks[:, PART_NAMES.index(part_of[f])]
        out[f] = {"part": part_of[f], "generator": float(np.nanmean(locality(*gen, mask))),
                  "renderer": float(np.nanmean(locality(*world, mask))), "mask_area": float(mask.mean())}
    return out


def locality_bound(G, oracle, w: np.ndarray, faces: int = 16, steps: int = 200, step: float = 0.05,
                   seed: int = 0, space: str = "w") -> dict[str, dict]:
    """The best locality any direction of W (`space="w"`: one delta on every ws layer) or of W+ (`"w+"`: each of
    the num_ws layers its own delta, num_ws * w_dim dimensions) can reach on each part, to first order, on `faces`
    faces.

    Per face, the image Jacobian J (forward differences) and the part's image-space mask m. Two bounds: the
    direction u maximising the in-part share of the squared change (sum u'J'mJu / sum u'J'Ju, a generalised
    eigenproblem), and the linearised `locality` itself (the L1 share sum m|Ju| / sum |Ju|, averaged over the
    faces) maximised by Adam on the unit sphere from that eigenvector, the runner-up and a random start (the best
    direction met on the way). Both are measured on the faces they were fitted to, so they favour the direction
    (the more so in W+'s num_ws times larger space); a locality goal above them is out of reach for any direction
    on this generator.
    """
    if space not in ("w", "w+"):
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    num_ws, d = G.num_ws, G.w_dim
    dims = d if space == "w" else num_ws * d
    jac = []
    for i in range(faces):
        base = torch.as_tensor(w[i], dtype=torch.float32)[None, None].repeat(dims + 1, num_ws, 1)
        deltas = step * torch.eye(dims)
        base[1:] += deltas[:, None, :] if space == "w" else deltas.view(dims, num_ws, d)
        img = torch.cat([G.synthesis(chunk, noise_mode="const", force_fp32=True).double()
                         for chunk in base.split(256)])
        jac.append(((img[1:] - img[:1]) / step).reshape(dims, 3, -1))
    jac = torch.stack(jac)  # [F, dims, 3, P]
    flat = jac.transpose(0, 1).reshape(dims, -1)  # [dims, F*3*P]
    masks = oracle.intrinsics(_ws(G, w[:faces]), resolution=G.img_resolution)["masks"].double().flatten(2)  # [F, Q, P]
    ev, vec = np.linalg.eigh((flat @ flat.T).numpy())
    whiten = (vec / np.sqrt(np.clip(ev, ev.max() * 1e-9, None))) @ vec.T
    jf = jac.float()
    out = {}
    for part in PART_FACTORS:
        m = masks[:, PART_NAMES.index(part)]
        inside = ((flat * m[:, None, :].expand(-1, 3, -1).reshape(-1)) @ flat.T).numpy()
        share, u = np.linalg.eigh(whiten @ inside @ whiten)
        starts = [whiten @ u[:, -1], whiten @ u[:, -2], np.random.default_rng(seed).normal(size=dims)]
        best = 0.0
        mf = m.float()
        for start in starts:
            v = torch.tensor(start / np.linalg.norm(start), dtype=torch.float32, requires_grad=True)
            opt = torch.optim.Adam([v], lr=0.02)
            with torch.enable_grad():
                for _ in range(steps):
                    change = torch.einsum("ficp,i->fcp", jf, v / v.norm()).abs().sum(1)  # [F, P]
                    loc = ((change * mf).sum(1) / change.sum(1)).mean()
                    best = max(best, float(loc.detach()))  # every direction on the way counts, the start included
                    opt.zero_grad()
                    (-loc).backward()
                    opt.step()
        out[part] = {"max_squared_share": float(share[-1]), "max_locality": best, "mask_area": float(m.mean())}
    return out


def cross_part_spans(directions: np.ndarray, part_of: list[str | None], truth: np.ndarray,
                     factor_names: list[str]) -> dict[str, dict[str, float]]:
    """For every part that has directions, the projection norm of *every* part factor's true direction on the span
    of that part's directions: the diagonal is the span goal, the rest says how much a part's span holds of what
    it should not (the metric prior keeps the directions among the few W directions the image responds to, about
    20 of the synthetic checkpoint's 128, so a part's 12 hold a good share of any factor's)."""
    out = {}
    factors = [f for fs in PART_FACTORS.values() for f in fs]
    for part in PART_FACTORS:
        rows = [k for k, q in enumerate(part_of) if q == part]
        if not rows:
            continue
        q, _ = np.linalg.qr(np.asarray(directions, np.float64)[rows].T)
        out[part] = {f: float(np.linalg.norm(q.T @ truth[factor_names.index(f)])) for f in factors}
    return out


def generator_fidelity(G, fmap, base: torch.Tensor, spread_w: np.ndarray, step_std: float = 0.5
                       ) -> dict[str, dict[str, float]]:
    """How faithfully the generator draws each factor: along the factor's single-factor W move (the dual direction,
    +-`step_std` of the factor's std over `spread_w`), the change of G's image against the world's own render of
    the same move, per face of `base` (`[N, num_ws, w_dim]`): the cosine of the two changes and the ratio of their
    norms, averaged over the faces. A perfect distillation gives 1 and 1; a factor drawn elsewhere or with the
    wrong pattern, a low cosine."""
    out = {}
    for name, gen, world in _single_factor_renders(G, fmap, base, spread_w, list(fmap.names), step_std):
        g, r = (gen[1].double() - gen[0].double()).flatten(1), (world[1].double() - world[0].double()).flatten(1)
        gn, rn = g.norm(dim=1), r.norm(dim=1)
        # a face whose generator image does not change scores cosine 0 (the factor is not drawn there)
        out[name] = {"cosine": float(((g * r).sum(1) / (gn * rn).clamp_min(1e-300)).mean()),
                     "norm_ratio": float((gn / rn.clamp_min(1e-300)).mean()), "generator_change": float(gn.mean())}
    return out


def part_readability(maps: dict[str, np.ndarray], w: np.ndarray, factors: np.ndarray, truth: np.ndarray,
                     factor_names: list[str], part_masks: np.ndarray, part_core: float = 0.2,
                     extra: dict[str, np.ndarray] | None = None, train_fraction: float = 0.75,
                     max_rows: int = 20_000) -> dict[str, dict]:
    """What a part's region of the maps shows of its factors, read *supervised* (a diagnostic that uses the
    world's truth).

    `maps` {name: [N, C, R, R]} the canonical maps the directions are learned from, all at one resolution R;
    `part_masks` [P, R, R] their mean part masks (PART_NAMES order); `extra` {name: [N, ...]} more inputs of the
    whole reader only (the image). For each factor of PART_FACTORS, a ridge reader (penalty by cross-validation)
    from (a) the pixels of its part's region of the maps (mean mask >= `part_core`, the region a part-scoped
    finder reads), (b) all pixels of the maps and of `extra`, fitted on the first `train_fraction` of the rows;
    its predictions on all rows are regressed on w, and the |cos| of that W direction with the true one is
    reported, with the reader's held-out R^2. At most the first `max_rows` rows are read (the whole reader's
    ridge holds them as float64: 20k rows of 7168 inputs are 1.1 GB). A factor its region does not show is read
    poorly from it, whatever unsupervised method picks the part's directions; one the whole input shows is in the
    images, if not in the part.
    """
    from sklearn.linear_model import RidgeCV

    n = min(w.shape[0], int(max_rows))
    w, factors = w[:n], factors[:n]
    maps = {k: v[:n] for k, v in maps.items()}
    extra = {k: v[:n] for k, v in (extra or {}).items()}
    train = np.arange(int(train_fraction * n))
    test = np.arange(train.size, n)
    wc = np.asarray(w, np.float64) - np.mean(w, axis=0)
    flat = [np.asarray(v, np.float32).reshape(n, v.shape[1], -1) for v in maps.values()]
    whole = [f.reshape(n, -1) for f in flat]
    whole += [np.asarray(v, np.float32).reshape(n, -1) for v in extra.values()]

    def read(cols: list[np.ndarray], idx: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate(cols, axis=1).astype(np.float64)
        x -= x[train].mean(axis=0)
        y = np.asarray(factors, np.float64)[:, idx]
        pred = RidgeCV(alphas=np.logspace(-6, 3, 19)).fit(x[train], y[train]).predict(x).reshape(n, -1)
        r2 = 1 - ((pred[test] - y[test]) ** 2).sum(0) / ((y[test] - y[test].mean(0)) ** 2).sum(0)
        coef = np.linalg.lstsq(wc, pred - pred.mean(axis=0), rcond=None)[0].T
        coef /= np.maximum(np.linalg.norm(coef, axis=1, keepdims=True), 1e-300)
        return np.abs((coef * truth[idx]).sum(axis=1)), r2

    whole_cos, whole_r2 = read(whole, [factor_names.index(f) for fs in PART_FACTORS.values() for f in fs])
    out, k = {}, 0
    for part, fs in PART_FACTORS.items():
        region = (np.asarray(part_masks)[PART_NAMES.index(part)] >= part_core).reshape(-1)
        idx = [factor_names.index(f) for f in fs]
        cos, r2 = read([f[:, :, region].reshape(n, -1) for f in flat], idx)
        for i, f in enumerate(fs):
            out[f] = {"part": part, "region_pixels": int(region.sum()), "part_region": float(cos[i]),
                      "part_region_r2": float(r2[i]), "whole": float(whole_cos[k]), "whole_r2": float(whole_r2[k])}
            k += 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--samples", type=positive_int, default=20000)
    p.add_argument("--decomposer", default="synthetic", help="'synthetic', a checkpoint path, or 'oracle'")
    p.add_argument("--resolution", type=positive_int, default=32, help="map resolution with --decomposer oracle")
    p.add_argument("--n-atoms", type=positive_int, default=6, help="atoms per map (per part with --atom-scope parts)")
    p.add_argument("--code-alpha", type=finite_float, default=0.03,
                   help="sparsity of the atoms' codes (0.1: the default "
                   "before the thirteenth session, with --atom-scope map)")
    p.add_argument("--atom-scope", choices=["map", "parts", "map+parts"], default="parts",
                   help="atoms over the whole map, n-atoms per part inside each part mask, or both (parts on the "
                        "whole-map atoms' residual)")
    p.add_argument("--part-core", type=finite_float, default=0.2,
                   help="--atom-scope parts: mean-mask threshold of a part")
    p.add_argument("--global-loss", choices=["huber", "squared"], default="huber",
                   help="loss of the global regression (squared: the plain GCV ridge of the eleventh session)")
    p.add_argument("--sensitivity-samples", type=nonnegative_int, default=None,
                   help=f"samples for the generator's image sensitivity, the regressions' prior (0: none; default "
                        f"{SENSITIVITY_SAMPLES}, 0 with --decomposer oracle: its exact labels are not read off the "
                        f"image, the prior's premise)")
    p.add_argument("--view-leak-samples", type=nonnegative_int, default=None,
                   help=f"faces the light readings' view leak is measured on (default {VIEW_LEAK_SAMPLES}; 0: none, "
                        "the fit before the thirty-third session)")
    p.add_argument("--probe", type=nonnegative_int, default=32)
    p.add_argument("--bound-faces", type=nonnegative_int, default=16,
                   help="faces for the locality bound (the best any W direction reaches, first order); 0: skip")
    p.add_argument("--bound-spaces", nargs="+", choices=("w", "w+"), default=["w"],
                   help="latent spaces of the locality bound: W (one delta on every ws layer) and / or W+ (a delta "
                        "per layer; num_ws times the forward differences)")
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--light-mask", default=None, metavar="TOP,LEFT,HEIGHT,WIDTH|none",
                   help="The box the decomposer's netL does not see (default: its own; 'none': the whole image, the "
                        "shipped decomposer as it read before its light mask)")
    p.add_argument("--albedo-source", choices=["auto", "image", "net"], default="auto",
                   help="the albedo the atoms are learned from (ThreeDCoupledDirections' albedo_source; auto: the "
                        "image's albedo from a decomposer, the exact albedo from the oracle)")
    p.add_argument("--readability", action="store_true",
                   help="also measure how faithfully the generator draws each factor and what each part's region "
                        "of the maps (and the whole maps and image) shows of its factors, read supervised "
                        "(generator_fidelity, part_readability: diagnostics that use the world's truth)")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    try:
        light_mask = None if args.light_mask is None else parse_light_mask(args.light_mask)
    except ValueError as exc:
        p.error(f"--light-mask: {exc}")
    if light_mask is not None and args.decomposer == "oracle":
        p.error("--light-mask applies to a decomposer, not to the oracle")
    if args.sensitivity_samples is None:
        args.sensitivity_samples = 0 if args.decomposer == "oracle" else SENSITIVITY_SAMPLES
    if args.view_leak_samples is None:
        args.view_leak_samples = 0 if args.decomposer == "oracle" else VIEW_LEAK_SAMPLES
    elif args.view_leak_samples and args.decomposer == "oracle":
        p.error("--view-leak-samples measures a decomposer's readings; the oracle's are exact")
    torch.set_grad_enabled(False)
    G, fmap = load_synthetic()
    truth = fmap.directions / np.linalg.norm(fmap.directions, axis=1, keepdims=True)
    gen = torch.Generator().manual_seed(args.seed)
    w = G.mapping(torch.randn([args.samples, G.z_dim], generator=gen), None)[:, 0].numpy()

    oracle = oracle_labeler()
    t0 = time.perf_counter()
    taught_light = False  # the exact labels are no taught reading
    if args.decomposer == "oracle":
        resolution = args.resolution

        def lab(ws: torch.Tensor, img: torch.Tensor | None) -> dict[str, torch.Tensor]:
            return exact_decomposition_labels(oracle, ws, resolution)
    else:
        decomposer = decomposer_labeler(args.decomposer, maps=True, confidence=False, light_mask=light_mask)
        resolution = decomposer.input_resolution
        taught_light = decomposer.taught_light

        def lab(ws: torch.Tensor, img: torch.Tensor | None) -> dict[str, torch.Tensor]:
            return decomposer(img)
    labels: dict = {}
    read_images, read_factors = [], []  # kept only for --readability
    for i in range(0, len(w), 512):
        ws = _ws(G, w[i:i + 512])
        img = None
        if args.decomposer != "oracle" or args.readability:
            img = G.synthesis(ws, noise_mode="const", force_fp32=True).clamp(-1, 1)
        for k, v in lab(ws, img).items():
            labels.setdefault(k, []).append(v.numpy())
        if args.readability:
            read_images.append(torch.nn.functional.interpolate(img, size=(resolution, resolution), mode="area").numpy()
                          if img.shape[-1] != resolution else img.numpy())
            read_factors.append(np.asarray(fmap(ws), dtype=np.float64))
    labels = {k: np.concatenate(v) for k, v in labels.items()}
    t_decomp = time.perf_counter() - t0
    masks = oracle.intrinsics(_ws(G, w[:256]), resolution=resolution)["canonical_masks"].mean(0).numpy()
    t1 = time.perf_counter()
    metric = chroma = None
    if args.sensitivity_samples:  # the regressions' priors, as find-directions computes them
        metric, chroma = sensitivities(G, w[: args.sensitivity_samples], resolution=resolution, progress=False)
    leaks = None
    if args.view_leak_samples:  # the light readings' view leak, as find-directions measures it
        faces = G.synthesis(_ws(G, w[: args.view_leak_samples]), noise_mode="const", force_fp32=True).clamp(-1, 1)
        try:
            leaks = decomposer.view_leak(faces)
            print("view leak of the light readings (per degree of each rotation reading): " + "; ".join(
                f"{k} " + ", ".join(f"{a} {v:+.4f}" for a, v in row.items()) for k, row in leaks.items()))
        except ViewLeakError as exc:  # as find-directions: no correction, said
            print(f"no view leak correction: {exc}")
    t_sens = time.perf_counter() - t1
    est = ThreeDCoupledDirections(n_atoms=args.n_atoms, atom_scope=args.atom_scope, global_loss=args.global_loss,
                                  part_core=args.part_core, code_alpha=args.code_alpha, taught_light=taught_light,
                                  albedo_source=args.albedo_source, random_state=args.seed).fit(
        w, labels, part_masks=masks, part_names=list(PART_NAMES), w_metric=metric, w_chroma=chroma,
        label_leaks=leaks)
    t_fit = time.perf_counter() - t1 - t_sens
    print(f"{args.samples} samples: render + decompose {t_decomp:.1f} s, sensitivity {t_sens:.1f} s, "
          f"fit {t_fit:.1f} s; "
          f"{len(est.names_)} directions: {', '.join(est.names_)}; dropped: {', '.join(est.dropped_) or 'none'}")

    glob = {}
    for k, name in enumerate(est.names_):
        factor = ALIASES.get(name, name)
        if est.kinds_[k] == "global" and factor in fmap.names:
            glob[name] = float(abs(est.directions_[k] @ truth[fmap.names.index(factor)]))
    print("global |cos| to the true direction: " + ", ".join(f"{n} {c:.3f}" for n, c in glob.items()))

    base = _ws(G, w[: args.probe])
    img_masks = oracle.intrinsics(base, resolution=G.img_resolution)["masks"]  # [N, P, R, R] image space
    loc, part_of = {}, {}
    for k, name in enumerate(est.names_):
        if est.kinds_[k] == "global":
            continue
        part = next((q for q in PART_NAMES if name.split("_", 1)[1].startswith(q)), None)
        part_of[name] = part
        if part is None or part == "background":
            continue
        d = torch.as_tensor(est.directions_[k] * est.std_[k], dtype=torch.float32)
        plus = G.synthesis(base + d, noise_mode="const", force_fp32=True)
        minus = G.synthesis(base - d, noise_mode="const", force_fp32=True)
        loc[name] = float(np.nanmean(locality(minus, plus, img_masks[:, PART_NAMES.index(part)])))
    print("locality (share of the edit inside the named part): " + ", ".join(f"{n} {v:.2f}" for n, v in loc.items()))
    # the span goal is the own-part entries of the cross-part table (0 for a part without directions)
    cross = cross_part_spans(est.directions_, [part_of.get(n) for n in est.names_], truth, list(fmap.names))
    span = {part: {f: cross[part][f] if part in cross else 0.0 for f in factors}
            for part, factors in PART_FACTORS.items()}
    print("span (projection norm of the true identity/expression directions on the part's directions): "
          + "; ".join(f"{p_}: " + ", ".join(f"{f} {v:.2f}" for f, v in s.items()) for p_, s in span.items()))
    print("span of every part factor on each part's directions (rows: the part's directions):\n" + "\n".join(
        f"  {p_:6s} " + " ".join(f"{f} {v:.2f}" for f, v in row.items()) for p_, row in cross.items()))
    fidelity, readability = {}, {}
    if args.readability:
        fidelity = generator_fidelity(G, fmap, base, w)
        print("generator fidelity (single-factor change, G's image against the world's; cos / norm ratio): "
              + ", ".join(f"{f} {v['cosine']:.2f} / {v['norm_ratio']:.2f}" for f, v in fidelity.items()))
        albedo_key = "image_albedo" if est.albedo_source_ == "image" else "albedo"
        readability = part_readability(
            {"depth": labels["depth"][:, None], albedo_key: labels[albedo_key]}, w, np.concatenate(read_factors),
            truth, list(fmap.names), masks, part_core=args.part_core, extra={"image": np.concatenate(read_images)})
        print("readability (supervised linear reader's W direction, |cos| to the truth; the part's region of the "
              "maps / the whole maps and image): " + ", ".join(f"{f} {v['part_region']:.2f} / {v['whole']:.2f}"
                                                    for f, v in readability.items()))
    ceiling = locality_ceiling(G, fmap, base, img_masks, w)
    print("locality ceiling (exact single-factor change; generator / world renderer): " + ", ".join(
        f"{f} {c['generator']:.2f} / {c['renderer']:.2f}" for f, c in ceiling.items()))
    bound = {}
    for space in dict.fromkeys(args.bound_spaces if args.bound_faces else []):  # in order, each once
        bound[space] = locality_bound(G, oracle, w[-args.bound_faces:], faces=args.bound_faces, space=space)
        print(f"locality bound (best direction of {space.upper()}, first order; squared-change share / locality): "
              + ", ".join(f"{p_} {b['max_squared_share']:.2f} / {b['max_locality']:.2f}"
                          for p_, b in bound[space].items()))
    if args.json:
        with atomic_write(args.json, "w") as f:
            json.dump({"args": vars(args), "decompose_seconds": t_decomp,
                       "sensitivity_seconds": t_sens, "fit_seconds": t_fit,
                       "albedo_source": est.albedo_source_, "view_leak": leaks,
                       "names": est.names_, "scores": est.scores_.tolist(), "global_abs_cos": glob,
                       "locality": loc, "span": span, "cross_part_span": cross, "dropped": est.dropped_,
                       "locality_ceiling": ceiling, "locality_bound": bound, "generator_fidelity": fidelity,
                       "part_readability": readability},
                      f, indent=2)


if __name__ == "__main__":
    run_script(main)
