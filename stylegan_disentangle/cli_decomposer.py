"""Click commands for the 3D decomposer: `decompose` (generated faces: pictures + numbers), `decompose-images` (the
same for image files) and `train-decomposer`.

`register_decomposer_commands(main)` adds them to the `stylegan-disentangle` group (cli.py calls it at its end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import (
    FINITE_FLOAT,
    SEED,
    crop_option,
    device_option,
    fail_cleanly,
    light_mask_option,
    progress_setting,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from .labels.decomposer import Unsup3DDecomposer

__all__ = ["register_decomposer_commands"]

PICTURE_ROWS = 32  # images drawn in decomposition.png; the JSON and the NPZ hold every one
MAX_RESIZE = 4096  # decompose-images: the largest side an image is resized to before its --crop box is cut


def _decomposition_output_options(fn):
    """--outdir, --crop, --light-mask and --device, as `decompose` and `decompose-images` both take them."""
    for option in reversed((click.option("--outdir", type=click.Path(file_okay=False), required=True),
                            crop_option("--crop"), light_mask_option("--light-mask"), device_option())):
        fn = option(fn)
    return fn


@click.command("decompose")
@click.argument("pkl")
@click.option("--seeds", default="0-7", show_default=True, help="Official per-image seeds, e.g. 0-7 or 1,5,9.")
@click.option("--decomposer", "decomposer_spec", default=None,
              help="'synthetic' (the shipped one; default for the shipped checkpoint), an official pretrained "
                   "name (unsup3d-celeba, unsup3d-synface, unsup3d-cat, unsup3d-syncar: downloaded once), or an "
                   "Unsup3D checkpoint's path or URL (.pth, or the official .zip).")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--class", "class_idx", type=int, default=None,
              help="Class for conditional networks (default: each seed's own class, drawn as the bank draws it; "
                   "the JSON records it).")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Images generated at a time (each batch is cut to the decomposer's box and input size at once, "
                   "so memory holds one batch at the network's resolution).")
@_decomposition_output_options
def decompose_cmd(pkl: str, seeds: str, decomposer_spec: str | None, truncation_psi: float, class_idx: int | None,
                  batch_size: int, outdir: str, crop: tuple[float, ...] | None,
                  light_mask: tuple[float, ...] | bool | None, device: torch.device) -> None:
    """Decompose generated faces into depth, albedo, light and view: one PNG row per image (input |
    reconstruction | shaded depth | albedo | frontal view), the numbers as JSON, the maps as NPZ."""
    import numpy as np
    import torch

    from .analysis.find_directions import resolve_decomposer
    from .checkpoints import open_network_pkl
    from .labels.base import check_crop, crop_images, resize_images
    from .labels.decomposer.labeler import check_light_mask, load_decomposer, warn_if_trained_on_another
    from .latents import sample_latents, synthesize_in_chunks
    from .utils import sha256_file
    from .utils.ranges import parse_seeds

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--seeds") from None
    net = fail_cleanly(lambda: open_network_pkl(pkl, device=device))
    spec = fail_cleanly(lambda: resolve_decomposer(decomposer_spec, net.path))
    dec = fail_cleanly(lambda: load_decomposer(spec, device=device))
    dec.light_mask = check_light_mask(light_mask, dec.light_mask)  # the picture's reconstruction reads it too
    G = net.data["G_ema"].eval()
    warn_if_trained_on_another(dec, G, spec, pkl)
    box = check_crop(crop if crop is not None else dec.input_crop)
    with torch.no_grad():
        latents = fail_cleanly(lambda: sample_latents(G, seed_list, truncation_psi=truncation_psi,
                                                      class_idx=class_idx, device=device))
        # each batch cut to the box and brought to the nets' input as the labeler would: a large network's full
        # images are never all held at once
        img = synthesize_in_chunks(G, latents.ws, chunk=batch_size, postprocess=lambda im: resize_images(
            crop_images(im.float().clamp(-1, 1), box), dec.image_size).cpu())
    classes = [None] * len(seed_list) if latents.classes is None else [int(c) for c in latents.classes]
    record = {"command": "decompose", "pkl": str(net.path), "sha256": sha256_file(net.path),
              "decomposer": str(spec), "truncation_psi": truncation_psi}
    per_image = [{"seed": s, **({} if classes[i] is None else {"class": classes[i]})} for i, s in enumerate(seed_list)]
    _write_decomposition(Path(outdir), dec, img, box, record, per_image, [f"seed {s}" for s in seed_list],
                        {"seeds": np.asarray(seed_list)})


def _write_decomposition(out: Path, dec: Unsup3DDecomposer, img: torch.Tensor, crop: tuple[float, ...] | None,
                         record: dict, per_image: list[dict], row_labels: list[str],
                         ids: dict[str, np.ndarray]) -> None:
    """What `decompose` and `decompose-images` write into `out`: decomposition.png (a row per image, the first
    PICTURE_ROWS), decomposition.json (`record`, the settings, and per image its `per_image` entry and scalar
    labels) and maps.npz (the map labels, with the images' `ids`). `img` is already the box `crop` of each image
    (None: the whole image), which the record names and the nets read whole."""
    import numpy as np

    from . import __version__
    from .labels.decomposer.labeler import DecomposerLabeler
    from .labels.decomposer.visualize import COLUMNS, save_decomposition_png
    from .utils import atomic_write, atomic_write_path

    labeler = DecomposerLabeler(dec, crop=(0.0, 0.0, 1.0, 1.0))  # the whole of each image, already cut to the box
    # the nets run before anything is written: a decomposer without the nets it needs, or images it cannot read
    # (a greyscale network's), is one error line and no folder
    labels = fail_cleanly(lambda: labeler(img))
    out.mkdir(parents=True, exist_ok=True)
    shown = min(len(per_image), PICTURE_ROWS)  # a figure of thousands of rows would not render; the numbers do
    fail_cleanly(lambda: save_decomposition_png(out / "decomposition.png", dec, img[:shown],
                                                row_labels=row_labels[:shown]))
    scalars = [k for k, v in labels.items() if v.ndim == 1]
    record = {**record, "crop": None if crop is None else list(crop),
              "light_mask": None if dec.light_mask is None else list(dec.light_mask), "columns": list(COLUMNS),
              "version": __version__,
              "images": [{**entry, **{k: float(labels[k][i]) for k in scalars}} for i, entry in enumerate(per_image)]}
    with atomic_write(out / "decomposition.json", "w") as f:
        json.dump(record, f, indent=2)
    with atomic_write_path(out / "maps.npz") as tmp:
        np.savez(tmp, **ids, **{k: v.numpy() for k, v in labels.items() if v.ndim > 1})
    picture = "" if shown == len(per_image) else f" (the picture shows the first {shown})"
    click.echo(f"wrote {out / 'decomposition.png'}, decomposition.json and maps.npz for {len(per_image)} images"
               f"{picture}")


@click.command("decompose-images")
@click.argument("images", nargs=-1, required=True)
@click.option("--decomposer", "decomposer_spec", required=True,
              help="'synthetic' (the shipped one), an official pretrained name (unsup3d-celeba, unsup3d-synface, "
                   "unsup3d-cat, unsup3d-syncar: downloaded once), or an Unsup3D checkpoint's path or URL.")
@_decomposition_output_options
def decompose_images_cmd(images: tuple[str, ...], decomposer_spec: str, outdir: str,
                         crop: tuple[float, ...] | None, light_mask: tuple[float, ...] | bool | None,
                         device: torch.device) -> None:
    """Decompose image files (IMAGES: files, or folders of .png / .jpg / .jpeg / .webp / .bmp) into depth,
    albedo, light and view, as `decompose` does generated faces. Each image is cut to its central square and
    resized (Lanczos) to the decomposer's input, or larger when --crop keeps only a box of it, so that the box
    reaches the nets at their resolution. Real photos need the framing the decomposer was trained on (the
    official CelebA one: faces cropped to the face box)."""
    import math

    import numpy as np

    from .labels.base import check_crop, crop_images
    from .labels.decomposer.labeler import check_light_mask, load_decomposer
    from .utils import sha256_file
    from .utils.images import image_files, load_images

    files = fail_cleanly(lambda: image_files(images))
    dec = fail_cleanly(lambda: load_decomposer(decomposer_spec, device=device))
    dec.light_mask = check_light_mask(light_mask, dec.light_mask)
    box = check_crop(crop if crop is not None else dec.input_crop)
    size = dec.image_size if box is None else math.ceil(dec.image_size / min(box[2], box[3]))
    if size > MAX_RESIZE:
        raise click.BadParameter(f"a box of {box[2]:g} x {box[3]:g} of each image would have to be resized to "
                                 f"{size} px to reach the nets at {dec.image_size} px; keep a box of at least "
                                 f"{dec.image_size / MAX_RESIZE:.3g} of the image", param_hint="--crop")
    img = crop_images(fail_cleanly(lambda: load_images(files, size)), box)
    record = {"command": "decompose-images", "decomposer": str(decomposer_spec), "resized_to": size}
    per_image = [{"file": str(f), "sha256": sha256_file(f)} for f in files]
    _write_decomposition(Path(outdir), dec, img, box, record, per_image, [f.name for f in files],
                        {"files": np.asarray([str(f) for f in files])})


@click.command("train-decomposer")
@click.argument("pkl")
@click.option("--steps", type=int, required=True, help="Total training steps (a rerun resumes up to this).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--init", "init_spec", default=None,
              help="Start from this decomposer instead of fresh nets: 'synthetic' (the shipped one), an "
                   "official pretrained name (e.g. unsup3d-celeba) or an Unsup3D checkpoint's path or URL; its "
                   "sizes are used, so --nf / --zdim / --nf-small "
                   "/ --light-range cannot be given with it. --steps counts from it.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--lr", type=FINITE_FLOAT, default=1e-4, show_default=True)
@click.option("--weight-decay", type=FINITE_FLOAT, default=5e-4, show_default=True, help="Adam's, as official.")
@click.option("--nf", type=int, default=32, show_default=True, help="Width of netD / netA (multiple of 16).")
@click.option("--zdim", type=int, default=128, show_default=True,
              help="Code size of netD / netA (netC's is half of it).")
@click.option("--nf-small", type=int, default=16, show_default=True,
              help="Width of netL / netV (netC's is twice it; a multiple of 8).")
@click.option("--perceptual/--no-perceptual", default=False, show_default=True,
              help="Add the perceptual term on the network's own discriminator features.")
@click.option("--smooth", "lam_smooth", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="Weight of the depth-smoothness term, mean |depth gradient| (0 = off, as official).")
@click.option("--rerender", "lam_rerender", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="Weight of the re-render consistency term (0 = off).")
@click.option("--rerender-mode", type=click.Choice(["random", "data"]), default=None,
              help="Re-render scenes: uniform views and light over a lit wall, or the batch's own views and light "
                   "intensities with the head over a flat, unlit background (the synthetic decomposer's recipe). "
                   "Default: random.")
@click.option("--rerender-intensities", type=click.Choice(["batch", "uniform"]), default=None,
              help="--rerender-mode data: the re-renders' ambient / diffuse from other images of the batch, or "
                   "uniform over netL's range (with --train-nets netA,netD: an albedo that holds under other "
                   "light intensities). Default: batch.")
@click.option("--rerender-albedo-step", type=(float, float), default=None, metavar="LO HI",
              help="Recolour the re-render scenes' albedo above a random hairline by a gain log-uniform in "
                   "[LO, HI] (e.g. 0.35 1.25): a darker or lighter top of the head that is albedo, not light.")
@click.option("--rerender-light-xy", type=FINITE_FLOAT, default=None,
              help="Fraction of the light direction's range the re-render term draws from. Default: 1.")
@click.option("--rerender-yaw", type=FINITE_FLOAT, default=None, metavar="DEG",
              help="Redraw the re-render scenes' yaw uniformly within +-DEG: heads turned further than the "
                   "generator turns them, with the answer known (netV learns them). Default: the scenes' own.")
@click.option("--light-turn", "lam_light_turn", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="Weight of the turned-head term: netL must read the light it read on each image again on "
                   "its own estimate re-rendered with the yaw drawn within +-(--light-turn-yaw) (0 = off).")
@click.option("--light-turn-yaw", type=FINITE_FLOAT, default=None, metavar="DEG",
              help="Largest |yaw| (degrees) of --light-turn's renders. Default: 45.")
@click.option("--light-turn-pitch", type=FINITE_FLOAT, default=None, metavar="DEG",
              help="Redraw --light-turn's pitch within +-DEG as well (netL must not read a nod as light from "
                   "above). Default: each image's own pitch.")
@click.option("--light-from-rerender", is_flag=True,
              help="netL learns from the re-render term alone (the photometric loss does not reach it).")
@click.option("--jitter", "lam_jitter", type=FINITE_FLOAT, default=0.5, show_default=True,
              help="Weight of the truncation/noise agreement term (0 = off).")
@click.option("--stabilize-after", type=int, default=1000, show_default=True,
              help="Step at which the two stabilizers start (on from step 0 they hold the nets in a mean face).")
@click.option("--light-range", "xy_light_range", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="Scale of the light direction (1 = official; 2 reaches 63 degrees off-axis).")
@click.option("--albedo-tv", "lam_albedo_tv", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="Weight of the albedo total-variation prior (0 = off, as official).")
@click.option("--albedo-sparse", "lam_albedo_sparse", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="Weight of the albedo gradient-sparsity prior, mean (|gradient| + eps)^p (0 = off): sharp "
                   "albedo edges, smooth shading.")
@click.option("--albedo-sparse-p", type=FINITE_FLOAT, default=0.3, show_default=True,
              help="The exponent p of --albedo-sparse (below 1).")
@click.option("--antialias/--no-antialias", default=None,
              help="Smooth netD's and netA's outputs with a fixed 3x3 binomial filter (removes the transposed "
                   "convolutions' checkerboard; the shipped synthetic decomposer uses it). Default: off for new "
                   "nets, the --init nets' own setting otherwise; either flag also sets it on --init nets.")
@click.option("--train-nets", default=None,
              help="Comma-separated nets to train (e.g. netL or netA,netD); the others stay frozen. Default: all.")
@click.option("--bank", "bank_size", type=int, default=0, show_default=True,
              help="Train on an on-disk bank of this many generator images (built once in OUTDIR/bank; for "
                   "networks whose image generation dominates the step); 0 = draw every batch.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@crop_option("--crop", help="Train on this box of each generated image (fractions of the image), e.g. the face "
                            "box when fine-tuning an official decomposer (--init unsup3d-celeba) on a generator "
                            "with a wider frame; the decomposer keeps it as its input crop, which decompose and "
                            "find-directions then apply. Default: --init's own crop, else the whole image.")
@light_mask_option("--light-mask", help="A box of the (cropped) image that netL does not see, as fractions, "
                   "e.g. 0,0,0.22,1 (the top of the frame, where the hair is); the decomposer keeps it as its "
                   "light mask, in training and afterwards. 'none': without one. Default: --init's own, else "
                   "none.")
@click.option("--light-teacher", "teacher_spec", default=None, metavar="DIRS",
              help="Teach netL the light from the light directions of a find-directions --method 3d-coupled "
                   "run (its folder or directions.npz): each image's w projected on them, in the units of "
                   "--init's own readings (needs --init). Several runs, comma-separated: the mean of their "
                   "directions. The other nets learn as usual.")
@click.option("--teacher-weight", "lam_teacher", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="Weight of the --light-teacher term.")
@device_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.pass_context
def train_decomposer_cmd(ctx: click.Context, pkl: str, steps: int, outdir: str, init_spec: str | None,
                         nf: int, zdim: int, nf_small: int, xy_light_range: float, antialias: bool | None,
                         perceptual: bool, train_nets: str | None, device: torch.device, quiet: bool,
                         teacher_spec: str | None, **options) -> None:
    """Train an Unsup3D decomposer on the network's own samples (resumable; official checkpoint layout)."""
    from .checkpoints import open_network_pkl
    from .labels.decomposer.labeler import load_decomposer
    from .labels.decomposer.trainer import train_decomposer
    from .utils import sha256_file

    if teacher_spec is None and ctx.get_parameter_source("lam_teacher") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--teacher-weight weighs the latent light teacher, which is off: give --light-teacher")

    init = None
    if init_spec is not None:
        given = [f"--{name.replace('_', '-')}" for name in ("nf", "zdim", "nf_small", "xy_light_range")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{', '.join(given).replace('--xy-light-range', '--light-range')} cannot be "
                                   "given with --init: the sizes are the initial decomposer's")
        init = fail_cleanly(lambda: load_decomposer(init_spec, device=device))
        if antialias is not None:
            init.antialias = antialias
    net = fail_cleanly(lambda: open_network_pkl(pkl, device=device))
    data = net.data
    if perceptual and data.get("D") is None:
        raise click.ClickException(f"{pkl} has no discriminator: --perceptual needs one")
    sizes = dict(nf=nf, zdim=zdim, nf_light=nf_small, nf_view=nf_small, nf_conf=2 * nf_small,
                 zdim_conf=zdim // 2, xy_light_range=xy_light_range, antialias=bool(antialias))
    nets = None if train_nets is None else [n.strip() for n in train_nets.split(",") if n.strip()]
    if teacher_spec is not None:
        from .directions.light_teacher_sets import light_teacher_from_spec

        options["light_teacher"] = fail_cleanly(lambda: light_teacher_from_spec(
            teacher_spec, G=data["G_ema"], checkpoint_sha256=sha256_file(net.path)))
    fail_cleanly(lambda: train_decomposer(
        data["G_ema"], outdir, steps, init=init, decomposer_kwargs=None if init is not None else sizes,
        lam_perc=1.0 if perceptual else 0.0, D=data.get("D") if perceptual else None, train_nets=nets,
        device=device, progress=False if quiet else progress_setting(ctx), **options))
    click.echo(f"trained decomposer: {Path(outdir) / 'checkpoint.pth'}")


def register_decomposer_commands(main: click.Group) -> None:
    """Add `decompose`, `decompose-images` and `train-decomposer` to the CLI group."""
    for command in (decompose_cmd, decompose_images_cmd, train_decomposer_cmd):
        main.add_command(command)
