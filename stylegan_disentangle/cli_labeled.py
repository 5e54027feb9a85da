"""What the label-driven model commands share (`train-model attribute-exchange`, `train-model factor-mapper`): the
labeled pool they train on, with clear errors for what is missing, and the warning for labels W barely holds."""

from __future__ import annotations

from pathlib import Path

import click

from .cli_common import fail_cleanly

__all__ = ["labeled_pool", "warn_weak_labels"]


def labeled_pool(G, out: Path, labeler: str | None, spec_text: str | None, option: str, pool: int, seed: int,
                 device, progress, held: list[str] = (), components: int = 8, rebuild: bool = False):
    """The labeled pool the label-driven models train on: ({group: [label columns]}, [held label columns],
    w_pool [N, w_dim], the columns [N, L]), a map-valued label (the decomposer's depth, albedo) standing for its
    `components` leading principal components (`models.readout.label_columns`); clear click errors for a missing
    labeler or spec, unknown labels, a small pool. `rebuild` labels the pool again (train-model --no-resume)."""
    import numpy as np
    import torch

    from .labels import get_labelers
    from .latents import LatentBank
    from .models import parse_attribute_spec
    from .models.readout import label_columns

    what = option.lstrip("-")
    if not labeler:
        raise click.UsageError(f"this model needs --labeler: the labeler whose labels describe the {what} (e.g. "
                               "synthetic-oracle on the shipped checkpoint, decomposer3d, or your own "
                               "'module:attribute')")
    if not spec_text:
        raise click.UsageError(f"this model needs {option}, e.g. 'expression=smile,mouth_open;pose=yaw'")
    try:
        spec = parse_attribute_spec(spec_text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    grouped = [n for labels in spec.values() for n in labels]
    if set(held) & set(grouped) or len(set(held)) != len(held):
        raise click.BadParameter(f"{','.join(held)}: name each held label once, and none that an attribute swaps "
                                 f"({','.join(grouped)})", param_hint="--held")
    lab = fail_cleanly(lambda: get_labelers(labeler))
    known = list(getattr(lab, "names", []))
    unknown = [n for n in grouped + list(held) if n not in known]
    if unknown:
        raise click.BadParameter(f"labels {unknown} are not among labeler {labeler!r}'s: {known}",
                                 param_hint=option if set(unknown) - set(held) else "--held")
    if pool < 40:
        raise click.BadParameter(f"{pool} faces: this model needs at least 40 (a tenth of them, at most 512, are "
                                 "kept for validation)", param_hint="--pool")
    bank = fail_cleanly(lambda: LatentBank.create(G, out / "bank", pool, seed=seed, labelers=[lab], device=device,
                                                  progress=progress, overwrite=rebuild))
    spec, held, labels = fail_cleanly(lambda: label_columns(bank.labels, spec, held, components, seed))
    return spec, held, torch.from_numpy(np.array(bank.w, dtype=np.float32)), labels


def warn_weak_labels(names, r2) -> None:
    """A warning on stderr naming the labels whose held-out readout R^2 is under 0.5."""
    weak = {n: round(float(r), 3) for n, r in zip(names, r2) if r < 0.5}
    if weak:
        click.echo(f"warning: W holds little of labels {weak} (held-out R^2 of the readout); the model cannot "
                   "control them well", err=True)
