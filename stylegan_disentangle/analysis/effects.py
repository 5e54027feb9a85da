"""Which labels does each direction change? Measured by rendering edits, not by correlating samples.

For every direction v_k, N base codes are moved by `+s` and `-s` along v_k (on its layer range), both edits are
rendered and labelled, and the central difference gives the label change per unit step:

    per_unit[k, l] = mean_i (y_l(ws_i + s v_k) - y_l(ws_i - s v_k)) / (2 s)      (label units per W unit)
    effects[k, l]  = per_unit[k, l] * sigma_k / std_l                          (label stds per one-std step)

with sigma_k the std of W along v_k and std_l the label's std over samples — the same scale as
`directions.name_directions`, whose estimate comes from a ridge fit on unedited samples. The rendered measurement
is the honest naming signal for unsupervised directions: it reports what an edit *does*, including non-linear and
layer-range effects, while the sample-based one reports what co-varies with the direction in the data.
A t statistic (`per_unit / stderr` over the N samples) guards names against noise.

Map-valued labels (a depth or albedo map `[N, ...]` per image, e.g. from the 3D decomposer) are measured the same way,
element by element: `change_maps[label][k]` is the mean change map per unit W step (where the edit acts: the
footprint), and the scalar columns hold its size, the root mean square over the map's elements
(`per_unit = rms_e(mean_i diff)`, `label_std = rms_e(std_i y)`), so `effects` ranks map labels beside scalar ones.
A map's size has no sign: its effects are >= 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..directions import DirectionSet
from ..errors import StyleGANDisentangleError
from ..labels import apply_labeler, needs_images
from ..latents import check_ws
from .edit import direction_offset, render

__all__ = ["LabelEffects", "measure_label_effects", "compare_namings"]


@dataclass
class LabelEffects:
    """Rendered-edit label effects of K directions on L labels (see the module docstring).

    Attributes
    ----------
    direction_names : K names;  label_names : L names;  n_samples : N base codes used
    step_w : [K] the +-step used, in W units
    per_unit : [K, L] mean label change per unit W step;  stderr : [K, L] its standard error
    direction_std : [K] std of W along each direction (NaN where unknown);  label_std : [L]
    effects : [K, L] label stds per one-std step (per unit W step where direction_std is unknown)
    change_maps : {map label: [K, ...]} mean change map per unit W step of each map-valued label (see the module
        docstring); its column in the [K, L] arrays holds the map's root-mean-square size
    """

    direction_names: list[str]
    label_names: list[str]
    n_samples: int
    step_w: np.ndarray
    per_unit: np.ndarray
    stderr: np.ndarray
    direction_std: np.ndarray
    label_std: np.ndarray
    effects: np.ndarray
    change_maps: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def t_stat(self) -> np.ndarray:
        """[K, L] per_unit / stderr (inf where the change is exactly consistent, 0 where there is none)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(self.stderr > 0, self.per_unit / self.stderr, np.sign(self.per_unit) * np.inf)
        return np.nan_to_num(t, nan=0.0, posinf=np.inf, neginf=-np.inf)  # (0 / 0 is no change)

    def top_labels(self, k: int = 3) -> dict[str, list[tuple[str, float]]]:
        """Per direction, its k labels with the largest |effect|, as (label, effect)."""
        out = {}
        for i, name in enumerate(self.direction_names):
            order = np.argsort(-np.abs(self.effects[i]), kind="stable")[:k]
            out[name] = [(self.label_names[j], float(self.effects[i, j])) for j in order]
        return out

    def suggested_names(self, min_effect: float = 0.1, min_t: float = 3.0) -> list[str]:
        """'pc3:+brightness' for directions whose strongest label passes both thresholds, else the name itself; a
        name that already carries a tag ('pc3:-color_b') is tagged anew from its id ('pc3')."""
        names = []
        t = self.t_stat
        for i, name in enumerate(self.direction_names):
            strength = np.abs(self.effects[i]) if self.label_names else np.array([np.nan])
            j = int(np.nanargmax(strength)) if np.isfinite(strength).any() else 0
            if np.isfinite(strength[j]) and strength[j] >= min_effect and abs(t[i, j]) >= min_t:
                names.append(f"{name.split(':', 1)[0]}:{'+' if self.effects[i, j] > 0 else '-'}"
                             f"{self.label_names[j]}")
            else:
                names.append(name)
        return names

    def select_labels(self, names: Sequence[str]) -> LabelEffects:
        """The same measurement restricted to (and ordered by) `names`."""
        cols = []
        for name in names:
            if name not in self.label_names:
                raise StyleGANDisentangleError(f"no label {name!r}; labels: {self.label_names}")
            cols.append(self.label_names.index(name))
        return replace(self, label_names=list(names), per_unit=self.per_unit[:, cols], stderr=self.stderr[:, cols],
                       label_std=self.label_std[cols], effects=self.effects[:, cols],
                       change_maps={k: v for k, v in self.change_maps.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """JSON-able record: per direction, its effects, per-unit changes and t statistics by label."""
        t = self.t_stat
        return {
            "method": "rendered_edits",
            "n_samples": self.n_samples,
            "label_names": self.label_names,
            "label_std": self.label_std.tolist(),
            "map_labels": sorted(self.change_maps),
            "directions": {
                name: {
                    "step_w": float(self.step_w[i]),
                    "direction_std": None if np.isnan(self.direction_std[i]) else float(self.direction_std[i]),
                    "effects": {lab: float(self.effects[i, j]) for j, lab in enumerate(self.label_names)},
                    "per_unit": {lab: float(self.per_unit[i, j]) for j, lab in enumerate(self.label_names)},
                    "t_stat": {lab: _finite_or_str(t[i, j]) for j, lab in enumerate(self.label_names)},
                }
                for i, name in enumerate(self.direction_names)
            },
        }


def _finite_or_str(x: float) -> float | str:
    return float(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")


def measure_label_effects(
    G: nn.Module,
    ws: Any,
    direction_set: DirectionSet,
    labeler: Any,
    names: Sequence[str] | None = None,
    step: float = 1.0,
    step_unit: str = "sigma",
    direction_std: Sequence[float] | np.ndarray | None = None,
    label_std: Mapping[str, float] | Sequence[float] | np.ndarray | None = None,
    batch_size: int = 32,
    noise_mode: str = "const",
    progress: bool | None = False,
) -> LabelEffects:
    """Render `ws +- step * v_k` for each direction and measure the labels' change per unit step.

    Parameters
    ----------
    ws : `[N, num_ws, w_dim]` base codes (N >= 2 gives standard errors).
    labeler : a labeler (`labels.Labeler`); scalar labels `[N]` and map labels `[N, ...]` (see the module docstring).
    names : directions to measure (default all).
    step, step_unit : the +- step; 'sigma' uses the direction's std (falls back to W units when unknown).
    direction_std : `[K]` std of W along each direction (default: the set's `stds`).
    label_std : `{label: std}` or `[L]` std of each label, e.g. over a latent bank (default: measured on the
        rendered base codes, which needs N >= 2).
    """
    ws = check_ws(ws, G.num_ws, G.w_dim).detach().cpu()
    direction_set.check_fits(G.w_dim, G.num_ws)
    names, dir_std = _checked_directions(direction_set, names, step, step_unit, direction_std)

    def label(batch_ws: torch.Tensor) -> dict[str, torch.Tensor]:
        img = render(G, batch_ws, batch_size, noise_mode) if needs_images(labeler) else None
        return apply_labeler(labeler, img, batch_ws)

    n = ws.shape[0]
    base = label(ws) if label_std is None else None
    per_unit, stderr, step_w = [], [], []
    label_names: list[str] = []
    change_maps: dict[str, list[np.ndarray]] = {}
    disable = (not progress) if progress is not None else None
    for k, name in enumerate(tqdm(names, desc="label effects", disable=disable)):
        use_sigma = step_unit == "sigma" and np.isfinite(dir_std[k]) and dir_std[k] > 0
        s = step * (float(dir_std[k]) if use_sigma else 1.0)
        offset = direction_offset(direction_set, name, G.num_ws)
        out = label(torch.cat([ws + s * offset, ws - s * offset]))
        label_names = list(out)
        row_mean, row_err = _central_differences(out, n, s, change_maps)
        per_unit.append(row_mean)
        stderr.append(row_err)
        step_w.append(s)
    per_unit_a, stderr_a = np.stack(per_unit), np.stack(stderr)
    lab_std = _label_stds(label_std, base, label_names, n)
    scale = np.where(np.isfinite(dir_std), dir_std, 1.0)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):  # a constant label: no effect; an unknown spread: NaN
        effects = np.where(lab_std[None] > 0, per_unit_a * scale / lab_std[None],
                           np.where(np.isnan(lab_std[None]), np.nan, 0.0))
    maps = {lab: np.stack(v) for lab, v in change_maps.items()}
    return LabelEffects(names, label_names, n, np.asarray(step_w), per_unit_a, stderr_a, dir_std, lab_std, effects,
                        maps)


def _checked_directions(direction_set: DirectionSet, names: Sequence[str] | None, step: float, step_unit: str,
                        direction_std: Sequence[float] | np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """The directions to measure (default all; each must be in the set) and W's std along each (the set's `stds`
    unless given; NaN where unknown), after checking the step."""
    names = list(direction_set.names if names is None else [direction_set.resolve_name(n) for n in names])
    if not names:
        raise StyleGANDisentangleError("no directions to measure: `names` selects none of the set's directions")
    if not (np.isfinite(step) and step > 0):
        raise StyleGANDisentangleError(f"step must be a finite positive number, got {step}")
    if step_unit not in ("w", "sigma"):
        raise StyleGANDisentangleError(f"step_unit must be 'w' or 'sigma', got {step_unit!r}")
    if direction_std is None:
        stds = direction_set.stds
        return names, np.array([np.nan if stds is None else float(stds[direction_set.index(n)]) for n in names])
    dir_std = np.asarray(direction_std, dtype=np.float64).reshape(-1)
    if dir_std.size != len(names):
        raise StyleGANDisentangleError(f"direction_std has {dir_std.size} values for {len(names)} directions")
    return names, dir_std


def _central_differences(out: Mapping[str, torch.Tensor], n: int, s: float,
                         change_maps: dict[str, list[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Per label, the mean change per unit step over the n faces of `out` (the +s half, then the -s half) and its
    standard error. A map label keeps its mean change map in `change_maps` and is summarised by root mean squares."""
    row_mean, row_err = [], []
    for lab, values in out.items():
        diff = ((values[:n] - values[n:]) / (2 * s)).double()  # [N] or [N, ...]
        mean = diff.mean(0)
        err = diff.std(0, unbiased=True) / np.sqrt(n) if n > 1 else torch.full_like(mean, float("nan"))
        if diff.ndim > 1:
            change_maps.setdefault(lab, []).append(mean.numpy())
            mean, err = mean.square().mean().sqrt(), err.square().mean().sqrt()
        row_mean.append(float(mean))
        row_err.append(float(err))
    return np.array(row_mean), np.array(row_err)


def _label_stds(label_std: Mapping[str, float] | Sequence[float] | np.ndarray | None,
                base: Mapping[str, torch.Tensor] | None, label_names: list[str], n: int) -> np.ndarray:
    """Each label's std: measured on the base codes' labels `base` when `label_std` is None (NaN for n < 2), else
    read from the mapping or the sequence given, which must cover every label."""
    if label_std is None:
        return np.array([_label_std(base[lab]) if n > 1 else np.nan for lab in label_names])
    if isinstance(label_std, Mapping):
        missing = [lab for lab in label_names if lab not in label_std]
        if missing:
            raise StyleGANDisentangleError(f"label_std has no value for labels {missing}")
        return np.array([float(label_std[lab]) for lab in label_names])
    lab_std = np.asarray(label_std, dtype=np.float64).reshape(-1)
    if lab_std.size != len(label_names):
        raise StyleGANDisentangleError(f"label_std has {lab_std.size} values for labels {label_names}")
    return lab_std


def _label_std(values: torch.Tensor) -> float:
    """Std over samples of a scalar label; for a map, the root mean square over its elements of the per-element std."""
    std = values.double().std(0, unbiased=True)
    return float(std.square().mean().sqrt()) if std.ndim else float(std)


def compare_namings(rendered: LabelEffects, sample_based: Any | None) -> dict[str, dict[str, Any]]:
    """Per direction: the top label by rendered edits and by `directions.name_directions` (when given), and
    whether they agree. `sample_based` is a `DirectionNames` computed for the same directions."""
    out: dict[str, dict[str, Any]] = {}
    top_r = rendered.top_labels(1)
    for name in rendered.direction_names:
        lab, eff = top_r[name][0] if top_r[name] else (None, 0.0)
        entry: dict[str, Any] = {"rendered_top": lab, "rendered_effect": eff}
        if sample_based is not None and name in sample_based.base_names:
            j = sample_based.base_names.index(name)
            s_lab, s_eff = sample_based.table[j][0]
            entry.update(sample_top=s_lab, sample_effect=float(s_eff),
                         agree=bool(s_lab == lab and np.sign(s_eff) == np.sign(eff)))
        out[name] = entry
    return out
