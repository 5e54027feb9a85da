"""stylegan_disentangle: safe official-checkpoint loading, a faithful StyleGAN2 generator, and W-space disentanglement.

The public API is re-exported here; see README.md for a quick start. Plotting and editing helpers live in
`stylegan_disentangle.analysis` (imported on demand: it pulls in matplotlib and umap-learn).
"""

__version__ = "0.1.0"

from .checkpoints import load_network_pkl, save_network_pkl  # noqa: E402
from .directions import (  # noqa: E402
    ClosedFormDirections,
    DirectionSet,
    LinearDirections,
    PCADirections,
    SparseDirections,
    ThreeDCoupledDirections,
    name_directions,
    orthogonalize,
)
from .errors import CheckpointError, DownloadError, LatentError, NotFittedError, StyleGANDisentangleError  # noqa: E402
from .latents import LatentBank, WStats  # noqa: E402
from .models import (  # noqa: E402
    AppearanceStructureAE,
    AttributeExchangeModel,
    FactorMapper,
    IdentityPoseModel,
    WSpaceModel,
    load_model,
    train_model,
)
from .networks import Discriminator, Generator  # noqa: E402

__all__ = [
    "AppearanceStructureAE",
    "AttributeExchangeModel",
    "CheckpointError",
    "ClosedFormDirections",
    "DirectionSet",
    "Discriminator",
    "DownloadError",
    "FactorMapper",
    "Generator",
    "IdentityPoseModel",
    "LatentBank",
    "LatentError",
    "LinearDirections",
    "NotFittedError",
    "PCADirections",
    "SparseDirections",
    "StyleGANDisentangleError",
    "ThreeDCoupledDirections",
    "WSpaceModel",
    "WStats",
    "__version__",
    "load_model",
    "load_network_pkl",
    "name_directions",
    "orthogonalize",
    "save_network_pkl",
    "train_model",
]
