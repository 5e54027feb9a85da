"""Click command `project`: real images embedded in a network's W (or W+) space.

`register_projection_commands(main)` adds it to the `stylegan-disentangle` group (cli.py calls it at its end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .cli_common import SEED, device_option, fail_cleanly, progress_setting

if TYPE_CHECKING:
    import torch

__all__ = ["register_projection_commands"]


@click.command("project")
@click.argument("pkl")
@click.argument("images", nargs=-1, required=True)
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--steps", type=click.IntRange(min=2), default=300, show_default=True,
              help="Optimization steps (the learning rate rises from 0 at the first).")
@click.option("--space", type=click.Choice(["w", "w+"]), default="w", show_default=True,
              help="One w per image (editable like a sample), or one per layer (closer fits, edits less alike).")
@click.option("--class", "class_idx", type=int, default=None, help="Class of a conditional network.")
@click.option("--seed", type=SEED, default=0, show_default=True,
              help="Seeds the W statistics and the code noise.")
@click.option("--batch-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="Images optimized at a time (fewer for a large network: at most 4 at 256x256, one from "
                   "512x512 up).")
@device_option()
def project_cmd(pkl: str, images: tuple[str, ...], outdir: str, steps: int, space: str, class_idx: int | None,
                seed: int, batch_size: int, device: torch.device) -> None:
    """Project image files (IMAGES: files, or folders of .png / .jpg / .jpeg / .webp / .bmp; each cut to its
    central square and resized to the network's resolution) into PKL's W space: ws.npy (for `edit --ws`),
    projection.png (target | projection), loss.png and projection.json (PSNR per image)."""
    from .analysis.projection import run_projection

    written = fail_cleanly(lambda: run_projection(pkl, list(images), outdir, steps=steps, space=space,
                                                  class_idx=class_idx, seed=seed, batch_size=batch_size, device=device,
                                                  progress=progress_setting()))
    click.echo(f"wrote {written['ws.npy']} and {written['projection.png']}")


def register_projection_commands(main: click.Group) -> None:
    """Add `project` to the CLI group."""
    main.add_command(project_cmd)
