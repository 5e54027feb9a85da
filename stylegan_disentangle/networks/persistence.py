"""Record each network module's constructor arguments, as the official pickles store them.

The official format saves, for every network module, its class name, `_init_args`, `_init_kwargs` and module state.
Our checkpoint writer emits the same layout from what this decorator records, and our loader rebuilds modules from it.
"""

from __future__ import annotations

import copy
import functools

_REGISTRY: dict[str, type] = {}


def persistent_class(cls: type) -> type:
    """Class decorator: remember `_init_args` / `_init_kwargs` on each instance and register the class by name."""
    original_init = cls.__init__

    @functools.wraps(original_init)
    def __init__(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self._init_args = copy.deepcopy(args)
        self._init_kwargs = copy.deepcopy(kwargs)

    cls.__init__ = __init__
    _REGISTRY[cls.__name__] = cls
    return cls


def network_classes() -> dict[str, type]:
    """Our network classes by their (official) class name."""
    return dict(_REGISTRY)
