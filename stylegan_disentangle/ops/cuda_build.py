"""Build the CUDA ops in third_party/stylegan2_ops lazily, cache them, and fall back to the reference ops if that fails.

`load_extension()` is called by the kernel providers (ops/cuda_kernels.py) on the first CUDA call of an op, never at
import and never for CPU tensors. It

1. hashes the C++/CUDA sources, torch's version, torch's CUDA version, the target GPU architectures, the build
   flags and the Python version into a cache key (not the toolkit's location: a finished build is reused even on a
   machine without nvcc);
2. takes an OS file lock (`filelock`, released by the OS if a process dies) on `<cache>/stylegan2_ops-<key>.lock`,
   so parallel processes (DDP ranks, pytest-xdist workers) build once and the others wait;
3. loads the library directly if that directory already holds a finished build (a `build.json` marker written after
   a successful build), else copies the sources there and compiles them with `torch.utils.cpp_extension.load`
   (ninja), then writes the marker;
4. on any failure warns once (CudaBuildWarning) with the first compiler error lines and how to fix it, remembers the
   failure for the rest of the process (no retry on every call), and returns None, so ops use the reference path.

Environment:
    STYLEGAN_DISENTANGLE_EXTENSIONS_DIR  base directory of the cache (default: $XDG_CACHE_HOME or ~/.cache,
                                         then stylegan_disentangle/extensions)
    STYLEGAN_DISENTANGLE_REFERENCE_OPS=1 never build; use the reference ops (honoured in ops/_dispatch.py)
    STYLEGAN_DISENTANGLE_REBUILD_OPS=1   discard the cached build and compile again (once per process)
    TORCH_CUDA_ARCH_LIST                 target architectures, as for any torch extension (default: visible GPUs)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BuildError
from ..utils import atomic_write

logger = logging.getLogger(__name__)

EXTENSION_NAME = "stylegan2_ops"
# The torch.ops namespace registered by ops.cpp (TORCH_LIBRARY(stylegan_disentangle, ...)).
OPS_NAMESPACE = "stylegan_disentangle"
# Translation units of the extension; every other source file in the directory is a header or a test helper.
EXTENSION_SOURCES = ("ops.cpp", "bias_act.cu", "upfirdn2d.cu", "epilogue.cu")
SOURCE_SUFFIXES = (".cpp", ".cu", ".h", ".cuh")
# Flags added to torch's own (scripts/check_cuda_compile.sh uses the same ones; a test keeps them in sync).
EXTRA_CFLAGS = ("-O3",)
EXTRA_CUDA_CFLAGS = ("-O3", "--expt-relaxed-constexpr")
LOCK_TIMEOUT_S = 30 * 60
MARKER_NAME = "build.json"

ENV_EXTENSIONS_DIR = "STYLEGAN_DISENTANGLE_EXTENSIONS_DIR"
ENV_REBUILD = "STYLEGAN_DISENTANGLE_REBUILD_OPS"
ENV_REFERENCE = "STYLEGAN_DISENTANGLE_REFERENCE_OPS"


class CudaBuildWarning(UserWarning):
    """The CUDA ops could not be built; the (correct but slower) reference ops are used instead."""


@dataclass(frozen=True)
class BuildStatus:
    """What happened to the CUDA ops in this process.

    state: 'not_tried' (no CUDA op has run yet), 'loaded', or 'failed' (reason says why; the reference path is used).
    """

    state: str = "not_tried"
    reason: str = ""
    build_dir: str = ""
    seconds: float = 0.0


_lock = threading.Lock()
_status = BuildStatus()
_rebuilt_dirs: set[str] = set()


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0") not in ("", "0", "false", "False")


def build_status() -> BuildStatus:
    """The process-wide build result (see BuildStatus)."""
    return _status


def reset() -> None:
    """Forget the build result of this process, so the next CUDA call tries again (e.g. after fixing CUDA_HOME).

    A library that was already loaded stays loaded; torch cannot unload it.
    """
    global _status
    with _lock:
        if _status.state != "loaded":
            _status = BuildStatus()


def source_dir() -> Path:
    """The directory holding the C++/CUDA sources (third_party/stylegan2_ops of the source tree)."""
    here = Path(__file__).resolve()
    candidates = [here.parents[2] / "third_party" / EXTENSION_NAME, here.parent / "_csrc" / EXTENSION_NAME]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in EXTENSION_SOURCES):
            return candidate
    raise BuildError(
        f"the CUDA op sources ({', '.join(EXTENSION_SOURCES)}) were not found in any of "
        f"{', '.join(str(c) for c in candidates)}; reinstall stylegan_disentangle from a source checkout"
    )


def extensions_dir() -> Path:
    """Base directory of the build cache ($STYLEGAN_DISENTANGLE_EXTENSIONS_DIR overrides the default)."""
    override = os.environ.get(ENV_EXTENSIONS_DIR)
    if override:
        return Path(override).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache_home) / "stylegan_disentangle" / "extensions"


def source_files(directory: Path) -> list[Path]:
    """Every source and header file that goes into the cache key, in a stable order."""
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in SOURCE_SUFFIXES)


def target_archs() -> str:
    """The GPU architectures the build targets: $TORCH_CUDA_ARCH_LIST, else those of the visible GPUs."""
    env = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if env:
        return " ".join(env.replace(";", " ").split())
    import torch

    if not torch.cuda.is_available():
        return "none"
    caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
    return " ".join(f"{major}.{minor}" for major, minor in sorted(caps))


def cache_key(directory: Path | None = None, archs: str | None = None) -> str:
    """sha256 (hex) of everything that changes the compiled library: sources, torch, CUDA, archs, flags, Python."""
    import torch

    directory = source_dir() if directory is None else Path(directory)
    archs = target_archs() if archs is None else archs
    digest = hashlib.sha256()
    for path in source_files(directory):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    facts = {
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "archs": archs,
        "cflags": EXTRA_CFLAGS,
        "cuda_cflags": EXTRA_CUDA_CFLAGS,
        "python": sys.version_info[:2],
        "platform": platform.machine(),
    }
    digest.update(json.dumps(facts, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def build_dir_for(key: str) -> Path:
    """The cache directory of one build."""
    return extensions_dir() / f"{EXTENSION_NAME}-{key[:16]}"


def load_extension() -> Any | None:
    """Return the `torch.ops.stylegan_disentangle` namespace with the compiled ops, building them first if needed.

    Returns None when the ops cannot be used in this process (reference ops forced, no CUDA, or a failed build,
    which is reported once as a CudaBuildWarning). Thread-safe; the result is remembered for the process.
    """
    global _status
    if _status.state == "loaded":
        return _namespace()
    if _status.state == "failed" or _env_flag(ENV_REFERENCE):
        return None
    with _lock:
        if _status.state == "loaded":
            return _namespace()
        if _status.state == "failed":
            return None
        import torch

        if not torch.cuda.is_available():
            return None  # nothing to build for; not a failure worth a warning
        start = time.perf_counter()
        build_dir = ""
        try:
            key = cache_key()
            build_dir = str(build_dir_for(key))
            _build_and_load(Path(build_dir), key)
        except Exception as exc:  # noqa: BLE001 - any build or load problem means: use the reference ops
            _status = BuildStatus("failed", _summarize(exc), build_dir, time.perf_counter() - start)
            _warn_failure(_status)
            return None
        _status = BuildStatus("loaded", "", build_dir, time.perf_counter() - start)
        logger.info("CUDA ops ready from %s (%.1f s)", build_dir, _status.seconds)
        return _namespace()


def _namespace() -> Any:
    import torch

    return getattr(torch.ops, OPS_NAMESPACE)


def _build_and_load(build_dir: Path, key: str) -> None:
    """Under the file lock: reuse a finished build in `build_dir` or compile one, then load it."""
    from filelock import FileLock, Timeout

    build_dir.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(build_dir) + ".lock")
    try:
        lock.acquire(timeout=0)
    except Timeout:
        logger.info("waiting for another process building the CUDA ops (lock %s)", lock.lock_file)
        try:
            lock.acquire(timeout=LOCK_TIMEOUT_S)
        except Timeout as exc:
            raise BuildError(
                f"timed out after {LOCK_TIMEOUT_S} s waiting for the build lock {lock.lock_file}; if no other process "
                "is building, delete that file"
            ) from exc
    try:
        marker = build_dir / MARKER_NAME
        if _env_flag(ENV_REBUILD) and str(build_dir) not in _rebuilt_dirs:
            logger.info("STYLEGAN_DISENTANGLE_REBUILD_OPS is set: discarding %s", build_dir)
            shutil.rmtree(build_dir, ignore_errors=True)
            _rebuilt_dirs.add(str(build_dir))
        library = _finished_build(marker, key)
        if library is None:
            library = _compile(build_dir, key)
        _load_library(library)
    finally:
        lock.release()


def _finished_build(marker: Path, key: str) -> Path | None:
    """The library of a complete earlier build with this key, or None."""
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    library = marker.parent / str(info.get("library", ""))
    if info.get("key") != key or not library.is_file():
        return None
    return library


def _compile(build_dir: Path, key: str) -> Path:
    """Copy the sources into `build_dir` and compile them with torch's JIT extension builder (ninja)."""
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise BuildError("no CUDA toolkit was found: nvcc is not on PATH and CUDA_HOME is not set")
    src = build_dir / "src"
    src.mkdir(parents=True, exist_ok=True)
    for path in source_files(source_dir()):
        shutil.copyfile(path, src / path.name)
    # torch's own busy-wait lock file is left behind when a build is killed; we hold the real lock, so drop it.
    (build_dir / "lock").unlink(missing_ok=True)
    logger.info("compiling the CUDA ops into %s (first use only; this takes about a minute)", build_dir)
    start = time.perf_counter()
    result = cpp_extension.load(
        name=EXTENSION_NAME,
        sources=[str(src / name) for name in EXTENSION_SOURCES],
        extra_cflags=list(EXTRA_CFLAGS),
        extra_cuda_cflags=list(EXTRA_CUDA_CFLAGS),
        extra_include_paths=[str(src)],
        build_directory=str(build_dir),
        is_python_module=False,
        verbose=False,
    )
    library = Path(result) if isinstance(result, (str, os.PathLike)) else _find_library(build_dir)
    info = {
        "key": key,
        "library": library.name,
        "seconds": round(time.perf_counter() - start, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_write(build_dir / MARKER_NAME, "w") as f:
        json.dump(info, f, indent=2)
    return library


def _find_library(build_dir: Path) -> Path:
    candidates = sorted(build_dir.glob(f"{EXTENSION_NAME}*.so")) + sorted(build_dir.glob(f"{EXTENSION_NAME}*.pyd"))
    if not candidates:
        raise BuildError(f"the build in {build_dir} finished but produced no library")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def _load_library(library: Path) -> None:
    """Load the shared library into the process and check that it registered the ops."""
    import torch

    torch.ops.load_library(str(library))
    namespace = _namespace()
    for op in ("bias_act", "upfirdn2d"):
        getattr(namespace, op)  # raises if the library did not register it


def _summarize(exc: BaseException, max_lines: int = 8) -> str:
    """The first compiler error lines of a failed build (or the exception's first lines)."""
    text = str(exc)
    output = getattr(exc, "output", None)
    if isinstance(output, bytes):
        output = output.decode(errors="replace")
    if isinstance(output, str) and output not in text:
        text = f"{text}\n{output}"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    picked = errors[:max_lines] if errors else lines[:max_lines]
    summary = "\n".join(picked) if picked else type(exc).__name__
    return f"{type(exc).__name__}: {summary}"


def _warn_failure(status: BuildStatus) -> None:
    import torch

    where = f" in {status.build_dir}" if status.build_dir else ""
    warnings.warn(
        f"stylegan_disentangle could not build its CUDA ops{where}:\n{status.reason}\n"
        "Using the pure-PyTorch reference ops for the rest of this process (correct, but slower).\n"
        f"To fix: install a CUDA toolkit matching torch's CUDA version ({torch.version.cuda}) and make nvcc findable "
        "(put it on PATH or set CUDA_HOME), make sure ninja is installed, then set STYLEGAN_DISENTANGLE_REBUILD_OPS=1 "
        "once. To use the reference ops without trying to build (and without this warning), set "
        "STYLEGAN_DISENTANGLE_REFERENCE_OPS=1.",
        CudaBuildWarning,
        stacklevel=3,
    )
