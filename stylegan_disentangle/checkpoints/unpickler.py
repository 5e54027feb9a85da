"""A restricted unpickler for network pickles: nothing in the file is ever imported or executed.

Official StyleGAN pickles reference a handful of globals. Each allowed one is mapped to a function of ours:
  torch_utils.persistence._reconstruct_persistent_obj -> PersistentDescription (class name, version, state)
  torch.storage._load_from_bytes                       -> torch.load(..., weights_only=True)
  torch._utils._rebuild_tensor_v2 / _rebuild_parameter -> torch's own tensor rebuilders (data only)
  dnnlib.tflib.network.Network                         -> TFNetworkDescription (state dict of a TF network)
  dnnlib.EasyDict / dnnlib.util.EasyDict                -> plain dict
  collections.OrderedDict, numpy scalar / dtype / ndarray rebuilders, _codecs.encode (latin-1 only)
Every other global makes `find_class` raise before anything is called.
"""

from __future__ import annotations

import codecs
import collections
import importlib
import io
import pickle
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError


@dataclass
class PersistentDescription:
    """What an official persistent object (a network module) holds, without its code.

    `state` is the module's `__dict__` as pickled: `_parameters`, `_buffers`, `_modules` (nested descriptions),
    plain attributes, and `_init_args` / `_init_kwargs` (the constructor arguments).
    """

    class_name: str
    version: int
    state: dict
    module_src_len: int = 0

    def _entry(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        value = self.state.get(key, default)
        if not isinstance(value, kind):
            raise CheckpointError(f"malformed {self.class_name}: its {key} is a {type(value).__name__}")
        return value

    @property
    def init_args(self) -> tuple:
        return tuple(self._entry("_init_args", (list, tuple), ()))

    @property
    def init_kwargs(self) -> dict:
        return dict(self._entry("_init_kwargs", dict, {}))

    @property
    def submodules(self) -> dict[str, Any]:
        return dict(self._entry("_modules", dict, {}))

    def tensors(self, group: str) -> dict[str, Any]:
        """The `_parameters` or `_buffers` entry (an empty dict when absent)."""
        return dict(self._entry(group, dict, {}) or {})

    def attributes(self) -> dict[str, Any]:
        """Plain public attributes (the module's effective settings, e.g. use_fp16, conv_clamp)."""
        return {k: v for k, v in self.state.items() if not k.startswith("_") and k != "training"}

    def walk(self, prefix: str = ""):
        """Yield (dotted path, description) for this description and every nested one."""
        yield prefix, self
        for name, child in self.submodules.items():
            if isinstance(child, PersistentDescription):
                yield from child.walk(f"{prefix}.{name}" if prefix else name)


@dataclass
class TFNetworkDescription:
    """The pickled state of a TensorFlow `dnnlib.tflib.network.Network`: name, kwargs, variables, components."""

    state: dict = field(default_factory=dict)

    def __setstate__(self, state: dict) -> None:
        if not isinstance(state, dict):
            raise CheckpointError(f"TF network state must be a dict, got {type(state).__name__}")
        self.state = state

    @property
    def name(self) -> str:
        return str(self.state.get("name", ""))

    @property
    def static_kwargs(self) -> dict:
        return dict(self.state.get("static_kwargs", {}))

    def variables(self, prefix: str = "") -> dict[str, np.ndarray]:
        """All variables of this network and its components as {'component/var/name': array}."""
        out = {prefix + name: np.asarray(value) for name, value in self.state.get("variables", [])}
        for comp_name, comp in self.state.get("components", {}).items():
            if isinstance(comp, TFNetworkDescription):
                out.update(comp.variables(prefix + comp_name + "/"))
        return out


class EasyDictDescription(dict):
    """Stand-in for dnnlib's EasyDict: a plain dict (attribute access is not needed to read a checkpoint)."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.update(state)


def plain_data(value: Any) -> Any:
    """`value` with every EasyDict stand-in (at any depth, in dicts, lists and tuples) turned into a plain dict, so
    that what a loaded file's settings hold can be written again without naming a class of this module."""
    if isinstance(value, dict) and not isinstance(value, PersistentDescription):
        return {k: plain_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain_data(v) for v in value)
    return value


def _persistent_obj(meta: Any) -> PersistentDescription:
    if not isinstance(meta, dict) or meta.get("type") != "class" or "class_name" not in meta:
        raise CheckpointError("malformed persistent object (expected a dict with type='class' and class_name)")
    src = meta.get("module_src") or ""
    return PersistentDescription(class_name=str(meta["class_name"]), version=int(meta.get("version", -1)),
                                 state=dict(meta.get("state") or {}), module_src_len=len(src))


def _load_storage(data: bytes):
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding != "latin1":
        raise CheckpointError(f"_codecs.encode with encoding {encoding!r} is not allowed")
    return codecs.encode(text, "latin1")


def _numpy_global(name: str):
    """numpy's scalar / ndarray rebuilders, from numpy._core (numpy 2) or numpy.core (numpy 1)."""
    try:
        multiarray = importlib.import_module("numpy._core.multiarray")
    except ImportError:
        multiarray = importlib.import_module("numpy.core.multiarray")
    return getattr(multiarray, name)


_TORCH_REBUILDERS = {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_parameter_with_state", "_rebuild_tensor"}
_TORCH_DTYPES = {"float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool"}


def allowed_global(module: str, name: str) -> Any:
    """Return our stand-in for an allowed (module, name), or raise CheckpointError."""
    if module == "torch_utils.persistence" and name == "_reconstruct_persistent_obj":
        return _persistent_obj
    if module == "torch.storage" and name == "_load_from_bytes":
        return _load_storage
    if module == "torch._utils" and name in _TORCH_REBUILDERS:
        return getattr(torch._utils, name)
    if module == "torch" and name in _TORCH_DTYPES:
        return getattr(torch, name)
    if module == "collections" and name == "OrderedDict":
        return collections.OrderedDict
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("scalar", "_reconstruct"):
        return _numpy_global(name)
    if module == "numpy" and name == "dtype":
        return np.dtype
    if module == "numpy" and name == "ndarray":
        return np.ndarray
    if module == "_codecs" and name == "encode":
        return _latin1_encode
    if module == "dnnlib.tflib.network" and name == "Network":
        return TFNetworkDescription
    if module in ("dnnlib", "dnnlib.util") and name == "EasyDict":
        return EasyDictDescription
    if module == "builtins" and name in ("set", "frozenset"):
        return {"set": set, "frozenset": frozenset}[name]
    raise CheckpointError(f"refusing to load global {module}.{name}: only tensors, numpy arrays and network "
                          "descriptions may appear in a network pickle")


class RestrictedUnpickler(pickle.Unpickler):
    """pickle.Unpickler that resolves only the allow-listed globals (see the module docstring)."""

    def find_class(self, module: str, name: str) -> Any:
        return allowed_global(module, name)

    def persistent_load(self, pid: Any) -> Any:
        raise CheckpointError(f"unexpected persistent id {pid!r} (torch.save archives are not network pickles)")


def restricted_load(f) -> Any:
    """Unpickle from a binary file object with the restricted unpickler."""
    return RestrictedUnpickler(f).load()
