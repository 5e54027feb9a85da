"""Rebuild our network modules from the plain descriptions the restricted unpickler produces.

A module is built from its class name and constructor arguments, its effective attributes (use_fp16, conv_clamp,
fused_modconv_default, ...) are copied over from the description, and its tensors are loaded strictly by name.
Descriptions of classes we do not implement are refused with a message that says what is unsupported.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..networks import Discriminator, Generator, network_classes
from ..networks.generator import SG3_MAPPING_DEFAULTS, SG3_SYNTHESIS_DEFAULTS
from .unpickler import PersistentDescription, plain_data

SUPPORTED_VERSIONS = {6}
_BUILDERS: dict[str, type[nn.Module]] = {"Generator": Generator, "Discriminator": Discriminator}
_PLAIN = (bool, int, float, str, type(None), np.integer, np.floating, np.bool_)
_SHAPE_ATTRIBUTES = {"num_ws", "num_layers", "num_conv", "num_torgb", "img_resolution_log2", "architecture"}
"""Attributes that fix the network's shape besides the `*_dim`, `*channels` and `*resolution` ones: the constructor
derives them from its arguments, so a stored value that differs is a damaged or hand-edited file, not a setting."""


def _fixes_shape(name: str) -> bool:
    return name in _SHAPE_ATTRIBUTES or name.endswith(("_dim", "channels", "resolution"))


def check_supported(desc: PersistentDescription, where: str) -> None:
    """Raise CheckpointError if `desc` or anything nested in it is a class we cannot rebuild."""
    known = network_classes()
    is_stylegan3 = any(sub.class_name == "SynthesisInput" for _, sub in desc.walk())
    for path, sub in desc.walk():
        if sub.version not in SUPPORTED_VERSIONS:
            raise CheckpointError(f"{where}: persistence format version {sub.version} is not supported "
                                  f"(supported: {sorted(SUPPORTED_VERSIONS)})")
        if sub.class_name not in known:
            hint = " (a StyleGAN3 alias-free generator; only StyleGAN2 networks are supported)" if is_stylegan3 else ""
            raise CheckpointError(f"{where}: unsupported network class {sub.class_name!r} at "
                                  f"{path or '<top>'}{hint}")


def detect_flavor(desc: PersistentDescription) -> str:
    """'sg3' for networks written by the StyleGAN3 repository's StyleGAN2 classes, else 'sg2ada'."""
    if desc.class_name == "Generator":
        kwargs = desc.init_kwargs
        if "synthesis_kwargs" not in kwargs:
            synthesis = desc.submodules.get("synthesis")
            flat = set(kwargs) - {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"}
            if flat or (isinstance(synthesis, PersistentDescription) and "num_fp16_res" in synthesis.state):
                return "sg3"
    return "sg2ada"


def _constructor_kwargs(desc: PersistentDescription, flavor: str) -> dict:
    kwargs = plain_data(desc.init_kwargs)
    if desc.class_name == "Generator" and flavor == "sg3" and "synthesis_kwargs" not in kwargs:
        named = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs"}
        flat = {k: v for k, v in kwargs.items() if k not in named}
        kwargs = {k: v for k, v in kwargs.items() if k in named}
        kwargs["mapping_kwargs"] = {**SG3_MAPPING_DEFAULTS, **dict(kwargs.get("mapping_kwargs") or {})}
        kwargs["synthesis_kwargs"] = {**SG3_SYNTHESIS_DEFAULTS, **flat}
    return kwargs


def _plain(value):
    return value.item() if isinstance(value, (np.generic,)) else value


def apply_effective_attributes(module: nn.Module, desc: PersistentDescription, where: str) -> list[str]:
    """Copy plain attributes from each description onto the matching submodule; return what changed."""
    changed = []
    for path, sub in desc.walk():
        try:
            target = module.get_submodule(path) if path else module
        except AttributeError:
            raise CheckpointError(f"{where}: the checkpoint has a submodule {path!r} that the rebuilt network "
                                  "lacks (constructor arguments and module tree disagree)") from None
        if type(target).__name__ != sub.class_name:
            raise CheckpointError(f"{where}: {path or '<top>'} is a {sub.class_name} in the checkpoint but "
                                  f"{type(target).__name__} when rebuilt")
        for name, value in sub.attributes().items():
            if not isinstance(value, _PLAIN) or not hasattr(target, name):
                continue
            current = getattr(target, name)
            if isinstance(current, (torch.Tensor, nn.Module)) or callable(current):
                continue
            value = _plain(value)
            if current != value and _fixes_shape(name):
                raise CheckpointError(f"{where}: {path or '<top>'}.{name} is stored as {value!r}, but the network "
                                      f"its constructor arguments build has {current!r} (a damaged or edited file)")
            if current != value or type(current) is not type(value):
                setattr(target, name, value)
                if current != value:
                    changed.append(f"{path or '<top>'}.{name}: {current!r} -> {value!r}")
    return changed


def described_tensors(desc: PersistentDescription, where: str = "") -> dict[str, torch.Tensor]:
    """All parameters and persistent buffers in a description tree, by state-dict name, in state-dict order.

    A tensor holding NaN or inf is refused by name: such a network draws black or NaN images without any error."""
    out: dict[str, torch.Tensor] = {}
    for path, sub in desc.walk():
        prefix = f"{path}." if path else ""
        non_persistent = set(sub.state.get("_non_persistent_buffers_set") or ())
        for group in ("_parameters", "_buffers"):
            for name, tensor in sub.tensors(group).items():
                if tensor is None or name in non_persistent:
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise CheckpointError(f"{where}{': ' if where else ''}{prefix}{name} is a "
                                          f"{type(tensor).__name__}, not a tensor")
                if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                    bad = int((~torch.isfinite(tensor)).sum())
                    raise CheckpointError(f"{where}{': ' if where else ''}{prefix}{name} holds {bad} NaN or inf "
                                          f"value(s) of {tensor.numel()}: the network is damaged")
                out[prefix + name] = tensor.detach()
    return out


def load_tensors_strict(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    """Load `tensors` into `module`; any missing, unexpected or mis-shaped entry is a CheckpointError."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing or unexpected:
        raise CheckpointError(f"{where}: state dict does not match the network built from its arguments; "
                              f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                              f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for name, tensor in tensors.items():
        if tuple(tensor.shape) != tuple(expected[name].shape):
            raise CheckpointError(f"{where}: {name} has shape {tuple(tensor.shape)}, expected "
                                  f"{tuple(expected[name].shape)}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in tensors.items()}, strict=True)


def build_from_description(desc: PersistentDescription, where: str, flavor: str | None = None) -> nn.Module:
    """Our Generator / Discriminator equivalent of an official persistent object.

    `flavor` ('sg2ada' | 'sg3') is detected from a Generator's description; a Discriminator's cannot be told apart,
    so the caller passes the flavour of the generator stored beside it.
    """
    try:
        return _build(desc, where, flavor)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if message.startswith(where) else f"{where}: {message}") from None


def _build(desc: PersistentDescription, where: str, flavor: str | None) -> nn.Module:
    check_supported(desc, where)
    if desc.class_name not in _BUILDERS:
        raise CheckpointError(f"{where}: expected a Generator or Discriminator, got {desc.class_name!r}")
    flavor = flavor or detect_flavor(desc)
    kwargs = _constructor_kwargs(desc, flavor)
    try:
        module = _BUILDERS[desc.class_name](*desc.init_args, **kwargs)
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError, AssertionError) as exc:
        raise CheckpointError(f"{where}: cannot build {desc.class_name} from its constructor arguments "
                              f"{kwargs!r}: {exc}") from None
    if flavor == "sg3":
        for sub in module.modules():
            if hasattr(sub, "fp32_on_cpu"):
                sub.fp32_on_cpu = True
    apply_effective_attributes(module, desc, where)
    load_tensors_strict(module, described_tensors(desc, where), where)
    return module.train(bool(desc.state.get("training", False)))
