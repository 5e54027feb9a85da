"""Network pickles that look like the ones users download, written by the tests themselves.

Real official files are not as clean as what `save_network_pkl` writes. They are written with pickle protocol 4 (the
TF ones too, by the official TF code under Python 3.6+ with `pickle.HIGHEST_PROTOCOL`), carry numpy arrays and numpy
scalars under numpy 1.x's module names (`numpy.core.multiarray`), hold `dnnlib.util.EasyDict` objects in their init
kwargs, training-set kwargs and TF static kwargs, embed the full network source text (`module_src`,
`build_module_src`), and the original TF networks keep variables that no PyTorch parameter corresponds to (the
scalar `lod` of G_main). This module writes files with all of those traits from our own networks, so the loader is
tested on what users have rather than on its own writer's output.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stylegan_disentangle.checkpoints import tf_convert
from stylegan_disentangle.checkpoints.writer import _GlobalRef, _OfficialLayoutPickler, describe_module
from stylegan_disentangle.networks import mapping, synthesis


class EasyDict(dict):
    """Stand-in with the official `dnnlib.util.EasyDict` behaviour (a dict with attribute access)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value


EasyDict.__module__ = "dnnlib.util"
EasyDict.__qualname__ = "EasyDict"


class Network:
    """Stand-in for `dnnlib.tflib.network.Network`: pickles its state dict as the official class does."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def __getstate__(self) -> dict:
        return self.state


Network.__module__ = "dnnlib.tflib.network"
Network.__qualname__ = "Network"


@contextlib.contextmanager
def _official_modules():
    """Make `dnnlib.util` and `dnnlib.tflib.network` importable while pickling (pickle looks classes up by name)."""
    util = types.ModuleType("dnnlib.util")
    util.EasyDict = EasyDict
    net = types.ModuleType("dnnlib.tflib.network")
    net.Network = Network
    fake = {"dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util, "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
            "dnnlib.tflib.network": net}
    saved = {name: sys.modules.get(name) for name in fake}
    sys.modules.update(fake)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                del sys.modules[name]
            else:
                sys.modules[name] = module


class OfficialLikePickler(_OfficialLayoutPickler):
    """Writes numpy arrays and scalars under numpy 1.x's names, as files pickled before numpy 2 do."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is np.ndarray:
            _, args, state = obj.__reduce__()
            return _GlobalRef("numpy.core.multiarray", "_reconstruct"), args, state
        if isinstance(obj, np.generic):
            _, args = obj.__reduce__()[:2]
            return _GlobalRef("numpy.core.multiarray", "scalar"), args
        return NotImplemented


def dump_official_like(path: str | Path, obj: Any, protocol: int = 4) -> Path:
    with _official_modules(), open(path, "wb") as f:
        OfficialLikePickler(f, protocol=protocol).dump(obj)
    return Path(path)


def embedded_source(marker: str | Path | None = None) -> str:
    """A full network source text like the one official pickles embed (ours, tens of kB). With `marker`, the text
    also creates that file when executed, so a test can prove it never was."""
    text = inspect.getsource(mapping) + "\n" + inspect.getsource(synthesis)
    if marker is not None:
        text = f"open({str(marker)!r}, 'w').close()\n" + text
    return text


def easy(value: Any) -> Any:
    """Turn every nested plain dict into an EasyDict, as the official training scripts build their kwargs."""
    if isinstance(value, dict) and not isinstance(value, EasyDict):
        return EasyDict({k: easy(v) for k, v in value.items()})
    return value


def _officialize(described, source: str) -> None:
    meta = described.meta
    meta["module_src"] = source
    state = meta["state"]
    state["_init_kwargs"] = easy(copy.deepcopy(dict(state.get("_init_kwargs", {}))))
    for child in state["_modules"].values():
        if child is not None:
            _officialize(child, source)


def augment_pipe_description(source: str):
    """An `AugmentPipe` object as ADA pickles carry it (buffers and init kwargs, no code we could run)."""
    from stylegan_disentangle.checkpoints.writer import _PersistentObject

    state = {"training": True, "_parameters": {}, "_modules": {},
             "_buffers": {"p": torch.tensor(0.25), "Hz_geom": torch.randn(12)},
             "_init_args": (), "_init_kwargs": EasyDict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1)}
    return _PersistentObject(dict(type="class", version=6, module_src=source, class_name="AugmentPipe", state=state))


def write_official_pickle(path: str | Path, nets: dict, marker: str | Path | None = None) -> Path:
    """`nets` ({'G', 'D', 'G_ema', ...}) as an official StyleGAN2-ADA / StyleGAN3 snapshot: protocol 4, full source
    text, EasyDict kwargs, an augment pipe, numpy scalars in the training-set kwargs."""
    source = embedded_source(marker)
    top: dict[str, Any] = {}
    for key in ("G", "D", "G_ema"):
        described = describe_module(nets[key])
        _officialize(described, source)
        top[key] = described
    resolution = nets["G_ema"].img_resolution
    top = {"training_set_kwargs": EasyDict(class_name="training.dataset.ImageFolderDataset", path="~/datasets/ffhq.zip",
                                           use_labels=bool(nets["G_ema"].c_dim), max_size=np.int64(70000),
                                           xflip=np.bool_(False), resolution=np.int64(resolution), random_seed=0),
           **top, "augment_pipe": augment_pipe_description(source)}
    return dump_official_like(path, top)


# --- the original TensorFlow layout -----------------------------------------------------------------------------

_INVERSE = {
    tf_convert._dense: lambda x: x.T,
    tf_convert._conv: lambda x: x.transpose(2, 3, 1, 0),
    tf_convert._conv_flipped: lambda x: x.transpose(2, 3, 1, 0)[::-1, ::-1],
    tf_convert._plus_one: lambda x: x - 1,
    tf_convert._identity: lambda x: x,
}


def to_tf_variables(net: torch.nn.Module, rules, what: str) -> list[tuple[str, np.ndarray]]:
    """The TF variables (name, array) of one of our networks: the inverse of the documented conversion."""
    variables = []
    for name, tensor in net.state_dict().items():
        if name.endswith("resample_filter"):
            continue
        tf_name, transform = tf_convert._match_rule(name, rules, what)
        value = tensor.numpy()
        if transform in _INVERSE:
            value = _INVERSE[transform](value)
        elif name.endswith("noise_const"):  # -> [1, 1, H, W]
            value = value[None, None]
        else:  # the 4x4 constant input -> [1, C, 4, 4]
            value = value[None]
        variables.append((tf_name, np.array(value, order="C")))
    return variables


def write_tf_pickle(path: str | Path, G: torch.nn.Module, D: torch.nn.Module, g_kwargs: dict, d_kwargs: dict, *,
                    drop: str | None = None, extra: dict[str, Any] | None = None, lod: float | None = 0.0,
                    protocol: int = 4, marker: str | Path | None = None) -> Path:
    """Pickle (G, D, Gs) as `dnnlib.tflib.network.Network` states, as the official TF StyleGAN2 code did.

    G_main's scalar `lod` (a numpy float32, unless `lod=None`) sits beside `dlatent_avg`; `drop` removes one variable,
    `extra` adds top-level G variables; kwargs are EasyDicts; `build_module_src` is a full source text.
    """
    source = embedded_source(marker)

    def net(name: str, kwargs: dict, variables: list, func: str) -> Network:
        return Network(dict(version=4, name=name, static_kwargs=easy(dict(kwargs)), components=EasyDict(),
                            build_module_src=source, build_func_name=func, variables=variables))

    g_vars = [(k, v) for k, v in to_tf_variables(G, tf_convert._G_RULES, "generator") if k != drop]
    mapping_vars = [(k.split("/", 1)[1], v) for k, v in g_vars if k.startswith("mapping/")]
    synthesis_vars = [(k.split("/", 1)[1], v) for k, v in g_vars if k.startswith("synthesis/")]
    top = [(k, v) for k, v in g_vars if "/" not in k]
    if lod is not None:
        top.insert(0, ("lod", np.float32(lod)))
    top += list((extra or {}).items())

    def generator(name: str) -> Network:
        g = net(name, g_kwargs, list(top), "G_main")
        g.state["components"] = EasyDict(mapping=net("G_mapping", {}, mapping_vars, "G_mapping"),
                                         synthesis=net("G_synthesis", {}, synthesis_vars, "G_synthesis_stylegan2"))
        return g

    D_net = net("D", d_kwargs, to_tf_variables(D, tf_convert._D_RULES, "discriminator"), "D_stylegan2")
    return dump_official_like(path, (generator("G"), D_net, generator("Gs")), protocol=protocol)
