"""Convert original TensorFlow StyleGAN2 networks (pickled `dnnlib.tflib.network.Network` states) to ours.

Variables are matched by name. TF stores dense weights [in, out] and conv kernels [kh, kw, in, out]; ours are
[out, in] and [out, in, kh, kw]. TF's upsampling convolutions (Conv0_up, Skip in the generator) are transposed
convolutions whose kernels are flipped relative to ours; TF's style bias is stored minus one; the per-layer noise
inputs live in a flat list 'synthesis/noise{i}'. TF `fmap_base` counts half of our `channel_base`.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import torch

from ..errors import CheckpointError
from ..networks import Discriminator, Generator
from .unpickler import TFNetworkDescription

# TF static kwargs that do not affect the converted network (run-time options of the TF graph).
_IGNORED_G_KWARGS = {"truncation_psi", "truncation_cutoff", "truncation_psi_val", "truncation_cutoff_val",
                     "dlatent_avg_beta_val", "style_mixing_prob", "structure", "conditioning", "fused_modconv",
                     "randomize_noise", "is_template_graph", "is_validation", "return_dlatents", "dtype",
                     "num_fp16_res", "conv_clamp", "use_noise"}
_IGNORED_D_KWARGS = {"structure", "conditioning", "is_template_graph", "dtype", "num_fp16_res", "conv_clamp"}


class _Kwargs:
    """Reads TF static kwargs with defaults and remembers which ones were used."""

    def __init__(self, kwargs: dict, ignored: set[str], what: str) -> None:
        self.kwargs = dict(kwargs)
        self.used = set(ignored)
        self.what = what

    def __call__(self, name: str, default=None):
        self.used.add(name)
        return self.kwargs.get(name, default)

    def check_all_used(self) -> None:
        unknown = sorted(set(self.kwargs) - self.used)
        if unknown:
            raise CheckpointError(f"TF {self.what} has options this converter does not understand: {unknown}")


def generator_kwargs_from_tf(static_kwargs: dict) -> dict:
    """Our Generator constructor arguments for a TF G's static kwargs."""
    kw = _Kwargs(static_kwargs, _IGNORED_G_KWARGS, "generator")
    out = dict(
        z_dim=kw("latent_size", 512),
        c_dim=kw("label_size", 0),
        w_dim=kw("dlatent_size", 512),
        img_resolution=kw("resolution", 1024),
        img_channels=kw("num_channels", 3),
        mapping_kwargs=dict(
            num_layers=kw("mapping_layers", 8),
            embed_features=kw("label_fmaps", None),
            layer_features=kw("mapping_fmaps", None),
            activation=kw("mapping_nonlinearity", "lrelu"),
            lr_multiplier=kw("mapping_lrmul", 0.01),
            w_avg_beta=kw("w_avg_beta", 0.995),
        ),
        synthesis_kwargs=dict(
            channel_base=kw("fmap_base", 16384) * 2,
            channel_max=kw("fmap_max", 512),
            num_fp16_res=0,
            conv_clamp=None,
            architecture=kw("architecture", "skip"),
            resample_filter=list(kw("resample_kernel", [1, 3, 3, 1])),
            use_noise=True,
            activation=kw("nonlinearity", "lrelu"),
        ),
    )
    kw("fmap_decay")
    kw("fmap_min")
    if static_kwargs.get("fmap_decay", 1) != 1 or static_kwargs.get("fmap_min", 1) != 1:
        raise CheckpointError("TF generator uses fmap_decay / fmap_min other than 1, which has no PyTorch equivalent")
    kw.check_all_used()
    return out


def discriminator_kwargs_from_tf(static_kwargs: dict) -> dict:
    """Our Discriminator constructor arguments for a TF D's static kwargs."""
    kw = _Kwargs(static_kwargs, _IGNORED_D_KWARGS, "discriminator")
    out = dict(
        c_dim=kw("label_size", 0),
        img_resolution=kw("resolution", 1024),
        img_channels=kw("num_channels", 3),
        architecture=kw("architecture", "resnet"),
        channel_base=kw("fmap_base", 16384) * 2,
        channel_max=kw("fmap_max", 512),
        num_fp16_res=0,
        conv_clamp=None,
        cmap_dim=kw("mapping_fmaps", None),
        block_kwargs=dict(
            activation=kw("nonlinearity", "lrelu"),
            resample_filter=list(kw("resample_kernel", [1, 3, 3, 1])),
            freeze_layers=kw("freeze_layers", 0),
        ),
        mapping_kwargs=dict(
            num_layers=kw("mapping_layers", 0),
            embed_features=kw("mapping_fmaps", None),
            layer_features=kw("mapping_fmaps", None),
            activation=kw("nonlinearity", "lrelu"),
            lr_multiplier=kw("mapping_lrmul", 0.1),
        ),
        epilogue_kwargs=dict(
            mbstd_group_size=kw("mbstd_group_size", None),
            mbstd_num_channels=kw("mbstd_num_features", 1),
            activation=kw("nonlinearity", "lrelu"),
        ),
    )
    kw("fmap_decay")
    kw("fmap_min")
    kw.check_all_used()
    return out


def _dense(w: np.ndarray) -> np.ndarray:
    return w.T


def _conv(w: np.ndarray) -> np.ndarray:
    return w.transpose(3, 2, 0, 1)


def _conv_flipped(w: np.ndarray) -> np.ndarray:
    return w[::-1, ::-1].transpose(3, 2, 0, 1)


def _plus_one(b: np.ndarray) -> np.ndarray:
    return b + 1


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _log2(res: str) -> int:
    return int(np.log2(int(res)))


# (our name pattern, TF name template from the match, transform). Templates see the regex groups as g1, g2, ...
Rule = tuple[str, Callable[[re.Match], str], Callable[[np.ndarray], np.ndarray]]

_G_RULES: list[Rule] = [
    (r"mapping\.w_avg", lambda m: "dlatent_avg", _identity),
    (r"mapping\.embed\.weight", lambda m: "mapping/LabelEmbed/weight", _dense),
    (r"mapping\.embed\.bias", lambda m: "mapping/LabelEmbed/bias", _identity),
    (r"mapping\.fc(\d+)\.weight", lambda m: f"mapping/Dense{m[1]}/weight", _dense),
    (r"mapping\.fc(\d+)\.bias", lambda m: f"mapping/Dense{m[1]}/bias", _identity),
    (r"synthesis\.b4\.const", lambda m: "synthesis/4x4/Const/const", lambda x: x[0]),
    (r"synthesis\.b4\.conv1\.weight", lambda m: "synthesis/4x4/Conv/weight", _conv),
    (r"synthesis\.b4\.conv1\.bias", lambda m: "synthesis/4x4/Conv/bias", _identity),
    (r"synthesis\.b4\.conv1\.noise_const", lambda m: "synthesis/noise0", lambda x: x[0, 0]),
    (r"synthesis\.b4\.conv1\.noise_strength", lambda m: "synthesis/4x4/Conv/noise_strength", _identity),
    (r"synthesis\.b4\.conv1\.affine\.weight", lambda m: "synthesis/4x4/Conv/mod_weight", _dense),
    (r"synthesis\.b4\.conv1\.affine\.bias", lambda m: "synthesis/4x4/Conv/mod_bias", _plus_one),
    (r"synthesis\.b(\d+)\.conv0\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv0_up/weight", _conv_flipped),
    (r"synthesis\.b(\d+)\.conv0\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv0_up/bias", _identity),
    (r"synthesis\.b(\d+)\.conv0\.noise_const", lambda m: f"synthesis/noise{_log2(m[1]) * 2 - 5}",
     lambda x: x[0, 0]),
    (r"synthesis\.b(\d+)\.conv0\.noise_strength", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv0_up/noise_strength",
     _identity),
    (r"synthesis\.b(\d+)\.conv0\.affine\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv0_up/mod_weight", _dense),
    (r"synthesis\.b(\d+)\.conv0\.affine\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv0_up/mod_bias", _plus_one),
    (r"synthesis\.b(\d+)\.conv1\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv1/weight", _conv),
    (r"synthesis\.b(\d+)\.conv1\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv1/bias", _identity),
    (r"synthesis\.b(\d+)\.conv1\.noise_const", lambda m: f"synthesis/noise{_log2(m[1]) * 2 - 4}",
     lambda x: x[0, 0]),
    (r"synthesis\.b(\d+)\.conv1\.noise_strength", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv1/noise_strength",
     _identity),
    (r"synthesis\.b(\d+)\.conv1\.affine\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv1/mod_weight", _dense),
    (r"synthesis\.b(\d+)\.conv1\.affine\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/Conv1/mod_bias", _plus_one),
    (r"synthesis\.b(\d+)\.torgb\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/ToRGB/weight", _conv),
    (r"synthesis\.b(\d+)\.torgb\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/ToRGB/bias", _identity),
    (r"synthesis\.b(\d+)\.torgb\.affine\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/ToRGB/mod_weight", _dense),
    (r"synthesis\.b(\d+)\.torgb\.affine\.bias", lambda m: f"synthesis/{m[1]}x{m[1]}/ToRGB/mod_bias", _plus_one),
    (r"synthesis\.b(\d+)\.skip\.weight", lambda m: f"synthesis/{m[1]}x{m[1]}/Skip/weight", _conv_flipped),
]

_D_RULES: list[Rule] = [
    (r"b(\d+)\.fromrgb\.weight", lambda m: f"{m[1]}x{m[1]}/FromRGB/weight", _conv),
    (r"b(\d+)\.fromrgb\.bias", lambda m: f"{m[1]}x{m[1]}/FromRGB/bias", _identity),
    (r"b(\d+)\.conv0\.weight", lambda m: f"{m[1]}x{m[1]}/Conv0/weight", _conv),
    (r"b(\d+)\.conv0\.bias", lambda m: f"{m[1]}x{m[1]}/Conv0/bias", _identity),
    (r"b(\d+)\.conv1\.weight", lambda m: f"{m[1]}x{m[1]}/Conv1_down/weight", _conv),
    (r"b(\d+)\.conv1\.bias", lambda m: f"{m[1]}x{m[1]}/Conv1_down/bias", _identity),
    (r"b(\d+)\.skip\.weight", lambda m: f"{m[1]}x{m[1]}/Skip/weight", _conv),
    (r"mapping\.embed\.weight", lambda m: "LabelEmbed/weight", _dense),
    (r"mapping\.embed\.bias", lambda m: "LabelEmbed/bias", _identity),
    (r"mapping\.fc(\d+)\.weight", lambda m: f"Mapping{m[1]}/weight", _dense),
    (r"mapping\.fc(\d+)\.bias", lambda m: f"Mapping{m[1]}/bias", _identity),
    (r"b4\.conv\.weight", lambda m: "4x4/Conv/weight", _conv),
    (r"b4\.conv\.bias", lambda m: "4x4/Conv/bias", _identity),
    (r"b4\.fc\.weight", lambda m: "4x4/Dense0/weight", _dense),
    (r"b4\.fc\.bias", lambda m: "4x4/Dense0/bias", _identity),
    (r"b4\.out\.weight", lambda m: "Output/weight", _dense),
    (r"b4\.out\.bias", lambda m: "Output/bias", _identity),
]


def _match_rule(name: str, rules: list[Rule], what: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    for pattern, tf_name_of, transform in rules:
        match = re.fullmatch(pattern, name)
        if match:
            return tf_name_of(match), transform
    raise CheckpointError(f"TF {what}: no conversion rule for parameter {name}")


# Variables that official TF networks carry with no meaning for inference, so no PyTorch parameter holds them (the
# official TF -> PyTorch converter skips them too). Keyed by the variable's path; the value says why it is inert.
# `lod` is the progressive-growing level of detail: G_main keeps it as a training-time scalar (style mixing only);
# the config-A synthesis network has one as well, which only matters while it is non-zero (a fade-in).
INERT_TF_VARIABLES: dict[str, str] = {
    "lod": "progressive-growing level of detail, used only in training (style mixing)",
    "synthesis/lod": "progressive-growing level of detail of the synthesis network (0 = full resolution)",
}


def _inert_reason(tf_name: str, value: np.ndarray) -> str | None:
    """Why an unused TF variable may be dropped, or None when it must be refused."""
    reason = INERT_TF_VARIABLES.get(tf_name)
    if reason is None or np.asarray(value).size != 1:
        return None
    if tf_name == "synthesis/lod" and float(np.asarray(value).reshape(())) != 0.0:
        return None  # a synthesis network caught mid fade-in renders differently: refuse it
    return reason


def _fill_state(module: torch.nn.Module, tf_vars: dict[str, np.ndarray], rules: list[Rule], what: str) -> dict:
    """Copy every TF variable into `module` by name; every parameter must be filled and every TF variable used,
    except the known inert ones (INERT_TF_VARIABLES), which are returned as {name: scalar value}."""
    used: set[str] = set()
    state = module.state_dict()
    for name, tensor in state.items():
        if name.endswith("resample_filter"):
            continue
        tf_name, transform = _match_rule(name, rules, what)
        if tf_name not in tf_vars:
            raise CheckpointError(f"TF {what}: variable {tf_name} (for {name}) is missing")
        value = np.array(transform(np.asarray(tf_vars[tf_name])), dtype=np.float32, order="C")
        if tuple(value.shape) != tuple(tensor.shape):
            raise CheckpointError(f"TF {what}: {tf_name} has shape {value.shape} after conversion, "
                                  f"expected {tuple(tensor.shape)} for {name}")
        if not np.isfinite(value).all():
            raise CheckpointError(f"TF {what}: {tf_name} holds {int((~np.isfinite(value)).sum())} NaN or inf "
                                  f"value(s) of {value.size}: the network is damaged")
        tensor.copy_(torch.from_numpy(value))
        used.add(tf_name)
    ignored: dict[str, float] = {}
    unknown: list[str] = []
    for tf_name in sorted(set(tf_vars) - used):
        if _inert_reason(tf_name, tf_vars[tf_name]) is None:
            unknown.append(tf_name)
        else:
            ignored[tf_name] = float(np.asarray(tf_vars[tf_name]).reshape(()))
    if unknown:
        raise CheckpointError(f"TF {what}: variables with no PyTorch counterpart: {unknown[:10]}")
    return ignored


def convert_tf_generator(tf_net: TFNetworkDescription, ignored: dict | None = None) -> Generator:
    """Build our Generator from a TF G / Gs network description.

    `ignored`, when given, receives the inert TF variables that were skipped ({name: value}, see INERT_TF_VARIABLES).
    """
    G = Generator(**generator_kwargs_from_tf(tf_net.static_kwargs))
    with torch.no_grad():
        skipped = _fill_state(G, tf_net.variables(), _G_RULES, "generator")
    if ignored is not None:
        ignored.update(skipped)
    return G.eval()


def convert_tf_discriminator(tf_net: TFNetworkDescription, ignored: dict | None = None) -> Discriminator:
    """Build our Discriminator from a TF D network description (`ignored` as in convert_tf_generator)."""
    D = Discriminator(**discriminator_kwargs_from_tf(tf_net.static_kwargs))
    with torch.no_grad():
        skipped = _fill_state(D, tf_net.variables(), _D_RULES, "discriminator")
    if ignored is not None:
        ignored.update(skipped)
    return D.eval()
