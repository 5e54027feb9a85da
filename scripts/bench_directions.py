#!/usr/bin/env python
"""Benchmark: time to fit each direction finder on synthetic W (100k and 1M x 512 by default).

Synthetic data: w = z @ M + mu (float32, correlated like a mapping network's output) with planted unit directions;
continuous labels `y_l = w . a_l + noise`, one binary label. Each method is timed once (best of `--repeat`), checked
against the planted truth (|cosine|), and compared with a baseline run in the same process on the same data
(plain scikit-learn defaults / numpy), printed as `ratio = baseline / ours` (> 1: ours is faster).
Baselines that would take minutes (sklearn Lasso / logistic regression on all rows, numpy lstsq) only run when
N <= --baseline-max-n.

The machine is shared: the load average before and after each size is recorded in the JSON.

Examples:
    python scripts/bench_directions.py                                  # 100k and 1M, all methods
    python scripts/bench_directions.py --sizes 100000 --methods ridge pca --json bench.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import sklearn  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import Lasso, LogisticRegression, MultiTaskLasso, Ridge  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from stylegan_disentangle.directions import (  # noqa: E402
    ClosedFormDirections,
    LinearDirections,
    PCADirections,
    SparseDirections,
    name_directions,
)
from stylegan_disentangle.utils import atomic_write  # noqa: E402
from stylegan_disentangle.utils.script_args import finite_float, nonnegative_int, positive_int, run_script, seed_value

ALL_METHODS = ["pca", "closed-form", "ridge", "svm", "logistic", "lasso", "multitask", "naming", "dictionary"]
# ALL_METHODS must match BENCHES below.


def make_data(n: int, d: int, n_labels: int, seed: int, chunk: int = 131072) -> dict:
    """Synthetic W `[n, d]` float32 and labels with planted directions (generated in chunks to bound memory)."""
    rng = np.random.default_rng(seed)
    # principal axes e_0..e_19 with well separated stds 3.0 ... 1.1 (so PCA has a planted answer), the rest ~1
    scales = np.ones(d)
    scales[:20] = np.linspace(3.0, 1.1, 20)
    mix = np.diag(scales).astype(np.float32)
    mu = (0.3 * rng.standard_normal(d)).astype(np.float32)
    planted = rng.standard_normal((n_labels, d))
    planted /= np.linalg.norm(planted, axis=1, keepdims=True)
    # sparse planted coefficients for the Lasso family: 5 coordinates each
    sparse = np.zeros((n_labels, d))
    for l in range(n_labels):
        idx = rng.choice(d, size=5, replace=False)
        sparse[l, idx] = rng.uniform(0.5, 1.0, 5) * rng.choice([-1, 1], 5)
    w = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        w[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32) @ mix + mu
    noise = 0.1
    y = (w @ planted.T.astype(np.float32)).astype(np.float64) + noise * rng.standard_normal((n, n_labels))
    y_sparse = (w @ sparse.T.astype(np.float32)).astype(np.float64) + noise * rng.standard_normal((n, n_labels))
    score = y[:, 0] - np.median(y[:, 0])
    y_bin = (score > 0).astype(np.int64)
    return dict(w=w, y=y, y_sparse=y_sparse, y_bin=y_bin, planted=planted, sparse=sparse)


def abs_cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def bt(args: argparse.Namespace) -> int | None:
    """The finders' `blas_threads` from --finder-threads (0 = BLAS default)."""
    return None if args.finder_threads == 0 else args.finder_threads


def timed(fn: Callable, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def top_bottom_rows(y: np.ndarray, percent: float) -> tuple[np.ndarray, np.ndarray]:
    k = int(round(len(y) * percent / 100))
    order = np.argsort(y, kind="stable")
    rows = np.concatenate([order[:k], order[-k:]])
    return rows, np.concatenate([np.zeros(k), np.ones(k)])


class Recorder:
    """Collects result rows and prints each as it arrives."""

    def __init__(self, n: int, w_dim: int) -> None:
        self.n, self.w_dim, self.rows = n, w_dim, []

    def __call__(self, method, seconds, quality, baseline=None, baseline_seconds=None, note=""):
        ratio = baseline_seconds / seconds if baseline_seconds else None
        self.rows.append(
            dict(
                method=method,
                n=self.n,
                w_dim=self.w_dim,
                seconds=round(seconds, 3),
                quality_abs_cos=None if quality is None else round(quality, 5),
                baseline=baseline,
                baseline_seconds=None if baseline_seconds is None else round(baseline_seconds, 3),
                ratio=None if ratio is None else round(ratio, 2),
                note=note,
            )
        )
        b = "-" if baseline_seconds is None else f"{baseline_seconds:8.2f}s  x{ratio:.2f}"
        q = "-" if quality is None else f"{quality:.4f}"
        print(f"  {method:12s} {seconds:8.2f}s  |cos|={q:7s}  baseline {baseline or '-'}: {b}  {note}", flush=True)


def bench_pca(data: dict, args, record: Recorder) -> None:
    w = data["w"]
    sec, est = timed(lambda: PCADirections(n_components=20, random_state=0, blas_threads=bt(args)).fit(w), args.repeat)
    bsec, ref = timed(lambda: PCA(n_components=20, svd_solver="randomized", random_state=0).fit(w), args.repeat)
    agree = min(abs_cos(a, b) for a, b in zip(est.directions_[:5], ref.components_[:5]))
    planted = min(abs_cos(est.directions_[i], np.eye(w.shape[1])[i]) for i in range(5))
    record("pca", sec, planted, "sklearn PCA(randomized)", bsec, f"20 PCs; top-5 agree with baseline: {agree:.4f}")


def bench_closed_form(data: dict, args, record: Recorder) -> None:
    rng = np.random.default_rng(args.seed)
    weights = {i: rng.standard_normal((512, args.w_dim)).astype(np.float32) for i in range(18)}
    sec, est = timed(lambda: ClosedFormDirections(n_components=20).fit(weights), args.repeat)

    def svd_baseline():
        a = np.concatenate(list(weights.values()), 0)
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        return np.linalg.svd(a, full_matrices=False)[2][:20]

    bsec, vt = timed(svd_baseline, args.repeat)
    agree = min(abs_cos(a, b) for a, b in zip(est.directions_[:5], vt[:5]))
    record(
        "closed-form", sec, agree, "numpy SVD of stacked weights", bsec, "18 layers x 512 ch (1024^2 net); no samples"
    )


def bench_ridge(data: dict, args, record: Recorder) -> None:
    w, y, planted = data["w"], data["y"], data["planted"]
    sec, est = timed(
        lambda: LinearDirections(method="ridge", random_state=0, blas_threads=bt(args)).fit(w, y), args.repeat
    )
    q = min(abs_cos(est.directions_[l], planted[l]) for l in range(len(planted)))
    bsec, _ = timed(lambda: Ridge(alpha=1.0).fit(w, y), args.repeat)
    record("ridge", sec, q, "sklearn Ridge()", bsec, f"{y.shape[1]} labels, with held-out R^2")
    if len(w) <= args.baseline_max_n:
        xb = np.hstack([w, np.ones((len(w), 1), np.float32)])
        bsec2, _ = timed(lambda: np.linalg.lstsq(xb, y, rcond=None), 1)
        record("ridge", sec, q, "numpy lstsq", bsec2, f"{y.shape[1]} labels")


def bench_svm(data: dict, args, record: Recorder) -> None:
    w, y, planted, p = data["w"], data["y"][:, 0], data["planted"][0], args.top_bottom
    sec, est = timed(
        lambda: LinearDirections(method="svm", top_bottom_percent=p, random_state=0, blas_threads=bt(args)).fit(w, y),
        args.repeat,
    )
    sel, target = top_bottom_rows(y, p)
    # InterFaceGAN's own classifier on the same selection (raw codes, linear-kernel SVC; the default svm_mode)
    bsec, ref = timed(lambda: SVC(kernel="linear").fit(w[sel], target), args.repeat)
    note = f"{len(sel):,} rows; baseline |cos|={abs_cos(ref.coef_[0], planted):.4f}"
    baseline = f"sklearn SVC(kernel='linear') on top/bottom {p}%"
    record("svm", sec, abs_cos(est.directions_[0], planted), baseline, bsec, note)


def bench_logistic(data: dict, args, record: Recorder) -> None:
    w, y, planted = data["w"], data["y_bin"], data["planted"][0]
    sec, est = timed(
        lambda: LinearDirections(method="logistic", random_state=0, blas_threads=bt(args)).fit(w, y), args.repeat
    )
    q = abs_cos(est.directions_[0], planted)
    note = f"ours: {min(len(w), 100_000):,}-row subsample"
    if len(w) <= args.baseline_max_n:
        bsec, ref = timed(lambda: LogisticRegression().fit(w, y), 1)
        note += f"; baseline |cos|={abs_cos(ref.coef_[0], planted):.4f}"
        record("logistic", sec, q, "sklearn LogisticRegression() all rows", bsec, note)
    else:
        record("logistic", sec, q, None, None, note)


def bench_sparse(data: dict, args, record: Recorder, method: str) -> None:
    w = data["w"]
    if method == "lasso":
        ys, target = data["y_sparse"], data["sparse"]
    else:  # two labels sharing one support, different coefficients
        rng = np.random.default_rng(args.seed + 1)
        second = data["sparse"][0] * rng.uniform(-1.5, 1.5, w.shape[1])
        y2 = (w @ second.astype(np.float32)).astype(np.float64) + 0.1 * rng.standard_normal(len(w))
        ys = np.stack([data["y_sparse"][:, 0], y2], 1)
        target = np.stack([data["sparse"][0], second])
    alpha = 0.05
    sec, est = timed(
        lambda: SparseDirections(method, alpha=alpha, random_state=0, blas_threads=bt(args)).fit(w, ys), args.repeat
    )
    q = min(abs_cos(est.coef_[l], target[l]) for l in range(len(target)))
    exact = all(set(est.support_[l].tolist()) == set(np.flatnonzero(target[l]).tolist()) for l in range(len(target)))
    note = f"{ys.shape[1]} labels; support exact: {exact}"
    if len(w) <= args.baseline_max_n:
        model = Lasso(alpha=alpha) if method == "lasso" else MultiTaskLasso(alpha=alpha)
        sd = ys.std(axis=0)
        bsec, _ = timed(lambda: model.fit(w, ys / sd), 1)
        record(method, sec, q, f"sklearn {type(model).__name__}() all rows", bsec, note)
    else:
        record(method, sec, q, None, None, note)


def bench_naming(data: dict, args, record: Recorder) -> None:
    w, y = data["w"], data["y"]
    pca = PCADirections(n_components=20, random_state=0, blas_threads=bt(args)).fit(w)
    labels = {f"l{i}": y[:, i] for i in range(y.shape[1])}
    sec, _ = timed(lambda: name_directions(pca, w, labels, blas_threads=bt(args)), args.repeat)
    record("naming", sec, None, None, None, f"20 directions x {len(labels)} labels")


def bench_dictionary(data: dict, args, record: Recorder) -> None:
    w, planted = data["w"], data["planted"]
    n_maps, side = min(len(w), args.maps_n), 32
    rng = np.random.default_rng(args.seed)
    codes = np.maximum(w[:n_maps] @ planted[:3].T.astype(np.float32) - 0.8, 0)
    atoms = np.zeros((3, side * side), np.float32)
    for k in range(3):
        atoms[k, rng.choice(side * side, 40, replace=False)] = 1.0
    maps = 1.0 + codes @ atoms + 0.01 * rng.standard_normal((n_maps, side * side)).astype(np.float32)
    est = SparseDirections(
        "dictionary", n_components=3, code_alpha=0.5, max_samples=n_maps, random_state=0, blas_threads=bt(args)
    )
    sec, est = timed(lambda: est.fit(w[:n_maps], maps), 1)
    q = min(max(abs_cos(c, a) for c in est.components_) for a in atoms)
    record("dictionary", sec, q, None, None, f"{n_maps:,} maps of {side}x{side}; quality = atom recovery")


BENCHES = {
    "pca": bench_pca,
    "closed-form": bench_closed_form,
    "ridge": bench_ridge,
    "svm": bench_svm,
    "logistic": bench_logistic,
    "lasso": lambda d, a, r: bench_sparse(d, a, r, "lasso"),
    "multitask": lambda d, a, r: bench_sparse(d, a, r, "multitask"),
    "naming": bench_naming,
    "dictionary": bench_dictionary,
}


def bench_size(n: int, args: argparse.Namespace, done: set) -> list[dict]:
    """Run every requested method on one synthetic data set of n rows; return result rows."""
    t0 = time.perf_counter()
    data = make_data(n, args.w_dim, args.labels, args.seed)
    print(f"\n[N={n:,} x {args.w_dim}] data generated in {time.perf_counter() - t0:.1f}s", flush=True)
    record = Recorder(n, args.w_dim)
    for method in args.methods:
        if method == "closed-form" and method in done:  # does not depend on N
            continue
        done.add(method)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            BENCHES[method](data, args, record)
    return record.rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=positive_int, nargs="+", default=[100_000, 1_000_000],
                        help="numbers of W samples")
    parser.add_argument("--w-dim", type=positive_int, default=512)
    parser.add_argument("--labels", type=positive_int, default=4, help="planted continuous labels")
    parser.add_argument("--methods", nargs="+", default=ALL_METHODS, choices=ALL_METHODS)
    parser.add_argument("--top-bottom", type=finite_float, default=2.0,
                        help="InterFaceGAN's top/bottom percent for svm")
    parser.add_argument(
        "--baseline-max-n",
        type=positive_int,
        default=100_000,
        help="run the slow baselines (lstsq, Lasso, LogisticRegression on all rows) up to this N",
    )
    parser.add_argument("--maps-n", type=positive_int, default=20_000, help="rows of label maps for 'dictionary'")
    parser.add_argument("--repeat", type=positive_int, default=1, help="best of this many runs")
    parser.add_argument("--seed", type=seed_value, default=0)
    parser.add_argument(
        "--threads",
        type=nonnegative_int,
        default=1,
        help="BLAS thread limit for the whole run, baselines included (0 = BLAS default); 1 by default so that "
        "baselines and finders (blas_threads=1) compare fairly on a shared machine",
    )
    parser.add_argument(
        "--finder-threads", type=nonnegative_int, default=1,
        help="the finders' blas_threads (their default 1; 0 = BLAS default)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    args = parser.parse_args(argv)

    import threadpoolctl

    machine = dict(
        platform=platform.platform(),
        processor=platform.processor(),
        cpu_count=os.cpu_count(),
        python=platform.python_version(),
        numpy=np.__version__,
        sklearn=sklearn.__version__,
        blas=[(i.get("internal_api"), i.get("num_threads")) for i in threadpoolctl.threadpool_info()],
    )
    machine["blas_threads_limit"] = args.threads
    machine["finder_blas_threads"] = bt(args)
    print(f"machine: {machine['cpu_count']} CPUs, {machine['platform']}; shared machine: times vary with load")
    results, loads, done = [], [], set()
    limit = threadpoolctl.threadpool_limits(args.threads) if args.threads > 0 else contextlib.nullcontext()
    with limit:
        for n in args.sizes:
            before = os.getloadavg()
            results.extend(bench_size(n, args, done))
            loads.append(dict(n=n, loadavg_before=before, loadavg_after=os.getloadavg()))

    print("\n| method | N | ours (s) | abs cos | baseline | baseline (s) | ratio | note |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        q = "-" if r["quality_abs_cos"] is None else f"{r['quality_abs_cos']:.4f}"
        b = "-" if r["baseline_seconds"] is None else f"{r['baseline_seconds']:.2f}"
        ratio = "-" if r["ratio"] is None else f"x{r['ratio']:.2f}"
        print(
            f"| {r['method']} | {r['n']:,} | {r['seconds']:.2f} | {q} | {r['baseline'] or '-'} | {b} | {ratio} "
            f"| {r['note']} |"
        )
    if args.json:
        payload = dict(benchmark="bench_directions", argv=sys.argv[1:], machine=machine, load=loads, results=results)
        with atomic_write(args.json, "w") as f:
            json.dump(payload, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    run_script(main)
