"""The top-level package re-exports every direction finder and every W-space model (DESIGN.md's layout), so that
`import stylegan_disentangle as sd; sd.FactorMapper(...)` works for each of them."""

from __future__ import annotations

import inspect

import stylegan_disentangle as sd
from stylegan_disentangle import directions, models


def test_every_name_in_all_exists():
    assert all(hasattr(sd, name) for name in sd.__all__)


def test_every_finder_and_model_class_is_re_exported():
    finders = {n for n, obj in vars(directions).items() if inspect.isclass(obj) and n.endswith("Directions")}
    kinds = {n for n, obj in vars(models).items()
             if inspect.isclass(obj) and issubclass(obj, models.WSpaceModel) and getattr(obj, "kind", None)}
    assert {"PCADirections", "ThreeDCoupledDirections"} <= finders
    assert {"AppearanceStructureAE", "IdentityPoseModel", "AttributeExchangeModel", "FactorMapper"} <= kinds
    missing = sorted(n for n in finders | kinds if n not in sd.__all__)
    assert not missing, missing


def test_finders_report_n_features_in_once_fitted():
    import numpy as np
    import pytest

    w = np.random.default_rng(0).standard_normal((60, 7))
    est = sd.PCADirections(n_components=2)
    assert not hasattr(est, "n_features_in_")  # scikit-learn's rule: only after fit
    assert est.fit(w).n_features_in_ == 7
    with pytest.raises(sd.NotFittedError):
        sd.LinearDirections().n_features_in_  # noqa: B018
