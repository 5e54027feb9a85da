"""find-directions end to end: checkpoint -> latent bank (+ labels) -> direction finder -> named DirectionSet,
edit grid, plots and report.

Files written into `outdir`:

    config.json                 arguments, checkpoint path + sha256, seed, package version
    bank/                       the LatentBank (w, seeds, labels; resumable; reused when re-run with the same args)
    directions.npz/.json        the DirectionSet (see directions.DirectionSet)
    boundaries/boundary_*.npy   one InterFaceGAN-style boundary per direction ([1, w_dim]); boundaries/layers.json
                                the ws indices each one is meant for (see DirectionSet.export_interfacegan)
    edit_grid.png               rows = directions, columns = steps (in stds of W along each direction)
    cosine_similarity.png/.json direction cosine similarities
    label_effects.png/.json     rendered-edit label change per direction (label stds per direction std)
    w_pca.png/.npz, w_umap.png/.npz   W scatter coloured by a label
    report.json                 per direction: name, label effects (rendered and sample-based), variance, ...
    footprint_sheet.png         (--method 3d-coupled) each localized direction's footprint next to its edit strip
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..directions import (
    ClosedFormDirections,
    DirectionSet,
    LinearDirections,
    PCADirections,
    SparseDirections,
    ThreeDCoupledDirections,
    name_directions,
)
from ..errors import LatentError, StyleGANDisentangleError, UsageError
from ..labels import check_crop, get_labelers
from ..labels.decomposer.labeler import check_light_mask
from ..labels.decomposer.view_leak import VIEW_LEAK_SAMPLES, ViewLeakError
from ..latents import LatentBank
from ..utils import atomic_write
from ._run import Timer, load_generator, run_header, write_json
from .edit import edit, render
from .effects import compare_namings, measure_label_effects
from .footprints import plot_footprint_sheet
from .plots import plot_cosine_similarity, plot_edit_grid, plot_label_effects, plot_w_embedding
from .sensitivity import SENSITIVITY_SAMPLES, sensitivities

__all__ = ["ATOM_SCOPES", "LOSSES", "METHODS", "FindDirectionsResult", "bank_sensitivity", "bank_view_leak",
           "method_options", "resolve_decomposer", "run_find_directions"]

logger = logging.getLogger(__name__)

METHODS = ("pca", "closed-form", "linear", "sparse", "3d-coupled")
SUPERVISED = ("linear", "sparse")
NAMED = ("linear", "sparse", "3d-coupled")  # methods whose directions come named (no renaming by default)
ATOM_SCOPES = ("parts", "map", "map+parts")  # --atom-scope (ThreeDCoupledDirections' atom_scope)
ALBEDO_SOURCES = ("image", "net")  # --albedo-source (ThreeDCoupledDirections' albedo_source)
LOSSES = ("squared", "huber")  # --loss


@dataclass
class FindDirectionsResult:
    """What `run_find_directions` produced: the set, the report dict, and the written files by role."""

    direction_set: DirectionSet
    report: dict[str, Any]
    files: dict[str, str]
    outdir: Path


def _canonical_method(method: str) -> str:
    m = method.strip().lower().replace("_", "-")
    if m == "closedform" or m == "sefa":
        m = "closed-form"
    if m in ("3d", "3dcoupled", "3d-coupled-sparse"):
        m = "3d-coupled"
    if m not in METHODS:
        raise StyleGANDisentangleError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return m


def _replace_set(ds: DirectionSet, **changes: Any) -> DirectionSet:
    fields = dict(names=ds.names, vectors=ds.vectors, layers=ds.layers, step_ranges=ds.step_ranges,
                  method=ds.method, params=ds.params, checkpoint_sha256=ds.checkpoint_sha256,
                  n_samples=ds.n_samples, seed=ds.seed, extras=ds.extras, info=ds.info)
    fields.update(changes)
    return DirectionSet(**fields)


def method_options(method: str, atom_scope: str | None = None, n_atoms: int | None = None, loss: str | None = None,
                   decomposer: str | os.PathLike | None = None,
                   sensitivity_samples: int | None = None, conditions: str | None = None,
                   decomposer_crop: Sequence[float] | None = None,
                   decomposer_light_mask: Sequence[float] | bool | None = None,
                   albedo_source: str | None = None, view_leak_samples: int | None = None) -> dict[str, Any]:
    """The finder's constructor arguments (`method_kwargs`) for the command-line options --atom-scope, --n-atoms,
    --loss, --conditions ('auto' / 'none') and --albedo-source (those not None). Raises UsageError naming an option
    that does not apply to `method` (--decomposer, --sensitivity-samples, --view-leak-samples, --decomposer-crop
    and --decomposer-light-mask included: they go to `run_find_directions`, not to the finder) or a value out of
    range."""
    method = _canonical_method(method)
    out: dict[str, Any] = {}
    if decomposer is not None and method != "3d-coupled":
        raise UsageError(f"--decomposer applies to --method 3d-coupled only (got --method {method}); use --labeler "
                         "for the other methods")
    if decomposer_crop is not None and method != "3d-coupled":
        raise UsageError(f"--decomposer-crop applies to --method 3d-coupled only (got --method {method})")
    if decomposer_light_mask is not None and method != "3d-coupled":
        raise UsageError(f"--decomposer-light-mask applies to --method 3d-coupled only (got --method {method})")
    if sensitivity_samples is not None:
        _check_samples_option(method, sensitivity_samples, "--sensitivity-samples", "--method ")
    if view_leak_samples is not None:
        _check_samples_option(method, view_leak_samples, "--view-leak-samples", "--method ", "no view leak")
    if atom_scope is not None:
        out["atom_scope"] = _three_d_choice(method, "--atom-scope", atom_scope, ATOM_SCOPES)
    if n_atoms is not None:
        if method != "3d-coupled":
            raise UsageError("--n-atoms applies to --method 3d-coupled only")
        if isinstance(n_atoms, bool) or not isinstance(n_atoms, int) or n_atoms < 1:
            raise UsageError(f"--n-atoms must be an integer >= 1; got {n_atoms!r}")
        out["n_atoms"] = n_atoms
    if loss is not None:
        if method not in ("linear", "3d-coupled"):
            raise UsageError("--loss applies to --method linear and 3d-coupled only")
        if loss not in LOSSES:
            raise UsageError(f"--loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        out["loss" if method == "linear" else "global_loss"] = loss
    if conditions is not None:
        # 'none': no holds at all
        held = _three_d_choice(method, "--conditions", conditions, ("auto", "none")) == "auto"
        out["conditions"] = out["soft_conditions"] = out["part_conditions"] = "auto" if held else None
    if albedo_source is not None:
        out["albedo_source"] = _three_d_choice(method, "--albedo-source", albedo_source, ALBEDO_SOURCES)
    return out


def _three_d_choice(method: str, option: str, value: str, choices: Sequence[str]) -> str:
    """`value` of a 3d-coupled option with a fixed set of `choices`; UsageError for another method or value."""
    if method != "3d-coupled":
        raise UsageError(f"{option} applies to --method 3d-coupled only")
    if value not in choices:
        raise UsageError(f"{option} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _check_samples_option(method: str, value: Any, option: str, method_word: str,
                          zero: str = "no metric") -> None:
    """UsageError unless `value` is an integer >= 0 and `method` is 3d-coupled (the only one that uses it); `zero`
    says what 0 means."""
    if method != "3d-coupled":
        raise UsageError(f"{option} applies to {method_word}3d-coupled only (got {method_word}{method})")
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise UsageError(f"{option} must be an integer >= 0 (0: {zero}), got {value!r}")


def _is_shipped_synthetic(path: str | os.PathLike) -> bool:
    from ..synthetic.checkpoint import SYNTHETIC_CHECKPOINT

    return Path(path).resolve() == SYNTHETIC_CHECKPOINT.resolve()


def resolve_decomposer(decomposer: str | os.PathLike | None, checkpoint_path: str | os.PathLike) -> str:
    """The decomposer to use on a network (`--method 3d-coupled`, `decompose`, `export-augmentation`): the one given,
    the shipped 'synthetic' one for the shipped synthetic checkpoint, else an error saying how to train one."""
    if decomposer:
        return str(decomposer)
    if _is_shipped_synthetic(checkpoint_path):
        return "synthetic"
    raise StyleGANDisentangleError(
        f"no 3D decomposer is known for {checkpoint_path}: pass --decomposer PATH (an Unsup3D "
        f"checkpoint) or train one on this network with `stylegan-disentangle train-decomposer {checkpoint_path} "
        "--steps 3000 --outdir DIR` and pass --decomposer DIR/checkpoint.pth")


def _decomposer_labeler(spec: str, device: torch.device, crop: Sequence[float] | None = None,
                        light_mask: Sequence[float] | bool | None = None) -> Any:
    """The decomposer3d labeler with scalars, depth and albedo (the confidence map is not needed here)."""
    from ..labels.decomposer.labeler import decomposer_labeler

    return decomposer_labeler(spec, maps=True, device=device, confidence=False, crop=crop, light_mask=light_mask)


def _synthetic_part_masks(bank: LatentBank, resolution: int, n: int = 256,
                          crop: Sequence[float] | None = None) -> tuple[np.ndarray, list[str]] | None:
    """Mean canonical part masks `[P, R, R]` of the synthetic world's faces behind the first bank rows (None when
    the world's files are missing). With the decomposer's input `crop`, the masks are cut to the same box, as its
    maps are: rendered at the resolution that makes the box `resolution` pixels wide, then cut."""
    from ..labels.base import check_crop, crop_images, resize_images
    from ..synthetic import PART_NAMES
    from ..synthetic.checkpoint import oracle_labeler

    try:
        oracle = oracle_labeler()
    except StyleGANDisentangleError as exc:
        logger.warning("the synthetic world's part masks cannot be read (%s): the 3d-coupled directions are named "
                       "after fixed regions of the canonical face (forehead, eyes, nose, ...), not the world's parts",
                       exc)
        return None
    box = check_crop(crop)
    full = resolution if box is None else int(np.ceil(resolution / min(box[2], box[3])))
    with torch.no_grad():
        masks = oracle.intrinsics(bank.ws(np.arange(min(n, len(bank)))), resolution=full)["canonical_masks"]
        masks = resize_images(crop_images(masks.float(), box), resolution)
    return masks.mean(0).numpy(), list(PART_NAMES)


def _fit(method: str, bank: LatentBank, G: torch.nn.Module, labels: dict[str, np.ndarray], k: int, seed: int,
         method_kwargs: dict[str, Any], part_masks: tuple[np.ndarray, list[str]] | None = None,
         w_metric: np.ndarray | None = None, w_chroma: np.ndarray | None = None,
         label_leaks: dict[str, dict[str, float]] | None = None) -> Any:
    w = bank.w
    if method == "3d-coupled":
        kwargs = dict(global_labels=sorted(labels, key=list(bank.labels).index), random_state=seed)
        kwargs.update(method_kwargs)
        maps = {k_: bank.labels[k_] for k_ in ("depth", "albedo", "image_albedo") if k_ in bank.labels}
        masks, names = part_masks if part_masks is not None else (None, None)
        return ThreeDCoupledDirections(**kwargs).fit(w, {**labels, **maps}, part_masks=masks, part_names=names,
                                                     w_metric=w_metric, w_chroma=w_chroma, label_leaks=label_leaks)
    if method == "pca":
        kwargs = dict(n_components=min(k, w.shape[0], w.shape[1]), random_state=seed,
                      incremental=w.shape[0] * w.shape[1] > 2**29)  # > 2 GB of float32: stream it
        kwargs.update(method_kwargs)
        return PCADirections(**kwargs).fit(w)
    if method == "closed-form":
        kwargs = dict(n_components=min(k, G.w_dim))
        kwargs.update(method_kwargs)
        return ClosedFormDirections(**kwargs).fit(G)
    if not labels:
        raise StyleGANDisentangleError(f"method {method!r} is supervised: it needs a labeler with labels that vary "
                                       "(--labeler image_stats, or your own)")
    if method == "linear":
        kwargs = dict(random_state=seed)
        kwargs.update(method_kwargs)
        return LinearDirections(**kwargs).fit(w, labels)
    kwargs = dict(method="lasso", random_state=seed)
    kwargs.update(method_kwargs)
    return SparseDirections(**kwargs).fit(w, labels)


def _std_along(w: np.ndarray, vectors: np.ndarray, max_rows: int = 100_000, seed: int = 0) -> np.ndarray:
    n = w.shape[0]
    rows = np.arange(n) if n <= max_rows else np.sort(np.random.default_rng(seed).choice(n, max_rows, False))
    return (np.asarray(w[rows], dtype=np.float64) @ vectors.astype(np.float64).T).std(axis=0)


def bank_sensitivity(G: Any, bank: LatentBank, samples: int, resolution: int, noise_mode: str = "const",
                     progress: bool | None = None, crop: Sequence[float] | None = None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
    """The generator's image and chroma sensitivities (`analysis.sensitivity.sensitivities`) over the bank's first
    `samples` latents, kept in the bank's folder.

    They are fixed by the generator, the latents averaged over, the pooled resolution and the noise mode; the file
    names carry all four (a digest of the bank's generator fingerprint and of those rows of w), so a later run on
    the same bank (another method setting, `--bank-dir`) reads them back instead of repeating the
    `samples x (w_dim + 1)` syntheses, which on a 512-wide W cost about 40 % of a 20k bank, while a bank folder
    re-created with another seed or generator (`overwrite=True` keeps other files) gets new ones. A cached file of
    the wrong shape or with NaN is recomputed. `crop`: the part of the image measured (the decomposer's input crop;
    it enters the digest). The chroma sensitivity is None for a generator that is not RGB.
    """
    rows = min(int(samples), len(bank))
    digest = hashlib.sha256(str(bank.meta.get("generator_fingerprint")).encode())
    digest.update(np.ascontiguousarray(bank.w[:rows], dtype=np.float32).tobytes())
    if crop is not None:
        digest.update(f"crop={[float(v) for v in crop]}".encode())
    stem = f"n{rows}_r{int(resolution)}_{noise_mode}_{digest.hexdigest()[:12]}.npy"
    paths = (Path(bank.root) / f"sensitivity_{stem}", Path(bank.root) / f"chroma_{stem}")
    rgb = int(getattr(G, "img_channels", 3)) == 3
    cached = [_cached_gram(path, G.w_dim) for path in paths[:1 + rgb]]
    if all(c is not None for c in cached):
        return cached[0], cached[1] if rgb else None
    grams = sensitivities(G, bank.w[:rows], resolution=int(resolution), noise_mode=noise_mode, progress=progress,
                          crop=crop)
    for path, gram in zip(paths, grams):
        if gram is None:
            continue
        try:
            with atomic_write(path, "wb") as f:
                np.save(f, gram)
        except OSError as exc:  # a read-only bank folder: the run goes on, a later one measures it again
            logger.warning("could not keep the image sensitivity in %s (%s)", path, exc)
    return grams


def bank_view_leak(G: Any, bank: LatentBank, lab: Any, samples: int, noise_mode: str = "const",
                   batch_size: int = 64, names: Sequence[str] | None = None) -> dict[str, dict[str, float]] | None:
    """How much of the view the decomposer labeler `lab`'s light readings take in (`DecomposerLabeler.view_leak`),
    measured on the bank's first `samples` faces, rendered again, restricted to the labels in `names` (default:
    the bank's; a constant label is not fitted, so it can be neither a leak nor its source); None when `lab`
    cannot measure it or nothing is left (or, with a warning, when the decomposer's rotation readings do not follow
    its own re-renders). Cheap (about 3 s for 512 faces at 32x32 on two cores), so not kept."""
    if not hasattr(lab, "view_leak"):
        return None
    faces = render(G, bank.ws(np.arange(min(int(samples), len(bank)))), batch_size, noise_mode).clamp(-1, 1)
    known = set(bank.labels if names is None else names)
    try:
        leaks = lab.view_leak(faces)
    except ViewLeakError as exc:  # e.g. a decomposer trained for a few steps: fit without the correction
        logger.warning("no view leak correction: %s", exc)
        return None
    leaks = {k: {a: s for a, s in v.items() if a in known} for k, v in leaks.items() if k in known}
    return {k: v for k, v in leaks.items() if v} or None


def _cached_gram(path: Path, w_dim: int) -> np.ndarray | None:
    """A kept sensitivity, or None when there is none or it is damaged (then measured again, with a warning)."""
    if not path.is_file():
        return None
    try:
        cached = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:  # a truncated or foreign file: measured again
        logger.warning("ignoring the unreadable cached image sensitivity %s (%s); measuring it again", path, exc)
        return None
    if cached.shape == (w_dim, w_dim) and np.isfinite(cached).all():
        return cached.astype(np.float64)
    logger.warning("ignoring the cached image sensitivity %s (shape %s, or not finite); measuring it again",
                   path, cached.shape)
    return None


def _check_run_args(method: str, samples: int, decomposer: Any, decomposer_crop: Any, decomposer_light_mask: Any,
                    sensitivity_samples: int | None, method_kwargs: dict[str, Any] | None, grid_sample: int,
                    grid_sigmas: float, **counts: int) -> tuple[Any, Any, int | None]:
    """`run_find_directions`' settings checked before anything is loaded or written (UsageError naming the
    option); returns the checked decomposer crop and light mask and the sensitivity samples (the 3d-coupled
    default filled in). `counts`: the integer options and their values."""
    if decomposer is not None and method != "3d-coupled":  # it would be ignored, yet recorded in config.json
        raise UsageError(f"decomposer applies to method '3d-coupled' only (got {method!r}); pass a labeler instead")
    if decomposer_crop is not None:
        if method != "3d-coupled":
            raise UsageError(f"decomposer_crop applies to method '3d-coupled' only (got {method!r})")
        try:
            decomposer_crop = check_crop(decomposer_crop)
        except ValueError as exc:
            raise UsageError(f"decomposer_crop: {exc}") from None
    if decomposer_light_mask is not None:
        if method != "3d-coupled":
            raise UsageError(f"decomposer_light_mask applies to method '3d-coupled' only (got {method!r})")
        try:
            decomposer_light_mask = check_light_mask(decomposer_light_mask) or False  # False: asked for none
        except ValueError as exc:
            raise UsageError(f"decomposer_light_mask: {exc}") from None
    if samples < 3:
        raise StyleGANDisentangleError(f"samples must be >= 3, got {samples}")
    least_of = {"num_directions": 1, "batch_size": 1, "effect_samples": 1, "grid_steps": 1, "grid_max_rows": 1,
                "embed_max_points": 2}
    for option, value, least in [*((k, v, least_of[k]) for k, v in counts.items()), ("grid_sample", grid_sample, 0)]:
        if isinstance(value, bool) or int(value) != value or value < least:  # before any file is written
            raise UsageError(f"{option} must be an integer >= {least}, got {value!r}")
    lasso_codes = (method_kwargs or {}).get("code_regression") == "lasso"  # a Lasso fit takes no metric
    if sensitivity_samples is not None:
        _check_samples_option(method, sensitivity_samples, "sensitivity_samples", "method ")
        if sensitivity_samples and lasso_codes:
            raise UsageError("code_regression='lasso' does not combine with the image-sensitivity prior; pass "
                             "sensitivity_samples=0 or code_regression='auto' / 'ridge'")
    elif method == "3d-coupled":
        sensitivity_samples = 0 if lasso_codes else SENSITIVITY_SAMPLES
    if grid_sample >= samples:
        raise UsageError(f"grid_sample must be a bank sample, 0 to {samples - 1}; got {grid_sample}")
    if not (math.isfinite(grid_sigmas) and grid_sigmas > 0):
        raise UsageError(f"grid_sigmas must be a finite number > 0, got {grid_sigmas}")
    return decomposer_crop, decomposer_light_mask, sensitivity_samples


def _bank_labels(bank: LatentBank, lab: Any) -> tuple[dict[str, np.ndarray], dict[str, float], list[str]]:
    """The bank's varying scalar labels, every label's spread (scalars: std; maps: RMS over elements of the
    per-element std, as effects.py measures them) and the constant labels (logged, then ignored); a LatentError
    naming the bank for NaN or inf."""
    labels_all = {k: np.asarray(v) for k, v in bank.labels.items() if v.ndim == 1}
    for k, v in labels_all.items():  # NaN would make the label's std NaN, i.e. look constant and be dropped
        bad_rows = int(np.count_nonzero(~np.isfinite(v)))
        if bad_rows:
            raise LatentError(f"label {k!r} of the bank {bank.root} contains NaN or inf in {bad_rows} of {len(v)} "
                              "rows; fix the labeler and re-create the bank (delete that folder)")
    label_std = {k: float(np.std(v)) for k, v in labels_all.items()}
    for k, v in bank.labels.items():  # map labels: RMS over elements of the per-element std (as effects.py does)
        if v.ndim > 1:
            label_std[k] = float(np.sqrt(np.mean(np.asarray(v[:4096], dtype=np.float64).std(axis=0) ** 2)))
            if not np.isfinite(label_std[k]):
                raise LatentError(f"map label {k!r} of the bank {bank.root} contains NaN or inf (in its first "
                                  f"{min(len(v), 4096)} rows); fix the labeler and re-create the bank")
    constant = sorted(k for k, s in label_std.items() if not s > 0)
    labels = {k: v for k, v in labels_all.items() if k not in constant}
    if constant:  # a label the labeler pins by construction (the decomposer's tz with no z range) is no news
        ranges = getattr(lab, "value_ranges", None) or {}
        pinned = [k for k in constant if k in ranges and ranges[k][0] == ranges[k][1]]
        if pinned:
            logger.info("labels %s are fixed by the labeler (an empty value range) and are ignored", pinned)
        if len(pinned) < len(constant):
            logger.warning("labels %s are constant over the bank and are ignored",
                           [k for k in constant if k not in pinned])
    return labels, label_std, constant


def _name(ds: DirectionSet, G: Any, bank: LatentBank, labels: dict[str, np.ndarray], lab: Any,
          label_std: dict[str, float], timer: Timer, method: str, rename: bool | None, effect_samples: int,
          batch_size: int, noise_mode: str, progress: bool | None) -> tuple[DirectionSet, Any, Any, list[str]]:
    """The labels each direction goes with, on the bank's samples and rendered (`measure_label_effects`), and, when
    asked (default: the unnamed methods), the directions renamed after the labels they change most. Returns the set,
    the two namings (None without labels) and the names before renaming."""
    sample_names = rendered = None
    if labels:
        with timer("name_samples"):
            sample_names = name_directions(ds, bank.w, labels)
            ds = sample_names.apply(ds, rename=False)
        with timer("name_rendered"):
            rows = np.arange(min(int(effect_samples), len(bank)))
            # only the scalar labels name directions: a decomposer can skip its map nets here
            effect_lab = lab.scalars_only() if hasattr(lab, "scalars_only") else lab
            rendered = measure_label_effects(
                G, bank.ws(rows), ds, effect_lab, step=1.0, step_unit="sigma", batch_size=max(8, batch_size // 4),
                label_std=label_std, noise_mode=noise_mode, progress=progress).select_labels(list(labels))
        info = dict(ds.info)
        info["label_effects_rendered"] = {n: [[lab_, float(e)] for lab_, e in top]
                                          for n, top in rendered.top_labels(3).items()}
        ds = _replace_set(ds, extras=dict(ds.extras, label_effects_rendered=rendered.effects.astype(np.float32)),
                          info=info)
    do_rename = (method not in NAMED) if rename is None else rename
    original_names = list(ds.names)
    if do_rename and rendered is not None:
        suggested = rendered.suggested_names()
        mapping = {old: new for old, new in zip(ds.names, suggested) if new != old}
        if mapping:
            ds = ds.rename(mapping)
            ds = _replace_set(ds, info=dict(ds.info, original_names={v: k for k, v in mapping.items()}))
    return ds, sample_names, rendered, original_names


def run_find_directions(
    pkl: str | os.PathLike,
    method: str = "pca",
    samples: int = 10_000,
    labeler: str | Any | None = "image_stats",
    outdir: str | os.PathLike = "find_directions_out",
    seed: int = 0,
    truncation_psi: float = 1.0,
    truncation_cutoff: int | None = None,
    device: str | torch.device = "auto",
    num_directions: int = 10,
    batch_size: int = 256,
    network: str = "G_ema",
    method_kwargs: dict[str, Any] | None = None,
    rename: bool | None = None,
    effect_samples: int = 32,
    grid_steps: int = 7,
    grid_sigmas: float = 3.0,
    grid_sample: int = 0,
    grid_max_rows: int = 12,
    umap: bool = True,
    embed_max_points: int = 5000,
    color_by: str | None = None,
    bank_dir: str | os.PathLike | None = None,
    noise_mode: str = "const",
    progress: bool | None = None,
    decomposer: str | os.PathLike | None = None,
    sensitivity_samples: int | None = None,
    decomposer_crop: Sequence[float] | None = None,
    decomposer_light_mask: Sequence[float] | bool | None = None,
    view_leak_samples: int | None = None,
    overwrite_bank: bool = False,
) -> FindDirectionsResult:
    """Find, name, plot and save W directions of a checkpoint (see the module docstring for the files).

    Parameters
    ----------
    pkl : network pickle path, URL or known name.
    method : 'pca' | 'closed-form' | 'linear' | 'sparse' (these two need labels) | '3d-coupled' (labels from a 3D
        decomposer: named view / light directions and localized depth / albedo directions, no labeler needed).
    samples : latent bank size N.
    labeler : registered labeler name(s) ("a,b"), a "module:attribute" factory, a labeler object, or None / 'none'.
    num_directions : K for pca / closed-form (supervised methods give one direction per label).
    method_kwargs : extra constructor arguments of the finder.
    rename : name directions after the label they change most (default: yes for pca / closed-form).
    effect_samples : base codes per direction for the rendered label-effect measurement.
    grid_* : the edit grid (columns = `grid_steps` steps over +-`grid_sigmas` stds, base = bank sample `grid_sample`).
    umap : also draw the UMAP scatter (numba compiles UMAP on first use: ~10 s once per process).
    decomposer : '3d-coupled' only: 'synthetic' (the shipped decomposer; the default for the shipped checkpoint) or
        an Unsup3D checkpoint path; it replaces `labeler`.
    sensitivity_samples : '3d-coupled' only: bank samples over which the generator's image sensitivity (the mean Gram
        of its Jacobian, `analysis.sensitivity.image_sensitivity`, each sample costs w_dim + 1 syntheses) is
        estimated; it is the prior covariance of the regressions (`ThreeDCoupledDirections.fit(w_metric=...)`).
        Default 16 (0 with `method_kwargs={'code_regression': 'lasso'}`); 0 fits without it (plain ridge / Lasso).
        The estimate is kept in the bank's folder (`bank_sensitivity`) and read back by later runs on that bank.
    decomposer_crop : '3d-coupled' only: (top, left, height, width), fractions of the image, the part of each image
        the decomposer reads (and the sensitivity measures), e.g. the face box an official decomposer was trained
        on; None: the decomposer's own `input_crop` (one trained with a crop), else the whole image. config.json
        records the crop used.
    decomposer_light_mask : '3d-coupled' only: (top, left, height, width), fractions of the (cropped) image, a box
        the decomposer's light network does not see, e.g. the hair above the face (`Unsup3DDecomposer`'s
        `light_mask`); None: the decomposer's own (the shipped synthetic one has one), False: none. config.json
        records the mask used.
    view_leak_samples : '3d-coupled' only: faces of the bank on which the decomposer measures how much of the view
        its light readings take in, on its own re-renders (`DecomposerLabeler.view_leak`); the fit removes that
        share of the rotation readings from the light labels (`ThreeDCoupledDirections.fit(label_leaks=...)`).
        Default 512; 0: none.
    overwrite_bank : discard a bank already in `bank_dir` (default `outdir/bank`) that was made with other arguments
        (another seed, labeler, decomposer or network) and build it again; by default such a bank is refused with
        a LatentError, and a bank made with the same arguments is resumed or reused either way.
    """
    method = _canonical_method(method)
    outdir = Path(outdir)
    decomposer_crop, decomposer_light_mask, sensitivity_samples = _check_run_args(
        method, samples, decomposer, decomposer_crop, decomposer_light_mask, sensitivity_samples, method_kwargs,
        grid_sample, grid_sigmas, num_directions=num_directions, batch_size=batch_size,
        effect_samples=effect_samples, grid_steps=grid_steps, grid_max_rows=grid_max_rows,
        embed_max_points=embed_max_points)
    if view_leak_samples is not None:
        _check_samples_option(method, view_leak_samples, "view_leak_samples", "method ", "no view leak")
    elif method == "3d-coupled":
        view_leak_samples = VIEW_LEAK_SAMPLES
    if method == "3d-coupled":
        labeler = "none"  # the decomposer is the labeler
    lab = get_labelers(labeler) if isinstance(labeler, str) or labeler is None else labeler
    if method in SUPERVISED and lab is None:
        raise StyleGANDisentangleError(f"method {method!r} is supervised and needs a labeler (e.g. image_stats)")
    timer = Timer()
    files: dict[str, str] = {}
    with timer("load"):
        G, _, provenance = load_generator(pkl, device, network)
        if method == "3d-coupled":
            decomposer, lab, method_kwargs = _load_decomposer_labeler(
                G, provenance, decomposer, decomposer_crop, decomposer_light_mask, method_kwargs)
        _warn_of_foreign_decomposers(lab, G, decomposer if method == "3d-coupled" else None,
                                     provenance["checkpoint_path"])
    outdir.mkdir(parents=True, exist_ok=True)  # only now: a network or decomposer that cannot be read leaves nothing
    args = dict(pkl=str(pkl), method=method, samples=int(samples), labeler=labeler if isinstance(labeler, str)
                else (None if lab is None else type(lab).__name__), seed=int(seed),
                truncation_psi=float(truncation_psi), truncation_cutoff=truncation_cutoff, device=str(device),
                num_directions=int(num_directions), batch_size=int(batch_size), network=network,
                method_kwargs=method_kwargs or {}, rename=rename, effect_samples=int(effect_samples),
                grid_steps=int(grid_steps), grid_sigmas=float(grid_sigmas), grid_sample=int(grid_sample),
                umap=bool(umap), embed_max_points=int(embed_max_points), color_by=color_by,
                bank_dir=None if bank_dir is None else str(bank_dir), noise_mode=noise_mode,
                decomposer=None if decomposer is None else str(decomposer),
                sensitivity_samples=sensitivity_samples, view_leak_samples=view_leak_samples,
                decomposer_crop=list(lab.crop) if method == "3d-coupled" and lab.crop is not None else None,
                **({"decomposer_light_mask": None if lab.light_mask is None else list(lab.light_mask)}
                   if method == "3d-coupled" else {}))
    config = run_header("find-directions", args)
    config.update(provenance)

    with timer("bank"):
        bank = LatentBank.create(
            G, bank_dir or outdir / "bank", samples, seed=seed, truncation_psi=truncation_psi,
            truncation_cutoff=truncation_cutoff, labelers=[lab] if lab is not None else [], batch_size=batch_size,
            noise_mode=noise_mode, checkpoint_sha256=provenance["checkpoint_sha256"], progress=progress,
            overwrite=overwrite_bank)
    # only now: a bank refused for other arguments leaves the last run's config.json beside its results
    files["config"] = str(write_json(outdir / "config.json", config))
    files["bank"] = str(bank.root)
    labels, label_std, constant = _bank_labels(bank, lab)
    if color_by is not None and color_by not in labels:  # checked before the fit and the plots, not after
        raise StyleGANDisentangleError(f"color_by {color_by!r} is not a (varying) label; labels: {sorted(labels)}")

    priors = (None, None, None, None)
    if method == "3d-coupled":
        priors = _three_d_coupled_priors(G, bank, lab, provenance, list(labels), timer, sensitivity_samples,
                                         view_leak_samples, noise_mode, batch_size, progress)
    with timer("fit"):
        est = _fit(method, bank, G, labels, int(num_directions), int(seed), dict(method_kwargs or {}), *priors)
    ds = _fitted_direction_set(est, bank, provenance, samples, seed, grid_sigmas,
                               {"truncation_psi": float(truncation_psi), "truncation_cutoff": truncation_cutoff,
                                "checkpoint": str(pkl)})
    ds, sample_names, rendered, original_names = _name(
        ds, G, bank, labels, lab, label_std, timer, method, rename, effect_samples, batch_size, noise_mode, progress)
    npz, js = ds.save(outdir / "directions")
    files.update(directions_npz=str(npz), directions_json=str(js))
    files["boundaries"] = str(outdir / "boundaries")
    ds.export_interfacegan(outdir / "boundaries", replace=True)  # a rerun's set replaces the last one's

    with timer("plots"):
        files.update(_plots(G, bank, ds, rendered, labels, outdir, grid_steps, grid_sigmas, grid_sample,
                            grid_max_rows, umap, embed_max_points, color_by, seed, noise_mode))

    report = _report(ds, est, original_names, sample_names, rendered, provenance, args, timer, constant, files)
    files["report"] = str(outdir / "report.json")
    report["files"] = files
    write_json(outdir / "report.json", report)
    return FindDirectionsResult(ds, report, files, outdir)


def _three_d_coupled_priors(G, bank, lab, provenance, label_names, timer, sensitivity_samples, view_leak_samples,
                            noise_mode, batch_size, progress):
    """'3d-coupled': what its fit reads besides the labels: the world's part masks (the shipped synthetic checkpoint
    only), the generator's image sensitivity (`w_metric`, `w_chroma`) and the light readings' view leak."""
    part_masks = w_metric = w_chroma = label_leaks = None
    if _is_shipped_synthetic(provenance["checkpoint_path"]):  # the world's part masks
        part_masks = _synthetic_part_masks(bank, int(lab.input_resolution), crop=lab.crop)
    synthesis_noise = "none" if noise_mode == "none" else "const"
    if sensitivity_samples:
        with timer("sensitivity"):
            w_metric, w_chroma = bank_sensitivity(G, bank, int(sensitivity_samples), int(lab.input_resolution),
                                                  synthesis_noise, progress, lab.crop)
    if view_leak_samples:
        with timer("view leak"):
            label_leaks = bank_view_leak(G, bank, lab, int(view_leak_samples), synthesis_noise, int(batch_size),
                                         label_names)
    return part_masks, w_metric, w_chroma, label_leaks


def _load_decomposer_labeler(G, provenance, decomposer, crop, light_mask, method_kwargs):
    """'3d-coupled': the decomposer (named or the checkpoint's default), its labeler on G's device, and the method's
    kwargs with `taught_light` set from it unless given: a netL taught by a latent light teacher reads the light as
    already held (its 'auto' conditions)."""
    decomposer = resolve_decomposer(decomposer, provenance["checkpoint_path"])
    lab = _decomposer_labeler(decomposer, next(G.parameters()).device, crop, light_mask)
    return decomposer, lab, {"taught_light": lab.taught_light, **(method_kwargs or {})}


def _warn_of_foreign_decomposers(lab: Any, G: torch.nn.Module, name: Any, pkl: Any) -> None:
    """`warn_if_trained_on_another` for each decomposer among the labelers (3d-coupled's, named `name`, or --labeler
    decomposer3d's, named by its file)."""
    from ..labels.decomposer.labeler import warn_if_trained_on_another

    for one in getattr(lab, "labelers", [lab]):
        if getattr(one, "decomposer", None) is not None:
            warn_if_trained_on_another(one.decomposer, G, name or f"{one.decomposer.source} (labeler decomposer3d)",
                                       pkl)


def _fitted_direction_set(est, bank, provenance, samples, seed, grid_sigmas, info) -> DirectionSet:
    """The fitted finder's DirectionSet, each step range +-`grid_sigmas` of the bank's spread along the direction
    (the finder's `std_`, else measured on the bank and kept as the extra 'std')."""
    std = getattr(est, "std_", None)
    extras: dict[str, np.ndarray] = {}
    if std is None:
        std = _std_along(bank.w, est.directions_, seed=seed)
        extras["std"] = std.astype(np.float32)
    return est.to_direction_set(
        checkpoint_sha256=provenance["checkpoint_sha256"], n_samples=int(samples), seed=int(seed),
        step_ranges=[(-grid_sigmas * float(s), grid_sigmas * float(s)) for s in std], extras=extras, info=info)


def _plots(G, bank, ds, rendered, labels, outdir, grid_steps, grid_sigmas, grid_sample, grid_max_rows, umap,
           embed_max_points, color_by, seed, noise_mode) -> dict[str, str]:
    files = {}
    names = ds.names[:grid_max_rows]
    sigmas = np.linspace(-grid_sigmas, grid_sigmas, grid_steps)
    base = bank.ws([min(grid_sample, len(bank) - 1)])
    rows = []
    for name in names:
        _, img = edit(G, base, ds, name, sigmas, step_unit="sigma", return_images=True, noise_mode=noise_mode)
        rows.append(img[:, 0])
    grid = torch.stack(rows)  # [K, S, C, H, W]
    files["edit_grid"] = str(plot_edit_grid(
        grid, outdir / "edit_grid.png", row_labels=names, col_labels=[f"{s:+.1f}σ" for s in sigmas],
        title=f"{ds.method} directions, bank sample {grid_sample} (seed {int(bank.seeds[grid_sample])})"))
    files["cosine_similarity"] = str(plot_cosine_similarity(ds, outdir / "cosine_similarity.png"))
    if "footprint" in ds.extras:
        files["footprint_sheet"] = str(_footprint_sheet(G, base, ds, sigmas, outdir, noise_mode, grid_max_rows))
    if rendered is not None:
        files["label_effects"] = str(plot_label_effects(
            rendered.effects, outdir / "label_effects.png", ds.names, rendered.label_names,
            title=f"label change per direction (rendered edits, {rendered.n_samples} samples)"))
    if labels:
        cname = color_by or next(iter(labels))
        color = labels[cname]
    else:
        cname = f"projection on {ds.names[0]}"
        color = np.asarray(bank.w) @ ds.flat_vectors()[0]
    for kind in ("pca", "umap") if umap else ("pca",):
        plot_w_embedding(bank.w, outdir / f"w_{kind}.png", color=color, color_name=cname, method=kind,
                         max_points=embed_max_points, seed=seed)
        files[f"w_{kind}"] = str(outdir / f"w_{kind}.png")
    return files


def _round_robin(items: list[int], names: list[str]) -> list[int]:
    """`items` reordered so that each name group ('albedo_nose', 'albedo_nose_2', ... share one) comes up once
    before any comes up twice: a capped sheet then shows every part of every map (its strongest atom first)."""
    groups: dict[str, list[int]] = {}
    for item, name in zip(items, names):
        head, _, tail = name.rpartition("_")
        groups.setdefault(head if head and tail.isdigit() else name, []).append(item)
    queues = list(groups.values())
    return [q[r] for r in range(max(map(len, queues), default=0)) for q in queues if r < len(q)]


def _footprint_sheet(G, base, ds, sigmas, outdir, noise_mode, max_rows) -> Path:
    """footprint_sheet.png: the localized directions (those with a non-zero footprint), footprint then edit strip."""
    fp = ds.extras["footprint"]
    local = [i for i in range(len(ds)) if np.abs(fp[i]).max() > 0]
    if not local:
        local = list(range(len(ds)))
    local = _round_robin(local, [ds.names[i] for i in local])[: max(int(max_rows), 1) * 2]
    strips = []
    for i in local:
        _, img = edit(G, base, ds, ds.names[i], sigmas, step_unit="sigma", return_images=True, noise_mode=noise_mode)
        strips.append(img[:, 0])
    return plot_footprint_sheet(fp[local], torch.stack(strips), outdir / "footprint_sheet.png",
                                [ds.names[i] for i in local], col_labels=[f"{s:+.1f}σ" for s in sigmas],
                                title=f"{ds.method}: footprints and edits")


def _report(ds, est, original_names, sample_names, rendered, provenance, args, timer, constant, files):
    directions = []
    for i, name in enumerate(ds.names):
        entry: dict[str, Any] = {
            "index": i,
            "name": name,
            "original_name": original_names[i],
            "ws_layers": None if ds.layers[i] is None else list(ds.layers[i]),  # exact ws indices; null = all
            "step_range_w": ds.step_ranges[i],
            "std_w": None if ds.stds is None else float(ds.stds[i]),
        }
        for key, attr in (("explained_variance", "explained_variance_"),
                          ("explained_variance_ratio", "explained_variance_ratio_"),
                          ("eigenvalue", "eigenvalues_"), ("score", "scores_")):
            value = getattr(est, attr, None)
            if value is not None and i < len(value):
                entry[key] = float(value[i])
        kinds = est.kinds_ if isinstance(est, ThreeDCoupledDirections) else None
        if kinds is not None and i < len(kinds):
            entry["kind"] = kinds[i]
            if kinds[i] != "global":
                shares = est.part_shares_[i]
                entry["footprint_part_shares"] = {p: float(v) for p, v in zip(est.part_names_, shares)}
        if rendered is not None:
            entry["label_effects_rendered"] = {lab: float(rendered.effects[i, j])
                                               for j, lab in enumerate(rendered.label_names)}
            entry["label_t_stat_rendered"] = {lab: float(np.clip(rendered.t_stat[i, j], -1e6, 1e6))
                                              for j, lab in enumerate(rendered.label_names)}
        if sample_names is not None:
            entry["label_effects_samples"] = {lab: float(sample_names.effects[i, j])
                                              for j, lab in enumerate(sample_names.label_names)}
        directions.append(entry)
    if rendered is not None:
        agreement = compare_namings(rendered, sample_names)  # measured before renaming: keyed by original names
        for entry in directions:
            entry["naming"] = agreement.get(entry["original_name"])
    return {
        "method": ds.method,
        "params": ds.params,
        "checkpoint_sha256": provenance["checkpoint_sha256"],
        "checkpoint": provenance["checkpoint"],
        "seed": args["seed"],
        "samples": args["samples"],
        "truncation_psi": args["truncation_psi"],
        "label_names": None if rendered is None else rendered.label_names,
        "constant_labels_ignored": constant,
        "label_effect_unit": "label std per one-std step along the direction",
        "timings_s": timer.seconds,
        "directions": directions,
    }

