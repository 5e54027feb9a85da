"""Shared fixtures: the reference folder beside the clone, and tiny generators written in the official layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def reference_dir_or_skip() -> Path:
    """The ../shared/reference folder, or skip the calling test with a clear reason."""
    if not (REFERENCE_DIR / "README.md").is_file():
        pytest.skip(f"conformance data not found at {REFERENCE_DIR} (it sits beside the clone in CI)")
    return REFERENCE_DIR


@pytest.fixture
def reference_dir() -> Path:
    return reference_dir_or_skip()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread per test: the networks here are tiny, and on a shared 2-core machine OpenMP's spinning
    threads make tiny convs 10-100x slower (set per test because UMAP's numba run resets torch's thread count)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_grad_by_default():
    with torch.no_grad():
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
