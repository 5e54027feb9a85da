"""Shared fixtures: the reference folder beside the clone, one torch thread, no grad, and a local HTTP file server."""

from __future__ import annotations

import http.server
import re
import threading
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


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        how = srv.script.pop(0) if srv.script else "full"
        if body is None or how == "503":
            self.send_response(404 if body is None else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and how == "wrong_range":  # a 206 for the whole file, whatever range was asked
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
        elif match and not srv.ignore_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = srv.cut if how == "cut" else srv.cut_after.pop(self.path, None)  # cut_after: a path's first request
        if cut is not None:
            self.wfile.write(body[start : start + cut])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def file_server(monkeypatch):
    """A local HTTP file server on 127.0.0.1: `file_server.files` maps a path to the bytes it serves (fill it in the
    test), `file_server.base` is the URL prefix. It supports `Range: bytes=N-`, can cut the connection after K body
    bytes on the first request for a path (`cut_after`), can ignore Range (`ignore_range`), and records every
    request with its Range header (`requests`). `script` answers the next requests in turn, whatever their path:
    'full' (as above), 'cut' (the connection drops after `cut` body bytes), 'wrong_range' (a 206 for the whole file
    whatever was asked), '503'."""
    from stylegan_disentangle.checkpoints import download as dl

    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.files = {}
    srv.cut_after = {}
    srv.ignore_range = False
    srv.script, srv.cut = [], 0
    srv.requests = []
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
