"""The `stylegan-disentangle` command line: one subcommand per user task."""

from __future__ import annotations

import logging

import click

from . import __version__


@click.group()
@click.version_option(__version__)
@click.option("--quiet", is_flag=True, help="No progress bars, warnings only.")
@click.pass_context
def main(ctx: click.Context, quiet: bool) -> None:
    """Load StyleGAN2 checkpoints safely, generate, and find / edit / score W-space directions."""
    ctx.ensure_object(dict)
    ctx.obj["quiet"] = quiet
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(levelname)s: %(message)s")


# Subcommands are registered below, one import per module (keep this list sorted by module).
