"""Training the decomposer on a frozen generator's samples; the decomposer3d labeler; the decompose CLI."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from stylegan_disentangle.cli import main
from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels import get_labeler
from stylegan_disentangle.labels.decomposer import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import DecomposerLabeler, load_decomposer
from stylegan_disentangle.labels.decomposer.reconstruction import (
    photometric_loss,
    reconstruct,
    reconstruction_loss,
    renderer_for,
    view_degrees,
)
from stylegan_disentangle.labels.decomposer.scenes import (
    WALL_MARGIN,
    recolour_above_hairline,
    rerender_loss,
    rerender_scene,
    turned_head_scene,
)
from stylegan_disentangle.labels.decomposer.trainer import LIGHT_TURN_YAW, draw_images, train_decomposer
from stylegan_disentangle.synthetic.checkpoint import SYNTHETIC_CHECKPOINT, load_synthetic
from tests.helpers import load_script

TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)


@pytest.fixture(scope="module")
def G():
    return load_synthetic()[0]


def test_photometric_loss_known_answers():
    # errors 0.5 / 0.9 / 0.1 / 0.3 on the four pixels (every channel); the mask drops the second
    a = torch.zeros(1, 3, 2, 2)
    b = torch.tensor([[0.5, 0.9], [0.1, 0.3]]).expand(1, 3, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])
    assert float(photometric_loss(a, b, mask)) == pytest.approx(0.3, rel=1e-6)  # (0.5 + 0.1 + 0.3) / 3, not 0.45
    sigma = torch.tensor([[[[2.0, 1.0], [0.5, 1.0]]]])
    # Laplacian NLL sqrt(2) |x - y| / sigma + log sigma over the three kept pixels
    want = np.mean([2**0.5 * 0.5 / 2 + np.log(2.0), 2**0.5 * 0.1 / 0.5 + np.log(0.5), 2**0.5 * 0.3])
    assert float(photometric_loss(a, b, mask, sigma)) == pytest.approx(want, rel=1e-5)
    assert float(photometric_loss(a, b, torch.zeros_like(mask))) == 0.0  # nothing valid: 0, not NaN


def test_reconstruction_loss_pairs_each_render_with_its_own_confidence_map():
    # netC's first map is the reconstruction's sigma, the second the mirrored reconstruction's (official order)
    x = torch.zeros(1, 3, 2, 2)
    out = {"input": x, "mask": torch.ones(1, 1, 2, 2), "recon": torch.full_like(x, 0.5),
           "recon_flip": torch.full_like(x, 0.1),
           "conf_sigma_l1": torch.cat([torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2), 0.5)], 1)}
    loss = reconstruction_loss(out, lam_flip=0.5)
    l1, l1_flip = 2**0.5 * 0.5 / 2 + np.log(2.0), 2**0.5 * 0.1 / 0.5 + np.log(0.5)
    assert float(loss["l1"]) == pytest.approx(l1, rel=1e-5)
    assert float(loss["l1_flip"]) == pytest.approx(l1_flip, rel=1e-5)
    assert float(loss["total"]) == pytest.approx(l1 + 0.5 * l1_flip, rel=1e-5)


def test_the_flipped_render_shares_the_validity_mask_of_both_renders():
    """Pixels count only where the render and its mirrored twin are both valid (official): the mask is the product
    of the two renders' own masks, recomputed here from the decomposition."""
    torch.manual_seed(2)
    dec = Unsup3DDecomposer(image_size=32, **TINY).eval()
    with torch.no_grad():
        dec.netV.network[-2].weight.mul_(50)  # large views: the renders leave parts of the frame uncovered
        img = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
        out = reconstruct(dec, img, flip=True)
        renderer = renderer_for(dec)
        depth, albedo = out["canon_depth"].unsqueeze(1), out["canon_albedo"]
        view = view_degrees(out["view"])
        own = renderer.render(depth, albedo, out["light"], view)["mask"]
        mirrored = renderer.render(depth.flip(-1), albedo.flip(-1), out["light"], view)["mask"]
    assert float(own.mean()) < 0.98 and not torch.equal(own, mirrored)  # the two masks differ somewhere
    torch.testing.assert_close(out["mask"], own * mirrored, rtol=0, atol=0)


def test_rerender_and_jitter_losses_are_zero_at_the_answer_and_weigh_each_term():
    from stylegan_disentangle.labels.decomposer.trainer import _jitter_loss

    torch.manual_seed(4)
    dec = Unsup3DDecomposer(image_size=32, **TINY).eval()
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        est = dec.decompose(img, parts=["depth", "albedo", "light", "view"])
        scene = {"image": img, **{k: est[k].clone() for k in ("canon_depth", "canon_albedo", "light_raw",
                                                                "view_raw")}}
        assert float(rerender_loss(dec, scene)) == 0.0
        span = dec.max_depth - dec.min_depth
        # each term is a mean absolute difference; depth in units of its range
        for key, delta, want in (("canon_depth", 0.01, 0.01 / span), ("canon_albedo", 0.03, 0.03),
                                 ("light_raw", 0.02, 0.02), ("view_raw", 0.04, 0.04)):
            moved = dict(scene, **{key: scene[key] + delta})
            assert float(rerender_loss(dec, moved)) == pytest.approx(want, rel=1e-4), key
        # the view: a mean over the five used columns; tz (range 0 here, as official) is left out
        assert dec.z_translation_range == 0
        one = scene["view_raw"].clone()
        one[:, 0] += 0.05
        assert float(rerender_loss(dec, dict(scene, view_raw=one))) == pytest.approx(0.05 / 5, rel=1e-4)
        tz = scene["view_raw"].clone()
        tz[:, 5] += 0.5
        assert float(rerender_loss(dec, dict(scene, view_raw=tz))) == 0.0
        assert float(_jitter_loss(dec, img, est)) == 0.0
        shifted = dict(est, canon_depth=est["canon_depth"] + 0.01, canon_albedo=est["canon_albedo"] - 0.02)
        assert float(_jitter_loss(dec, img, shifted)) == pytest.approx(0.01 / span + 0.02, rel=1e-4)


def test_short_training_lowers_the_reconstruction_loss(G, tmp_path):
    _, held_out = draw_images(G, 8, torch.Generator().manual_seed(123))

    def loss(dec):
        with torch.no_grad():
            return float(reconstruction_loss(reconstruct(dec.eval(), held_out))["total"])

    torch.manual_seed(0)
    before = loss(Unsup3DDecomposer(image_size=32, **TINY))
    dec = train_decomposer(G, tmp_path, steps=12, batch_size=8, decomposer_kwargs=TINY, log_every=4,
                           preview_every=12, checkpoint_every=6, progress=False)
    after = loss(dec)
    assert after < before - 0.05, (before, after)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [4, 8, 12] and {"l1", "l1_flip", "rerender", "jitter"} <= set(log[0])
    assert all(0 < r["valid_fraction"] <= 1 and 0 <= r["rotation_saturation"] < 1 for r in log)
    assert (tmp_path / "preview_000012.png").is_file()
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["step"] == 12
    reloaded = load_decomposer(tmp_path / "checkpoint.pth")
    assert reloaded.epoch == 12 and set(reloaded.optimizer_states) == {"optimizerD", "optimizerA", "optimizerL",
                                                                        "optimizerV", "optimizerC"}


def test_interrupted_training_resumes_bit_identically(G, tmp_path):
    kwargs = dict(batch_size=4, decomposer_kwargs=dict(TINY, xy_light_range=2.0), log_every=1, preview_every=100,
                  checkpoint_every=2, progress=False)
    straight = train_decomposer(G, tmp_path / "a", steps=4, **kwargs)
    train_decomposer(G, tmp_path / "b", steps=2, **kwargs)  # "interrupted" after its step-2 checkpoint
    resumed = train_decomposer(G, tmp_path / "b", steps=4, **kwargs)
    assert resumed.xy_light_range == 2.0  # settings outside the official layout come back from train_state.json
    for (k, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), k
    def losses(run):
        return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
                for line in (tmp_path / run / "log.jsonl").read_text().splitlines()]

    assert losses("a") == losses("b") and len(losses("a")) == 4


def test_resuming_with_other_settings_is_refused(G, tmp_path):
    from stylegan_disentangle.errors import StyleGANDisentangleError

    train_decomposer(G, tmp_path, steps=1, batch_size=2, decomposer_kwargs=TINY, progress=False)
    with pytest.raises(StyleGANDisentangleError, match="other settings"):
        train_decomposer(G, tmp_path, steps=2, batch_size=4, decomposer_kwargs=TINY, progress=False)


def test_resuming_on_another_generator_is_refused(G, tmp_path):
    """Same settings, another network's weights: the run's images would change midway, so it is refused; the same
    network resumes, and a state from before the generator was recorded resumes unchecked."""
    import copy

    from stylegan_disentangle.latents import generator_fingerprint

    train_decomposer(G, tmp_path, steps=1, batch_size=2, decomposer_kwargs=TINY, progress=False)
    state = json.loads((tmp_path / "train_state.json").read_text())
    assert state["generator_sha256"] == generator_fingerprint(G)
    other = copy.deepcopy(G)
    with torch.no_grad():
        other.mapping.w_avg.add_(1e-3)
    with pytest.raises(StyleGANDisentangleError, match=rf"trained on another network \(generator "
                                                       rf"{state['generator_sha256'][:12]}\.\.\., this one "
                                                       rf"{generator_fingerprint(other)[:12]}"):
        train_decomposer(other, tmp_path, steps=2, batch_size=2, decomposer_kwargs=TINY, progress=False)
    del state["generator_sha256"]
    (tmp_path / "train_state.json").write_text(json.dumps(state))
    assert train_decomposer(other, tmp_path, steps=2, batch_size=2, decomposer_kwargs=TINY, progress=False).epoch == 2
    assert train_decomposer(other, tmp_path, steps=3, batch_size=2, decomposer_kwargs=TINY, progress=False).epoch == 3


def test_a_decomposer_knows_the_network_it_was_trained_on_and_decompose_warns_on_another(G, tmp_path, caplog):
    """The trainer's fingerprint of G comes back with the loaded checkpoint (from train_state.json); decomposing
    another network's faces with it warns (the readings may mean little), G's own and an unknown origin do not."""
    import copy

    from stylegan_disentangle.checkpoints import save_network_pkl
    from stylegan_disentangle.labels.decomposer.labeler import warn_if_trained_on_another
    from stylegan_disentangle.latents import generator_fingerprint
    from tests.helpers import tiny_networks

    trained = train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, decomposer_kwargs=TINY, progress=False)
    assert trained.trained_on == generator_fingerprint(G)
    loaded = load_decomposer(tmp_path / "run" / "checkpoint.pth")
    assert loaded.trained_on == trained.trained_on
    # the checkpoint copied away from its train_state.json still knows its network and settings
    (tmp_path / "copy.pth").write_bytes((tmp_path / "run" / "checkpoint.pth").read_bytes())
    copied = load_decomposer(tmp_path / "copy.pth")
    assert copied.trained_on == trained.trained_on and copied.get_config() == trained.get_config()
    other = copy.deepcopy(G)
    with torch.no_grad():
        other.mapping.w_avg.add_(1e-3)
    with caplog.at_level("WARNING"):
        assert not warn_if_trained_on_another(loaded, G, "run", "synthetic")
        assert not caplog.records
        assert warn_if_trained_on_another(loaded, other, "run", "other.pkl")
    (message,) = [r.getMessage() for r in caplog.records]
    assert (f"generator {trained.trained_on[:12]}..., other.pkl is {generator_fingerprint(other)[:12]}..." in message
            and "train-decomposer other.pkl" in message)
    Unsup3DDecomposer(image_size=32, **TINY).save(tmp_path / "bare.pth")  # no record beside it: origin unknown
    assert load_decomposer(tmp_path / "bare.pth").trained_on is None
    assert not warn_if_trained_on_another(load_decomposer(tmp_path / "bare.pth"), other, "bare", "other.pkl")
    # the decompose command says it too, and still decomposes
    save_network_pkl(tmp_path / "net.pkl", tiny_networks("skip16"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        result = CliRunner().invoke(main, ["decompose", str(tmp_path / "net.pkl"), "--seeds", "0", "--decomposer",
                                           str(tmp_path / "run" / "checkpoint.pth"), "--outdir", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert any("trained on another network's faces" in r.getMessage() for r in caplog.records)
    assert (tmp_path / "o" / "decomposition.json").is_file()


def test_decomposer3d_labeler_returns_scalars_and_maps(G, tmp_path):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    dec.save(tmp_path / "dec.pth")
    lab = get_labeler("decomposer3d", decomposer=str(tmp_path / "dec.pth"))
    assert isinstance(lab, DecomposerLabeler) and lab.input_resolution == 32
    _, img = draw_images(G, 3, torch.Generator().manual_seed(1))
    out = lab(img)
    assert set(out) == set(lab.names) == set(lab.value_ranges)
    for name in ("yaw", "pitch", "roll", "light_azimuth", "light_ambient"):
        lo, hi = lab.value_ranges[name]
        assert out[name].shape == (3,) and bool(((out[name] >= lo) & (out[name] <= hi)).all()), name
    assert out["depth"].shape == (3, 32, 32) and out["albedo"].shape == (3, 3, 32, 32)
    assert out["confidence"].shape == (3, 32, 32) and bool((out["confidence"] > 0).all())
    with torch.no_grad():  # the reconstruction's sigma (netC's first map), not its mirrored twin's
        sigma = dec.eval().decompose(img)["conf_sigma_l1"]
    # the labeler runs the nets channels-last (another accumulation order): float32 rounding, measured 2e-6 relative
    torch.testing.assert_close(out["confidence"], sigma[:, 0], rtol=2e-5, atol=2e-6)
    assert float((sigma[:, 0] - sigma[:, 1]).abs().max()) > 1e-3  # the two maps are told apart
    # the scalars-only view (rendered label effects) gives the same scalars without running the map nets
    scalars = lab.scalars_only()
    assert scalars.decomposer is lab.decomposer and not scalars.maps
    only = scalars(img)
    assert set(only) == set(scalars.names) == {n for n in lab.names if out[n].ndim == 1}
    for name, value in only.items():
        torch.testing.assert_close(value, out[name], rtol=0, atol=0)


def test_decompose_cli_writes_rows_numbers_and_maps(tmp_path):
    torch.manual_seed(0)
    Unsup3DDecomposer(image_size=32, **TINY).save(tmp_path / "dec.pth")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["decompose", "synthetic", "--seeds", "0-2", "--decomposer",
                                       str(tmp_path / "dec.pth"), "--outdir", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "decomposition.json").read_text())
    assert [r["seed"] for r in record["images"]] == [0, 1, 2] and "yaw" in record["images"][0]
    from PIL import Image

    png = Image.open(out / "decomposition.png")
    assert png.size[0] > png.size[1]  # three rows of five panels
    maps = np.load(out / "maps.npz")
    assert maps["depth"].shape == (3, 32, 32) and maps["albedo"].shape == (3, 3, 32, 32)


def test_decompose_cli_generates_in_batches_and_reads_the_crop_as_the_labeler_does(G, tmp_path):
    """`decompose` cuts each generated batch to the box at once (memory holds one batch of full images); its labels
    are the labeler's own on the full images, whatever --batch-size."""
    from stylegan_disentangle.latents import sample_latents

    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    dec.save(tmp_path / "dec.pth")
    box = (0.1, 0.15, 0.8, 0.7)
    runs = {}
    for batch in ("2", "16"):
        out = tmp_path / f"b{batch}"
        result = CliRunner().invoke(main, ["decompose", "synthetic", "--seeds", "0-4", "--decomposer",
                                           str(tmp_path / "dec.pth"), "--crop", ",".join(map(str, box)),
                                           "--batch-size", batch, "--outdir", str(out), "--device", "cpu"])
        assert result.exit_code == 0, result.output
        runs[batch] = (json.loads((out / "decomposition.json").read_text()), np.load(out / "maps.npz"))
    record, maps = runs["2"]
    assert record["crop"] == list(box) and [r["seed"] for r in record["images"]] == [0, 1, 2, 3, 4]
    with torch.no_grad():
        full = G.synthesis(sample_latents(G, [0, 1, 2, 3, 4]).ws, noise_mode="const").float().clamp(-1, 1)
    want = DecomposerLabeler(load_decomposer(tmp_path / "dec.pth"), crop=box)(full)
    # the generator's batches and the nets' channels-last layout change float32 accumulation only
    for name in ("yaw", "light_azimuth", "light_ambient"):
        got = [r[name] for r in record["images"]]
        np.testing.assert_allclose(got, want[name].numpy(), rtol=1e-4, atol=1e-4, err_msg=name)
        np.testing.assert_allclose(got, [r[name] for r in runs["16"][0]["images"]], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(maps["depth"], want["depth"].numpy(), rtol=1e-4, atol=1e-4)


def test_decompose_cli_without_a_decomposer_for_another_network_says_how_to_get_one(tmp_path):
    from stylegan_disentangle.checkpoints import save_network_pkl
    from tests.helpers import tiny_networks

    save_network_pkl(tmp_path / "net.pkl", tiny_networks("skip16"))
    result = CliRunner().invoke(main, ["decompose", str(tmp_path / "net.pkl"), "--outdir", str(tmp_path / "o")])
    assert result.exit_code != 0 and "train-decomposer" in result.output and "--decomposer" in result.output
    assert SYNTHETIC_CHECKPOINT.is_file()


def test_fit_trains_the_decomposer_in_place(G, tmp_path):
    from stylegan_disentangle.latents import generator_fingerprint

    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    before = {k: v.clone() for k, v in dec.state_dict().items()}
    assert dec.fit(G, tmp_path, steps=2, batch_size=2, lam_jitter=0.0, progress=False) is dec
    assert dec.epoch == 2 and not dec.training
    assert any(not torch.equal(before[k], v) for k, v in dec.state_dict().items())
    # called again with more steps it resumes from the checkpoint and takes the resumed run's weights
    assert dec.fit(G, tmp_path, steps=3, batch_size=2, lam_jitter=0.0, progress=False) is dec
    saved = load_decomposer(tmp_path / "checkpoint.pth")
    assert dec.epoch == saved.epoch == 3
    assert dec.trained_on == saved.trained_on == generator_fingerprint(G)  # the network it learned from
    for key, value in saved.state_dict().items():
        assert torch.equal(dec.state_dict()[key], value), key


class _TruthDecomposer(Unsup3DDecomposer):
    """Returns the synthetic world's exact decomposition of the images it is given (in order): the scorer must give
    r = 1 and the renderer must rebuild the images, which checks every unit and sign convention end to end."""

    def __init__(self, truth: dict):
        super().__init__(image_size=32, nets=(), xy_light_range=2.0)
        self.truth, self.offset = truth, 0

    def decompose(self, img, parts=None):
        import math

        from stylegan_disentangle.labels.decomposer.renderer import light_from_world

        n, sl = img.shape[0], slice(self.offset, self.offset + img.shape[0])
        self.offset += n
        t = {k: v[sl] for k, v in self.truth.items()}
        rot = t["view"][:, :3]
        light = light_from_world(t["light"])
        # the world shows its unshaded background where the head ends; the closest canonical albedo there is the
        # background colour divided by the wall's shading
        wall = light[:, 0] + light[:, 1] / light[:, 2:].square().sum(1).add(1).sqrt()  # flat wall: n = (0, 0, 1)
        cm = t["canonical_mask"]
        bg = ((t["background"] / 2 + 0.5) / wall[:, None]) * 2 - 1
        albedo = cm * t["albedo"] + (1 - cm) * bg[:, :, None, None]
        return {"canon_depth": t["depth"][:, 0], "canon_albedo": albedo, "light": light,
                "light_dir": None, "rotation_deg": rot, "view": torch.cat([rot * math.pi / 180, t["view"][:, 3:]], 1)}


def test_scoring_a_decomposer_that_returns_the_truth_gives_perfect_scores(G):
    from stylegan_disentangle.synthetic.checkpoint import synthetic_factor_map
    from stylegan_disentangle.synthetic.decomposer_eval import faces_from_renderer, score_decomposer
    from stylegan_disentangle.synthetic.renderer import render

    images, factors = faces_from_renderer(G, synthetic_factor_map(), 40, seed=3)
    _, truth = render(factors, 32, return_intrinsics=True)
    scores = score_decomposer(_TruthDecomposer(truth), images, factors)
    for name, s in scores["scalars"].items():
        assert s["pearson_r"] > 0.9999 and s["calibrated_mae"] < 1e-3, name
    assert scores["depth_pearson_r"] > 0.9999 and scores["depth_side"] < 1e-6 and scores["albedo_pearson_r"] > 0.99
    assert scores["depth_relief"] == pytest.approx(1.0, abs=1e-9) and scores["normal_angle_deg"] < 0.05
    # its albedo blends in the wall where the canonical mask is soft (0.5-1): a small error that the per-face r
    # (> 0.99 above) hides behind the mean face weighs more once the mean is removed
    assert scores["depth_variation_r"] > 0.9999 and scores["albedo_variation_r"] > 0.98
    assert 0.3 < scores["depth_mean_face_r"] < scores["depth_pearson_r"]  # the world's mean face alone
    # that blend lies on the head's outline, which the hair borders and the face proper mostly does not
    assert scores["albedo_face_r"] > 0.99 and 0.95 < scores["albedo_hair_r"] < scores["albedo_face_r"]
    # The render of the true decomposition rebuilds the world's image inside the head (rasterization vs the world's
    # ray casting: tests/test_decomposer_renderer.py bounds that per-pixel error); at the silhouette the Unsup3D
    # model stretches the depth-map mesh from head to wall where the world cuts to its background, so the
    # whole-frame PSNR is lower.
    from stylegan_disentangle.synthetic.decomposer_eval import decomposer_estimates

    dec = _TruthDecomposer(truth)
    est = decomposer_estimates(dec, images)
    head = (1 - truth["masks"][:, -1:]) > 0.99
    head = torch.nn.functional.max_pool2d((~head).float(), 3, 1, 1) < 0.5  # eroded by a pixel
    err = (est["recon"] - images).abs().amax(1, keepdim=True)[head]
    assert float(err.mean()) < 0.02 and float(err.quantile(0.99)) < 0.15
    assert scores["recon_psnr_db"] > 18


def test_train_decomposer_cli_writes_a_resumable_official_checkpoint(tmp_path):
    args = ["train-decomposer", "synthetic", "--steps", "2", "--batch-size", "2", "--nf", "16", "--outdir",
            str(tmp_path), "--quiet", "--device", "cpu", "--stabilize-after", "1", "--albedo-tv", "0.5", "--antialias",
            "--albedo-sparse", "0.25", "--rerender-mode", "data", "--rerender-light-xy", "0.5", "--light-from-rerender",
            "--smooth", "0.2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and {"rerender", "jitter", "albedo_tv", "albedo_sparse", "smooth"} <= set(log[-1])
    config = json.loads((tmp_path / "train_state.json").read_text())["config"]
    assert config["stabilize_after"] == 1 and config["lam_albedo_tv"] == 0.5 and config["decomposer"]["antialias"]
    assert config["lam_albedo_sparse"] == 0.25 and config["lam_smooth"] == 0.2
    assert config["rerender_mode"] == "data" and config["rerender_light_xy"] == 0.5 and config["light_from_rerender"]
    assert load_decomposer(tmp_path / "checkpoint.pth").epoch == 2
    assert load_decomposer(tmp_path / "checkpoint.pth").antialias
    again = CliRunner().invoke(main, args[:3] + ["3"] + args[4:])  # resumes for one more step
    assert again.exit_code == 0, again.output
    assert load_decomposer(tmp_path / "checkpoint.pth").epoch == 3


def test_train_decomposer_cli_continues_an_init_decomposer_training_only_the_named_nets(tmp_path):
    torch.manual_seed(3)
    Unsup3DDecomposer(image_size=32, **TINY).save(tmp_path / "init.pth")
    before = load_decomposer(tmp_path / "init.pth")
    out = tmp_path / "run"
    args = ["train-decomposer", "synthetic", "--init", str(tmp_path / "init.pth"), "--steps", "2", "--batch-size", "2",
            "--outdir", str(out), "--quiet", "--device", "cpu", "--train-nets", "netL,netV", "--antialias",
            "--weight-decay", "1e-4", "--stabilize-after", "1", "--rerender-mode", "data", "--rerender-intensities",
            "uniform", "--rerender-albedo-step", "0.5", "1.5", "--albedo-sparse", "0.1", "--albedo-sparse-p", "0.5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    after = load_decomposer(out / "checkpoint.pth")
    assert after.epoch == 2 and after.antialias and after.get_config()["nf"] == TINY["nf"]  # the init's sizes
    for name in ("netD", "netA", "netC"):  # frozen: bit for bit the init's weights
        for key, value in getattr(before, name).state_dict().items():
            assert torch.equal(getattr(after, name).state_dict()[key], value), (name, key)
    assert not torch.equal(after.netL.state_dict()["network.0.weight"], before.netL.state_dict()["network.0.weight"])
    config = json.loads((out / "train_state.json").read_text())["config"]
    assert config["train_nets"] == ["netL", "netV"] and config["weight_decay"] == 1e-4
    assert config["rerender_intensities"] == "uniform" and config["rerender_albedo_step"] == [0.5, 1.5]
    assert config["lam_albedo_sparse"] == 0.1 and config["albedo_sparse_p"] == 0.5
    assert config["decomposer"]["zdim"] == TINY["zdim"] and config["decomposer"]["nf_light"] == TINY["nf_light"]


def test_train_decomposer_cli_sizes_without_init_and_refused_with_it(tmp_path):
    out = tmp_path / "fresh"
    result = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--nf",
                                       "16", "--zdim", "32", "--nf-small", "8", "--outdir", str(out), "--quiet",
                                       "--device", "cpu", "--rerender", "0", "--jitter", "0"])
    assert result.exit_code == 0, result.output
    sizes = load_decomposer(out / "checkpoint.pth").get_config()
    assert (sizes["nf"], sizes["zdim"], sizes["nf_light"], sizes["nf_view"], sizes["nf_conf"], sizes["zdim_conf"]) == (
        16, 32, 8, 8, 16, 16)
    refused = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--init", str(out / "checkpoint.pth"),
                                        "--nf", "16", "--light-range", "2", "--steps", "1", "--outdir",
                                        str(tmp_path / "x"), "--device", "cpu"])
    assert refused.exit_code == 2 and "--nf, --light-range cannot be given with --init" in refused.output
    missing = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--init", str(tmp_path / "none.pth"),
                                        "--steps", "1", "--outdir", str(tmp_path / "y"), "--device", "cpu"])
    assert missing.exit_code == 1 and "none.pth: no such file" in missing.output and "Traceback" not in missing.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_stabilizers_start_at_stabilize_after(G, tmp_path):
    train_decomposer(G, tmp_path, steps=3, batch_size=2, decomposer_kwargs=TINY, stabilize_after=2, log_every=1,
                     progress=False)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert ["rerender" in r for r in log] == [False, False, True]


def testtotal_variation_known_answer():
    from stylegan_disentangle.labels.decomposer.trainer import total_variation

    ramp = torch.arange(4.0).view(1, 1, 1, 4).expand(2, 3, 4, 4)  # steps of 1 along x, none along y
    assert float(total_variation(ramp)) == pytest.approx(1.0)
    assert float(total_variation(torch.ones(2, 3, 4, 4))) == 0.0


def test_albedo_tv_prior_is_logged_and_smooths_the_albedo(G, tmp_path):
    from stylegan_disentangle.labels.decomposer.trainer import total_variation

    _, held_out = draw_images(G, 8, torch.Generator().manual_seed(5))
    tv = {}
    for lam in (0.0, 50.0):
        torch.manual_seed(0)
        dec = train_decomposer(G, tmp_path / str(lam), steps=6, batch_size=4, decomposer_kwargs=TINY,
                               lam_albedo_tv=lam, lr=1e-3, stabilize_after=100, log_every=3, progress=False)
        with torch.no_grad():
            tv[lam] = float(total_variation(dec.decompose(held_out, parts=["albedo"])["canon_albedo"]))
        log = [json.loads(line) for line in (tmp_path / str(lam) / "log.jsonl").read_text().splitlines()]
        assert ("albedo_tv" in log[0]) == (lam > 0)
    assert tv[50.0] < 0.6 * tv[0.0], tv  # 0.16 vs 0.38 when written
    state = json.loads((tmp_path / "50.0" / "train_state.json").read_text())
    assert state["config"]["lam_albedo_tv"] == 50.0


def test_gradient_sparsity_prefers_a_step_to_a_ramp_and_is_tv_at_p_1():
    from stylegan_disentangle.labels.decomposer.trainer import SPARSITY_EPS, gradient_sparsity, total_variation

    eps = SPARSITY_EPS
    step = torch.tensor([0.0, 0.0, 1.0, 1.0]).view(1, 1, 4).expand(2, 4, 4)  # one rise of 1 along x, none along y
    ramp = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]).view(1, 1, 4).expand(2, 4, 4)  # the same rise in three steps
    flat_y = eps ** 0.5
    assert float(gradient_sparsity(step, 0.5)) == pytest.approx((2 * flat_y + (1 + eps) ** 0.5) / 3 + flat_y
                                                                - 2 * flat_y, rel=1e-6)
    assert float(gradient_sparsity(ramp, 0.5)) == pytest.approx((1 / 3 + eps) ** 0.5 - flat_y, rel=1e-6)
    assert float(gradient_sparsity(ramp, 0.5)) > 1.5 * float(gradient_sparsity(step, 0.5))
    assert float(gradient_sparsity(torch.full((2, 4, 4), 0.7), 0.3)) == pytest.approx(0.0, abs=1e-6)
    for maps in (step, ramp, torch.rand(2, 3, 5, 6, generator=torch.Generator().manual_seed(0))):
        assert float(gradient_sparsity(maps, 1.0)) == pytest.approx(float(total_variation(maps)), abs=1e-6)


def test_albedo_sparsity_prior_is_logged_stored_and_checked(G, tmp_path):
    dec = train_decomposer(G, tmp_path / "sparse", steps=2, batch_size=4, decomposer_kwargs=TINY,
                           lam_albedo_sparse=2.0, albedo_sparse_p=0.4, stabilize_after=100, log_every=1,
                           progress=False)
    assert dec.epoch == 2
    log = [json.loads(line) for line in (tmp_path / "sparse" / "log.jsonl").read_text().splitlines()]
    assert all("albedo_sparse" in rec and rec["albedo_sparse"] > 0 for rec in log)
    config = json.loads((tmp_path / "sparse" / "train_state.json").read_text())["config"]
    assert config["lam_albedo_sparse"] == 2.0 and config["albedo_sparse_p"] == 0.4
    with pytest.raises(StyleGANDisentangleError, match="albedo_sparse_p"):
        train_decomposer(G, tmp_path / "bad", steps=2, batch_size=4, decomposer_kwargs=TINY,
                         lam_albedo_sparse=1.0, albedo_sparse_p=1.5, progress=False)
    assert not (tmp_path / "bad" / "checkpoint.pth").exists()


def test_relief_sees_the_depth_scale_that_pearson_r_cannot():
    from stylegan_disentangle.synthetic.decomposer_eval import depth_relief, masked_pearson

    gen = torch.Generator().manual_seed(0)
    true = 1 + 0.05 * torch.rand(3, 1, 8, 8, generator=gen, dtype=torch.float64)
    mask = torch.rand(3, 1, 8, 8, generator=gen) > 0.3
    deeper = 0.9 + 2.0 * (true - true.mean())  # twice the relief, shifted: r stays 1
    assert np.allclose(depth_relief(deeper, true, mask), 2.0) and np.allclose(masked_pearson(deeper, true, mask), 1.0)


def test_variation_r_sees_only_what_varies_between_faces():
    """A per-face r over the pixels rewards the population's mean face: a constant map scores it. `variation_pearson`
    correlates each map's deviation from its own population mean, so a fixed error in the mean face leaves it at 1,
    and a face-independent estimate has no variation to correlate."""
    from stylegan_disentangle.synthetic.decomposer_eval import masked_pearson, population_mean, variation_pearson

    gen = torch.Generator().manual_seed(1)
    mean_face = torch.linspace(-1, 1, 3 * 64, dtype=torch.float64).view(1, 3, 8, 8)
    true = mean_face + 0.2 * torch.randn(5, 3, 8, 8, generator=gen, dtype=torch.float64)
    mask = torch.ones(5, 1, 8, 8, dtype=torch.bool)
    mask[:, :, :2] = torch.rand(5, 1, 2, 8, generator=gen) > 0.5  # ragged top rows: the mean counts masked pixels only
    wrong_mean = true + 0.5 * torch.randn(1, 3, 8, 8, generator=gen, dtype=torch.float64)  # the same error everywhere
    assert masked_pearson(wrong_mean, true, mask).max() < 0.95
    np.testing.assert_allclose(variation_pearson(wrong_mean, true, mask), 1.0, atol=1e-12)
    assert masked_pearson(mean_face.expand_as(true), true, mask).min() > 0.9  # a constant map scores high per face
    constant = population_mean(true, mask).expand_as(true)
    for dtype in (torch.float64, torch.float32):  # ... and has nothing that varies, whatever the mean's rounding
        np.testing.assert_array_equal(variation_pearson(constant.to(dtype) / 3, true.to(dtype), mask), 0.0)
    # the mean is taken where each pixel is in the mask: a value outside the mask never shifts it
    poisoned = true.clone()
    poisoned[~mask.expand_as(true)] = 1e6
    np.testing.assert_allclose(population_mean(poisoned, mask), population_mean(true, mask), atol=1e-12)


def test_region_r_scores_the_hair_and_the_rest_of_the_head_apart():
    """An albedo right on the hair and inverted on the face proper: r 1 in the hair, -1 in the face, and neither in
    the whole head; pixels outside the mask count in neither region."""
    from stylegan_disentangle.synthetic.decomposer_eval import masked_pearson, region_pearson
    from stylegan_disentangle.synthetic.face import PART_NAMES

    gen = torch.Generator().manual_seed(2)
    true = torch.randn(4, 3, 8, 8, generator=gen, dtype=torch.float64)
    parts = torch.zeros(4, len(PART_NAMES), 8, 8, dtype=torch.float64)
    parts[:, PART_NAMES.index("hair"), :3] = 0.9  # the top three rows are hair
    parts[:, PART_NAMES.index("skin"), 3:] = 1.0
    mask = torch.ones(4, 1, 8, 8, dtype=torch.bool)
    mask[..., 0] = False  # the left column is outside the head: its values must not count
    pred = torch.where(torch.arange(8).view(1, 1, 8, 1) < 3, true, -true)
    pred[..., 0] = 1e6
    regions = region_pearson(pred, true, mask, parts)
    np.testing.assert_allclose(regions["hair"], 1.0, atol=1e-12)
    np.testing.assert_allclose(regions["face"], -1.0, atol=1e-12)
    assert np.abs(masked_pearson(pred, true, mask)).max() < 0.9


def test_health_numbers_and_the_collapse_warning(G, tmp_path, monkeypatch, caplog):
    import logging

    from stylegan_disentangle.labels.decomposer import trainer

    out = {"mask": torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2).expand(2, 1, 2, 2),
           "view_raw": torch.tensor([[1.0, -1.0, 0.5, 0.3, 0.3, 0.0], [-0.5, 0.0, 0.0, 0.0, 0.0, 0.0]])}
    assert trainer._health(out) == pytest.approx({"valid_fraction": 0.5, "rotation_saturation": 0.75})
    monkeypatch.setattr(trainer, "SATURATED", -1.0)  # every step "collapsed": warn once, not per log line
    with caplog.at_level(logging.WARNING, logger=trainer.__name__):
        train_decomposer(G, tmp_path, steps=3, batch_size=2, decomposer_kwargs=TINY, stabilize_after=10, log_every=1,
                         progress=False)
    assert len([r for r in caplog.records if "collapsing" in r.getMessage()]) == 1


def _flat_scene(n: int = 6) -> tuple[Unsup3DDecomposer, dict[str, torch.Tensor]]:
    """A decomposer and a made-up estimate: a raised disc on the wall, a known albedo, views and lights."""
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY).eval()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    disc = ((xx ** 2 + yy ** 2) < 0.4).float()
    depth = (dec.border_depth - 0.08 * disc).expand(n, 32, 32).clone()
    albedo = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.8
    image = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    view_raw = torch.zeros(n, 6)
    view_raw[:, 1] = torch.linspace(-0.2, 0.2, n)
    light_raw = torch.stack([torch.linspace(-0.5, 0.5, n), torch.linspace(0.3, -0.3, n),
                             torch.zeros(n), torch.zeros(n)], 1)
    return dec, {"canon_depth": depth, "canon_albedo": albedo, "input": image, "view_raw": view_raw,
                 "light_raw": light_raw, "disc": disc}


def test_data_rerender_uses_the_batchs_views_and_intensities_over_a_flat_unlit_background():
    dec, out = _flat_scene()
    scene = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="data", light_xy_fraction=0.4)
    # the views and the ambient / diffuse are the batch's own, permuted; the direction uniform within 0.4
    assert sorted(scene["view_raw"][:, 1].tolist()) == pytest.approx(sorted(out["view_raw"][:, 1].tolist()))
    for k in (0, 1):
        assert sorted(scene["light_raw"][:, k].tolist()) == pytest.approx(sorted(out["light_raw"][:, k].tolist()))
    assert scene["light_raw"][:, 2:].abs().max() <= 0.4 and scene["light_raw"][:, 2:].abs().min() > 0
    assert torch.equal(scene["canon_depth"], out["canon_depth"]) and torch.equal(scene["canon_albedo"],
                                                                               out["canon_albedo"])
    # far from the disc the wall shows the input's corner colour, unshaded; the disc shows the render
    x = out["input"]
    corners = torch.stack([x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]], 0).mean(0)
    wall = scene["image"][:, :, :4, :4]
    assert torch.allclose(wall, corners[:, :, None, None].expand_as(wall), atol=1e-6)
    renderer = renderer_for(dec)
    render = renderer.render(out["canon_depth"].unsqueeze(1), out["canon_albedo"],
                             dec.scale_light(scene["light_raw"])["light"],
                             view_degrees(dec.scale_view(scene["view_raw"])))["image"]
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))
    assert torch.allclose(scene["image"][centre], render[centre], atol=1e-6)
    # "random" mode renders the lit wall everywhere the render is valid
    lit = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="random")
    assert not torch.allclose(lit["image"][:, :, :4, :4], corners[:, :, None, None].expand(-1, -1, 4, 4))
    with pytest.raises(StyleGANDisentangleError, match="re-render mode"):
        rerender_scene(dec, out, torch.Generator(), mode="sideways")


def test_turned_head_scene_turns_only_the_yaw_and_keeps_the_estimated_light():
    dec, out = _flat_scene(n=64)
    out["light"] = dec.scale_light(out["light_raw"])["light"]
    image = turned_head_scene(dec, out, torch.Generator().manual_seed(3), max_yaw=45.0)
    # the same draw as the function makes: the yaw uniform within +-45 deg, every other view component the batch's
    yaw_raw = (torch.rand([64], generator=torch.Generator().manual_seed(3)) * 2 - 1) * (45.0 / dec.xyz_rotation_range)
    assert yaw_raw.abs().max() * dec.xyz_rotation_range > 35  # some heads turned past the generator's range
    view_raw = out["view_raw"].clone()
    view_raw[:, 1] = yaw_raw
    renderer = renderer_for(dec)
    render = renderer.render(out["canon_depth"].unsqueeze(1), out["canon_albedo"], out["light"],
                             view_degrees(dec.scale_view(view_raw)))["image"]
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))
    assert torch.allclose(image[centre], render[centre], atol=1e-6)
    # off the head: the input's corner colour, unlit, as the "data" re-render shows it
    x = out["input"]
    corners = torch.stack([x[:, :, 0, 0], x[:, :, 0, -1], x[:, :, -1, 0], x[:, :, -1, -1]], 0).mean(0)
    wall = image[:, :, :4, :4]
    assert torch.allclose(wall, corners[:, :, None, None].expand_as(wall), atol=1e-6)


def test_turned_head_scene_with_max_pitch_also_nods_the_head():
    """`max_pitch`: the pitch redrawn uniformly within +-max_pitch after the yaw (the next draw of the same
    generator); roll, translations and the light stay the batch's. (Small turns keep the centre on the disc.)"""
    dec, out = _flat_scene(n=64)
    out["light"] = dec.scale_light(out["light_raw"])["light"]
    image = turned_head_scene(dec, out, torch.Generator().manual_seed(3), max_yaw=10.0, max_pitch=20.0)
    gen = torch.Generator().manual_seed(3)
    view_raw = out["view_raw"].clone()
    view_raw[:, 1] = (torch.rand([64], generator=gen) * 2 - 1) * (10.0 / dec.xyz_rotation_range)
    view_raw[:, 0] = (torch.rand([64], generator=gen) * 2 - 1) * (20.0 / dec.xyz_rotation_range)
    pitch = view_raw[:, 0] * dec.xyz_rotation_range
    assert pitch.abs().max() <= 20.0 and pitch.abs().max() > 15 and (pitch > 0).any() and (pitch < 0).any()
    render = renderer_for(dec).render(out["canon_depth"].unsqueeze(1), out["canon_albedo"], out["light"],
                                      view_degrees(dec.scale_view(view_raw)))["image"]
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))
    assert torch.allclose(image[centre], render[centre], atol=1e-6)
    yaw_only = turned_head_scene(dec, out, torch.Generator().manual_seed(3), max_yaw=10.0)
    assert not torch.allclose(image[centre], yaw_only[centre], atol=1e-3)  # the nod shows


@pytest.mark.parametrize("mode", ["data", "random"])
def test_rerender_max_yaw_redraws_only_the_yaw(mode):
    dec, out = _flat_scene(n=64)
    plain = rerender_scene(dec, out, torch.Generator().manual_seed(5), mode=mode)
    wide = rerender_scene(dec, out, torch.Generator().manual_seed(5), mode=mode, max_yaw=45.0)
    yaw_deg = wide["view_raw"][:, 1] * dec.xyz_rotation_range
    assert yaw_deg.abs().max() <= 45 and yaw_deg.abs().max() > 35  # past the generator's +-35
    keep = [0, 2, 3, 4, 5]
    assert torch.equal(wide["view_raw"][:, keep], plain["view_raw"][:, keep])  # the other draws unchanged
    assert torch.equal(wide["light_raw"], plain["light_raw"])
    rendered = renderer_for(dec).render(out["canon_depth"].unsqueeze(1), out["canon_albedo"],
                                        dec.scale_light(wide["light_raw"])["light"],
                                        view_degrees(dec.scale_view(wide["view_raw"])))
    # rendered under the scene's own view wherever the head shows (random views also tilt and shift it)
    head = (out["canon_depth"] < dec.border_depth - WALL_MARGIN).float().unsqueeze(1)
    on_head = (rendered["mask"] > 0.5) & (renderer_for(dec).sample(head, rendered["grid"]) > 1 - 1e-6)
    valid = on_head.expand_as(rendered["image"])
    assert valid.sum() > 64 * 3 * 20
    assert torch.allclose(wide["image"][valid], rendered["image"][valid], atol=1e-5)


def test_rerender_yaw_is_stored_and_checked(G, tmp_path):
    dec = train_decomposer(G, tmp_path, steps=1, batch_size=4, decomposer_kwargs=TINY, rerender_mode="data",
                           rerender_yaw=45.0, progress=False)
    assert dec.epoch == 1
    assert json.loads((tmp_path / "train_state.json").read_text())["config"]["rerender_yaw"] == 45.0
    for bad, words in [(0.0, "rerender_yaw must be"), (float("inf"), "rerender_yaw must be"),
                       (70.0, "beyond the view's range")]:
        with pytest.raises(StyleGANDisentangleError, match=words):
            train_decomposer(G, tmp_path / "bad", steps=1, batch_size=4, decomposer_kwargs=TINY, rerender_yaw=bad,
                             progress=False)


def test_light_turn_term_trains_netl_alone_is_stored_and_checked(G, tmp_path):
    torch.manual_seed(0)
    init = Unsup3DDecomposer(image_size=32, **TINY)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    dec = train_decomposer(G, tmp_path, steps=2, batch_size=4, init=init, rerender_mode="data",
                           lam_light_turn=1.0, light_turn_yaw=40.0, train_nets=["netL"], log_every=1,
                           progress=False)
    after = dec.state_dict()
    assert {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])} == {"netL"}
    config = json.loads((tmp_path / "train_state.json").read_text())["config"]
    assert config["lam_light_turn"] == 1.0 and config["light_turn_yaw"] == 40.0
    assert "light_turn_pitch" not in config  # each image's own pitch unless asked: older runs resume unchanged
    train_decomposer(G, tmp_path / "default", steps=1, batch_size=4, init=Unsup3DDecomposer(image_size=32, **TINY),
                     lam_light_turn=1.0, train_nets=["netL"], progress=False)
    config = json.loads((tmp_path / "default" / "train_state.json").read_text())["config"]
    assert config["light_turn_yaw"] == LIGHT_TURN_YAW == 45.0  # recorded, as older runs recorded the old default
    log = _log(tmp_path)
    assert all(np.isfinite(r["light_turn"]) and r["light_turn"] > 0 for r in log)
    # off by default: not in the config (older runs resume unchanged) nor in the log
    plain = train_decomposer(G, tmp_path / "plain", steps=1, batch_size=4, decomposer_kwargs=TINY, progress=False)
    assert plain.epoch == 1
    assert "lam_light_turn" not in json.loads((tmp_path / "plain" / "train_state.json").read_text())["config"]
    assert "light_turn" not in _log(tmp_path / "plain")[0]
    for kwargs, words in [(dict(lam_light_turn=-1.0), "lam_light_turn must be"),
                          (dict(lam_light_turn=1.0, light_turn_yaw=float("nan")), "lam_light_turn must be"),
                          (dict(lam_light_turn=1.0, light_turn_yaw=75.0), "within the view's range"),
                          (dict(lam_light_turn=1.0, light_turn_pitch=70.0), "within the view's range"),
                          (dict(lam_light_turn=1.0, light_turn_pitch=0.0), "light_turn_pitch must be"),
                          (dict(light_turn_pitch=20.0), "light_turn_pitch.*which is off: set lam_light_turn"),
                          (dict(light_turn_yaw=30.0), "light_turn_yaw.*which is off: set lam_light_turn"),
                          (dict(lam_rerender=0.0, rerender_yaw=30.0), "rerender_yaw.*which is off: set lam_rerender"),
                          (dict(lam_rerender=0.0, rerender_albedo_step=(0.5, 1.2)),
                           "rerender_albedo_step.*which is off"),
                          (dict(lam_rerender=0.0, rerender_mode="data"), "rerender_mode.*which is off"),
                          (dict(lam_rerender=0.0, rerender_light_xy=0.4), "rerender_light_xy.*which is off"),
                          (dict(lam_light_turn=1.0, train_nets=["netA"]), "needs netL among the trained nets")]:
        with pytest.raises(StyleGANDisentangleError, match=words):
            train_decomposer(G, tmp_path / "bad", steps=1, batch_size=4, decomposer_kwargs=TINY, progress=False,
                             **kwargs)


def test_data_rerender_with_uniform_intensities_draws_them_like_the_random_mode():
    """intensities='uniform': the same view permutation as the batch mode, and ambient / diffuse uniform over netL's
    raw range (not the batch's), from the same draw that gives the light direction."""
    dec, out = _flat_scene()
    batch = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="data", light_xy_fraction=0.4)
    uniform = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="data", light_xy_fraction=0.4,
                             intensities="uniform")
    assert torch.equal(uniform["view_raw"], batch["view_raw"])
    gen = torch.Generator().manual_seed(3)
    torch.randperm(out["view_raw"].shape[0], generator=gen)  # the view permutation is drawn first
    expected = torch.rand([out["view_raw"].shape[0], 4], generator=gen) * 2 - 1
    expected[:, 2:] *= 0.4
    torch.testing.assert_close(uniform["light_raw"], expected, rtol=0, atol=0)
    assert torch.equal(uniform["light_raw"][:, 2:], batch["light_raw"][:, 2:])
    assert not torch.allclose(uniform["light_raw"][:, :2], batch["light_raw"][:, :2])
    with pytest.raises(StyleGANDisentangleError, match="re-render intensities"):
        rerender_scene(dec, out, torch.Generator(), mode="data", intensities="bright")


def test_recolour_above_hairline_scales_the_top_of_the_head_by_one_gain():
    n = 400
    albedo = torch.zeros(n, 3, 32, 32)  # reflectance 0.5 everywhere: no clipping for gains up to 2
    head = torch.ones(n, 1, 32, 32)
    head[:, :, :, :3] = 0  # a strip off the head
    out = recolour_above_hairline(albedo, head, torch.Generator().manual_seed(0), (0.35, 1.25))
    ratio = (out + 1) / (albedo + 1)
    top = ratio[:, 0, 0, 16]  # the crown: far above any hairline (its centre is at row 7 or lower)
    assert bool((top >= 0.35 * (1 - 1e-4)).all() and (top <= 1.25 * (1 + 1e-4)).all())
    assert top.min() < 0.45 and top.max() > 1.15 and bool(((top - 1).abs() > 0.05).float().mean() > 0.8)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))  # one gain for all three channels
    assert torch.equal(out[..., :3], albedo[..., :3])  # off the head nothing changes
    assert torch.allclose(ratio[:, :, 30:], torch.ones_like(ratio[:, :, 30:]), atol=2e-4)  # the chin: below it
    sym = recolour_above_hairline(albedo, torch.ones(n, 1, 32, 32), torch.Generator().manual_seed(0), (0.35, 1.25))
    torch.testing.assert_close(sym, sym.flip(-1), rtol=0, atol=1e-5)  # left-right symmetric, like the albedo
    # the edge is a step: along the centre column the ratio goes from the gain to 1 within about three rows
    column = ratio[:, 0, :, 16]
    moving = ((column - 1).abs() > 0.02 * (top - 1).abs()[:, None]) & ((column - top[:, None]).abs()
                                                                       > 0.02 * (top - 1).abs()[:, None])
    big = (top - 1).abs() > 0.2
    assert int(moving[big].sum(1).max()) <= 6


def test_rerender_with_albedo_step_renders_and_returns_the_recoloured_albedo():
    dec, out = _flat_scene()
    scene = rerender_scene(dec, out, torch.Generator().manual_seed(3), mode="data", light_xy_fraction=0.4,
                           albedo_step=(0.35, 1.25))
    head = (out["canon_depth"] < dec.border_depth - WALL_MARGIN).float().unsqueeze(1)
    expected = recolour_above_hairline(out["canon_albedo"], head, torch.Generator().manual_seed(3), (0.35, 1.25))
    torch.testing.assert_close(scene["canon_albedo"], expected, rtol=0, atol=0)  # drawn first, from the same stream
    assert not torch.equal(expected, out["canon_albedo"])
    render = renderer_for(dec).render(out["canon_depth"].unsqueeze(1), expected,
                                      dec.scale_light(scene["light_raw"])["light"],
                                      view_degrees(dec.scale_view(scene["view_raw"])))["image"]
    centre = (slice(None), slice(None), slice(14, 18), slice(14, 18))
    assert torch.allclose(scene["image"][centre], render[centre], atol=1e-6)


def test_detached_light_keeps_the_photometric_gradient_off_netL(G):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    _, img = draw_images(G, 4, torch.Generator().manual_seed(5))
    for detach in (False, True):
        dec.zero_grad(set_to_none=True)
        with torch.enable_grad():
            reconstruction_loss(reconstruct(dec, img, detach_light=detach))["total"].backward()
        reached = [p.grad is not None and p.grad.abs().sum() > 0 for p in dec.netL.parameters()]
        assert all(reached) != detach and any(p.grad is not None and p.grad.abs().sum() > 0
                                              for p in dec.netA.parameters())


def test_rerender_settings_are_stored_and_light_from_rerender_trains(G, tmp_path):
    dec = train_decomposer(G, tmp_path, steps=2, batch_size=4, decomposer_kwargs=TINY, rerender_mode="data",
                           rerender_light_xy=0.4, light_from_rerender=True, log_every=1, progress=False)
    assert dec.epoch == 2
    config = json.loads((tmp_path / "train_state.json").read_text())["config"]
    assert config["rerender_mode"] == "data" and config["rerender_light_xy"] == 0.4 and config["light_from_rerender"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["rerender"]) for r in log)
    with pytest.raises(StyleGANDisentangleError, match="lam_rerender > 0"):
        train_decomposer(G, tmp_path / "bad", steps=2, batch_size=4, decomposer_kwargs=TINY, lam_rerender=0.0,
                         light_from_rerender=True, progress=False)
    with pytest.raises(StyleGANDisentangleError, match="rerender_mode"):
        train_decomposer(G, tmp_path / "bad", steps=2, batch_size=4, decomposer_kwargs=TINY, rerender_mode="sideways",
                         progress=False)
    with pytest.raises(StyleGANDisentangleError, match="rerender_intensities"):
        train_decomposer(G, tmp_path / "bad", steps=2, batch_size=4, decomposer_kwargs=TINY, rerender_mode="data",
                         rerender_intensities="bright", progress=False)
    for step in ((0.0, 1.0), (1.2, 0.5), (0.5, float("nan")), ("a", "b"), (0.5,)):
        with pytest.raises(StyleGANDisentangleError, match="rerender_albedo_step"):
            train_decomposer(G, tmp_path / "bad", steps=2, batch_size=4, decomposer_kwargs=TINY,
                             rerender_albedo_step=step, progress=False)
    assert not (tmp_path / "bad").exists()
    stepped = train_decomposer(G, tmp_path / "step", steps=1, batch_size=4, decomposer_kwargs=TINY,
                               rerender_mode="data", rerender_albedo_step=(0.35, 1.25), progress=False)
    assert stepped.epoch == 1
    config = json.loads((tmp_path / "step" / "train_state.json").read_text())["config"]
    assert config["rerender_albedo_step"] == [0.35, 1.25]


def test_train_nets_freezes_the_other_nets(G, tmp_path):
    torch.manual_seed(0)
    init = Unsup3DDecomposer(image_size=32, **TINY)
    before = {k: v.clone() for k, v in init.state_dict().items()}
    dec = train_decomposer(G, tmp_path, steps=2, batch_size=4, init=init, rerender_mode="data",
                           light_from_rerender=True, train_nets=["netL"], progress=False)
    after = dec.state_dict()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], before[k])}
    assert moved == {"netL"}  # exactly the trained net changed, the frozen ones are bit-identical
    config = json.loads((tmp_path / "train_state.json").read_text())["config"]
    assert config["train_nets"] == ["netL"] and list(dec.optimizer_states) == ["optimizerL"]
    # a later call without train_nets trains every net again (the freeze does not stick to the nets)
    dec2 = train_decomposer(G, tmp_path / "all", steps=1, batch_size=4, init=dec, progress=False)
    assert all(p.requires_grad for p in dec2.parameters())
    for bad in (["netQ"], "netL", []):  # an unknown net, a bare string, nothing
        with pytest.raises(StyleGANDisentangleError, match="train_nets"):
            train_decomposer(G, tmp_path / "bad", steps=1, batch_size=4, decomposer_kwargs=TINY, train_nets=bad,
                             progress=False)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def _log(outdir) -> list[dict]:
    return [json.loads(line) for line in (outdir / "log.jsonl").read_text().splitlines()]


def _tiny_discriminator(resolution: int = 32):
    from stylegan_disentangle.networks import Discriminator

    torch.manual_seed(0)
    return Discriminator(c_dim=0, img_resolution=resolution, img_channels=3, channel_base=256, channel_max=16).eval()


def test_perceptual_term_is_logged_and_enters_the_objective_with_d_frozen(G, tmp_path):
    D = _tiny_discriminator()  # the decomposer's resolution (the synthetic G makes 32x32 images)
    before = {k: v.clone() for k, v in D.state_dict().items()}
    train_decomposer(G, tmp_path, steps=2, batch_size=2, decomposer_kwargs=TINY, lam_perc=2.0, D=D, lam_rerender=0.0,
                     lam_jitter=0.0, log_every=1, progress=False)
    log = _log(tmp_path)
    assert [r["step"] for r in log] == [1, 2]
    for r in log:
        assert np.isfinite(r["perc"]) and r["perc"] > 0 and np.isfinite(r["perc_flip"]) and r["perc_flip"] > 0
        # stabilizers off: the objective is the photometric terms plus lam_perc * (perc + lam_flip * perc_flip);
        # float32 sums of four terms round to well under 1e-6 of their magnitudes
        terms = [r["l1"], 0.5 * r["l1_flip"], 2.0 * r["perc"], 2.0 * 0.5 * r["perc_flip"]]
        assert r["total"] == pytest.approx(sum(terms), abs=1e-6 * sum(abs(t) for t in terms)), r
    assert json.loads((tmp_path / "train_state.json").read_text())["config"]["lam_perc"] == 2.0
    assert all(torch.equal(before[k], v) for k, v in D.state_dict().items())  # D only supplies features


def test_depth_smoothness_logged_is_the_tv_of_the_first_batchs_depth(G, tmp_path):
    from stylegan_disentangle.labels.decomposer.trainer import _step_generator, total_variation

    train_decomposer(G, tmp_path, steps=1, batch_size=2, decomposer_kwargs=TINY, lam_smooth=0.3, lam_rerender=0.0,
                     lam_jitter=0.0, seed=5, progress=False)
    (record,) = _log(tmp_path)
    # logged before the step's update: the TV of batch 0's depth under the seeded initial nets
    torch.manual_seed(5)
    fresh = Unsup3DDecomposer(image_size=32, **TINY)
    _, img = draw_images(G, 2, _step_generator(5, 0))
    expected = float(total_variation(fresh.decompose(img, parts=["depth"])["canon_depth"]))
    assert expected > 0 and record["smooth"] == pytest.approx(expected, rel=1e-5)
    terms = [record["l1"], 0.5 * record["l1_flip"], 0.3 * record["smooth"]]
    assert record["total"] == pytest.approx(sum(terms), abs=1e-6 * sum(abs(t) for t in terms))


def test_previews_are_written_every_preview_every_steps_and_at_the_end(G, tmp_path):
    train_decomposer(G, tmp_path, steps=3, batch_size=2, decomposer_kwargs=TINY, preview_every=2, lam_rerender=0.0,
                     lam_jitter=0.0, progress=False)
    previews = sorted(p.name for p in tmp_path.glob("preview_*.png"))
    assert previews == ["preview_000002.png", "preview_000003.png"]  # step 2 (every 2), step 3 (the last)
    assert all((tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in previews)


@pytest.fixture(scope="module")
def pkl_with_d(G, tmp_path_factory):
    """The synthetic generator with a tiny discriminator at its resolution, as a network pickle."""
    from stylegan_disentangle.checkpoints import save_network_pkl

    path = tmp_path_factory.mktemp("net") / "with_d.pkl"
    save_network_pkl(path, dict(G=G, G_ema=G, D=_tiny_discriminator(), training_set_kwargs=None, augment_pipe=None))
    return path


@pytest.mark.parametrize("entry", ["cli", "script"])
def test_both_entry_points_offer_perceptual_and_smooth(pkl_with_d, tmp_path, monkeypatch, entry):
    out = tmp_path / "run"
    common = ["--outdir", str(out), "--steps", "1", "--batch-size", "2", "--nf", "16", "--perceptual", "--smooth",
              "0.1", "--device", "cpu"]
    if entry == "cli":
        result = CliRunner().invoke(main, ["train-decomposer", str(pkl_with_d), *common, "--quiet", "--rerender", "0",
                                           "--jitter", "0"])
        assert result.exit_code == 0, result.output
    else:
        script = load_script("train_decomposer")  # its main reads sys.argv
        monkeypatch.setattr(sys, "argv", ["train_decomposer.py", "--pkl", str(pkl_with_d), *common, "--zdim", "32",
                                          "--nf-small", "8", "--rerender", "0", "--jitter", "0", "--eval-samples", "0"])
        script.main()
    (record,) = _log(out)
    assert record["perc"] > 0 and record["smooth"] > 0
    config = json.loads((out / "train_state.json").read_text())["config"]
    assert config["lam_perc"] == 1.0 and config["lam_smooth"] == 0.1


@pytest.mark.parametrize("entry", ["cli", "script"])
def test_both_entry_points_offer_the_turned_head_terms(tmp_path, monkeypatch, entry):
    out = tmp_path / "run"
    common = ["--outdir", str(out), "--steps", "1", "--batch-size", "2", "--nf", "16", "--rerender-mode", "data",
              "--rerender-yaw", "30", "--light-turn", "2", "--light-turn-yaw", "40", "--light-turn-pitch", "15",
              "--device", "cpu"]
    if entry == "cli":
        result = CliRunner().invoke(main, ["train-decomposer", "synthetic", *common, "--quiet"])
        assert result.exit_code == 0, result.output
    else:
        script = load_script("train_decomposer")
        monkeypatch.setattr(sys, "argv", ["train_decomposer.py", *common, "--zdim", "32", "--nf-small", "8",
                                          "--stabilize-after", "0", "--eval-samples", "0"])
        script.main()
    config = json.loads((out / "train_state.json").read_text())["config"]
    assert config["rerender_yaw"] == 30.0 and config["lam_light_turn"] == 2.0 and config["light_turn_yaw"] == 40.0
    assert config["light_turn_pitch"] == 15.0
    assert _log(out)[0]["light_turn"] > 0


def test_perceptual_without_a_discriminator_is_refused_by_both_entry_points(tmp_path, monkeypatch):
    result = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--steps", "1", "--outdir", str(tmp_path / "c"),
                                       "--perceptual", "--device", "cpu"])
    assert result.exit_code == 1 and "no discriminator" in result.output
    script = load_script("train_decomposer")
    monkeypatch.setattr(sys, "argv", ["train_decomposer.py", "--outdir", str(tmp_path / "s"), "--perceptual",
                                      "--device", "cpu"])
    with pytest.raises(SystemExit, match="no discriminator"):
        script.main()
    assert not (tmp_path / "c").exists() and not (tmp_path / "s").exists()


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.0), dict(lr=float("nan")), dict(weight_decay=-1e-4)])
def test_bad_learning_rate_or_weight_decay_is_refused_before_anything_is_written(G, tmp_path, bad):
    with pytest.raises(StyleGANDisentangleError, match="lr must be > 0 and weight_decay >= 0"):
        train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, decomposer_kwargs=TINY, progress=False, **bad)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["lam_flip", "lam_perc", "lam_smooth", "lam_albedo_tv", "lam_albedo_sparse",
                                  "lam_rerender", "lam_jitter", "lam_teacher"])
@pytest.mark.parametrize("value", [-0.5, float("nan"), float("inf")])
def test_a_negative_or_non_finite_loss_weight_is_refused_before_anything_is_written(G, tmp_path, name, value):
    """A negative weight would silently switch its term off (the terms run only for a weight > 0) or, for the flip
    term, reward a mismatched mirror render; NaN would make every step's loss NaN."""
    with pytest.raises(StyleGANDisentangleError, match=rf"loss weights must be finite and >= 0, got \{{'{name}': "):
        train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, decomposer_kwargs=TINY, progress=False,
                         **{name: value})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, words", [(["--lr", "-1"], ["lr must be > 0", "lr=-1.0"]),
                                         (["--nf", "20"], ["nf=20", "multiple of 16"])])
def test_train_decomposer_cli_refuses_bad_sizes_and_rates_cleanly(tmp_path, args, words):
    result = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--steps", "1", "--outdir",
                                       str(tmp_path / "run"), "--device", "cpu", "--quiet", *args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert all(w in result.output for w in words), result.output
    assert not (tmp_path / "run").exists()  # refused before the output folder is made


def test_unknown_decomposer_kwargs_are_refused_naming_them(G, tmp_path):
    with pytest.raises(StyleGANDisentangleError, match="decomposer_kwargs.*nff"):
        train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, decomposer_kwargs=dict(TINY, nff=16),
                         progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", [["decompose", "synthetic"], ["train-decomposer", "synthetic", "--steps", "1"]])
def test_cuda_device_without_cuda_is_a_clean_cli_error(tmp_path, monkeypatch, command):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # this machine without CUDA, wherever it runs
    for device, words in (("cuda", "CUDA is not available"), ("gpu0", "unknown device 'gpu0'")):
        result = CliRunner().invoke(main, [*command, "--outdir", str(tmp_path / "o"), "--device", device])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output  # usage error
        assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("content", ["{broken", "[1, 2]", '{"bank_seconds": "x"}', "{}"])
def test_a_corrupt_bank_time_is_refused_naming_it(tmp_path, content):
    from stylegan_disentangle.labels.decomposer.trainer import BANK_TIME, bank_seconds

    assert bank_seconds(tmp_path) == 0.0  # no file: no bank
    (tmp_path / BANK_TIME).write_text('{"bank_seconds": 12.5}')
    assert bank_seconds(tmp_path) == 12.5
    (tmp_path / BANK_TIME).write_text(content)
    with pytest.raises(StyleGANDisentangleError, match="not a readable bank time") as info:
        bank_seconds(tmp_path)
    assert str(tmp_path / BANK_TIME) in str(info.value)


@pytest.mark.parametrize("content, words", [("{broken", "not a readable training state"),
                                            ("[1, 2]", "holds a list")])
def test_corrupt_train_state_is_refused_naming_it(G, tmp_path, content, words):
    torch.manual_seed(0)
    Unsup3DDecomposer(image_size=32, **TINY).save(tmp_path / "checkpoint.pth")
    (tmp_path / "train_state.json").write_text(content)
    with pytest.raises(StyleGANDisentangleError, match=words) as info:
        train_decomposer(G, tmp_path, steps=2, batch_size=2, decomposer_kwargs=TINY, progress=False)
    assert str(tmp_path / "train_state.json") in str(info.value)


def test_a_checkpoint_without_its_train_state_is_not_overwritten(G, tmp_path):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    dec.save(tmp_path / "checkpoint.pth")
    saved = (tmp_path / "checkpoint.pth").read_bytes()
    for kwargs in (dict(decomposer_kwargs=TINY), dict(init=dec)):
        with pytest.raises(StyleGANDisentangleError, match="another --outdir") as info:
            train_decomposer(G, tmp_path, steps=1, batch_size=2, progress=False, **kwargs)
        assert str(tmp_path / "checkpoint.pth") in str(info.value) and "train_state.json" in str(info.value)
    assert (tmp_path / "checkpoint.pth").read_bytes() == saved and not (tmp_path / "log.jsonl").exists()


def test_a_diverging_loss_stops_training_naming_the_step_and_the_last_good_checkpoint(G, tmp_path, monkeypatch):
    from stylegan_disentangle.labels.decomposer import trainer

    real, calls = trainer.reconstruction_loss, []

    def nan_on_the_third_step(out, lam_flip=0.5):
        losses = real(out, lam_flip)
        calls.append(1)
        if len(calls) == 3:
            losses["total"] = losses["total"] * float("nan")
        return losses

    monkeypatch.setattr(trainer, "reconstruction_loss", nan_on_the_third_step)
    with pytest.raises(StyleGANDisentangleError, match=r"training diverged at step 2: loss nan; the last good "
                                                       r"checkpoint is .*checkpoint\.pth"):
        train_decomposer(G, tmp_path, steps=4, batch_size=2, decomposer_kwargs=TINY, lam_jitter=0.0, lam_rerender=0.0,
                         checkpoint_every=1, progress=False)
    assert load_decomposer(tmp_path / "checkpoint.pth").epoch == 2  # the two good steps, nothing after
    assert all(torch.isfinite(p).all() for p in load_decomposer(tmp_path / "checkpoint.pth").parameters())


def test_perceptual_term_resizes_to_the_discriminators_resolution():
    """A network's D may not work at the decomposer's resolution: images and mask are resized to D's first (bilinear,
    nearest for the mask), the same as feeding D those resized images; at D's own resolution nothing is resized."""
    from torch.nn.functional import interpolate

    from stylegan_disentangle.labels.decomposer.trainer import _perceptual

    D = _tiny_discriminator(16)
    gen = torch.Generator().manual_seed(9)
    pred, target = (torch.rand(2, 3, 32, 32, generator=gen) * 2 - 1 for _ in range(2))
    mask = (torch.rand(2, 1, 32, 32, generator=gen) > 0.2).float()
    with torch.no_grad():
        got = _perceptual(D, pred, target, mask)
        small = [interpolate(x, size=(16, 16), mode="bilinear", align_corners=False) for x in (pred, target)]
        want = _perceptual(D, *small, interpolate(mask, size=(16, 16), mode="nearest"))
    assert float(got) > 0
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_the_labeler_leaves_the_wrapped_decomposer_as_it_was_and_names_bad_images(G):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY).train()
    _, img = draw_images(G, 3, torch.Generator().manual_seed(1))
    lab = DecomposerLabeler(dec)
    out = lab(img)
    assert dec.training and dec.netD.network[0].weight.is_contiguous()  # mode and layout given back
    with torch.no_grad():
        want = dec.eval().decompose(img)
    torch.testing.assert_close(out["yaw"], want["rotation_deg"][:, 1], rtol=2e-5, atol=2e-5)  # evaluated in eval mode
    for bad, words in ((img[0], r"\(3, 32, 32\)"), (img[:0], r"\(0, 3, 32, 32\)"), (None, "NoneType")):
        with pytest.raises(StyleGANDisentangleError, match=rf"decomposer3d labels images \[N >= 1, 3, H, W\].*{words}"):
            lab(bad)
    pixels = ((img + 1) * 127.5).round().to(torch.uint8)
    with pytest.raises(StyleGANDisentangleError, match=r"float images in \[-1, 1\], got torch.uint8"):
        lab(pixels)


def test_fit_with_train_nets_leaves_every_net_trainable_and_the_callers_random_stream_alone(G, tmp_path):
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    dec.fit(G, tmp_path, steps=2, batch_size=2, train_nets=["netL"], stabilize_after=0, progress=False)
    assert torch.equal(torch.rand(3), expected)  # the jitter twins' noise is drawn on a forked generator
    assert all(p.requires_grad for p in dec.parameters())


def test_shipping_a_continuation_keeps_the_earlier_phases_with_their_notes(tmp_path, monkeypatch):
    """`--ship` after `--init synthetic`: the previous record becomes the last history entry (its phase note with it),
    the new one carries `--phase-note`, and the step count of all phases adds them up."""
    script = load_script("train_decomposer")
    target = tmp_path / "pkg" / "synthetic32_decomposer.pth"
    target.parent.mkdir()
    previous = {"command": "python earlier.py", "steps": 7, "train_seconds_total": 3.0, "scores_fresh_sample": None,
                "phase_note": "the phase before", "history": [{"command": "python first.py", "steps": 5,
                                                              "train_seconds_total": 2.0, "scores_fresh_sample": None}]}
    target.with_suffix(".json").write_text(json.dumps(previous))
    monkeypatch.setattr(script, "SHIPPED", {"synthetic": target})
    monkeypatch.setattr(sys, "argv", ["train_decomposer.py", "--init", "synthetic", "--outdir", str(tmp_path / "run"),
                                      "--steps", "1", "--batch-size", "2", "--rerender", "0", "--jitter", "0",
                                      "--train-nets", "netL", "--eval-samples", "0", "--device", "cpu", "--ship",
                                      "--phase-note", "netL alone, one step"])
    script.main()
    record = json.loads(target.with_suffix(".json").read_text())
    assert record["phase_note"] == "netL alone, one step"
    assert [h["command"] for h in record["history"]] == ["python first.py", "python earlier.py"]
    assert record["history"][-1]["phase_note"] == "the phase before" and "phase_note" not in record["history"][0]
    assert record["steps_all_phases"] == 1 + 5 + 7
    shipped = load_decomposer(target)
    assert list(shipped.present_nets) == ["netD", "netA", "netL", "netV", "netC"] and not shipped.optimizer_states


def test_phase_note_without_ship_is_refused(tmp_path, monkeypatch, capsys):
    script = load_script("train_decomposer")
    monkeypatch.setattr(sys, "argv", ["train_decomposer.py", "--outdir", str(tmp_path / "run"), "--phase-note", "x"])
    with pytest.raises(SystemExit) as exc:
        script.main()
    assert exc.value.code == 2 and "--phase-note is for --ship" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def _init_with_adam_states(path, lr: float = 1e-4, weight_decay: float = 5e-4, seed: int = 3):
    """A small decomposer whose file carries Adam states (as official training checkpoints do)."""
    torch.manual_seed(seed)
    dec = Unsup3DDecomposer(image_size=32, **TINY)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.enable_grad():
        for name in dec.present_nets:
            net = getattr(dec, name)
            opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)
            out = net(x)
            (sum(o.mean() for o in out) if isinstance(out, tuple) else out.mean()).backward()
            opt.step()
            dec.optimizer_states[name.replace("net", "optimizer")] = opt.state_dict()
    dec.save(path)
    return path


def test_the_runs_learning_rate_and_weight_decay_apply_to_an_init_with_optimizer_states(G, tmp_path):
    init = load_decomposer(_init_with_adam_states(tmp_path / "init.pth"))
    train_decomposer(G, tmp_path / "run", steps=1, batch_size=2, init=init, lr=3e-3, weight_decay=0.0,
                     progress=False)
    saved = load_decomposer(tmp_path / "run" / "checkpoint.pth")
    groups = [g for state in saved.optimizer_states.values() for g in state["param_groups"]]
    assert groups and all(g["lr"] == 3e-3 and g["weight_decay"] == 0.0 for g in groups)
    assert json.loads((tmp_path / "run" / "train_state.json").read_text())["config"]["lr"] == 3e-3


def test_a_rerun_with_another_init_is_refused(G, tmp_path):
    first = _init_with_adam_states(tmp_path / "a.pth", seed=3)
    other = _init_with_adam_states(tmp_path / "b.pth", seed=4)  # same sizes, other weights
    args = ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--outdir", str(tmp_path / "run"),
            "--quiet", "--device", "cpu"]
    assert CliRunner().invoke(main, [*args, "--init", str(first)]).exit_code == 0
    again = CliRunner().invoke(main, [*args, "--init", str(other)])
    assert again.exit_code == 1 and "started from other initial nets" in again.output, again.output
    same = CliRunner().invoke(main, [*args[:3], "2", *args[4:], "--init", str(first)])
    assert same.exit_code == 0, same.output  # the same init resumes


def test_no_antialias_turns_it_off_on_init_nets(tmp_path):
    first = CliRunner().invoke(main, ["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--nf",
                                      "16", "--zdim", "32", "--antialias", "--quiet", "--device", "cpu", "--outdir",
                                      str(tmp_path / "init")])  # nets with antialias on (in their train_state.json)
    assert first.exit_code == 0, first.output
    assert load_decomposer(tmp_path / "init" / "checkpoint.pth").antialias
    args = ["train-decomposer", "synthetic", "--init", str(tmp_path / "init" / "checkpoint.pth"), "--steps", "2",
            "--batch-size", "2", "--quiet", "--device", "cpu"]
    for flag, want in (([], True), (["--no-antialias"], False)):
        out = tmp_path / f"run{len(flag)}"
        result = CliRunner().invoke(main, [*args, *flag, "--outdir", str(out)])
        assert result.exit_code == 0, result.output
        assert load_decomposer(out / "checkpoint.pth").antialias is want


def test_a_conditional_generator_is_drawn_with_real_classes():
    """Not the all-zero class vector, which no seed of a conditional network draws."""
    from tests.helpers import tiny_networks

    G = tiny_networks("resnet_cond16")["G_ema"].eval()
    gen = torch.Generator().manual_seed(0)
    ws, img = draw_images(G, 6, gen)
    z = torch.randn([6, G.z_dim], generator=torch.Generator().manual_seed(0))
    per_class = torch.stack([G.mapping(z, torch.nn.functional.one_hot(torch.full([6], k), G.c_dim).float())
                             for k in range(G.c_dim)])  # [c_dim, 6, num_ws, w_dim]
    matched = (per_class - ws).flatten(2).abs().amax(2).min(0).values
    assert torch.all(matched < 1e-5)  # each face is its z under one of the classes


def test_fit_of_freshly_built_nets_resumes_when_run_again(G, tmp_path):
    """The same script line run again (a new, unsaved decomposer; fit into the same folder) continues the run: only
    nets read from a file are recorded by their weights."""
    Unsup3DDecomposer(image_size=32, **TINY).fit(G, tmp_path, steps=1, batch_size=2, progress=False)
    again = Unsup3DDecomposer(image_size=32, **TINY).fit(G, tmp_path, steps=2, batch_size=2, progress=False)
    assert again.epoch == 2
    assert "init_sha256" not in json.loads((tmp_path / "train_state.json").read_text())["config"]
