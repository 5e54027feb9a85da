"""The `stylegan-disentangle` command line: one subcommand per user task."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import click

from . import __version__
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
    import torch


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


@main.command("info")
@click.argument("pkl")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
@click.option("--decomposer", "is_decomposer", is_flag=True,
              help="PKL is a 3D decomposer (a name from list-decomposers, or an Unsup3D checkpoint's path or URL). "
                   "A local file that is no network pickle is read as one anyway.")
def info(pkl: str, as_json: bool, is_decomposer: bool) -> None:
    """Describe a network pickle (path, URL or known name): flavour, sizes, architecture, parameters, sha256 and
    the weights' fingerprint; a W-space model file (train-model): its kind, settings and the network it was trained
    for; or a 3D decomposer: its nets, settings and the network it was trained on."""
    import json
    from pathlib import Path

    from .checkpoints import open_network_pkl
    from .checkpoints.inspect import network_summary
    from .errors import StyleGANDisentangleError
    from .labels.decomposer.labeler import decomposer_summary, load_decomposer
    from .latents import generator_fingerprint
    from .models.io import model_summary

    if is_decomposer:
        summary = decomposer_summary(fail_cleanly(lambda: load_decomposer(pkl)))
    else:
        try:
            net = open_network_pkl(pkl)
            # the weights' own hash, which a decomposer trained on them records as its `trained_on`
            summary = {**network_summary(net), "generator_fingerprint": generator_fingerprint(net.data["G_ema"])}
        except StyleGANDisentangleError as exc:
            if not Path(pkl).is_file():
                raise click.ClickException(str(exc)) from None
            try:  # a W-space model file (train-model) or an Unsup3D checkpoint given where a network was expected
                summary = model_summary(pkl)
            except StyleGANDisentangleError as model_exc:
                try:
                    summary = decomposer_summary(load_decomposer(pkl))
                except StyleGANDisentangleError:
                    with open(pkl, "rb") as f:
                        torch_file = f.read(4) == b"PK\x03\x04"
                    if torch_file:  # torch.save's format: a damaged model or decomposer file, not a network pickle
                        raise click.ClickException(f"{model_exc} (nor is it a readable Unsup3D decomposer "
                                                   "checkpoint)") from None
                    raise click.ClickException(f"{exc} (nor is it a W-space model file or an Unsup3D decomposer "
                                               "checkpoint)") from None
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    width = max(map(len, summary), default=0)
    for key, value in summary.items():
        click.echo(f"{key:{width}s}  {value}")


@main.command("generate")
@click.argument("pkl")
@click.option("--seeds", default="0-7", show_default=True, help="Seeds, e.g. 0-7 or 1,5,9.")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", type=int, default=None, help="Truncate only the first N ws.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@click.option("--class", "class_idx", type=int, default=None, help="Class label for conditional networks.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--grid", is_flag=True, help="Also write all images as one grid.png.")
@device_option()
@click.pass_context
def generate(ctx: click.Context, pkl: str, seeds: str, truncation_psi: float, trunc_cutoff: int | None, noise_mode: str,
             class_idx: int | None, outdir: str, grid: bool, device: torch.device) -> None:
    """Generate one PNG per seed (z drawn as in the official scripts: RandomState(seed).randn(z_dim))."""
    import json
    from pathlib import Path

    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from . import __version__
    from .checkpoints import open_network_pkl
    from .utils import atomic_write, sha256_file
    from .utils.images import image_grid, save_png, to_uint8
    from .utils.ranges import parse_seeds

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--seeds") from None
    pkl_data = _open_or_fail(open_network_pkl, pkl, device=device)
    G = pkl_data.data["G_ema"]
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim:
        if class_idx is None or not 0 <= class_idx < G.c_dim:
            given = "" if class_idx is None else f" (got {class_idx})"
            raise click.BadParameter(f"this network is conditional: pass --class between 0 and {G.c_dim - 1}"
                                     f"{given}", param_hint="--class")
        c[:, class_idx] = 1
    elif class_idx is not None:
        click.echo("warning: --class is ignored, the network is unconditional", err=True)

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    with torch.no_grad():
        progress = progress_setting(ctx)
        for seed in tqdm(seed_list, desc="generate", unit="image",
                         disable=(not progress) if progress is not None else None):
            z = torch.from_numpy(np.random.RandomState(seed).randn(1, G.z_dim)).float().to(device)
            img = to_uint8(G(z, c, truncation_psi=truncation_psi, truncation_cutoff=trunc_cutoff,
                             noise_mode=noise_mode))[0]
            save_png(img, out / f"seed{seed:04d}.png")
            images.append(img)
    if grid:
        upscale = max(1, 256 // G.img_resolution)
        save_png(image_grid(np.stack(images)), out / "grid.png", upscale=upscale)
    config = dict(command="generate", pkl=str(pkl_data.path), sha256=sha256_file(pkl_data.path), seeds=seed_list,
                  truncation_psi=truncation_psi, truncation_cutoff=trunc_cutoff, noise_mode=noise_mode,
                  class_idx=class_idx, device=str(device), version=__version__)
    with atomic_write(out / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    click.echo(f"wrote {len(seed_list)} images to {out}")


@main.command("demo")
@click.option("--outdir", type=click.Path(file_okay=False), default="demo_out", show_default=True)
@click.option("--samples", type=click.IntRange(min=3), default=5000, show_default=True,
              help="Latent bank size for find-directions.")
@click.option("--three-d-samples", type=click.IntRange(min=3), default=3000, show_default=True,
              help="Latent bank size for the 3D-coupled directions.")
@device_option()
@click.pass_context
def demo(ctx: click.Context, outdir: str, samples: int, three_d_samples: int, device: torch.device) -> None:
    """The quick tour on the shipped synthetic checkpoint: load it safely, describe it, generate a grid, find,
    name and plot its semantic directions with the ground-truth oracle labeler, then decompose faces with the shipped
    3D decomposer and find named directions from it without any label (the 3D-coupled method).

    Without the shipped checkpoint (a source checkout that has not trained one) it falls back to the reference
    network in ../shared/reference or to a tiny random network written in the official layout. A rerun reuses its
    latent banks, and rebuilds one that an upgrade has made stale (another shipped decomposer).
    """
    from pathlib import Path

    from .synthetic.checkpoint import SYNTHETIC_CHECKPOINT

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    pkl = "synthetic" if SYNTHETIC_CHECKPOINT.is_file() else str(_fallback_demo_network(out))
    click.echo(f"== info {pkl}")
    ctx.invoke(info, pkl=pkl, as_json=False)
    click.echo("== generate")
    ctx.invoke(generate, pkl=pkl, seeds="0-15", truncation_psi=0.7, trunc_cutoff=None, noise_mode="const",
               class_idx=None, outdir=str(out / "images"), grid=True, device=device)
    if pkl == "synthetic":
        from .analysis.find_directions import run_find_directions

        click.echo("== find-directions (supervised linear, synthetic-oracle labels)")
        result = run_find_directions("synthetic", method="linear", labeler="synthetic-oracle", samples=samples,
                                     outdir=out / "directions", device=device, grid_max_rows=19,
                                     progress=progress_setting(ctx), overwrite_bank=True)
        click.echo(f"directions: {', '.join(result.direction_set.names)}")
        click.echo(f"open {out / 'directions' / 'edit_grid.png'} and {out / 'directions' / 'label_effects.png'}")
        click.echo("== decompose (the shipped 3D decomposer: depth, albedo, light and view of each face)")
        ctx.invoke(main.commands["decompose"], pkl=pkl, seeds="0-7", decomposer_spec=None, truncation_psi=1.0,
                   outdir=str(out / "decompose"), device=device)
        click.echo("== find-directions --method 3d-coupled (named directions from the decomposer, no labels)")
        result = run_find_directions("synthetic", method="3d-coupled", samples=three_d_samples,
                                     outdir=out / "three_d_coupled", device=device, umap=False,
                                     progress=progress_setting(ctx), overwrite_bank=True)
        found = result.direction_set
        glob = [n for n, kind in zip(found.names, found.info["kinds"]) if kind == "global"]
        click.echo(f"{len(found)} directions: {', '.join(glob)} and {len(found) - len(glob)} localized ones")
        click.echo(f"open {out / 'decompose' / 'decomposition.png'}, {out / 'three_d_coupled' / 'edit_grid.png'} "
                   f"and {out / 'three_d_coupled' / 'footprint_sheet.png'}")
    click.echo(f"open {out / 'images' / 'grid.png'}")


def _fallback_demo_network(out):
    """The reference network beside the clone, or a tiny random network written in the official layout."""
    from pathlib import Path

    import torch

    from .checkpoints import save_network_pkl
    from .networks import Discriminator, Generator

    reference = Path.cwd().parent / "shared" / "reference" / "sg2ada_skip_32.pkl"
    if reference.is_file():
        return reference
    torch.manual_seed(0)
    G = Generator(z_dim=64, c_dim=0, w_dim=64, img_resolution=32, img_channels=3, mapping_kwargs=dict(num_layers=4),
                  synthesis_kwargs=dict(channel_base=2048, channel_max=64)).eval()
    D = Discriminator(c_dim=0, img_resolution=32, img_channels=3, channel_base=2048, channel_max=64).eval()
    pkl = out / "tiny_random.pkl"
    save_network_pkl(pkl, dict(G=G, D=D, G_ema=G, training_set_kwargs=None, augment_pipe=None))
    click.echo(f"no shipped or reference network found; wrote a tiny random network to {pkl}")
    return pkl


def _open_or_fail(open_fn, pkl: str, **kwargs):
    """Open a checkpoint, turning our errors into a clean CLI message (no traceback)."""
    return fail_cleanly(lambda: open_fn(pkl, **kwargs))


@main.command("list-checkpoints")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON instead of a table.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Download cache to check (default: $STYLEGAN_DISENTANGLE_CACHE, else "
                   "$XDG_CACHE_HOME/stylegan_disentangle or ~/.cache/stylegan_disentangle).")
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


@main.command("list-decomposers")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON instead of a table.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="Download cache to check (default: $STYLEGAN_DISENTANGLE_CACHE, else "
                   "$XDG_CACHE_HOME/stylegan_disentangle or ~/.cache/stylegan_disentangle).")
def list_decomposers(as_json: bool, cache_dir: str | None) -> None:
    """List the 3D decomposers usable by name wherever --decomposer is taken: the shipped ones and the official
    pretrained Unsup3D ones (downloaded on first use), and whether each is here already."""
    import dataclasses
    import json

    from .labels.decomposer.labeler import SHIPPED
    from .labels.decomposer.pretrained import known_decomposers

    shipped = "shipped: trained on the shipped synthetic checkpoint's faces"
    rows = [{"name": name, "source": f"package:{path.name}", "description": shipped, "scalings": {},
             "available": path.is_file()} for name, path in SHIPPED.items()]
    for entry in known_decomposers().values():
        record = dataclasses.asdict(entry)
        rows.append({"name": record.pop("name"), "source": record.pop("url"), **record,
                     "available": entry.is_cached(cache_dir)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        here = "here" if r["available"] else "not downloaded"
        click.echo(f"{r['name'].ljust(width)}  {here.ljust(14)}  {r['description']}  ({r['source']})")


@main.command("find-directions")
@click.argument("pkl")
@click.option("--method", type=click.Choice(["pca", "closed-form", "linear", "sparse", "3d-coupled"]), default="pca",
              show_default=True, help="Direction finder (linear / sparse need a labeler; 3d-coupled a decomposer).")
@click.option("--samples", type=int, default=10_000, show_default=True, help="Latent bank size N.")
@click.option("--labeler", default="image_stats", show_default=True,
              help="Registered labeler(s) ('a,b'), 'module:factory' of your own, or 'none'.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=None, help="Truncate only the first N ws.")
@device_option()
@click.option("--num-directions", type=int, default=10, show_default=True, help="K for pca / closed-form.")
@click.option("--batch-size", type=int, default=256, show_default=True, help="Samples per chunk of the bank.")
@click.option("--rename/--no-rename", default=None,
              help="Name directions after the label they change most (default: on for pca / closed-form).")
@click.option("--effect-samples", type=int, default=32, show_default=True,
              help="Codes per direction for the rendered label-effect measurement.")
@click.option("--grid-steps", type=int, default=7, show_default=True, help="Columns of the edit grid (-3..3 stds).")
@click.option("--umap/--no-umap", default=True, show_default=True, help="Also draw the UMAP scatter of W.")
@click.option("--color-by", default=None, help="Label colouring the W scatters (default: the first label).")
@click.option("--decomposer", default=None,
              help="3d-coupled: 'synthetic' (the shipped one; default for the shipped checkpoint), an official "
                   "pretrained name (unsup3d-celeba, ...), or an Unsup3D checkpoint's path or URL (train one with "
                   "`stylegan-disentangle train-decomposer PKL --steps N --outdir DIR`).")
@click.option("--atom-scope", type=click.Choice(["map", "parts", "map+parts"]), default=None,
              help="3d-coupled: depth / albedo atoms inside each face part (default), over the whole map, or "
                   "both (part atoms on what the whole-map ones leave).")
@click.option("--n-atoms", type=click.IntRange(min=1), default=None,
              help="3d-coupled: depth / albedo atoms per part (per map with --atom-scope map); default 6.")
@click.option("--loss", type=click.Choice(["squared", "huber"]), default=None,
              help="linear / 3d-coupled: loss of the regressions on continuous labels (default: squared for linear, "
                   "huber for 3d-coupled's global directions). huber resists labels that a labeler misreads on a "
                   "minority of images.")
@click.option("--sensitivity-samples", type=click.IntRange(min=0), default=None,
              help="3d-coupled: samples for the generator's image sensitivity, the prior of the regressions "
                   "(default 16; 0: none); kept in the bank folder for later runs.")
@click.option("--view-leak-samples", type=click.IntRange(min=0), default=None,
              help="3d-coupled: faces on which the decomposer measures how much of the view its light readings take "
                   "in, on its own re-renders; that share is removed from the light labels before the fit "
                   "(default 512; 0: none).")
@click.option("--conditions", type=click.Choice(["auto", "none"]), default=None,
              help="3d-coupled: hold the light elevation direction against the ambient, diffuse and azimuth "
                   "readings (against the roll instead with a light-taught decomposer) and the colour of the "
                   "albedo at the top of the face, and the ambient against the pitch (InterFaceGAN's conditional "
                   "edit), then the ambient softly against the view and the light's direction and the elevation "
                   "against the face's height in the depth map (auto, the default; a hold against a rotation "
                   "whose measured share --view-leak-samples removed is left out) or leave every direction as "
                   "fitted (none).")
@click.option("--albedo-source", type=click.Choice(["image", "net"]), default=None,
              help="3d-coupled: learn the albedo atoms from the albedo the image shows, read back through the "
                   "decomposer's depth, view and light (image, the default), or from its albedo network's output "
                   "(net).")
@crop_option("--decomposer-crop")
@light_mask_option("--decomposer-light-mask")
@click.option("--overwrite-bank", is_flag=True,
              help="Discard a latent bank in OUTDIR made with other arguments (another seed, labeler, decomposer or "
                   "network, e.g. after an upgrade) and build it again; without it such a bank is refused. A bank "
                   "made with the same arguments is reused either way.")
@click.pass_context
def find_directions_cmd(ctx: click.Context, pkl: str, atom_scope: str | None, n_atoms: int | None, loss: str | None,
                        conditions: str | None, albedo_source: str | None, **kwargs) -> None:
    """Sample PKL, find W directions, name them by the labels they change, and write the DirectionSet, an edit
    grid, plots and report.json into OUTDIR."""
    from .analysis.find_directions import method_options, run_find_directions
    from .errors import UsageError

    try:  # options another method would ignore (yet config.json would record) are usage errors
        method_kwargs = method_options(kwargs["method"], atom_scope, n_atoms, loss, kwargs["decomposer"],
                                       kwargs["sensitivity_samples"], conditions, kwargs["decomposer_crop"],
                                       kwargs["decomposer_light_mask"], albedo_source,
                                       kwargs["view_leak_samples"])
    except UsageError as exc:
        raise click.UsageError(str(exc)) from None
    if method_kwargs:
        kwargs["method_kwargs"] = method_kwargs

    result = fail_cleanly(lambda: run_find_directions(pkl, progress=progress_setting(ctx), **kwargs))
    ds = result.direction_set
    click.echo(f"{len(ds)} {ds.method} directions -> {result.files['directions_json']}")
    for entry in result.report["directions"]:
        click.echo(f"  {entry['name']}")
    click.echo(f"report: {result.files['report']}")


@main.command("edit")
@click.argument("pkl")
@click.argument("dirs")
@click.option("--name", "names", multiple=True, required=True, help="Direction to edit along (repeatable).")
@click.option("--steps", default="-3:3:7", show_default=True, help="START:STOP:COUNT or a comma list.")
@click.option("--unit", "step_unit", type=click.Choice(["auto", "w", "sigma"]), default="auto", show_default=True,
              help="Step unit: W units, stds of W along the direction, or auto (sigma when the set has stds).")
@click.option("--seeds", default="0-7", show_default=True, help="Official per-image seeds, e.g. 0-7 or 1,5,9.")
@click.option("--ws", "ws_file", type=click.Path(dir_okay=False), default=None,
              help="Edit these codes instead of seeds: an .npy of ws [N, num_ws, w_dim] or w [N, w_dim], e.g. "
                   "the ws.npy that `project` wrote for real images.")
@click.option("--layers", default=None,
              help="ws layers to edit, overriding each direction's own: START:STOP (STOP exclusive), indices and "
                   "inclusive ranges like 0,2,5 or 0-3,8, or 'all'. Other ws layers are left untouched.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True, help="Truncation psi.")
@click.option("--trunc-cutoff", "truncation_cutoff", type=int, default=None, help="Truncate only the first N ws.")
@click.option("--class", "class_idx", type=int, default=None, help="Class for conditional networks.")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const", show_default=True)
@device_option()
def edit_cmd(pkl: str, dirs: str, names: tuple[str, ...], **kwargs) -> None:
    """Edit seeds (or the codes of --ws) of PKL along directions of the DirectionSet DIRS (a find-directions
    --outdir, or the set's .json/.npz stem): one grid PNG (rows = seeds, columns = steps) and the edited ws (.npy)
    per direction."""
    from .analysis.run_edit import run_edit

    written = fail_cleanly(lambda: run_edit(pkl, dirs, list(names), **kwargs))
    for name, paths in written.items():
        click.echo(f"{name}: {paths['png']}  {paths['ws']}")


from .cli_models import register_model_commands  # noqa: E402

register_model_commands(main)

from .cli_decomposer import register_decomposer_commands  # noqa: E402

register_decomposer_commands(main)

from .cli_augmentation import register_augmentation_commands  # noqa: E402

register_augmentation_commands(main)

from .cli_projection import register_projection_commands  # noqa: E402

register_projection_commands(main)
