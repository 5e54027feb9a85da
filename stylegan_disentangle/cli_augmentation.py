"""Click command `export-augmentation`: images spread evenly over a semantic's target range, with their labels.

`register_augmentation_commands(main)` adds it to the `stylegan-disentangle` group (cli.py calls it at its end).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import FINITE_FLOAT, SEED, crop_option, device_option, light_mask_option, progress_setting

if TYPE_CHECKING:
    import torch

__all__ = ["register_augmentation_commands"]


@click.command("export-augmentation")
@click.argument("pkl")
@click.argument("dirs")
@click.option("--name", required=True, help="Direction to walk (e.g. yaw of a 3d-coupled DirectionSet).")
@click.option("--label", default=None, help="Decomposer label to aim at (default: the direction's name).")
@click.option("--target", required=True, help="Target range of the label, LO:HI (e.g. -45:45 degrees).")
@click.option("--count", type=click.IntRange(min=1), required=True,
              help="Number of images (exactly this many are written).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--decomposer", "decomposer_spec", default=None,
              help="'synthetic' (the shipped one; default for the shipped checkpoint), an official pretrained "
                   "name (unsup3d-celeba, ...), or an Unsup3D checkpoint's path or URL.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the base codes.")
@click.option("--bases", "n_bases", type=click.IntRange(min=1), default=None,
              help="Base codes walked (default: count // 8).")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--step", type=FINITE_FLOAT, default=0.5, show_default=True,
              help="Walk step, in stds of W along the direction (W units when the set has no stds).")
@click.option("--max-steps", type=click.IntRange(min=1), default=12, show_default=True,
              help="Walk length per side.")
@click.option("--saturation", "saturation_fraction", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="Stop where the label's change per step falls to this fraction of the first step's.")
@click.option("--mahalanobis-quantile", type=FINITE_FLOAT, default=0.999, show_default=True,
              help="Stop where the code leaves the W prior (this quantile of W's own distances); 0 = off.")
@click.option("--calibrate-with", "calibrate_with", type=click.Path(dir_okay=False), default=None,
              help="NPZ of images you have labelled ('images' uint8 [N, H, W, 3] or float [N, 3, H, W], and an "
                   "[N] array named after the label): the decomposer's label is mapped affinely onto your "
                   "values; TARGET and the written labels are then in your units.")
@click.option("--overwrite", is_flag=True, help="Replace a non-empty OUTDIR (atomically).")
@crop_option("--decomposer-crop")
@light_mask_option("--decomposer-light-mask")
@device_option()
@click.pass_context
def export_augmentation_cmd(ctx: click.Context, pkl: str, dirs: str, name: str, label: str | None, target: str,
                            count: int, outdir: str, decomposer_spec: str | None, seed: int, n_bases: int | None,
                            truncation_psi: float, step: float, max_steps: int, saturation_fraction: float,
                            mahalanobis_quantile: float, calibrate_with: str | None, overwrite: bool,
                            decomposer_crop: tuple[float, ...] | None,
                            decomposer_light_mask: tuple[float, ...] | bool | None, device: torch.device) -> None:
    """Walk PKL's codes along direction NAME of the DirectionSet DIRS (a find-directions --outdir, or the set's
    .json/.npz stem; guided extrapolation, the decomposer's saturation and the W prior as stop rules) and write
    COUNT images whose decomposer label spreads evenly over TARGET, with labels.json / labels.npz."""
    from .analysis.augmentation import export_augmentation, parse_target
    from .analysis.find_directions import resolve_decomposer
    from .checkpoints import open_network_pkl
    from .directions import DirectionSet
    from .errors import StyleGANDisentangleError
    from .labels.calibration import fit_label_calibration, load_calibration_images
    from .labels.decomposer.labeler import decomposer_labeler, warn_if_trained_on_another
    from .utils import sha256_file

    if step == 0:
        raise click.BadParameter("the walk needs a non-zero step", param_hint="--step")
    if not 0 <= mahalanobis_quantile <= 1:
        raise click.BadParameter(f"{mahalanobis_quantile} is no quantile in [0, 1] (0 turns the rule off)",
                                 param_hint="--mahalanobis-quantile")
    if not 0 <= saturation_fraction < 1:
        raise click.BadParameter(f"{saturation_fraction} is no fraction in [0, 1)", param_hint="--saturation")
    try:
        # the arguments are checked before the network and the decomposer are loaded (seconds to minutes)
        parse_target(target)
        calibration, aimed = None, label or name
        if calibrate_with is not None:  # read (and checked) before the network: a bad file fails fast
            images, values = load_calibration_images(calibrate_with, aimed)
        net = open_network_pkl(pkl, device=device)
        G = net.data["G_ema"].eval().requires_grad_(False)
        spec = resolve_decomposer(decomposer_spec, net.path)
        # scalars only: faster walks; the crop applies to the --calibrate-with images as well
        lab = decomposer_labeler(spec, maps=False, device=device, crop=decomposer_crop,
                                 light_mask=decomposer_light_mask)
        warn_if_trained_on_another(lab.decomposer, G, spec, pkl)
        ds = DirectionSet.load(dirs)
        checkpoint_sha256 = sha256_file(net.path)
        ds.check_fits(G.w_dim, G.num_ws, what=f"the direction set {dirs}", checkpoint_sha256=checkpoint_sha256)
        if calibrate_with is not None:
            calibration = fit_label_calibration(lab, images.to(device), values, aimed)
            click.echo(f"calibrated {aimed} on {calibration.n_samples_fit_} images of {calibrate_with}: "
                       f"{calibration.slope_:.3f} * decomposer + {calibration.intercept_:.3f} (r "
                       f"{calibration.r_:.3f}, residual std {calibration.residual_std_:.3f})")
        result = export_augmentation(
            G, ds, name, lab, target, count, outdir, label=label, seed=seed, n_bases=n_bases,
            truncation_psi=truncation_psi, step=step, max_steps=max_steps,
            saturation_fraction=saturation_fraction,
            mahalanobis_quantile=mahalanobis_quantile if mahalanobis_quantile > 0 else None,
            overwrite=overwrite, calibration=calibration, progress=progress_setting(ctx),
            extra={"checkpoint": str(pkl), "checkpoint_sha256": checkpoint_sha256, "decomposer": spec,
                   "decomposer_crop": None if decomposer_crop is None else list(decomposer_crop),
                   "decomposer_light_mask": None if lab.light_mask is None else list(lab.light_mask),
                   "directions": str(dirs), "calibrated_with": calibrate_with})
    except (StyleGANDisentangleError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    s = result.summary
    click.echo(f"wrote {count} images to {Path(outdir) / 'images'} ({s['label']} from {s['label_range'][0]:.1f} "
               f"to {s['label_range'][1]:.1f}; target {s['target'][0]:g}:{s['target'][1]:g}, mean |error| "
               f"{s['label_error']['mean_abs']:.2f}, reached {100 * s['reached_fraction']:.0f}%)")
    if s["reached_fraction"] < 1.0:
        ends = "; ".join(f"{side}{s['direction']}: " + ", ".join(f"{n} {'base' if n == 1 else 'bases'} "
                                                                 f"{_STOP_WORDS.get(r, r)}" for r, n in
                                                                 counts.items())
                         for side, counts in s["walk_stops"].items())
        hints = {"mahalanobis": "--mahalanobis-quantile 0 walks past the W prior (the images may degrade)",
                 "max_steps": "a larger --max-steps or --step walks further"}
        found = [hints[r] for r in hints if any(r in counts for counts in s["walk_stops"].values())]
        click.echo(f"the walks of the {s['n_bases']} base codes ended ({ends}); targets beyond where they ended "
                   f"get the nearest label reached{'; ' if found else ''}{'; '.join(found)}")


_STOP_WORDS = {"saturation": "the label saturated", "mahalanobis": "left the W prior",
               "max_steps": "ran out of --max-steps", "discriminator": "the discriminator's rule"}


def register_augmentation_commands(main: click.Group) -> None:
    """Add `export-augmentation` to the CLI group."""
    main.add_command(export_augmentation_cmd)
