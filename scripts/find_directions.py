#!/usr/bin/env python
"""Find, name and plot W-space directions of a StyleGAN2 checkpoint (same as `stylegan-disentangle find-directions`).

Examples:
    python scripts/find_directions.py ffhq --method pca --samples 100000 --outdir runs/ffhq_pca
    python scripts/find_directions.py G.pkl --method linear --labeler image_stats --outdir runs/lin --trunc 0.7
    python scripts/find_directions.py G.pkl --method sparse --labeler mypkg.labels:make_labeler --outdir runs/sp
    python scripts/find_directions.py synthetic --method 3d-coupled --samples 20000 --outdir runs/3d

Writes into OUTDIR: config.json, bank/ (resumable latent bank), directions.npz/.json (the DirectionSet),
boundaries/, edit_grid.png, cosine_similarity.png, label_effects.png, w_pca.png, w_umap.png and report.json.
"""

from __future__ import annotations

import argparse
import logging
import sys

from stylegan_disentangle.analysis.find_directions import (
    ALBEDO_SOURCES,
    ATOM_SCOPES,
    LOSSES,
    METHODS,
    method_options,
    run_find_directions,
)
from stylegan_disentangle.errors import StyleGANDisentangleError, UsageError
from stylegan_disentangle.labels import check_crop
from stylegan_disentangle.labels.decomposer.labeler import parse_light_mask
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, seed_value


def _crop(text: str) -> tuple[float, ...]:
    try:
        return check_crop(text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _light_mask(text: str) -> tuple[float, ...] | bool:
    try:
        return parse_light_mask(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pkl", help="network pickle: path, URL or known name (see `stylegan-disentangle list-checkpoints`)")
    p.add_argument("--method", choices=METHODS, default="pca")
    p.add_argument("--samples", type=positive_int, default=10_000, help="latent bank size (default 10000)")
    p.add_argument("--labeler", default="image_stats", help="labeler name(s) 'a,b', 'module:factory', or 'none'")
    p.add_argument("--outdir", required=True)
    p.add_argument("--seed", type=seed_value, default=0)
    p.add_argument("--trunc", dest="truncation_psi", type=finite_float, default=1.0, help="truncation psi")
    p.add_argument("--trunc-cutoff", dest="truncation_cutoff", type=nonnegative_int, default=None)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--num-directions", type=positive_int, default=10, help="K for pca / closed-form")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--rename", action=argparse.BooleanOptionalAction, default=None,
                   help="name directions after the label they change most (default: on for pca / closed-form)")
    p.add_argument("--effect-samples", type=positive_int, default=32)
    p.add_argument("--grid-steps", type=positive_int, default=7)
    p.add_argument("--umap", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--color-by", default=None)
    p.add_argument("--decomposer", default=None,
                   help="3d-coupled: 'synthetic' (default for the shipped checkpoint), an official pretrained name "
                        "(unsup3d-celeba, ...), or an Unsup3D checkpoint's path or URL")
    p.add_argument("--atom-scope", choices=ATOM_SCOPES, default=None,
                   help="3d-coupled: depth / albedo atoms inside each face part (default), over the whole map, or "
                        "both (part atoms on what the whole-map ones leave)")
    p.add_argument("--n-atoms", type=positive_int, default=None,
                   help="3d-coupled: depth / albedo atoms per part (per map with --atom-scope map); default 6")
    p.add_argument("--loss", choices=LOSSES, default=None,
                   help="linear / 3d-coupled: loss of the regressions on continuous labels (default: squared for "
                        "linear, huber for 3d-coupled's global directions)")
    p.add_argument("--sensitivity-samples", type=nonnegative_int, default=None,
                   help="3d-coupled: samples for the generator's image sensitivity, the prior of the regressions "
                        "(default 16; 0: none); kept in the bank folder for later runs")
    p.add_argument("--view-leak-samples", type=nonnegative_int, default=None,
                   help="3d-coupled: faces on which the decomposer measures how much of the view its light readings "
                        "take in, on its own re-renders; that share is removed from the light labels before the fit "
                        "(default 512; 0: none)")
    p.add_argument("--conditions", choices=("auto", "none"), default=None,
                   help="3d-coupled: hold the light elevation against the other light readings (the roll with a "
                        "light-taught decomposer) and the top albedo's colour, the ambient against the pitch, then "
                        "the ambient softly against the view and the light's direction and the elevation against "
                        "the face's height in the depth map (auto, default; a hold against a rotation whose "
                        "measured share --view-leak-samples removed is left out) or leave every direction as fitted "
                        "(none)")
    p.add_argument("--decomposer-crop", type=_crop, default=None, metavar="TOP,LEFT,HEIGHT,WIDTH",
                   help="3d-coupled: the part of each image the decomposer reads, fractions of the image (default: "
                        "the decomposer's own crop, else the whole image)")
    p.add_argument("--decomposer-light-mask", type=_light_mask, default=None, metavar="TOP,LEFT,HEIGHT,WIDTH|none",
                   help="3d-coupled: a box of the image the decomposer's light network does not see, e.g. 0,0,0.22,1 "
                        "(the hair above the face); 'none': no mask (default: the decomposer's own)")
    p.add_argument("--albedo-source", choices=ALBEDO_SOURCES, default=None,
                   help="3d-coupled: learn the albedo atoms from the albedo the image shows, read back through the "
                        "decomposer's depth, view and light (image, default), or from its albedo network (net)")
    p.add_argument("--overwrite-bank", action="store_true",
                   help="discard a latent bank in OUTDIR made with other arguments (another seed, labeler, decomposer "
                        "or network) and build it again; without it such a bank is refused")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    quiet = args.pop("quiet")
    try:  # the same option checks as the CLI: options another method would ignore are usage errors
        method_kwargs = method_options(args["method"], args.pop("atom_scope"), args.pop("n_atoms"), args.pop("loss"),
                                       args["decomposer"], args["sensitivity_samples"], args.pop("conditions"),
                                       args["decomposer_crop"], args["decomposer_light_mask"],
                                       args.pop("albedo_source"), args["view_leak_samples"])
    except UsageError as exc:
        parser.error(str(exc))  # exits with status 2, like any argparse usage error
    if method_kwargs:
        args["method_kwargs"] = method_kwargs
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s")
    try:
        result = run_find_directions(progress=False if quiet else None, **args)
    except StyleGANDisentangleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(result.direction_set)} directions: {', '.join(result.direction_set.names)}")
    print(f"report: {result.files['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
