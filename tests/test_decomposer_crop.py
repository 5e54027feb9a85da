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
