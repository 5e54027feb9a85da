"""LabelCalibration: known-answer affine fits, bad input named, NPZ reading (calibrated export: test_augmentation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from stylegan_disentangle.errors import StyleGANDisentangleError
from stylegan_disentangle.labels.calibration import (
    LabelCalibration,
    fit_label_calibration,
    load_calibration_images,
)


class MeanRedLabeler:
    """'yaw' = mean of the red channel: a labeler of images whose value is known for constructed images."""

    needs_ws = False
    needs_images = True
    names = ["yaw", "other"]

    def __call__(self, img, ws=None):
        return {"yaw": img[:, 0].mean(dim=(1, 2)), "other": img[:, 1].mean(dim=(1, 2))}


def test_fit_recovers_an_exact_affine_relation():
    x = np.linspace(-20, 20, 41)
    cal = LabelCalibration("yaw").fit(x, 1.56 * x - 2.0)
    # exact data: the least-squares solution is exact up to float64 rounding of sums of ~40 terms of size ~1e3
    assert cal.slope_ == pytest.approx(1.56, abs=1e-12) and cal.intercept_ == pytest.approx(-2.0, abs=1e-10)
    assert cal.r_ == pytest.approx(1.0, abs=1e-12) and cal.residual_std_ < 1e-10
    assert cal.reference_range_ == pytest.approx((1.56 * -20 - 2.0, 1.56 * 20 - 2.0))
    np.testing.assert_allclose(cal.transform([0.0, 10.0]), [-2.0, 13.6], atol=1e-10)
    again = LabelCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    np.testing.assert_array_equal(again.transform(x), cal.transform(x))
    assert "1.56" in repr(cal)


def test_noisy_fit_reports_r_and_residual():
    rng = np.random.default_rng(0)
    x = rng.normal(size=5000)
    noise = 0.3 * rng.normal(size=5000)
    cal = LabelCalibration("yaw").fit(x, 2.0 * x + noise)
    # slope error ~ 0.3 / sqrt(5000) = 0.004 (one standard error); 5 of them
    assert abs(cal.slope_ - 2.0) < 0.025
    assert cal.residual_std_ == pytest.approx(0.3, rel=0.05)
    assert cal.r_ == pytest.approx(2.0 / np.sqrt(4.0 + 0.09), abs=0.01)


@pytest.mark.parametrize("x, y, match", [
    ([1.0, 2.0], [1.0, 2.0], "at least 3"),
    ([1.0, 2.0, np.nan], [1.0, 2.0, 3.0], "NaN"),
    ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], "constant"),
    ([1.0, 2.0, 3.0], [1.0, 2.0], "reference values"),
])
def test_bad_values_are_named(x, y, match):
    with pytest.raises(StyleGANDisentangleError, match=match):
        LabelCalibration("yaw").fit(x, y)


def test_unfitted_calibration_refuses_to_transform():
    with pytest.raises(StyleGANDisentangleError, match="not fitted"):
        LabelCalibration("yaw").transform([1.0])


def test_fit_label_calibration_labels_the_images():
    red = torch.linspace(-0.8, 0.8, 9)
    img = torch.zeros(9, 3, 8, 8) + red[:, None, None, None]
    cal = fit_label_calibration(MeanRedLabeler(), img, 45.0 * red.numpy() + 1.0, "yaw", batch_size=4)
    assert cal.slope_ == pytest.approx(45.0, rel=1e-5) and cal.intercept_ == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(StyleGANDisentangleError, match="no label 'pitch'"):
        fit_label_calibration(MeanRedLabeler(), img, red.numpy(), "pitch")


def test_load_calibration_images_reads_uint8_and_float(tmp_path):
    u8 = np.full((4, 8, 8, 3), 255, np.uint8)
    np.savez(tmp_path / "a.npz", images=u8, yaw=np.arange(4.0))
    img, values = load_calibration_images(tmp_path / "a.npz", "yaw")
    assert img.shape == (4, 3, 8, 8) and torch.allclose(img, torch.ones_like(img))
    np.testing.assert_array_equal(values, np.arange(4.0))
    np.savez(tmp_path / "b.npz", images=-np.ones((4, 3, 8, 8), np.float32), yaw=np.arange(4.0))
    assert torch.equal(load_calibration_images(tmp_path / "b.npz", "yaw")[0], -torch.ones(4, 3, 8, 8))


def test_load_calibration_images_names_the_problem(tmp_path):
    np.savez(tmp_path / "nolabel.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(StyleGANDisentangleError, match="nolabel.npz has no array 'yaw'"):
        load_calibration_images(tmp_path / "nolabel.npz", "yaw")
    np.savez(tmp_path / "shape.npz", images=np.zeros((2, 8, 8), np.uint8), yaw=np.zeros(2))
    with pytest.raises(StyleGANDisentangleError, match="shape.npz: 'images' must be"):
        load_calibration_images(tmp_path / "shape.npz", "yaw")
    np.savez(tmp_path / "count.npz", images=np.zeros((2, 8, 8, 3), np.uint8), yaw=np.zeros(3))
    with pytest.raises(StyleGANDisentangleError, match="2 images but 3 values"):
        load_calibration_images(tmp_path / "count.npz", "yaw")
    np.savez(tmp_path / "whole.npz", images=np.zeros((2, 8, 8, 3), np.uint8), yaw=np.zeros(2))
    (tmp_path / "broken.npz").write_bytes((tmp_path / "whole.npz").read_bytes()[:100])  # truncated
    with pytest.raises(StyleGANDisentangleError, match="broken.npz: not a readable"):
        load_calibration_images(tmp_path / "broken.npz", "yaw")

    np.save(tmp_path / "one.npy", np.zeros((2, 8, 8, 3), np.uint8))  # a .npy holds one unnamed array
    with pytest.raises(StyleGANDisentangleError, match=r"one.npy: not a readable .npz of labelled images \(it holds "
                                                       r"one ndarray"):
        load_calibration_images(tmp_path / "one.npy", "yaw")
    np.savez(tmp_path / "empty.npz", images=np.zeros((0, 8, 8, 3), np.uint8), yaw=np.zeros(0))
    with pytest.raises(StyleGANDisentangleError, match="empty.npz: 'images' holds no images"):
        load_calibration_images(tmp_path / "empty.npz", "yaw")
    np.savez(tmp_path / "words.npz", images=np.zeros((2, 8, 8, 3), np.uint8), yaw=np.array(["left", "right"]))
    with pytest.raises(StyleGANDisentangleError, match=r"words.npz: the array 'yaw' holds <U5 values"):
        load_calibration_images(tmp_path / "words.npz", "yaw")
    np.savez(tmp_path / "bytes.npz", images=np.full((2, 3, 8, 8), 200.0, np.float32), yaw=np.zeros(2))
    with pytest.raises(StyleGANDisentangleError, match=r"bytes.npz: float 'images' must be in \[-1, 1\]; they "
                                                       r"reach 200"):
        load_calibration_images(tmp_path / "bytes.npz", "yaw")
