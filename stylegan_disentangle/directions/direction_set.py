"""DirectionSet: the artifact users keep — named unit directions in W with everything needed to use them again.

A set holds K directions, either flat (`vectors` `[K, w_dim]`, applied to every ws layer unless a layer range says
otherwise) or per-layer (`vectors` `[K, num_ws, w_dim]`, unit norm over the flattened `num_ws * w_dim` vector).

Units. `step_ranges` are in **W units**: an edit is `ws + step * vector`, so a step of 2.0 moves the code a Euclidean
distance of 2.0 in W. Finders fitted on samples also store `extras['std']` `[K]` (the std of the W samples along
each direction), so `step / std` converts a step to "sigmas" and `sigma * std` back; `DirectionSet.stds` returns it.

On disk a set is two files side by side: `<stem>.npz` (vectors and extras, no pickles) and `<stem>.json` (names,
ranges, method, parameters, provenance, free metadata and the npz's sha256). Both are written atomically; loading
checks that they belong together.

Example::

    ds = PCADirections(n_components=10).fit(w).to_direction_set(seed=0)
    ds.save("runs/pca")            # runs/pca.npz + runs/pca.json
    ds = DirectionSet.load("runs/pca")
    ws_edit = ws + 2.0 * ds["pc0"]
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..errors import StyleGANDisentangleError
from ..utils import atomic_write, atomic_write_path, sha256_file

__all__ = ["DirectionSet", "FORMAT_VERSION", "to_jsonable"]

FORMAT_VERSION = 1
_UNIT_TOL = 1e-4
_GLOBAL_PREFIX = "global_"


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


class DirectionSet:
    """Named unit directions in W (or W+), their layer and step ranges, and how they were found.

    Parameters
    ----------
    names : list[str]
        K unique direction names.
    vectors : np.ndarray
        `[K, w_dim]` or per-layer `[K, num_ws, w_dim]`; stored as float32, each direction of unit norm (flattened).
    layer_ranges : list[tuple[int, int] | None], optional
        Per direction, the ws index range `[start, stop)` a W+ edit applies to; `None` = all layers (default).
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
    ) -> None:
        names = [str(n) for n in names] if not isinstance(names, str) else [names]
        vectors = np.array(vectors, dtype=np.float32, copy=True)
        if vectors.ndim == 1:
            vectors = vectors[None]
        if vectors.ndim not in (2, 3):
            raise ValueError(
                f"DirectionSet vectors must be [K, w_dim] or [K, num_ws, w_dim], got shape {vectors.shape}"
            )
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

        num_ws = vectors.shape[1] if vectors.ndim == 3 else None
        if layer_ranges is None:
            layer_ranges = [None] * k
        if len(layer_ranges) != k:
            raise ValueError(f"DirectionSet has {k} directions but {len(layer_ranges)} layer ranges")
        checked_layers: list[tuple[int, int] | None] = []
        for name, rng in zip(names, layer_ranges):
            if rng is None:
                checked_layers.append(None)
                continue
            if len(rng) != 2:
                raise ValueError(f"layer range of {name!r} must be (start, stop), got {rng!r}")
            start, stop = int(rng[0]), int(rng[1])
            if start != rng[0] or stop != rng[1] or not 0 <= start < stop:
                raise ValueError(f"layer range of {name!r} must be integers 0 <= start < stop, got {rng!r}")
            if num_ws is not None and stop > num_ws:
                raise ValueError(f"layer range of {name!r} is {rng!r} but the vectors have only {num_ws} ws layers")
            checked_layers.append((start, stop))

        if step_ranges is None:
            step_ranges = [(-3.0, 3.0)] * k
        if len(step_ranges) != k:
            raise ValueError(f"DirectionSet has {k} directions but {len(step_ranges)} step ranges")
        checked_steps: list[tuple[float, float]] = []
        for name, rng in zip(names, step_ranges):
            if len(rng) != 2:
                raise ValueError(f"step range of {name!r} must be (low, high), got {rng!r}")
            lo, hi = float(rng[0]), float(rng[1])
            if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
                raise ValueError(f"step range of {name!r} must be finite with low <= high, got {rng!r}")
            checked_steps.append((lo, hi))

        checked_extras: dict[str, np.ndarray] = {}
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
            checked_extras[key] = arr

        if checkpoint_sha256 is not None and not isinstance(checkpoint_sha256, str):
            raise ValueError(f"checkpoint_sha256 must be a hex string or None, got {checkpoint_sha256!r}")
        for what, value in (("n_samples", n_samples), ("seed", seed)):
            if value is not None and (isinstance(value, bool) or int(value) != value):
                raise ValueError(f"{what} must be an integer or None, got {value!r}")

        self.names: list[str] = names
        self.vectors: np.ndarray = vectors
        self.layer_ranges: list[tuple[int, int] | None] = checked_layers
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

    def layer_range(self, name: str) -> tuple[int, int] | None:
        return self.layer_ranges[self.index(name)]

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
            and self.layer_ranges == other.layer_ranges
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
            layer_ranges=self.layer_ranges,
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
            layer_ranges=[self.layer_ranges[i] for i in idx],
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
        """`[K, w_dim]` float32 unit vectors; per-layer sets are averaged over each layer range and renormalised."""
        if not self.per_layer:
            return self.vectors.copy()
        out = np.empty((len(self), self.w_dim), dtype=np.float32)
        for i, rng in enumerate(self.layer_ranges):
            start, stop = rng if rng is not None else (0, self.num_ws)
            v = self.vectors[i, start:stop].astype(np.float64).mean(axis=0)
            norm = np.linalg.norm(v)
            if norm < 1e-12:
                raise ValueError(f"direction {self.names[i]!r} averages to zero over layers [{start}, {stop})")
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
        meta = {
            "format": "stylegan_disentangle.DirectionSet",
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "names": self.names,
            "vectors_shape": list(self.vectors.shape),
            "layer_ranges": [None if r is None else list(r) for r in self.layer_ranges],
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
        """Read a set written by `save`; StyleGANDisentangleError naming the file if it is missing or corrupt."""
        npz_path, json_path = cls._paths(path)
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
        if meta.get("format_version", 0) > FORMAT_VERSION:
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
            return cls(
                names=meta["names"],
                vectors=vectors,
                layer_ranges=[None if r is None else tuple(r) for r in meta["layer_ranges"]],
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

    def export_interfacegan(self, outdir: str | os.PathLike) -> list[Path]:
        """Write one InterFaceGAN-style `boundary_<name>.npy` (`[1, w_dim]` float32, unit norm) per direction.

        Per-layer sets export each direction's mean over its layer range, renormalised (`flat_vectors`), since an
        InterFaceGAN boundary is a single W vector. Names are made file-safe (characters other than letters, digits,
        '-', '_', '.', '+' become '_').
        """
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        flat = self.flat_vectors()
        written = []
        for name, vec in zip(self.names, flat):
            safe = "".join(c if c.isalnum() or c in "-_.+" else "_" for c in name)
            path = outdir / f"boundary_{safe}.npy"
            if path in written:
                raise ValueError(f"direction names collide after making them file-safe: {path.name}")
            with atomic_write_path(path) as tmp:
                np.save(tmp, vec[None].astype(np.float32))
            written.append(path)
        return written
