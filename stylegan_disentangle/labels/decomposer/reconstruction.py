"""One Unsup3D forward pass: decompose images, render them back (and their mirror twins), and the photometric loss.

The official model (Wu et al., CVPR 2020) explains an image by canonical depth d, albedo a, light l and view v,
renders `I(d, a, l, v)` and, assuming a left-right symmetric face, also `I(flip d, flip a, l, v)`; both must match
the input where both renders are valid. The confidence maps sigma turn the L1 error into the negative
log-likelihood of a Laplacian, `sqrt(2) |x - y| / sigma + log sigma`, so the network may down-weight pixels it
cannot explain (hair, background, asymmetric details).
"""

from __future__ import annotations

import math

import torch

from .model import Unsup3DDecomposer
from .renderer import Renderer, with_flip

__all__ = ["EPS", "MIN_SHADING", "image_albedo", "photometric_loss", "reconstruct", "reconstruction_loss",
           "renderer_for", "view_degrees"]

EPS = 1e-7  # the official constant inside the confidence terms
MIN_SHADING = 0.05  # `image_albedo` divides by the shading clamped to this (a pixel in shadow holds no albedo)


def photometric_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                     conf_sigma: torch.Tensor | None = None) -> torch.Tensor:
    """Masked mean of |pred - target|, or of the Laplacian NLL `sqrt(2)|x - y| / sigma + log sigma` with `conf_sigma`.

    pred, target [N, C, H, W]; mask [N, 1, H, W] (0/1); conf_sigma [N, 1, H, W] > 0 (broadcast over C).
    """
    loss = (pred - target).abs()
    if conf_sigma is not None:
        loss = loss * math.sqrt(2) / (conf_sigma + EPS) + (conf_sigma + EPS).log()
    mask = mask.expand_as(loss)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def renderer_for(decomposer: Unsup3DDecomposer) -> Renderer:
    """The renderer with the decomposer's camera and depth range."""
    return Renderer(fov=decomposer.fov, min_depth=decomposer.min_depth, max_depth=decomposer.max_depth)


def view_degrees(view: torch.Tensor) -> torch.Tensor:
    """The decomposer's view [N, 6] (rotations in radians, as the official model) -> the renderer's (degrees)."""
    return torch.cat([torch.rad2deg(view[:, :3]), view[:, 3:]], 1)


def reconstruct(decomposer: Unsup3DDecomposer, img: torch.Tensor, renderer: Renderer | None = None,
                flip: bool = True, detach_light: bool = False) -> dict[str, torch.Tensor]:
    """Decompose `img` [N, 3, H, W] in [-1, 1] and render it back (differentiable).

    Returns the decomposition (see `Unsup3DDecomposer.decompose`) plus: `input` [N, 3, R, R] (resized input),
    `recon` [N, 3, R, R] the render, `recon_flip` [N, 3, R, R] the render of the mirrored depth and albedo (when
    `flip`), `mask` [N, 1, R, R] where every render is valid (no gradient), `recon_depth` [N, 1, R, R] and
    `view_deg` [N, 6] (rotations in degrees). `detach_light` renders with the light cut from the graph (the
    render's loss then trains the other nets only; netL learns from what else the caller adds).
    """
    renderer = renderer or renderer_for(decomposer)
    x = decomposer.prepare(img)
    out = decomposer.decompose(x)
    n = x.shape[0]
    depth, albedo = out["canon_depth"].unsqueeze(1), out["canon_albedo"]
    light, view = out["light"], view_degrees(out["view"])
    if detach_light:
        light = light.detach()
    if flip:
        depth, albedo, light, view = with_flip(depth), with_flip(albedo), light.repeat(2, 1), view.repeat(2, 1)
    rendered = renderer.render(depth, albedo, light, view)
    mask = rendered["mask"]
    if flip:
        mask = (mask[:n] * mask[n:]).repeat(2, 1, 1, 1)
    image = rendered["image"] * mask
    out.update(input=x, recon=image[:n], mask=mask[:n].detach(), recon_depth=rendered["recon_depth"][:n],
               view_deg=view[:n], canon_normal=rendered["canon_normal"][:n], shading=rendered["shading"][:n])
    if flip:
        out["recon_flip"] = image[n:]
    return out


def reconstruction_loss(out: dict[str, torch.Tensor], lam_flip: float = 0.5) -> dict[str, torch.Tensor]:
    """The official photometric objective of a `reconstruct(..., flip=True)` result (with its confidence maps when
    the decomposer has netC): {'l1': ..., 'l1_flip': ..., 'total': l1 + lam_flip * l1_flip}."""
    conf = out.get("conf_sigma_l1")
    x, mask = out["input"], out["mask"]
    l1 = photometric_loss(out["recon"], x, mask, None if conf is None else conf[:, :1])
    l1_flip = photometric_loss(out["recon_flip"], x, mask, None if conf is None else conf[:, 1:])
    return {"l1": l1, "l1_flip": l1_flip, "total": l1 + lam_flip * l1_flip}


def image_albedo(decomposer: Unsup3DDecomposer, img: torch.Tensor, out: dict[str, torch.Tensor],
                 renderer: Renderer | None = None, symmetric: bool = True) -> torch.Tensor:
    """The albedo the image itself shows, by inverting the render with the decomposer's own shape, view and light:
    [N, 3, R, R] in [-1, 1].

    `img` [N, 3, H, W] in [-1, 1] is read back into the canonical frame where the canonical depth
    (`out['canon_depth']`), moved by the view (`out['view']`, radians as `decompose` gives it), projects each
    canonical pixel (`Renderer.forward_warp_grid`), and divided by the canonical shading of that depth under
    `out['light']` (clamped to `MIN_SHADING`). With `symmetric` it is averaged with its mirror image, as the
    Unsup3D model takes the canonical face to be symmetric. netA's albedo is a learned guess from the whole face;
    this one keeps what the pixels show, so small parts (eyes, brows, nose) move in it with the image, while it
    also keeps whatever the shading does not explain. Pixels that project outside the image read 0 (mid-grey).
    """
    renderer = renderer or renderer_for(decomposer)
    x = decomposer.prepare(img)
    depth = out["canon_depth"].unsqueeze(1)
    view = view_degrees(out["view"])
    canonical = renderer.sample(x, renderer.forward_warp_grid(depth, view))
    shading = renderer.shade(renderer.normals_from_depth(depth), out["light"]).clamp_min(MIN_SHADING)
    albedo = (((canonical + 1) / 2) / shading * 2 - 1).clamp(-1, 1)
    return (albedo + albedo.flip(3)) / 2 if symmetric else albedo
