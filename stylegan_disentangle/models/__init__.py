"""models stage (see DESIGN.md): small networks trained on W of a frozen generator.

- `WSpaceModel`: the base class (latent shape, generator identity, input checks, save / load as a small file);
- `train_model`: the one training loop (seeded, resumable bit-identically, logs, previews, early stopping);
- latent videos: `DirectionVideoMaker`, `StyleMixingVideoMaker`, `ClipPairSampler`, `save_clip_strips`;
- `AppearanceStructureAE`: the video-contrastive appearance / structure autoencoder (Duarte et al. 2022);
- `IdentityPoseModel`: identity / pose recombination (IP-GAN style), measured by the 3D decomposer
  (`DecomposerMeasure`, `RecombinationSampler`);
- `AttributeExchangeModel`: exemplar-based attribute transfer by exchanging code parts (ELEGANT style), judged by
  a readout of labels (`LatentReadout`, `ExchangeSampler`, `parse_attribute_spec`);
- `FactorMapper`: independent factor codes and noise -> W (DiscoFaceGAN style), its factors measured by a readout of
  labels (`FactorSampler`);
- `info_nce`, `load_model`, `ModelFileError`.
"""

from .appearance_structure import AppearanceStructureAE
from .attribute_exchange import AttributeExchangeModel, ExchangeSampler
from .base import WSpaceModel
from .factor_mapper import FactorMapper, FactorSampler
from .identity_pose import DecomposerMeasure, IdentityPoseModel, RecombinationSampler
from .io import (
    ModelFileError,
    ModelKindError,
    load_model,
    model_kinds,
    read_model_file,
    register_model_kind,
    save_model,
)
from .latent_video import ClipPairSampler, DirectionVideoMaker, StyleMixingVideoMaker, save_clip_strips, smooth_noise
from .losses import info_nce
from .readout import LatentReadout, parse_attribute_spec
from .training import TrainResult, load_checkpoint, train_model

__all__ = [
    "AppearanceStructureAE",
    "AttributeExchangeModel",
    "ClipPairSampler",
    "DecomposerMeasure",
    "DirectionVideoMaker",
    "ExchangeSampler",
    "FactorMapper",
    "FactorSampler",
    "IdentityPoseModel",
    "LatentReadout",
    "ModelFileError",
    "ModelKindError",
    "RecombinationSampler",
    "StyleMixingVideoMaker",
    "TrainResult",
    "WSpaceModel",
    "info_nce",
    "load_checkpoint",
    "load_model",
    "model_kinds",
    "parse_attribute_spec",
    "read_model_file",
    "register_model_kind",
    "save_clip_strips",
    "save_model",
    "smooth_noise",
    "train_model",
]
