"""The 3D face decomposer (Unsup3D style): networks with the official names, output scalings, checkpoint I/O.

    from stylegan_disentangle.labels import load_unsup3d
    dec = load_unsup3d("checkpoint030.pth")          # official CelebA checkpoint: sizes read from the shapes
    dec = load_decomposer("unsup3d-celeba")          # the same, downloaded once from the authors' archive
    out = dec.decompose(img)                         # img [N, 3, H, W] in [-1, 1]
    out["canon_depth"], out["light_dir"], out["view"]
"""

from .checkpoint import OpaqueObject, infer_unsup3d_sizes, load_unsup3d, read_unsup3d_checkpoint, save_unsup3d
from .labeler import DecomposerLabeler, decomposer_labeler, load_decomposer
from .light_teacher import LatentLightTeacher
from .model import NET_NAMES, PARTS, DecomposerError, Unsup3DDecomposer
from .networks import SUPPORTED_IMAGE_SIZES, ConfNet, EDDeconv, Encoder
from .pretrained import known_decomposers

__all__ = [
    "NET_NAMES",
    "PARTS",
    "SUPPORTED_IMAGE_SIZES",
    "ConfNet",
    "DecomposerError",
    "DecomposerLabeler",
    "decomposer_labeler",
    "load_decomposer",
    "EDDeconv",
    "Encoder",
    "LatentLightTeacher",
    "OpaqueObject",
    "Unsup3DDecomposer",
    "infer_unsup3d_sizes",
    "known_decomposers",
    "load_unsup3d",
    "read_unsup3d_checkpoint",
    "save_unsup3d",
]
