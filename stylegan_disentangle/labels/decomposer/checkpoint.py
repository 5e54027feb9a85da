"""Official Unsup3D checkpoints: read them without executing anything, infer the nets' sizes, write the same layout.

An official training checkpoint (`checkpointNNN.pth`, written by `torch.save`, zip or pre-1.6 format) is a dict

    netD, netA, netL, netV, netC          state dicts (netC absent when the model ran without confidence maps;
                                          a "clean" checkpoint holds only the nets)
    optimizerD, ..., optimizerC           Adam state dicts
    metrics_trace                         a pickled `unsup3d.meters.MetricsTrace` object (its `data` dict)
    epoch                                 int
    stylegan_disentangle                  (ours, only when there is something to record) {"settings": the
                                          decomposer's constructor arguments that differ from the official
                                          scalings, "trained_on": the generator's fingerprint or None}; the
                                          official code reads only the keys it knows and ignores it

Reading uses `torch.load(weights_only=True)`: tensors, dicts and numbers only. The only other globals accepted are
the classes of `unsup3d.*` (the metrics objects); each one is replaced by an inert stand-in of ours that keeps the
pickled state as plain data — the `unsup3d` package is never imported and nothing from the file runs. Any other
global (a StyleGAN network pickle's `torch_utils.persistence`, `os.system`, ...) makes loading fail.

Writing (`save_unsup3d`) produces the same layout atomically: the present nets' state dicts, the optimizer states
read with them, `metrics_trace` (written as a reference to `unsup3d.meters.MetricsTrace` plus its `data`, so the
official trainer can resume from the file; our loader reads it back as plain data), `epoch`, and our settings
record, so that a checkpoint copied away from its training folder keeps the scalings the official layout has no
place for (`xy_light_range`, `light_mask`, ...).
"""

from __future__ import annotations

import os
import pickle
import pickletools
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...checkpoints.writer import _GlobalRef
from ...errors import CheckpointError
from ...utils import atomic_write
from .model import NET_NAMES, Unsup3DDecomposer
from .networks import SUPPORTED_IMAGE_SIZES, ConfNet, EDDeconv, Encoder, encoder_multipliers

__all__ = ["OpaqueObject", "infer_unsup3d_sizes", "load_unsup3d", "read_unsup3d_checkpoint", "save_unsup3d"]

SETTINGS_KEY = "stylegan_disentangle"
"""The checkpoint key of our settings record (see the module docstring)."""

_METRICS_CLASSES = ("MetricsTrace", "StandardMetrics", "Metrics", "TotalAverage", "MovingAverage")
_UNSUPPORTED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_MAX_STAND_INS = 32


# ---------------------------------------------------------------------------------------------- reading
class OpaqueObject:
    """Inert stand-in for a pickled object of a class we refuse to import (e.g. `unsup3d.meters.MetricsTrace`).

    It records the constructor arguments and the pickled state; it has no behaviour. Subclasses are made per
    qualified name (`qualified_name`) so that torch's weights-only unpickler can tell them apart.
    """

    qualified_name = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> OpaqueObject:
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<stand-in for {self.qualified_name}>"


_STAND_INS: dict[str, type[OpaqueObject]] = {}


def _stand_in(qualified_name: str) -> type[OpaqueObject]:
    if qualified_name not in _STAND_INS:
        name = qualified_name.rsplit(".", 1)[-1]
        _STAND_INS[qualified_name] = type(f"StandIn_{name}", (OpaqueObject,), {"qualified_name": qualified_name})
    return _STAND_INS[qualified_name]


def _plain(value: Any) -> Any:
    """Replace stand-ins by plain data, recursively: {'__class__': name, 'state': ..., 'args': [...]}."""
    if isinstance(value, OpaqueObject):
        return {"__class__": value.qualified_name, "state": _plain(value.state), "args": _plain(list(value.args))}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return value


def _torch_load(path: Path) -> Any:
    allowed = {f"unsup3d.meters.{n}": _stand_in(f"unsup3d.meters.{n}") for n in _METRICS_CLASSES}
    if not hasattr(torch.serialization, "safe_globals"):
        raise CheckpointError(f"{path}: reading Unsup3D checkpoints needs torch >= 2.5 (torch.serialization."
                              f"safe_globals); this is torch {torch.__version__}")
    for _ in range(_MAX_STAND_INS):
        try:
            with torch.serialization.safe_globals([(cls, name) for name, cls in allowed.items()]), \
                    warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            match = _UNSUPPORTED_GLOBAL.search(str(exc))
            name = match.group(1) if match else None
            if name is None:
                foreign = [g for g in _pickle_globals(path) if not g.startswith(_PLAIN_GLOBALS)]
                if foreign:
                    raise CheckpointError(_refusal(path, foreign[0])) from None
                raise _unreadable(path, exc) from None
            if not name.startswith("unsup3d.") or name in allowed:
                raise CheckpointError(_refusal(path, name)) from None
            allowed[name] = _stand_in(name)
    raise CheckpointError(f"{path}: references more than {_MAX_STAND_INS} unsup3d classes; not an Unsup3D checkpoint")


_PLAIN_GLOBALS = ("torch.", "collections.OrderedDict", "unsup3d.")


def _pickle_globals(path: Path, max_ops: int = 1_000_000) -> list[str]:
    """Globals named by the first pickle in a non-zip file, read with pickletools' parser (nothing is built)."""
    names: list[str] = []
    strings: list[str] = []
    try:
        with open(path, "rb") as f:
            if f.read(2) == b"PK":
                return names
            f.seek(0)
            for i, (op, arg, _) in enumerate(pickletools.genops(f)):
                if op.name == "GLOBAL":
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    names.append(f"{strings[-2]}.{strings[-1]}")
                elif isinstance(arg, str):
                    strings.append(arg)
                if i >= max_ops:
                    break
    except Exception:  # a broken pickle: report what was found before the break
        pass
    return names


def _first_line(exc: BaseException) -> str:
    """The informative line of an exception message (torch's weights-only errors wrap it in boilerplate that asks
    the reader to file an issue with torch)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    specific = [line for line in lines if "GLOBAL" in line or "Unsupported" in line]
    useful = [line for line in lines if "error" in line.lower() and "file an issue" not in line]
    text = (specific or useful or lines or ["truncated or empty file"])[0]
    return f"{type(exc).__name__}: {text}"[:300]


def _unreadable(path: Path, exc: BaseException) -> CheckpointError:
    """The error for a file torch cannot read: a foreign or truncated file, named by what it starts with."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        return CheckpointError(f"{path}: empty file, not a torch checkpoint")
    if not head.startswith((b"PK", b"\x80")):
        return CheckpointError(f"{path}: not a torch checkpoint: neither a zip archive nor a pickle (it starts with "
                               f"{head!r})")
    if "Unsupported operand" in str(exc):  # e.g. 149, FRAME: torch.save(..., pickle_protocol=4)
        return CheckpointError(f"{path}: written with a pickle protocol that torch's safe (weights-only) reader "
                               f"cannot read ({_first_line(exc)}); save it again with torch.save's default "
                               "pickle_protocol=2")
    return CheckpointError(f"{path}: not a readable torch checkpoint, truncated or corrupt ({_first_line(exc)})")


def _refusal(path: Path, name: str) -> str:
    hint = ""
    if name.startswith(("torch_utils.", "dnnlib.")):
        hint = " It looks like a StyleGAN network pickle: read it with stylegan_disentangle.load_network_pkl."
    return (f"{path}: refusing to load: the file references the global {name}, which is neither a tensor nor an "
            f"Unsup3D metrics object, so it is no Unsup3D checkpoint (nothing from it was imported or run).{hint}")


def read_unsup3d_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw top-level dict of an Unsup3D checkpoint (tensors on CPU; metrics objects as `OpaqueObject`s).

    Raises CheckpointError naming the file when it is missing, not a torch file, truncated, references any global
    other than tensors / `unsup3d.*` metrics classes, or holds none of netD, netA, netL, netV, netC.
    """
    path = Path(path)
    if path.is_dir():
        inside = path / "checkpoint.pth"  # a training run's folder (train_decomposer's outdir)
        hint = f"; its training checkpoint is {inside}" if inside.is_file() else ""
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        raw = _torch_load(path)
    except CheckpointError:
        raise
    except Exception as exc:  # zip / storage / EOF errors from a truncated or foreign file
        raise _unreadable(path, exc) from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{path}: not an Unsup3D checkpoint: it holds a {type(raw).__name__}, expected a dict "
                              f"with {', '.join(NET_NAMES)} state dicts")
    if not any(raw.get(name) is not None for name in NET_NAMES):
        keys = sorted(str(k) for k in raw)[:12]
        raise CheckpointError(f"{path}: not an Unsup3D checkpoint: none of {', '.join(NET_NAMES)} among its keys "
                              f"{keys}")
    return dict(raw)


# ---------------------------------------------------------------------------------------------- sizes
_ROLES: dict[str, tuple[str, dict]] = {
    "netD": ("EDDeconv", dict(cin=3, cout=1, tanh=False)),
    "netA": ("EDDeconv", dict(cin=3, cout=3, tanh=True)),
    "netL": ("Encoder", dict(cin=3, cout=4)),
    "netV": ("Encoder", dict(cin=3, cout=6)),
    "netC": ("ConfNet", dict(cin=3, cout=2)),
}
_OFFICIAL = {"netD": (64, 256), "netA": (64, 256), "netL": (32, None), "netV": (32, None), "netC": (64, 128)}


def _template(name: str, image_size: int, nf: int, zdim: int | None) -> nn.Module:
    """The network `name` built on the meta device (shapes only, no memory, no init)."""
    cls, kwargs = _ROLES[name]
    with torch.device("meta"):
        if cls == "EDDeconv":
            return EDDeconv(zdim=zdim, nf=nf, image_size=image_size, **kwargs)
        if cls == "Encoder":
            return Encoder(nf=nf, image_size=image_size, **kwargs)
        return ConfNet(zdim=zdim, nf=nf, image_size=image_size, **kwargs)


def _shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def _infer_one(name: str, sd: Any, path: Path) -> tuple[int, int, int | None]:
    """(image_size, nf, zdim) of one net's state dict, checked key by key and shape by shape."""
    cls = _ROLES[name][0]
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"{path}: entry {name!r} should be the state dict of an Unsup3D {cls}, "
                              f"got a {type(sd).__name__}")
    for key, value in sd.items():
        if not torch.is_tensor(value):
            raise CheckpointError(f"{path}: {name}[{key!r}] should be a tensor, got a {type(value).__name__}")
    official_nf, official_zdim = _OFFICIAL[name]
    layouts = {size: _shapes(_template(name, size, 16, None if official_zdim is None else 16))
               for size in SUPPORTED_IMAGE_SIZES}
    keys = set(sd)
    image_size = next((size for size, shapes in layouts.items() if set(shapes) == keys), None)
    if image_size is None:
        size = min(layouts, key=lambda s: len(set(layouts[s]) ^ keys))  # the closest layout, for the message
        expected = _shapes(_template(name, size, official_nf, official_zdim))
        missing = [k for k in expected if k not in keys]
        unexpected = sorted(keys - set(expected))
        detail = []
        if missing:
            more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
            detail.append(f"missing {missing[0]!r} (expected shape {list(expected[missing[0]])} in the {size}x{size} "
                          f"layout with the official widths){more}")
        if unexpected:
            detail.append(f"unexpected keys {unexpected[:4]}{' ...' if len(unexpected) > 4 else ''}")
        raise CheckpointError(f"{path}: {name} is not the state dict of an Unsup3D {cls} (netD/netA: EDDeconv, "
                              f"netL/netV: Encoder, netC: ConfNet): {'; '.join(detail)}")
    mults = encoder_multipliers(image_size)
    first = sd["network.0.weight"]
    if first.ndim != 4 or first.shape[0] % mults[0]:
        raise CheckpointError(f"{path}: {name}['network.0.weight'] has shape {list(first.shape)}, expected "
                              f"[nf*{mults[0]}, 3, 4, 4] of an Unsup3D {cls} at {image_size}x{image_size}")
    nf = int(first.shape[0]) // mults[0]
    zdim = None
    if official_zdim is not None:
        zkey = f"network.{3 * len(mults) - 1}.weight"  # the 4x4 conv to the bottleneck
        zdim = int(sd[zkey].shape[0]) if sd[zkey].ndim == 4 else -1
    try:
        expected = _shapes(_template(name, image_size, nf, zdim))
    except (ValueError, RuntimeError) as exc:  # GroupNorm needs nf divisible by 16
        raise CheckpointError(f"{path}: {name} has nf={nf}, zdim={zdim}, which no Unsup3D {cls} has "
                              f"({_first_line(exc)})") from None
    for key, shape in expected.items():
        if tuple(sd[key].shape) != shape:
            raise CheckpointError(f"{path}: {name}[{key!r}] has shape {list(sd[key].shape)}, expected {list(shape)} "
                                  f"(an Unsup3D {cls} with nf={nf}" + (f", zdim={zdim}" if zdim else "") +
                                  f" at {image_size}x{image_size}, as its other keys say)")
    return image_size, nf, zdim


def infer_unsup3d_sizes(raw: Mapping[str, Any], path: str | os.PathLike = "<checkpoint>") -> dict[str, Any]:
    """Constructor arguments of `Unsup3DDecomposer` (image_size, nf, zdim, ..., nets) from the state dicts' shapes."""
    path = Path(path)
    found = {name: _infer_one(name, raw[name], path) for name in NET_NAMES if raw.get(name) is not None}
    resolutions = {name: v[0] for name, v in found.items()}
    if len(set(resolutions.values())) > 1:
        raise CheckpointError(f"{path}: its networks are built for different resolutions {resolutions}")
    args: dict[str, Any] = {"image_size": next(iter(resolutions.values())), "nets": list(found)}
    names = {"netD": ("nf", "zdim"), "netA": ("nf_albedo", "zdim_albedo"), "netL": ("nf_light", None),
             "netV": ("nf_view", None), "netC": ("nf_conf", "zdim_conf")}
    for name, (_, nf, zdim) in found.items():
        nf_arg, zdim_arg = names[name]
        args[nf_arg] = nf
        if zdim_arg is not None:
            args[zdim_arg] = zdim
    if "netD" not in found and "netA" in found:  # nf / zdim default to netA's when netD is absent
        args["nf"], args["zdim"] = args["nf_albedo"], args["zdim_albedo"]
    return args


# ---------------------------------------------------------------------------------------------- load / save
def load_unsup3d(path: str | os.PathLike, device: torch.device | str = "cpu", **scalings: Any) -> Unsup3DDecomposer:
    """Read an official Unsup3D checkpoint into an `Unsup3DDecomposer` (sizes inferred from the shapes).

    `scalings` override the official output scalings (min_depth, max_depth, border_depth, xyz_rotation_range,
    xy_translation_range, z_translation_range, fov, ...). Nets missing from the file are None on the result;
    optimizer states, `epoch` and the metrics trace (as plain data) are kept for `save`.
    """
    path = Path(path)
    raw = read_unsup3d_checkpoint(path)
    args = infer_unsup3d_sizes(raw, path)
    bad = sorted(set(scalings) & set(args))
    if bad:
        raise CheckpointError(f"{path}: {bad} are read from the file's shapes and cannot be overridden")
    stored, trained_on = _stored_settings(raw, path, set(args))
    try:
        with torch.device("meta"):
            decomposer = Unsup3DDecomposer(**args, **{**stored, **scalings})
    except (TypeError, ValueError) as exc:  # an unknown scaling, or one that is no number
        where = f"{SETTINGS_KEY}['settings'] or " if stored else ""
        raise CheckpointError(f"{path}: {where}{exc}") from None
    for name in args["nets"]:
        try:
            getattr(decomposer, name).load_state_dict(_float32(raw[name], name, path), strict=True, assign=True)
        except RuntimeError as exc:
            detail = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())[:300]
            raise CheckpointError(f"{path}: {name} does not fit an Unsup3D net ({detail})") from None
    decomposer.optimizer_states = {k: raw[k] for k in raw if isinstance(k, str) and k.startswith("optimizer")}
    epoch = raw.get("epoch", 0)
    if isinstance(epoch, torch.Tensor) and epoch.numel() == 1:
        epoch = int(epoch.item())
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise CheckpointError(f"{path}: 'epoch' should be an int, got {type(epoch).__name__}")
    decomposer.epoch = epoch
    trace = raw.get("metrics_trace")
    if isinstance(trace, OpaqueObject):
        trace = _plain(trace.state)
    decomposer.metrics_trace = _plain(trace)
    decomposer.source = str(path)
    decomposer.trained_on = trained_on
    return decomposer.to(device).eval()


def _stored_settings(raw: Mapping[str, Any], path: Path, sizes: set[str]) -> tuple[dict[str, Any], str | None]:
    """The settings and generator fingerprint that `save_unsup3d` stored in the checkpoint (empty, None for an
    official file); CheckpointError naming the file and key when the record is malformed."""
    record = raw.get(SETTINGS_KEY)
    if record is None:
        return {}, None
    settings = record.get("settings", {}) if isinstance(record, Mapping) else None
    trained_on = record.get("trained_on") if isinstance(record, Mapping) else None
    if not isinstance(settings, Mapping) or not all(isinstance(k, str) for k in settings):
        raise CheckpointError(f"{path}: {SETTINGS_KEY!r} should be {{'settings': {{name: value}}, 'trained_on': "
                              f"fingerprint}}, got {str(record)[:200]}")
    if trained_on is not None and not isinstance(trained_on, str):
        raise CheckpointError(f"{path}: {SETTINGS_KEY}['trained_on'] should be a generator fingerprint (a string) "
                              f"or None, got {trained_on!r}")
    return {k: v for k, v in settings.items() if k not in sizes and k != "nets"}, trained_on


def _float32(sd: Mapping[str, torch.Tensor], name: str, path: Path) -> dict[str, torch.Tensor]:
    """A copy of the state dict `sd` with floating tensors (half, bfloat16, double) as float32, the dtype the nets
    run in; CheckpointError naming the file and key for a tensor that is no float (weights cannot be integers)."""
    out = {}
    for key, value in sd.items():
        if not value.is_floating_point():
            raise CheckpointError(f"{path}: {name}[{key!r}] holds {value.dtype} values; Unsup3D weights are "
                                  "floating point")
        if not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: {name}[{key!r}] holds {int((~torch.isfinite(value)).sum())} NaN or inf "
                                  f"value(s) of {value.numel()}: the net is damaged")
        out[key] = value.float()
    return out


class _Unsup3DPickler(pickle._Pickler):
    """Pure-Python pickler that writes a `_GlobalRef` as a protocol-0 GLOBAL (torch's weights-only reader and the
    official code both read it) without importing the referenced module."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global_ref(self, obj: _GlobalRef) -> None:
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[_GlobalRef] = _save_global_ref


class _PickleModule:
    """The `pickle_module` handed to torch.save: our pickler, the standard everything else."""

    __name__ = "stylegan_disentangle_unsup3d_pickle"
    Pickler = _Unsup3DPickler
    dump = staticmethod(pickle.dump)


class _MetricsTraceRecord:
    """Pickles as `unsup3d.meters.MetricsTrace()` with `__dict__` = state (how the official trainer wrote it)."""

    _REF = _GlobalRef("unsup3d.meters", "MetricsTrace")

    def __init__(self, state: dict) -> None:
        self.state = state

    def __reduce__(self):
        return self._REF, (), self.state


def save_unsup3d(decomposer: Unsup3DDecomposer, path: str | os.PathLike,
                 weights_dtype: torch.dtype = torch.float32) -> Path:
    """Write `decomposer` as an official Unsup3D training checkpoint (atomically); returns the path.

    Layout: the present nets' state dicts (CPU tensors) in the official order, the optimizer states it carries,
    `metrics_trace` (its data, default {'data': {}}), `epoch`, and, when the decomposer has settings other than the
    official scalings or knows its generator, our settings record (`SETTINGS_KEY`: those settings and
    `trained_on`, which `load_unsup3d` reads back). The official demo, test and resume code read it;
    `load_unsup3d` reads it back bit for bit. `weights_dtype=torch.float16` halves the file (package data); the
    official `load_state_dict` and `load_unsup3d` cast the weights back to float32, rounded.
    """
    path = Path(path)
    if weights_dtype not in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        raise CheckpointError(f"{path}: weights_dtype should be a floating dtype, got {weights_dtype}")
    state: dict[str, Any] = {}
    for name in decomposer.present_nets:
        sd = getattr(decomposer, name).state_dict()  # an OrderedDict with torch's _metadata, as official files
        for key in sd:
            value = sd[key].detach().cpu()
            sd[key] = value.to(weights_dtype) if value.is_floating_point() else value
        state[name] = sd
    state.update(decomposer.optimizer_states)
    trace = decomposer.metrics_trace if decomposer.metrics_trace is not None else {"data": {}}
    state["metrics_trace"] = _MetricsTraceRecord(trace) if _is_plain_trace(trace) else trace
    state["epoch"] = int(decomposer.epoch)
    settings = _settings_to_store(decomposer, infer_unsup3d_sizes(state, path))
    if settings or decomposer.trained_on is not None:  # an official decomposer's file keeps the official keys
        state[SETTINGS_KEY] = {"settings": settings, "trained_on": decomposer.trained_on}
    try:
        with atomic_write(path, "wb") as f:
            torch.save(state, f, pickle_module=_PickleModule)
    except (OSError, pickle.PicklingError, AttributeError, TypeError) as exc:  # unpicklable extras
        raise CheckpointError(f"{path}: could not write the Unsup3D checkpoint ({_first_line(exc)})") from exc
    return path


def _settings_to_store(decomposer: Unsup3DDecomposer, sizes: dict[str, Any]) -> dict[str, Any]:
    """The decomposer's constructor arguments that its nets' shapes do not give and that differ from the defaults
    (the official scalings)."""
    with torch.device("meta"):
        defaults = Unsup3DDecomposer(**sizes).get_config()
    return {k: v for k, v in decomposer.get_config().items()
            if k not in sizes and k != "nets" and defaults.get(k) != v}


def _is_plain_trace(trace: Any) -> bool:
    """A MetricsTrace's state: {'data': {dataset: [ {metric: number}, ... ]}}."""
    if not isinstance(trace, dict) or set(trace) != {"data"} or not isinstance(trace["data"], dict):
        return False
    return all(isinstance(rows, list) for rows in trace["data"].values())
