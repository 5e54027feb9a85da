"""Click commands for the W-space models: train-model, make-videos, transfer-structure, transfer-motion,
recombine (and swap-attributes, from `cli_exchange`; map-factors, from `cli_factors`).

`register_model_commands(main)` adds them to the `stylegan-disentangle` group (cli.py calls it at its end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .cli_common import FINITE_FLOAT, SEED, crop_option, device_option, fail_cleanly, progress_setting

if TYPE_CHECKING:
    import torch

__all__ = ["register_model_commands"]


def _load_generator(pkl: str, device):
    from .checkpoints import load_network_pkl

    return fail_cleanly(lambda: load_network_pkl(pkl, device=device))["G_ema"].eval()


def _names(spec: str | None) -> list[str] | None:
    return [n.strip() for n in spec.split(",") if n.strip()] if spec else None


def _seed_ws(G, spec: str, option: str, truncation_psi: float = 1.0):
    from .latents import sample_latents
    from .utils.ranges import parse_seeds

    try:
        seeds = parse_seeds(spec)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None
    return seeds, sample_latents(G, seeds, truncation_psi=truncation_psi).ws


def _make_maker(G, pool, video: str, structure_dirs, structure_names, appearance_dirs, appearance_names,
                frames: int, clip_metric: str = "euclidean"):
    from .directions import DirectionSet
    from .models import DirectionVideoMaker, StyleMixingVideoMaker

    if video == "style-mixing":
        return StyleMixingVideoMaker(frames=frames).fit(pool)
    if not structure_dirs:
        raise click.BadParameter("--video directions needs --structure-dirs (a find-directions --outdir or a "
                                 "DirectionSet stem), or use --video style-mixing (no labels)",
                                 param_hint="--structure-dirs")

    def build():
        structure = DirectionSet.load(structure_dirs)
        appearance = DirectionSet.load(appearance_dirs) if appearance_dirs else None
        return DirectionVideoMaker(structure, appearance, structure_names=_names(structure_names),
                                   appearance_names=_names(appearance_names), frames=frames,
                                   metric=clip_metric).fit(pool)

    from .errors import StyleGANDisentangleError

    try:
        return build()
    except (KeyError, ValueError, StyleGANDisentangleError) as exc:
        raise click.ClickException(f"cannot make videos from {structure_dirs}: {exc}") from None


def _video_options(fn):
    options = [
        click.option("--video", type=click.Choice(["directions", "style-mixing"]), default="directions",
                     show_default=True, help="Clip maker: moves along structure directions, or label-free "
                                             "coarse-layer style mixing."),
        click.option("--structure-dirs", default=None, help="DirectionSet whose directions move (structure): a "
                     "find-directions --outdir or the set's stem."),
        click.option("--structure-names", default=None, help="Comma list selecting structure directions."),
        click.option("--appearance-dirs", default=None, help="DirectionSet of directions to keep still (a "
                     "find-directions --outdir or the set's stem)."),
        click.option("--appearance-names", default=None, help="Comma list selecting appearance directions."),
        click.option("--frames", type=click.IntRange(min=2), default=16, show_default=True,
                     help="Frames per clip."),
        click.option("--clip-metric", type=click.Choice(["euclidean", "covariance"]), default="euclidean",
                     show_default=True, help="--video directions: structure moves orthogonal to the appearance "
                                             "directions, or the smallest moves in W's covariance metric."),
        click.option("--pool", type=click.IntRange(min=2), default=20_000, show_default=True,
                     help="w samples the clips start from (identity-pose: the faces its pairs are drawn from, each "
                          "read by the decomposer once; attribute-exchange, factor-mapper: the faces the labeler "
                          "labels)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _write_json(path: Path, record: dict) -> None:
    from .directions.direction_set import to_jsonable
    from .utils import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(to_jsonable(record), f, indent=2)


def _provenance(G) -> dict:
    """What a command's config.json records of where its faces came from: the generator's weights hash (the one
    model files and banks record) and this package's version."""
    from . import __version__
    from .latents import generator_fingerprint

    return {"generator_sha256": generator_fingerprint(G), "version": __version__}


@click.command("train-model")
@click.argument("kind", type=click.Choice(["appearance-structure", "identity-pose", "attribute-exchange",
                                          "factor-mapper"]))
@click.argument("pkl")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@_video_options
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Training steps [default: 1500 for identity-pose, 3000 for the others].")
@click.option("--batch-size", type=click.IntRange(min=2), default=None,
              help="Batch size [default: 64 for identity-pose, whose every step renders and decomposes its batch; "
                   "256 for the others].")
@click.option("--lr", type=FINITE_FLOAT, default=None,
              help="Adam learning rate [default: 3e-3 for factor-mapper, 1e-3 for the others].")
@click.option("--seed", type=SEED, default=0, show_default=True)
@device_option()
@click.option("--app-dim", type=int, default=64, show_default=True, help="Appearance code size.")
@click.option("--struct-dim", type=int, default=8, show_default=True, help="Structure code size.")
@click.option("--hidden", type=click.IntRange(min=0), default=256, show_default=True,
              help="MLP width (0 = linear nets).")
@click.option("--decomposer", "decomposer_spec", default=None,
              help="identity-pose: the 3D decomposer that measures pose and identity ('synthetic', the default for "
                   "the shipped checkpoint; a trained checkpoint's path; an official name).")
@crop_option("--decomposer-crop")
@click.option("--kept", default="depth,albedo,image_albedo,light", show_default=True,
              help="identity-pose: the decomposer's readings a recombination keeps from the identity face, a comma "
                   "list of depth, albedo, image_albedo (the albedo the image shows), light.")
@click.option("--id-dim", type=int, default=64, show_default=True, help="identity-pose: identity code size.")
@click.option("--pose-dim", type=int, default=8, show_default=True, help="identity-pose: pose code size.")
@click.option("--cycle-weight", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="identity-pose: the recombined code's codes read back as the two faces'.")
@click.option("--components", type=click.IntRange(min=1), default=16, show_default=True,
              help="identity-pose: the kept readings' leading principal components, whitened, that the identity "
                   "loss compares (so a small part's change counts as much as the skin colour's).")
@click.option("--pose-weight", type=FINITE_FLOAT, default=10.0, show_default=True,
              help="identity-pose: the recombined face's measured rotation equals the pose face's.")
@click.option("--identity-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="identity-pose: the recombined face's measured depth and albedo equal the identity face's.")
@click.option("--move-weight", type=FINITE_FLOAT, default=None,
              help="identity-pose and attribute-exchange: the result's move in W is kept short (what the instrument "
                   "does not measure stays as it was) [default: 0.3 for identity-pose, 0.1 for attribute-exchange].")
@click.option("--labeler", default=None,
              help="attribute-exchange and factor-mapper: the labeler whose scalar labels describe the attributes or "
                   "factors (a registered name such as synthetic-oracle or decomposer3d, or 'module:attribute').")
@click.option("--factors", "factor_spec", default=None,
              help="factor-mapper: the factors and their labels, in --attributes' form (e.g. "
                   "'pose=yaw,pitch,roll;light=light_azimuth,light_elevation'); a factor's code has one dimension "
                   "per label.")
@click.option("--noise-dim", type=click.IntRange(min=0), default=32, show_default=True,
              help="factor-mapper: size of the noise code (what no label measures).")
@click.option("--imitate-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="factor-mapper: the mapped face's labels read as its codes ask.")
@click.option("--contrast-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="factor-mapper: two faces that differ in one factor agree on the noise code.")
@click.option("--prior-weight", type=FINITE_FLOAT, default=0.1, show_default=True,
              help="factor-mapper: real faces' noise codes have zero mean and unit covariance.")
@click.option("--attributes", "attribute_spec", default=None,
              help="attribute-exchange: the attributes and their labels, ';'-separated: NAME=LABEL,LABEL for an "
                   "attribute of several labels, or a comma list of labels each its own attribute "
                   "(e.g. 'expression=smile,mouth_open;pose=yaw,pitch,roll').")
@click.option("--held", multiple=True,
              help="attribute-exchange: comma list of labels never swapped that every swap must keep (e.g. identity "
                   "measurements); may be given several times.")
@click.option("--map-components", type=click.IntRange(min=1), default=8, show_default=True,
              help="attribute-exchange and factor-mapper: a map-valued label named in --attributes, --held or "
                   "--factors (the decomposer's depth, albedo, image_albedo) stands for its leading principal "
                   "components over the pool, this many (e.g. --factors 'identity=depth,albedo;pose=yaw,pitch,roll' "
                   "with --labeler decomposer3d: no labels at all).")
@click.option("--part-dim", type=click.IntRange(min=1), default=8, show_default=True,
              help="attribute-exchange: code size of each attribute's part.")
@click.option("--readout-hidden", type=click.IntRange(min=0), default=128, show_default=True,
              help="attribute-exchange and factor-mapper: MLP width of the readout of the labels (0: a ridge "
                   "regression).")
@click.option("--take-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="attribute-exchange: the swapped attribute's labels read as the exemplar's.")
@click.option("--keep-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="attribute-exchange: every other label reads as the target's.")
@click.option("--adv-weight", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="attribute-exchange: ELEGANT's adversarial term, a latent discriminator of W's distribution (off by "
                   "default: on the synthetic world it pulled the unlabeled identity along with the swapped "
                   "attribute, see AttributeExchangeModel).")
@click.option("--temperature", type=FINITE_FLOAT, default=0.1, show_default=True, help="InfoNCE temperature.")
@click.option("--rec-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="appearance-structure and factor-mapper: weight of the reconstruction of the faces' codes.")
@click.option("--swap-weight", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--app-weight", type=FINITE_FLOAT, default=0.05, show_default=True)
@click.option("--struct-weight", type=FINITE_FLOAT, default=0.05, show_default=True)
@click.option("--image-weight", type=FINITE_FLOAT, default=0.0, show_default=True,
              help="Weight of the image-space reconstruction through the frozen synthesis.")
@click.option("--motion-weight", type=FINITE_FLOAT, default=1.0, show_default=True,
              help="Weight of the motion decoder (a linear map from a change of structure code to a move in W, "
                   "the transfers' default); 0: none, transfers decode the codes.")
@click.option("--motion-metric", type=click.Choice(["euclidean", "covariance"]), default="covariance",
              show_default=True, help="--video directions: the clips the motion decoder learns from (covariance: "
                                      "how W moves among its samples when a structure readout changes; euclidean "
                                      "when the appearance directions do not pin identity, e.g. 3d-coupled ones).")
@click.option("--invariance-projection/--no-invariance-projection", default=True, show_default=True,
              help="After training, make the (linear) structure code exactly blind to the appearance augmentations.")
@click.option("--linear-structure/--mlp-structure", default=True, show_default=True,
              help="Structure code linear in w (what the linear motion decoder assumes), or with the MLP branch.")
@click.option("--val-every", type=int, default=250, show_default=True)
@click.option("--patience", type=int, default=None, help="Stop after this many validations without improvement.")
@click.option("--preview-every", type=int, default=500, show_default=True, help="Transfer-strip PNG every N steps.")
@click.option("--max-minutes", type=FINITE_FLOAT, default=None, help="Stop (with a checkpoint) after this much time.")
@click.option("--resume/--no-resume", default=True, show_default=True)
@click.pass_context
def train_model_cmd(ctx: click.Context, kind: str, pkl: str, outdir: str, video: str, structure_dirs, structure_names,
                    appearance_dirs, appearance_names, frames: int, clip_metric: str, pool: int, steps: int | None,
                    batch_size: int | None, lr: float | None, seed: int, device: torch.device, app_dim: int,
                    struct_dim: int, hidden: int, decomposer_spec: str | None,
                    decomposer_crop: tuple[float, ...] | None, kept: str, components: int, id_dim: int,
                    pose_dim: int, cycle_weight: float, pose_weight: float,
                    identity_weight: float, move_weight: float | None, labeler: str | None, factor_spec: str | None,
                    noise_dim: int, imitate_weight: float, contrast_weight: float, prior_weight: float,
                    attribute_spec: str | None, held: tuple[str, ...], map_components: int, part_dim: int,
                    readout_hidden: int,
                    take_weight: float, keep_weight: float, adv_weight: float,
                    temperature: float, rec_weight: float, swap_weight: float, app_weight: float, struct_weight: float,
                    image_weight: float, motion_weight: float, motion_metric: str, invariance_projection: bool,
                    linear_structure: bool,
                    val_every: int, patience: int | None, preview_every: int,
                    max_minutes: float | None, resume: bool) -> None:
    """Train a W-space model of KIND on PKL's latents; writes OUTDIR/model.pt, checkpoint.pt, log.jsonl,
    config.json and preview PNGs. Rerun to resume.

    appearance-structure (video-contrastive autoencoder): trained on latent videos (the video options); previews
    show target | source | result and clips.png the videos. identity-pose (IP-GAN style): trained on pairs of
    faces, each recombination measured by the 3D decomposer (--decomposer); previews show identity | pose | result.
    attribute-exchange (ELEGANT style): OUTDIR/bank holds the pool labeled by --labeler; trained on pairs of faces
    on opposite sides of one attribute at a time, each swap judged by a readout of the labels; previews show
    target | exemplar | the first attribute swapped. factor-mapper (DiscoFaceGAN style): OUTDIR/bank as above; a
    mapper from independent factor codes (one per --factors group) and noise to W; previews sweep each factor.
    """
    import numpy as np
    import torch

    torch.manual_seed(seed)  # the model's starting weights: the same command and --seed give the same model
    progress = progress_setting(ctx)
    train_args = {"val_every": val_every, "patience": patience, "preview_every": preview_every,
                  "max_seconds": max_minutes * 60 if max_minutes else None, "resume": resume, "progress": progress}
    if kind == "factor-mapper":
        from .cli_factors import train_factor_mapper

        train_factor_mapper(pkl, Path(outdir), labeler=labeler, factors=factor_spec, map_components=map_components,
                            readout_hidden=readout_hidden,
                            steps=3000 if steps is None else steps, batch_size=batch_size or 256,
                            lr=3e-3 if lr is None else lr, seed=seed,
                            device=device, pool=pool,
                            model_args={"noise_dim": noise_dim, "hidden": hidden, "rec_weight": rec_weight,
                                        "imitate_weight": imitate_weight,
                                        "contrast_weight": contrast_weight, "prior_weight": prior_weight},
                            train_args=train_args)
        return
    lr = 1e-3 if lr is None else lr
    if kind == "attribute-exchange":
        from .cli_exchange import train_attribute_exchange

        train_attribute_exchange(pkl, Path(outdir), labeler=labeler, attributes=attribute_spec,
                                 held=_names(",".join(held)) or [], map_components=map_components,
                                 readout_hidden=readout_hidden,
                                 steps=3000 if steps is None else steps, batch_size=batch_size or 256, lr=lr,
                                 seed=seed, device=device, pool=pool,
                                 model_args={"part_dim": part_dim, "hidden": hidden, "take_weight": take_weight,
                                             "keep_weight": keep_weight, "adv_weight": adv_weight,
                                             "move_weight": 0.1 if move_weight is None else move_weight},
                                 train_args=train_args)
        return
    if kind == "identity-pose":
        _train_identity_pose(pkl, Path(outdir), steps=1500 if steps is None else steps,
                             batch_size=batch_size or 64, lr=lr, seed=seed, device=device, pool=pool,
                             decomposer_spec=decomposer_spec, crop=decomposer_crop, kept=_names(kept) or [],
                             components=components,
                             model_args={"id_dim": id_dim, "pose_dim": pose_dim, "hidden": hidden,
                                         "cycle_weight": cycle_weight, "pose_weight": pose_weight,
                                         "identity_weight": identity_weight,
                                         "move_weight": 0.3 if move_weight is None else move_weight},
                             train_args=train_args)
        return
    steps = 3000 if steps is None else steps
    batch_size = batch_size or 256

    from .latents import generator_fingerprint, sample_latents
    from .models import AppearanceStructureAE, ClipPairSampler, save_clip_strips, train_model
    from .utils.images import image_grid, save_png, to_uint8

    out = Path(outdir)
    G = _load_generator(pkl, device)
    w_pool = sample_latents(G, np.arange(pool), device=device).ws[:, 0].cpu()
    maker = _make_maker(G, w_pool, video, structure_dirs, structure_names, appearance_dirs, appearance_names, frames,
                        clip_metric)
    motion_maker = None
    if motion_weight > 0 and video == "directions":
        motion_maker = _make_maker(G, w_pool, video, structure_dirs, structure_names, appearance_dirs,
                                   appearance_names, frames, motion_metric)
    sampler = fail_cleanly(lambda: ClipPairSampler(maker, w_pool, G.num_ws, batch_size=batch_size, seed=seed,
                                                   motion_maker=motion_maker))
    try:  # the model's settings are checked before anything is written
        model = fail_cleanly(lambda: AppearanceStructureAE(
            G.num_ws, G.w_dim, app_dim=app_dim, struct_dim=struct_dim, hidden=hidden, temperature=temperature,
            rec_weight=rec_weight, swap_weight=swap_weight, app_weight=app_weight, struct_weight=struct_weight,
            image_weight=image_weight, motion_weight=motion_weight, linear_structure=linear_structure,
            invariance_projection=invariance_projection,
            generator_sha256=generator_fingerprint(G)).set_normalization(w_pool))
    except ValueError as exc:  # a setting out of range (the model names it)
        raise click.UsageError(str(exc)) from None
    save_clip_strips(G, maker.clips(w_pool[:4], G.num_ws, torch.Generator().manual_seed(seed)), out / "clips.png")
    pairs = min(4, len(sampler.val_pool) // 2)  # up to four target | source pairs from the validation pool
    preview_t, preview_s = sampler.val_pool[:pairs], sampler.val_pool[pairs:2 * pairs]

    def preview(m, path):
        with torch.no_grad():
            rows = [preview_t, preview_s, m.transfer_structure(preview_t, preview_s).cpu()]
            imgs = [to_uint8(G.synthesis(m.check_ws(r).to(device), noise_mode="const")) for r in rows]
        save_png(image_grid(np.stack(imgs, 1).reshape(-1, *imgs[0].shape[1:]), cols=3), path,
                 upscale=max(1, 128 // G.img_resolution))

    config = {"command": "train-model", "pkl": pkl, "video": video, "structure_dirs": structure_dirs,
              "structure_names": structure_names, "appearance_dirs": appearance_dirs,
              "appearance_names": appearance_names, "frames": frames, "clip_metric": clip_metric, "pool": pool,
              "batch_size": batch_size, "motion_metric": motion_metric if motion_maker is not None else None}
    result = fail_cleanly(lambda: train_model(
        model, sampler, out, steps=steps, lr=lr, seed=seed, device=device, G=G if image_weight > 0 else None,
        val_every=val_every, patience=patience, preview_every=preview_every, preview_fn=preview,
        max_seconds=max_minutes * 60 if max_minutes else None, resume=resume,
        progress=progress, config=config))
    _report(kind, result)


def _report(kind: str, result) -> None:
    losses = ", ".join(f"{k} {v:.4g}" for k, v in result.last_losses.items())
    click.echo(f"{kind}: {result.step} steps in {result.seconds:.1f} s ({losses}) -> {result.files['model']}")


def _train_identity_pose(pkl: str, out: Path, *, steps: int, batch_size: int, lr: float, seed: int, device, pool: int,
                         decomposer_spec: str | None, crop, kept: list[str], components: int, model_args: dict,
                         train_args: dict) -> None:
    """train-model identity-pose: measure a w pool with the decomposer, then train IdentityPoseModel on pairs."""
    import numpy as np

    from .analysis.find_directions import resolve_decomposer
    from .checkpoints import open_network_pkl
    from .labels.decomposer.labeler import load_decomposer, warn_if_trained_on_another
    from .latents import generator_fingerprint, sample_latents
    from .models import DecomposerMeasure, IdentityPoseModel, RecombinationSampler, train_model
    from .models.identity_pose import KEPT_READINGS

    if pool < 20:
        raise click.BadParameter(f"{pool} faces: identity-pose needs at least 20 (a tenth of them, at most 256, "
                                 "are kept for validation)", param_hint="--pool")
    if not kept or set(kept) - set(KEPT_READINGS) or len(set(kept)) != len(kept):
        raise click.BadParameter(f"{','.join(kept)}: name distinct readings among {', '.join(KEPT_READINGS)}",
                                 param_hint="--kept")
    net = fail_cleanly(lambda: open_network_pkl(pkl, device=device))
    G = net.data["G_ema"].eval()
    spec = fail_cleanly(lambda: resolve_decomposer(decomposer_spec, net.path))
    dec = fail_cleanly(lambda: load_decomposer(spec, device=device))
    warn_if_trained_on_another(dec, G, spec, pkl)
    try:
        measure = DecomposerMeasure(G, dec, kept=kept, components=components, crop=crop).to(device)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--components") from None
    ws_pool = sample_latents(G, np.arange(pool), device=device).ws
    sampler = fail_cleanly(lambda: RecombinationSampler(
        ws_pool.cpu(), measure.calibrate(ws_pool, progress=train_args["progress"]), G.num_ws,
        batch_size=batch_size, seed=seed, val_size=min(256, pool // 10)))
    model = fail_cleanly(lambda: IdentityPoseModel(G.num_ws, G.w_dim, generator_sha256=generator_fingerprint(G),
                                                   **model_args).set_normalization(ws_pool))
    shown_a, shown_b = sampler.validation("cpu")["a"][:4], sampler.validation("cpu")["b"][:4]

    def preview(m, path):
        _save_rows(G, [shown_a, shown_b, m.recombine(shown_a, shown_b).cpu()], path, ["identity", "pose", "result"])

    config = {"command": "train-model", "pkl": pkl, "decomposer": spec, "decomposer_crop": crop, "kept": kept,
              "components": components, "pool": pool, "batch_size": batch_size}
    result = fail_cleanly(lambda: train_model(model, sampler, out, steps=steps, lr=lr, lr_schedule="cosine", seed=seed,
                                              device=device, G=measure, preview_fn=preview, config=config,
                                              **train_args))
    _report("identity-pose", result)


@click.command("make-videos")
@click.argument("pkl")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@_video_options
@click.option("--count", type=click.IntRange(min=1), default=4, show_default=True, help="Number of clips.")
@click.option("--seed", type=SEED, default=0, show_default=True)
@device_option()
def make_videos_cmd(pkl: str, outdir: str, video: str, structure_dirs, structure_names, appearance_dirs,
                    appearance_names, frames: int, clip_metric: str, pool: int, count: int, seed: int,
                    device: torch.device) -> None:
    """Make COUNT synthetic latent videos of PKL: OUTDIR/clips.npy (ws [count, frames, num_ws, w_dim]) and
    clips.png (a row per clip)."""
    import numpy as np
    import torch

    from .latents import sample_latents
    from .models import save_clip_strips
    from .utils import atomic_write_path

    G = _load_generator(pkl, device)
    w_pool = sample_latents(G, np.arange(max(pool, count, 2)), device=device).ws[:, 0].cpu()
    maker = _make_maker(G, w_pool, video, structure_dirs, structure_names, appearance_dirs, appearance_names, frames,
                        clip_metric)
    gen = torch.Generator().manual_seed(seed)
    start = w_pool[torch.randperm(len(w_pool), generator=gen)[:count]]
    clips = maker.clips(start, G.num_ws, gen)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write_path(out / "clips.npy") as tmp:
        np.save(tmp, clips.numpy())
    save_clip_strips(G, clips, out / "clips.png", upscale=max(1, 64 // G.img_resolution))
    _write_json(out / "config.json", {"command": "make-videos", "pkl": pkl, "video": video, "count": count,
                                      "frames": frames, "clip_metric": clip_metric, "seed": seed,
                                      "structure_dirs": structure_dirs, "appearance_dirs": appearance_dirs,
                                      **_provenance(G)})
    click.echo(f"wrote {count} clips of {frames} frames to {out / 'clips.npy'} and {out / 'clips.png'}")


def _ws_file(G, path: str) -> torch.Tensor:
    """ws [N, num_ws, w_dim] from an .npy of ws or w (e.g. project's ws.npy); a clear error naming the file."""
    from .analysis.run_edit import read_npy_codes
    from .latents import check_ws

    raw = fail_cleanly(lambda: read_npy_codes(path))
    return fail_cleanly(lambda: check_ws(raw, G.num_ws, G.w_dim, what=f"the codes in {path}"))


def _clip_file(G, path: str, clip_index: int) -> torch.Tensor:
    """One clip ws [T, num_ws, w_dim] from an .npy of a clip ([T, num_ws, w_dim], or w [T, w_dim]) or of clips
    ([B, T, num_ws, w_dim], make-videos' clips.npy; `clip_index` picks one); a clear error naming the file."""
    from .analysis.run_edit import read_npy_codes
    from .latents import check_ws

    raw = fail_cleanly(lambda: read_npy_codes(path))
    if raw.ndim == 4:
        if not 0 <= clip_index < len(raw):
            raise click.BadParameter(f"{path} holds {len(raw)} clips", param_hint="--clip-index")
        raw = raw[clip_index]
    clip = fail_cleanly(lambda: check_ws(raw, G.num_ws, G.w_dim, what=f"the clip in {path}"))
    if len(clip) < 2:
        raise click.ClickException(f"{path}: a clip needs at least 2 frames, this one has {len(clip)}")
    return clip


def _paired_seeds(G, spec_a: str, option_a: str, spec_b: str, option_b: str, truncation_psi: float,
                  file_a: str | None = None, file_b: str | None = None):
    """Two seed lists and their ws, brought to one count N (a single seed on one side is repeated):
    (seeds_a, ws_a [N, ...], seeds_b, ws_b [N, ...]); equal counts or one side of one, else a BadParameter. A side
    given as a file of ws (`file_a`, `file_b`) takes its codes from there, its 'seeds' being the file's row
    numbers."""
    def side(spec, option, path):
        if path is None:
            return _seed_ws(G, spec, option, truncation_psi)
        ws = _ws_file(G, path)
        return list(range(len(ws))), ws

    seeds_a, ws_a = side(spec_a, option_a, file_a)
    seeds_b, ws_b = side(spec_b, option_b, file_b)
    if len(seeds_a) != len(seeds_b) and 1 not in (len(seeds_a), len(seeds_b)):
        raise click.BadParameter(f"{len(seeds_a)} seeds in {option_a} but {len(seeds_b)} in {option_b}; give equal "
                                 "counts or one of them", param_hint=option_b)
    n = max(len(seeds_a), len(seeds_b))
    seeds_a, seeds_b = seeds_a * (n // len(seeds_a)), seeds_b * (n // len(seeds_b))
    return seeds_a, ws_a.expand(n, -1, -1), seeds_b, ws_b.expand(n, -1, -1)


def _write_pair_outputs(G, out: Path, png: str, inputs: dict[str, tuple[list[int], torch.Tensor]],
                        result: torch.Tensor, record: dict) -> Path:
    """What the commands on pairs of seeds write into `out`: `png` (a row per pair; columns: the two inputs, by
    name, and the result), NAME_ws.npy for each input and result_ws.npy, and config.json (`record` with each input's
    seeds as NAME_seeds)."""
    (name_a, (seeds_a, ws_a)), (name_b, (seeds_b, ws_b)) = inputs.items()
    out.mkdir(parents=True, exist_ok=True)
    _save_rows(G, [ws_a, ws_b, result], out / png, [name_a, name_b, "result"],
               [f"seeds {a} / {b}" for a, b in zip(seeds_a, seeds_b)])
    for name, x in ((f"{name_a}_ws", ws_a), (f"{name_b}_ws", ws_b), ("result_ws", result)):
        _save_npy(out / f"{name}.npy", x.detach().cpu().numpy())
    _write_json(out / "config.json", {**record, f"{name_a}_seeds": seeds_a, f"{name_b}_seeds": seeds_b,
                                      **_provenance(G)})
    return out


def _load_ae(model: str, G, allow_foreign: bool, device, kind: str | None = None, command: str | None = None):
    """The W-space model in file `model`, for G; with `kind`, a model of another kind is refused, saying what
    `command` needs and how to train one."""
    from .errors import StyleGANDisentangleError
    from .models import ModelKindError, load_model

    try:  # load_model refuses a model of another kind before it builds the weights
        return load_model(model, G, kind=kind, allow_foreign=allow_foreign, device=device)
    except ModelKindError as exc:
        article = "an" if kind[0] in "aeiou" else "a"
        raise click.ClickException(f"{model}: a {exc.found} model; {command} needs {article} {kind} model "
                                   f"(train-model {kind})") from None
    except StyleGANDisentangleError as exc:
        raise click.ClickException(str(exc)) from None


def _save_rows(G, rows, path: Path, titles: list[str], row_labels: list[str] | None = None) -> None:
    """rows: list of ws [N, num_ws, w_dim] (one column each, titled) -> PNG with N rows."""
    import numpy as np
    import torch

    from .utils.images import save_titled_grid, to_uint8

    device = next(G.parameters()).device
    with torch.no_grad():
        imgs = [to_uint8(G.synthesis(r.to(device), noise_mode="const")) for r in rows]
    save_titled_grid(np.stack(imgs, 1), path, titles, row_labels)


def _save_npy(path: Path, array) -> None:
    import numpy as np

    from .utils import atomic_write_path

    with atomic_write_path(path) as tmp:
        np.save(tmp, array)


def _mode_option(otherwise: str):
    """--mode of the transfer commands: 'auto' (None to the model) = the motion decoder when the model has one,
    else `otherwise`."""
    rest = [m for m in ("residual", "direct") if m != otherwise][0]
    return click.option("--mode", type=click.Choice(["auto", "motion", "residual", "direct"]), default="auto",
                        show_default=True, callback=lambda ctx, param, value: None if value == "auto" else value,
                        help=f"How the result is made: the motion decoder (auto, when the model has one), the "
                             f"{otherwise} decode (auto otherwise) or the {rest} decode (see "
                             "AppearanceStructureAE.transfer_structure / transfer_motion).")


@click.command("transfer-structure")
@click.argument("model")
@click.argument("pkl")
@click.option("--target-seeds", default="0-3", show_default=True, help="Seeds of the faces that keep appearance.")
@click.option("--source-seeds", default="10-13", show_default=True, help="Seeds giving pose / expression.")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--allow-foreign", is_flag=True, help="Use a model trained on another generator.")
@_mode_option("residual")
@device_option()
def transfer_structure_cmd(model: str, pkl: str, target_seeds: str, source_seeds: str, truncation_psi: float,
                           outdir: str, allow_foreign: bool, mode: str | None, device: torch.device) -> None:
    """Expression / pose transfer with MODEL: OUTDIR/transfer.png (rows: target | source | result) and the ws
    (target_ws.npy, source_ws.npy, result_ws.npy, each [N, num_ws, w_dim])."""

    G = _load_generator(pkl, device)
    ae = _load_ae(model, G, allow_foreign, device, "appearance-structure", "transfer-structure")
    t_seeds, t_ws, s_seeds, s_ws = _paired_seeds(G, target_seeds, "--target-seeds", source_seeds, "--source-seeds",
                                                 truncation_psi)
    result = fail_cleanly(lambda: ae.transfer_structure(t_ws, s_ws, mode=mode))
    out = _write_pair_outputs(G, Path(outdir), "transfer.png", {"target": (t_seeds, t_ws), "source": (s_seeds, s_ws)},
                              result, {"command": "transfer-structure", "model": model, "pkl": pkl,
                                       "truncation_psi": truncation_psi, "allow_foreign": allow_foreign,
                                       "mode": mode or "auto"})
    click.echo(f"wrote {out / 'transfer.png'} (target | source | result) and the ws")


@click.command("transfer-motion")
@click.argument("model")
@click.argument("pkl")
@click.option("--source-clip", type=click.Path(dir_okay=False, exists=True), required=True,
              help="A .npy clip [T, num_ws, w_dim] or clips [B, T, num_ws, w_dim] (from make-videos).")
@click.option("--clip-index", type=int, default=0, show_default=True, help="Which clip of a [B, ...] file.")
@click.option("--target-seeds", default="0-3", show_default=True)
@click.option("--relative", is_flag=True, help="Add the source's motion to the target's own structure.")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--allow-foreign", is_flag=True, help="Use a model trained on another generator.")
@_mode_option("direct")
@device_option()
def transfer_motion_cmd(model: str, pkl: str, source_clip: str, clip_index: int, target_seeds: str, relative: bool,
                        outdir: str, allow_foreign: bool, mode: str | None, device: torch.device) -> None:
    """Motion transfer: the source clip's structure drives each target. OUTDIR/motion.png (first row: the source
    clip; then one row per target), result_ws.npy [N, T, num_ws, w_dim]."""
    import torch

    G = _load_generator(pkl, device)
    ae = _load_ae(model, G, allow_foreign, device, "appearance-structure", "transfer-motion")
    clip = _clip_file(G, source_clip, clip_index)
    t_seeds, t_ws = _seed_ws(G, target_seeds, "--target-seeds")
    result = fail_cleanly(lambda: ae.transfer_motion(t_ws, clip, relative=relative, mode=mode))
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    frames = torch.as_tensor(clip, dtype=torch.float32)
    rows = [torch.cat([frames[t:t + 1], result[:, t].cpu()]) for t in range(len(frames))]
    _save_rows(G, rows, out / "motion.png", [f"frame {t}" for t in range(len(frames))],
               ["source clip"] + [f"seed {s}" for s in t_seeds])
    _save_npy(out / "result_ws.npy", result.cpu().numpy())
    _write_json(out / "config.json", {"command": "transfer-motion", "model": model, "pkl": pkl,
                                      "source_clip": source_clip, "clip_index": clip_index, "target_seeds": t_seeds,
                                      "relative": relative, "allow_foreign": allow_foreign,
                                      "mode": mode or "auto", **_provenance(G)})
    click.echo(f"wrote {out / 'motion.png'} (row 0: source clip; one row per target) and result_ws.npy")


@click.command("recombine")
@click.argument("model")
@click.argument("pkl")
@click.option("--identity-seeds", default="0-3", show_default=True, help="Seeds of the faces that give identity.")
@click.option("--pose-seeds", default="10-13", show_default=True, help="Seeds of the faces that give the pose.")
@click.option("--trunc", "truncation_psi", type=FINITE_FLOAT, default=1.0, show_default=True)
@click.option("--mode", type=click.Choice(["residual", "direct"]), default="residual", show_default=True,
              help="residual: the identity face moved by decode(its identity, new pose) - decode(its identity, its "
                   "pose); direct: decode(its identity, new pose).")
@click.option("--outdir", type=click.Path(file_okay=False), required=True)
@click.option("--allow-foreign", is_flag=True, help="Use a model trained on another generator.")
@device_option()
def recombine_cmd(model: str, pkl: str, identity_seeds: str, pose_seeds: str, truncation_psi: float, mode: str,
                  outdir: str, allow_foreign: bool, device: torch.device) -> None:
    """Identity / pose recombination with an identity-pose MODEL: each identity face in its pose face's pose.
    OUTDIR/recombination.png (rows: identity | pose | result) and the ws (identity_ws.npy, pose_ws.npy,
    result_ws.npy, each [N, num_ws, w_dim])."""
    G = _load_generator(pkl, device)
    ip = _load_ae(model, G, allow_foreign, device, "identity-pose", "recombine")
    i_seeds, i_ws, p_seeds, p_ws = _paired_seeds(G, identity_seeds, "--identity-seeds", pose_seeds, "--pose-seeds",
                                                 truncation_psi)
    result = fail_cleanly(lambda: ip.recombine(i_ws, p_ws, mode=mode))
    out = _write_pair_outputs(G, Path(outdir), "recombination.png",
                              {"identity": (i_seeds, i_ws), "pose": (p_seeds, p_ws)}, result,
                              {"command": "recombine", "model": model, "pkl": pkl, "truncation_psi": truncation_psi,
                               "mode": mode, "allow_foreign": allow_foreign})
    click.echo(f"wrote {out / 'recombination.png'} (identity | pose | result) and the ws")


def register_model_commands(main: click.Group) -> None:
    """Add the model commands to the `stylegan-disentangle` group."""
    from .cli_exchange import swap_attributes_cmd
    from .cli_factors import map_factors_cmd

    for command in (train_model_cmd, make_videos_cmd, transfer_structure_cmd, transfer_motion_cmd, recombine_cmd,
                    swap_attributes_cmd, map_factors_cmd):
        main.add_command(command)
