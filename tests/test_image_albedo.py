"""The albedo read off the image (`reconstruction.image_albedo`): known answers through our own renderer, the
decomposer3d labeler's `image_albedo` label, and `ThreeDCoupledDirections(albedo_source=...)`."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylegan_disentangle.directions import ThreeDCoupledDirections
from stylegan_disentangle.errors import LatentError
from stylegan_disentangle.labels.decomposer.labeler import DecomposerLabeler
from stylegan_disentangle.labels.decomposer.model import Unsup3DDecomposer
from stylegan_disentangle.labels.decomposer.reconstruction import image_albedo, renderer_for
from stylegan_disentangle.labels.decomposer.renderer import hflip
from tests.three_d_helpers import best_abs_cos, planted, planted_part_masks

RES = 32


def _decomposer() -> Unsup3DDecomposer:
    torch.manual_seed(0)
    return Unsup3DDecomposer(image_size=RES, nf=16, zdim=16, nf_light=8, nf_view=8, nf_conf=16, zdim_conf=16).eval()


def _scene(yaw_deg: float, symmetric: bool = True):
    """A smooth head-like bump, a smooth albedo (mirror-symmetric or not) and a light; the render under yaw."""
    lin = torch.linspace(-1, 1, RES)
    v, u = torch.meshgrid(lin, lin, indexing="ij")
    depth = (1.1 - 0.15 * torch.exp(-(u**2 + v**2) / 0.5)).expand(2, 1, RES, RES).contiguous()
    albedo = torch.stack([0.6 * torch.cos(2.0 * u) * torch.cos(1.5 * v + k) for k in (0.0, 0.7, 1.4)])
    if not symmetric:
        albedo = albedo + 0.3 * torch.sin(2.0 * u)
    albedo = albedo.expand(2, 3, RES, RES).contiguous()
    light = torch.tensor([[0.4, 0.5, 0.3, -0.2], [0.3, 0.6, -0.4, 0.1]])
    view_rad = torch.zeros(2, 6)
    view_rad[:, 1] = np.deg2rad(yaw_deg)
    return depth, albedo, light, view_rad


def _render(dec, depth, albedo, light, view_rad):
    view = torch.cat([torch.rad2deg(view_rad[:, :3]), view_rad[:, 3:]], 1)
    return renderer_for(dec).render(depth, albedo, light, view)["image"]


def _out(depth, light, view_rad):
    return {"canon_depth": depth[:, 0], "light": light, "view": view_rad}


def test_the_identity_view_gives_back_the_albedo_exactly():
    """At the identity view every canonical pixel reads itself, so the image over the shading is the albedo (to
    float32 rounding of the shading's product and quotient); the one-pixel border, where the render's mask may
    drop, is left out."""
    dec = _decomposer()
    depth, albedo, light, view = _scene(0.0, symmetric=False)
    image = _render(dec, depth, albedo, light, view)
    got = image_albedo(dec, image, _out(depth, light, view), symmetric=False)
    assert got.shape == albedo.shape
    torch.testing.assert_close(got[..., 1:-1, 1:-1], albedo[..., 1:-1, 1:-1], atol=1e-5, rtol=0)


def test_a_turned_head_is_read_back_into_the_canonical_frame():
    """Under a 15 deg yaw the render samples the canonical image and the inversion samples the render: two bilinear
    reads. Per read the error is at most (|I_xx| + |I_yy|) / 8 (the canonical image's largest second differences
    around the face's middle, per pixel^2), stretched by 1 / cos(15 deg); dividing by the shading divides it by the
    smallest shading there. Inside the face's middle (no occlusion) the albedo comes back within that bound, per
    image; read as if frontal (no warp) it is further off than the bound."""
    dec = _decomposer()
    depth, albedo, light, view = _scene(15.0)
    image = _render(dec, depth, albedo, light, view)
    rendered = renderer_for(dec).render(depth, albedo, light, torch.cat([torch.rad2deg(view[:, :3]), view[:, 3:]], 1))
    canon = rendered["canon_image"][..., 8:24, 8:24]
    i_xx = (canon[..., 2:] - 2 * canon[..., 1:-1] + canon[..., :-2]).abs().amax(dim=(1, 2, 3))
    i_yy = (canon[..., 2:, :] - 2 * canon[..., 1:-1, :] + canon[..., :-2, :]).abs().amax(dim=(1, 2, 3))
    mid = (slice(None), slice(None), slice(10, 22), slice(10, 22))
    bound = 2 * (i_xx + i_yy) / 8 / np.cos(np.deg2rad(15.0)) / rendered["shading"][mid].amin(dim=(1, 2, 3))
    got = image_albedo(dec, image, _out(depth, light, view))
    frontal = image_albedo(dec, image, _out(depth, light, torch.zeros_like(view)))
    err = (got - albedo)[mid].abs().amax(dim=(1, 2, 3))
    assert (err < bound).all(), (err, bound)
    assert ((frontal - albedo)[mid].abs().amax(dim=(1, 2, 3)) > bound).all()


def test_the_symmetric_albedo_is_the_mean_with_its_mirror_image():
    dec = _decomposer()
    depth, albedo, light, view = _scene(10.0, symmetric=False)
    image = _render(dec, depth, albedo, light, view)
    one_sided = image_albedo(dec, image, _out(depth, light, view), symmetric=False)
    both = image_albedo(dec, image, _out(depth, light, view))
    torch.testing.assert_close(both, (one_sided + hflip(one_sided)) / 2)
    torch.testing.assert_close(both, hflip(both))
    assert both.min() >= -1 and both.max() <= 1


def test_the_labeler_gives_the_image_albedo_of_its_own_decomposition():
    dec = _decomposer()
    img = torch.rand(3, 3, 48, 48, generator=torch.Generator().manual_seed(1)) * 2 - 1
    lab = DecomposerLabeler(dec)
    labels = lab(img)
    assert "image_albedo" in lab.names and lab.value_ranges["image_albedo"] == (-1.0, 1.0)
    assert labels["image_albedo"].shape == (3, 3, RES, RES)
    with torch.no_grad():
        out = dec.decompose(img)
        want = image_albedo(dec, img, out)
    # the labeler's channels-last convolutions round differently (~1e-6), and the division by the shading (>= 0.05)
    # magnifies that up to 20 times
    torch.testing.assert_close(labels["image_albedo"], want, atol=1e-4, rtol=0)
    assert "image_albedo" not in DecomposerLabeler(dec, maps=False).names


def _planted_with_a_blind_net():
    """The planted problem of the 3D-coupled tests, where the image's albedo holds the planted albedo atoms and
    netA's `albedo` misses them (noise that does not move with w)."""
    w, labels, m, g, atoms_true = planted()
    rng = np.random.default_rng(5)
    blind = (0.1 + 0.05 * rng.standard_normal(labels["albedo"].shape)).astype(np.float32)
    return w, {**labels, "image_albedo": labels["albedo"], "albedo": blind}, m, atoms_true


def _fit(source: str, w, labels):
    return ThreeDCoupledDirections(n_atoms=2, atom_scope="map", code_alpha=0.05, albedo_source=source,
                                   random_state=0).fit(w, labels, part_masks=planted_part_masks())


def test_the_albedo_atoms_come_from_the_image_albedo_when_the_labels_have_one():
    w, labels, m, atoms_true = _planted_with_a_blind_net()
    auto = _fit("auto", w, labels)
    assert auto.albedo_source_ == "image"
    assert best_abs_cos(auto.atoms_["albedo"], np.stack(atoms_true["albedo"])).min() >= 0.99
    local = [k for k, kind in enumerate(auto.kinds_) if kind == "albedo"]
    assert len(local) == 2 and all(auto.names_[k].startswith("albedo_") for k in local)
    assert best_abs_cos(auto.directions_[local], m[2:]).min() >= 0.99
    np.testing.assert_array_equal(_fit("image", w, labels).directions_, auto.directions_)
    # netA's blind albedo finds no planted atom (its codes do not move with w)
    net = _fit("net", w, labels)
    assert net.albedo_source_ == "net"
    net_local = [k for k, kind in enumerate(net.kinds_) if kind == "albedo"]
    assert not net_local or best_abs_cos(net.directions_[net_local], m[2:]).max() < 0.5
    # without an image albedo, 'auto' is netA's: the planted problem as it always was
    plain = {k: v for k, v in labels.items() if k != "image_albedo"}
    assert _fit("auto", w, {**plain, "albedo": labels["image_albedo"]}).albedo_source_ == "net"


def test_asking_for_the_image_albedo_without_one_is_refused_by_name():
    w, labels, _, _ = _planted_with_a_blind_net()
    del labels["image_albedo"]
    with pytest.raises(LatentError, match="image_albedo"):
        _fit("image", w, labels)
    with pytest.raises(ValueError, match="albedo_source"):
        _fit("photo", w, labels)
    # no albedo atoms asked for: nothing to choose, nothing refused
    depth_only = ThreeDCoupledDirections(map_labels=("depth",), n_atoms=2, atom_scope="map", albedo_source="image",
                                         random_state=0).fit(w, labels, part_masks=planted_part_masks())
    assert depth_only.albedo_source_ is None and "albedo" not in depth_only.kinds_
