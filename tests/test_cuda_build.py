"""The lazy CUDA build never gets in the way: nothing at import, nothing for CPU tensors, one warning and the
reference path when it fails, a cache that is reused and keyed by the sources, a lock, and the env switches.

All of it runs on CPU: the compiler (torch.utils.cpp_extension.load) and the library loader are replaced by fakes,
and where an op must believe it sees a CUDA tensor, `Tensor.is_cuda` is patched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from torch.utils import cpp_extension

from stylegan_disentangle.errors import BuildError
from stylegan_disentangle.ops import (
    _dispatch,
    bias_act,
    bias_act_ref,
    conv2d_resample,
    cuda_build,
    cuda_kernels,
    downsample2d,
    filter2d,
    modulated_conv2d,
    setup_filter,
    upfirdn2d,
    upfirdn2d_ref,
    upsample2d,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
    """A process that has not tried to build yet, believes it has CUDA, and caches into tmp_path."""
    monkeypatch.setenv(cuda_build.ENV_EXTENSIONS_DIR, str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.delenv(cuda_build.ENV_REFERENCE, raising=False)
    monkeypatch.delenv(cuda_build.ENV_REBUILD, raising=False)
    monkeypatch.setattr(cuda_build, "_status", cuda_build.BuildStatus())
    monkeypatch.setattr(cuda_build, "_rebuilt_dirs", set())
    monkeypatch.setattr(cuda_kernels, "_kernels", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/opt/fake-cuda")
    return tmp_path / "cache"


class FakeCompiler:
    """Stands in for torch.utils.cpp_extension.load: records calls, writes a fake library or fails."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.calls: list[dict] = []

    def __call__(self, name, sources, build_directory, is_python_module=True, **kwargs):
        self.calls.append(dict(name=name, sources=sources, build_directory=build_directory,
                               is_python_module=is_python_module, **kwargs))
        if self.error is not None:
            raise RuntimeError(self.error)
        library = Path(build_directory) / f"{name}.so"
        library.write_bytes(b"not really a library")
        return str(library)


COMPILER_ERROR = (
    "Error building extension 'stylegan2_ops': [1/3] nvcc -c bias_act.cu\n"
    "FAILED: bias_act.cuda.o\n"
    "/cache/src/bias_act.cu(42): error: identifier \"__simulated\" is undefined\n"
    "1 error detected in the compilation of \"bias_act.cu\".\n"
    "ninja: build stopped: subcommand failed."
)


def test_importing_the_ops_compiles_and_loads_nothing(tmp_path):
    code = (
        "import sys\n"
        "import stylegan_disentangle.ops as ops\n"
        "from stylegan_disentangle.ops import _dispatch, cuda_build\n"
        "assert sorted(_dispatch._providers) == ['bias_act', 'epilogue', 'upfirdn2d'], _dispatch._providers\n"
        "assert 'torch.utils.cpp_extension' not in sys.modules\n"
        "assert 'filelock' not in sys.modules\n"
        "assert cuda_build.build_status().state == 'not_tried'\n"
    )
    env = {**os.environ, cuda_build.ENV_EXTENSIONS_DIR: str(tmp_path / "cache")}
    env.pop(cuda_build.ENV_REFERENCE, None)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "cache").exists()


def test_cpu_tensors_never_ask_for_a_kernel(monkeypatch):
    asked = []
    monkeypatch.setattr(cuda_build, "load_extension", lambda: asked.append(1))
    monkeypatch.setattr(cuda_kernels, "_kernels", None)
    monkeypatch.delenv(cuda_build.ENV_REFERENCE, raising=False)
    x = torch.randn(2, 4, 8, 8)
    f = setup_filter([1, 3, 3, 1])
    w = torch.randn(4, 4, 3, 3)
    bias_act(x, torch.zeros(4), act="lrelu", clamp=1.0)
    upfirdn2d(x, f, up=2, padding=2)
    upsample2d(x, f)
    downsample2d(x, f)
    filter2d(x, f)
    conv2d_resample(x, w, f=f, up=2, padding=1)
    modulated_conv2d(x, w, torch.randn(2, 4), up=2, padding=1, resample_filter=f)
    assert asked == []


def test_failed_build_warns_once_and_ops_fall_back_to_identical_results(fresh_build, monkeypatch):
    compiler = FakeCompiler(error=COMPILER_ERROR)
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda self: True))  # make the ops ask for kernels
    x = torch.randn(2, 3, 6, 6)
    b = torch.randn(3)
    f = setup_filter([1, 3, 3, 1])
    with pytest.warns(cuda_build.CudaBuildWarning) as record:
        y1 = bias_act(x, b, act="lrelu", clamp=0.5)
        y2 = upfirdn2d(x, f, up=2, padding=2, gain=4)
        y3 = bias_act(x, b, act="swish")
    ours = [r for r in record if issubclass(r.category, cuda_build.CudaBuildWarning)]
    assert len(ours) == 1
    message = str(ours[0].message)
    assert 'identifier "__simulated" is undefined' in message
    assert "CUDA_HOME" in message and "STYLEGAN_DISENTANGLE_REFERENCE_OPS=1" in message
    assert len(compiler.calls) == 1  # the failure is remembered: no second attempt
    assert cuda_build.build_status().state == "failed"
    monkeypatch.undo()  # is_cuda back to normal before comparing
    torch.testing.assert_close(y1, bias_act_ref(x, b, act="lrelu", clamp=0.5), rtol=0, atol=0)
    torch.testing.assert_close(y2, upfirdn2d_ref(x, f, up=2, padding=2, gain=4), rtol=0, atol=0)
    torch.testing.assert_close(y3, bias_act_ref(x, b, act="swish"), rtol=0, atol=0)


def test_missing_toolkit_is_reported_as_the_reason(fresh_build, monkeypatch):
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    monkeypatch.setattr(cpp_extension, "load", FakeCompiler())
    with pytest.warns(cuda_build.CudaBuildWarning, match="no CUDA toolkit was found"):
        assert _dispatch.get_kernel("bias_act") is None
    assert "nvcc" in cuda_build.build_status().reason


def test_successful_build_is_cached_and_reused_by_the_next_process(fresh_build, monkeypatch):
    compiler = FakeCompiler()
    loaded = []
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(cuda_build, "_load_library", lambda path: loaded.append(Path(path)))
    key = cuda_build.cache_key()
    build_dir = cuda_build.build_dir_for(key)
    build_dir.mkdir(parents=True)
    (build_dir / "lock").write_text("left behind by a killed build")

    assert cuda_build.load_extension() is not None
    assert len(compiler.calls) == 1
    call = compiler.calls[0]
    assert call["is_python_module"] is False and Path(call["build_directory"]) == build_dir
    assert sorted(Path(s).name for s in call["sources"]) == sorted(cuda_build.EXTENSION_SOURCES)
    assert all(Path(s).parent == build_dir / "src" for s in call["sources"])  # compiled from a private copy
    assert not (build_dir / "lock").exists()  # torch's stale baton was cleared under our lock
    assert json.loads((build_dir / cuda_build.MARKER_NAME).read_text())["key"] == key
    assert cuda_build.build_status().state == "loaded"

    # A new process (fresh status) finds the finished build and only loads it.
    monkeypatch.setattr(cuda_build, "_status", cuda_build.BuildStatus())
    assert cuda_build.load_extension() is not None
    assert len(compiler.calls) == 1
    assert loaded == [build_dir / "stylegan2_ops.so"] * 2


def test_rebuild_env_discards_the_cached_build_once(fresh_build, monkeypatch):
    compiler = FakeCompiler()
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(cuda_build, "_load_library", lambda path: None)
    assert cuda_build.load_extension() is not None
    monkeypatch.setenv(cuda_build.ENV_REBUILD, "1")
    monkeypatch.setattr(cuda_build, "_status", cuda_build.BuildStatus())
    assert cuda_build.load_extension() is not None
    assert len(compiler.calls) == 2
    monkeypatch.setattr(cuda_build, "_status", cuda_build.BuildStatus())
    assert cuda_build.load_extension() is not None
    assert len(compiler.calls) == 2  # once per process, not on every load


def test_reference_env_skips_the_build_entirely(fresh_build, monkeypatch):
    compiler = FakeCompiler()
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setenv(cuda_build.ENV_REFERENCE, "1")
    assert _dispatch.get_kernel("bias_act") is None
    assert cuda_build.load_extension() is None
    assert compiler.calls == [] and cuda_build.build_status().state == "not_tried"
    with pytest.raises(RuntimeError, match="not available"):
        _dispatch.get_kernel("upfirdn2d", required=True)


def test_reset_allows_a_retry_after_a_failure(fresh_build, monkeypatch):
    compiler = FakeCompiler(error=COMPILER_ERROR)
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(cuda_build, "_load_library", lambda path: None)
    with pytest.warns(cuda_build.CudaBuildWarning):
        assert cuda_build.load_extension() is None
    assert cuda_build.load_extension() is None and len(compiler.calls) == 1
    compiler.error = None  # the user fixed the toolkit
    cuda_build.reset()
    assert cuda_build.load_extension() is not None and len(compiler.calls) == 2


def test_build_waits_for_the_lock_held_by_another_process(fresh_build, monkeypatch):
    from filelock import FileLock

    compiler = FakeCompiler()
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(cuda_build, "LOCK_TIMEOUT_S", 0.2)
    build_dir = cuda_build.build_dir_for(cuda_build.cache_key())
    build_dir.parent.mkdir(parents=True)
    other = FileLock(str(build_dir) + ".lock")
    errors = []

    def build():
        try:
            cuda_build._build_and_load(build_dir, "key")
        except BuildError as exc:
            errors.append(exc)

    with other:
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    assert len(errors) == 1 and "timed out" in str(errors[0])
    assert compiler.calls == []  # it never compiled while the other holder had the lock


def test_cache_key_changes_when_one_source_byte_changes(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(cuda_build.source_dir(), src)
    before = cuda_build.cache_key(src, archs="9.0")
    assert cuda_build.cache_key(src, archs="9.0") == before
    target = src / "upfirdn2d.cu"
    data = bytearray(target.read_bytes())
    data[100] ^= 1
    target.write_bytes(bytes(data))
    changed = cuda_build.cache_key(src, archs="9.0")
    assert changed != before
    data[100] ^= 1
    target.write_bytes(bytes(data))
    assert cuda_build.cache_key(src, archs="9.0") == before
    assert cuda_build.cache_key(src, archs="8.0 9.0") != before
    (src / "notes.txt").write_text("not a source file")
    assert cuda_build.cache_key(src, archs="9.0") == before


def test_cache_directory_follows_the_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv(cuda_build.ENV_EXTENSIONS_DIR, str(tmp_path / "mine"))
    assert cuda_build.extensions_dir() == tmp_path / "mine"
    assert cuda_build.build_dir_for("ab" * 32).parent == tmp_path / "mine"
    monkeypatch.delenv(cuda_build.ENV_EXTENSIONS_DIR)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cuda_build.extensions_dir() == tmp_path / "xdg" / "stylegan_disentangle" / "extensions"


def test_target_archs_come_from_torch_cuda_arch_list(monkeypatch):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    assert cuda_build.target_archs() == "8.0 9.0+PTX"


def test_failure_summary_keeps_the_compiler_error_lines():
    summary = cuda_build._summarize(RuntimeError(COMPILER_ERROR))
    assert summary.startswith("RuntimeError: ")
    assert 'error: identifier "__simulated" is undefined' in summary
    assert "ninja: build stopped" not in summary
    assert cuda_build._summarize(OSError("disk full")) == "OSError: disk full"


def test_compile_check_script_uses_the_extension_flags_and_sources():
    script = (REPO / "scripts" / "check_cuda_compile.sh").read_text()
    for flag in cuda_build.EXTRA_CUDA_CFLAGS:
        assert flag in script, flag
    assert "arch=compute_90,code=sm_90" in script and "arch=compute_80,code=sm_80" in script
    for name in cuda_build.EXTENSION_SOURCES:
        assert (cuda_build.source_dir() / name).is_file()


def test_a_finished_build_with_another_key_is_compiled_again(fresh_build, monkeypatch):
    """The marker names the key it was built for; a directory holding another key's build is not reused."""
    compiler, loaded = FakeCompiler(), []
    monkeypatch.setattr(cpp_extension, "load", compiler)
    monkeypatch.setattr(cuda_build, "_load_library", loaded.append)
    build_dir = cuda_build.build_dir_for(cuda_build.cache_key())
    build_dir.mkdir(parents=True)
    (build_dir / "old.so").write_bytes(b"old")
    (build_dir / cuda_build.MARKER_NAME).write_text(json.dumps({"key": "another key", "library": "old.so"}))
    assert cuda_build.load_extension() is not None
    assert len(compiler.calls) == 1 and loaded == [build_dir / "stylegan2_ops.so"]
