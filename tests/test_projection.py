"""Real-image embedding (`analysis.projection`, `stylegan-disentangle project`, `edit --ws`) on the synthetic world:
the generator's own images are projected back, so the answer is known."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.analysis.projection import project, psnr
from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.latents import sample_latents
from stylegan_disentangle.synthetic.checkpoint import load_synthetic

SEEDS = [100, 101, 102, 103]


@pytest.fixture(scope="module")
def world():
    G, factor_map = load_synthetic()
    latents = sample_latents(G, SEEDS)
    with torch.no_grad():
        targets = G.synthesis(latents.ws, noise_mode="const").clamp(-1, 1)
    return G, factor_map, latents.ws, targets


def test_psnr_known_answer():
    a = torch.zeros([2, 3, 4, 4])
    b = a.clone()
    b[1] += 0.25  # exact in binary: squared error 0.0625, 10 log10(4 / 0.0625) = 10 log10(64)
    b[0, 0, 0, 0] = 1.0  # one pixel of 48 off by 1: squared error 1 / 48
    np.testing.assert_allclose(psnr(b, a), [10 * np.log10(4 * 48), 10 * np.log10(64)], rtol=1e-12)


def test_projection_rebuilds_the_generators_own_images_and_their_pose(world):
    """100 steps from the mean of W: every image comes back at >= 35 dB (measured 38.7-40.1), far above the mean
    face (18.8-19.6 dB), and the world's pose readouts of the found codes are the targets' (measured within 0.1 std
    of the population; the small parts' readouts are not pinned by a 32x32 image and are not checked)."""
    G, factor_map, ws, targets = world
    res = project(G, targets, steps=100, progress=False)
    assert res.ws.shape == ws.shape and res.images.shape == targets.shape and res.loss_trace.shape == (100, 4)
    with torch.no_grad():
        mean_face = G.synthesis(G.mapping.w_avg.expand(4, G.num_ws, -1), noise_mode="const").clamp(-1, 1)
    assert (res.psnr >= 35).all() and (res.psnr >= psnr(mean_face, targets) + 15).all(), res.psnr
    np.testing.assert_allclose(res.psnr, psnr(res.images, targets), rtol=1e-6)
    assert (res.loss_trace[-1] < res.loss_trace[0] / 20).all()
    assert torch.equal(res.ws[:, 0], res.ws[:, -1])  # W: one code for every layer
    population = np.asarray(factor_map(sample_latents(G, list(range(1000, 2000))).ws))
    error = np.abs(np.asarray(factor_map(res.ws)) - np.asarray(factor_map(ws))) / population.std(0)
    for name in ("yaw", "pitch", "roll"):
        assert error[:, factor_map.names.index(name)].max() < 0.35, (name, error[:, factor_map.names.index(name)])
    # deterministic for a seed
    again = project(G, targets[:2], steps=5, progress=False)
    assert torch.equal(again.ws, project(G, targets[:2], steps=5, progress=False).ws)


def test_w_statistics_given_once_give_the_same_projection(world):
    from stylegan_disentangle.analysis.projection import w_statistics

    G, _, _, targets = world
    target = targets[:2]
    own = project(G, target, steps=6, seed=4, w_avg_samples=500)
    given = project(G, target, steps=6, seed=4, w_avg_samples=500,
                    w_stats=w_statistics(G, w_avg_samples=500, seed=4))
    assert torch.equal(own.ws, given.ws) and np.array_equal(own.loss_trace, given.loss_trace)


def test_w_plus_gives_one_code_per_layer(world):
    G, _, _, targets = world
    res = project(G, targets[:2], steps=60, space="w+", progress=False)
    assert res.ws.shape == (2, G.num_ws, G.w_dim) and not torch.equal(res.ws[:, 0], res.ws[:, -1])
    assert (res.psnr > 30).all(), res.psnr


def test_bad_targets_and_settings_are_refused(world):
    G, _, _, targets = world
    with pytest.raises(StyleGANDisentangleError, match=r"images \[N, 3, H, W\]"):
        project(G, targets[:, :1], steps=2)
    nan = targets.clone()
    nan[0, 0, 0, 0] = float("nan")
    with pytest.raises(StyleGANDisentangleError, match="NaN"):
        project(G, nan, steps=2)
    with pytest.raises(StyleGANDisentangleError, match="space must be 'w' or 'w\\+'"):
        project(G, targets, steps=2, space="z")
    for steps in (0, 1):  # the first step's learning rate is 0: one step would move nothing
        with pytest.raises(StyleGANDisentangleError, match="steps must be >= 2"):
            project(G, targets, steps=steps)
    with pytest.raises(StyleGANDisentangleError, match="class_idx must be in"):
        project(G, targets, steps=2, class_idx=0)  # an unconditional network has no classes


def test_cli_project_then_edit_the_projected_codes(world, tmp_path):
    from PIL import Image

    from stylegan_disentangle.utils.images import to_uint8

    G, _, _, targets = world
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, picture in enumerate(to_uint8(targets[:2])):
        Image.fromarray(picture).save(folder / f"face{i}.png")
    out = tmp_path / "proj"
    runner = CliRunner()
    result = runner.invoke(main, ["--quiet", "project", "synthetic", str(folder), "--steps", "80", "--outdir",
                                  str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    ws = np.load(out / "ws.npy")
    assert ws.shape == (2, G.num_ws, G.w_dim) and ws.dtype == np.float32
    record = json.loads((out / "projection.json").read_text())
    assert [r["file"] for r in record["images"]] == [str(folder / "face0.png"), str(folder / "face1.png")]
    assert all(r["psnr_db"] > 30 for r in record["images"]) and record["args"]["steps"] == 80
    assert (out / "projection.png").stat().st_size > 1000 and (out / "loss.png").stat().st_size > 1000
    # a refused run (no classes on this network) leaves no folder behind
    refused = runner.invoke(main, ["project", "synthetic", str(folder), "--class", "1", "--outdir",
                                   str(tmp_path / "refused")])
    assert refused.exit_code == 1 and "class_idx must be in" in refused.output
    assert not (tmp_path / "refused").exists()
    # one image at a time: the same files and order, each fitted as well
    single = runner.invoke(main, ["--quiet", "project", "synthetic", str(folder), "--steps", "80", "--batch-size",
                                  "1", "--outdir", str(tmp_path / "one"), "--device", "cpu"])
    assert single.exit_code == 0, single.output
    ones = json.loads((tmp_path / "one" / "projection.json").read_text())["images"]
    assert [r["file"] for r in ones] == [r["file"] for r in record["images"]] and all(r["psnr_db"] > 30 for r in ones)
    assert np.load(tmp_path / "one" / "ws.npy").shape == ws.shape
    # edit moves the projected codes: step 0 is the projection itself
    from stylegan_disentangle.directions import DirectionSet

    DirectionSet(["d"], np.eye(1, G.w_dim, dtype=np.float32)).save(tmp_path / "set")
    edited = runner.invoke(main, ["edit", "synthetic", str(tmp_path / "set"), "--name", "d", "--ws",
                                  str(out / "ws.npy"), "--steps", "-1,0,1", "--unit", "w", "--outdir",
                                  str(tmp_path / "e"), "--device", "cpu"])
    assert edited.exit_code == 0, edited.output
    moved = np.load(tmp_path / "e" / "ws_d.npy")
    np.testing.assert_array_equal(moved[1], ws)
    np.testing.assert_allclose(moved[2] - moved[1], np.broadcast_to(np.eye(1, G.w_dim), ws.shape), atol=1e-6)
    # codes that are no ws are refused before anything is written
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    bad = runner.invoke(main, ["edit", "synthetic", str(tmp_path / "set"), "--name", "d", "--ws",
                               str(tmp_path / "bad.npy"), "--outdir", str(tmp_path / "e2")])
    assert bad.exit_code == 1 and "bad.npy: not an .npy of ws" in bad.output and not (tmp_path / "e2").exists()
    np.save(tmp_path / "short.npy", np.zeros((2, 5), np.float32))
    short = runner.invoke(main, ["edit", "synthetic", str(tmp_path / "set"), "--name", "d", "--ws",
                                 str(tmp_path / "short.npy"), "--outdir", str(tmp_path / "e3")])
    assert short.exit_code == 1 and "short.npy must be" in short.output and not (tmp_path / "e3").exists()


def test_bench_script_scores_both_sets(tmp_path, monkeypatch, capsys):
    """scripts/bench_projection.py end to end on a tiny run: both sets scored, every factor's r reported."""
    from tests.helpers import load_script

    bench = load_script("bench_projection")
    out = tmp_path / "proj.json"
    monkeypatch.setattr("sys.argv", ["bench_projection.py", "--count", "3", "--steps", "4", "--batch-size", "2",
                                     "--threads", "1", "--json", str(out)])
    bench.main()
    record = json.loads(out.read_text())
    _, factor_map = load_synthetic()
    for key in ("generator_images", "world_renders"):
        assert set(record[key]["factor_r"]) == set(factor_map.names)
        assert record[key]["psnr_min"] <= record[key]["psnr_mean"] and record[key]["seconds_per_image"] > 0
    assert "| world_renders |" in capsys.readouterr().out
