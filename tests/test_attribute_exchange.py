"""AttributeExchangeModel, LatentReadout and ExchangeSampler: the swap algebra, the readout's known answers, a
planted linear problem, the synthetic world against the projected-difference baseline, files and the CLI."""

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
from stylegan_disentangle.models import (
    AttributeExchangeModel,
    ExchangeSampler,
    LatentReadout,
    load_model,
    parse_attribute_spec,
    train_model,
)
from stylegan_disentangle.models._nets import reverse_gradient
from stylegan_disentangle.models.evaluate import projected_difference
from stylegan_disentangle.synthetic.checkpoint import load_synthetic
from tests.helpers import orthonormal_rows, random_ws

NUM_WS, W_DIM = 2, 12
ATTRIBUTES = {"a1": ["l1", "l2"], "a2": ["l3"], "a3": ["l4"]}


def _model(**kwargs) -> AttributeExchangeModel:
    torch.manual_seed(0)
    kwargs = {"part_dim": 4, "hidden": 16, **kwargs}
    return AttributeExchangeModel(NUM_WS, W_DIM, ATTRIBUTES, held=["h1"], **kwargs)


def _ws(n: int, seed: int) -> torch.Tensor:
    return random_ws(n, seed, NUM_WS, W_DIM)


def _planted_rows() -> torch.Tensor:
    """Five orthonormal readout rows [5, W_DIM]: the labels l1, l2, l3, l4, h1 of a planted linear world."""
    return orthonormal_rows(5, W_DIM)


def test_the_attribute_spec_reads_groups_and_single_labels():
    assert parse_attribute_spec("expression=smile, mouth_open ; yaw,pitch") == {
        "expression": ["smile", "mouth_open"], "yaw": ["yaw"], "pitch": ["pitch"]}
    assert parse_attribute_spec("smile") == {"smile": ["smile"]}
    for bad, words in (("", "no attribute"), ("e=;x", "at least one label"), ("a=x;a=y", "named twice"),
                       ("a=x,y;y", "more than once")):
        with pytest.raises(ValueError, match=words):
            parse_attribute_spec(bad)


def test_the_gradient_reversal_passes_values_and_negates_gradients():
    with torch.enable_grad():
        x = torch.randn(4, 3, requires_grad=True)
        y = reverse_gradient(x)
        assert torch.equal(y, x)
        (y * torch.arange(3.0)).sum().backward()
    assert torch.equal(x.grad, -torch.arange(3.0).expand(4, 3))


def test_the_adversarial_term_trains_the_discriminator_down_and_the_exchange_up(monkeypatch):
    """One loss, one backward: the discriminator gets the gradient of its loss, the encoder the negated one."""
    from stylegan_disentangle.models import attribute_exchange

    assert _model().discriminator is None  # off by default
    model = _model(adv_weight=1.0, move_weight=0.0).set_normalization(_ws(64, 1))
    batch = {"a": _ws(16, 2), "b": _ws(16, 3), "mask": torch.eye(3)[torch.arange(16) % 3]}

    def grads():
        model.zero_grad()
        with torch.enable_grad():
            losses = model.training_losses(batch)
            losses["total"].backward()
        assert set(losses) == {"move", "adv", "total"}
        return ([p.grad.clone() for p in model.discriminator.parameters()],
                [p.grad.clone() for p in model.encoder.parameters()])

    d_rev, e_rev = grads()
    monkeypatch.setattr(attribute_exchange, "reverse_gradient", lambda x: x)
    d_plain, e_plain = grads()
    assert all(torch.allclose(a, b) for a, b in zip(d_rev, d_plain))
    assert all(torch.allclose(a, -b) for a, b in zip(e_rev, e_plain))
    assert any(g.abs().max() > 0 for g in e_rev)


def test_no_swap_and_strength_zero_return_the_target_exactly():
    model = _model().set_normalization(_ws(64, 1))
    a, b = _ws(5, 2), _ws(5, 3)
    assert torch.equal(model.swap_attributes(a, b, []), a)
    assert torch.equal(model.swap_attributes(a, b, "a1", strength=0.0), a)
    assert torch.allclose(model.swap_attributes(a, a), a, atol=1e-6)
    one = model.swap_attributes(a, b[:1], ["a1", "a3"])  # one exemplar for every target
    assert one.shape == a.shape and torch.allclose(one, model.swap_attributes(a, b[:1].expand(5, -1, -1),
                                                                              ["a1", "a3"]))
    assert model.encode(a).shape == (5, 3, 4)
    assert model.label_names == ["l1", "l2", "l3", "l4", "h1"] and model.attribute_columns == [[0, 1], [2], [3]]


def test_bad_inputs_are_named():
    model = _model()
    with pytest.raises(ValueError, match=r"unknown attributes \['nose'\].*\['a1', 'a2', 'a3'\]"):
        model.swap_attributes(_ws(2, 0), _ws(2, 1), ["nose"])
    with pytest.raises(LatentError, match="target has 3 codes and exemplar 2"):
        model.swap_attributes(_ws(3, 0), _ws(2, 1))
    nan = _ws(2, 1)
    nan[0, 0, 0] = float("nan")
    with pytest.raises(LatentError, match="exemplar contains NaN"):
        model.swap_attributes(_ws(2, 0), nan)
    with pytest.raises(ValueError, match="more than once"):
        AttributeExchangeModel(NUM_WS, W_DIM, {"a": ["x"]}, held=["x"])
    with pytest.raises(ValueError, match="loss weights must be >= 0"):
        AttributeExchangeModel(NUM_WS, W_DIM, {"a": ["x"]}, adv_weight=-1)
    readout = LatentReadout(W_DIM, ["x", "y"])
    with pytest.raises(RuntimeError, match="fit must run"):
        readout(_ws(2, 0))
    with pytest.raises(LatentError, match=r"labels \['y'\] do not vary"):
        readout.fit(_ws(50, 0), np.stack([np.arange(50.0), np.ones(50)], 1))
    with pytest.raises(LatentError, match=r"labels must be \[50, 2\]"):
        readout.fit(_ws(50, 0), np.zeros((50, 3)))


def test_the_readout_recovers_linear_labels_and_its_mlp_a_nonlinear_one():
    w = _ws(3000, 4)[:, 0]
    rows = _planted_rows()
    linear = (w @ rows[:2].T).numpy() * [2.0, -3.0] + [1.0, 5.0]
    readout = LatentReadout(W_DIM, ["u", "v"]).fit(w, linear, alpha=1e-6)
    assert readout.r2_.min() > 1 - 1e-6
    raw = readout(w[:, None]) * readout.label_std + readout.label_mean  # back to the labels' own units
    assert np.allclose(raw.numpy(), linear, atol=1e-3)  # float32 rounding of labels of size ~10
    square = ((w @ rows[0]) ** 2).numpy()[:, None]  # its best linear fit explains nothing
    flat = LatentReadout(W_DIM, ["sq"]).fit(w, square)
    curved = LatentReadout(W_DIM, ["sq"], hidden=32)
    state = torch.random.get_rng_state()
    curved.fit(w, square, steps=600, lr=1e-2)
    assert torch.equal(torch.random.get_rng_state(), state)  # the MLP's seeded fit leaves the caller's RNG alone
    assert flat.r2_[0] < 0.05 and curved.r2_[0] > 0.9  # held-out R^2
    again = LatentReadout(W_DIM, ["sq"], hidden=32).fit(w, square, steps=600, lr=1e-2)
    assert torch.equal(again(w), curved(w))


def test_a_map_label_stands_for_its_leading_principal_components():
    from sklearn.linear_model import LinearRegression

    from stylegan_disentangle.models.readout import label_columns

    gen = np.random.default_rng(0)
    scores = gen.normal(size=(400, 2)) * [3.0, 1.0]
    basis = np.linalg.qr(gen.normal(size=(2 * 4 * 4, 2)))[0].T  # two orthonormal maps of 2 x 4 x 4
    maps = (scores @ basis).reshape(400, 2, 4, 4) + 5.0
    labels = {"depth": maps, "yaw": scores[:, 1] * 0 + gen.normal(size=400), "roll": np.arange(400.0)}
    groups, held, matrix = label_columns(labels, {"shape": ["depth"], "pose": ["yaw"]}, ["roll"], components=2)
    assert groups == {"shape": ["depth_pc0", "depth_pc1"], "pose": ["yaw"]} and held == ["roll"]
    assert matrix.shape == (400, 4) and np.array_equal(matrix[:, 2], labels["yaw"].astype(np.float32))
    assert LinearRegression().fit(matrix[:, :2], scores).score(matrix[:, :2], scores) > 1 - 1e-6  # the same span
    assert abs(np.corrcoef(matrix[:, 0], scores[:, 0])[0, 1]) > 0.999  # the first component: the larger spread
    with pytest.raises(KeyError, match="no label 'albedo'"):
        label_columns(labels, {"shape": ["albedo"]})


def test_the_sampler_pairs_opposite_sides_of_one_attribute_at_a_time():
    w = _ws(600, 5)[:, 0]
    labels = (w @ _planted_rows().T).numpy()
    sampler = ExchangeSampler(w, labels, [[0, 1], [2], [3]], NUM_WS, batch_size=32, seed=3, val_size=100)
    first, again = sampler.sample(4), sampler.sample(4)
    assert all(torch.equal(first[k], again[k]) for k in first)
    for step, col in ((1, 2), (2, 3)):  # one-label attributes: every A lies above every B in its label
        batch = sampler.sample(step)
        assert torch.equal(batch["mask"], torch.eye(3)[step].expand(32, 3))
        a_val, b_val = batch["a"][:, 0] @ _planted_rows()[col], batch["b"][:, 0] @ _planted_rows()[col]
        assert a_val.min() >= b_val.max() - 1e-5 and batch["a"].shape == (32, NUM_WS, W_DIM)
    batch = sampler.sample(0)  # a two-label attribute: A and B on opposite sides of its first component
    block = labels[:500, :2]
    mean, std = block.mean(0), block.std(0)
    component = np.linalg.svd((block - mean) / std, full_matrices=False)[2][0]
    score = lambda x: ((x[:, 0] @ _planted_rows()[:2].T).numpy() - mean) / std @ component  # noqa: E731
    assert torch.equal(batch["mask"], torch.eye(3)[0].expand(32, 3))
    assert score(batch["a"]).min() >= score(batch["b"]).max() - 1e-5
    val = sampler.validation()
    assert torch.equal(val["mask"].argmax(1), torch.arange(100) % 3)
    assert torch.equal(val["a"][:, 0], w[500:])
    with pytest.raises(LatentError, match="need at least val_size"):
        ExchangeSampler(w[:50], labels[:50], [[0]], NUM_WS, val_size=100)


def test_on_a_planted_linear_world_the_model_learns_the_exact_swap(tmp_path):
    rows = _planted_rows()
    w = _ws(4000, 6)[:, 0]
    labels = (w @ rows.T).numpy()
    model = _model(hidden=0, adv_weight=0.0, move_weight=0.01).set_normalization(w)
    readout = LatentReadout(W_DIM, model.label_names).fit(w, labels, alpha=1e-6)
    sampler = ExchangeSampler(w, labels, model.attribute_columns, NUM_WS, batch_size=256, seed=0)
    result = train_model(model, sampler, tmp_path / "run", steps=600, lr=1e-2, lr_schedule="cosine", seed=0,
                         G=readout, val_every=200, checkpoint_every=600, progress=False)
    assert result.last_losses["take"] < 2e-3 and result.last_losses["keep"] < 2e-3
    a, b = _ws(200, 8), _ws(200, 9)
    for name, cols in (("a1", [0, 1]), ("a3", [3]), (["a1", "a2"], [0, 1, 2])):
        got = result.model.swap_attributes(a, b, name)[:, 0] @ rows.T  # the planted labels of the result
        want = (a[:, 0] @ rows.T).clone()
        want[:, cols] = (b[:, 0] @ rows.T)[:, cols]
        assert (got - want).abs().max() < 0.15 and (got - want).abs().mean() < 0.04, name


@pytest.fixture(scope="module")
def synthetic():
    from stylegan_disentangle.labels import get_labelers

    G, fmap = load_synthetic()
    ws = sample_latents(G, np.arange(3000)).ws
    oracle = get_labelers("synthetic-oracle")
    return G, fmap, ws, oracle(None, ws=ws)


def test_on_the_synthetic_world_swaps_take_the_exemplars_expression_and_keep_the_rest(synthetic, tmp_path):
    """Trained on the oracle's labels (as a user's attribute classifier), the swapped expression moves to the
    exemplar's and the pose and light stay, where adding the exemplar's difference along the expression labels'
    ridge directions moves the pose and the light with it (the world's factors are correlated in W)."""
    from stylegan_disentangle.directions import LinearDirections
    from stylegan_disentangle.synthetic.factors import factor_groups, factor_names

    G, fmap, ws, oracle = synthetic
    spec = parse_attribute_spec("expression=mouth_open,smile,brow_raise;pose=yaw,pitch,roll;"
                                "light=light_azimuth,light_elevation,ambient")
    model = AttributeExchangeModel(G.num_ws, G.w_dim, spec, part_dim=4, hidden=64).set_normalization(ws)
    labels = np.stack([oracle[n].numpy() for n in model.label_names], 1)
    readout = LatentReadout(G.w_dim, model.label_names, hidden=64).fit(ws, labels, steps=300, lr=3e-3)
    sampler = ExchangeSampler(ws, labels, model.attribute_columns, G.num_ws, batch_size=128, val_size=256)
    model = train_model(model, sampler, tmp_path / "run", steps=800, lr=3e-3, lr_schedule="cosine", G=readout,
                        val_every=400, checkpoint_every=800, progress=False).model
    ev = sample_latents(G, 10_000 + np.arange(600)).ws
    a, b = ev[:300], ev[300:]
    names = factor_names()
    expr = [names.index(n) for n in factor_groups()["expression"]]
    rest = [names.index(n) for g in ("pose", "illumination") for n in factor_groups()[g]]
    ridge = LinearDirections(method="ridge").fit(ws[:, 0].numpy(), {n: labels[:, i] for i, n in
                                                                     enumerate(model.label_names)})
    baseline = projected_difference(a, b, ridge.to_direction_set().select(spec["expression"]).vectors)
    f_a, f_b = fmap(a).numpy(), fmap(b).numpy()

    def errors(res):
        f = fmap(res).numpy()
        return np.abs(f[:, expr] - f_b[:, expr]).mean(), np.abs(f[:, rest] - f_a[:, rest]).mean()

    take, keep = errors(model.swap_attributes(a, b, "expression"))
    base_take, base_keep = errors(baseline)
    unchanged_take = errors(a)[0]
    assert take < 0.35 * unchanged_take  # the expression moved most of the way to the exemplar's
    assert keep < 0.6 * base_keep  # and the pose and the light moved much less than the baseline moves them
    assert take < base_take + 0.02


def test_save_and_load_give_the_same_swaps(tmp_path):
    model = _model().set_normalization(_ws(64, 1))
    path = model.save(tmp_path / "ex.pt")
    loaded = load_model(path)
    assert isinstance(loaded, AttributeExchangeModel) and loaded.attributes == ATTRIBUTES and loaded.held == ["h1"]
    a, b = _ws(4, 2), _ws(4, 3)
    assert torch.equal(loaded.swap_attributes(a, b, "a2"), model.swap_attributes(a, b, "a2"))


def test_swap_attributes_cli_trains_writes_and_refuses_other_models(tmp_path):
    runner = CliRunner()
    out = tmp_path / "ex"
    train = runner.invoke(main, ["--quiet", "train-model", "attribute-exchange", "synthetic", "--outdir", str(out),
                                 "--labeler", "synthetic-oracle", "--attributes", "expression=smile,mouth_open;yaw",
                                 "--held", "head_width", "--steps", "4", "--pool", "200", "--batch-size", "16",
                                 "--part-dim", "2", "--hidden", "8", "--readout-hidden", "8", "--preview-every", "2",
                                 "--device", "cpu"])
    assert train.exit_code == 0, train.output
    assert (out / "model.pt").is_file() and (out / "preview.png").is_file() and (out / "bank").is_dir()
    config = json.loads((out / "config.json").read_text())
    assert config["attributes"] == {"expression": ["smile", "mouth_open"], "yaw": ["yaw"]}
    assert set(config["readout_held_out_r2"]) == {"smile", "mouth_open", "yaw", "head_width"}
    described = json.loads(runner.invoke(main, ["info", str(out / "model.pt"), "--json"]).output)
    assert described["kind"] == "attribute-exchange" and described["info.step"] == 4
    res = runner.invoke(main, ["swap-attributes", str(out / "model.pt"), "synthetic", "--target-seeds", "0-2",
                               "--exemplar-seeds", "7", "--attributes", "yaw", "--outdir", str(tmp_path / "sw"),
                               "--device", "cpu"])
    assert res.exit_code == 0, res.output
    ws = np.load(tmp_path / "sw" / "result_ws.npy")
    assert ws.shape[0] == 3 and np.load(tmp_path / "sw" / "exemplar_ws.npy").shape == ws.shape
    assert Image.open(tmp_path / "sw" / "swap.png").size[0] > 0
    record = json.loads((tmp_path / "sw" / "config.json").read_text())
    assert record["exemplar_seeds"] == [7, 7, 7] and record["attributes"] == ["yaw"]
    G, _ = load_synthetic()
    np.save(tmp_path / "mine.npy", sample_latents(G, [20, 21]).ws[:, 0].numpy())  # your own faces, as w [N, w_dim]
    own = runner.invoke(main, ["swap-attributes", str(out / "model.pt"), "synthetic", "--target-ws",
                               str(tmp_path / "mine.npy"), "--exemplar-seeds", "7", "--outdir", str(tmp_path / "own")])
    assert own.exit_code == 0, own.output
    assert np.allclose(np.load(tmp_path / "own" / "target_ws.npy")[:, 0], np.load(tmp_path / "mine.npy"))
    record = json.loads((tmp_path / "own" / "config.json").read_text())
    assert record["target_seeds"] == [0, 1] and record["target_ws"] == str(tmp_path / "mine.npy")
    uneven = runner.invoke(main, ["swap-attributes", str(out / "model.pt"), "synthetic", "--target-ws",
                                  str(tmp_path / "mine.npy"), "--exemplar-seeds", "1-3", "--outdir",
                                  str(tmp_path / "bad")])
    assert uneven.exit_code != 0 and "2 seeds in --target-ws but 3 in --exemplar-seeds" in uneven.output
    unknown = runner.invoke(main, ["swap-attributes", str(out / "model.pt"), "synthetic", "--attributes", "pose",
                                   "--outdir", str(tmp_path / "bad")])
    assert unknown.exit_code != 0 and "unknown attributes ['pose']" in unknown.output
    assert not (tmp_path / "bad").exists()


def test_train_model_attribute_exchange_names_what_is_missing(tmp_path):
    runner = CliRunner()
    base = ["train-model", "attribute-exchange", "synthetic", "--outdir", str(tmp_path / "o")]
    cases = [([], "needs --labeler"),
             (["--labeler", "synthetic-oracle"], "needs --attributes"),
             (["--labeler", "synthetic-oracle", "--attributes", "grin"], "labels ['grin'] are not among"),
             (["--labeler", "synthetic-oracle", "--attributes", "smile", "--held", "smile"], "none that an attribute"),
             (["--labeler", "synthetic-oracle", "--attributes", "smile", "--pool", "10"], "at least 40")]
    for extra, words in cases:
        res = runner.invoke(main, base + extra)
        assert res.exit_code != 0 and words in res.output and "Traceback" not in res.output, (extra, res.output)
    assert not (tmp_path / "o").exists()
