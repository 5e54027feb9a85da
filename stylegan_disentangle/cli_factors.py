"""The factor mapper's commands (DiscoFaceGAN style): what `train-model factor-mapper` runs, and `map-factors`.

Training labels a w pool with a labeler (a latent bank in OUTDIR/bank, resumable), fits the mapper's readout and
label prior on it, and trains `FactorMapper` with the shared loop; `map-factors` draws faces from factor codes,
sweeping one factor or setting some labels to given values.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import SEED, device_option, fail_cleanly
from .cli_labeled import labeled_pool, warn_weak_labels

if TYPE_CHECKING:
    import torch

__all__ = ["map_factors_cmd", "train_factor_mapper"]


def train_factor_mapper(pkl: str, out: Path, *, labeler: str | None, factors: str | None, map_components: int,
                        readout_hidden: int,
                        steps: int, batch_size: int, lr: float, seed: int, device, pool: int, model_args: dict,
                        train_args: dict) -> None:
    """train-model factor-mapper: label a pool, fit the readout and the label prior, train the mapper."""
    from .cli_models import _load_generator, _report
    from .latents import generator_fingerprint
    from .models import FactorMapper, FactorSampler, train_model
    from .utils.images import save_titled_grid, to_uint8

    G = _load_generator(pkl, device)
    spec, _, w_pool, labels = labeled_pool(G, out, labeler, factors, "--factors", pool, seed, device,
                                           train_args["progress"], components=map_components,
                                           rebuild=not train_args["resume"])
    mapper = fail_cleanly(lambda: FactorMapper(G.num_ws, G.w_dim, spec, readout_hidden=readout_hidden,
                                               generator_sha256=generator_fingerprint(G), **model_args).to(device))
    fail_cleanly(lambda: mapper.fit_prior(w_pool, labels, seed=seed).set_normalization(w_pool))
    warn_weak_labels(mapper.label_names, mapper.readout.r2_)
    sampler = fail_cleanly(lambda: FactorSampler(w_pool, mapper.code_dims, mapper.noise_dim, G.num_ws,
                                                 batch_size=batch_size, seed=seed, val_size=min(512, pool // 10)))

    def preview(m, path):
        import numpy as np
        import torch

        with torch.no_grad():
            rows = [to_uint8(G.synthesis(_sweep(m, name, 5, seed), noise_mode="const")) for name in m.factor_names]
        save_titled_grid(np.stack(rows), path, [f"{v:+.0f}" for v in np.linspace(-2, 2, 5)], m.factor_names)

    config = {"command": "train-model", "pkl": pkl, "labeler": labeler, "factors": spec,
              "map_components": map_components,
              "readout_held_out_r2": dict(zip(mapper.label_names, mapper.readout.r2_.tolist())), "pool": pool,
              "batch_size": batch_size}
    result = fail_cleanly(lambda: train_model(mapper, sampler, out, steps=steps, lr=lr, lr_schedule="cosine",
                                              seed=seed, device=device, preview_fn=preview, config=config,
                                              **train_args))
    _report("factor-mapper", result)


def _sweep(mapper, factor: str, columns: int, seed: int, rows: int = 1) -> torch.Tensor:
    """ws [rows * columns, ...]: `rows` prior samples, each with `factor`'s code moved along its first dimension
    from -2 to 2 (the other dimensions, factors and noise as drawn)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    base = mapper._code_matrix(None, None, rows, gen).repeat_interleave(columns, 0)
    base[:, mapper._slices()[factor].start] = torch.linspace(-2, 2, columns).repeat(rows).to(base.device)
    return mapper._map(base)


def _parse_settings(text: str | None, names: list[str]) -> dict[str, float]:
    settings: dict[str, float] = {}
    for item in (s.strip() for s in (text or "").split(",") if s.strip()):
        name, sep, value = item.partition("=")
        try:
            if not sep or name.strip() not in names:
                raise ValueError
            settings[name.strip()] = float(value)
        except ValueError:
            raise click.BadParameter(f"{item!r}: give LABEL=VALUE with a label among {names}",
                                     param_hint="--set") from None
    return settings


@click.command("map-factors")
@click.argument("model")
@click.argument("pkl")
@click.option("--count", type=click.IntRange(min=1), default=4, show_default=True, help="Faces (rows).")
@click.option("--sweep", "sweep_factor", default=None,
              help="A factor whose code moves from -2 to 2 along each row (its first code dimension).")
@click.option("--columns", type=click.IntRange(min=2), default=7, show_default=True, help="Steps of --sweep.")
@click.option("--set", "settings", default=None,
              help="LABEL=VALUE pairs, comma-separated, in the labeler's units: each face's factor codes are "
                   "chosen so that those labels read the values (the factor's other labels keep their drawn values).")
@click.option("--ws", "ws_file", type=click.Path(dir_okay=False), default=None,
              help="Faces of your own instead of prior samples: an .npy of ws or w (e.g. project's ws.npy). The "
                   "mapper reads their codes, --sweep / --set change them, and each result is the face moved by "
                   "map(new codes) - map(its codes); --count is ignored.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--allow-foreign", is_flag=True, help="Use a model trained on another generator.")
@device_option()
def map_factors_cmd(model: str, pkl: str, count: int, sweep_factor: str | None, columns: int, settings: str | None,
                    ws_file: str | None, seed: int, outdir: str, allow_foreign: bool, device: torch.device) -> None:
    """Faces from a factor-mapper MODEL's codes: OUTDIR/factors.png (one row per face; with --sweep, one column
    per step), ws.npy ([faces x columns, num_ws, w_dim], face by face, as edit --ws reads it), labels.json (the
    labels the codes ask for, per face) and config.json. With --ws, real faces (e.g. projected images) are embedded
    in the factor space and edited there."""
    import numpy as np
    import torch

    from .cli_models import _load_ae, _load_generator, _provenance, _save_npy, _write_json, _ws_file
    from .latents import synthesize_in_chunks
    from .utils.images import save_titled_grid, to_uint8

    G = _load_generator(pkl, device)
    mapper = _load_ae(model, G, allow_foreign, device, "factor-mapper", "map-factors")
    if sweep_factor is not None and sweep_factor not in mapper.factors:
        raise click.BadParameter(f"{sweep_factor!r} is not a factor of this model: {mapper.factor_names}",
                                 param_hint="--sweep")
    wanted = _parse_settings(settings, mapper.label_names)
    clash = sorted(set(wanted) & set(mapper.factors.get(sweep_factor, [])))
    if clash:
        raise click.BadParameter(f"{clash} belong to the swept factor {sweep_factor!r}, whose code --sweep moves",
                                 param_hint="--set")
    offset = None  # with --ws: what of each face its codes do not reproduce, kept by the residual edit
    if ws_file is not None:
        own = _ws_file(G, ws_file).to(device)
        count = len(own)
        with torch.no_grad():
            z = mapper._encode(own)
            offset = own - mapper._map(z)
    else:
        z = mapper._code_matrix(None, None, count, torch.Generator().manual_seed(seed))
    slices = mapper._slices()
    if wanted:  # the drawn codes' labels, with the given ones replaced, back to codes
        asked = mapper.codes_to_labels({n: z[:, sl] for n, sl in slices.items()})
        for name, value in wanted.items():
            asked[:, mapper.label_names.index(name)] = value
        for name, code in mapper.labels_to_codes(asked).items():
            z[:, slices[name]] = code
    cols = columns if sweep_factor else 1
    z = z.repeat_interleave(cols, 0)
    if sweep_factor:
        z[:, slices[sweep_factor].start] = torch.linspace(-2, 2, cols).repeat(count).to(z.device)
    with torch.no_grad():
        ws = mapper._map(z)
        if offset is not None:  # the residual edit of each real face
            ws = ws + offset.repeat_interleave(cols, 0)
        asked = mapper.codes_to_labels({n: z[:, sl] for n, sl in slices.items()}).cpu().numpy()
        imgs = to_uint8(synthesize_in_chunks(G, ws, postprocess=lambda im: im.float().cpu()))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    titles = [f"{v:+.1f}" for v in np.linspace(-2, 2, cols)] if sweep_factor else ["face"]
    save_titled_grid(imgs.reshape(count, cols, *imgs.shape[1:]), out / "factors.png", titles,
                     [f"face {i}" for i in range(count)])
    _save_npy(out / "ws.npy", ws.cpu().numpy())  # [count * columns, num_ws, w_dim], face by face: what --ws reads
    _write_json(out / "labels.json", {"label_names": mapper.label_names,
                                      "asked": asked.reshape(count, cols, -1).tolist()})
    _write_json(out / "config.json", {"command": "map-factors", "model": model, "pkl": pkl, "count": count,
                                      "sweep": sweep_factor, "columns": cols, "set": wanted, "seed": seed,
                                      "ws_file": ws_file, "allow_foreign": allow_foreign, **_provenance(G)})
    click.echo(f"wrote {out / 'factors.png'} ({count} faces x {cols}), ws.npy and labels.json")
