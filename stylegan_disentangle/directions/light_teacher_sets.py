"""The latent light teacher's directions, read from saved direction sets.

`labels.decomposer.LatentLightTeacher` teaches netL the light from W directions. The decomposer is a labeler and
knows nothing of DirectionSets (DESIGN.md's stage order: labels never import directions), so the sets that
`find-directions --method 3d-coupled` writes are read here and handed to it as plain vectors.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StyleGANDisentangleError
from ..labels.decomposer.light_teacher import LIGHT_LABELS, LatentLightTeacher
from .direction_set import DirectionSet

__all__ = ["light_teacher_from_sets", "light_teacher_from_spec"]


def _light_directions(path: Path, names: Sequence[str], G: Any = None,
                      checkpoint_sha256: str | None = None) -> dict[str, np.ndarray]:
    """{name: vector} of the directions `names` of the DirectionSet at `path` (a folder: its `directions`); with
    the generator `G`, a set found on another network is refused (and one of another checkpoint warned about)
    before any face is drawn."""
    dirs = DirectionSet.load(path)
    if G is not None:
        dirs.check_fits(int(G.w_dim), int(G.num_ws), what=f"the light teacher's set {path}",
                        checkpoint_sha256=checkpoint_sha256)
    if dirs.per_layer:
        raise StyleGANDisentangleError(f"{path}: a per-layer direction set; the light teacher reads w along one "
                                       "vector per label (find-directions --method 3d-coupled gives such a set)")
    missing = [n for n in names if n not in dirs.names]
    if missing:
        raise StyleGANDisentangleError(f"{path}: the light teacher needs the directions {missing}, which this set "
                                       f"lacks (it has {dirs.names}); fit one with `find-directions --method "
                                       "3d-coupled`")
    return {n: dirs.vectors[dirs.names.index(n)] for n in names}


def light_teacher_from_sets(path: str | os.PathLike | Sequence[str | os.PathLike],
                            names: Sequence[str] = LIGHT_LABELS, G: Any = None,
                            checkpoint_sha256: str | None = None) -> LatentLightTeacher:
    """An unfitted teacher of the directions named `names` in a saved DirectionSet (`<stem>.npz` + `<stem>.json`,
    or the folder `find-directions` wrote it to); every one must be there.

    Several sets (a list of paths) give, per label, the mean of their unit directions: sets found through
    different decomposers lean differently, and on the synthetic world the mean of four read the light better
    than any one of them (BENCHMARKS.md, issue 10, twenty-eighth session)."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths:
        raise StyleGANDisentangleError("light teacher: no direction set given")
    found = [_light_directions(Path(p), names, G, checkpoint_sha256) for p in paths]
    if len(found) == 1:
        return LatentLightTeacher(found[0])
    for p, directions in zip(paths[1:], found[1:]):
        if {v.shape for v in directions.values()} != {v.shape for v in found[0].values()}:
            raise StyleGANDisentangleError(f"{p}: its directions are not as long as those of {paths[0]}")
    unit = [{n: np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for n, v in d.items()} for d in found]
    return LatentLightTeacher({n: sum(u[n] for u in unit) / len(unit) for n in names})


def light_teacher_from_spec(spec: str, G: Any = None, checkpoint_sha256: str | None = None) -> LatentLightTeacher:
    """The command lines' `--light-teacher A,B,...`: one direction set or several, comma-separated (see
    `light_teacher_from_sets`; `G` and `checkpoint_sha256` check the sets against the network)."""
    return light_teacher_from_sets([path for path in spec.split(",") if path], G=G,
                                   checkpoint_sha256=checkpoint_sha256)
