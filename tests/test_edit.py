"""Editing along directions, rendered label effects, and extrapolation stop rules on constructed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis import (
    edit,
    extrapolate,
    measure_label_effects,
    parse_layers,
    parse_seeds,
    parse_steps,
    render,
)
from stylegan_disentangle.analysis.extrapolate import discriminator_scores
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.errors import LatentError, StyleGANDisentangleError
from stylegan_disentangle.labels import ImageStatsLabeler, labeler_from_callable
from stylegan_disentangle.latents import WStats, bank_seeds, sample_latents
from stylegan_disentangle.networks import Discriminator, Generator
from tests.helpers import ConstantImageG, MeanD

W_DIM = 16


@pytest.fixture(scope="module")
def G() -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


def _unit(i: int, d: int = W_DIM) -> np.ndarray:
    v = np.zeros(d, np.float32)
    v[i] = 1
    return v


@pytest.fixture(scope="module")
def ds() -> DirectionSet:
    rng = np.random.default_rng(0)
    v = rng.standard_normal((2, W_DIM))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    vectors = np.stack([_unit(0), v[0], v[1]])
    return DirectionSet(["e0", "mid", "free"], vectors, layer_ranges=[None, (1, 3), None], method="test",
                        extras={"std": np.array([2.0, 0.5, 1.0], np.float32)})


# ---------------------------------------------------------------------- parsing
def test_parse_steps_seeds_layers():
    np.testing.assert_allclose(parse_steps("-3:3:7"), [-3, -2, -1, 0, 1, 2, 3])
    np.testing.assert_allclose(parse_steps("0.5, -1"), [0.5, -1])
    assert parse_seeds("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert parse_layers("2:5") == [2, 3, 4] and parse_layers("0,2") == [0, 2] and parse_layers("all") is None
    for bad, fn in [("1:2", parse_steps), ("x", parse_steps), ("5-3", parse_seeds), ("a", parse_seeds),
                    ("4:2", parse_layers)]:
        with pytest.raises(StyleGANDisentangleError):
            fn(bad)


# ---------------------------------------------------------------------- edit
def test_edit_changes_only_the_directions_layer_range(G, ds):
    ws = sample_latents(G, [1, 2]).ws
    out = edit(G, ws, ds, "mid", [-1.0, 0.0, 2.0])
    assert out.shape == (3, 2, G.num_ws, W_DIM)
    untouched = [i for i in range(G.num_ws) if i not in (1, 2)]
    assert torch.equal(out[:, :, untouched], ws[None, :, untouched].expand(3, -1, -1, -1))
    expected = ws[None, :, 1:3] + torch.tensor([-1.0, 0.0, 2.0])[:, None, None, None] * torch.as_tensor(ds["mid"])
    torch.testing.assert_close(out[:, :, 1:3], expected)
    assert torch.equal(out[1], ws)


def test_edit_layers_argument_overrides_the_range(G, ds):
    ws = sample_latents(G, [3]).ws
    out = edit(G, ws, ds, "e0", [1.5], layers="4:6")
    delta = out[0, 0] - ws[0]
    assert torch.count_nonzero(delta[:4]) == 0
    torch.testing.assert_close(delta[4:], 1.5 * torch.as_tensor(_unit(0)).expand(2, -1))


def test_edit_in_sigma_units_and_per_layer_vectors(G, ds):
    ws = sample_latents(G, [4]).ws
    out = edit(G, ws, ds, "e0", [1.0], step_unit="sigma")  # std 2.0 -> moves w[0] by 2
    torch.testing.assert_close(out[0, 0, :, 0] - ws[0, :, 0], torch.full((G.num_ws,), 2.0))
    per_layer = np.zeros((1, G.num_ws, W_DIM), np.float32)
    per_layer[0, 2, 3] = 1.0
    pl = DirectionSet(["p"], per_layer)
    delta = edit(G, ws, pl, "p", [3.0])[0, 0] - ws[0]
    assert torch.nonzero(delta).tolist() == [[2, 3]] and delta[2, 3].item() == pytest.approx(3.0)


def test_edit_renders_images_on_request(G, ds):
    ws = sample_latents(G, [5, 6]).ws
    out, img = edit(G, ws, ds, "free", [0.0, 1.0], return_images=True)
    assert img.shape == (2, 2, 3, 16, 16)
    torch.testing.assert_close(img[0], render(G, ws))
    assert not torch.allclose(img[1], img[0])


def test_edit_rejects_unknown_names_nan_and_wrong_sizes(G, ds):
    ws = sample_latents(G, [1]).ws
    with pytest.raises(StyleGANDisentangleError, match="no direction named 'nope'.*e0"):
        edit(G, ws, ds, "nope", [1.0])
    bad = ws.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(LatentError, match="NaN"):
        edit(G, bad, ds, "e0", [1.0])
    with pytest.raises(LatentError):
        edit(G, torch.zeros(1, G.num_ws, 5), ds, "e0", [1.0])


def test_directions_found_on_another_network_are_refused_by_name(G, caplog):
    """Another W width (or a per-layer set over another number of ws) cannot move this generator's codes: edit,
    the label effects and the extrapolation say so before any arithmetic; a set recorded on another checkpoint
    of the same shapes only warns."""
    ws = sample_latents(G, [1]).ws
    wide = DirectionSet(["e0"], _unit(0, 2 * W_DIM)[None])
    per_layer = DirectionSet(["e0"], np.tile(_unit(0), (G.num_ws + 1, 1))[None] / np.sqrt(G.num_ws + 1))
    lab = labeler_from_callable(lambda img, ws: ws[:, 0, 0], "t", needs_ws=True, needs_images=False)
    for other, message in ((wide, f"has w_dim {2 * W_DIM} but the network has {W_DIM}"),
                           (per_layer, f"per-layer over {G.num_ws + 1} ws but the network has {G.num_ws}")):
        calls = (lambda d: edit(G, ws, d, "e0", [1.0]),
                 lambda d: measure_label_effects(G, ws.expand(2, -1, -1), d, lab, label_std={"t": 1.0}),
                 lambda d: extrapolate(G, ws, d, "e0", step_size=0.5, max_steps=2, labeler=lab))
        for call in calls:
            with pytest.raises(LatentError, match=f"{message}: the directions were found on another network"):
                call(other)
    recorded = DirectionSet(["e0"], _unit(0)[None], checkpoint_sha256="ab" * 32)
    with caplog.at_level("WARNING"):
        recorded.check_fits(W_DIM, G.num_ws, checkpoint_sha256="ab" * 32)
        assert not caplog.records
        recorded.check_fits(W_DIM, G.num_ws, what="set X", checkpoint_sha256="cd" * 32)
    assert "set X was found on checkpoint abababababab..., this is cdcdcdcdcdcd..." in caplog.text


# ---------------------------------------------------------------------- label effects
def test_label_effects_of_a_linear_ws_label_are_exact(G, ds):
    u = np.random.default_rng(1).standard_normal(W_DIM).astype(np.float32)
    lab = labeler_from_callable(lambda img, ws: ws[:, 0] @ torch.as_tensor(u), "proj", needs_ws=True,
                                needs_images=False)
    ws = sample_latents(G, list(range(6))).ws
    eff = measure_label_effects(G, ws, ds, lab, label_std={"proj": 4.0})
    # per unit step: u . v for directions touching layer 0; 'mid' (layers 1-2) cannot move a layer-0 label
    np.testing.assert_allclose(eff.per_unit[:, 0], [u[0], 0.0, float(u @ ds["free"])], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(eff.effects[:, 0], eff.per_unit[:, 0] * np.array([2.0, 0.5, 1.0]) / 4.0, rtol=1e-6)
    np.testing.assert_allclose(eff.step_w, [2.0, 0.5, 1.0])  # +-1 sigma
    assert eff.suggested_names()[0] == f"e0:{'+' if u[0] > 0 else '-'}proj" and eff.suggested_names()[1] == "mid"


def test_label_effects_with_images_name_a_brightness_direction():
    # a generator whose image brightness is w[0]: the e0 direction must be named after brightness
    fake = ConstantImageG()
    lab = ImageStatsLabeler(names=["brightness", "com_x"])
    ws = torch.zeros(4, fake.num_ws, 4)
    ws[:, :, 0] = torch.linspace(-0.5, 0.5, 4)[:, None]
    ds2 = DirectionSet(["e0", "e1"], np.stack([_unit(0, 4), _unit(1, 4)]), extras={"std": np.ones(2, np.float32)})
    eff = measure_label_effects(fake, ws, ds2, lab, step=0.1)
    assert eff.per_unit[0, 0] == pytest.approx(0.5, rel=1e-4)  # brightness = (w0 + 1) / 2
    assert eff.per_unit[1, 0] == 0 and eff.suggested_names() == ["e0:+brightness", "e1"]
    table = eff.to_dict()["directions"]["e0"]
    assert table["effects"]["brightness"] == pytest.approx(0.5 / eff.label_std[0], rel=1e-4)


# ---------------------------------------------------------------------- extrapolation


def test_extrapolation_stops_when_the_label_saturates(G):
    lab = labeler_from_callable(lambda img, ws: torch.tanh(ws[:, 0, 0]), "t", needs_ws=True, needs_images=False)
    ds1 = DirectionSet(["e0"], _unit(0)[None])
    ws = torch.zeros(1, G.num_ws, W_DIM)
    res = extrapolate(G, ws, ds1, "e0", step_size=0.5, max_steps=20, labeler=lab, saturation_fraction=0.1)
    # changes per step: tanh(.5t) - tanh(.5(t-1)); the first one <= 10% of the first step's is at t=5
    changes = np.diff(np.tanh(0.5 * np.arange(8)))
    first = int(np.argmax(changes[1:] <= 0.1 * changes[0])) + 2
    assert first == 5 and res.stop_step.tolist() == [4] and res.stop_reason == ["saturation"]
    assert res.thresholds["saturation_label"] == "t"
    np.testing.assert_allclose(res.labels["t"][:6, 0], np.tanh(0.5 * np.arange(6)), rtol=1e-6)
    assert np.isnan(res.labels["t"][6:]).all()  # nothing computed after the stop
    torch.testing.assert_close(res.final_ws[0, :, 0], torch.full((G.num_ws,), 2.0))


def test_extrapolation_refuses_a_saturation_label_the_labeler_does_not_give(G):
    lab = labeler_from_callable(lambda img, ws: torch.tanh(ws[:, 0, 0]), "t", needs_ws=True, needs_images=False)
    ds1 = DirectionSet(["e0"], _unit(0)[None])
    with pytest.raises(StyleGANDisentangleError, match=r"saturation_label 'yaw' is not a label .*\['t'\]"):
        extrapolate(G, torch.zeros(1, G.num_ws, W_DIM), ds1, "e0", step_size=0.5, max_steps=3, labeler=lab,
                    saturation_label="yaw")


def test_extrapolation_stops_when_leaving_the_w_prior(G):
    rng = np.random.default_rng(0)
    stats = WStats().fit(rng.standard_normal((4000, W_DIM)) * 0.5)  # std 0.5 per axis
    ds1 = DirectionSet(["e0"], _unit(0)[None])
    ws = torch.as_tensor(stats.mean_, dtype=torch.float32).expand(2, G.num_ws, W_DIM).clone()
    ws[1, :, 0] -= 0.5  # the second sample starts one std behind: it gets one step further
    res = extrapolate(G, ws, ds1, "e0", step_size=0.5, max_steps=10, w_stats=stats, mahalanobis_threshold=2.5)
    # distance ~ |offset| / 0.5: sample 0 is at 1, 2, 3 (> 2.5) -> stops at step 2; sample 1 at step 3
    assert res.stop_step.tolist() == [2, 3] and res.stop_reason == ["mahalanobis", "mahalanobis"]
    assert res.mahalanobis[2, 0] == pytest.approx(2.0, rel=0.05)
    default = extrapolate(G, ws[:1], ds1, "e0", step_size=0.5, max_steps=10, w_stats=stats)
    assert default.thresholds["mahalanobis"] == pytest.approx(stats.distance_quantile(0.99))


def test_extrapolation_stops_when_the_discriminator_objects(tmp_path):
    fake, D = ConstantImageG(), MeanD()
    ds1 = DirectionSet(["e0"], _unit(0, 4)[None])
    ws = torch.zeros(3, fake.num_ws, 4)
    ws[:, :, 0] = torch.tensor([0.0, -0.1, 0.3])[:, None]
    res = extrapolate(fake, ws, ds1, "e0", step_size=0.2, max_steps=10, D=D, d_threshold=-0.5)
    # D = -w0: positions w0 + 0.2 t fall below -0.5 once w0 + 0.2 t > 0.5
    assert res.stop_step.tolist() == [2, 3, 1] and set(res.stop_reason) == {"discriminator"}
    np.testing.assert_allclose(res.d_scores[:2, 0], [0.0, -0.2], atol=1e-6)
    npz, js = res.save(tmp_path / "walk")
    assert json.loads(js.read_text())["reason_counts"] == {"discriminator": 3}
    assert np.load(npz)["ws"].shape == (11, 3, fake.num_ws, 4)


def test_runs_to_max_steps_when_no_rule_fires_and_first_rule_wins():
    fake, D = ConstantImageG(), MeanD()
    ds1 = DirectionSet(["e0"], _unit(0, 4)[None])
    res = extrapolate(fake, torch.zeros(1, 3, 4), ds1, "e0", step_size=-0.1, max_steps=4, D=D, d_threshold=-5.0)
    assert res.stop_step.tolist() == [4] and res.stop_reason == ["max_steps"]
    np.testing.assert_allclose(res.final_steps, [-0.4], atol=1e-7)
    with pytest.raises(StyleGANDisentangleError, match="step_size"):
        extrapolate(fake, torch.zeros(1, 3, 4), ds1, "e0", step_size=0.0, max_steps=4)
    for bad in (0, 2.5, True):
        with pytest.raises(StyleGANDisentangleError, match=f"max_steps must be an integer >= 1, got {bad!r}"):
            extrapolate(fake, torch.zeros(1, 3, 4), ds1, "e0", step_size=0.1, max_steps=bad)


def test_discriminator_threshold_defaults_to_a_quantile_of_generated_samples(G):
    torch.manual_seed(1)
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=256, channel_max=32).eval()
    ds1 = DirectionSet(["e0"], _unit(0)[None])
    ws = sample_latents(G, [0]).ws
    res = extrapolate(G, ws, ds1, "e0", step_size=1.0, max_steps=1, D=D, d_quantile=0.1, d_reference_samples=16,
                      d_reference_seed=3)
    lat = sample_latents(G, bank_seeds(3, 0, 16))
    ref = discriminator_scores(D, render(G, lat.ws))
    assert res.thresholds["discriminator"] == pytest.approx(float(np.quantile(ref, 0.1)), rel=1e-5)
    assert res.thresholds["d_reference"] == "generated samples at psi=1"


def test_the_python_api_takes_a_directions_short_id_as_the_cli_does(G):
    """'e0' picks 'e0:+proj' in edit / extrapolate / label effects, as `edit --name e0` does; a misspelt id is an
    error naming the close ones."""
    from stylegan_disentangle.analysis.edit import edit
    from stylegan_disentangle.analysis.extrapolate import extrapolate
    from stylegan_disentangle.errors import StyleGANDisentangleError

    tagged = DirectionSet(["e0:+proj", "e1"], np.stack([_unit(0), _unit(1)]), extras={"std": np.ones(2, np.float32)})
    ws = sample_latents(G, [0, 1]).ws
    by_id = edit(G, ws, tagged, "e0", [-1.0, 1.0], step_unit="sigma")
    by_name = edit(G, ws, tagged, "e0:+proj", [-1.0, 1.0], step_unit="sigma")
    assert torch.equal(by_id, by_name)
    assert extrapolate(G, ws, tagged, "e0", 0.5, 2).final_ws.shape == ws.shape
    with pytest.raises(StyleGANDisentangleError, match="did you mean 'e0:\\+proj'"):
        edit(G, ws, tagged, "e00", [1.0])


def test_label_effects_of_one_base_code_have_no_spread_to_scale_by(G, ds):
    """With one base code the labels' spread is unknown: the effects are NaN, not a confident 0, and no name is
    suggested from them; an already tagged name is tagged anew from its id."""
    u = np.random.default_rng(1).standard_normal(W_DIM).astype(np.float32)
    lab = labeler_from_callable(lambda img, ws: ws[:, 0] @ torch.as_tensor(u), "proj", needs_ws=True,
                                needs_images=False)
    one = measure_label_effects(G, sample_latents(G, [0]).ws, ds, lab)
    assert np.isnan(one.effects).all() and one.suggested_names() == ds.names
    tagged = DirectionSet(["e0:-old", "mid", "free"], ds.vectors, layer_ranges=[None, (1, 3), None],
                          extras={"std": np.array([2.0, 0.5, 1.0], np.float32)})
    eff = measure_label_effects(G, sample_latents(G, list(range(6))).ws, tagged, lab, label_std={"proj": 4.0})
    assert eff.suggested_names()[0] == f"e0:{'+' if u[0] > 0 else '-'}proj"
