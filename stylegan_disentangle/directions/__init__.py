"""Direction finders in W and the DirectionSet artifact they produce (see DESIGN.md).

Every finder is a scikit-learn estimator (`fit(w, y=None)` -> self, `directions_` `[K, w_dim]` unit rows, `names_`,
`transform`, `to_direction_set`). The artifact is `DirectionSet` (save / load / InterFaceGAN export).
"""

from .closed_form import ClosedFormDirections
from .direction_set import DirectionSet
from .linear import LinearDirections
from .naming import DirectionNames, name_directions
from .orthogonalize import orthogonalize
from .pca import PCADirections
from .sparse import SparseDirections
from .three_d_coupled import ThreeDCoupledDirections

__all__ = [
    "ClosedFormDirections",
    "DirectionNames",
    "DirectionSet",
    "LinearDirections",
    "PCADirections",
    "SparseDirections",
    "ThreeDCoupledDirections",
    "name_directions",
    "orthogonalize",
]
