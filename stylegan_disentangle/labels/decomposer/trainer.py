"""Self-supervised training of an Unsup3D decomposer on the images of a frozen generator.

Every step draws a fresh batch from the generator (no image folder is needed), decomposes it and renders it back
(`reconstruction.reconstruct`), and minimises the official objective: photometric L1 with the confidence form,
plus the mirrored render weighted `lam_flip` = 0.5, optionally a perceptual term on features of the generator's own
discriminator (no VGG download exists offline), a depth-smoothness term and an albedo total-variation term
(`lam_albedo_tv`, a Retinex prior: a piecewise-flat albedo leaves smooth shading to the light; off by default, as
the official objective) and an albedo gradient-sparsity term (`lam_albedo_sparse`: mean (|gradient| + eps)^p with
p < 1, which, unlike TV, makes a sharp edge cheaper than a smooth ramp of the same rise, so features go to the albedo
and smooth ramps to the shading; off by default). Adam with lr 1e-4 and weight decay 5e-4 per network, as the
official trainer.

Two stabilizers tie the decomposition to itself (Zheng et al. train theirs "stabilized"; see SEEDS.md):

- re-render consistency (`lam_rerender`): the current estimate of depth and albedo is rendered under a random new
  view and light; decomposing that render must give back the same depth and albedo and exactly the new view and
  light. It supervises view and light with known answers made from the model's own shapes. `rerender_mode`
  "random" (the default) draws the views uniformly (rotations within +-30 deg at the official range) and renders
  the lit wall behind the head; "data" takes the views and light intensities of other images of the batch and pastes
  the head over a flat, unlit background, as the synthetic world's images are (`rerender_intensities` "uniform":
  the ambient and diffuse drawn uniformly instead of the batch's; `rerender_albedo_step`: the rendered albedo
  recoloured above a random hairline; `rerender_yaw`: the yaw redrawn wider than the generator turns heads; the
  scenes are in `scenes.py`). `light_from_rerender` keeps the photometric loss away from netL, which then learns the
  light from the re-renders alone;
- jitter agreement (`lam_jitter`): the same w pulled slightly toward the mean (truncation psi in [0.85, 1]) and
  rendered with random noise must decompose to the same canonical depth and albedo.

Both reward a decomposition that does not change, and the constant "mean face" is the easiest such one: switched
on from the first step they held the nets in it (after 1300 steps of batch 32 on the synthetic checkpoint, depth and
albedo were the same for every image and yaw |r| was 0.6; without them, depth already varied per image after 150
steps). `stabilize_after` therefore starts them once the official objective has made the decomposition depend on
the image.

The **turned-head term** (`lam_light_turn`) teaches netL that the light does not turn with the head: each batch's
estimate is rendered under its own light with the yaw drawn within +-`light_turn_yaw` degrees (default
LIGHT_TURN_YAW, 45; and, with `light_turn_pitch`, the pitch within +-`light_turn_pitch`; both need the term on;
`scenes.turned_head_scene`), and netL must read there the light it read on the original image. A generator turns
heads only so far, and without it netL misreads the light of heads turned further; and a netL that learns from a
light teacher alone reads a nod partly as light from above.

A **light teacher** (`light_teacher`, `light_teacher.LatentLightTeacher`) replaces what netL learns from: the light
read off each image's w along W directions found over a population (the 3D-coupled light directions, fitted on the
decomposer's own readings), which average out the hair and skin that one face's reading mixes in. netL then learns
from it alone; the photometric and re-render terms train the other nets.

Batches come from the generator every step, or (`bank_size`) from an on-disk bank of its images made once
(`image_bank.ImageBank`, for networks whose image generation would dominate the step). Training is seeded and
deterministic on CPU (batch t is drawn from a generator seeded with (seed, t)), resumable
from atomic checkpoints in the official Unsup3D layout (`checkpoint.pth`, with the Adam states; `epoch` holds the
number of steps done), logs JSON lines and writes a PNG of decompositions every `preview_every` steps.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import StyleGANDisentangleError
from ...latents import generator_fingerprint, synthesize_in_chunks
from ...utils import atomic_write
from ...utils.jsonl import trim_jsonl
from ..base import check_crop, crop_images
from .image_bank import JITTER_PSI_MIN, ImageBank, random_classes, seeded_torch_rng
from .light_teacher import LatentLightTeacher, light_labels
from .model import PARTS, Unsup3DDecomposer, check_light_mask
from .reconstruction import reconstruct, reconstruction_loss
from .scenes import (
    RERENDER_INTENSITIES,
    RERENDER_MODES,
    check_albedo_step,
    light_turn_loss,
    rerender_loss,
    rerender_scene,
    turned_head_scene,
)

logger = logging.getLogger(__name__)

__all__ = ["bank_seconds", "draw_images", "gradient_sparsity", "total_variation", "train_decomposer",
           "trained_nets_only"]

CHECKPOINT = "checkpoint.pth"
STATE = "train_state.json"
LOG = "log.jsonl"
BANK = "bank"
BANK_TIME = "bank_time.json"
TEACHER = "light_teacher.npz"
LIGHT_TURN_YAW = 45.0
"""The turned-head term's largest |yaw| (degrees) unless `light_turn_yaw` is given: past the generator's range."""
RERENDER_DEFAULTS = {"rerender_light_xy": 1.0, "rerender_mode": "random", "rerender_intensities": "batch"}
"""The re-render settings' values when given as None (and when a run's config lacks them)."""
# a rotation whose mean |raw| passes this (45 deg on average at the official +-60) means a collapsing view: both
# from-scratch collapses in BENCHMARKS (sixth session) reached 0.78 and 1.0; the shipped nets sit at 0.08-0.14
SATURATED = 0.75


def _step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))


@torch.no_grad()
def draw_images(G: nn.Module, n: int, gen: torch.Generator, truncation_psi: float = 1.0,
                device: torch.device | str = "cpu", noise_mode: str = "const") -> tuple[torch.Tensor, torch.Tensor]:
    """n images of the frozen generator from latents drawn with `gen`: (ws [n, num_ws, w_dim], img [n, 3, R, R]).
    A conditional generator's classes are drawn uniformly after z (one-hot), as the latent banks draw them."""
    z = torch.randn([n, G.z_dim], generator=gen).to(device)
    c = random_classes(G.c_dim, n, gen, device)
    ws = G.mapping(z, c, truncation_psi=truncation_psi)
    return ws, synthesize_in_chunks(G, ws, noise_mode=noise_mode, postprocess=lambda im: im.float().clamp(-1, 1))


def _discriminator_features(D: nn.Module, img: torch.Tensor, blocks: int = 2) -> list[torch.Tensor]:
    """Activations of D's first `blocks` blocks (the perceptual term's features; D stays frozen)."""
    feats = []
    x = None
    for res in D.block_resolutions[:blocks]:
        x, img = getattr(D, f"b{res}")(x, img)
        feats.append(x)
    return feats


def _perceptual(D: nn.Module, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    size = D.img_resolution
    if pred.shape[-1] != size:
        pred = nn.functional.interpolate(pred, size=(size, size), mode="bilinear", align_corners=False)
        target = nn.functional.interpolate(target, size=(size, size), mode="bilinear", align_corners=False)
        mask = nn.functional.interpolate(mask, size=(size, size), mode="nearest")
    loss = pred.new_zeros(())
    for fp, ft in zip(_discriminator_features(D, pred * mask), _discriminator_features(D, target * mask)):
        loss = loss + (fp - ft.detach()).abs().mean()
    return loss


def total_variation(maps: torch.Tensor) -> torch.Tensor:
    """Mean |horizontal difference| + mean |vertical difference| of maps [..., H, W] (anisotropic L1 TV): the
    depth-smoothness term on the canonical depth [N, H, W], the albedo prior on the canonical albedo [N, 3, H, W]."""
    return (maps[..., 1:] - maps[..., :-1]).abs().mean() + (maps[..., 1:, :] - maps[..., :-1, :]).abs().mean()


SPARSITY_EPS = 1e-3


def _check_sparsity_exponent(p: float, name: str = "the sparsity exponent p") -> None:
    if not 0 < p <= 1:
        raise StyleGANDisentangleError(f"{name} must be in (0, 1], got {p}")


def gradient_sparsity(maps: torch.Tensor, p: float = 0.3) -> torch.Tensor:
    """Mean (|horizontal difference| + eps)^p + mean (|vertical difference| + eps)^p of maps [..., H, W], less the
    flat map's value (0 for a constant map). For p < 1 a rise made in one step costs less than the same rise spread
    over a ramp (n steps of r/n cost n^(1-p) times one step of r): the prior of a piecewise-flat albedo under smooth
    shading, which TV (p = 1, the same cost for both) does not express. eps keeps the gradient finite at 0."""
    _check_sparsity_exponent(p)
    gx, gy = maps[..., 1:] - maps[..., :-1], maps[..., 1:, :] - maps[..., :-1, :]
    return (gx.abs() + SPARSITY_EPS).pow(p).mean() + (gy.abs() + SPARSITY_EPS).pow(p).mean() - 2 * SPARSITY_EPS ** p


@torch.no_grad()
def _jitter_images(G: nn.Module, ws: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The same w, pulled toward the mean by psi in [0.85, 1] and rendered with random noise."""
    psi = (JITTER_PSI_MIN + (1 - JITTER_PSI_MIN) * torch.rand([ws.shape[0], 1, 1], generator=gen)).to(ws.device)
    ws2 = G.mapping.w_avg + psi * (ws - G.mapping.w_avg)
    with seeded_torch_rng(int(torch.randint(0, 2**31 - 1, [1], generator=gen)), ws.device):  # the noise draw
        return synthesize_in_chunks(G, ws2, noise_mode="random", postprocess=lambda im: im.float().clamp(-1, 1))


def _jitter_loss(dec: Unsup3DDecomposer, img2: torch.Tensor, out: dict[str, torch.Tensor]) -> torch.Tensor:
    """The jittered twins `img2` of the batch (see `_jitter_images`) keep its canonical depth and albedo."""
    est = dec.decompose(img2, parts=["depth", "albedo"])
    return ((est["canon_depth"] - out["canon_depth"]).abs().mean() / (dec.max_depth - dec.min_depth)
            + (est["canon_albedo"] - out["canon_albedo"]).abs().mean())


def _optimizers(dec: Unsup3DDecomposer, lr: float, weight_decay: float,
                train_nets: list[str]) -> dict[str, torch.optim.Optimizer]:
    """One Adam per trained net (official settings); the other nets are frozen (no gradient, no weight decay)."""
    for name in dec.present_nets:
        getattr(dec, name).requires_grad_(name in train_nets)
    return {f"optimizer{name[3:]}": torch.optim.Adam(getattr(dec, name).parameters(), lr=lr, betas=(0.9, 0.999),
                                                     weight_decay=weight_decay)
            for name in dec.present_nets if name in train_nets}


def _save(dec: Unsup3DDecomposer, optimizers: dict, outdir: Path, step: int, config: dict, seconds: float,
          generator: str) -> None:
    dec.optimizer_states = {k: opt.state_dict() for k, opt in optimizers.items()}
    dec.epoch = step
    dec.trained_on = generator  # recorded in the checkpoint too, which may be copied away from train_state.json
    dec.save(outdir / CHECKPOINT)
    with atomic_write(outdir / STATE, "w") as f:
        json.dump({"step": step, "config": config, "train_seconds": seconds, "generator_sha256": generator}, f,
                  indent=2)


def _read_state(path: Path) -> dict:
    """The training state file (STATE) as a dict, or an error naming it."""
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:  # ValueError: broken JSON or not UTF-8
        raise StyleGANDisentangleError(f"{path}: not a readable training state ({type(exc).__name__}: {exc}); "
                                       "use another --outdir, or remove the run's files to start it over") from None
    if not isinstance(state, dict):
        raise StyleGANDisentangleError(f"{path}: not a training state: it holds a {type(state).__name__}, expected "
                                       "a JSON object with step, config and train_seconds")
    return state


def _resume(outdir: Path, config: dict, generator: str,
            device: torch.device) -> tuple[Unsup3DDecomposer | None, int, float]:
    """The run in `outdir` to go on with: its decomposer, step and training seconds (None, 0, 0 for a new run);
    refused with a message when it was made with other settings or on another generator (`generator`: its
    `generator_fingerprint`; states written before it was recorded are not checked)."""
    state_path, ckpt = outdir / STATE, outdir / CHECKPOINT
    if not ckpt.is_file():
        return None, 0, 0.0
    if not state_path.is_file():
        raise StyleGANDisentangleError(f"{ckpt} exists without the {STATE} of a training run beside it, so it "
                                       "cannot be resumed and training would overwrite it: use another --outdir or "
                                       "move the file away")
    state = _read_state(state_path)
    stored = state.get("config")
    init_only = (isinstance(stored, dict) and stored.get("init_sha256") != config.get("init_sha256")
                 and _without_init(stored) == _without_init(config))
    if stored != config and not init_only:
        raise StyleGANDisentangleError(f"{outdir} holds a run with other settings ({state_path}); use another "
                                       "--outdir or the same arguments to resume it")
    if state.get("generator_sha256", generator) != generator:
        raise StyleGANDisentangleError(f"{outdir} holds a run trained on another network (generator "
                                       f"{str(state['generator_sha256'])[:12]}..., this one {generator[:12]}...; "
                                       f"{state_path}); use another --outdir or that network to resume it")
    from .labeler import load_decomposer

    dec = load_decomposer(ckpt, device=device)  # reads the scalings from train_state.json
    if init_only:
        # other starting nets: refused, unless they are the run's own latest nets (the decomposer that trained
        # there, continued by `fit`) or the run predates the record
        if "init_sha256" in stored and config.get("init_sha256") != generator_fingerprint(dec):
            raise StyleGANDisentangleError(f"{outdir} holds a run started from other initial nets ({state_path}); "
                                           "use another --outdir, or the same --init to resume it")
        config.pop("init_sha256", None)
        config.update({k: v for k, v in stored.items() if k == "init_sha256"})  # the run's record stays its own
    # the checkpoint's own step count (its `epoch`) decides where to resume, even if the process died between
    # writing the checkpoint and the state file
    return dec, int(dec.epoch), float(state.get("train_seconds", 0.0))


def _without_init(config: dict) -> dict:
    return {k: v for k, v in config.items() if k != "init_sha256"}


def _check_decomposer_kwargs(kwargs: dict[str, Any]) -> None:
    """Build the decomposer on the meta device (no memory, no init), so that bad sizes or an unknown argument fail
    before anything is written."""
    try:
        with torch.device("meta"):
            Unsup3DDecomposer(**kwargs)
    except StyleGANDisentangleError:
        raise
    except (TypeError, ValueError) as exc:
        raise StyleGANDisentangleError(f"decomposer_kwargs {kwargs}: {exc}") from None


def _decomposer_settings(G: Any, init: Unsup3DDecomposer | None, decomposer_kwargs: dict[str, Any] | None,
                         crop: Any, light_mask: Any, light_teacher: LatentLightTeacher | None,
                         train_nets: Sequence[str] | None) -> dict[str, Any]:
    """The trained decomposer's constructor settings (its config): `init`'s, else the CPU defaults updated by
    `decomposer_kwargs`; with the crop and light mask asked for, and the light teacher's fingerprint (a new
    teacher's, or `init`'s while netL does not learn)."""
    res = G.img_resolution if G.img_resolution in (32, 64) else 64
    kwargs = dict(image_size=res, nf=32, zdim=128, nf_light=16, nf_view=16, nf_conf=32, zdim_conf=64)
    kwargs.update(init.get_config() if init is not None else decomposer_kwargs or {})
    if crop is not None:
        try:
            kwargs["input_crop"] = list(check_crop(crop))
        except ValueError as exc:
            raise StyleGANDisentangleError(f"crop: {exc}") from None
    try:  # None keeps init's own (or none), False drops it
        mask = check_light_mask(light_mask, kwargs.pop("light_mask", None))
    except ValueError as exc:
        raise StyleGANDisentangleError(str(exc)) from None
    if mask is not None:
        kwargs["light_mask"] = list(mask)
    inherited = kwargs.pop("light_teacher", None)
    taught_by = light_teacher.fingerprint() if light_teacher is not None else (
        inherited if train_nets is not None and "netL" not in train_nets else None)
    if taught_by is not None:
        kwargs["light_teacher"] = taught_by
    if init is None:
        _check_decomposer_kwargs(kwargs)
    return kwargs


def _starting_decomposer(init: Unsup3DDecomposer | None, kwargs: dict[str, Any], seed: int,
                         device: torch.device) -> Unsup3DDecomposer:
    """A fresh run's decomposer: `init` (in place) given the run's crop, light mask and teacher mark, else new nets
    seeded by `seed` (without reseeding the caller's stream)."""
    if init is not None:
        dec = init.to(device)
        dec.input_crop = check_crop(kwargs.get("input_crop"))
        dec.light_mask = check_crop(kwargs.get("light_mask"), "light mask")
        dec.light_teacher = kwargs.get("light_teacher")
        return dec
    with seeded_torch_rng(seed):
        dec = Unsup3DDecomposer(**kwargs)
    return dec.to(device)


def train_decomposer(
    G: nn.Module,
    outdir: str | os.PathLike,
    steps: int,
    *,
    decomposer_kwargs: dict[str, Any] | None = None,
    init: Unsup3DDecomposer | None = None,
    batch_size: int = 32,
    lr: float = 1e-4,
    weight_decay: float = 5e-4,
    lam_flip: float = 0.5,
    lam_perc: float = 0.0,
    D: nn.Module | None = None,
    lam_smooth: float = 0.0,
    lam_albedo_tv: float = 0.0,
    lam_albedo_sparse: float = 0.0,
    albedo_sparse_p: float = 0.3,
    lam_rerender: float = 1.0,
    rerender_light_xy: float | None = None,
    rerender_mode: str | None = None,
    rerender_intensities: str | None = None,
    rerender_albedo_step: Sequence[float] | None = None,
    rerender_yaw: float | None = None,
    light_from_rerender: bool = False,
    lam_light_turn: float = 0.0,
    light_turn_yaw: float | None = None,
    light_turn_pitch: float | None = None,
    lam_jitter: float = 0.5,
    stabilize_after: int = 0,
    truncation_psi: float = 1.0,
    bank_size: int = 0,
    seed: int = 0,
    checkpoint_every: int = 200,
    log_every: int = 10,
    preview_every: int = 500,
    device: str | torch.device = "cpu",
    progress: bool | None = None,
    train_nets: Sequence[str] | None = None,
    crop: Sequence[float] | None = None,
    light_mask: Sequence[float] | None | bool = None,
    light_teacher: LatentLightTeacher | None = None,
    lam_teacher: float = 1.0,
    teacher_samples: int = 4000,
) -> Unsup3DDecomposer:
    """Train (or resume training) a decomposer on `G`'s images for `steps` steps in total; returns it (eval mode).

    `init` is a decomposer to start from (trained in place); otherwise `decomposer_kwargs` build a seeded
    `Unsup3DDecomposer` (default: the generator's resolution if 32 or 64, else 64;
    nf 32, zdim 128, light/view nf 16, confidence nf 32, zdim 64 — small nets for CPU training). `lam_perc` > 0
    needs `D` (the loaded discriminator: its first blocks' features). Files in `outdir`: checkpoint.pth (official
    layout), train_state.json, log.jsonl, preview_<step>.png. Calling it again with the same arguments resumes;
    a checkpoint.pth in `outdir` without the train_state.json of a run is refused, not overwritten.
    `bank_size` > 0 trains on an on-disk bank of that many generator images (`image_bank.ImageBank`, built once in
    `outdir/bank`; its build time, not part of `train_seconds`, goes to `bank_time.json`) instead of drawing every batch
    from `G`. `rerender_mode`, `rerender_intensities`, `rerender_albedo_step` (a gain range, e.g. (0.35, 1.25); see
    `rerender_scene`), `rerender_light_xy` and `light_from_rerender` set the re-render term's scenes and whether netL
    learns from it alone (module docstring; "data" with netL from the re-renders is the synthetic decomposer's recipe
    since the ninth session, BENCHMARKS.md); None means the `RERENDER_DEFAULTS` (no albedo step, the scenes' own yaw),
    and any other value needs `lam_rerender` > 0. `train_nets` (e.g. `["netL"]`) trains only those nets and freezes the
    others (default: every net present), for continuing one part of a trained decomposer without moving the rest. `crop`
    (top, left, height, width; fractions of the image) trains on that box of each generated image (every image: the
    batches, the jittered twins, the bank, the previews) and becomes the decomposer's `input_crop`, which its labeler
    and `decompose` then apply; None keeps `init`'s own crop, if any.
    `light_mask` (a box of the decomposer's input, the same fractions) becomes the decomposer's `light_mask`: netL
    reads the light with that box painted in the background colour, in training as afterwards; None keeps
    `init`'s own, False trains without one.
    `light_teacher` (a `LatentLightTeacher`) makes netL learn the light from the teacher's reading of each image's
    w alone (weight `lam_teacher`; the photometric and re-render losses then train the other nets only). A teacher
    not yet fitted is fitted first on `teacher_samples` generator faces read by `init` (so it needs `init`), and
    saved as `outdir/light_teacher.npz` for a resumed run. It reads each batch's w (a bank keeps it).
    Its fingerprint becomes the decomposer's `light_teacher` (kept from `init` while netL is not trained).
    """

    albedo_step = _check_args(steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                              lam_albedo_sparse=lam_albedo_sparse, albedo_sparse_p=albedo_sparse_p,
                              lam_rerender=lam_rerender, light_from_rerender=light_from_rerender,
                              rerender_light_xy=rerender_light_xy, rerender_mode=rerender_mode,
                              rerender_intensities=rerender_intensities,
                              rerender_albedo_step=rerender_albedo_step, rerender_yaw=rerender_yaw,
                              lam_light_turn=lam_light_turn, light_turn_yaw=light_turn_yaw,
                              light_turn_pitch=light_turn_pitch, lam_perc=lam_perc, D=D, train_nets=train_nets,
                              weights=dict(lam_flip=lam_flip, lam_perc=lam_perc, lam_smooth=lam_smooth,
                                           lam_albedo_tv=lam_albedo_tv, lam_albedo_sparse=lam_albedo_sparse,
                                           lam_rerender=lam_rerender, lam_jitter=lam_jitter, lam_teacher=lam_teacher))
    if lam_light_turn and light_turn_yaw is None:
        light_turn_yaw = LIGHT_TURN_YAW
    if light_teacher is not None:
        _check_teacher_args(light_teacher, init, light_from_rerender, train_nets, lam_teacher,
                            teacher_samples)
    device = torch.device(device)
    kwargs = _decomposer_settings(G, init, decomposer_kwargs, crop, light_mask, light_teacher, train_nets)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    config = _run_config(kwargs, init, albedo_step, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         lam_flip=lam_flip, lam_perc=lam_perc, lam_smooth=lam_smooth, lam_albedo_tv=lam_albedo_tv,
                         lam_albedo_sparse=lam_albedo_sparse, albedo_sparse_p=albedo_sparse_p,
                         lam_rerender=lam_rerender, lam_jitter=lam_jitter, rerender_light_xy=rerender_light_xy,
                         rerender_mode=rerender_mode, rerender_intensities=rerender_intensities,
                         rerender_yaw=rerender_yaw, light_from_rerender=light_from_rerender,
                         lam_light_turn=lam_light_turn, light_turn_yaw=light_turn_yaw,
                         light_turn_pitch=light_turn_pitch, stabilize_after=stabilize_after,
                         truncation_psi=truncation_psi, seed=seed, bank_size=bank_size, train_nets=train_nets,
                         light_teacher=light_teacher, lam_teacher=lam_teacher, teacher_samples=teacher_samples)
    generator = generator_fingerprint(G)
    dec, start, seconds = _resume(outdir, config, generator, device)
    if dec is None:
        dec = _starting_decomposer(init, kwargs, seed, device)
    trained = list(dec.present_nets) if train_nets is None else [n for n in dec.present_nets if n in train_nets]
    _check_trained(dec, trained, train_nets, lam_light_turn, max(light_turn_yaw or 0.0, light_turn_pitch or 0.0),
                   rerender_yaw)
    grad_flags = [p.requires_grad for p in dec.parameters()]  # _optimizers freezes the untrained nets; restored
    optimizers = _optimizers(dec, lr, weight_decay, trained)
    _restore_optimizer_states(dec, optimizers, lr, weight_decay)
    trim_jsonl(outdir / LOG, start)
    G = G.eval().requires_grad_(False).to(device)
    if D is not None:
        D = D.eval().requires_grad_(False).to(device)
    bank = _open_bank(G, dec, outdir, bank_size, seed, truncation_psi, device, progress,
                      needs_ws=light_teacher is not None) if bank_size else None
    teacher = None if light_teacher is None else _ready_teacher(light_teacher, dec, G, outdir, start, config, device)
    preview_gen = _step_generator(seed + 7919, 0)
    _, preview_img = draw_images(G, 8, preview_gen, truncation_psi, device)
    preview_img = crop_images(preview_img, dec.input_crop)
    dec.train()
    try:
        with torch.enable_grad():  # also when called from a no_grad context
            _train_loop(dec, G, D, optimizers, outdir, start, steps, seconds, config, preview_img, progress,
                        (checkpoint_every, log_every, preview_every), bank, teacher, generator)
    finally:  # the nets frozen for train_nets are trainable again afterwards
        for param, flag in zip(dec.parameters(), grad_flags):
            param.requires_grad_(flag)
    dec.trained_on = generator
    return dec.eval()


def _run_config(kwargs: dict[str, Any], init: Unsup3DDecomposer | None, albedo_step: tuple[float, float] | None, *,
                batch_size, lr, weight_decay, lam_flip, lam_perc, lam_smooth, lam_albedo_tv, lam_albedo_sparse,
                albedo_sparse_p, lam_rerender, lam_jitter, rerender_light_xy, rerender_mode, rerender_intensities,
                rerender_yaw, light_from_rerender, lam_light_turn, light_turn_yaw, light_turn_pitch,
                stabilize_after, truncation_psi, seed, bank_size, train_nets, light_teacher, lam_teacher,
                teacher_samples) -> dict[str, Any]:
    """The run's settings as train_state.json records them (and a resume compares them): each optional term only
    when it is used, so that the records of runs made before a term existed stay what they were."""
    # nets read from a file are recorded by their weights' hash, so that a rerun from other nets is refused; nets
    # built in memory (a fresh decomposer's fit) have no file to give again, so they are not
    from_file = init is not None and init.source is not None
    return dict(decomposer=kwargs, **({"init_sha256": generator_fingerprint(init)} if from_file else {}),
                batch_size=batch_size, lr=lr, lam_flip=lam_flip, lam_perc=lam_perc,
                **({} if weight_decay == 5e-4 else {"weight_decay": weight_decay}),
                lam_smooth=lam_smooth, **({"lam_albedo_tv": lam_albedo_tv} if lam_albedo_tv else {}),
                **({"lam_albedo_sparse": lam_albedo_sparse, "albedo_sparse_p": albedo_sparse_p}
                   if lam_albedo_sparse else {}),
                lam_rerender=lam_rerender, lam_jitter=lam_jitter,
                **{k: v for k, v in (("rerender_light_xy", rerender_light_xy), ("rerender_mode", rerender_mode),
                                     ("rerender_intensities", rerender_intensities))
                   if v is not None and v != RERENDER_DEFAULTS[k]},  # recorded only when not the default
                **({"rerender_albedo_step": list(albedo_step)} if albedo_step else {}),
                **({"rerender_yaw": rerender_yaw} if rerender_yaw is not None else {}),
                **({"light_from_rerender": True} if light_from_rerender else {}),
                **({"lam_light_turn": lam_light_turn, "light_turn_yaw": light_turn_yaw} if lam_light_turn else {}),
                **({"light_turn_pitch": light_turn_pitch} if light_turn_pitch is not None else {}),
                **({"stabilize_after": stabilize_after} if stabilize_after else {}),
                truncation_psi=truncation_psi, seed=seed, **({"bank_size": bank_size} if bank_size else {}),
                **({"train_nets": sorted(train_nets)} if train_nets is not None else {}),
                **({"light_teacher": {"directions_sha256": light_teacher.fingerprint(), "lam": lam_teacher,
                                      "fit_samples": teacher_samples}} if light_teacher is not None else {}))


def _restore_optimizer_states(dec: Unsup3DDecomposer, optimizers: dict[str, torch.optim.Optimizer], lr: float,
                              weight_decay: float) -> None:
    """Carry the decomposer's stored Adam moments over into `optimizers`; the learning rate and weight decay are this
    run's. A state that does not fit its net (another architecture's) is dropped with a warning."""
    for key, opt in optimizers.items():
        if key in dec.optimizer_states:
            try:
                opt.load_state_dict(dec.optimizer_states[key])
            except (ValueError, KeyError, RuntimeError) as exc:
                logger.warning("the optimizer state of %s does not fit its net (%s); it starts afresh", key, exc)
                continue
            for group in opt.param_groups:
                group.update(lr=lr, weight_decay=weight_decay)


def _open_bank(G: nn.Module, dec: Unsup3DDecomposer, outdir: Path, bank_size: int, seed: int, truncation_psi: float,
               device: torch.device, progress: bool | None, needs_ws: bool) -> ImageBank:
    """The run's on-disk image bank (built once; its build time goes to bank_time.json, not to train_seconds)."""
    t0 = time.perf_counter()
    bank = ImageBank.open_or_build(G, outdir / BANK, bank_size, dec.image_size, seed=seed,
                                   truncation_psi=truncation_psi, device=device, progress=progress,
                                   crop=dec.input_crop)
    _record_bank_seconds(outdir, time.perf_counter() - t0)
    if needs_ws and bank.ws is None:
        raise StyleGANDisentangleError(f"{outdir / BANK}: this image bank was built before banks kept each "
                                       "image's w, which light_teacher reads; delete it to rebuild it")
    return bank


def _check_args(*, steps, batch_size, lr, weight_decay, lam_albedo_sparse, albedo_sparse_p, lam_rerender,
                light_from_rerender, rerender_light_xy, rerender_mode, rerender_intensities, rerender_albedo_step,
                rerender_yaw, lam_light_turn, light_turn_yaw, light_turn_pitch, lam_perc, D,
                train_nets, weights: dict[str, float]) -> tuple[float, float] | None:
    """train_decomposer's settings that need no decomposer, checked before anything is built or written; returns
    the checked albedo step range. `weights`: the loss terms' weights by name, each finite and >= 0 (a negative one
    would silently switch its term off, or, for the flip term, reward a mismatched mirror render)."""
    if steps < 1 or batch_size < 2:
        raise StyleGANDisentangleError(f"steps must be >= 1 and batch_size >= 2, got {steps}, {batch_size}")
    bad = {name: value for name, value in weights.items() if not (math.isfinite(value) and value >= 0)}
    if bad:
        raise StyleGANDisentangleError(f"loss weights must be finite and >= 0, got {bad}")
    if not (math.isfinite(lr) and lr > 0 and math.isfinite(weight_decay) and weight_decay >= 0):
        raise StyleGANDisentangleError(f"lr must be > 0 and weight_decay >= 0 (finite), got lr={lr}, "
                                       f"weight_decay={weight_decay}")
    if lam_albedo_sparse > 0:
        _check_sparsity_exponent(albedo_sparse_p, "albedo_sparse_p")
    if light_from_rerender and lam_rerender <= 0:
        raise StyleGANDisentangleError("light_from_rerender needs the re-render term (lam_rerender > 0): without it "
                                       "nothing would train netL")
    _check_term_on("the re-render term's scenes", "lam_rerender > 0 (--rerender)", lam_rerender > 0,
                   rerender_light_xy=rerender_light_xy, rerender_mode=rerender_mode,
                   rerender_intensities=rerender_intensities, rerender_albedo_step=rerender_albedo_step,
                   rerender_yaw=rerender_yaw)
    if rerender_mode is not None and rerender_mode not in RERENDER_MODES:
        raise StyleGANDisentangleError(f"rerender_mode must be one of {RERENDER_MODES}, got {rerender_mode!r}")
    if rerender_intensities is not None and rerender_intensities not in RERENDER_INTENSITIES:
        raise StyleGANDisentangleError(f"rerender_intensities must be one of {RERENDER_INTENSITIES}, "
                                       f"got {rerender_intensities!r}")
    if not (math.isfinite(lam_light_turn) and lam_light_turn >= 0 and (
            light_turn_yaw is None or (math.isfinite(light_turn_yaw) and light_turn_yaw > 0))):
        raise StyleGANDisentangleError(f"lam_light_turn must be >= 0 and light_turn_yaw > 0 (finite), got "
                                       f"{lam_light_turn}, {light_turn_yaw}")
    if light_turn_pitch is not None and not (math.isfinite(light_turn_pitch) and light_turn_pitch > 0):
        raise StyleGANDisentangleError(f"light_turn_pitch must be a finite pitch > 0 (degrees) or None, got "
                                       f"{light_turn_pitch}")
    _check_term_on("the turned-head term's renders", "lam_light_turn > 0 (--light-turn)", bool(lam_light_turn),
                   light_turn_yaw=light_turn_yaw, light_turn_pitch=light_turn_pitch)
    if rerender_yaw is not None and not (math.isfinite(rerender_yaw) and rerender_yaw > 0):
        raise StyleGANDisentangleError(f"rerender_yaw must be a finite yaw > 0 (degrees) or None, got {rerender_yaw}")
    if lam_perc > 0 and D is None:
        raise StyleGANDisentangleError("lam_perc > 0 needs the discriminator D for its features")
    if train_nets is not None and (isinstance(train_nets, str) or not train_nets
                                   or not set(train_nets) <= set(PARTS.values())):
        raise StyleGANDisentangleError(f"train_nets must be a non-empty list of {sorted(PARTS.values())}, got "
                                       f"{train_nets!r}")
    return check_albedo_step(rerender_albedo_step)


def _check_term_on(what: str, switch: str, on: bool, **settings: Any) -> None:
    """Refuse a setting of a loss term (given, i.e. not None) while that term is off: it would be ignored."""
    for name, value in settings.items():
        if value is not None and not on:
            raise StyleGANDisentangleError(f"{name} ({value}) sets {what}, which is off: set {switch} as well")


def _check_trained(dec, trained, train_nets, lam_light_turn, light_turn_max, rerender_yaw) -> None:
    """The settings that depend on the decomposer being trained: some net to train, turned heads within its view."""
    if not trained:
        raise StyleGANDisentangleError(f"none of train_nets {sorted(train_nets)} is in this decomposer "
                                       f"(it has {list(dec.present_nets)})")
    if lam_light_turn and ("netL" not in trained or light_turn_max > dec.xyz_rotation_range):
        raise StyleGANDisentangleError(f"lam_light_turn trains netL on heads turned up to light_turn_yaw / "
                                       f"light_turn_pitch ({light_turn_max} deg): it needs netL among the trained "
                                       f"nets ({trained}) and turns within the view's range "
                                       f"(+-{dec.xyz_rotation_range})")
    if rerender_yaw is not None and rerender_yaw > dec.xyz_rotation_range:
        raise StyleGANDisentangleError(f"rerender_yaw {rerender_yaw} deg is beyond the view's range "
                                       f"(+-{dec.xyz_rotation_range})")


def _check_teacher_args(teacher, init, light_from_rerender, train_nets, lam_teacher,
                        teacher_samples) -> None:
    if not isinstance(teacher, LatentLightTeacher):
        raise StyleGANDisentangleError(f"light_teacher must be a LatentLightTeacher, got {type(teacher).__name__}")
    if light_from_rerender:
        raise StyleGANDisentangleError("light_teacher and light_from_rerender both choose what netL learns from; "
                                       "pass one")
    if train_nets is not None and "netL" not in train_nets:
        raise StyleGANDisentangleError(f"light_teacher teaches netL, which train_nets {sorted(train_nets)} leaves out")
    if not (math.isfinite(lam_teacher) and lam_teacher > 0) or teacher_samples < 3:
        raise StyleGANDisentangleError(f"lam_teacher must be > 0 and teacher_samples >= 3, got {lam_teacher}, "
                                       f"{teacher_samples}")
    if init is None and not hasattr(teacher, "slope_"):
        raise StyleGANDisentangleError("an unfitted light_teacher is fitted on the readings of a trained decomposer: "
                                       "pass init (e.g. the decomposer whose readings the directions came from)")


@torch.no_grad()
def _ready_teacher(teacher: LatentLightTeacher, dec: Unsup3DDecomposer, G: nn.Module, outdir: Path, start: int,
                   config: dict, device: torch.device) -> LatentLightTeacher:
    """The run's fitted teacher: the saved one on a resume, else `teacher` fitted (if it is not yet) on
    `fit_samples` faces of G read by `dec` before any training step, then saved."""
    path = outdir / TEACHER
    if start > 0:
        if not path.is_file():
            raise StyleGANDisentangleError(f"{outdir}: this run trains with a light teacher but {TEACHER} is missing; "
                                           "start the run over in a new folder")
        return LatentLightTeacher.load(path)
    if not hasattr(teacher, "slope_"):
        gen = _step_generator(config["seed"] + 104729, 0)
        n = config["light_teacher"]["fit_samples"]
        ws, readings = [], []
        was_training = dec.training
        dec.eval()
        for i in range(0, n, 500):
            w, img = draw_images(G, min(500, n - i), gen, config["truncation_psi"], device)
            ws.append(w[:, 0].cpu())
            readings.append({k: v.cpu() for k, v in light_labels(dec.decompose(crop_images(img, dec.input_crop),
                                                                               parts=["light"])["light"]).items()})
        dec.train(was_training)
        teacher.fit(torch.cat(ws), {k: torch.cat([r[k] for r in readings]) for k in readings[0]})
        logger.info("light teacher fitted on %d faces: agreement with the readings %s", n,
                    dict(zip(teacher.names_, teacher.agreement_.round(3).tolist())))
    teacher.save(path)
    return teacher


def _health(out: dict[str, torch.Tensor]) -> dict[str, float]:
    """Two numbers that show the degenerate solutions of the Unsup3D loss in the log: the fraction of the image where
    the render is valid (the photometric loss is a mean over it, so shrinking it is a way out) and the largest of
    the three rotations' mean |raw| value (1 = that rotation at its range limit for every image)."""
    return {"valid_fraction": float(out["mask"].mean()),
            "rotation_saturation": float(out["view_raw"][:, :3].detach().abs().mean(0).max())}


def bank_seconds(outdir: str | os.PathLike) -> float:
    """Seconds a training run in `outdir` spent building (and reopening) its image bank; 0 without a bank."""
    path = Path(outdir) / BANK_TIME
    if not path.is_file():
        return 0.0
    try:
        return float(json.loads(path.read_text())["bank_seconds"])
    except (OSError, ValueError, KeyError, TypeError) as exc:  # ValueError: broken JSON or not a number
        raise StyleGANDisentangleError(f"{path}: not a readable bank time ({type(exc).__name__}: {exc}); it holds only "
                                       "the bank's build time, so delete it to start the count over") from None


def _record_bank_seconds(outdir: Path, seconds: float) -> None:
    """Add the bank's build time to BANK_TIME (opening a finished bank adds its check, a fraction of a second)."""
    total = bank_seconds(outdir)
    with atomic_write(outdir / BANK_TIME, "w") as f:
        json.dump({"bank_seconds": round(total + seconds, 2)}, f)


@dataclass(frozen=True)
class _Objective:
    """The loss terms' weights and settings, read back from a run's config (so that a resumed run trains on the
    objective it started with; absent keys are a term that is off)."""

    lam_flip: float
    lam_perc: float
    lam_smooth: float
    lam_rerender: float
    lam_jitter: float
    lam_albedo_tv: float = 0.0
    lam_albedo_sparse: float = 0.0
    albedo_sparse_p: float = 0.3
    stabilize_after: int = 0
    rerender_light_xy: float = RERENDER_DEFAULTS["rerender_light_xy"]
    rerender_mode: str = RERENDER_DEFAULTS["rerender_mode"]
    rerender_intensities: str = RERENDER_DEFAULTS["rerender_intensities"]
    rerender_albedo_step: tuple[float, float] | None = None
    rerender_yaw: float | None = None
    light_from_rerender: bool = False
    lam_light_turn: float = 0.0
    light_turn_yaw: float | None = None
    light_turn_pitch: float | None = None
    lam_teacher: float = 0.0

    @classmethod
    def from_config(cls, config: dict[str, Any], taught: bool) -> _Objective:
        names = {f.name for f in fields(cls)} - {"lam_teacher", "rerender_albedo_step"}
        step = config.get("rerender_albedo_step")  # a list in the JSON config
        return cls(**{k: config[k] for k in names if k in config},
                   rerender_albedo_step=None if step is None else tuple(step),
                   lam_teacher=config["light_teacher"]["lam"] if taught else 0.0)


def _batch_losses(dec: Unsup3DDecomposer, G: nn.Module, D: nn.Module | None, obj: _Objective,
                  teacher: LatentLightTeacher | None, step: int, gen: torch.Generator, img: torch.Tensor,
                  twins: torch.Tensor | None, ws: torch.Tensor | None, w: torch.Tensor
                  ) -> tuple[dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor]]:
    """(losses, weighted total, decomposition) of one batch: the photometric terms, the priors, and from
    `stabilize_after` on the stabilizers, the turned-head and the teacher terms, each drawing its scenes from `gen`
    in this order (a resumed run draws the same)."""
    stabilize = step >= obj.stabilize_after
    out = reconstruct(dec, img, flip=True, detach_light=teacher is not None or (obj.light_from_rerender and stabilize))
    losses = reconstruction_loss(out, obj.lam_flip)
    total = losses["total"]
    if obj.lam_perc > 0:
        losses["perc"] = _perceptual(D, out["recon"], out["input"], out["mask"])
        losses["perc_flip"] = _perceptual(D, out["recon_flip"], out["input"], out["mask"])
        total = total + obj.lam_perc * (losses["perc"] + obj.lam_flip * losses["perc_flip"])
    if obj.lam_smooth > 0:
        losses["smooth"] = total_variation(out["canon_depth"])
        total = total + obj.lam_smooth * losses["smooth"]
    if obj.lam_albedo_tv > 0:
        losses["albedo_tv"] = total_variation(out["canon_albedo"])
        total = total + obj.lam_albedo_tv * losses["albedo_tv"]
    if obj.lam_albedo_sparse > 0:
        losses["albedo_sparse"] = gradient_sparsity(out["canon_albedo"], obj.albedo_sparse_p)
        total = total + obj.lam_albedo_sparse * losses["albedo_sparse"]
    if obj.lam_rerender > 0 and stabilize:
        scene = rerender_scene(dec, out, gen, obj.rerender_mode, obj.rerender_light_xy,
                               intensities=obj.rerender_intensities, albedo_step=obj.rerender_albedo_step,
                               max_yaw=obj.rerender_yaw)
        losses["rerender"] = rerender_loss(dec, scene, light=teacher is None)
        total = total + obj.lam_rerender * losses["rerender"]
    if obj.lam_jitter > 0 and stabilize:
        twins = crop_images(_jitter_images(G, ws, gen), dec.input_crop) if twins is None else twins
        losses["jitter"] = _jitter_loss(dec, twins, out)
        total = total + obj.lam_jitter * losses["jitter"]
    if obj.lam_light_turn > 0:
        scene = turned_head_scene(dec, out, gen, obj.light_turn_yaw, obj.light_turn_pitch)
        losses["light_turn"] = light_turn_loss(dec, scene, out["light_raw"])
        total = total + obj.lam_light_turn * losses["light_turn"]
    if teacher is not None:
        losses["teacher"] = teacher.loss(out["light"], w)
        total = total + obj.lam_teacher * losses["teacher"]
    return losses, total, out


def _log_record(dec: Unsup3DDecomposer, done: int, seconds: float, total: torch.Tensor,
                losses: dict[str, torch.Tensor], out: dict[str, torch.Tensor], warned: bool) -> tuple[dict, bool]:
    """The log record of step `done` (losses and the decomposition's health), and whether the collapse warning
    has been given (once per call of train_decomposer)."""
    record = {"step": done, "seconds": round(seconds, 2), "total": float(total.detach())}
    record.update({k: float(v.detach()) for k, v in losses.items() if k != "total"})
    record.update(_health(out))
    if record["rotation_saturation"] > SATURATED and not warned:
        warned = True
        logger.warning("step %d: a rotation of the view sits near its +-%g deg limit (mean |raw| %.2f) and the "
                       "valid render covers %.0f %% of the image: the decomposition is collapsing (seen without "
                       "re-render consistency); consider restarting from an earlier checkpoint with both "
                       "stabilizers", done, dec.xyz_rotation_range, record["rotation_saturation"],
                       100 * record["valid_fraction"])
    return record, warned


def _train_loop(dec, G, D, optimizers, outdir, start, steps, seconds, config, preview_img, progress, every,
                bank, teacher, generator: str) -> None:
    from .visualize import save_decomposition_png

    seed, batch_size, truncation_psi = config["seed"], config["batch_size"], config["truncation_psi"]
    obj = _Objective.from_config(config, teacher is not None)
    checkpoint_every, log_every, preview_every = every
    device = preview_img.device
    warned = False
    # progress None: a bar only on a terminal (tqdm's own rule), as every other long job here
    bar = tqdm(range(start, steps), desc="train decomposer", initial=start, total=steps,
               disable=None if progress is None else not progress)
    for step in bar:
        t0 = time.perf_counter()
        gen = _step_generator(seed, step)
        if bank is None:
            ws, img = draw_images(G, batch_size, gen, truncation_psi, device)
            w, img, twins = ws[:, 0], crop_images(img, dec.input_crop), None
        else:
            (img, twins, w), ws = bank.batch(gen, batch_size, device), None
        losses, total, out = _batch_losses(dec, G, D, obj, teacher, step, gen, img, twins, ws, w)
        if not torch.isfinite(total):
            last = (f"the last good checkpoint is {outdir / CHECKPOINT}" if (outdir / CHECKPOINT).is_file() else
                    "no checkpoint was written yet")
            raise StyleGANDisentangleError(f"training diverged at step {step}: loss {float(total.detach())}; {last}; "
                                           "lower the learning rate")
        for opt in optimizers.values():
            opt.zero_grad(set_to_none=True)
        total.backward()
        for opt in optimizers.values():
            opt.step()
        seconds += time.perf_counter() - t0
        done = step + 1
        if done % log_every == 0 or done == steps:
            record, warned = _log_record(dec, done, seconds, total, losses, out, warned)
            with open(outdir / LOG, "a") as f:
                f.write(json.dumps(record) + "\n")
            bar.set_postfix(loss=f"{float(total.detach()):.3f}")
        if done % preview_every == 0 or done == steps:
            dec.eval()
            save_decomposition_png(outdir / f"preview_{done:06d}.png", dec, preview_img)
            dec.train()
        if done % checkpoint_every == 0 or done == steps:
            _save(dec, optimizers, outdir, done, config, seconds, generator)


def trained_nets_only(dec: Unsup3DDecomposer) -> Unsup3DDecomposer:
    """Drop the optimizer states (the file a user ships is the nets, a few MB)."""
    dec.optimizer_states = {}
    return dec

