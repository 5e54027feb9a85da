"""The shared training loop: bit-identical resume, intact checkpoints after a crash, logs, early stopping."""

from __future__ import annotations

import json

import pytest
import torch

from stylegan_disentangle.models import (
    AppearanceStructureAE,
    ClipPairSampler,
    DirectionVideoMaker,
    ModelFileError,
    load_checkpoint,
    train_model,
)

NUM_WS, W_DIM = 3, 12


def toy_sampler(seed: int = 0, batch_size: int = 16) -> ClipPairSampler:
    gen = torch.Generator().manual_seed(1)
    pool = torch.randn(400, W_DIM, generator=gen) * torch.linspace(0.5, 2.0, W_DIM)
    dirs = torch.nn.functional.normalize(torch.randn(4, W_DIM, generator=gen), dim=1).numpy()
    maker = DirectionVideoMaker(dirs[:2], dirs[2:], frames=6).fit(pool)
    return ClipPairSampler(maker, pool, NUM_WS, batch_size=batch_size, seed=seed, val_size=32)


def toy_model() -> AppearanceStructureAE:
    torch.manual_seed(0)
    return AppearanceStructureAE(NUM_WS, W_DIM, app_dim=6, struct_dim=3, hidden=16, generator_sha256="g" * 64)


class Crashing:
    """A sampler that raises at a given step (an interrupted run)."""

    def __init__(self, inner, at: int):
        self.inner, self.at = inner, at

    def sample(self, step, device):
        if step == self.at:
            raise KeyboardInterrupt("simulated interruption")
        return self.inner.sample(step, device)

    def validation(self, device):
        return self.inner.validation(device)


def test_resume_is_bit_identical(tmp_path):
    straight = train_model(toy_model(), toy_sampler(), tmp_path / "a", steps=8, checkpoint_every=3, device="cpu",
                           progress=False).model
    train_model(toy_model(), toy_sampler(), tmp_path / "b", steps=5, checkpoint_every=3, device="cpu", progress=False)
    resumed = train_model(toy_model(), toy_sampler(), tmp_path / "b", steps=8, checkpoint_every=3, device="cpu",
                          progress=False)
    assert resumed.step == 8
    for (name, a), b in zip(straight.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    ca, cb = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in ("exp_avg", "exp_avg_sq"))


def test_an_interrupted_run_keeps_its_last_good_checkpoint_and_resumes(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train_model(toy_model(), Crashing(toy_sampler(), at=5), out, steps=8, checkpoint_every=2, device="cpu",
                    lr_schedule="cosine", progress=False)
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4
    assert not list(out.glob(".checkpoint.pt.*"))  # no temporary file left behind
    resumed = train_model(toy_model(), toy_sampler(), out, steps=8, checkpoint_every=2, device="cpu",
                          lr_schedule="cosine", progress=False)
    straight = train_model(toy_model(), toy_sampler(), tmp_path / "ref", steps=8, checkpoint_every=2, device="cpu",
                           lr_schedule="cosine", progress=False)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_writes_log_config_and_model_file(tmp_path):
    previews = []
    result = train_model(toy_model(), toy_sampler(), tmp_path, steps=6, log_every=2, val_every=3, device="cpu",
                         preview_every=3, preview_fn=lambda m, p: previews.append(p.name), progress=False,
                         config={"note": "x"})
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "total" in r] == [2, 4, 6]
    assert [r["step"] for r in lines if "val" in r] == [3, 6]
    assert json.loads((tmp_path / "config.json").read_text())["note"] == "x"
    assert previews == ["step000003.png", "step000006.png", "preview.png"]
    assert AppearanceStructureAE.load(result.files["model"]).config == result.model.config


def test_the_last_step_is_validated_when_it_is_not_a_multiple_of_val_every(tmp_path):
    train_model(toy_model(), toy_sampler(), tmp_path, steps=5, lr=1e-2, val_every=3, device="cpu", progress=False)
    lines = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines if "val" in r] == [3, 5]  # the final weights compete for "best" too


@pytest.mark.parametrize("lr", [0.3, 1e-3])
def test_extending_a_finished_run_with_validation_is_the_longer_run(tmp_path, lr):
    """Run 5 steps (validated at 3 and, off the grid of 3, at its last step 5), then extend it to 8: the result,
    its best step, the checkpoint's early-stopping state and the log are those of one 8-step run (validated at 3, 6,
    8). At lr 0.3 the toy's metric jumps about, so the off-grid step-5 score would otherwise pick other weights."""
    kw = dict(lr=lr, val_every=3, checkpoint_every=3, log_every=1, device="cpu", progress=False)
    straight = train_model(toy_model(), toy_sampler(), tmp_path / "a", steps=8, **kw)
    first = train_model(toy_model(), toy_sampler(), tmp_path / "b", steps=5, **kw)
    assert first.best_step in (3, 5)
    again = train_model(toy_model(), toy_sampler(), tmp_path / "b", steps=5, **kw)  # nothing to do: the same result
    assert (again.best_step, again.best_metric) == (first.best_step, first.best_metric)
    resumed = train_model(toy_model(), toy_sampler(), tmp_path / "b", steps=8, **kw)
    assert (resumed.best_step, resumed.best_metric) == (straight.best_step, straight.best_metric)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    ca, cb = load_checkpoint(tmp_path / "a" / "checkpoint.pt"), load_checkpoint(tmp_path / "b" / "checkpoint.pt")
    assert {k: ca["early"][k] for k in ("best_step", "best_metric", "bad")} == \
        {k: cb["early"][k] for k in ("best_step", "best_metric", "bad")}
    logs = [[{k: v for k, v in json.loads(line).items() if k != "seconds"}
             for line in (tmp_path / d / "log.jsonl").read_text().splitlines()] for d in ("a", "b")]
    assert logs[0] == logs[1] and [r["step"] for r in logs[1] if "val" in r] == [3, 6, 8]


def test_early_stopping_on_a_flat_validation_metric(tmp_path):
    result = train_model(toy_model(), toy_sampler(), tmp_path, steps=50, lr=0.0, val_every=2, patience=2,
                         device="cpu", progress=False)
    assert result.stopped_early and result.step == 6 and result.best_step == 2  # 2: best, 4 and 6: no better


def test_a_truncated_checkpoint_is_reported(tmp_path):
    train_model(toy_model(), toy_sampler(), tmp_path, steps=2, device="cpu", progress=False)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ModelFileError, match="checkpoint.pt"):
        train_model(toy_model(), toy_sampler(), tmp_path, steps=4, device="cpu", progress=False)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    train_model(toy_model(), toy_sampler(), tmp_path, steps=2, device="cpu", progress=False)
    other = AppearanceStructureAE(NUM_WS, W_DIM, app_dim=5, struct_dim=3, hidden=16)
    with pytest.raises(Exception, match="another model"):
        train_model(other, toy_sampler(), tmp_path, steps=4, device="cpu", progress=False)
