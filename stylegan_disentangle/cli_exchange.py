"""The attribute exchange model's commands (ELEGANT style): what `train-model attribute-exchange` runs, and
`swap-attributes`.

Training labels a w pool with a labeler (a latent bank in OUTDIR/bank, resumable), fits the attribute readout on it
and trains `AttributeExchangeModel` with the shared loop; `swap-attributes` gives target faces the exemplars'
version of the named attributes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import FINITE_FLOAT, device_option, fail_cleanly
from .cli_labeled import labeled_pool, warn_weak_labels

if TYPE_CHECKING:
    import torch

__all__ = ["swap_attributes_cmd", "train_attribute_exchange"]


def train_attribute_exchange(pkl: str, out: Path, *, labeler: str | None, attributes: str | None, held: list[str],
                             map_components: int, readout_hidden: int, steps: int, batch_size: int, lr: float,
                             seed: int, device, pool: int, model_args: dict, train_args: dict) -> None:
    """train-model attribute-exchange: label a pool, fit the readout, train the model on pairs."""
    from .cli_models import _load_generator, _report, _save_rows
    from .latents import generator_fingerprint
    from .models import AttributeExchangeModel, ExchangeSampler, LatentReadout, train_model

    G = _load_generator(pkl, device)
    spec, held, w_pool, labels = labeled_pool(G, out, labeler, attributes, "--attributes", pool, seed, device,
                                              train_args["progress"], held=held, components=map_components,
                                              rebuild=not train_args["resume"])
    model = fail_cleanly(lambda: AttributeExchangeModel(G.num_ws, G.w_dim, spec, held=held,
                                                        generator_sha256=generator_fingerprint(G), **model_args))
    readout = fail_cleanly(lambda: LatentReadout(G.w_dim, model.label_names, hidden=readout_hidden).to(device).fit(
        w_pool, labels, seed=seed))
    warn_weak_labels(model.label_names, readout.r2_)
    sampler = fail_cleanly(lambda: ExchangeSampler(w_pool, labels, model.attribute_columns, G.num_ws,
                                                   batch_size=batch_size, seed=seed, val_size=min(512, pool // 10)))
    model.set_normalization(w_pool)
    shown = sampler.validation("cpu")
    shown_a, shown_b = shown["a"][:4], shown["b"][:4]
    first = model.attribute_names[0]

    def preview(m, path):
        _save_rows(G, [shown_a, shown_b, m.swap_attributes(shown_a, shown_b, first).cpu()], path,
                   ["target", "exemplar", f"swap {first}"])

    config = {"command": "train-model", "pkl": pkl, "labeler": labeler, "attributes": spec, "held": held,
              "map_components": map_components, "readout_hidden": readout_hidden,
              "readout_held_out_r2": dict(zip(model.label_names, readout.r2_.tolist())), "pool": pool,
              "batch_size": batch_size}
    result = fail_cleanly(lambda: train_model(model, sampler, out, steps=steps, lr=lr, lr_schedule="cosine", seed=seed,
                                              device=device, G=readout, preview_fn=preview, config=config,
                                              **train_args))
    _report("attribute-exchange", result)


@click.command("swap-attributes")
@click.argument("model")
@click.argument("pkl")
@click.option("--target-seeds", default="0-3", show_default=True, help="Seeds of the faces that are changed.")
@click.option("--exemplar-seeds", default="10-13", show_default=True,
              help="Seeds of the faces whose version of the attributes is taken.")
@click.option("--target-ws", type=click.Path(dir_okay=False), default=None,
              help="Faces of your own as the targets: an .npy of ws or w (e.g. project's ws.npy), instead of "
                   "--target-seeds.")
@click.option("--exemplar-ws", type=click.Path(dir_okay=False), default=None,
              help="Faces of your own as the exemplars (an .npy of ws or w), instead of --exemplar-seeds.")
@click.option("--attributes", "names", default=None,
              help="Comma list of the model's attributes to swap [default: all of them].")
@click.option("--strength", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="How far along the swap: 0 the target, 1 the exemplar's attribute, beyond 1 extrapolated.")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--allow-foreign", is_flag=True, help="Use a model trained on another generator.")
@device_option()
def swap_attributes_cmd(model: str, pkl: str, target_seeds: str, exemplar_seeds: str, target_ws: str | None,
                        exemplar_ws: str | None, names: str | None, strength: float, truncation_psi: float,
                        outdir: str, allow_foreign: bool, device: torch.device) -> None:
    """Exemplar-based attribute transfer with an attribute-exchange MODEL: each target face with its exemplar's
    version of the attributes. OUTDIR/swap.png (rows: target | exemplar | result) and the ws (target_ws.npy,
    exemplar_ws.npy, result_ws.npy, each [N, num_ws, w_dim]). Targets and exemplars are seeds, or your own faces
    (--target-ws / --exemplar-ws: e.g. images embedded with `project`); with a file, a row's 'seed' in the PNG and
    config.json is its row number."""
    from .cli_models import _load_ae, _load_generator, _names, _paired_seeds, _write_pair_outputs
    G = _load_generator(pkl, device)
    ex = _load_ae(model, G, allow_foreign, device, "attribute-exchange", "swap-attributes")
    chosen = _names(names)
    try:
        ex.attribute_mask(chosen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--attributes") from None
    t_seeds, t_ws, e_seeds, e_ws = _paired_seeds(G, target_seeds, "--target-ws" if target_ws else "--target-seeds",
                                                 exemplar_seeds,
                                                 "--exemplar-ws" if exemplar_ws else "--exemplar-seeds",
                                                 truncation_psi, target_ws, exemplar_ws)
    result = fail_cleanly(lambda: ex.swap_attributes(t_ws, e_ws, chosen, strength=strength))
    out = _write_pair_outputs(G, Path(outdir), "swap.png", {"target": (t_seeds, t_ws), "exemplar": (e_seeds, e_ws)},
                              result, {"command": "swap-attributes", "model": model, "pkl": pkl,
                                       "attributes": chosen or ex.attribute_names, "strength": strength,
                                       "target_ws": target_ws, "exemplar_ws": exemplar_ws,
                                       "truncation_psi": truncation_psi, "allow_foreign": allow_foreign})
    click.echo(f"wrote {out / 'swap.png'} (target | exemplar | result) and the ws")
