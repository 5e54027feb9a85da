"""`decompose-images`: image files read back exactly, cut to their central square, decomposed as `decompose` does
generated faces; unreadable inputs named."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels.decomposer import DecomposerLabeler, Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.labeler import load_decomposer
from stylegan_disentangle.utils.images import image_files, load_images, save_png, to_uint8
from tests.three_d_helpers import cli

TINY = dict(nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16)


@pytest.fixture(scope="module")
def decomposer_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dec") / "dec.pth"
    Unsup3DDecomposer(image_size=32, **TINY).save(path)
    return path


def _faces(n: int = 3, size: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    return torch.rand([n, 3, size, size], generator=g) * 2 - 1


def test_png_files_at_the_decomposers_size_load_exactly(tmp_path):
    img = _faces()
    pixels = to_uint8(img)
    for i in range(len(pixels)):
        save_png(pixels[i], tmp_path / f"{i}.png")
    files = image_files([tmp_path])
    assert [f.name for f in files] == ["0.png", "1.png", "2.png"]
    loaded = load_images(files, 32)
    assert torch.equal(loaded, torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0)


def test_a_wide_image_keeps_its_central_square(tmp_path):
    """48 x 32 pixels (wide x high): a 16-pixel red band on each side of a 16-pixel green centre; the central
    32 x 32 square holds 8 red columns on each side of the green, and resized to 16 pixels, 4 on each side."""
    array = np.zeros([32, 48, 3], np.uint8)
    array[:, :16, 0] = array[:, 32:, 0] = 255
    array[:, 16:32, 1] = 255
    Image.fromarray(array).save(tmp_path / "wide.png")
    loaded = load_images([tmp_path / "wide.png"], 16)[0]
    assert loaded.shape == (3, 16, 16)
    # Lanczos-3 at a 2:1 reduction reads 3 output pixels each way; where all of them are one colour the weights
    # (summing to 1) give that colour back, up to the uint8 rounding of the output
    tol = 1 / 127.5 + 1e-6
    green, red = loaded[:, :, 7:9], loaded[:, :, :1]  # green columns 4-11, red 0-3 (and 12-15)
    assert torch.allclose(green[1], torch.ones_like(green[1]), atol=tol)
    assert torch.allclose(green[0], -torch.ones_like(green[0]), atol=tol)
    assert torch.allclose(red[0], torch.ones_like(red[0]), atol=tol)  # the red bands' inner halves made it in
    assert torch.allclose(red[1], -torch.ones_like(red[1]), atol=tol)


def test_sixteen_bit_grey_and_float_images_keep_their_grey_levels(tmp_path):
    """A 16-bit grey PNG (PIL mode I;16) reads as its levels over 257, not clipped to white; a float TIFF in [0, 1]
    as its levels times 255."""
    levels = np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 256  # 0 .. 65280
    Image.fromarray(levels).save(tmp_path / "grey16.png")  # uint16: mode I;16
    Image.fromarray(levels.astype(np.float32) / 65535).save(tmp_path / "grey.tiff")  # float32: mode F
    expected = torch.from_numpy(np.rint(levels / 257).astype(np.float32)) / 127.5 - 1.0
    for name in ("grey16.png", "grey.tiff"):
        loaded = load_images([tmp_path / name], 16)[0]
        assert torch.allclose(loaded, expected.expand(3, -1, -1), atol=1 / 127.5 + 1e-6), name


def test_exif_orientation_is_applied(tmp_path):
    """A photo stored sideways with EXIF orientation 6 (shown turned 90 degrees clockwise) loads upright."""
    upright = np.zeros([16, 16, 3], np.uint8)
    upright[:4] = 255  # a white band at the top of the upright picture
    stored = np.rot90(upright, 1)  # the sensor's frame: turning it clockwise gives the upright picture
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(stored)).save(tmp_path / "phone.png", exif=exif)
    loaded = load_images([tmp_path / "phone.png"], 16)[0]
    assert loaded[:, :4].min() > 0.99 and loaded[:, 6:].max() < -0.99


def test_cli_decomposes_image_files_as_the_labeler_does(tmp_path, decomposer_path):
    img = _faces()
    pixels = to_uint8(img)
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(len(pixels)):
        save_png(pixels[i], folder / f"face{i}.png")
    (folder / "notes.txt").write_text("not an image, and not read: folders are read for image suffixes only")
    result = cli(["decompose-images", str(folder), "--decomposer", str(decomposer_path), "--outdir",
                  str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "decomposition.json").read_text())
    assert record["command"] == "decompose-images" and record["resized_to"] == 32
    assert [r["file"] for r in record["images"]] == [str(folder / f"face{i}.png") for i in range(3)]
    dec = load_decomposer(str(decomposer_path))
    expected = DecomposerLabeler(dec)(torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0)
    for i, entry in enumerate(record["images"]):
        for name in ("yaw", "pitch", "roll", "light_azimuth", "light_elevation", "light_ambient"):
            assert entry[name] == float(expected[name][i]), (i, name)  # the same float32, written as a double
    maps = np.load(tmp_path / "out" / "maps.npz")
    assert maps["files"].tolist() == [r["file"] for r in record["images"]]
    np.testing.assert_array_equal(maps["depth"], expected["depth"].numpy())
    assert (tmp_path / "out" / "decomposition.png").stat().st_size > 0


def test_cli_with_a_crop_reads_the_images_large_enough_for_the_box(tmp_path, decomposer_path):
    save_png(to_uint8(_faces(1, 64))[0], tmp_path / "big.png")
    result = cli(["decompose-images", str(tmp_path / "big.png"), "--decomposer", str(decomposer_path), "--crop",
                  "0.25,0.25,0.5,0.5", "--outdir", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "decomposition.json").read_text())
    assert record["resized_to"] == 64 and record["crop"] == [0.25, 0.25, 0.5, 0.5]


def test_bad_inputs_are_named_and_nothing_is_written(tmp_path, decomposer_path):
    (tmp_path / "fake.png").write_bytes(b"\x89PNG but then nothing")
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "fake.png")], "fake.png: not a readable image"),
             ([str(tmp_path / "empty")], "empty: a folder with no images"),
             ([str(tmp_path / "missing.png")], "missing.png: no such file or folder")]
    for paths, message in cases:
        result = cli(["decompose-images", *paths, "--decomposer", str(decomposer_path), "--outdir",
                      str(tmp_path / "out")])
        assert result.exit_code == 1 and message in result.output, result.output
        assert "Traceback" not in result.output and not (tmp_path / "out").exists()
    with pytest.raises(StyleGANDisentangleError, match="no images given"):
        image_files([])


def test_the_picture_shows_the_first_rows_and_the_numbers_every_image(tmp_path, decomposer_path, monkeypatch):
    """A folder of many images would make a figure too tall to render: decomposition.png draws the first
    PICTURE_ROWS, the JSON and the NPZ hold every image."""
    import stylegan_disentangle.cli_decomposer as module

    monkeypatch.setattr(module, "PICTURE_ROWS", 2)
    pixels = to_uint8(_faces(5))
    for i in range(5):
        save_png(pixels[i], tmp_path / f"f{i}.png")
    result = cli(["decompose-images", str(tmp_path), "--decomposer", str(decomposer_path), "--outdir",
                  str(tmp_path / "out")])
    assert result.exit_code == 0 and "for 5 images (the picture shows the first 2)" in result.output, result.output
    assert len(json.loads((tmp_path / "out" / "decomposition.json").read_text())["images"]) == 5
    assert np.load(tmp_path / "out" / "maps.npz")["depth"].shape[0] == 5
    rows_2 = Image.open(tmp_path / "out" / "decomposition.png").size[1]
    monkeypatch.setattr(module, "PICTURE_ROWS", 3)
    assert cli(["decompose-images", str(tmp_path), "--decomposer", str(decomposer_path), "--outdir",
                str(tmp_path / "out3")]).exit_code == 0
    assert Image.open(tmp_path / "out3" / "decomposition.png").size[1] > rows_2  # one row taller
