"""The labeler registry: names -> factories, so commands can say `--labeler image_stats`.

A factory is a callable returning a labeler, or a string `"package.module:attribute"` imported only when the
labeler is first requested (so registering costs nothing and heavy labelers load lazily). `get_labeler` also
accepts such a `"module:attribute"` spec directly, which is how users plug their own labeler into the CLI::

    register_labeler("smile", lambda **kw: labeler_from_callable(SmileNet().eval(), "smile", input_resolution=224))
    get_labeler("smile")
    get_labeler("mypackage.labels:make_labeler", threshold=0.5)   # no registration needed
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

from .base import LabelerError, combine_labelers

__all__ = ["available_labelers", "get_labeler", "get_labelers", "register_labeler", "unregister_labeler"]

_REGISTRY: dict[str, Callable[..., Any] | str] = {}


def register_labeler(name: str, factory: Callable[..., Any] | str, overwrite: bool = False) -> None:
    """Register `factory(**kwargs) -> labeler` (or a lazy "module:attribute" string) under `name`."""
    if not isinstance(name, str) or not name or ":" in name or "," in name:
        raise LabelerError(f"labeler name must be a non-empty string without ':' or ',', got {name!r}")
    if not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise LabelerError(f"factory for {name!r} must be callable or a 'module:attribute' string, got {factory!r}")
    if name in _REGISTRY and not overwrite:
        raise LabelerError(f"a labeler named {name!r} is already registered (pass overwrite=True to replace it)")
    _REGISTRY[name] = factory


def unregister_labeler(name: str) -> None:
    """Remove a registered labeler (KeyError-free: LabelerError when unknown)."""
    if name not in _REGISTRY:
        raise LabelerError(f"no labeler named {name!r}; registered: {available_labelers()}")
    del _REGISTRY[name]


def available_labelers() -> list[str]:
    """Registered labeler names, sorted."""
    return sorted(_REGISTRY)


def _import_factory(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LabelerError(f"cannot import labeler module {module_name!r} (from {spec!r}): {exc}") from None
    try:
        obj = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError:
        raise LabelerError(f"module {module_name!r} has no attribute {attr!r} (from {spec!r})") from None
    if not callable(obj):
        raise LabelerError(f"{spec!r} is not callable")
    return obj


def get_labeler(name: str, **kwargs: Any) -> Any:
    """Build the labeler registered as `name` (or named by a "module:attribute" spec) with `kwargs`."""
    if name in _REGISTRY:
        factory = _REGISTRY[name]
        if isinstance(factory, str):
            factory = _import_factory(factory)
    elif isinstance(name, str) and ":" in name:
        factory = _import_factory(name)
    else:
        raise LabelerError(f"unknown labeler {name!r}; available: {available_labelers()} "
                           "(or pass 'module:attribute' of your own factory)")
    labeler = factory(**kwargs)
    if not hasattr(labeler, "names") or not callable(labeler):
        raise LabelerError(f"factory of labeler {name!r} returned {labeler!r}, which is not a labeler "
                           "(callable with a `names` attribute)")
    return labeler


def get_labelers(names: str | Sequence[str]) -> Any:
    """One labeler from several names ("a,b" or a list); None for an empty list or 'none'."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = [n for n in names if n.lower() != "none"]
    if not names:
        return None
    return combine_labelers([get_labeler(n) for n in names])


register_labeler("image_stats", "stylegan_disentangle.labels.image_stats:ImageStatsLabeler")
# Exact factors of the shipped synthetic checkpoint, read from the ws (see stylegan_disentangle.synthetic).
register_labeler("synthetic-oracle", "stylegan_disentangle.synthetic.checkpoint:oracle_labeler")
register_labeler("decomposer3d", "stylegan_disentangle.labels.decomposer.labeler:decomposer_labeler")
