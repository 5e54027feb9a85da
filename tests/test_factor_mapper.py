"""FactorMapper and FactorSampler: the label prior's algebra, code handling, a planted linear world, the synthetic
world's factors, files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.latents import sample_latents
from stylegan_disentangle.models import FactorMapper, FactorSampler, load_model, train_model
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from tests.helpers import orthonormal_rows, random_ws

NUM_WS, W_DIM = 2, 12
FACTORS = {"f1": ["l1", "l2"], "f2": ["l3"]}


def _ws(n: int, seed: int) -> torch.Tensor:
    return random_ws(n, seed, NUM_WS, W_DIM)


def _rows() -> torch.Tensor:
    """Three orthonormal readout rows [3, W_DIM]: the labels l1, l2, l3 of a planted linear world."""
    return orthonormal_rows(3, W_DIM)


def _labels(ws: torch.Tensor) -> np.ndarray:
    """The planted labels, correlated within f1 and in their own units."""
    y = ws[:, 0] @ _rows().T
    return (torch.stack([2 * y[:, 0] + 1, y[:, 0] + y[:, 1], -3 * y[:, 2]], 1)).numpy()


def _fitted(**kwargs) -> FactorMapper:
    torch.manual_seed(0)
    kwargs = {"noise_dim": 4, "hidden": 16, "readout_hidden": 0, **kwargs}
    pool = _ws(3000, 1)
    return FactorMapper(NUM_WS, W_DIM, FACTORS, **kwargs).fit_prior(pool, _labels(pool), alpha=1e-6
                                                                     ).set_normalization(pool)


def test_the_label_prior_whitens_the_pool_and_codes_and_labels_convert_both_ways():
    mapper = _fitted()
    pool = _ws(3000, 1)
    codes = mapper.encode(pool)[0]
    z = torch.cat([codes["f1"], codes["f2"]], 1)
    assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-4)
    cov = torch.cov(z.T)
    assert torch.allclose(cov[:2, :2], torch.eye(2), atol=1e-4) and abs(cov[2, 2] - 1) < 1e-4  # each factor whitened
    assert cov[:2, 2].abs().max() < 0.1  # across factors: the pool's own (sampling) correlation, left as it is
    labels = _labels(_ws(50, 2))
    back = mapper.codes_to_labels(mapper.labels_to_codes(labels))
    assert np.allclose(back.numpy(), labels, atol=1e-4)
    with pytest.raises(LatentError, match=r"labels must be \[N, 3\]"):
        mapper.labels_to_codes(labels[:, :2])


def test_codes_are_checked_and_missing_ones_drawn_from_the_seeded_prior():
    mapper = _fitted()
    a = mapper.map_factors({"f2": [0.5]}, n=4, seed=3)
    assert a.shape == (4, NUM_WS, W_DIM) and torch.equal(a, mapper.map_factors({"f2": [0.5]}, n=4, seed=3))
    assert not torch.equal(a, mapper.map_factors({"f2": [0.5]}, n=4, seed=4))
    assert torch.equal(mapper.sample(4, seed=3), mapper.map_factors(n=4, seed=3))
    with pytest.raises(ValueError, match=r"unknown factors \['pose'\]; this mapper has \['f1', 'f2'\]"):
        mapper.map_factors({"pose": [0.0]})
    with pytest.raises(LatentError, match=r"the f1 code must be finite \[N, 2\]"):
        mapper.map_factors({"f1": [0.0, 1.0, 2.0]})
    with pytest.raises(LatentError, match="the f2 code must be finite"):
        mapper.map_factors({"f2": [float("nan")]})
    with pytest.raises(LatentError, match="different counts"):
        mapper.map_factors({"f1": torch.zeros(3, 2)}, noise=torch.zeros(2, 4))
    with pytest.raises(ValueError, match="more than once"):
        FactorMapper(NUM_WS, W_DIM, {"a": ["x"], "b": ["x"]})
    w = _ws(5, 9)
    assert torch.allclose(mapper.edit(w, {}), w, atol=1e-6)  # its own codes: the residual edit returns the face
    assert torch.allclose(mapper.edit(w, {"f2": mapper.encode(w)[0]["f2"]}), w, atol=1e-5)


def test_the_sampler_redraws_one_factor_at_a_time():
    sampler = FactorSampler(_ws(600, 3), [2, 1], 4, NUM_WS, batch_size=16, seed=2, val_size=100)
    first = sampler.sample(5)
    assert all(torch.equal(first[k], sampler.sample(5)[k]) for k in first)
    for step, cols in ((0, slice(0, 2)), (1, slice(2, 3))):
        batch = sampler.sample(step)
        changed = (batch["z"] != batch["z_alt"]).any(0)
        expected = torch.zeros(7, dtype=torch.bool)
        expected[cols] = True
        assert torch.equal(changed, expected) and torch.equal(batch["group"], torch.full((16,), step))
    val = sampler.validation()
    assert torch.equal(val["group"], torch.arange(100) % 2) and torch.equal(val["w"][:, 0], _ws(600, 3)[500:, 0])


def test_on_a_planted_linear_world_the_codes_control_their_labels_only(tmp_path):
    mapper = _fitted(hidden=0)
    pool = _ws(3000, 1)
    sampler = FactorSampler(pool, mapper.code_dims, mapper.noise_dim, NUM_WS, batch_size=256, seed=0)
    mapper = train_model(mapper, sampler, tmp_path / "run", steps=600, lr=1e-2, lr_schedule="cosine", seed=0,
                         val_every=300, checkpoint_every=600, progress=False).model
    gen = torch.Generator().manual_seed(5)
    z = mapper._code_matrix(None, None, 500, gen)
    asked = mapper.codes_to_labels({"f1": z[:, :2], "f2": z[:, 2:3]}).numpy()
    got = _labels(mapper._map(z))
    spread = _labels(pool).std(0)
    assert (np.abs(got - asked).mean(0) / spread).max() < 0.03  # the codes ask, the planted labels answer
    z_alt = z.clone()
    z_alt[:, :2] = torch.randn(500, 2, generator=gen)
    moved = np.abs(_labels(mapper._map(z_alt))[:, 2] - got[:, 2]).mean() / spread[2]
    assert moved < 0.03  # redrawing f1 leaves f2's label where it was
    noise_alt = z.clone()
    noise_alt[:, 3:] = torch.randn(500, 4, generator=gen)
    assert (np.abs(_labels(mapper._map(noise_alt)) - got).mean(0) / spread).max() < 0.03  # noise moves no label


def test_on_the_synthetic_world_each_factor_code_sets_its_true_factors(tmp_path):
    """Trained on the oracle's labels, prior codes give faces whose true factors are what the codes ask, and
    redrawing the expression code leaves the identity, pose and light (nearly) where they were."""
    from stylegan_disentangle.labels import get_labelers
    from stylegan_disentangle.synthetic.factors import factor_groups, factor_names

    G, fmap = load_synthetic()
    ws = sample_latents(G, np.arange(3000)).ws
    groups = factor_groups()
    factors = {g: groups[g] for g in ("identity", "expression", "pose", "illumination")}
    oracle = get_labelers("synthetic-oracle")(None, ws=ws)
    mapper = FactorMapper(G.num_ws, G.w_dim, factors, noise_dim=16, hidden=128, readout_hidden=64)
    labels = np.stack([oracle[n].numpy() for n in mapper.label_names], 1)
    mapper.fit_prior(ws, labels, steps=300, lr=3e-3).set_normalization(ws)
    sampler = FactorSampler(ws, mapper.code_dims, mapper.noise_dim, G.num_ws, batch_size=128, val_size=256)
    mapper = train_model(mapper, sampler, tmp_path / "run", steps=800, lr=3e-3, lr_schedule="cosine",
                         val_every=400, checkpoint_every=800, progress=False).model
    names = factor_names()
    z = mapper._code_matrix(None, None, 400, torch.Generator().manual_seed(1))
    slices = mapper._slices()
    asked = mapper.codes_to_labels({n: z[:, sl] for n, sl in slices.items()}).numpy()
    true = fmap(mapper._map(z)).numpy()
    order = [names.index(n) for n in mapper.label_names]
    imitation = np.abs(true[:, order] - asked).mean()
    assert imitation < 0.09  # normalized factor units; two random faces differ by about 0.55
    z_alt = z.clone()
    sl = slices["expression"]
    z_alt[:, sl] = torch.randn(400, sl.stop - sl.start, generator=torch.Generator().manual_seed(2))
    moved = fmap(mapper._map(z_alt)).numpy()
    rest = [names.index(n) for g in ("identity", "pose", "illumination") for n in groups[g]]
    expr = [names.index(n) for n in groups["expression"]]
    assert np.abs(moved[:, rest] - true[:, rest]).mean() < 0.04
    assert np.abs(moved[:, expr] - true[:, expr]).mean() > 0.3  # while the expression did change


def test_save_and_load_give_the_same_faces(tmp_path):
    mapper = _fitted()
    path = mapper.save(tmp_path / "fm.pt")
    loaded = load_model(path)
    assert isinstance(loaded, FactorMapper) and loaded.factors == FACTORS and loaded.readout.fitted
    assert torch.equal(loaded.map_factors(n=3, seed=1), mapper.map_factors(n=3, seed=1))
    w = _ws(3, 4)
    assert torch.equal(loaded.encode(w)[0]["f1"], mapper.encode(w)[0]["f1"])
    fresh = FactorMapper(NUM_WS, W_DIM, FACTORS, noise_dim=4)
    with pytest.raises(RuntimeError, match="fit_prior must run first"):
        fresh.training_losses(FactorSampler(_ws(600, 3), [2, 1], 4, NUM_WS, val_size=100).sample(0))
    with pytest.raises(RuntimeError, match="fit_prior must run first"):
        fresh.labels_to_codes(np.zeros((2, 3)))


def test_map_factors_cli_trains_writes_and_refuses_bad_requests(tmp_path):
    runner = CliRunner()
    out = tmp_path / "fm"
    train = runner.invoke(main, ["--quiet", "train-model", "factor-mapper", "synthetic", "--outdir", str(out),
                                 "--labeler", "synthetic-oracle", "--factors", "pose=yaw,pitch;expression=smile",
                                 "--steps", "4", "--pool", "200", "--batch-size", "16", "--noise-dim", "3",
                                 "--hidden", "8", "--readout-hidden", "0", "--preview-every", "2", "--device", "cpu"])
    assert train.exit_code == 0, train.output
    assert (out / "model.pt").is_file() and (out / "preview.png").is_file() and (out / "bank").is_dir()
    assert json.loads((out / "config.json").read_text())["factors"] == {"pose": ["yaw", "pitch"],
                                                                         "expression": ["smile"]}
    res = runner.invoke(main, ["map-factors", str(out / "model.pt"), "synthetic", "--count", "2", "--sweep",
                               "pose", "--columns", "3", "--set", "smile=0.5", "--outdir", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "m" / "ws.npy").shape[0] == 2 * 3  # face by face, each face's 3 columns
    asked = np.array(json.loads((tmp_path / "m" / "labels.json").read_text())["asked"])
    assert asked.shape == (2, 3, 3) and np.allclose(asked[..., 2], 0.5, atol=1e-4)  # smile set for every face
    assert Image.open(tmp_path / "m" / "factors.png").size[0] > 0
    for extra, words in ((["--sweep", "hair"], "not a factor"), (["--set", "grin=1"], "LABEL=VALUE"),
                         (["--sweep", "pose", "--set", "yaw=1"], "belong to the swept factor")):
        bad = runner.invoke(main, ["map-factors", str(out / "model.pt"), "synthetic", "--outdir",
                                   str(tmp_path / "bad")] + extra)
        assert bad.exit_code != 0 and words in bad.output and "Traceback" not in bad.output, (extra, bad.output)
    G, _ = load_synthetic()
    np.save(tmp_path / "real.npy", sample_latents(G, [3, 4]).ws.numpy())  # as `project` writes its ws.npy
    real = runner.invoke(main, ["map-factors", str(out / "model.pt"), "synthetic", "--ws", str(tmp_path / "real.npy"),
                                "--set", "smile=0.5", "--outdir", str(tmp_path / "r")])
    assert real.exit_code == 0, real.output
    edited = np.load(tmp_path / "r" / "ws.npy")
    assert edited.shape == (2, G.num_ws, G.w_dim)  # what --ws (and edit --ws) reads again
    again = runner.invoke(main, ["map-factors", str(out / "model.pt"), "synthetic", "--ws",
                                 str(tmp_path / "r" / "ws.npy"), "--outdir", str(tmp_path / "r2")])
    assert again.exit_code == 0, again.output
    assert np.allclose(np.array(json.loads((tmp_path / "r" / "labels.json").read_text())["asked"])[:, 0, 2], 0.5,
                       atol=1e-4)
    (tmp_path / "text.npy").write_text("not codes")
    bad_ws = runner.invoke(main, ["map-factors", str(out / "model.pt"), "synthetic", "--ws", str(tmp_path / "text.npy"),
                                  "--outdir", str(tmp_path / "bad")])
    assert bad_ws.exit_code != 0 and "text.npy: not an .npy of ws" in bad_ws.output
    label_free = runner.invoke(main, ["--quiet", "train-model", "factor-mapper", "synthetic", "--outdir",
                                      str(tmp_path / "d"), "--labeler", "decomposer3d", "--factors",
                                      "identity=depth,albedo;pose=yaw", "--map-components", "2", "--steps", "2",
                                      "--pool", "60", "--batch-size", "8", "--noise-dim", "2", "--hidden", "4",
                                      "--readout-hidden", "0", "--device", "cpu"])
    assert label_free.exit_code == 0, label_free.output
    assert load_model(tmp_path / "d" / "model.pt").factors == {
        "identity": ["depth_pc0", "depth_pc1", "albedo_pc0", "albedo_pc1"], "pose": ["yaw"]}
    missing = runner.invoke(main, ["train-model", "factor-mapper", "synthetic", "--outdir", str(tmp_path / "o"),
                                   "--labeler", "synthetic-oracle"])
    assert missing.exit_code != 0 and "needs --factors" in missing.output
    assert not (tmp_path / "bad").exists() and not (tmp_path / "o").exists()


def test_linearly_dependent_labels_of_a_factor_are_refused():
    """l2 = 2 l1 + 1 leaves f1's codes one dimension short: the prior names the factor instead of whitening a
    direction of ~0 spread (which would multiply any departure from it ~1e3-fold). (A constant label is refused
    earlier, by the readout.)"""
    pool = _ws(2000, 3)
    labels = _labels(pool)
    labels[:, 1] = 2 * labels[:, 0] + 1
    mapper = FactorMapper(NUM_WS, W_DIM, FACTORS, noise_dim=4, hidden=16, readout_hidden=0)
    with pytest.raises(LatentError, match=r"factor 'f1' \(\['l1', 'l2'\]\) are linearly dependent"):
        mapper.fit_prior(pool, labels, alpha=1e-6)
