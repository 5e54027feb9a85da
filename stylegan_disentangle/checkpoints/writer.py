"""Write network pickles in the official StyleGAN2-ADA / StyleGAN3 layout.

Each network module becomes `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
meta = {type: 'class', version: 6, module_src, class_name, state}, where `state` is the module's `__dict__`
(parameters, buffers, nested modules, attributes, `_init_args`, `_init_kwargs`). We put a placeholder in `module_src`
instead of source code: our loader never executes it, and nothing we write carries code.
The global is written by name; the writer never imports or defines `torch_utils`.
"""

from __future__ import annotations

import copy
import os
import pickle
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..networks import network_classes
from ..utils import atomic_write
from .loader import NETWORK_CLASS_NAMES
from .unpickler import PersistentDescription

FORMAT_VERSION = 6
MODULE_SRC_PLACEHOLDER = (
    "# Written by stylegan_disentangle. No network source is included: load this file with\n"
    "# stylegan_disentangle.load_network_pkl, which rebuilds the classes from their names and arguments.\n"
)
_PROTOCOL = 4


class _GlobalRef:
    """A reference to a global by module and name, pickled as such without importing it."""

    def __init__(self, module: str, name: str) -> None:
        self.module = module
        self.name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self.module}.{self.name} is only a name written into a pickle")


_RECONSTRUCT = _GlobalRef("torch_utils.persistence", "_reconstruct_persistent_obj")


class _PersistentObject:
    """Pickles as the official persistence call for one module's description."""

    def __init__(self, meta: dict) -> None:
        self.meta = meta

    def __reduce__(self):
        return _RECONSTRUCT, (self.meta,)


class _OfficialLayoutPickler(pickle._Pickler):
    """Pure-Python pickler that knows how to write a _GlobalRef."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_global_ref(self, obj: _GlobalRef) -> None:
        self.save(obj.module)
        self.save(obj.name)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    dispatch[_GlobalRef] = _save_global_ref


def describe_module(module: nn.Module) -> _PersistentObject:
    """The official-layout description of one of our network modules (recursively)."""
    name = type(module).__name__
    if network_classes().get(name) is not type(module):
        raise CheckpointError(f"cannot write a {name}: only this package's network classes can be saved")
    state = dict(module.__dict__)
    for key in ("_init_args", "_init_kwargs"):
        state[key] = _writable(state.get(key, () if key == "_init_args" else {}))
    state["_modules"] = {k: describe_module(v) if v is not None else None for k, v in module._modules.items()}
    state["_parameters"] = dict(module._parameters)
    state["_buffers"] = {k: v.detach().cpu() if v is not None else None for k, v in module._buffers.items()}
    state["_parameters"] = {k: (nn.Parameter(v.detach().cpu(), requires_grad=v.requires_grad) if v is not None
                                else None) for k, v in module._parameters.items()}
    meta = dict(type="class", version=FORMAT_VERSION, module_src=MODULE_SRC_PLACEHOLDER, class_name=name,
                state=state)
    return _PersistentObject(meta)


def describe_persistent(desc: PersistentDescription) -> _PersistentObject:
    """A loaded official object we do not rebuild (e.g. `augment_pipe`) written back as the same persistent object,
    its nested ones too, with our placeholder in place of its source."""
    meta = dict(type="class", version=desc.version, module_src=MODULE_SRC_PLACEHOLDER, class_name=desc.class_name,
                state=_writable(desc.state))
    return _PersistentObject(meta)


def _writable(value: Any) -> Any:
    """Plain data as it will be pickled: loaded descriptions become persistent objects again, EasyDict stand-ins
    plain dicts, tensors detached CPU copies."""
    if isinstance(value, PersistentDescription):
        return describe_persistent(value)
    if isinstance(value, nn.Parameter):
        return nn.Parameter(value.detach().cpu(), requires_grad=value.requires_grad)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_writable(v) for v in value)
    return copy.deepcopy(value)


def _check_networks(path: str | os.PathLike, data: dict[str, Any]) -> None:
    for key, name in NETWORK_CLASS_NAMES.items():
        cls, value = network_classes()[name], data.get(key)
        if value is not None and not isinstance(value, cls):
            raise CheckpointError(f"{path}: {key} must be a {cls.__name__} of this package (or None), got a "
                                  f"{type(value).__name__}")


def save_network_pkl(path: str | os.PathLike, data: dict[str, Any]) -> None:
    """Write {'G', 'D', 'G_ema', 'training_set_kwargs', 'augment_pipe', ...} as an official-layout pickle.

    Network values must be our modules (or None); other values must be plain data. The file is written
    atomically: on any error the target is left untouched.
    """
    if not isinstance(data, dict) or data.get("G_ema") is None:
        raise CheckpointError(f"{path}: save_network_pkl needs a dict with at least a 'G_ema' network")
    _check_networks(path, data)
    try:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out[key] = describe_module(value) if isinstance(value, nn.Module) else _writable(value)
        for key in ("training_set_kwargs", "G", "D", "G_ema", "augment_pipe"):
            out.setdefault(key, None)
        ordered = {k: out[k] for k in ("training_set_kwargs", "G", "D", "G_ema", "augment_pipe")}
        ordered.update({k: v for k, v in out.items() if k not in ordered})
        with atomic_write(path, "wb") as f:
            _OfficialLayoutPickler(f, protocol=_PROTOCOL).dump(ordered)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(str(path)) else f"{path}: {message}") from None
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: cannot write the network pickle, a value is not plain data: {exc}") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot write the file: {exc.strerror or exc}") from None
