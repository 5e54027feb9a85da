"""The decomposer's input crop: the part of each generated image it reads (a decomposer trained on tight face crops,
as the official CelebA one, on a generator with a wider frame)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.labels import check_crop, crop_images
from stylegan_disentangle.labels.decomposer import DecomposerLabeler, Unsup3DDecomposer
from tests.three_d_helpers import cli


def test_crop_images_keeps_exactly_the_box_rounded_to_whole_pixels():
    img = torch.arange(2 * 3 * 8 * 10, dtype=torch.float32).reshape(2, 3, 8, 10)
    assert torch.equal(crop_images(img, (0.25, 0.5, 0.5, 0.3)), img[..., 2:6, 5:8])
    assert torch.equal(crop_images(img, None), img) and torch.equal(crop_images(img, (0, 0, 1, 1)), img)
    assert crop_images(img, (0.99, 0.99, 0.01, 0.01)).shape[-2:] == (1, 1)  # never empty


@pytest.mark.parametrize("crop, words", [
    ((0.1, 0.1, 0.5), "four finite numbers"),
    ((0.1, 0.1, float("nan"), 0.5), "four finite numbers"),
    ("abcd", "four numbers"),
    ((0.6, 0.0, 0.5, 0.5), "must lie inside the image"),
    ((0.0, 0.0, 0.0, 0.5), "must lie inside the image"),
    ((-0.1, 0.0, 0.5, 0.5), "must lie inside the image"),
])
def test_a_bad_crop_is_refused_saying_why(crop, words):
    with pytest.raises(ValueError, match=words):
        check_crop(crop)


def test_the_labeler_reads_only_the_crop_and_its_fingerprint_tells_crops_apart():
    torch.manual_seed(0)
    dec = Unsup3DDecomposer(image_size=32, nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)
    img = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    box = (0.125, 0.25, 0.75, 0.625)
    cropped = DecomposerLabeler(dec, crop=box)
    got, want = cropped(img), DecomposerLabeler(dec)(img[..., 8:56, 16:56])
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in got)
    assert cropped.scalars_only().crop == box and "crop=" in repr(cropped)
    other = DecomposerLabeler(dec, crop=(0, 0, 1, 0.5))
    prints = {DecomposerLabeler(dec).fingerprint, cropped.fingerprint, other.fingerprint}
    assert len(prints) == 3  # a bank labelled through one crop is not reused through another
    with pytest.raises(ValueError, match="inside the image"):
        DecomposerLabeler(dec, crop=(0.5, 0.5, 0.6, 0.5))


def test_decompose_cli_crops_and_records_it(tmp_path):
    torch.manual_seed(0)
    Unsup3DDecomposer(image_size=32, nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16).save(
        tmp_path / "dec.pth")
    runs = {}
    for tag, extra in (("whole", []), ("crop", ["--crop", "0.25,0.25,0.5,0.5"])):
        result = cli(["decompose", "synthetic", "--seeds", "0-1", "--decomposer", str(tmp_path / "dec.pth"),
                      "--outdir", str(tmp_path / tag), *extra])
        assert result.exit_code == 0, result.output
        runs[tag] = json.loads((tmp_path / tag / "decomposition.json").read_text())
    assert runs["whole"]["crop"] is None and runs["crop"]["crop"] == [0.25, 0.25, 0.5, 0.5]
    assert runs["whole"]["images"][0]["yaw"] != runs["crop"]["images"][0]["yaw"]
    assert np.load(tmp_path / "crop" / "maps.npz")["depth"].shape == (2, 32, 32)
    bad = cli(["decompose", "synthetic", "--crop", "0.5,0.5", "--outdir", str(tmp_path / "bad")])
    assert bad.exit_code == 2 and "--crop" in bad.output and "four finite numbers" in bad.output
    assert not (tmp_path / "bad").exists()


def test_export_augmentation_refuses_a_bad_crop_before_loading_anything(tmp_path):
    result = cli(["export-augmentation", "synthetic", str(tmp_path / "missing.npz"), "--name", "yaw", "--target",
                  "-10:10", "--count", "4", "--outdir", str(tmp_path / "out"), "--decomposer-crop", "0,0,2,1"])
    assert result.exit_code == 2 and "--decomposer-crop" in result.output and "inside the image" in result.output


TINY = dict(nf=16, zdim=32, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=32)


def test_training_with_a_crop_reads_the_box_and_the_decomposer_keeps_it(tmp_path, monkeypatch):
    """Every image the trainer gives the nets is the box (the batch, the jittered twins, the bank, the preview); the
    trained decomposer carries the crop through its checkpoint's train_state.json into its labeler; a resume with
    the same crop continues, another crop is another run."""
    from stylegan_disentangle.errors import StyleGANDisentangleError
    from stylegan_disentangle.labels.decomposer import load_decomposer
    from stylegan_disentangle.labels.decomposer import trainer as tr
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G = load_synthetic()[0]  # 32 px
    box = (0.25, 0.125, 0.5, 0.75)  # rows 8-24, columns 4-28
    seen = []
    real_reconstruct, real_jitter_loss = tr.reconstruct, tr._jitter_loss
    monkeypatch.setattr(tr, "reconstruct", lambda dec, img, **kw: seen.append(img.shape[-2:]) or
                        real_reconstruct(dec, img, **kw))
    monkeypatch.setattr(tr, "_jitter_loss", lambda dec, img2, out: seen.append(img2.shape[-2:]) or
                        real_jitter_loss(dec, img2, out))
    kwargs = dict(batch_size=2, decomposer_kwargs=TINY, crop=box, log_every=1, preview_every=100, progress=False)
    dec = tr.train_decomposer(G, tmp_path / "run", steps=2, **kwargs)
    assert dec.input_crop == box and set(seen) == {torch.Size([16, 24])}
    state = json.loads((tmp_path / "run" / "train_state.json").read_text())
    assert state["config"]["decomposer"]["input_crop"] == list(box)
    loaded = load_decomposer(tmp_path / "run" / "checkpoint.pth")
    assert loaded.input_crop == box and DecomposerLabeler(loaded).crop == box
    assert DecomposerLabeler(loaded, crop=(0, 0, 1, 1)).crop == (0, 0, 1, 1)  # the whole image on request
    tr.train_decomposer(G, tmp_path / "run", steps=3, **kwargs)  # resumes
    with pytest.raises(StyleGANDisentangleError, match="other settings"):
        tr.train_decomposer(G, tmp_path / "run", steps=4, **{**kwargs, "crop": (0, 0, 1, 1)})
    # the bank stores the box, resized to the decomposer's input
    seen.clear()
    tr.train_decomposer(G, tmp_path / "banked", steps=1, bank_size=6, **kwargs)
    bank = json.loads((tmp_path / "banked" / "bank" / "bank.json").read_text())
    assert bank["settings"]["crop"] == list(box) and set(seen) == {torch.Size([32, 32])}
    with pytest.raises(StyleGANDisentangleError, match="crop: .*inside the image"):
        tr.train_decomposer(G, tmp_path / "bad", steps=1, **{**kwargs, "crop": (0.5, 0, 0.6, 1)})


def test_an_uncropped_decomposer_keeps_its_config_and_fingerprint_keys():
    """`input_crop` enters the config only when set: runs and banks made before crops existed still resume."""
    dec = Unsup3DDecomposer(image_size=32, nets=(), **TINY)
    assert "input_crop" not in dec.get_config()
    cropped = Unsup3DDecomposer(image_size=32, nets=(), input_crop=(0, 0, 0.5, 0.5), **TINY)
    assert cropped.get_config()["input_crop"] == [0, 0, 0.5, 0.5]
    assert Unsup3DDecomposer(**cropped.get_config()).input_crop == (0, 0, 0.5, 0.5)


def test_train_decomposer_cli_with_a_crop_hands_it_to_decompose(tmp_path):
    out = tmp_path / "dec"
    result = cli(["train-decomposer", "synthetic", "--steps", "1", "--batch-size", "2", "--nf", "16", "--zdim", "32",
                  "--nf-small", "8", "--crop", "0.25,0.25,0.5,0.5", "--outdir", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    result = cli(["decompose", "synthetic", "--seeds", "0", "--decomposer", str(out / "checkpoint.pth"),
                  "--outdir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "d" / "decomposition.json").read_text())
    assert record["crop"] == [0.25, 0.25, 0.5, 0.5]
    # the labels are the decomposer's on the box of the whole image, cropped once (not once more by the labeler)
    from stylegan_disentangle.labels.decomposer import load_decomposer
    from stylegan_disentangle.latents import sample_latents
    from stylegan_disentangle.synthetic.checkpoint import load_synthetic

    G = load_synthetic()[0]
    img = G.synthesis(sample_latents(G, [0]).ws, noise_mode="const").float().clamp(-1, 1)
    dec = load_decomposer(out / "checkpoint.pth")
    want = DecomposerLabeler(dec, crop=(0, 0, 1, 1))(img[..., 8:24, 8:24])
    assert record["images"][0]["yaw"] == pytest.approx(float(want["yaw"][0]), abs=1e-4)
