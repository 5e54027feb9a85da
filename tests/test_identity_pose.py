"""IdentityPoseModel, RecombinationSampler and DecomposerMeasure: recombination algebra, a planted problem, the
decomposer-measured training on the shipped checkpoint, files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.labels import load_decomposer
from stylegan_disentangle.latents import generator_fingerprint, sample_latents
from stylegan_disentangle.models import (
    DecomposerMeasure,
    IdentityPoseModel,
    RecombinationSampler,
    load_model,
    train_model,
)
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from tests.helpers import orthonormal_rows, random_ws

NUM_WS, W_DIM = 3, 12


def _model(**kwargs) -> IdentityPoseModel:
    torch.manual_seed(0)
    return IdentityPoseModel(NUM_WS, W_DIM, id_dim=8, pose_dim=3, hidden=16, **kwargs)


def _ws(n: int, seed: int) -> torch.Tensor:
    return random_ws(n, seed, NUM_WS, W_DIM)


class PlantedMeasure(torch.nn.Module):
    """A linear instrument: the pose is 3 fixed readouts of w, the identity the 9 readouts orthogonal to them."""

    def __init__(self) -> None:
        super().__init__()
        rows = orthonormal_rows(W_DIM, W_DIM, seed=5)
        self.register_buffer("pose_rows", rows[:3].contiguous())
        self.register_buffer("identity_rows", rows[3:].contiguous())

    def forward(self, ws: torch.Tensor) -> dict[str, torch.Tensor]:
        w = ws.mean(1)
        return {"pose": w @ self.pose_rows.T, "identity": w @ self.identity_rows.T}


def test_recombining_a_face_with_itself_returns_it_exactly_and_direct_mode_decodes():
    model = _model().set_normalization(_ws(64, 1))
    a = _ws(5, 2)
    assert torch.allclose(model.recombine(a, a), a, atol=1e-5)
    direct = model.recombine(a, a, mode="direct")
    assert torch.allclose(direct, model(a), atol=1e-6)
    assert model.recombine(a, _ws(1, 3)).shape == (5, NUM_WS, W_DIM)  # one pose face for all
    assert model.recombine(_ws(1, 3), a).shape == (5, NUM_WS, W_DIM)


def test_bad_inputs_are_named():
    model = _model()
    a = _ws(4, 0)
    with pytest.raises(LatentError, match="identity_from has 4 codes and pose_from 3"):
        model.recombine(a, _ws(3, 1))
    nan = a.clone()
    nan[0, 0, 0] = float("nan")
    with pytest.raises(LatentError):
        model.recombine(nan, a)
    with pytest.raises(LatentError, match="w_dim|shape"):
        model.recombine(torch.zeros(2, NUM_WS, W_DIM + 1), a[:2])
    with pytest.raises(ValueError, match="mode"):
        model.recombine(a, a, mode="swap")
    with pytest.raises(LatentError, match=r"identity \[N, 8\]"):
        model.decode(torch.zeros(2, 7), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="loss weights"):
        _model(pose_weight=-1.0)


def test_the_sampler_is_deterministic_and_pairs_distinct_faces():
    w = torch.randn(300, W_DIM)
    measures = {"pose": torch.randn(300, 3), "identity": torch.randn(300, 9)}
    sampler = RecombinationSampler(w, measures, NUM_WS, batch_size=32, seed=3, val_size=50)
    one, again, other = sampler.sample(7), sampler.sample(7), sampler.sample(8)
    assert all(torch.equal(one[k], again[k]) for k in one)
    assert not torch.equal(one["a"], other["a"])
    assert one["a"].shape == (32, NUM_WS, W_DIM) and one["identity_b"].shape == (32, 9)
    rows_a = [int(torch.nonzero((w == r[0]).all(1))[0]) for r in one["a"]]
    rows_b = [int(torch.nonzero((w == r[0]).all(1))[0]) for r in one["b"]]
    assert all(i != j for i, j in zip(rows_a, rows_b)) and max(rows_a + rows_b) < 250  # training part only
    assert torch.equal(one["pose_b"], measures["pose"][rows_b])
    val = sampler.validation()
    assert val["a"].shape[0] == 50 and torch.equal(val["a"][:, 0], w[250:])
    w_plus = torch.randn(300, NUM_WS, W_DIM)  # layers that differ are kept as they are
    plus = RecombinationSampler(w_plus, measures, NUM_WS, batch_size=8, seed=3, val_size=50).sample(7)
    assert any(torch.equal(plus["a"][0], x) for x in w_plus)
    with pytest.raises(LatentError, match="num_ws"):
        RecombinationSampler(w_plus, measures, NUM_WS + 1)
    with pytest.raises(LatentError, match="one row per pool code"):
        RecombinationSampler(w, {"pose": measures["pose"][:10], "identity": measures["identity"]}, NUM_WS)


def test_on_a_planted_linear_instrument_the_model_learns_the_exact_recombination(tmp_path):
    measure = PlantedMeasure()
    w = torch.randn(4000, W_DIM, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        measures = measure(w[:, None])
    sampler = RecombinationSampler(w, measures, NUM_WS, batch_size=128, seed=0)
    model = _model(cycle_weight=0.0).set_normalization(w)
    train_model(model, sampler, tmp_path / "run", steps=1000, lr=3e-3, lr_schedule="cosine", G=measure,
                progress=False)
    a, b = _ws(500, 11), _ws(500, 12)
    with torch.no_grad():
        got, m_a, m_b = measure(model.recombine(a, b)), measure(a), measure(b)
    # between two random faces each readout differs by sqrt(2) std; the exact recombination has 0 on both, and 1000
    # Adam steps come within 0.03 of it (a minimum the MLP's training only approaches)
    pose_err = (got["pose"] - m_b["pose"]).pow(2).mean().sqrt()
    ident_err = (got["identity"] - m_a["identity"]).pow(2).mean().sqrt()
    assert pose_err < 0.05 and ident_err < 0.05, (float(pose_err), float(ident_err))


def test_the_training_loop_validates_with_the_measure(tmp_path):
    class Spy(PlantedMeasure):
        calls_without_grad = 0

        def forward(self, ws):
            Spy.calls_without_grad += not torch.is_grad_enabled()
            return super().forward(ws)

    measure = Spy()
    w = torch.randn(400, W_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        sampler = RecombinationSampler(w, measure(w[:, None]), NUM_WS, batch_size=16, val_size=32)
    Spy.calls_without_grad = 0
    model = _model().set_normalization(w)
    train_model(model, sampler, tmp_path, steps=4, val_every=2, G=measure, progress=False)
    assert Spy.calls_without_grad == 2  # one validation at step 2, one at step 4, both through the measure
    val = sampler.validation()
    assert model.validation_metric(val, G=measure) > model.validation_metric(val)  # + the measured terms


@pytest.fixture(scope="module")
def synthetic():
    G, _ = load_synthetic()
    return G, load_decomposer("synthetic")


def test_the_measure_standardizes_its_pool_and_is_differentiable(synthetic):
    G, dec = synthetic
    measure = DecomposerMeasure(G, dec, identity_size=8, kept=("depth", "image_albedo", "light"), components=None)
    assert measure.block_dims == {"depth": 64, "image_albedo": 192, "light": 4}
    ws = sample_latents(G, np.arange(96)).ws
    with pytest.raises(RuntimeError, match="call calibrate"):
        measure(ws[:2])
    pooled = measure.calibrate(ws, batch_size=40, progress=False)
    assert pooled["pose"].shape == (96, 3) and pooled["identity"].shape == (96, 260)
    assert torch.allclose(pooled["pose"].mean(0), torch.zeros(3), atol=1e-5)
    assert torch.allclose(pooled["pose"].std(0), torch.ones(3), atol=1e-5)
    # every block holds a third of the vector's mean square: a block of d of the 260 dims has mean square 260/(3d)
    ident = pooled["identity"]
    assert abs(float(ident.pow(2).mean()) - 1) < 1e-5
    for (start, stop), dims in (((0, 64), 64), ((64, 256), 192), ((256, 260), 4)):
        assert abs(float(ident[:, start:stop].pow(2).mean()) - 260 / (3 * dims)) < 1e-4 * 260 / (3 * dims)
    with torch.no_grad():
        again = measure(ws[:40])  # the same images in one batch: the readings calibrate returned
    assert torch.allclose(again["pose"], pooled["pose"][:40], atol=1e-4)
    assert torch.allclose(again["identity"], pooled["identity"][:40], atol=1e-4)
    x = ws[:4].clone().requires_grad_(True)
    with torch.enable_grad():
        out = measure(x)
        (out["pose"].sum() + out["identity"].sum()).backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    assert not any(p.requires_grad for p in G.parameters())  # the instrument is frozen
    with pytest.raises(ValueError, match="kept must name"):
        DecomposerMeasure(G, dec, kept=("depth", "hair"))
    with pytest.raises(ValueError, match="components must be in"):
        DecomposerMeasure(G, dec, identity_size=2, kept=("depth",), components=5)


def test_whitened_components_of_the_kept_readings_have_unit_covariance(synthetic):
    G, dec = synthetic
    measure = DecomposerMeasure(G, dec, identity_size=4, kept=("depth", "albedo", "light"), components=6)
    ws = sample_latents(G, np.arange(80)).ws
    pooled = measure.calibrate(ws, progress=False)["identity"].double()
    assert pooled.shape == (80, 6)
    # float32 projections of 68 readings, scaled by up to 1 / sqrt(the 6th eigenvalue): 1e-4 of rounding
    assert torch.allclose(pooled.mean(0), torch.zeros(6, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(torch.cov(pooled.T), torch.eye(6, dtype=torch.float64), atol=1e-4)
    with torch.no_grad():
        assert torch.allclose(measure(ws[:8])["identity"].double(), pooled[:8], atol=1e-4)


def test_training_through_the_decomposer_takes_the_pose_and_keeps_the_identity(synthetic, tmp_path):
    G, dec = synthetic
    measure = DecomposerMeasure(G, dec, identity_size=8)
    ws = sample_latents(G, np.arange(600)).ws
    sampler = RecombinationSampler(ws, measure.calibrate(ws, progress=False), G.num_ws, batch_size=16, seed=0,
                                   val_size=64)
    model = IdentityPoseModel(G.num_ws, G.w_dim, id_dim=16, pose_dim=4, hidden=32,
                              generator_sha256=generator_fingerprint(G)).set_normalization(ws)
    val = sampler.validation()
    before = model.training_losses(val, G=measure)
    result = train_model(model, sampler, tmp_path / "run", steps=60, lr=3e-3, G=measure, progress=False)
    after = result.model.training_losses(val, G=measure)
    # the trivial recombinations: the identity face itself misses the pose face's pose (the untrained model's
    # residual recombination is near it: `before`), the pose face itself misses the identity face's readings
    whole_swap = float((measure(val["b"])["identity"] - val["identity_a"]).pow(2).mean())
    assert float(before["pose"]) > 1.0 and whole_swap > 1.0  # about 2 each: two independent faces
    assert float(after["pose"]) < 0.25 * float(before["pose"])
    trivial = min(float(before["pose"] + before["identity"]), whole_swap)
    assert float(after["pose"] + after["identity"]) < 0.75 * trivial  # better than either by a quarter
    loaded = load_model(result.files["model"], G)
    assert isinstance(loaded, IdentityPoseModel)
    a, b = val["a"][:3], val["b"][:3]
    assert torch.equal(loaded.recombine(a, b), result.model.recombine(a, b))


def test_recombine_cli_trains_writes_and_refuses_other_models(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ip"
    train = runner.invoke(main, ["--quiet", "train-model", "identity-pose", "synthetic", "--outdir", str(out),
                                 "--steps", "3", "--pool", "300", "--batch-size", "8", "--id-dim", "4",
                                 "--pose-dim", "2", "--hidden", "8", "--preview-every", "2", "--device", "cpu"])
    assert train.exit_code == 0, train.output
    assert (out / "model.pt").is_file() and (out / "preview.png").is_file()
    assert json.loads((out / "config.json").read_text())["decomposer"] == "synthetic"
    described = json.loads(runner.invoke(main, ["info", str(out / "model.pt"), "--json"]).output)
    network = json.loads(runner.invoke(main, ["info", "synthetic", "--json"]).output)
    assert described["kind"] == "identity-pose" and described["config.pose_dim"] == 2
    assert described["generator_sha256"] == network["generator_fingerprint"] and described["info.step"] == 3
    res = runner.invoke(main, ["recombine", str(out / "model.pt"), "synthetic", "--identity-seeds", "0-2",
                               "--pose-seeds", "7", "--outdir", str(tmp_path / "rec"), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ws = np.load(tmp_path / "rec" / "result_ws.npy")
    assert ws.shape[0] == 3 and np.load(tmp_path / "rec" / "pose_ws.npy").shape == ws.shape
    assert Image.open(tmp_path / "rec" / "recombination.png").size[0] > 0
    assert json.loads((tmp_path / "rec" / "config.json").read_text())["pose_seeds"] == [7, 7, 7]
    mismatch = runner.invoke(main, ["recombine", str(out / "model.pt"), "synthetic", "--identity-seeds", "0-2",
                                    "--pose-seeds", "5-6", "--outdir", str(tmp_path / "bad")])
    assert mismatch.exit_code != 0 and "3 seeds in --identity-seeds but 2 in --pose-seeds" in mismatch.output
    broken = tmp_path / "broken.pt"
    broken.write_bytes((out / "model.pt").read_bytes()[:100])
    bad = runner.invoke(main, ["recombine", str(broken), "synthetic", "--outdir", str(tmp_path / "bad")])
    assert bad.exit_code != 0 and "broken.pt" in bad.output and "Traceback" not in bad.output


def test_train_model_identity_pose_names_what_is_missing(tmp_path):
    from stylegan_disentangle.checkpoints import save_network_pkl
    from tests.helpers import tiny_networks

    pkl = tmp_path / "tiny.pkl"
    save_network_pkl(pkl, tiny_networks("skip16"))
    runner = CliRunner()
    no_decomposer = runner.invoke(main, ["train-model", "identity-pose", str(pkl), "--outdir", str(tmp_path / "o")])
    assert no_decomposer.exit_code != 0 and "no 3D decomposer is known" in no_decomposer.output
    bad_kept = runner.invoke(main, ["train-model", "identity-pose", "synthetic", "--outdir", str(tmp_path / "o"),
                                    "--kept", "depth,hair"])
    assert bad_kept.exit_code != 0 and "--kept" in bad_kept.output and "image_albedo" in bad_kept.output
    tiny_pool = runner.invoke(main, ["train-model", "identity-pose", "synthetic", "--outdir", str(tmp_path / "o"),
                                     "--pool", "10"])
    assert tiny_pool.exit_code != 0 and "--pool" in tiny_pool.output and "at least 20" in tiny_pool.output
    assert not (tmp_path / "o" / "model.pt").exists()
