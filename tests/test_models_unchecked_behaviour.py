"""Behaviour of the W-space models that no other test checked (a mutation audit of stylegan_disentangle/models/):
model files (atomic, versioned, complete, their summary), the training loop (Adam with its schedule and weight
decay, every RNG restored on resume, settings and no-resume, log trimming, divergence, best weights, time limit,
an early stop that stays stopped, finish_training's step, an atomic checkpoint), the input checks of the base
class, each model's losses as the sums their docstrings give, transfers and edits, the readout, the latent videos
and the evaluation helpers."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError
from stylegan_disentangle.models import (
    AppearanceStructureAE,
    AttributeExchangeModel,
    ClipPairSampler,
    DecomposerMeasure,
    DirectionVideoMaker,
    ExchangeSampler,
    FactorMapper,
    FactorSampler,
    IdentityPoseModel,
    LatentReadout,
    ModelFileError,
    RecombinationSampler,
    StyleMixingVideoMaker,
    WSpaceModel,
    info_nce,
    load_checkpoint,
    load_model,
    read_model_file,
    smooth_noise,
    train_model,
)
from stylegan_disentangle.models.evaluate import copy_coarse_layers, linear_probe_r2
from stylegan_disentangle.models.io import model_summary
from tests.helpers import orthonormal_rows, random_ws, tiny_networks

NUM_WS, W_DIM = 3, 12


def _perturbed(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values in every parameter (a fresh MLP's last layer is zero), so that every term of a loss matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen))
    return model


def _pool(n: int = 400, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, W_DIM, generator=gen) * torch.linspace(0.5, 2.0, W_DIM) + 0.3


def _wplus(n: int, seed: int) -> torch.Tensor:
    """ws whose layers differ (a W+ code)."""
    return torch.randn(n, NUM_WS, W_DIM, generator=torch.Generator().manual_seed(seed)) * 1.5 + 0.2


def _ae(seed: int = 0, **kwargs) -> AppearanceStructureAE:
    torch.manual_seed(seed)
    kwargs = {"app_dim": 5, "struct_dim": 3, "hidden": 8, **kwargs}
    return AppearanceStructureAE(NUM_WS, W_DIM, generator_sha256="g" * 64, **kwargs).set_normalization(_pool())


def _clip_sampler(batch_size: int = 16, motion: bool = False) -> ClipPairSampler:
    pool = _pool()
    dirs = torch.nn.functional.normalize(torch.randn(4, W_DIM, generator=torch.Generator().manual_seed(2)), dim=1)
    dirs = dirs.numpy()
    maker = DirectionVideoMaker(dirs[:2], dirs[2:], frames=6).fit(pool)
    mover = DirectionVideoMaker(dirs[:2], dirs[2:], frames=6, metric="covariance").fit(pool) if motion else None
    return ClipPairSampler(maker, pool, NUM_WS, batch_size=batch_size, seed=0, val_size=32, motion_maker=mover)


def _rel(model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The models' squared error relative to W's mean variance (the docstrings' 'relative to W's mean variance')."""
    return F.mse_loss(x, y) / (model.w_std ** 2).mean()


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- model files ------------------------------------------------------------------------------------------------------


def test_a_failed_save_leaves_the_previous_model_file_intact(tmp_path, monkeypatch):
    path = _ae().save(tmp_path / "m.pt")
    before = path.read_bytes()

    def half_written(obj, f, *args, **kwargs):  # a save that dies half way (disk full, killed process)
        Path(f).write_bytes(before[: len(before) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        _ae(seed=1).save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]
    assert _same_state(load_model(path), _ae())


def _rewrite(path: Path, **changes) -> Path:
    record = torch.load(path, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del record[key]
        else:
            record[key] = value
    torch.save(record, path)
    return path


def test_a_newer_incomplete_or_misfitting_model_file_is_refused_by_name(tmp_path):
    ae = _ae()
    newer = _rewrite(ae.save(tmp_path / "newer.pt"), format_version=2)
    with pytest.raises(ModelFileError, match=r"newer.pt: model file format 2 is newer than this version reads \(1\)"):
        load_model(newer)
    lacking = _rewrite(ae.save(tmp_path / "lacking.pt"), state_dict=None)
    with pytest.raises(ModelFileError, match=r"lacking.pt: model file lacks \['state_dict'\]"):
        read_model_file(lacking)
    state = {k: v for k, v in ae.state_dict().items() if k != "decoder.linear.bias"}
    misfit = _rewrite(ae.save(tmp_path / "misfit.pt"), state_dict=state)
    with pytest.raises(ModelFileError, match="misfit.pt: its 'appearance-structure' weights do not fit"):
        load_model(misfit)


def test_a_loaded_model_is_in_eval_mode_and_keeps_its_info(tmp_path):
    ae = _ae().train()
    path = ae.save(tmp_path / "m.pt", info={"step": 7, "note": "x"})
    assert not load_model(path).training and not AppearanceStructureAE.load(path).training
    assert read_model_file(path)["info"] == {"step": 7, "note": "x"}
    summary = model_summary(path)
    assert summary["info.step"] == 7 and summary["info.note"] == "x" and summary["config.app_dim"] == 5
    # the number of values in the state dict (not the number of tensors)
    assert summary["state_dict_values"] == sum(v.numel() for v in ae.state_dict().values())
    assert "config.generator_sha256" not in summary and summary["generator_sha256"] == "g" * 64


# --- the training loop ------------------------------------------------------------------------------------------------


def test_train_model_is_adam_on_the_total_loss_with_its_cosine_schedule_and_weight_decay(tmp_path):
    sampler, steps, lr, decay = _clip_sampler(), 5, 3e-3, 0.1
    result = train_model(_ae(), sampler, tmp_path, steps=steps, lr=lr, lr_schedule="cosine", weight_decay=decay,
                         device="cpu", progress=False)
    model = _ae().train()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)
    with torch.enable_grad():  # the tests run without grad by default (conftest)
        for i in range(steps):  # batch i is sampler.sample(i); the rate lr * (1 + cos(pi i / steps)) / 2
            for group in opt.param_groups:
                group["lr"] = float(lr * 0.5 * (1 + math.cos(math.pi * i / steps)))
            loss = model.training_losses(sampler.sample(i, torch.device("cpu")))["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    assert _same_state(result.model, model)  # the same arithmetic: bit-identical
    assert _same_state(load_model(result.files["model"]), model)


class NoisyLine(WSpaceModel):
    """A W-space model whose loss draws from torch's, numpy's and Python's global RNGs (input noise), with a
    scripted validation metric and a record of finish_training's step."""

    kind = "test-noisy-line"

    def __init__(self, val_metrics=()) -> None:
        super().__init__(1, 4)
        self.weight = nn.Parameter(torch.zeros(4))
        self.val_metrics, self.val_calls, self.finished_at = list(val_metrics), 0, None

    def training_losses(self, batch, G=None):
        w = self.check_ws(batch["w"])[:, 0]
        noise = 0.1 * torch.randn(w.shape) + 0.01 * float(np.random.normal()) + 0.01 * random.gauss(0, 1)
        return {"total": ((w + noise) @ self.weight - batch["y"]).pow(2).mean()}

    def validation_metric(self, batch, G=None):
        self.val_calls += 1
        return self.val_metrics[self.val_calls - 1] if self.val_metrics else float(self.training_losses(batch)["total"])

    def finish_training(self, sampler, step):
        self.finished_at = step


class LineSampler:
    """y = w . (1, -2, 3, 0.5) on 8 rows per batch, seeded by the step; `nan_at`: that step's labels are NaN."""

    def __init__(self, nan_at: int | None = None) -> None:
        self.nan_at, self.asked = nan_at, []

    def _batch(self, seed: int) -> dict[str, torch.Tensor]:
        w = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed))
        return {"w": w, "y": w @ torch.tensor([1.0, -2.0, 3.0, 0.5])}

    def sample(self, step, device):
        self.asked.append(step)
        batch = self._batch(step)
        if step == self.nan_at:
            batch["y"] = torch.full_like(batch["y"], float("nan"))
        return batch

    def validation(self, device):
        return self._batch(-1)


def _line(tmp_path, name, steps, model=None, sampler=None, **kwargs):
    return train_model(model if model is not None else NoisyLine(), sampler or LineSampler(), tmp_path / name,
                       steps=steps, lr=0.05, device="cpu", progress=False, **kwargs)


def test_resume_restores_the_torch_numpy_and_python_rngs(tmp_path):
    straight = _line(tmp_path, "a", 8).model
    _line(tmp_path, "b", 5)
    np.random.seed(123)  # whatever the caller's RNGs hold in between
    random.seed(123)
    resumed = _line(tmp_path, "b", 8)
    assert resumed.step == 8 and torch.equal(straight.weight, resumed.model.weight)
    assert not torch.equal(straight.weight, _line(tmp_path, "c", 8, seed=1).model.weight)  # the noise matters


def test_resuming_with_another_learning_rate_is_refused(tmp_path):
    _line(tmp_path, "run", 2)
    with pytest.raises(StyleGANDisentangleError, match=r"trained with lr=0.05; this call asks for lr=0.01"):
        train_model(NoisyLine(), LineSampler(), tmp_path / "run", steps=4, lr=0.01, device="cpu", progress=False)


def test_no_resume_starts_again_with_a_fresh_log(tmp_path):
    _line(tmp_path, "run", 5, log_every=1)
    again = _line(tmp_path, "run", 3, log_every=1, resume=False)
    assert again.step == 3 and torch.equal(again.model.weight, _line(tmp_path, "fresh", 3).model.weight)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]


class Interrupted(LineSampler):
    def sample(self, step, device):
        if step == 5:
            raise KeyboardInterrupt("simulated interruption")
        return super().sample(step, device)


def test_a_resumed_run_logs_every_step_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _line(tmp_path, "run", 8, sampler=Interrupted(), log_every=1, checkpoint_every=2)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 4  # steps 1-5 logged, 5 not saved
    _line(tmp_path, "run", 8, log_every=1, checkpoint_every=2)
    lines = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, 9))


def test_a_diverging_run_stops_and_names_its_last_good_checkpoint(tmp_path):
    with pytest.raises(StyleGANDisentangleError, match=r"diverged at step 3 \(loss nan\).*checkpoint.pt"):
        _line(tmp_path, "run", 6, sampler=LineSampler(nan_at=2), checkpoint_every=1)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert ckpt["step"] == 2 and torch.isfinite(ckpt["model"]["weight"]).all()


def test_the_best_validated_weights_are_the_ones_returned_and_saved(tmp_path):
    model = NoisyLine(val_metrics=[3.0, 1.0, 2.0, 5.0])  # validated at steps 1-4: the best is step 2
    result = _line(tmp_path, "run", 4, model=model, val_every=1)
    at_two = _line(tmp_path, "two", 2).model
    assert result.best_step == 2 and result.best_metric == 1.0
    assert torch.equal(result.model.weight, at_two.weight)
    assert torch.equal(read_model_file(result.files["model"])["state_dict"]["weight"], at_two.weight)
    assert not torch.equal(_line(tmp_path, "four", 4).model.weight, at_two.weight)


def test_max_seconds_ends_the_run_with_a_checkpoint_that_resumes(tmp_path):
    short = _line(tmp_path, "run", 6, max_seconds=0.0)  # out of time after the first step
    assert short.step == 1 and load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 1
    resumed = _line(tmp_path, "run", 6)
    assert resumed.step == 6 and torch.equal(resumed.model.weight, _line(tmp_path, "ref", 6).model.weight)


def test_an_early_stopped_run_stays_stopped_when_called_again(tmp_path):
    first = _line(tmp_path, "run", 50, model=NoisyLine(val_metrics=[1.0, 1.0, 1.0]), val_every=2, patience=2)
    assert first.stopped_early and first.step == 6
    sampler = LineSampler()
    again = _line(tmp_path, "run", 50, model=NoisyLine(val_metrics=[1.0] * 30), sampler=sampler, val_every=2,
                  patience=2)
    assert again.stopped_early and again.step == 6 and sampler.asked == []
    assert torch.equal(again.model.weight, first.model.weight)


def test_finish_training_gets_the_final_step_and_the_last_step_is_checkpointed(tmp_path):
    result = _line(tmp_path, "run", 5, checkpoint_every=3)
    assert result.model.finished_at == 5
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 5


def test_a_checkpoint_that_fails_to_save_leaves_the_last_good_one(tmp_path, monkeypatch):
    _line(tmp_path, "run", 2)
    good = (tmp_path / "run" / "checkpoint.pt").read_bytes()

    def half_written(obj, f, *args, **kwargs):
        Path(f).write_bytes(good[:100])
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="disk full"):
        _line(tmp_path, "run", 4, checkpoint_every=1)
    monkeypatch.undo()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == good
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 2


# --- the base class ---------------------------------------------------------------------------------------------------


def test_base_class_input_checks():
    with pytest.raises(ValueError, match=r"loss weights must be >= 0, got \{'move_weight': nan\}"):
        IdentityPoseModel(NUM_WS, W_DIM, move_weight=float("nan"))
    with pytest.raises(ValueError, match="num_ws and w_dim must be positive, got 3 and 0"):
        AppearanceStructureAE(NUM_WS, 0)
    with pytest.raises(LatentError, match="at least 2 samples, got 1"):
        AppearanceStructureAE(NUM_WS, W_DIM).set_normalization(torch.zeros(1, W_DIM))
    ae = _ae()
    with pytest.raises(LatentError, match=r"decode needs appearance \[N, 5\] and structure \[N, 3\], got \(2, 5\) and "
                                          r"\(3, 3\)"):
        ae.decode(torch.zeros(2, 5), torch.zeros(3, 3))
    with pytest.raises(LatentError, match="decode got NaN or inf codes"):
        ae.decode(torch.zeros(2, 5), torch.tensor([[0.0, float("inf"), 0.0]] * 2))


def test_a_constant_w_dimension_is_standardized_by_the_floor_not_by_zero():
    pool = _pool()
    pool[:, 3] = 0.7
    ae = _perturbed(AppearanceStructureAE(NUM_WS, W_DIM, app_dim=5, struct_dim=3, hidden=8)).set_normalization(pool)
    assert float(ae.w_std[3]) == pytest.approx(1e-6)
    assert torch.isfinite(ae(pool[:4])).all()


def test_nets_that_pass_their_input_through_reproduce_w_from_the_pool_statistics():
    """The nets read W standardized per dimension with the pool's mean and std, and their output is mapped back:
    an identity code and a decoder that returns it give the pool-standardized w and then w itself."""
    pool = _pool()
    model = IdentityPoseModel(NUM_WS, W_DIM, id_dim=W_DIM, pose_dim=2, hidden=0).set_normalization(pool)
    with torch.no_grad():
        model.id_encoder.linear.weight.copy_(torch.eye(W_DIM))
        model.id_encoder.linear.bias.zero_()
        model.decoder.linear.weight.copy_(torch.cat([torch.eye(W_DIM), torch.zeros(W_DIM, 2)], 1))
        model.decoder.linear.bias.zero_()
    ws = random_ws(5, 3, NUM_WS, W_DIM)
    identity = model.encode(ws)[0]
    # float32 standardization of values ~3
    torch.testing.assert_close(identity, (ws[:, 0] - pool.mean(0)) / pool.std(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model(ws), ws, rtol=1e-5, atol=1e-5)


def test_a_mean_w_model_reads_the_mean_over_layers():
    model = _perturbed(IdentityPoseModel(NUM_WS, W_DIM, id_dim=4, pose_dim=2, hidden=8)).set_normalization(_pool())
    ws = _wplus(5, 3)
    for got, want in zip(model.encode(ws), model.encode(ws.mean(1))):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)  # float32 sums of 3 layers: rounding only


# --- the appearance / structure autoencoder ---------------------------------------------------------------------------


def test_the_autoencoder_losses_are_the_documented_weighted_sums():
    ae = _perturbed(_ae(temperature=0.3, rec_weight=0.7, swap_weight=1.3, app_weight=0.11, struct_weight=0.23,
                        motion_weight=0.37))
    batch = {k: _wplus(6, seed) for seed, k in enumerate(("anchor", "other", "augmented", "motion_from", "motion_to"))}
    losses = ae.training_losses(batch)
    with torch.no_grad():
        (a_i, s_i), (a_j, s_j), (a_g, s_g) = (ae.encode(batch[k]) for k in ("anchor", "other", "augmented"))
        anchor, other, aug = batch["anchor"], batch["other"], batch["augmented"]
        start, end = batch["motion_from"], batch["motion_to"]
        want = {"rec": (_rel(ae, ae(anchor), anchor) + _rel(ae, ae(other), other) + _rel(ae, ae(aug), aug)) / 3,
                "swap": (_rel(ae, ae.decode(a_j, s_i), anchor) + _rel(ae, ae.decode(a_g, s_i), aug)) / 2,
                "app": info_nce(a_i, a_j, 0.3), "struct": info_nce(s_i, s_g, 0.3),
                # the motion decoder's move from the batch's motion pairs
                "motion": _rel(ae, ae.transfer_structure(start, end, mode="motion") - start, end - start)}
    want["total"] = (0.7 * want["rec"] + 1.3 * want["swap"] + 0.11 * want["app"] + 0.23 * want["struct"]
                     + 0.37 * want["motion"])
    assert set(losses) == set(want)
    for k in want:  # float32 losses of size ~1 computed in another order: a few 1e-7 apart
        assert float(losses[k]) == pytest.approx(float(want[k]), rel=1e-5), k
    assert ae.validation_metric(batch) == pytest.approx(float(want["rec"] + want["swap"] + want["motion"]), rel=1e-5)


def test_the_image_loss_renders_the_first_image_samples_anchors():
    G = tiny_networks("skip16")["G_ema"]
    torch.manual_seed(0)
    ae = _perturbed(AppearanceStructureAE(G.num_ws, G.w_dim, app_dim=4, struct_dim=2, hidden=8, image_weight=0.5,
                                          image_samples=2))
    ae.set_normalization(torch.randn(50, G.w_dim))
    gen = torch.Generator().manual_seed(3)
    batch = {k: torch.randn(4, G.num_ws, G.w_dim, generator=gen) for k in ("anchor", "other", "augmented")}
    with torch.no_grad():
        with_g, without = ae.training_losses(batch, G=G), ae.training_losses(batch)
        anchor = batch["anchor"][:2]
        image = F.mse_loss(G.synthesis(ae(anchor), noise_mode="const"), G.synthesis(anchor, noise_mode="const"))
    assert "image" not in without and float(with_g["image"]) == pytest.approx(float(image), rel=1e-5)
    assert float(with_g["total"]) == pytest.approx(float(without["total"] + 0.5 * image), rel=1e-5)


def test_finish_training_refits_the_motion_decoder_by_least_squares():
    sampler = _clip_sampler(batch_size=32, motion=True)
    ae = _perturbed(_ae(motion_weight=1.0, hidden=0))
    ae.finish_training(sampler, 7, batches=3)
    x, y = [], []
    with torch.no_grad():
        for i in range(3):  # fresh batches 7, 8, 9: the change of structure code -> the standardized move
            batch = sampler.sample(7 + i)
            start, end = batch["motion_from"], batch["motion_to"]
            x.append(ae.encode(end)[1] - ae.encode(start)[1])
            y.append(((end - start) / ae.w_std).flatten(1))
    coef = torch.linalg.lstsq(torch.cat(x).double(), torch.cat(y).double()).solution
    # float32 codes of size ~1, a float64 solve of a 3 x 3 system: agreement to float32 rounding
    torch.testing.assert_close(ae.motion.weight.double(), coef.T, rtol=1e-4, atol=1e-5)


def test_transfer_motion_is_transfer_structure_frame_by_frame_in_every_mode():
    ae = _perturbed(_ae())
    targets, clip = _wplus(3, 1), _wplus(4, 2)
    for mode in ("residual", "direct"):
        moved = ae.transfer_motion(targets, clip, mode=mode)
        for f in range(4):
            torch.testing.assert_close(moved[:, f], ae.transfer_structure(targets, clip[f:f + 1], mode=mode),
                                       rtol=1e-5, atol=1e-5)
    # without a motion decoder the default is the direct decode (transfer_structure's default: the residual one)
    torch.testing.assert_close(ae.transfer_motion(targets, clip), ae.transfer_motion(targets, clip, mode="direct"))
    assert not torch.allclose(ae.transfer_motion(targets, clip), ae.transfer_motion(targets, clip, mode="residual"))


def test_a_fresh_net_is_exactly_linear_in_its_input():
    torch.manual_seed(0)
    ae = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=5, struct_dim=3, hidden=16).set_normalization(_pool())
    x = _wplus(3, 4)
    combo = x[0] + 0.5 * (x[1] - x[2])
    codes = [torch.cat(ae.encode(v), 1) for v in (x[0], x[1], x[2], combo)]
    # float32 sums of O(1) terms
    torch.testing.assert_close(codes[3], codes[0] + 0.5 * (codes[1] - codes[2]), rtol=1e-5, atol=1e-5)


# --- the factor mapper ------------------------------------------------------------------------------------------------

FACTORS = {"f1": ["l1", "l2"], "f2": ["l3"]}


def _fm_labels(ws: torch.Tensor) -> np.ndarray:
    y = ws[:, 0] @ orthonormal_rows(3, W_DIM).T
    return torch.stack([2 * y[:, 0] + 1, y[:, 0] + y[:, 1], -3 * y[:, 2]], 1).numpy()


def _mapper(**kwargs) -> FactorMapper:
    torch.manual_seed(0)
    pool = random_ws(600, 1, NUM_WS, W_DIM)
    kwargs = {"noise_dim": 4, "hidden": 8, "readout_hidden": 0, **kwargs}
    mapper = FactorMapper(NUM_WS, W_DIM, FACTORS, **kwargs).fit_prior(pool, _fm_labels(pool), alpha=1e-3, steps=20)
    return _perturbed(mapper.set_normalization(pool))


def test_the_factor_mapper_losses_are_the_documented_weighted_sums():
    mapper = _mapper(rec_weight=0.7, imitate_weight=1.3, contrast_weight=0.4, prior_weight=0.2)
    batch = FactorSampler(random_ws(600, 1, NUM_WS, W_DIM), [2, 1], 4, NUM_WS, batch_size=16, val_size=100).sample(3)
    losses = mapper.training_losses(batch)

    def mapped(z):
        return mapper.map_factors({"f1": z[:, :2], "f2": z[:, 2:3]}, noise=z[:, 3:])

    def read(x):
        codes, noise = mapper.encode(x)
        return torch.cat([codes["f1"], codes["f2"]], 1), noise

    w, z, z_alt = batch["w"], batch["z"], batch["z_alt"]
    codes, real_noise = mapper.encode(w)
    (c_x, n_x), (c_alt, n_alt) = read(mapped(z)), read(mapped(z_alt))
    cov = torch.cov(real_noise.T)
    want = {"rec": _rel(mapper, mapper.map_factors(codes, noise=real_noise), w),
            "imitate": (F.mse_loss(c_x, z[:, :3]) + F.mse_loss(c_alt, z_alt[:, :3])) / 2,
            "contrast": ((F.mse_loss(n_x, z[:, 3:]) + F.mse_loss(n_alt, z_alt[:, 3:])) / 2
                         + F.mse_loss(n_x, n_alt)) / 2,
            "prior": real_noise.mean(0).pow(2).mean() + (cov - torch.eye(4)).pow(2).mean()}
    want["total"] = 0.7 * want["rec"] + 1.3 * want["imitate"] + 0.4 * want["contrast"] + 0.2 * want["prior"]
    assert set(losses) == set(want)
    for k in want:  # float32, another order of the same sums
        assert float(losses[k]) == pytest.approx(float(want[k]), rel=1e-5), k
    assert mapper.validation_metric(batch) == pytest.approx(float(want["rec"] + want["imitate"] + want["contrast"]),
                                                            rel=1e-5)


def test_edit_replaces_the_given_factor_and_keeps_the_others_and_the_noise():
    mapper = _mapper()
    w = _wplus(4, 5)
    codes, noise = mapper.encode(w)
    new = torch.tensor([[1.5], [-0.5], [0.0], [2.0]])
    direct = mapper.map_factors({"f1": codes["f1"], "f2": new}, noise=noise)
    torch.testing.assert_close(mapper.edit(w, {"f2": new}, mode="direct"), direct)
    own = mapper.map_factors(codes, noise=noise)
    torch.testing.assert_close(mapper.edit(w, {"f2": new}), w + direct - own, rtol=1e-5, atol=1e-5)
    assert (mapper.edit(w, {"f2": new}) - w).abs().max() > 0.1  # the edit did move the faces


def test_the_factor_sampler_trains_on_the_pool_without_its_validation_codes():
    pool = random_ws(120, 4, NUM_WS, W_DIM)[:, 0]
    sampler = FactorSampler(pool, [2, 1], 4, NUM_WS, batch_size=32, val_size=60)
    for step in range(10):
        rows = (sampler.sample(step)["w"][:, 0, None] == pool[None]).all(-1).float().argmax(1)
        assert rows.max() < 60, step


# --- the identity / pose model ----------------------------------------------------------------------------------------


class PlantedMeasure(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        rows = orthonormal_rows(W_DIM, W_DIM, seed=5)
        self.register_buffer("pose_rows", rows[:3].contiguous())
        self.register_buffer("identity_rows", rows[3:].contiguous())

    def forward(self, ws):
        w = ws.mean(1)
        return {"pose": w @ self.pose_rows.T, "identity": w @ self.identity_rows.T}


def _ip_batch():
    measure = PlantedMeasure()
    w = torch.randn(300, W_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sampler = RecombinationSampler(w, measure(w[:, None]), NUM_WS, batch_size=16, seed=1, val_size=50)
    return measure, sampler.sample(2), w


@pytest.mark.parametrize("pose_weight", [1.7, 0.0])
def test_the_identity_pose_losses_are_the_documented_weighted_sums(pose_weight):
    measure, batch, w = _ip_batch()
    torch.manual_seed(0)
    model = _perturbed(IdentityPoseModel(NUM_WS, W_DIM, id_dim=6, pose_dim=3, hidden=8, rec_weight=0.7,
                                         cycle_weight=0.3, pose_weight=pose_weight, identity_weight=0.9,
                                         move_weight=0.4)).set_normalization(w)
    losses = model.training_losses(batch, G=measure)
    a, b = batch["a"], batch["b"]
    with torch.no_grad():
        x = model.recombine(a, b)
        i_a, (i_x, p_x), p_b = model.encode(a)[0], model.encode(x), model.encode(b)[1]
        m = measure(x)
    want = {"rec": (_rel(model, model(a), a) + _rel(model, model(b), b)) / 2,
            # each code relative to its batch variance
            "cycle": (F.mse_loss(i_x, i_a) / i_a.var(0).mean() + F.mse_loss(p_x, p_b) / p_b.var(0).mean()) / 2,
            "move": _rel(model, x, a), "pose": F.mse_loss(m["pose"], batch["pose_b"]),
            "identity": F.mse_loss(m["identity"], batch["identity_a"])}
    want["total"] = (0.7 * want["rec"] + 0.3 * want["cycle"] + 0.4 * want["move"] + pose_weight * want["pose"]
                     + 0.9 * want["identity"])
    assert set(losses) == set(want)
    for k in want:
        assert float(losses[k]) == pytest.approx(float(want[k]), rel=1e-5), k


class RecordingDecomposer(nn.Module):
    """A stand-in decomposer that reads a face box and records the images it is given."""

    input_crop = (0.25, 0.0, 0.5, 1.0)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def decompose(self, img, parts):
        self.seen.append(img)
        return {"rotation_deg": img.mean((2, 3)), "light": img.flatten(1)[:, :4]}


def test_the_decomposer_measure_reads_the_decomposers_own_face_box_unless_told_otherwise():
    from stylegan_disentangle.labels.base import crop_images

    G = tiny_networks("skip16")["G_ema"]
    ws = torch.randn(2, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(0))
    dec = RecordingDecomposer()
    measure = DecomposerMeasure(G, dec, kept=("light",), components=None)
    assert measure.crop == (0.25, 0.0, 0.5, 1.0)
    with torch.no_grad():
        measure.raw(ws)
        full = G.synthesis(ws, noise_mode="const")
    assert dec.seen[-1].shape[-2:] == (8, 16) and torch.equal(dec.seen[-1], crop_images(full, measure.crop))
    whole = DecomposerMeasure(G, dec, kept=("light",), components=None, crop=(0.0, 0.0, 1.0, 1.0))
    with torch.no_grad():
        whole.raw(ws)
    assert torch.equal(dec.seen[-1], full)


# --- the attribute exchange model -------------------------------------------------------------------------------------

ATTRIBUTES = {"a1": ["l1", "l2"], "a2": ["l3"], "a3": ["l4"]}


def _exchange(**kwargs):
    rows = orthonormal_rows(5, W_DIM)
    w = random_ws(300, 6, NUM_WS, W_DIM)[:, 0]
    labels = (w @ rows.T).numpy()
    torch.manual_seed(0)
    model = AttributeExchangeModel(NUM_WS, W_DIM, ATTRIBUTES, held=["h1"], part_dim=3, **kwargs)
    model = _perturbed(model).set_normalization(w)
    readout = LatentReadout(W_DIM, model.label_names).fit(w, labels, alpha=1e-3)
    sampler = ExchangeSampler(w, labels, model.attribute_columns, NUM_WS, batch_size=16, seed=0, val_size=50)
    return model, readout, sampler


def test_the_attribute_exchange_losses_are_the_documented_weighted_sums():
    model, readout, sampler = _exchange(hidden=8, take_weight=0.7, keep_weight=1.9, move_weight=0.3, adv_weight=0.5)
    batch = sampler.sample(1)  # attribute a2 (label column 2) for every row
    losses = model.training_losses(batch, G=readout)
    a, b = batch["a"], batch["b"]
    with torch.no_grad():
        x_ab, x_ba = model.swap_attributes(a, b, "a2"), model.swap_attributes(b, a, "a2")
        r_a, r_b = readout(a), readout(b)
        t_ab, t_ba = r_a.clone(), r_b.clone()
        t_ab[:, 2], t_ba[:, 2] = r_b[:, 2], r_a[:, 2]
        err = torch.cat([readout(x_ab) - t_ab, readout(x_ba) - t_ba]) ** 2

        def standardized(ws):
            return (ws.mean(1) - model.w_mean) / model.w_std

        real = model.discriminator(standardized(torch.cat([a, b])))
        fake = model.discriminator(standardized(torch.cat([x_ab, x_ba])))
    want = {"move": (_rel(model, x_ab, a) + _rel(model, x_ba, b)) / 2, "take": err[:, 2].mean(),
            "keep": err[:, [0, 1, 3, 4]].mean(),
            "adv": (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
                    + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))) / 2}
    want["total"] = 0.3 * want["move"] + 0.7 * want["take"] + 1.9 * want["keep"] + 0.5 * want["adv"]
    assert set(losses) == set(want)
    for k in want:
        assert float(losses[k]) == pytest.approx(float(want[k]), rel=1e-5), k
    metric = model.validation_metric(batch, G=readout)
    assert metric == pytest.approx(float(want["take"] + want["keep"] + 0.3 * want["move"]), rel=1e-5)


def test_strength_scales_a_linear_swap_linearly():
    model, _, _ = _exchange(hidden=0)
    a, b = _wplus(4, 1), _wplus(4, 2)
    full = model.swap_attributes(a, b, ["a1", "a3"])
    for t in (0.5, 2.0, -1.0):  # a linear decoder: the move is t times the swap's (float32 rounding)
        torch.testing.assert_close(model.swap_attributes(a, b, ["a1", "a3"], strength=t), a + t * (full - a),
                                   rtol=1e-5, atol=1e-5)


# --- the readout ------------------------------------------------------------------------------------------------------


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Ridge with an unpenalized intercept, in closed form: (coef [L, D], intercept [L])."""
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc).T
    return coef, ym - coef @ xm


def _readout_data(n: int = 40):
    gen = np.random.default_rng(3)
    w = gen.standard_normal((n, W_DIM)) * np.linspace(0.5, 2, W_DIM)
    y = np.stack([w @ gen.standard_normal(W_DIM) + gen.standard_normal(n), gen.standard_normal(n)], 1)
    return w, y


def test_the_readout_is_the_ridge_of_its_alpha_scored_on_its_held_out_rows():
    w, y = _readout_data()
    w = w.astype(np.float32).astype(np.float64)  # what the readout reads of a float32 pool
    readout = LatentReadout(W_DIM, ["u", "v"]).fit(torch.as_tensor(w, dtype=torch.float32), y, alpha=30.0,
                                                   held_out=0.25, seed=4)
    test, train = np.split(np.random.default_rng(4).permutation(len(w)), [10])
    x = (w - w[train].mean(0)) / w[train].std(0)
    t = (y - y[train].mean(0)) / y[train].std(0)
    coef, intercept = _ridge(x[train], t[train], 30.0)
    # float32 buffers of float64 solutions
    np.testing.assert_allclose(readout.weight.numpy(), coef, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(readout.bias.numpy(), intercept, rtol=1e-5, atol=1e-6)
    pred = x[test] @ coef.T + intercept
    r2 = 1 - ((pred - t[test]) ** 2).mean(0) / t[test].var(0)
    np.testing.assert_allclose(readout.r2_, r2, rtol=1e-4, atol=1e-5)


def test_the_readout_reads_the_mean_over_layers_and_refuses_bad_labels():
    w, y = _readout_data()
    readout = LatentReadout(W_DIM, ["u", "v"]).fit(torch.as_tensor(w, dtype=torch.float32), y)
    ws = _wplus(5, 7)
    torch.testing.assert_close(readout(ws), readout(ws.mean(1)), rtol=1e-5, atol=1e-6)
    y[3, 1] = np.nan
    with pytest.raises(LatentError, match="labels contain NaN or inf"):
        LatentReadout(W_DIM, ["u", "v"]).fit(torch.as_tensor(w, dtype=torch.float32), y)
    with pytest.raises(ValueError, match=r"\['f2'\] have no label"):
        FactorMapper(NUM_WS, W_DIM, {"f1": ["l1"], "f2": []})


def test_training_a_factor_mapper_leaves_its_fitted_readout_alone(tmp_path):
    mapper = _mapper(readout_hidden=8)
    before = {k: v.clone() for k, v in mapper.readout.state_dict().items()}
    assert not any(p.requires_grad for p in mapper.readout.parameters())
    sampler = FactorSampler(random_ws(600, 1, NUM_WS, W_DIM), [2, 1], 4, NUM_WS, batch_size=16, val_size=100)
    trained = train_model(mapper, sampler, tmp_path, steps=3, lr=1e-2, device="cpu", progress=False).model
    after = trained.readout.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not torch.equal(trained.mapper.linear.weight, _mapper(readout_hidden=8).mapper.linear.weight)


# --- latent videos ----------------------------------------------------------------------------------------------------


def test_clip_pairs_are_two_distinct_frames_and_come_from_the_training_pool():
    jittered = _clip_sampler(batch_size=64)  # every frame has its own layer jitter: two frames never coincide
    for step in range(4):
        batch = jittered.sample(step)
        assert all(not torch.equal(x, y) for x, y in zip(batch["anchor"], batch["other"])), step
    pool = _pool(50)
    sampler = ClipPairSampler(StyleMixingVideoMaker(frames=4).fit(pool), pool, NUM_WS, batch_size=32, seed=0,
                              val_fraction=0.2)
    for step in range(8):
        batch = sampler.sample(step)
        # the fine layer is the clip's own start w, a row of the training part of the pool (the first 40)
        rows = (batch["anchor"][:, -1, None] == pool[None]).all(-1)
        assert rows.any(1).all() and rows.float().argmax(1).max() < 40, step


def test_the_augmentation_moves_a_share_in_half_to_all_of_the_way():
    pool = _pool()
    dirs = torch.nn.functional.normalize(torch.randn(4, W_DIM, generator=torch.Generator().manual_seed(2)), dim=1)
    maker = DirectionVideoMaker(dirs[:2].numpy(), dirs[2:].numpy()).fit(pool)
    ws, donors = pool[:200, None].repeat(1, NUM_WS, 1), pool[200:]
    aug = maker.augment(ws, donors, torch.Generator().manual_seed(0))
    delta = (donors - ws.mean(1)) @ torch.from_numpy(maker.keep_structure_).T
    share = ((aug - ws)[:, 0] * delta).sum(1) / delta.pow(2).sum(1)
    assert share.min() >= 0.5 - 1e-5 and share.max() <= 1 + 1e-5  # float32 ratios
    assert share.min() < 0.55 and share.max() > 0.95  # and it does spread over that range


def test_direction_video_makers_refuse_short_clips_and_structure_inside_the_appearance_span():
    pool = _pool()
    dirs = torch.nn.functional.normalize(torch.randn(3, W_DIM, generator=torch.Generator().manual_seed(2)), dim=1)
    dirs = dirs.numpy()
    with pytest.raises(ValueError, match="frames must be >= 2, got 1"):
        DirectionVideoMaker(dirs[:1], frames=1).fit(pool)
    with pytest.raises(ValueError, match="lies in the span of the appearance directions"):
        DirectionVideoMaker(dirs[:1] + dirs[1:2], dirs[:2]).fit(pool)


def test_clips_bend_along_the_nuisance_direction_by_the_squared_distance_travelled():
    pool = _pool()
    dirs = torch.nn.functional.normalize(torch.randn(4, W_DIM, generator=torch.Generator().manual_seed(2)), dim=1)
    maker = DirectionVideoMaker(dirs[:2].numpy(), dirs[2:].numpy(), frames=7, amplitude=1.5, curvature=0.4,
                                smoothness=2.0).fit(pool)
    clips = maker.clips(pool[:5], NUM_WS, torch.Generator().manual_seed(9))
    # the trajectory's coefficients: the first draw of the clip's generator, as `clips` makes them
    c = 1.5 * smooth_noise(5, 2, 7, 2.0, torch.Generator().manual_seed(9))
    want = 0.4 * ((c ** 2).mean(-1) - 1.5 ** 2) * maker.nuisance_scale_  # zero on average over the trajectory
    got = (clips.mean(2) - pool[:5, None]) @ torch.from_numpy(maker.nuisance_)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)  # float32 sums of values ~3


def test_style_mixing_clips_reach_the_documented_share_of_the_way_to_each_keyframe():
    pool = _pool(30)
    maker = StyleMixingVideoMaker(frames=5, keyframes=2, reach=0.6).fit(pool)
    clips = maker.clips(pool[:6], NUM_WS, torch.Generator().manual_seed(0))
    start = pool[:6]
    for frame in (2, 4):  # frames 2 and 4 of 5 sit on keyframes 1 and 2
        key = start + (clips[:, frame, 0] - start) / 0.6
        distance = (key[:, None] - pool[None]).norm(dim=-1).min(1).values
        assert distance.max() < 1e-4, frame  # float32: a pool row, up to rounding of values ~3


# --- evaluation helpers -----------------------------------------------------------------------------------------------


def test_the_linear_probe_uses_its_train_fraction_and_refuses_too_few_samples():
    gen = np.random.default_rng(0)
    x = gen.standard_normal((30, 2))
    y = (x @ [1.0, -1.0] + gen.standard_normal(30))[:, None]
    perm = np.random.default_rng(5).permutation(30)
    tr, te = perm[:12], perm[12:]  # train_fraction 0.4
    design = np.c_[x, np.ones(30)]
    coef = np.linalg.lstsq(design[tr], y[tr], rcond=None)[0]
    resid = ((y[te] - design[te] @ coef) ** 2).sum(0)
    expected = 1 - resid / ((y[te] - y[te].mean(0)) ** 2).sum(0)
    # float64 least squares, solved two ways
    np.testing.assert_allclose(linear_probe_r2(x, y, train_fraction=0.4, seed=5), expected, rtol=1e-8)
    with pytest.raises(LatentError, match="probe needs more than 2 training and 2 test samples; got 4 samples"):
        linear_probe_r2(x[:4], y[:4])
    with pytest.raises(LatentError, match="target and source must both be ws"):
        copy_coarse_layers(torch.zeros(2, NUM_WS, W_DIM), torch.zeros(3, NUM_WS, W_DIM), 1)
