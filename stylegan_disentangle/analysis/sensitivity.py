"""How strongly the generator's image responds to each direction of W: the mean Gram of its Jacobian.

`image_sensitivity(G, w)` estimates `M = E_w[J(w)^T J(w)] / P`, where `J = d image / d w` (one w broadcast to every
layer; images larger than `resolution` area-pooled to it; P the image's number of values), by forward differences
along each axis of W.
`u^T M u` is the mean squared pixel change per unit step along the unit vector `u`.

Why it is useful: a semantic read off the image (a decomposer's light angle, a classifier's score) depends on w only
through the image, so its gradient `J^T g` lies where M is large. A regression `label ~ w` on a finite bank also
picks up what the labeler's *errors* correlate with, and on the synthetic checkpoint most of that sits along
directions that barely change the image. Using M as the prior covariance of the coefficients (the generalized
ridge `||y - w b||^2 + alpha b^T M^+ b`, `ThreeDCoupledDirections.fit(..., w_metric=M)`) keeps the directions
where the generator actually draws something (BENCHMARKS.md, issue 11, eighteenth session).

`sensitivities(G, w)` also returns, from the same syntheses, the Gram `K` of the Jacobian of the image's
log-chromaticity: what white light never changes. It is the 3D-coupled light regressions' second prior
(`ThreeDCoupledDirections(chroma_alpha=...)`, BENCHMARKS.md, issue 11, twentieth session).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..directions._base import as_w
from ..errors import LatentError
from ..labels.base import check_crop, crop_images
from ..latents.sampling import synthesize_in_chunks

__all__ = ["CHROMA_EPS", "SENSITIVITY_SAMPLES", "image_sensitivity", "sensitivities"]

SENSITIVITY_SAMPLES = 16  # rows find-directions and the benches average over (see `image_sensitivity`'s `w`)
CHROMA_EPS = 0.05  # added to the linear intensity in [0, 1] before the log of `sensitivities`' chroma Jacobian


def _render(G: Any, w: torch.Tensor, resolution: int | None, noise_mode: str,
            crop: Sequence[float] | None = None) -> torch.Tensor:
    def reduce(images: torch.Tensor) -> torch.Tensor:  # per render chunk: full-size images never all held
        img = crop_images(images.float(), crop)
        if resolution is not None and max(img.shape[-2:]) > resolution:
            img = F.adaptive_avg_pool2d(img, resolution)
        return img.flatten(1)

    return synthesize_in_chunks(G, w.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode=noise_mode, force_fp32=True,
                                postprocess=reduce)


def image_sensitivity(G: Any, w: Any, resolution: int | None = 256, step: float = 0.05, batch_size: int = 256,
                      noise_mode: str = "const", progress: bool | None = True,
                      crop: Sequence[float] | None = None) -> np.ndarray:
    """Mean Gram `[w_dim, w_dim]` (float64, symmetric PSD) of the image's Jacobian with respect to w, over rows `w`.

    w : `[N, w_dim]` latents to average over. 16 rows give the 3D-coupled global directions within 0.006 |cos| of
        256 on the synthetic checkpoint; each row costs `w_dim + 1` syntheses (16 rows of a 512-wide W: about 40 %
        of a 20k bank's time).
    resolution : area-pool larger images to this size first (e.g. the decomposer's input size). The default 256
        keeps a row's `w_dim` differences of a 1024 px generator near 400 MB; None: the generator's own size.
    step : forward-difference step in W units.  noise_mode : 'const' or 'none' (random noise would differ between
        the two sides of a difference).  progress : tqdm bar (None: only on a terminal).
    crop : (top, left, height, width) as fractions of the image (`labels.crop_images`): the part of the image that
        counts, taken before the pooling (e.g. the face box a decomposer reads).
    """
    return sensitivities(G, w, resolution, step, batch_size, noise_mode, progress, crop, chroma=False)[0]


@torch.no_grad()
def sensitivities(G: Any, w: Any, resolution: int | None = 256, step: float = 0.05, batch_size: int = 256,
                  noise_mode: str = "const", progress: bool | None = True, crop: Sequence[float] | None = None,
                  chroma: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """`(image_sensitivity, chroma_sensitivity)` from the same syntheses (arguments as `image_sensitivity`).

    The chroma sensitivity `K` is the mean Gram of the Jacobian of the image's log-chromaticity: the log of each
    pixel's linear intensity ((img + 1) / 2 + `CHROMA_EPS`, so that dark pixels do not blow up) minus its mean over
    the colour channels. White light scales a pixel's channels alike, so a light change leaves it nearly unchanged,
    while a change of skin or hair colour does not: on the synthetic checkpoint `u^T K u / u^T M u` is 0.25-0.54
    for the true light and pose directions, 1.5-4.9 for skin and hair colour. None with `chroma=False` or for a
    generator that is not RGB.
    """
    w = w.detach().cpu().numpy() if isinstance(w, torch.Tensor) else np.asarray(w)
    if w.ndim != 2 or w.shape[0] == 0 or w.shape[1] != G.w_dim:
        raise LatentError(f"image_sensitivity needs w of shape [N, {G.w_dim}] with N >= 1, got {tuple(w.shape)}")
    w = torch.as_tensor(np.array(as_w(w, "image_sensitivity's w"), dtype=np.float32))  # as_w names NaN / inf
    if not step > 0:
        raise ValueError(f"step must be > 0, got {step!r}")
    if resolution is not None and (isinstance(resolution, bool) or int(resolution) != resolution or resolution < 1):
        raise ValueError(f"resolution must be an integer >= 1 or None, got {resolution!r}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    crop = check_crop(crop)
    if noise_mode == "random":  # each synthesis would draw new noise, and the differences would measure it
        raise ValueError("image_sensitivity needs the same noise on both sides of a difference: noise_mode 'const' "
                         "or 'none', not 'random'")
    device = next(G.parameters()).device
    d = G.w_dim
    chroma = bool(chroma) and int(getattr(G, "img_channels", 3)) == 3
    eye = torch.eye(d, device=device) * step
    gram = torch.zeros(d, d, dtype=torch.float64, device=device)
    chroma_gram = torch.zeros(d, d, dtype=torch.float64, device=device) if chroma else None
    per_batch = max(1, int(batch_size) // (d + 1))
    quiet = None if progress is None else not progress
    for i in tqdm(range(0, len(w), per_batch), desc="image sensitivity", disable=quiet):
        rows = w[i:i + per_batch].to(device)
        moved = (rows[:, None, :] + torch.cat([torch.zeros(1, d, device=device), eye])[None]).reshape(-1, d)
        out = torch.cat([_render(G, chunk, resolution, noise_mode, crop) for chunk in moved.split(int(batch_size))])
        out = out.reshape(len(rows), d + 1, -1)
        jac = (out[:, 1:] - out[:, :1]) / step  # [B, d, P] float32; its rounding is far below the prior's use
        gram += torch.einsum("bip,bjp->ij", jac, jac).double() / jac.shape[-1]
        if chroma_gram is not None:
            log = torch.log((out.clamp(-1, 1) + 1) / 2 + CHROMA_EPS).reshape(len(rows), d + 1, 3, -1)
            log = (log - log.mean(2, keepdim=True)).flatten(2)
            cjac = (log[:, 1:] - log[:, :1]) / step
            chroma_gram += torch.einsum("bip,bjp->ij", cjac, cjac).double() / cjac.shape[-1]
    return tuple(None if g is None else _symmetric(g / len(w)) for g in (gram, chroma_gram))


def _symmetric(gram: torch.Tensor) -> np.ndarray:
    g = gram.cpu().numpy()
    return (g + g.T) / 2
