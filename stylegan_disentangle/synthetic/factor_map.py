"""The fixed, known map from W to the synthetic factors: the ground truth every method is scored against.

    s_j = d_j . (w - mean) / sigma_j                       (a unit direction d_j in W per factor, standardised)
    f_j = tanh(gain * s_j + curvature * (s_k(j)^2 - 1))    (normalized factor in about [-1, 1])

It is deliberately imperfect, as attribute encodings in real generators are:
- a mild nonlinearity (tanh saturation and a small quadratic term from a partner factor k(j));
- correlated factor pairs (their directions share a component, so the factors co-vary in samples, like age and
  glasses in face data);
- pose and illumination directions partly aligned with leading principal axes of W (so PCA finds them only in
  part, as GANSpace does on real generators), identity and expression directions random;
- nuisance: every direction orthogonal to all d_j changes no factor.
The ground-truth direction of factor j is d_j: the gradient of f_j at the mean of W points along it.
The map must stay recoverable by a linear fit (its best linear fit on W should point along d_j), but a mapping
network's W is not Gaussian: it is skewed along some principal axes (skewness -0.54 along the first one of the
shipped network), and a saturating factor along a skewed axis has a best linear fit tilted away from its gradient
(|cosine| 0.91). So `build` aligns factors only with near-symmetric principal axes (|skewness| <= MAX_AXIS_SKEW),
then checks every factor's least-squares fit on the given samples and redraws the random part of any direction
whose fit falls below MIN_FIT_COSINE (and of its partner, whose square is what correlates with the skew).
The defaults (gain 0.6, curvature 0.04) keep the nonlinearity mild.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import LatentError, StyleGANDisentangleError
from ..utils import atomic_write_path
from .factors import factor_index, factor_names

# (factor, partner, shared fraction): the partner's direction is mixed into the factor's direction.
CORRELATED_PAIRS = (("jaw_width", "head_width", 0.5), ("smile", "mouth_open", 0.45),
                    ("light_elevation", "pitch", 0.4), ("skin_g", "skin_r", 0.5))
# factor -> (rank among the near-symmetric leading principal axes, weight of that axis in the direction).
PCA_ALIGNED = {"yaw": (0, 0.6), "pitch": (1, 0.6), "light_azimuth": (2, 0.6), "roll": (3, 0.5)}
MAX_AXIS_SKEW = 0.2  # principal axes with a more skewed projection are never aligned with a factor
MIN_FIT_COSINE = 0.97  # every factor's least-squares direction on the build samples must be this close to d_j
MAX_REDRAWS = 20


def _skewness(x: np.ndarray) -> np.ndarray:
    """Sample skewness of each column."""
    x = x - x.mean(axis=0)
    return (x**3).mean(axis=0) / np.maximum((x**2).mean(axis=0), 1e-300) ** 1.5


def _fit_cosines(w: np.ndarray, factors: np.ndarray, directions: np.ndarray) -> np.ndarray:
    """|cosine| between each factor's least-squares direction on w and its true direction."""
    x = w - w.mean(axis=0)
    y = factors - factors.mean(axis=0)
    coef = np.linalg.lstsq(x, y, rcond=None)[0].T
    coef /= np.maximum(np.linalg.norm(coef, axis=1, keepdims=True), 1e-300)
    return np.abs((coef * directions).sum(axis=1))


@dataclass
class FactorMap:
    """w [N, w_dim] (or ws [N, num_ws, w_dim], averaged over ws) -> normalized factors [N, F].

    Attributes: `directions` [F, w_dim] unit rows (the ground truth), `mean` [w_dim], `sigma` [F],
    `partners` [F] (index of the factor whose square enters, or -1), `gain`, `curvature`, `names`.
    """

    directions: np.ndarray
    mean: np.ndarray
    sigma: np.ndarray
    partners: np.ndarray
    gain: float = 0.6
    curvature: float = 0.04

    @property
    def names(self) -> list[str]:
        return factor_names()

    @property
    def w_dim(self) -> int:
        return int(self.directions.shape[1])

    @classmethod
    def build(cls, w_samples: np.ndarray, seed: int = 0, gain: float = 0.6, curvature: float = 0.04) -> FactorMap:
        """Make the map for a W distribution given by samples w_samples [N, w_dim] (e.g. 100k mapped z).

        Deterministic given the samples and seed. Raises if no draw makes every factor linearly recoverable.
        """
        w = np.asarray(w_samples, dtype=np.float64)
        names = factor_names()
        if len(w) < 4 * w.shape[1]:
            raise StyleGANDisentangleError(f"FactorMap.build needs at least {4 * w.shape[1]} w samples, "
                                           f"got {len(w)}")
        rng = np.random.default_rng(seed)
        mean = w.mean(axis=0)
        _, _, vt = np.linalg.svd(w[: min(len(w), 50_000)] - mean, full_matrices=False)
        symmetric = np.flatnonzero(np.abs(_skewness((w - mean) @ vt.T)) <= MAX_AXIS_SKEW)
        if len(symmetric) < len(PCA_ALIGNED):
            raise StyleGANDisentangleError(f"W has fewer than {len(PCA_ALIGNED)} principal axes with "
                                           f"|skewness| <= {MAX_AXIS_SKEW}")
        raw = rng.standard_normal([len(names), w.shape[1]])
        partners = np.full(len(names), -1)
        perm = rng.permutation(len(names))
        partners[perm] = np.roll(perm, 1)

        def compose(raw: np.ndarray) -> np.ndarray:
            raw = raw / np.linalg.norm(raw, axis=1, keepdims=True)
            for name, (rank, weight) in PCA_ALIGNED.items():
                j = factor_index(name)
                raw[j] = weight * vt[symmetric[rank]] + np.sqrt(1 - weight**2) * raw[j]
            for name, partner, share in CORRELATED_PAIRS:
                j, k = factor_index(name), factor_index(partner)
                raw[j] = (1 - share) * raw[j] + share * raw[k]
            return raw / np.linalg.norm(raw, axis=1, keepdims=True)

        for _ in range(MAX_REDRAWS + 1):
            directions = compose(raw)
            sigma = ((w - mean) @ directions.T).std(axis=0)
            fmap = cls(directions.astype(np.float32), mean.astype(np.float32), sigma.astype(np.float32),
                       partners.astype(np.int64), float(gain), float(curvature))
            factors = fmap(torch.from_numpy(w.astype(np.float32))).double().numpy()
            poor = _fit_cosines(w, factors, directions.astype(np.float64)) < MIN_FIT_COSINE
            if not poor.any():
                return fmap
            # The quadratic term of a poor factor's partner is what correlates with the skewed part of W: redraw both.
            redraw = poor.copy()
            redraw[partners[poor][partners[poor] >= 0]] = True
            raw[redraw] = rng.standard_normal([int(redraw.sum()), w.shape[1]])
        bad = [names[j] for j in np.flatnonzero(poor)]
        raise StyleGANDisentangleError(f"FactorMap.build: no draw in {MAX_REDRAWS} made {bad} linearly "
                                       f"recoverable (|cosine| >= {MIN_FIT_COSINE}); W is too far from symmetric")

    def _as_w(self, w: torch.Tensor) -> torch.Tensor:
        if not isinstance(w, torch.Tensor):
            w = torch.as_tensor(np.asarray(w, dtype=np.float32))
        if w.ndim == 3:
            w = w.mean(dim=1)
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise LatentError(f"the factor map needs w [N, {self.w_dim}] or ws [N, num_ws, {self.w_dim}], "
                              f"got {list(w.shape)}")
        if not torch.isfinite(w).all():
            raise LatentError("w contains NaN or inf values")
        return w.float()

    def standardized(self, w: torch.Tensor) -> torch.Tensor:
        """s [N, F]: the standardised projections of w on the ground-truth directions."""
        w = self._as_w(w)
        t = lambda a: torch.as_tensor(a, device=w.device)  # noqa: E731
        return (w - t(self.mean)) @ t(self.directions).T / t(self.sigma)

    def pure_directions(self) -> np.ndarray:
        """[w_dim, F]: column j moves factor j's standardized projection by exactly 1 and every other factor's by 0
        (the minimum-norm such step). The ground-truth directions overlap (the correlated pairs share a component),
        so a step along one of them moves its partner too; these are the steps that edit one factor alone."""
        scaled = self.directions.astype(np.float64) / self.sigma.astype(np.float64)[:, None]
        return np.linalg.pinv(scaled).astype(np.float32)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """Normalized factors [N, F] in about [-1, 1], `names` order."""
        s = self.standardized(w)
        partners = torch.as_tensor(self.partners, device=s.device)
        quad = torch.where(partners >= 0, s[:, partners.clamp(min=0)] ** 2 - 1, torch.zeros_like(s))
        return torch.tanh(self.gain * s + self.curvature * quad)

    def save(self, path: str | os.PathLike) -> None:
        """Write the map as .npz (atomic)."""
        with atomic_write_path(path) as tmp:
            np.savez(tmp, directions=self.directions, mean=self.mean, sigma=self.sigma, partners=self.partners,
                     gain=self.gain, curvature=self.curvature, names=np.array(self.names))

    @classmethod
    def load(cls, path: str | os.PathLike) -> FactorMap:
        """Read a map written by `save`; a file for other factor names is refused."""
        try:
            with np.load(path) as data:
                if list(data["names"]) != factor_names():
                    raise StyleGANDisentangleError(f"{path}: factor names do not match this version's factors")
                return cls(data["directions"], data["mean"], data["sigma"], data["partners"], float(data["gain"]),
                           float(data["curvature"]))
        except (OSError, KeyError, ValueError) as exc:
            raise StyleGANDisentangleError(f"{path}: not a factor map file ({exc})") from None
