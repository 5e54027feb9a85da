"""The named factors of the synthetic face world: order, groups, physical ranges and unit conversions.

Every factor has a *normalized* value in [-1, 1] (what factor maps, estimators and the oracle use) and a *physical*
value (what the renderer draws with), related linearly: ``physical = low + (normalized + 1) / 2 * (high - low)``.
Values outside [-1, 1] extrapolate along the same line (the renderer stays well-defined to about +-1.5).

The groups follow SEEDS.md (DiscoFaceGAN's factor split): identity (head shape, skin albedo, hair colour),
expression, pose, illumination. Angles are in degrees; lengths are in normalized canonical-image units (the image
spans [-1, 1]) unless the unit says otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "FACTORS",
    "GROUPS",
    "Factor",
    "factor_names",
    "factor_groups",
    "factor_ranges",
    "factor_index",
    "num_factors",
    "to_physical",
    "to_normalized",
    "neutral_factors",
    "sample_factors",
]


@dataclass(frozen=True)
class Factor:
    """One generative factor: its stable name, group, physical range [low, high], unit and meaning."""

    name: str
    group: str
    low: float
    high: float
    unit: str
    description: str


GROUPS = ("identity", "expression", "pose", "illumination")

FACTORS: tuple[Factor, ...] = (
    # identity: head shape
    Factor("head_width", "identity", 0.56, 0.70, "image half-widths", "half-width of the skull ellipsoid"),
    Factor("head_height", "identity", 0.64, 0.78, "image half-widths", "half-height of the skull ellipsoid"),
    Factor("jaw_width", "identity", 0.62, 1.00, "ratio", "width of the lower face relative to the skull width"),
    Factor("nose_length", "identity", 0.20, 0.32, "image half-widths", "vertical extent from nose bridge to tip"),
    Factor("nose_width", "identity", 0.07, 0.14, "image half-widths", "half-width of the nose at its base"),
    Factor("eye_spacing", "identity", 0.19, 0.29, "image half-widths", "offset of each eye from the midline"),
    # identity: albedo
    Factor("skin_r", "identity", 0.62, 0.95, "reflectance", "red skin albedo"),
    Factor("skin_g", "identity", 0.42, 0.70, "reflectance", "green skin albedo"),
    Factor("skin_b", "identity", 0.30, 0.58, "reflectance", "blue skin albedo"),
    Factor("hair_color", "identity", 0.0, 1.0, "palette position", "hair colour along black - brown - auburn - blond"),
    # expression
    Factor("mouth_open", "expression", 0.0, 1.0, "fraction", "mouth opening (the jaw drops with it)"),
    Factor("smile", "expression", -0.6, 1.0, "fraction", "mouth-corner lift and cheek raise (negative: frown)"),
    Factor("brow_raise", "expression", -1.0, 1.0, "fraction", "eyebrow lift (negative: lowered brows)"),
    # pose (rotations of the head about its centre; see image_formation.rotation_matrix)
    Factor("yaw", "pose", -35.0, 35.0, "degrees", "rotation about the image y axis (+: the nose turns to image left)"),
    Factor("pitch", "pose", -20.0, 20.0, "degrees", "rotation about the image x axis (+: the nose turns down)"),
    Factor("roll", "pose", -25.0, 25.0, "degrees", "in-plane rotation (+: clockwise in the image)"),
    # illumination (directional light in the face's canonical frame, as in Unsup3D)
    Factor("light_azimuth", "illumination", -55.0, 55.0, "degrees", "light direction left-right (+: from image right)"),
    Factor("light_elevation", "illumination", -20.0, 40.0, "degrees", "light direction up-down (+: from above)"),
    Factor("ambient", "illumination", 0.10, 0.60, "fraction", "ambient strength; the diffuse strength is 1 - ambient"),
)


def factor_names() -> list[str]:
    """The factor names in their fixed order (the column order of every factor tensor)."""
    return [f.name for f in FACTORS]


def num_factors() -> int:
    """Number of factors F (the width of a factor tensor [N, F])."""
    return len(FACTORS)


def factor_groups() -> dict[str, list[str]]:
    """Map each group ('identity', 'expression', 'pose', 'illumination') to its factor names, in table order."""
    return {g: [f.name for f in FACTORS if f.group == g] for g in GROUPS}


def factor_ranges() -> dict[str, tuple[float, float]]:
    """Map each factor name to its physical range (low, high); normalized -1 -> low, +1 -> high."""
    return {f.name: (f.low, f.high) for f in FACTORS}


def factor_index(name: str) -> int:
    """Column of factor `name` in a factor tensor; raises KeyError naming the known factors."""
    for i, f in enumerate(FACTORS):
        if f.name == name:
            return i
    raise KeyError(f"unknown synthetic factor {name!r}; known factors: {', '.join(factor_names())}")


def _bounds(like: torch.Tensor | np.ndarray) -> tuple:
    """(low, high) as arrays matching `like`: tensors of its dtype and device, or float64 numpy arrays."""
    low = np.array([f.low for f in FACTORS], dtype=np.float64)
    high = np.array([f.high for f in FACTORS], dtype=np.float64)
    if isinstance(like, torch.Tensor):
        return (torch.as_tensor(low, dtype=like.dtype, device=like.device),
                torch.as_tensor(high, dtype=like.dtype, device=like.device))
    return low, high


def _check_width(x: torch.Tensor | np.ndarray) -> None:
    if x.shape[-1] != len(FACTORS):
        raise ValueError(f"factor arrays need {len(FACTORS)} columns ({', '.join(factor_names())}); got shape "
                         f"{tuple(x.shape)}")


def to_physical(normalized: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Normalized factors [..., F] in [-1, 1] -> physical values [..., F] (same type, dtype and device)."""
    _check_width(normalized)
    low, high = _bounds(normalized)
    return low + (normalized + 1) * 0.5 * (high - low)


def to_normalized(physical: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Physical factor values [..., F] -> normalized values [..., F] (inverse of `to_physical`)."""
    _check_width(physical)
    low, high = _bounds(physical)
    return (physical - low) / (high - low) * 2 - 1


def neutral_factors(n: int = 1, device: torch.device | str = "cpu", **overrides: float) -> torch.Tensor:
    """[n, F] normalized factors at the middle of every range, with `overrides` given as *physical* values.

    Example: ``neutral_factors(2, yaw=20.0, light_azimuth=0.0)``. Physical 0 for the symmetric ranges (yaw, roll,
    light azimuth) is normalized 0, so the neutral face is frontal.
    """
    factors = torch.zeros(n, len(FACTORS), device=device)
    for name, value in overrides.items():
        f = FACTORS[factor_index(name)]
        factors[:, factor_index(name)] = (value - f.low) / (f.high - f.low) * 2 - 1
    return factors


def sample_factors(n: int, seed: int = 0, device: torch.device | str = "cpu") -> torch.Tensor:
    """[n, F] normalized factors drawn independently and uniformly from [-1, 1] with a seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(n, len(FACTORS), generator=gen) * 2 - 1).to(device)
