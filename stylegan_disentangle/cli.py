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


@main.command("list-checkpoints")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON instead of a table.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Download cache to check (default: $STYLEGAN_DISENTANGLE_CACHE or ~/.cache/stylegan_disentangle).")
def list_checkpoints(as_json: bool, cache_dir: str | None) -> None:
    """List the known official checkpoints (names usable wherever a PKL is expected) and whether each is cached."""
    import json

    from .checkpoints.registry import known_checkpoints

    rows = []
    for entry in known_checkpoints().values():
        record = entry.to_dict()
        record["cached"] = entry.is_available(cache_dir)
        record["local_path"] = str(entry.local_path(cache_dir))
        rows.append(record)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    header = ("name", "flavour", "res", "c_dim", "cached", "url")
    table = [header] + [
        (r["name"], r["flavour"], str(r["resolution"]), str(r["c_dim"]), "yes" if r["cached"] else "no",
         r["url"] or f"package:{r['package_file']}")
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
