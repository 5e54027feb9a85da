"""DirectionSet: the artifact users keep — named unit directions in W with everything needed to use them again.

A set holds K directions, either flat (`vectors` `[K, w_dim]`, applied to every ws layer unless the direction's layers
say otherwise) or per-layer (`vectors` `[K, num_ws, w_dim]`, unit norm over the flattened `num_ws * w_dim` vector).

Layers. Each direction acts on a set of ws indices (`DirectionSet.layers`): `None` = every ws layer, else a sorted
tuple of indices. A range `[start, stop)` is the common case (`layer_ranges`), but any set is allowed: SeFa on ws
{0, 2} must leave ws 1 untouched, which no range can say. An edit moves exactly those ws rows.

Units. `step_ranges` are in **W units**: an edit is `ws + step * vector`, so a step of 2.0 moves the code a Euclidean
distance of 2.0 in W. Finders fitted on samples also store `extras['std']` `[K]` (the std of the W samples along
each direction), so `step / std` converts a step to "sigmas" and `sigma * std` back; `DirectionSet.stds` returns it.

On disk a set is two files side by side: `<stem>.npz` (vectors and extras, no pickles) and `<stem>.json` (names,
layers, step ranges, method, parameters, provenance, free metadata and the npz's sha256). Both are written
atomically; loading checks that they belong together. The json stores layers in the most compatible form: when every
direction's layers are `None` or a range it is a format-version-1 file with `"layer_ranges": [null | [start, stop]]`
(exactly what older versions wrote and read); otherwise it is version 2 with `"layers": [null | [i, j, ...]]`, the
sorted ws indices, which older versions refuse (by version) rather than misread as a range.

Example::

    ds = PCADirections(n_components=10).fit(w).to_direction_set(seed=0)
    ds.save("runs/pca")            # runs/pca.npz + runs/pca.json
    ds = DirectionSet.load("runs/pca")
    ws_edit = ws + 2.0 * ds["pc0"]
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import LatentError, StyleGANDisentangleError
from ..utils import atomic_write, atomic_write_path, sha256_file

logger = logging.getLogger(__name__)

__all__ = ["DirectionSet", "FORMAT_VERSION", "INTERFACEGAN_LAYERS_FILE", "to_jsonable"]

FORMAT_VERSION = 2  # newest version read and written; range-only sets are still written as 1
_UNIT_TOL = 1e-4
_GLOBAL_PREFIX = "global_"
INTERFACEGAN_LAYERS_FILE = "layers.json"


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars / arrays and tuples into plain JSON types (recursively; NaN / inf become None).

    Raises TypeError for anything else.
    """
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str):
                if isinstance(key, (int, np.integer)):
                    key = str(int(key))
                else:
                    raise TypeError(f"JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None  # strict JSON has no NaN / inf
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable: {obj!r}")


def _canonical_json(obj: Any, what: str) -> Any:
    """Round-trip through JSON so the in-memory value equals what `load` will return."""
    try:
        return json.loads(json.dumps(to_jsonable(obj), allow_nan=True))
    except TypeError as exc:
        raise ValueError(f"DirectionSet {what} must be JSON-serialisable: {exc}") from None


def _is_range(idx: tuple[int, ...]) -> bool:
    """True when sorted unique indices are consecutive (a `[start, stop)` range)."""
    return idx[-1] - idx[0] + 1 == len(idx)


def _describe(idx: tuple[int, ...] | None) -> str:
    """Human-readable ws indices: 'all', '[2, 6)' for a range, '{0, 2}' otherwise."""
    if idx is None:
        return "all"
    if _is_range(idx):
        return f"[{idx[0]}, {idx[-1] + 1})"
    return "{" + ", ".join(str(i) for i in idx) + "}"


def _as_indices(spec: Any, what: str) -> tuple[int, ...]:
    """Sorted unique non-negative ws indices from an iterable of integers; ValueError naming `what` otherwise."""
    if isinstance(spec, (str, bytes)) or not isinstance(spec, Iterable):
        raise ValueError(f"{what} must be ws indices (an iterable of ints) or None, got {spec!r}")
    values = list(spec)
    out = set()
    for v in values:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"{what} must be integers, got {v!r} in {spec!r}")
        if v < 0:
            raise ValueError(f"{what} must be non-negative ws indices, got {spec!r}")
        out.add(int(v))
    if not out:
        raise ValueError(f"{what} is empty; use None for all layers")
    return tuple(sorted(out))


def _json_indices(value: Any, key: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError(f"{key!r} entries must be null or a list of ws indices, got {value!r}")
    return tuple(value)


def _check_layers(
    names: list[str], layer_ranges: Sequence[Any] | None, layers: Sequence[Any] | None, num_ws: int | None
) -> list[tuple[int, ...] | None]:
    """Per-direction sorted ws indices (None = all) from `layer_ranges` or `layers`, validated against `num_ws`."""
    k = len(names)
    if layer_ranges is not None and layers is not None:
        raise ValueError("DirectionSet takes layer_ranges or layers, not both")
    given, what = (layers, "layers") if layers is not None else (layer_ranges, "layer ranges")
    if given is None:
        return [None] * k
    if isinstance(given, (str, bytes)) or len(given) != k:
        raise ValueError(f"DirectionSet has {k} directions but {len(given)} {what}")
    out: list[tuple[int, ...] | None] = []
    for name, spec in zip(names, given):
        if spec is None:
            out.append(None)
            continue
        if layers is None and isinstance(spec, (list, tuple)):  # the (start, stop) pair of layer_ranges
            if len(spec) != 2:
                raise ValueError(f"layer range of {name!r} must be (start, stop), got {spec!r}; pass explicit "
                                 "ws indices as a set or through layers=")
            try:
                start, stop = int(spec[0]), int(spec[1])
                ok = start == spec[0] and stop == spec[1] and 0 <= start < stop
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"layer range of {name!r} must be integers 0 <= start < stop, got {spec!r}")
            idx = tuple(range(start, stop))
        elif layers is None and not isinstance(spec, (range, set, frozenset)):
            raise ValueError(f"layer range of {name!r} must be None, (start, stop), or a range / set of ws indices; "
                             f"got {spec!r}")
        else:
            idx = _as_indices(spec, f"layers of {name!r}")
        if num_ws is not None and idx[-1] >= num_ws:
            raise ValueError(f"layers of {name!r} are ws {_describe(idx)} but the vectors have only {num_ws} ws "
                             f"layers")
        out.append(idx)
    return out


def _check_vectors(names: list[str], vectors: np.ndarray) -> np.ndarray:
    """One unit, finite float32 vector `[w_dim]` or `[num_ws, w_dim]` per unique, non-empty name -> `[K, ...]`."""
    vectors = np.array(vectors, dtype=np.float32, copy=True)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if vectors.ndim not in (2, 3):
        raise ValueError(f"DirectionSet vectors must be [K, w_dim] or [K, num_ws, w_dim], got shape {vectors.shape}")
    k = vectors.shape[0]
    if len(names) != k:
        raise ValueError(f"DirectionSet has {len(names)} names but {k} vectors")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"DirectionSet names must be unique; duplicated: {dup}")
    if any(n == "" for n in names):
        raise ValueError("DirectionSet names must be non-empty strings")
    if not np.all(np.isfinite(vectors)):
        raise ValueError("DirectionSet vectors contain NaN or inf")
    norms = np.linalg.norm(vectors.reshape(k, -1).astype(np.float64), axis=1)
    bad = np.flatnonzero(np.abs(norms - 1.0) > _UNIT_TOL)
    if bad.size:
        raise ValueError(
            f"DirectionSet vectors must have unit norm (tolerance {_UNIT_TOL}); "
            f"direction(s) {[names[i] for i in bad[:5]]} have norm(s) {norms[bad[:5]].round(6).tolist()}"
        )
    return vectors


def _check_step_ranges(names: list[str], step_ranges: Sequence[tuple[float, float]] | None
                       ) -> list[tuple[float, float]]:
    """One finite (low, high) step range per direction, low <= high; None -> (-3, 3) each."""
    k = len(names)
    if step_ranges is None:
        step_ranges = [(-3.0, 3.0)] * k
    if len(step_ranges) != k:
        raise ValueError(f"DirectionSet has {k} directions but {len(step_ranges)} step ranges")
    checked: list[tuple[float, float]] = []
    for name, rng in zip(names, step_ranges):
        if len(rng) != 2:
            raise ValueError(f"step range of {name!r} must be (low, high), got {rng!r}")
        lo, hi = float(rng[0]), float(rng[1])
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise ValueError(f"step range of {name!r} must be finite with low <= high, got {rng!r}")
        checked.append((lo, hi))
    return checked


def _check_extras(extras: Mapping[str, np.ndarray] | None, k: int) -> dict[str, np.ndarray]:
    """Copies of the numeric side arrays: per direction (leading axis K) unless the key starts `global_`."""
    checked: dict[str, np.ndarray] = {}
    for key, value in (extras or {}).items():
        key = str(key)
        if not key or "/" in key:
            raise ValueError(f"extras key {key!r} must be a non-empty name without '/'")
        arr = np.array(value, copy=True)
        if arr.dtype == object:
            raise ValueError(f"extras[{key!r}] must be a numeric array, got dtype object")
        if not key.startswith(_GLOBAL_PREFIX) and (arr.ndim == 0 or arr.shape[0] != k):
            raise ValueError(
                f"extras[{key!r}] has shape {arr.shape}; per-direction extras need leading axis K={k} "
                f"(prefix the key with {_GLOBAL_PREFIX!r} for a set-wide array)"
            )
        if key == "std" and (arr.ndim != 1 or not np.all(np.isfinite(arr)) or not np.all(arr >= 0)):
            raise ValueError(f"extras['std'] (W's spread along each direction, the sigma unit of edits) must be "
                             f"[K] finite numbers >= 0, got {arr.tolist()}")
        checked[key] = arr
    return checked


class DirectionSet:
    """Named unit directions in W (or W+), their layer and step ranges, and how they were found.

    Parameters
    ----------
    names : list[str]
        K unique direction names.
    vectors : np.ndarray
        `[K, w_dim]` or per-layer `[K, num_ws, w_dim]`; stored as float32, each direction of unit norm (flattened).
    layer_ranges : list, optional
        Per direction, the ws layers a W+ edit applies to: `None` = all layers (default), a `(start, stop)` pair =
        the range `[start, stop)`, or explicit indices as a `range`, `set` or `frozenset`. Give this or `layers`.
    step_ranges : list[tuple[float, float]], optional
        Per direction, the recommended step range in W units (see the module docstring); default `(-3, 3)`.
    method : str
        The finder that produced the set ('pca', 'closed_form', 'linear', ...).
    params : dict
        The finder's parameters (JSON-serialisable).
    checkpoint_sha256, n_samples, seed : provenance (optional).
    extras : dict[str, np.ndarray]
        Numeric side data. Arrays whose key starts with ``global_`` are set-wide (e.g. ``global_w_mean``); every
        other array is per direction and must have leading axis K (e.g. ``std``, ``explained_variance``,
        ``support``, ``label_effects``, ``components``); `select` slices those.
    info : dict
        Free JSON metadata. Entries whose value is a dict keyed by direction names are per direction and follow
        `select` / `rename`.
    layers : list[Iterable[int] | None], optional
        Per direction, the explicit ws indices an edit applies to (any iterable of ints, e.g. `[0, 2]` or
        `range(0, 4)`; `None` = all layers). Stored sorted and deduplicated in `self.layers`.

    Raises
    ------
    ValueError
        On inconsistent shapes, non-unit vectors, duplicate names, or non-JSON metadata.
    """

    STEP_UNIT = "w"

    def __init__(
        self,
        names: Sequence[str],
        vectors: np.ndarray,
        layer_ranges: Sequence[tuple[int, int] | None] | None = None,
        step_ranges: Sequence[tuple[float, float]] | None = None,
        method: str = "unknown",
        params: Mapping[str, Any] | None = None,
        checkpoint_sha256: str | None = None,
        n_samples: int | None = None,
        seed: int | None = None,
        extras: Mapping[str, np.ndarray] | None = None,
        info: Mapping[str, Any] | None = None,
        layers: Sequence[Iterable[int] | None] | None = None,
    ) -> None:
        names = [str(n) for n in names] if not isinstance(names, str) else [names]
        vectors = _check_vectors(names, vectors)
        k = vectors.shape[0]
        num_ws = vectors.shape[1] if vectors.ndim == 3 else None
        checked_layers = _check_layers(names, layer_ranges, layers, num_ws)
        checked_steps = _check_step_ranges(names, step_ranges)
        checked_extras = _check_extras(extras, k)
        if checkpoint_sha256 is not None and not isinstance(checkpoint_sha256, str):
            raise ValueError(f"checkpoint_sha256 must be a hex string or None, got {checkpoint_sha256!r}")
        for what, value in (("n_samples", n_samples), ("seed", seed)):
            if value is not None and (isinstance(value, bool) or int(value) != value):
                raise ValueError(f"{what} must be an integer or None, got {value!r}")

        self.names: list[str] = names
        self.vectors: np.ndarray = vectors
        self.layers: list[tuple[int, ...] | None] = checked_layers
        self.step_ranges: list[tuple[float, float]] = checked_steps
        self.method: str = str(method)
        self.params: dict = _canonical_json(dict(params or {}), "params")
        self.checkpoint_sha256: str | None = checkpoint_sha256
        self.n_samples: int | None = None if n_samples is None else int(n_samples)
        self.seed: int | None = None if seed is None else int(seed)
        self.extras: dict[str, np.ndarray] = checked_extras
        self.info: dict = _canonical_json(dict(info or {}), "info")

    # ------------------------------------------------------------------ access
    @property
    def per_layer(self) -> bool:
        """True when vectors are `[K, num_ws, w_dim]`."""
        return self.vectors.ndim == 3

    @property
    def w_dim(self) -> int:
        return int(self.vectors.shape[-1])

    @property
    def num_ws(self) -> int | None:
        """Number of ws layers of per-layer vectors; None for flat sets."""
        return int(self.vectors.shape[1]) if self.per_layer else None

    def check_fits(self, w_dim: int, num_ws: int, what: str = "the direction set",
                   checkpoint_sha256: str | None = None) -> None:
        """Raise LatentError when these directions cannot move a generator with `w_dim` and `num_ws`: they were
        found on another network (another W width, or a per-layer set with another number of ws). With the
        generator's `checkpoint_sha256`, warn when the set records another checkpoint (same shapes, maybe a
        fine-tuned network: the directions may still mean something there)."""
        if self.w_dim != w_dim:
            raise LatentError(f"{what} has w_dim {self.w_dim} but the network has {w_dim}: the directions were "
                              "found on another network")
        if self.per_layer and self.num_ws != num_ws:
            raise LatentError(f"{what} is per-layer over {self.num_ws} ws but the network has {num_ws}: the "
                              "directions were found on another network")
        if checkpoint_sha256 and self.checkpoint_sha256 and self.checkpoint_sha256 != checkpoint_sha256:
            logger.warning("%s was found on checkpoint %s..., this is %s...", what, self.checkpoint_sha256[:12],
                           checkpoint_sha256[:12])

    @property
    def stds(self) -> np.ndarray | None:
        """`[K]` std of the W samples along each direction (W units), when the finder saw samples."""
        return self.extras.get("std")

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self):
        return iter(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def resolve_name(self, name: str) -> str:
        """`name` if the set has it, else the one direction named `name` plus a tag after ':' (the finders name
        directions like 'pc0:-color_b', and 'pc0' picks it); StyleGANDisentangleError naming the close ones
        otherwise."""
        if name in self.names:
            return name
        tagged = [n for n in self.names if n.split(":", 1)[0] == name]
        if len(tagged) == 1:
            return tagged[0]
        by_id = {n.split(":", 1)[0]: n for n in self.names}  # a misspelt 'pc1' is close to 'pc1', not 'pc1:-color_b'
        close = tagged or list(dict.fromkeys(
            [by_id[c] for c in difflib.get_close_matches(str(name), list(by_id), n=3, cutoff=0.6)]
            + difflib.get_close_matches(str(name), self.names, n=3, cutoff=0.6)))[:3]
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise StyleGANDisentangleError(f"no direction named {name!r} in the set; {hint}known: {self.names}")

    def index(self, name: str) -> int:
        """Position of direction `name`; KeyError listing the known names otherwise."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"no direction named {name!r}; known: {self.names}") from None

    def __getitem__(self, name: str | int) -> np.ndarray:
        """The unit vector of one direction: `[w_dim]` (flat) or `[num_ws, w_dim]` (per-layer)."""
        i = int(name) if isinstance(name, (int, np.integer)) else self.index(name)
        return self.vectors[i]

    @property
    def layer_ranges(self) -> list[tuple[int, int] | None]:
        """Per direction `(start, stop)` or None (all layers); ValueError if some direction's layers are no range."""
        return [self.layer_range(name) for name in self.names]

    def layer_range(self, name: str) -> tuple[int, int] | None:
        """The ws range `(start, stop)` of direction `name`, None for all layers; ValueError when its layers are an
        explicit set that is not a range (use `layers_of` / `ws_indices`)."""
        idx = self.layers[self.index(name)]
        if idx is None:
            return None
        if not _is_range(idx):
            raise ValueError(f"direction {name!r} acts on ws {list(idx)}, which is not a range; "
                             "use DirectionSet.layers_of / ws_indices")
        return idx[0], idx[-1] + 1

    def layers_of(self, name: str) -> tuple[int, ...] | None:
        """The sorted ws indices direction `name` acts on; None = all layers."""
        return self.layers[self.index(name)]

    def ws_indices(self, name: str, num_ws: int) -> list[int]:
        """The ws indices direction `name` moves in a generator with `num_ws` layers.

        Raises ValueError when an index does not exist there (e.g. a set found on a deeper network).
        """
        idx = self.layers_of(name)
        if idx is None:
            return list(range(num_ws))
        if idx[-1] >= num_ws:
            raise ValueError(f"direction {name!r} acts on ws {_describe(idx)} but the generator has only "
                             f"{num_ws} ws layers (0..{num_ws - 1})")
        return list(idx)

    def step_range(self, name: str) -> tuple[float, float]:
        return self.step_ranges[self.index(name)]

    def __repr__(self) -> str:
        shown = ", ".join(self.names[:6]) + (", ..." if len(self) > 6 else "")
        shape = tuple(self.vectors.shape)
        return f"DirectionSet(method={self.method!r}, K={len(self)}, shape={shape}, names=[{shown}])"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DirectionSet):
            return NotImplemented
        return (
            self.names == other.names
            and self.vectors.shape == other.vectors.shape
            and np.array_equal(self.vectors, other.vectors)
            and self.layers == other.layers
            and self.step_ranges == other.step_ranges
            and self.method == other.method
            and self.params == other.params
            and self.checkpoint_sha256 == other.checkpoint_sha256
            and self.n_samples == other.n_samples
            and self.seed == other.seed
            and self.extras.keys() == other.extras.keys()
            and all(
                self.extras[k].dtype == other.extras[k].dtype
                and self.extras[k].shape == other.extras[k].shape
                and np.array_equal(self.extras[k], other.extras[k], equal_nan=self.extras[k].dtype.kind in "fc")
                for k in self.extras
            )
            and self.info == other.info
        )

    __hash__ = None  # mutable container

    # ------------------------------------------------------------------ derived sets
    def _replace(self, **changes: Any) -> DirectionSet:
        fields = dict(
            names=self.names,
            vectors=self.vectors,
            layers=self.layers,
            step_ranges=self.step_ranges,
            method=self.method,
            params=self.params,
            checkpoint_sha256=self.checkpoint_sha256,
            n_samples=self.n_samples,
            seed=self.seed,
            extras=self.extras,
            info=self.info,
        )
        fields.update(changes)
        return DirectionSet(**fields)

    def _per_direction_info(self) -> list[str]:
        """Keys of `info` whose value is a non-empty dict keyed by (a subset of) direction names."""
        names = set(self.names)
        return [k for k, v in self.info.items() if isinstance(v, dict) and v and set(v) <= names]

    def select(self, names: Iterable[str]) -> DirectionSet:
        """A new set with only `names`, in that order (per-direction extras and info follow)."""
        names = [names] if isinstance(names, str) else list(names)
        idx = [self.index(n) for n in names]
        per_dir = self._per_direction_info()
        info = {k: ({n: v[n] for n in names if n in v} if k in per_dir else v) for k, v in self.info.items()}
        extras = {k: (v if k.startswith(_GLOBAL_PREFIX) else v[idx]) for k, v in self.extras.items()}
        return self._replace(
            names=names,
            vectors=self.vectors[idx],
            layers=[self.layers[i] for i in idx],
            step_ranges=[self.step_ranges[i] for i in idx],
            extras=extras,
            info=info,
        )

    def rename(self, mapping: Mapping[str, str]) -> DirectionSet:
        """A new set with directions renamed by `mapping` (old -> new; unmapped names stay)."""
        for old in mapping:
            self.index(old)
        new_names = [mapping.get(n, n) for n in self.names]
        per_dir = self._per_direction_info()
        info = {k: ({mapping.get(n, n): x for n, x in v.items()} if k in per_dir else v) for k, v in self.info.items()}
        return self._replace(names=new_names, info=info)

    def flat_vectors(self) -> np.ndarray:
        """`[K, w_dim]` float32 unit vectors; per-layer sets are averaged over each direction's ws layers and
        renormalised."""
        if not self.per_layer:
            return self.vectors.copy()
        out = np.empty((len(self), self.w_dim), dtype=np.float32)
        for i, name in enumerate(self.names):
            rows = self.ws_indices(name, self.num_ws)
            v = self.vectors[i, rows].astype(np.float64).mean(axis=0)
            norm = np.linalg.norm(v)
            if norm < 1e-12:
                raise ValueError(f"direction {name!r} averages to zero over ws {_describe(self.layers[i])}")
            out[i] = (v / norm).astype(np.float32)
        return out

    # ------------------------------------------------------------------ files
    @staticmethod
    def _paths(path: str | os.PathLike) -> tuple[Path, Path]:
        path = Path(path)
        if path.suffix in (".npz", ".json"):
            path = path.with_suffix("")
        return path.with_name(path.name + ".npz"), path.with_name(path.name + ".json")

    def save(self, path: str | os.PathLike) -> tuple[Path, Path]:
        """Write `<stem>.npz` and `<stem>.json` atomically (`path` may end in .npz, .json or neither)."""
        npz_path, json_path = self._paths(path)
        arrays = {"vectors": self.vectors}
        arrays.update({f"extra/{k}": v for k, v in self.extras.items()})
        with atomic_write_path(npz_path) as tmp:
            np.savez(tmp, **arrays)
            npz_sha = sha256_file(tmp)
        if all(idx is None or _is_range(idx) for idx in self.layers):  # readable by version-1 readers
            version, layers_key = 1, "layer_ranges"
            layers_value = [None if idx is None else [idx[0], idx[-1] + 1] for idx in self.layers]
        else:
            version, layers_key = 2, "layers"
            layers_value = [None if idx is None else list(idx) for idx in self.layers]
        meta = {
            "format": "stylegan_disentangle.DirectionSet",
            "format_version": version,
            "package_version": __version__,
            "names": self.names,
            "vectors_shape": list(self.vectors.shape),
            layers_key: layers_value,
            "step_ranges": [list(r) for r in self.step_ranges],
            "step_unit": self.STEP_UNIT,
            "method": self.method,
            "params": self.params,
            "checkpoint_sha256": self.checkpoint_sha256,
            "n_samples": self.n_samples,
            "seed": self.seed,
            "extras": sorted(self.extras),
            "info": self.info,
            "npz_file": npz_path.name,
            "npz_sha256": npz_sha,
        }
        with atomic_write(json_path, "w") as f:
            json.dump(meta, f, indent=2, allow_nan=False)
            f.write("\n")
        return npz_path, json_path

    @classmethod
    def load(cls, path: str | os.PathLike) -> DirectionSet:
        """Read a set written by `save` (its `<stem>`, `.npz` or `.json`), or the one in a folder that
        `find-directions` wrote (`<folder>/directions`); StyleGANDisentangleError naming the file if it is missing
        or corrupt."""
        npz_path, json_path = cls._paths(path)
        folder = Path(path)
        if folder.is_dir() and not (npz_path.exists() or json_path.exists()):
            npz_path, json_path = cls._paths(folder / "directions")
            if not (npz_path.is_file() or json_path.is_file()):
                raise StyleGANDisentangleError(
                    f"{folder} is a folder without a DirectionSet: find-directions writes its set there as "
                    "directions.npz + directions.json; give that folder, the set's <stem>, or its .npz / .json")
        for p in (json_path, npz_path):
            if not p.is_file():
                raise StyleGANDisentangleError(
                    f"DirectionSet file {p} does not exist (a set is <stem>.npz + <stem>.json)"
                )
        try:
            with open(json_path, encoding="utf-8") as f:
                meta = json.load(f)
        except (OSError, ValueError) as exc:
            raise StyleGANDisentangleError(f"DirectionSet metadata {json_path} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != "stylegan_disentangle.DirectionSet":
            raise StyleGANDisentangleError(f"{json_path} is not a DirectionSet metadata file")
        version = meta.get("format_version", 0)
        if not isinstance(version, int) or isinstance(version, bool):
            raise StyleGANDisentangleError(f"{json_path}: format_version must be an integer, got {version!r}")
        if version > FORMAT_VERSION:
            raise StyleGANDisentangleError(
                f"{json_path} has format version {meta['format_version']}; this package reads up to {FORMAT_VERSION}"
            )
        if meta.get("step_unit", cls.STEP_UNIT) != cls.STEP_UNIT:
            raise StyleGANDisentangleError(f"{json_path} stores step ranges in unit {meta['step_unit']!r}, not 'w'")
        sha = meta.get("npz_sha256")
        if sha is not None and sha != sha256_file(npz_path):
            raise StyleGANDisentangleError(
                f"DirectionSet arrays {npz_path} do not match {json_path} (sha256 differs): the pair was mixed up "
                "or one file was modified"
            )
        try:
            with np.load(npz_path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except Exception as exc:  # zipfile / format errors of many kinds
            raise StyleGANDisentangleError(f"DirectionSet arrays {npz_path} cannot be read: {exc}") from None
        try:
            vectors = arrays.pop("vectors")
            if list(vectors.shape) != meta["vectors_shape"]:
                raise ValueError(f"vectors have shape {list(vectors.shape)}, metadata says {meta['vectors_shape']}")
            extras = {k[len("extra/") :]: v for k, v in arrays.items() if k.startswith("extra/")}
            if sorted(extras) != meta["extras"]:
                raise ValueError(f"extras {sorted(extras)} do not match metadata {meta['extras']}")
            if "layers" in meta:  # version 2: explicit sorted ws indices
                layer_kwargs = dict(layers=[_json_indices(r, "layers") for r in meta["layers"]])
            else:  # version 1: [start, stop) ranges
                layer_kwargs = dict(layer_ranges=[None if r is None else tuple(r) for r in meta["layer_ranges"]])
            return cls(
                names=meta["names"],
                vectors=vectors,
                **layer_kwargs,
                step_ranges=[tuple(r) for r in meta["step_ranges"]],
                method=meta["method"],
                params=meta["params"],
                checkpoint_sha256=meta["checkpoint_sha256"],
                n_samples=meta["n_samples"],
                seed=meta["seed"],
                extras=extras,
                info=meta["info"],
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise StyleGANDisentangleError(f"DirectionSet {json_path} / {npz_path} is inconsistent: {exc}") from None

    def export_interfacegan(self, outdir: str | os.PathLike, replace: bool = False) -> list[Path]:
        """Write one InterFaceGAN-style `boundary_<name>.npy` (`[1, w_dim]` float32, unit norm) per direction, and
        `layers.json` saying which ws indices each boundary is meant for.

        Why `[1, w_dim]` plus a manifest rather than a `[num_ws, w_dim]` W+ boundary with zero rows: InterFaceGAN's
        tools (its `linear_interpolate`) require a `[1, latent_dim]` boundary and move every layer of a W+ code by
        it; a W+ array would fail their shape check. So the .npy stays what they load, and `layers.json` maps each
        file name to `{"direction": name, "ws_layers": [i, ...] | null}` (null = all layers) for users who edit
        only the chosen layers, `ws[:, ws_layers] += step * boundary`, as the direction set does. Entries of other
        boundaries already listed in an existing `layers.json` of `outdir` are kept; with `replace`, they and their
        files are removed instead (a folder that holds one set's boundaries, as find-directions' does).

        Per-layer sets export each direction's mean over its ws layers, renormalised (`flat_vectors`), since an
        InterFaceGAN boundary is a single W vector. Names are made file-safe (characters other than letters, digits,
        '-', '_', '.', '+' become '_'). Returns the boundary paths.
        """
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        flat = self.flat_vectors()
        written: list[Path] = []
        entries: dict[str, Any] = {}
        for name, vec, idx in zip(self.names, flat, self.layers):
            safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
            path = outdir / f"boundary_{safe}.npy"
            if path in written:
                raise ValueError(f"direction names collide after making them file-safe: {path.name}")
            with atomic_write_path(path) as tmp:
                np.save(tmp, vec[None].astype(np.float32))
            written.append(path)
            entries[path.name] = {"direction": name, "ws_layers": None if idx is None else list(idx)}
        manifest_path = outdir / INTERFACEGAN_LAYERS_FILE
        boundaries: dict[str, Any] = {}
        try:
            old = json.loads(manifest_path.read_text(encoding="utf-8"))
            if isinstance(old, dict) and isinstance(old.get("boundaries"), dict):
                boundaries.update(old["boundaries"])
        except (OSError, ValueError):
            pass  # no (readable) manifest yet
        if replace:
            for stale in set(boundaries) - set(entries):
                if Path(stale).name == stale and stale.startswith("boundary_") and stale.endswith(".npy"):
                    (outdir / stale).unlink(missing_ok=True)
            boundaries = {}
        boundaries.update(entries)
        manifest = {
            "format": "stylegan_disentangle.interfacegan_layers",
            "note": "each boundary_*.npy is [1, w_dim]; edit ws[:, ws_layers] += step * boundary (null = all layers)",
            "w_dim": self.w_dim,
            "boundaries": dict(sorted(boundaries.items())),
        }
        with atomic_write(manifest_path, "w") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        return written
