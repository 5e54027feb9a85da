"""export_augmentation: exactly N images, labels evenly spread over the target, atomic output; the CLI command."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from stylegan_disentangle.analysis import augmentation as aug
from stylegan_disentangle.analysis.augmentation import export_augmentation, parse_target
from stylegan_disentangle.directions import DirectionSet
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels.calibration import LabelCalibration
from stylegan_disentangle.networks import Generator

W_DIM = 16


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()


class WLabeler:
    """'yaw' = scale * f(w . v) read from the ws: linear (f = identity) or saturating (f = tanh)."""

    needs_ws = True
    needs_images = False
    names = ["yaw", "other"]

    def __init__(self, v: np.ndarray, scale: float, saturating: bool = False):
        self.v = torch.as_tensor(v, dtype=torch.float32)
        self.scale, self.saturating = scale, saturating

    def __call__(self, img, ws=None):
        x = ws[:, 0] @ self.v
        y = torch.tanh(x) if self.saturating else x
        return {"yaw": self.scale * y, "other": ws[:, 0, 1]}


def _set(v: np.ndarray) -> DirectionSet:
    return DirectionSet(names=["yaw"], vectors=v[None].astype(np.float32), method="test")


def _v() -> np.ndarray:
    v = np.zeros(W_DIM)
    v[0] = 1.0
    return v


def test_exactly_count_images_with_labels_on_the_evenly_spaced_targets(G, tmp_path):
    lab = WLabeler(_v(), scale=20.0)  # linear: every target in range is reachable, interpolation is exact
    out = tmp_path / "aug"
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-45:45", 37, out, step=0.5, max_steps=10,
                              mahalanobis_quantile=None, batch_size=16)
    files = sorted((out / "images").glob("*.png"))
    assert len(files) == 37 and [f.name for f in files] == [f"{i:06d}.png" for i in range(37)]
    np.testing.assert_allclose(res.targets, np.linspace(-45, 45, 37))
    # labels of the written images equal their targets (linear label: float32 rounding of ws and labels only)
    np.testing.assert_allclose(res.labels["yaw"], res.targets, atol=1e-3)
    record = json.loads((out / "labels.json").read_text())
    assert record["count"] == 37 and len(record["images"]) == 37 and record["reached_fraction"] == 1.0
    assert [r["file"] for r in record["images"]] == [f"images/{f.name}" for f in files]
    npz = np.load(out / "labels.npz")
    np.testing.assert_allclose(npz["label_yaw"], res.labels["yaw"])
    assert npz["ws"].shape == (37, G.num_ws, W_DIM)
    assert len({r["base_seed"] for r in record["images"]}) == max(4, 37 // 8)  # several identities


def test_saturating_semantic_stops_the_walk_and_clips_unreachable_targets(G, tmp_path):
    lab = WLabeler(_v(), scale=30.0, saturating=True)  # yaw never exceeds +-30
    res = export_augmentation(G, _set(_v()), "yaw", lab, (-45, 45), 12, tmp_path / "sat", step=0.5, max_steps=20,
                              mahalanobis_quantile=None, saturation_fraction=0.1)
    assert len(res.labels["yaw"]) == 12
    assert np.all(np.abs(res.labels["yaw"]) < 30)
    inside = np.abs(res.targets) < 25
    # two regula-falsi rounds on tanh from brackets 0.5 wide in w.v: measured error 0.02 (0.55 without refining)
    np.testing.assert_allclose(res.labels["yaw"][inside], res.targets[inside], atol=0.05)
    assert res.summary["reached_fraction"] < 1.0
    # where each walk stops: the rule fires at the first step t >= 2 whose change is at most 0.1 of the first step's,
    # and the walk keeps t - 1. Replayed in float64 from each base's w.v, it gives each base's last accepted labels;
    # a target beyond them is not reached and gets that extreme (a wrong threshold moves it: 10x lower stops ~2
    # steps later, where tanh has risen by 0.3-1 degree)
    from stylegan_disentangle.latents import sample_latents
    from stylegan_disentangle.latents.bank import bank_seeds

    record = json.loads((tmp_path / "sat" / "labels.json").read_text())
    seeds = bank_seeds(0, 0, record["n_bases"])
    x0 = sample_latents(G, seeds).ws[:, 0, 0].double().numpy()

    def stop_of(x: float, sign: float) -> int:
        ys = 30 * np.tanh(x + sign * 0.5 * np.arange(21))
        first = abs(ys[1] - ys[0])
        return next((t - 1 for t in range(2, 21) if abs(ys[t] - ys[t - 1]) <= 0.1 * first), 20)

    def extreme(x: float, sign: float) -> float:
        return float(30 * np.tanh(x + sign * 0.5 * stop_of(x, sign)))

    bounds = {int(s): (extreme(x, -1.0), extreme(x, 1.0)) for s, x in zip(seeds, x0)}
    # the summary says which rule ended each side's walks: the saturation where the replay stops before the walk's
    # last position (20), else the walk's length
    for side, sign in (("-", -1.0), ("+", 1.0)):
        saturated = sum(stop_of(x, sign) < 20 for x in x0)
        expected = {"saturation": saturated, "max_steps": len(x0) - saturated}
        assert record["walk_stops"][side] == {k: v for k, v in expected.items() if v}, (side, record["walk_stops"])
    clipped = 0
    for r in record["images"]:
        lo_y, hi_y = bounds[r["base_seed"]]
        assert r["reached"] == (lo_y <= r["target"] <= hi_y), r
        if not r["reached"]:
            clipped += 1
            assert r["yaw"] == pytest.approx(hi_y if r["target"] > hi_y else lo_y, abs=1e-4), r
    assert clipped >= 2


def test_steps_are_in_stds_when_the_set_has_them_and_falling_labels_are_aimed_too(G, tmp_path):
    """A fitted set carries the W samples' std along each direction, and the walk steps in those stds: 3 steps of
    0.5 std = 3 W units with std 2 (labels to +-60), but only 1.5 W units without stds (+-30). A label that falls
    along the direction is aimed at as well as a rising one."""
    lab = WLabeler(_v(), scale=20.0)
    with_std = DirectionSet(names=["yaw"], vectors=_v()[None].astype(np.float32), method="test",
                            extras={"std": np.array([2.0], dtype=np.float32)})
    kw = dict(step=0.5, max_steps=3, mahalanobis_quantile=None)
    wide = export_augmentation(G, with_std, "yaw", lab, "-50:50", 9, tmp_path / "std", **kw)
    narrow = export_augmentation(G, _set(_v()), "yaw", lab, "-50:50", 9, tmp_path / "w", **kw)
    assert wide.summary["reached_fraction"] == 1.0
    np.testing.assert_allclose(wide.labels["yaw"], wide.targets, atol=1e-3)
    assert narrow.summary["reached_fraction"] < 1.0 and np.abs(narrow.labels["yaw"]).max() < 50
    # falling and curved (-30 tanh): the regula-falsi rounds must keep the sub-bracket that holds the target
    falling = export_augmentation(G, _set(_v()), "yaw", WLabeler(_v(), scale=-30.0, saturating=True), "-25:25", 9,
                                  tmp_path / "f", step=0.5, max_steps=10, mahalanobis_quantile=None)
    assert falling.summary["reached_fraction"] == 1.0
    np.testing.assert_allclose(falling.labels["yaw"], falling.targets, atol=0.05)  # as the rising tanh test


def test_output_is_atomic(G, tmp_path, monkeypatch):
    lab = WLabeler(_v(), scale=20.0)
    out = tmp_path / "aug"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(StyleGANDisentangleError, match="not empty"):
        export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 4, out, mahalanobis_quantile=None)
    calls = []

    def failing_save(arr, path, upscale=1):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")

    monkeypatch.setattr(aug, "save_png", failing_save)
    with pytest.raises(OSError, match="disk full"):
        export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 5, out, mahalanobis_quantile=None, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug"]  # no temporary directory is left behind
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # the old contents are untouched
    monkeypatch.undo()
    export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 5, out, mahalanobis_quantile=None, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["images", "labels.json", "labels.npz"]
    assert len(list((out / "images").iterdir())) == 5


def test_bad_arguments_are_named(G, tmp_path):
    lab = WLabeler(_v(), scale=20.0)
    with pytest.raises(StyleGANDisentangleError, match="LO:HI"):
        parse_target("45")
    with pytest.raises(StyleGANDisentangleError, match="LO < HI"):
        parse_target("10:-10")
    with pytest.raises(StyleGANDisentangleError, match="no direction named 'roll'"):
        export_augmentation(G, _set(_v()), "roll", lab, "-1:1", 2, tmp_path / "a")
    with pytest.raises(StyleGANDisentangleError, match="no scalar label 'pitch'"):
        export_augmentation(G, _set(_v()), "yaw", lab, "-1:1", 2, tmp_path / "a", label="pitch")
    for bases in (0, -2, 1.5):
        with pytest.raises(StyleGANDisentangleError, match=r"n_bases \(--bases\) must be an integer >= 1"):
            export_augmentation(G, _set(_v()), "yaw", lab, "-1:1", 2, tmp_path / "a", n_bases=bases)
    # directions found on a network with another W: refused before anything is sampled, not a shape error
    wide = DirectionSet(names=["yaw"], vectors=np.eye(1, 2 * W_DIM, dtype=np.float32), method="test")
    with pytest.raises(StyleGANDisentangleError, match=f"w_dim {2 * W_DIM} but the network has {W_DIM}: the "
                                                       "directions were found on another network"):
        export_augmentation(G, wide, "yaw", lab, "-1:1", 2, tmp_path / "a")
    assert not (tmp_path / "a").exists()


def test_bases_are_capped_at_the_count_of_images(G, tmp_path, monkeypatch):
    """Targets are dealt to the bases round-robin, so only `count` bases can be used: `--bases 50 --count 1` walks
    one base and records n_bases 1 (it walked, and recorded, 50)."""
    lab = WLabeler(_v(), scale=20.0)
    walked = []
    real_walks = aug._walks

    def counting_walks(G_, ws, *args, **kwargs):
        walked.append(ws.shape[0])
        return real_walks(G_, ws, *args, **kwargs)

    monkeypatch.setattr(aug, "_walks", counting_walks)
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 1, tmp_path / "one", n_bases=50, max_steps=3,
                              mahalanobis_quantile=None)
    assert walked == [1] and res.summary["n_bases"] == 1
    record = json.loads((tmp_path / "one" / "labels.json").read_text())
    assert record["n_bases"] == 1 and len(record["images"]) == 1
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 5, tmp_path / "five", n_bases=3, max_steps=3,
                              mahalanobis_quantile=None)
    assert walked[-1] == 3 and res.summary["n_bases"] == 3  # fewer bases than images: kept as given
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 40, tmp_path / "forty", max_steps=3,
                              mahalanobis_quantile=None)
    assert walked[-1] == 5 and res.summary["n_bases"] == 5  # the default: count // 8, at least 4
    assert len({r["base_seed"] for r in json.loads((tmp_path / "five" / "labels.json").read_text())["images"]}) == 3


def test_mahalanobis_rule_limits_the_walk(G, tmp_path):
    """Targets that the free walk reaches (+-20 W units along w[0], whose std is ~0.56): with the rule the walk
    stops at the W prior's 0.99-quantile Mahalanobis distance, so the far targets are not reached and every written
    code lies inside that distance (a code is an accepted position or lies between two; the distance is convex)."""
    from stylegan_disentangle.analysis.extrapolate import WStats
    from stylegan_disentangle.latents import sample_latents
    from stylegan_disentangle.latents.bank import bank_seeds

    lab = WLabeler(_v(), scale=1.0)
    kw = dict(step=0.5, max_steps=40, stats_samples=500, seed=0)
    free = export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 8, tmp_path / "free", mahalanobis_quantile=None,
                               **kw)
    assert free.summary["reached_fraction"] == 1.0
    held = export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 8, tmp_path / "held", mahalanobis_quantile=0.99,
                               **kw)
    assert held.summary["reached_fraction"] < 1.0 and np.abs(held.labels["yaw"]).max() < 10
    assert free.summary["walk_stops"] == {"-": {"max_steps": 4}, "+": {"max_steps": 4}}  # 4 bases: count // 8, >= 4
    assert held.summary["walk_stops"] == {"-": {"mahalanobis": 4}, "+": {"mahalanobis": 4}}
    stats = WStats().fit(sample_latents(G, bank_seeds(1, 0, 500)).ws[:, 0].numpy())  # the export's own prior
    threshold = stats.distance_quantile(0.99)
    assert stats.mahalanobis(free.ws[:, 0].double().numpy()).max() > threshold  # the free walk leaves it
    assert stats.mahalanobis(held.ws[:, 0].double().numpy()).max() <= threshold * (1 + 1e-6)


@pytest.mark.parametrize("psi", [0.0, 0.5])
def test_truncated_bases_walk_inside_the_untruncated_w_prior(G, tmp_path, psi):
    """The W prior is W's own (psi = 1) distribution, whatever truncation the bases have: at psi 0 every base is the
    mean code, which lies deep inside it, so the walk reaches targets a prior fitted on the truncated codes (all at
    distance 0 when psi is 0) would stop at the first step."""
    from stylegan_disentangle.analysis.extrapolate import WStats
    from stylegan_disentangle.latents import sample_latents
    from stylegan_disentangle.latents.bank import bank_seeds

    lab = WLabeler(_v(), scale=1.0)
    stats = WStats().fit(sample_latents(G, bank_seeds(1, 0, 500)).ws[:, 0].numpy())
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-0.5:0.5", 8, tmp_path / "aug", truncation_psi=psi,
                              step=0.25, max_steps=8, stats_samples=500, mahalanobis_quantile=0.99, seed=0)
    assert res.summary["reached_fraction"] == 1.0
    assert np.ptp(res.labels["yaw"]) > 0.99  # the labels spread over the whole target, not one point
    assert stats.mahalanobis(res.ws[:, 0].double().numpy()).max() <= stats.distance_quantile(0.99) * (1 + 1e-6)


def test_calibrated_export_aims_and_writes_in_calibrated_units(G, tmp_path):
    """With a linear labeler the export hits its targets exactly; calibrated, the targets are in the calibrated
    units, the written label is the calibrated one and the raw value is kept beside it."""
    lab = WLabeler(_v(), scale=20.0)
    cal = LabelCalibration("yaw").fit([-10.0, 0.0, 10.0], [-15.0, 1.0, 17.0])  # 1.6 x + 1
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-30:30", 13, tmp_path / "aug", step=0.5, max_steps=10,
                              mahalanobis_quantile=None, batch_size=16, calibration=cal)
    np.testing.assert_allclose(res.labels["yaw"], np.linspace(-30, 30, 13), atol=2e-3)
    np.testing.assert_allclose(res.labels["yaw"], 1.6 * res.labels["yaw_uncalibrated"] + 1.0, atol=1e-9)
    record = json.loads((tmp_path / "aug" / "labels.json").read_text())
    assert record["calibration"]["slope"] == pytest.approx(1.6)
    assert {"yaw", "yaw_uncalibrated"} <= set(record["images"][0])
    with pytest.raises(StyleGANDisentangleError, match="calibration is for label 'pitch'"):
        export_augmentation(G, _set(_v()), "yaw", lab, "-30:30", 4, tmp_path / "bad",
                            calibration=LabelCalibration("pitch").fit([0, 1, 2], [0, 1, 2]))


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory):
    """A tiny network pickle, a random decomposer checkpoint and a one-direction set ('yaw'), and the CLI group."""
    from stylegan_disentangle.checkpoints import save_network_pkl
    from stylegan_disentangle.cli import main
    from stylegan_disentangle.cli_augmentation import register_augmentation_commands
    from stylegan_disentangle.labels.decomposer.model import Unsup3DDecomposer

    if "export-augmentation" not in main.commands:
        register_augmentation_commands(main)
    root = tmp_path_factory.mktemp("aug_cli")
    torch.manual_seed(1)
    G = Generator(z_dim=16, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                  mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32)).eval()
    pkl = root / "tiny.pkl"
    save_network_pkl(pkl, dict(G=G, G_ema=G, D=None, training_set_kwargs=None, augment_pipe=None))
    dec = Unsup3DDecomposer(image_size=32, nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)
    dec_path = dec.save(root / "dec.pth")
    _set(_v()).save(root / "dirs")
    return main, pkl, dec_path, root / "dirs"


def test_cli_bad_arguments_are_named(cli_files, tmp_path):
    from click.testing import CliRunner

    main, pkl, dec_path, dirs = cli_files
    base = ["export-augmentation", str(pkl), str(dirs), "--name", "yaw", "--outdir", str(tmp_path / "out"),
            "--decomposer", str(dec_path), "--max-steps", "2", "--mahalanobis-quantile", "0"]
    for extra, option in ((["--count", "0"], "--count"), (["--count", "-3"], "--count"),
                          (["--count", "4", "--bases", "0"], "--bases")):  # refused while the line is parsed
        result = CliRunner().invoke(main, [*base, "--target", "-5:5", *extra])
        assert result.exit_code == 2 and f"Invalid value for '{option}'" in result.output, (extra, result.output)
    cases = [
        (["--target", "45:-45", "--count", "4"], "target range needs finite LO < HI; got 45.0:-45.0"),
        (["--target", "abc", "--count", "4"], "target range must be LO:HI, e.g. -45:45; got 'abc'"),
    ]
    wide = tmp_path / "wide_dirs"  # found on a network with another W
    DirectionSet(names=["yaw"], vectors=np.eye(1, 2 * W_DIM, dtype=np.float32), method="test").save(wide)
    cases.append((["--target", "-5:5", "--count", "4"], f"the direction set {wide} has w_dim {2 * W_DIM} but the "
                                                        f"network has {W_DIM}: the directions were found on another "
                                                        "network", wide))
    for extra, message, *other_dirs in cases:
        args = [*base[:2], str(other_dirs[0]), *base[3:]] if other_dirs else base
        result = CliRunner().invoke(main, [*args, *extra])
        assert result.exit_code == 1, (extra, result.output)
        assert f"Error: {message}" in result.output, (extra, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)  # no traceback
        assert not (tmp_path / "out").exists()
    # the count and the target are checked before the network is opened
    for extra, message, *_ in cases[:2]:
        result = CliRunner().invoke(main, ["export-augmentation", str(tmp_path / "missing.pkl"), *base[2:], *extra])
        assert result.exit_code == 1 and f"Error: {message}" in result.output, (extra, result.output)


def test_cli_export_augmentation(cli_files, tmp_path):
    from click.testing import CliRunner

    main, pkl, dec_path, dirs = cli_files
    runner = CliRunner()
    args = ["export-augmentation", str(pkl), str(dirs), "--name", "yaw", "--target", "-5:5",
            "--count", "6", "--outdir", str(tmp_path / "out"), "--max-steps", "3", "--mahalanobis-quantile", "0"]
    missing = runner.invoke(main, args)
    assert missing.exit_code != 0 and "train-decomposer" in missing.output
    result = runner.invoke(main, [*args, "--decomposer", str(dec_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 6
    record = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert record["decomposer"] == str(dec_path) and {"yaw", "light_azimuth"} <= set(record["images"][0])
    # targets out of reach: the CLI says why the walks ended (one step each way cannot saturate: the rule needs two)
    short = runner.invoke(main, ["export-augmentation", str(pkl), str(dirs), "--name", "yaw", "--target", "-500:500",
                                 "--count", "4", "--outdir", str(tmp_path / "short"), "--max-steps", "1",
                                 "--mahalanobis-quantile", "0", "--decomposer", str(dec_path)])
    assert short.exit_code == 0, short.output
    assert "the walks of the 4 base codes ended (-yaw: 4 bases ran out of --max-steps; +yaw: 4 bases ran out of " \
           "--max-steps)" \
        in short.output and "a larger --max-steps" in short.output
    shutil.rmtree(tmp_path / "short")
    # a bad --calibrate-with file is refused before the network is even opened (here it does not exist)
    bad_cal = runner.invoke(main, ["export-augmentation", str(tmp_path / "no.pkl"), str(dirs), "--name", "yaw",
                                   "--target", "-5:5", "--count", "2", "--outdir", str(tmp_path / "c"),
                                   "--calibrate-with", str(tmp_path / "missing.npz")])
    assert bad_cal.exit_code == 1 and "missing.npz" in bad_cal.output and "no.pkl" not in bad_cal.output
    np.savez(tmp_path / "nan.npz", images=np.zeros([3, 8, 8, 3], np.uint8), yaw=np.array([1.0, np.nan, 2.0]))
    nan_cal = runner.invoke(main, ["export-augmentation", str(tmp_path / "no.pkl"), str(dirs), "--name", "yaw",
                                   "--target", "-5:5", "--count", "2", "--outdir", str(tmp_path / "c"),
                                   "--calibrate-with", str(tmp_path / "nan.npz")])
    assert nan_cal.exit_code == 1 and "nan.npz: the values of 'yaw' contain NaN or inf (rows [1])" in nan_cal.output
    np.savez(tmp_path / "nan.npz", images=np.zeros([2, 8, 8, 3], np.uint8), yaw=np.array([1.0, 2.0]))  # too few
    few = runner.invoke(main, ["export-augmentation", str(tmp_path / "no.pkl"), str(dirs), "--name", "yaw",
                               "--target", "-5:5", "--count", "2", "--outdir", str(tmp_path / "c"),
                               "--calibrate-with", str(tmp_path / "nan.npz")])
    assert few.exit_code == 1 and "nan.npz: a calibration needs at least 3 images" in few.output, few.output
    for option, value in (("--step", "0"), ("--mahalanobis-quantile", "1.5"), ("--saturation", "-0.1")):
        bad = runner.invoke(main, ["export-augmentation", str(pkl), str(dirs), "--name", "yaw", "--target", "-5:5",
                                   "--count", "2", "--outdir", str(tmp_path / "c"), option, value])
        assert bad.exit_code == 2 and option in bad.output, (option, bad.output)
    assert not (tmp_path / "c").exists()
    (tmp_path / "nan.npz").unlink()
    # a second export into the same OUTDIR is refused and leaves it whole; --overwrite replaces it atomically
    fewer = [a if a != "6" else "4" for a in args] + ["--decomposer", str(dec_path)]
    refused = runner.invoke(main, fewer)
    assert refused.exit_code == 1 and "exists and is not empty" in refused.output and "Traceback" not in refused.output
    assert "--overwrite" in refused.output
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 6
    replaced = runner.invoke(main, [*fewer, "--overwrite"], catch_exceptions=False)
    assert replaced.exit_code == 0, replaced.output
    assert len(list((tmp_path / "out" / "images").glob("*.png"))) == 4
    assert json.loads((tmp_path / "out" / "labels.json").read_text())["count"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporary or old folder left
    # --calibrate-with: an NPZ of labelled images (uint8 [N, H, W, 3], as PNGs decode) maps yaw onto its values
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "labelled.npz", images=rng.integers(0, 256, (12, 16, 16, 3), dtype=np.uint8),
             yaw=rng.normal(size=12))
    result = runner.invoke(main, [*args, "--decomposer", str(dec_path), "--overwrite", "--calibrate-with",
                                  str(tmp_path / "labelled.npz")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "calibrated yaw on 12 images" in result.output
    record = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert record["calibration"]["n_samples"] == 12 and "yaw_uncalibrated" in record["images"][0]
    bad = runner.invoke(main, [*args, "--decomposer", str(dec_path), "--overwrite", "--calibrate-with",
                               str(tmp_path / "missing.npz")])
    assert bad.exit_code != 0 and "missing.npz" in bad.output


class SineLabeler(WLabeler):
    """'yaw' = 20 sin(w . v): every target in (-20, 20) is met at several places along the walk."""

    def __call__(self, img, ws=None):
        return {"yaw": 20.0 * torch.sin(ws[:, 0] @ self.v), "other": ws[:, 0, 1]}


def test_a_label_met_several_times_is_taken_at_the_smallest_edit(G, tmp_path):
    lab = SineLabeler(_v(), scale=1.0)
    res = export_augmentation(G, _set(_v()), "yaw", lab, "-15:15", 8, tmp_path / "sine", step=0.5, max_steps=12,
                              mahalanobis_quantile=None, saturation_fraction=0.0, refine=4)
    record = json.loads((tmp_path / "sine" / "labels.json").read_text())
    from stylegan_disentangle.latents import sample_latents
    from stylegan_disentangle.latents.bank import bank_seeds

    seeds = bank_seeds(0, 0, record["n_bases"])
    x0 = dict(zip((int(s) for s in seeds), sample_latents(G, seeds).ws[:, 0, 0].double().numpy()))
    for r, ws in zip(record["images"], res.ws[:, 0, 0].double().numpy()):
        start, t = x0[r["base_seed"]], np.arcsin(r["target"] / 20)
        # every solution of 20 sin(x) = target within the walk (+-6 W units from the base), nearest first
        k = np.arange(-4, 5)
        sols = np.concatenate([t + 2 * np.pi * k, np.pi - t + 2 * np.pi * k])
        sols = sols[np.abs(sols - start) <= 6.0]
        nearest = sols[np.argmin(np.abs(sols - start))]
        assert abs(ws - nearest) < 1e-2, (r, ws, nearest)


def test_an_outdir_that_appears_while_exporting_is_not_overwritten(G, tmp_path, monkeypatch):
    lab = WLabeler(_v(), scale=20.0)
    out = tmp_path / "aug"
    real_walks = aug._walks

    def someone_writes_meanwhile(*args, **kwargs):
        out.mkdir()
        (out / "theirs.txt").write_text("x")
        return real_walks(*args, **kwargs)

    monkeypatch.setattr(aug, "_walks", someone_writes_meanwhile)
    with pytest.raises(StyleGANDisentangleError, match="appeared while exporting and is not empty"):
        export_augmentation(G, _set(_v()), "yaw", lab, "-10:10", 4, out, mahalanobis_quantile=None)
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aug"]  # the temporary folder is gone


def test_images_are_rendered_labelled_and_written_one_batch_at_a_time(G, tmp_path, monkeypatch):
    """10,000 images at 1024 px would be 126 GB as one tensor: every render of the export (here the written images;
    this labeler reads ws, not images) is at most one batch, and the batches add up to every image exactly once."""
    lab = WLabeler(_v(), scale=30.0, saturating=True)
    kw = dict(step=0.5, max_steps=10, mahalanobis_quantile=None, batch_size=5)
    whole = export_augmentation(G, _set(_v()), "yaw", lab, "-20:20", 23, tmp_path / "a", **kw)
    sizes, real_render = [], aug.render

    def counting_render(G_, ws, *args, **kwargs):
        sizes.append(ws.shape[0])
        return real_render(G_, ws, *args, **kwargs)

    monkeypatch.setattr(aug, "render", counting_render)
    again = export_augmentation(G, _set(_v()), "yaw", lab, "-20:20", 23, tmp_path / "b", **kw)
    assert sizes and max(sizes) <= 5 and sum(sizes) == 23  # the written images (this labeler reads no images)
    np.testing.assert_array_equal(again.labels["yaw"], whole.labels["yaw"])
    a, b = (sorted((tmp_path / d / "images").glob("*.png")) for d in ("a", "b"))
    assert [p.name for p in a] == [p.name for p in b] and all(x.read_bytes() == y.read_bytes() for x, y in zip(a, b))


def test_progress_bars_cover_the_walks_the_refinement_and_the_writing(G, tmp_path, monkeypatch):
    """With progress on, every phase that renders or labels shows a bar whose steps add up to its work: each walk
    over its positions, each refinement round and the writing over the count, a large network's images one
    render chunk at a time; off (the default) no bar is shown."""
    bars: list[dict] = []

    class _Bar:
        def __init__(self, iterable=None, total=None, desc=None, disable=None, **kwargs):
            self.iterable = iterable
            self.record = {"desc": desc, "total": total, "done": 0, "steps": [], "disable": disable}
            bars.append(self.record)

        def __iter__(self):
            for item in self.iterable:
                self.record["done"] += 1
                yield item

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.record["done"] += n
            self.record["steps"].append(n)

    monkeypatch.setattr(aug, "tqdm", _Bar)
    monkeypatch.setattr(sys.modules["stylegan_disentangle.analysis.extrapolate"], "tqdm", _Bar)
    lab = WLabeler(_v(), scale=20.0)
    export_augmentation(G, _set(_v()), "yaw", lab, "-45:45", 10, tmp_path / "on", step=0.5, max_steps=6,
                        mahalanobis_quantile=None, batch_size=4, refine=2, progress=True)
    assert [b["desc"] for b in bars] == ["walk yaw -", "walk yaw +", "refine 1/2", "refine 2/2", "write"]
    assert all(b["disable"] is False for b in bars)
    assert [b["done"] for b in bars[:2]] == [7, 7]  # the start and six steps (a linear label never saturates)
    assert all(b["total"] == 10 and b["done"] == 10 for b in bars[2:])
    bars.clear()
    monkeypatch.setattr("stylegan_disentangle.latents.sampling.RENDER_PIXEL_BUDGET", 3 * 16 * 16)
    export_augmentation(G, _set(_v()), "yaw", lab, "-45:45", 10, tmp_path / "small", step=0.5, max_steps=6,
                        mahalanobis_quantile=None, batch_size=4, refine=0, progress=True)
    assert bars[-1]["desc"] == "write" and bars[-1]["steps"] == [3, 3, 3, 1]  # three 16x16 images per call
    bars.clear()
    export_augmentation(G, _set(_v()), "yaw", lab, "-45:45", 10, tmp_path / "off", step=0.5, max_steps=6,
                        mahalanobis_quantile=None, batch_size=4, refine=1)
    assert bars and all(b["disable"] is True for b in bars)
