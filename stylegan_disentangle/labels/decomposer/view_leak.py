"""How much of the view a decomposer's light readings take in, measured on its own re-renders (no labels needed).

In the Unsup3D image model, as in the synthetic world, the light lives in the face's canonical frame: turning or
nodding the head leaves it where it was. A netL that reads a nod as light from above (BENCHMARKS.md, issue 10,
twenty-seventh session) breaks that, and its elevation reading then carries part of the pitch. The decomposer can
measure this itself: re-render each face's estimate under its own light with one rotation moved a little, read the
render again, and see how the light readings move with the rotation readings. The slopes are what
`ThreeDCoupledDirections.fit(label_leaks=...)` subtracts from the light labels before its regressions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ...errors import StyleGANDisentangleError
from .light_teacher import LIGHT_LABELS
from .model import Unsup3DDecomposer
from .scenes import nudged_view_scene

__all__ = ["MIN_FOLLOW", "ROTATION_LABELS", "VIEW_LEAK_DELTA", "VIEW_LEAK_SAMPLES", "ViewLeakError", "leak_slopes",
           "measure_view_leak"]

ROTATION_LABELS = ("pitch", "yaw", "roll")  # the view's rx, ry, rz, in the labeler's names
VIEW_LEAK_DELTA = 5.0  # degrees each rotation is moved by, both ways (central differences)
VIEW_LEAK_SAMPLES = 512  # faces find-directions and the benches measure it on (slopes within 0.01 of 2000 faces')
MIN_FOLLOW = 0.1  # the least a rotation reading must move per rendered degree (J_R's smallest singular value)


class ViewLeakError(StyleGANDisentangleError):
    """The decomposer cannot measure its view leak: its rotation readings do not follow its own re-renders."""


def leak_slopes(light_jacobian: np.ndarray, rotation_jacobian: np.ndarray) -> np.ndarray:
    """[L, 3] slopes of the light readings on the rotation readings, from the Jacobians of the light readings
    [L, 3] and of the rotation readings [3, 3] with respect to the rendered rotations: J_L J_R^-1 (a nudge of the
    pitch also moves the yaw and roll readings a little; the inverse undoes that cross-talk)."""
    j_l, j_r = np.asarray(light_jacobian, dtype=np.float64), np.asarray(rotation_jacobian, dtype=np.float64)
    if j_r.shape != (3, 3) or j_l.ndim != 2 or j_l.shape[1] != 3:
        raise StyleGANDisentangleError(f"leak_slopes needs J_L [L, 3] and J_R [3, 3], got {j_l.shape}, {j_r.shape}")
    if not (np.isfinite(j_l).all() and np.isfinite(j_r).all()) or np.linalg.svd(j_r, compute_uv=False)[-1] < MIN_FOLLOW:
        raise ViewLeakError("the decomposer's rotation readings do not follow its re-rendered rotations (J_R = "
                            f"{np.round(j_r, 4).tolist()}; an untrained netV?): no view leak can be measured")
    return np.linalg.solve(j_r.T, j_l.T).T


@torch.no_grad()
def measure_view_leak(dec: Unsup3DDecomposer, x: torch.Tensor,
                      decompose: Callable[[torch.Tensor, list[str]], dict[str, torch.Tensor]],
                      delta: float = VIEW_LEAK_DELTA, batch_size: int = 256) -> dict[str, dict[str, float]]:
    """{light label: {rotation label: slope}}: how far each light reading moves per degree (per unit, for the
    ambient and diffuse) of each rotation reading when only the view changes.

    `x` are the images as the nets read them (prepared, cropped); `decompose(batch, parts)` decomposes them as the
    labeler does (its light mask). Each image's estimate is re-rendered under its own light with one rotation at a
    time moved by +-`delta` degrees (`scenes.nudged_view_scene`) and decomposed again; central differences averaged
    over the images give the Jacobians, and `leak_slopes` the slopes. A decomposer whose light ignores the view
    gives slopes near 0."""
    from .labeler import scalar_labels  # the labeler imports this module

    delta = float(delta)
    if not (np.isfinite(delta) and delta > 0):
        raise StyleGANDisentangleError(f"view leak: delta must be a positive number of degrees, got {delta}")
    names = list(LIGHT_LABELS) + list(ROTATION_LABELS)
    sums = np.zeros((len(names), 3))
    for start in range(0, x.shape[0], int(batch_size)):
        batch = x[start:start + int(batch_size)]
        out = decompose(batch, ["depth", "albedo", "light", "view"])
        out["input"] = batch
        for axis in range(3):
            moved = []
            for sign in (1.0, -1.0):
                degrees = [0.0, 0.0, 0.0]
                degrees[axis] = sign * delta
                labels = scalar_labels(decompose(nudged_view_scene(dec, out, degrees), ["light", "view"]))
                moved.append(np.stack([labels[n].double().cpu().numpy() for n in names]))
            sums[:, axis] += ((moved[0] - moved[1]) / (2 * delta)).sum(axis=1)
    jacobian = sums / x.shape[0]
    slopes = leak_slopes(jacobian[:len(LIGHT_LABELS)], jacobian[len(LIGHT_LABELS):])
    return {light: {rot: float(slopes[i, j]) for j, rot in enumerate(ROTATION_LABELS)}
            for i, light in enumerate(LIGHT_LABELS)}
