"""LinearDirections' 'interfacegan' SVM mode reproduces InterFaceGAN's boundary (issue 9).

The reference below restates InterFaceGAN's `train_boundary` (genforce/interfacegan, utils/manipulator.py) from its
documented procedure: drop rows whose score equals `invalid_value`; sort by score, highest first (ties stably); take
`chosen = min(int(N * ratio), N // 2)` rows from each end (top = positive, bottom = negative); shuffle the indices of
the positives and then those of the negatives with the global numpy RNG; the first `int(chosen * split_ratio)` of
each class train, the rest validate; fit `sklearn.svm.SVC(kernel='linear')` (C = 1) on the raw codes; report the
accuracy on the validation set and on the unselected rows (labelled positive when the score is at least the midpoint
of the highest and lowest score); return `coef_` as float32 divided by its norm.
Here the global RNG is replaced by `RandomState(seed)`, which draws the same permutations as `np.random.seed(seed)`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.svm import SVC

from stylegan_disentangle.directions import LinearDirections
from stylegan_disentangle.synthetic.checkpoint import load_synthetic

# libsvm stops at tol=1e-3 on the KKT violation, so an SVC normal is defined only up to that solver tolerance.
# Measured on these W rows: refitting with the training rows in 5 other orders, or with tol=1e-6, moves the normal
# by 1 - |cos| <= 5e-6. 1e-4 leaves 20x margin for libsvm's path (row order, version), is far above float32 rounding
# of the normal (1 - cos ~ 1e-14), and far below the gap of the standardized mode (1 - |cos| ~ 0.2 on this data).
SOLVER_TOL = 1e-4


def _cos(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def train_boundary_reference(codes, scores, ratio=0.02, split_ratio=0.7, invalid_value=None, seed=0, C=1.0):
    """InterFaceGAN's train_boundary restated (see the module docstring); returns the normal and its bookkeeping."""
    codes, scores = np.asarray(codes), np.asarray(scores, dtype=np.float64).ravel()
    if invalid_value is not None:
        keep = scores != invalid_value
        codes, scores = codes[keep], scores[keep]
    # InterFaceGAN's plain np.argsort leaves tied scores in an order of numpy's choosing (its SIMD sorts differ by
    # version and CPU; float32 factors of 20k rows do tie), and the order decides the split: break ties stably, as
    # the estimator does
    by_score = np.argsort(scores, kind="stable")[::-1]
    codes, scores = codes[by_score], scores[by_score]
    n = len(scores)
    chosen = min(int(n * ratio), n // 2)
    n_train = int(chosen * split_ratio)
    rng = np.random.RandomState(seed)
    pos_order = np.arange(chosen)
    rng.shuffle(pos_order)
    neg_order = np.arange(chosen)
    rng.shuffle(neg_order)
    top, bottom = codes[:chosen], codes[n - chosen :]
    x_train = np.concatenate([top[pos_order[:n_train]], bottom[neg_order[:n_train]]])
    x_val = np.concatenate([top[pos_order[n_train:]], bottom[neg_order[n_train:]]])
    t_train = np.r_[np.ones(n_train), np.zeros(n_train)]
    t_val = np.r_[np.ones(chosen - n_train), np.zeros(chosen - n_train)]
    clf = SVC(kernel="linear", C=C).fit(x_train, t_train)
    rest, rest_scores = codes[chosen : n - chosen], scores[chosen : n - chosen]
    rest_labels = (rest_scores >= (scores[0] + scores[-1]) / 2).astype(float)
    normal = clf.coef_.reshape(-1).astype(np.float32)
    return {
        "normal": normal / np.linalg.norm(normal),
        "n_train": 2 * n_train,
        "n_val": 2 * (chosen - n_train),
        "val_accuracy": float(np.mean(clf.predict(x_val) == t_val)) if len(x_val) else float("nan"),
        "remaining_accuracy": float(np.mean(clf.predict(rest) == rest_labels)) if len(rest) else float("nan"),
        "n_remaining": len(rest),
    }


@pytest.fixture(scope="module")
def synthetic_w():
    """20k W samples of the shipped synthetic checkpoint and their exact factors (per-coordinate std 0.19-1.29)."""
    G, fmap = load_synthetic()
    with torch.no_grad():
        w = G.mapping(torch.randn([20000, G.z_dim], generator=torch.Generator().manual_seed(0)), None)[:, 0]
        factors = fmap(w).numpy()
    return w.numpy(), factors, list(fmap.names), fmap


@pytest.mark.parametrize("factor, percent", [("yaw", 2), ("smile", 2), ("light_azimuth", 10)])
def test_interfacegan_mode_reproduces_train_boundary(synthetic_w, factor, percent):
    w, factors, names, _ = synthetic_w
    y = factors[:, names.index(factor)]
    ref = train_boundary_reference(w, y, ratio=percent / 100, seed=3)
    est = LinearDirections(method="svm", svm_mode="interfacegan", top_bottom_percent=percent, random_state=3)
    est.fit(w, {factor: y})
    assert abs(_cos(est.directions_[0], ref["normal"])) >= 1 - SOLVER_TOL
    assert _cos(est.directions_[0], ref["normal"]) > 0  # same orientation, not just the same line
    assert (est.n_train_[0], est.n_val_[0]) == (ref["n_train"], ref["n_val"])
    assert est.scores_[0] == pytest.approx(ref["val_accuracy"], abs=1e-12)
    # our accuracy uses coef . w + b, libsvm's predict sums over support vectors: at most one row may differ
    assert abs(est.remaining_scores_[0] - ref["remaining_accuracy"]) * ref["n_remaining"] <= 1


def test_selection_counts_follow_interfacegan(synthetic_w):
    """int(N * ratio) per class, capped at N // 2, then int(chosen * 0.7) of each class trains."""
    w, factors, names, _ = synthetic_w
    y = factors[:2001, names.index("pitch")]
    est = LinearDirections(method="svm", top_bottom_percent=2.5, random_state=0).fit(w[:2001], y)
    chosen = int(2001 * 0.025)  # 50
    assert (est.n_train_[0], est.n_val_[0]) == (2 * int(chosen * 0.7), 2 * (chosen - int(chosen * 0.7)))  # 70, 30
    half = LinearDirections(method="svm", top_bottom_percent=50, random_state=0).fit(w[:2001], y)
    assert half.n_train_[0] + half.n_val_[0] == 2 * (2001 // 2)  # the cap; one middle row is "remaining"


def test_standardized_mode_is_not_interfacegan_on_anisotropic_w(synthetic_w):
    """The earlier behaviour (LinearSVC on standardized w) fails the reproduction test by far: rescaling coordinates
    changes the max-margin problem when W's coordinates have unequal spread (here 0.19-1.29)."""
    w, factors, names, _ = synthetic_w
    assert w.std(axis=0).max() > 4 * w.std(axis=0).min()
    for factor in ("yaw", "smile"):
        y = factors[:, names.index(factor)]
        ref = train_boundary_reference(w, y, ratio=0.02, seed=3)
        est = LinearDirections(method="svm", svm_mode="standardized", top_bottom_percent=2, val_fraction=0.3,
                               random_state=3).fit(w, y)
        assert abs(_cos(est.directions_[0], ref["normal"])) < 0.95  # measured 0.72-0.83; SOLVER_TOL is 1e-4


def test_default_svm_is_interfacegan(synthetic_w):
    """The default (chosen by scripts/bench_methods.py: closer to the ground truth) is the exact InterFaceGAN mode."""
    w, factors, names, _ = synthetic_w
    y = factors[:, names.index("roll")]
    ref = train_boundary_reference(w, y, ratio=0.02, seed=0)
    est = LinearDirections(method="svm", top_bottom_percent=2, random_state=0).fit(w, y)
    assert LinearDirections().svm_mode == "interfacegan"
    assert abs(_cos(est.directions_[0], ref["normal"])) >= 1 - SOLVER_TOL


def test_direction_increases_the_factor(synthetic_w):
    w, factors, names, fmap = synthetic_w
    j = names.index("yaw")
    est = LinearDirections(method="svm", top_bottom_percent=2, random_state=0).fit(w, {"yaw": factors[:, j]})
    step = torch.as_tensor(w[:500] + 0.5 * est.directions_[0], dtype=torch.float32)
    with torch.no_grad():
        change = fmap(step).numpy()[:, j] - factors[:500, j]
    assert np.mean(change > 0) > 0.95
    flipped = LinearDirections(method="svm", top_bottom_percent=2, random_state=0).fit(w, {"yaw": -factors[:, j]})
    assert _cos(flipped.directions_[0], est.directions_[0]) < -0.9


def _gaussian(n=3000, d=16, seed=0):
    """Correlated, anisotropic Gaussian w and a noisy linear score."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, d)) * np.linspace(0.2, 2.0, d)) @ (np.eye(d) + 0.3 * rng.standard_normal((d, d)))
    a = rng.standard_normal(d)
    return w.astype(np.float32), w @ a + 0.5 * rng.standard_normal(n)


def test_invalid_value_rows_are_dropped_like_interfacegan():
    w, y = _gaussian()
    y = np.round(y, 3)
    y[::7] = -1.0  # sentinel for "no score"
    ref = train_boundary_reference(w, y, ratio=0.05, invalid_value=-1.0, seed=1)
    est = LinearDirections(method="svm", top_bottom_percent=5, invalid_value=-1.0, random_state=1).fit(w, y)
    assert abs(_cos(est.directions_[0], ref["normal"])) >= 1 - SOLVER_TOL
    assert (est.n_train_[0], est.n_val_[0]) == (ref["n_train"], ref["n_val"])
    with pytest.raises(ValueError, match="invalid_value"):
        LinearDirections(method="ridge", invalid_value=-1.0).fit(w, y)


def test_a_label_left_with_one_class_by_invalid_value_is_refused():
    """Dropping the rows of invalid_value can leave one class only; a boundary between nothing is an error, not an
    arbitrary split of a constant at its median."""
    w, _ = _gaussian(n=40)
    y = (w[:, 0] > 0).astype(float)
    with pytest.raises(ValueError, match="constant .* once the rows of invalid_value=1.0 are dropped"):
        LinearDirections(method="svm", invalid_value=1.0).fit(w, y)


def test_median_split_is_interfacegan_with_ratio_one_half():
    """A continuous label without top_bottom_percent: the top and bottom N // 2 rows, as train_boundary(ratio=0.5)."""
    w, y = _gaussian(n=1001, seed=2)
    ref = train_boundary_reference(w, y, ratio=0.5, seed=0)
    est = LinearDirections(method="svm", random_state=0).fit(w, y)
    assert abs(_cos(est.directions_[0], ref["normal"])) >= 1 - SOLVER_TOL
    assert est.n_train_[0] + est.n_val_[0] == 1000


def test_binary_label_splits_each_class():
    w, y = _gaussian(seed=3)
    labels = (y > np.quantile(y, 0.7)).astype(int)  # 30% positive
    est = LinearDirections(random_state=0).fit(w, labels)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    assert est.kinds_ == ["svm"]
    assert est.n_train_[0] == int(n_pos * 0.7) + int(n_neg * 0.7)
    assert est.scores_[0] > 0.9
    assert np.isnan(est.remaining_scores_[0])


def test_max_samples_subsamples_each_class_with_a_warning():
    w, y = _gaussian(seed=4)
    with pytest.warns(UserWarning, match="max_samples"):
        est = LinearDirections(method="svm", top_bottom_percent=20, max_samples=400, random_state=0).fit(w, y)
    assert est.n_train_[0] + est.n_val_[0] == 400
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LinearDirections(method="svm", top_bottom_percent=20, max_samples=1200, random_state=0).fit(w, y)


def test_bad_svm_mode_is_rejected():
    w, y = _gaussian(n=100)
    with pytest.raises(ValueError, match="svm_mode"):
        LinearDirections(method="svm", svm_mode="raw").fit(w, y)
