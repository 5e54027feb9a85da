"""Labelers: known answers of the image statistics, the registry, and plugging in one's own classifier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stylegan_disentangle.labels import (
    ImageStatsLabeler,
    Labeler,
    LabelerError,
    apply_labeler,
    available_labelers,
    combine_labelers,
    get_labeler,
    get_labelers,
    labeler_from_callable,
    register_labeler,
    unregister_labeler,
)


def _img(unit: torch.Tensor) -> torch.Tensor:
    """[C, H, W] in [0, 1] -> one generator-style image [1, C, H, W] in [-1, 1]."""
    return unit[None] * 2 - 1


def test_uniform_gray_has_known_brightness_and_no_asymmetry():
    out = ImageStatsLabeler()(_img(torch.full((3, 8, 8), 0.25)))
    assert out["brightness"].item() == pytest.approx(0.25, abs=1e-6)
    assert out["contrast"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["asymmetry_lr"].item() == pytest.approx(0.0, abs=1e-7)
    assert out["com_x"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["com_y"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["saturation"].item() == pytest.approx(0.0, abs=1e-7)


def test_left_bright_image_has_positive_asymmetry_and_light_left_of_centre():
    unit = torch.zeros(3, 8, 8)
    unit[:, :, :4] = 1.0  # left half white, right half black
    out = ImageStatsLabeler()(_img(unit))
    assert out["asymmetry_lr"].item() == pytest.approx(1.0, abs=1e-6)
    # pixel centres of the left half have x = -7/8, -5/8, -3/8, -1/8: mean -0.5
    assert out["com_x"].item() == pytest.approx(-0.5, abs=1e-6)
    assert out["com_y"].item() == pytest.approx(0.0, abs=1e-6)
    assert out["brightness"].item() == pytest.approx(0.5, abs=1e-6)
    assert out["contrast"].item() == pytest.approx(0.5, abs=1e-6)


def test_bottom_bright_image_has_positive_com_y():
    unit = torch.zeros(3, 8, 8)
    unit[:, 6:, :] = 1.0  # bottom two rows: y = 5/8 and 7/8
    out = ImageStatsLabeler(names=["com_y", "com_x"])(_img(unit))
    assert list(out) == ["com_y", "com_x"]
    assert out["com_y"].item() == pytest.approx(0.75, abs=1e-6)


def test_pure_red_image_colour_and_saturation():
    unit = torch.zeros(3, 4, 4)
    unit[0] = 1.0
    out = ImageStatsLabeler()(_img(unit))
    assert (out["color_r"].item(), out["color_g"].item(), out["color_b"].item()) == pytest.approx((1.0, 0.0, 0.0))
    assert out["saturation"].item() == pytest.approx(1.0)
    assert out["brightness"].item() == pytest.approx(0.299, abs=1e-6)


def test_grayscale_black_image_and_batch_shape():
    img = -torch.ones(5, 1, 8, 8)
    out = ImageStatsLabeler()(img)
    assert all(v.shape == (5,) for v in out.values())
    assert out["com_x"].abs().max().item() == 0.0 and out["brightness"].max().item() == 0.0


def test_values_are_clamped_into_the_stated_ranges():
    lab = ImageStatsLabeler()
    out = lab(torch.randn(16, 3, 8, 8) * 5)  # generators overshoot [-1, 1]
    for name, (lo, hi) in lab.value_ranges.items():
        assert out[name].min().item() >= lo - 1e-6 and out[name].max().item() <= hi + 1e-6, name


def test_unknown_statistic_is_an_error():
    with pytest.raises(LabelerError, match="no statistic.*'smile'"):
        ImageStatsLabeler(names=["smile"])


def test_registry_builtin_unknown_and_user_entries():
    assert "image_stats" in available_labelers()
    lab = get_labeler("image_stats", names=["brightness"])
    assert isinstance(lab, Labeler) and lab.names == ["brightness"] and lab.input_resolution is None
    with pytest.raises(LabelerError, match="unknown labeler 'nope'.*image_stats"):
        get_labeler("nope")
    register_labeler("test_const", lambda value=1.0: labeler_from_callable(
        lambda img: torch.full([img.shape[0]], value), "const"))
    try:
        with pytest.raises(LabelerError, match="already registered"):
            register_labeler("test_const", lambda: None)
        assert get_labeler("test_const", value=3.0)(torch.zeros(2, 3, 4, 4))["const"].tolist() == [3.0, 3.0]
    finally:
        unregister_labeler("test_const")
    assert "test_const" not in available_labelers()


def test_module_attribute_spec_loads_a_factory_without_registration():
    lab = get_labeler("stylegan_disentangle.labels.image_stats:ImageStatsLabeler", names=["com_x"])
    assert lab.names == ["com_x"]
    with pytest.raises(LabelerError, match="cannot import"):
        get_labeler("no_such_module_xyz:make")


def test_get_labelers_parses_comma_lists():
    assert get_labelers("none") is None and get_labelers("") is None
    assert isinstance(get_labelers("image_stats"), ImageStatsLabeler)
    with pytest.raises(LabelerError, match="duplicate"):
        get_labelers("image_stats, image_stats")


class _TinyClassifier(nn.Module):
    """Two 'attributes': mean of the red and of the blue channel, via a 1x1 conv (a stand-in for a real net)."""

    def __init__(self) -> None:
        super().__init__()
        self.drop = nn.Dropout(0.5)
        self.seen_shape = None

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        self.seen_shape = tuple(img.shape)
        return self.drop(img[:, [0, 2]].mean(dim=(2, 3)))


def test_module_classifier_becomes_a_labeler_in_one_line():
    net = _TinyClassifier().train()
    lab = labeler_from_callable(net, ["red", "blue"], input_resolution=4, preprocess="unit")
    img = _img(torch.stack([torch.ones(8, 8), torch.zeros(8, 8), torch.full((8, 8), 0.5)]))
    out = apply_labeler(lab, img.repeat(3, 1, 1, 1))
    assert net.seen_shape == (3, 3, 4, 4)  # resized to the declared input resolution
    assert out["red"].tolist() == pytest.approx([1.0] * 3)  # eval mode: dropout off
    assert out["blue"].tolist() == pytest.approx([0.5] * 3)
    assert net.training  # the module's own mode is restored


def test_wrong_output_shape_and_nan_are_clear_errors():
    lab = labeler_from_callable(lambda img: torch.zeros(img.shape[0], 3), ["a", "b"])
    with pytest.raises(LabelerError, match=r"\[N, 2\]"):
        lab(torch.zeros(2, 3, 4, 4))
    nan = labeler_from_callable(lambda img: torch.full([img.shape[0]], float("nan")), "x")
    with pytest.raises(LabelerError, match="'x'.*NaN"):
        apply_labeler(nan, torch.zeros(2, 3, 4, 4))
    short = labeler_from_callable(lambda img: torch.zeros(1), "y")
    with pytest.raises(LabelerError, match=r"expected \[2, \.\.\.\]"):
        apply_labeler(short, torch.zeros(2, 3, 4, 4))


def test_ws_labeler_and_combination():
    ws_lab = labeler_from_callable(lambda img, ws: ws[:, 0, 0], "w0", needs_ws=True, needs_images=False)
    both = combine_labelers([ImageStatsLabeler(names=["brightness"]), ws_lab])
    assert both.names == ["brightness", "w0"] and both.needs_ws and both.needs_images
    ws = torch.arange(6.0).reshape(2, 1, 3)
    out = apply_labeler(both, torch.zeros(2, 3, 4, 4), ws)
    assert out["w0"].tolist() == [0.0, 3.0] and out["brightness"].tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(LabelerError, match="needs ws"):
        apply_labeler(ws_lab, torch.zeros(2, 3, 4, 4))
    with pytest.raises(LabelerError, match="duplicate"):
        combine_labelers([ImageStatsLabeler(names=["brightness"]), ImageStatsLabeler(names=["brightness"])])
