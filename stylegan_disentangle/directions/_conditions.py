"""The conditions of `ThreeDCoupledDirections`' global directions (InterFaceGAN's conditional edit): which
directions are held against which (`AUTO_CONDITIONS`, ...), the map readings a condition may name (the colour of the
top of the canonical albedo, the height and width of the canonical depth), and the hard and soft holds themselves.
The reasons and the figures behind each rule are in `ThreeDCoupledDirections`' `conditions` and `soft_conditions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ._footprint_names import canonical_regions
from .orthogonalize import _project_out, span_basis

TOP_ALBEDO_COLOUR = "top_albedo_colour"
"""A condition name: the W directions of the colour (chromaticity) of the canonical albedo at the top of the face
(`top_albedo_colour_directions_`), a reading of the hair colour that white light does not change."""
AUTO_CONDITIONS = {"light_elevation": ("light_ambient", "light_diffuse", "light_azimuth", TOP_ALBEDO_COLOUR),
                   "light_ambient": ("pitch",)}
"""`conditions='auto'`: the global directions held against others (InterFaceGAN's conditional edit)."""
TAUGHT_AUTO_CONDITIONS = {"light_elevation": (TOP_ALBEDO_COLOUR, "roll"), "light_ambient": ("pitch",)}
"""`conditions='auto'` with `taught_light=True`: the light read by a decomposer whose netL learned from a
`LatentLightTeacher` (see `taught_light`)."""
DEPTH_HEIGHT = "depth_height"
"""A condition name: the W direction of the height of the face as the decomposer's canonical depth draws it (the
vertical spread of the relief, `depth_height_direction_`), which a decomposer's elevation reading takes in."""
DEPTH_WIDTH = "depth_width"
"""A condition name: the W direction of the width of the face as the decomposer's canonical depth draws it (the
horizontal spread of the relief, `depth_width_direction_`), which a decomposer's ambient reading takes in."""
SOFT_AUTO_CONDITIONS = {"light_ambient": ("yaw", "pitch", "roll", "tx", "ty", "tz", "light_azimuth",
                                          "light_elevation", DEPTH_WIDTH),
                        "light_elevation": (DEPTH_HEIGHT,)}
"""`soft_conditions='auto'`: the global directions softly held against others (see `soft_conditions`)."""
PART_AUTO_CONDITIONS = {"light_elevation": ("albedo_eyes",)}
"""`part_conditions='auto'`: global directions softly held against localized ones, named by prefix (see
`part_conditions`)."""
TOP_REGION = "forehead"  # the canonical region (`canonical_regions`) whose albedo colour TOP_ALBEDO_COLOUR reads
CHROMA_EPS = 0.05  # added to the albedo's intensity in [0, 1] before the log (as analysis.sensitivity's for images)


def condition_rows(fitted: np.ndarray, names: Sequence[str], conds: Sequence[str],
                    extra: Mapping[str, np.ndarray | None]) -> np.ndarray:
    """The W rows of conditions `conds`: a fitted direction's row, or the rows a condition in `extra` brings."""
    return np.concatenate([np.atleast_2d(extra[c]) if c in extra else fitted[[names.index(c)]] for c in conds])


def conditioned(dirs: np.ndarray, names: Sequence[str], conditions: Mapping[str, Sequence[str]],
                 extra: Mapping[str, np.ndarray | None] | None = None) -> np.ndarray:
    """Rows of `dirs` named in `conditions` without their component in the span of their conditions' rows as
    fitted (conditions do not chain; a condition in `extra` brings its own rows), renormalised (`orthogonalize`'s
    projection); the other rows as they are."""
    fitted = np.asarray(dirs, dtype=np.float64)
    extra = extra or {}
    out = fitted.copy()
    for name, conds in conditions.items():
        i = names.index(name)
        out[i] = _project_out(fitted[i:i + 1], span_basis(condition_rows(fitted, names, conds, extra)), [name])[0]
    return out


def resolve_conditions(param: str, spec: Mapping[str, Sequence[str]] | str | None,
                        auto: Mapping[str, Sequence[str]], fitted: Sequence[str],
                        readings: Mapping[str, tuple[bool, str]]) -> dict[str, list[str]]:
    """`spec` ('auto', None or a dict) as {direction: [conditions]}: 'auto' is `auto` restricted to the fitted
    global labels and the map readings available (`readings`: {condition name: (available, what it needs)}); a
    dict must name only those, hold no reading and no direction against itself."""
    if spec is None:
        return {}
    for name in readings:
        if isinstance(spec, Mapping) and name in spec:
            raise ValueError(f"{name!r} is a condition, not a direction to hold")
    known = set(fitted) | {name for name, (have, _) in readings.items() if have}
    hint = "".join(f" nor {name!r} (it needs {needs})" for name, (have, needs) in readings.items() if not have)
    if spec == "auto":
        out = {k: [c for c in v if c in known] for k, v in auto.items() if k in fitted}
        return {k: v for k, v in out.items() if v}
    unknown = sorted({str(n) for k, v in spec.items() for n in [k, *v]} - known)
    if unknown:
        raise ValueError(f"{param} name {unknown}, which are not fitted global labels ({list(fitted)}){hint}")
    selfish = [k for k, v in spec.items() if k in v]
    if selfish:
        raise ValueError(f"{param} hold {selfish} against themselves")
    return {str(k): [str(c) for c in v] for k, v in spec.items() if v}


def soft_conditioned(dirs: np.ndarray, names: Sequence[str], conditions: Mapping[str, Sequence[str]],
                      strength: float, extra: Mapping[str, np.ndarray | None] | None = None) -> np.ndarray:
    """Rows of `dirs` named in `conditions` softly held against their conditions' rows (unit B):
    `d <- (I + strength B^T B)^-1 d`, the direction that for its length overlaps them least (a ridge between
    the row as fitted, strength 0, and the hard hold, strength -> inf); renormalised. Conditions do not chain; a
    condition in `extra` brings its own rows."""
    fitted = np.asarray(dirs, dtype=np.float64)
    extra = extra or {}
    out = fitted.copy()
    for name, conds in conditions.items():
        i = names.index(name)
        rows = condition_rows(fitted, names, conds, extra)
        rows = rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
        held = np.linalg.solve(np.eye(fitted.shape[1]) + strength * rows.T @ rows, fitted[i])
        out[i] = held / np.linalg.norm(held) * np.linalg.norm(fitted[i])
    return out


def top_albedo_chroma(albedo: np.ndarray, chunk_size: int) -> np.ndarray:
    """[N, 3] mean log-chromaticity (log intensity minus its mean over the channels) of canonical albedo maps
    [N, 3, R, R] in [-1, 1] over the top region of the canonical face (`TOP_REGION`), in chunks."""
    names, masks = canonical_regions(albedo.shape[-1])
    top = masks[names.index(TOP_REGION)] > 0.5
    out = np.empty((albedo.shape[0], 3))
    for start in range(0, albedo.shape[0], chunk_size):
        part = np.asarray(albedo[start:start + chunk_size][:, :, top], dtype=np.float64)
        log = np.log((np.clip(part, -1, 1) + 1) / 2 + CHROMA_EPS).mean(axis=2)
        out[start:start + chunk_size] = log - log.mean(axis=1, keepdims=True)
    return out


def depth_readings(depth_map: bool) -> dict[str, tuple[bool, str]]:
    """The depth map's readings a condition may name, with whether they are available (`resolve_conditions`)."""
    return {DEPTH_HEIGHT: (depth_map, "a depth map"), DEPTH_WIDTH: (depth_map, "a depth map")}


def depth_spread(depth: np.ndarray, chunk_size: int) -> np.ndarray:
    """[N, 2] height and width of the face as canonical depth maps [N, R, R] (or [N, 1, R, R]) draw it: the
    vertical and horizontal spread (in rows, columns) of the relief, each map's depth below its farthest point, in
    chunks."""
    n, size = depth.shape[0], depth.shape[-1]
    coords = np.arange(size, dtype=np.float64)
    out = np.empty((n, 2))
    for start in range(0, n, chunk_size):
        part = np.asarray(depth[start:start + chunk_size], dtype=np.float64).reshape(-1, size, size)
        relief = part.max(axis=(1, 2), keepdims=True) - part
        mass = np.maximum(relief.sum(axis=(1, 2)), 1e-12)
        for axis, profile in enumerate((relief.sum(axis=2), relief.sum(axis=1))):  # mass per row, per column
            centre = profile @ coords / mass
            out[start:start + chunk_size, axis] = np.sqrt(
                (profile * (coords[None] - centre[:, None]) ** 2).sum(axis=1) / mass)
    return out


def part_condition_rows(names: Sequence[str], kinds: Sequence[str], prefixes: Sequence[str]) -> list[int]:
    """Indices of the localized directions (kind not 'global') whose name is one of `prefixes` or one of them
    followed by '_' (`albedo_eyes` matches `albedo_eyes`, `albedo_eyes_2`, `albedo_eyes_left`)."""
    return [k for k, (nm, kind) in enumerate(zip(names, kinds))
            if kind != "global" and any(nm == p or nm.startswith(p + "_") for p in prefixes)]


def resolve_part_conditions(spec: Mapping[str, Sequence[str]] | str | None, names: Sequence[str],
                            kinds: Sequence[str]) -> dict[str, list[str]]:
    """`part_conditions` ('auto', None or a dict {global direction: [localized name prefixes]}) as {global
    direction: [the localized directions it is held against]}: 'auto' is `PART_AUTO_CONDITIONS` where both sides
    were fitted; a dict must name fitted global directions, and each of its prefixes must match a localized one."""
    if spec is None:
        return {}
    fitted = [nm for nm, kind in zip(names, kinds) if kind == "global"]
    if spec == "auto":
        out = {k: [names[i] for i in part_condition_rows(names, kinds, v)] for k, v in PART_AUTO_CONDITIONS.items()
               if k in fitted}
        return {k: v for k, v in out.items() if v}
    unknown = sorted(str(k) for k in spec if k not in fitted)
    if unknown:
        raise ValueError(f"part_conditions name {unknown}, which are not fitted global directions ({fitted})")
    local = [nm for nm, kind in zip(names, kinds) if kind != "global"]
    out = {}
    for k, prefixes in spec.items():
        missing = [p for p in prefixes if not part_condition_rows(names, kinds, [p])]
        if missing:
            raise ValueError(f"part_conditions: {missing} match no localized direction (fitted: {local})")
        if prefixes:
            out[str(k)] = [names[i] for i in part_condition_rows(names, kinds, prefixes)]
    return out
