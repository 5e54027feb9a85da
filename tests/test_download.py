"""Download cache: served from a local http.server on 127.0.0.1 (no external network; conftest's `file_server`)."""

from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading

import pytest
from filelock import FileLock

from stylegan_disentangle.checkpoints import download as dl
from stylegan_disentangle.checkpoints.download import (
    CACHE_ENV_VAR,
    cache_file_name,
    cache_path_for_url,
    default_cache_dir,
    download_file,
    is_cached,
)
from stylegan_disentangle.errors import CheckpointError, DownloadError
from tests.helpers import tiny_networks

PAYLOAD = bytes(range(256)) * 1200 + b"tail"  # 307204 bytes: several chunks, not a multiple of the chunk size


@pytest.fixture
def server(file_server, monkeypatch):
    """The local file server with this module's two URLs; small chunks make the cut points deterministic."""
    monkeypatch.setattr(dl, "CHUNK_SIZE", 4096)
    file_server.files.update({"/nets/model.pkl": PAYLOAD, "/nets/model.pkl?v=2": PAYLOAD})
    return file_server


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_fresh_download_is_byte_equal_and_named_after_the_url(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    path = download_file(url, cache_dir=tmp_path, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert path.parent == tmp_path
    assert path.name == hashlib.sha256(url.encode()).hexdigest()[:12] + "-model.pkl"
    assert path == cache_path_for_url(url, tmp_path) and is_cached(url, tmp_path)
    assert server.requests == [("/nets/model.pkl", None)]
    assert not path.with_name(path.name + ".part").exists()


def test_urls_with_the_same_basename_never_collide():
    a = cache_file_name("https://a.example/x/ffhq.pkl")
    b = cache_file_name("https://b.example/y/ffhq.pkl")
    assert a != b and a.endswith("-ffhq.pkl") and b.endswith("-ffhq.pkl")
    assert cache_file_name("https://a.example/dir/").endswith("-dir")
    assert "/" not in cache_file_name("https://a.example/a%2Fb%20c.pkl")


def test_second_call_makes_no_request(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    first = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    second = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    third = download_file(url, cache_dir=tmp_path, progress=False)
    assert first == second == third
    assert len(server.requests) == 1


def test_verified_cached_file_is_not_hashed_again(server, tmp_path, monkeypatch):
    url = server.base + "/nets/model.pkl"
    download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    calls = []
    real = dl.sha256_file
    monkeypatch.setattr(dl, "sha256_file", lambda p: calls.append(p) or real(p))
    for _ in range(3):
        download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    assert calls == []


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download_file(url, cache_dir=tmp_path, sha256=wrong, progress=False)
    message = str(info.value)
    assert url in message and wrong in message and _sha(PAYLOAD) in message
    final = cache_path_for_url(url, tmp_path)
    assert not final.exists()
    assert not final.with_name(final.name + ".part").exists()
    assert not is_cached(url, tmp_path)


def test_corrupted_cached_file_is_downloaded_again(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    path = download_file(url, cache_dir=tmp_path, progress=False)
    path.write_bytes(b"garbage")  # changes size and mtime, so the sidecar no longer vouches for it
    again = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    assert again == path and again.read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_interrupted_transfer_is_resumed_by_the_next_call(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    server.cut_after["/nets/model.pkl"] = 100_000
    with pytest.raises(DownloadError, match="127.0.0.1"):
        download_file(url, cache_dir=tmp_path, progress=False, retries=0)
    final = cache_path_for_url(url, tmp_path)
    part = final.with_name(final.name + ".part")
    assert not final.exists()
    kept = part.stat().st_size  # whole chunks that arrived before the cut (the chunk in flight is lost)
    assert 0 < kept <= 100_000
    assert part.read_bytes() == PAYLOAD[:kept]
    path = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/nets/model.pkl", None), ("/nets/model.pkl", f"bytes={kept}-")]
    assert not part.exists()


def test_interrupted_transfer_is_resumed_by_the_builtin_retry(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    server.cut_after["/nets/model.pkl"] = 150_000
    path = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False, retries=2)
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 2 and server.requests[0] == ("/nets/model.pkl", None)
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", server.requests[1][1]).group(1))
    assert 0 < resumed_at <= 150_000


def test_server_ignoring_range_still_gives_a_correct_file(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    final = cache_path_for_url(url, tmp_path)
    part = final.with_name(final.name + ".part")
    part.write_bytes(b"X" * 5000)  # a stale partial file whose bytes are wrong
    server.ignore_range = True
    path = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/nets/model.pkl", "bytes=5000-")]


def test_complete_part_file_is_finished_without_new_bytes(server, tmp_path):
    url = server.base + "/nets/model.pkl"
    final = cache_path_for_url(url, tmp_path)
    final.with_name(final.name + ".part").write_bytes(PAYLOAD)
    path = download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [("/nets/model.pkl", f"bytes={len(PAYLOAD)}-")]


def test_http_404_names_the_url_and_status(server, tmp_path):
    url = server.base + "/nets/missing.pkl"
    with pytest.raises(DownloadError) as info:
        download_file(url, cache_dir=tmp_path, progress=False)
    assert url in str(info.value) and "404" in str(info.value)
    assert isinstance(info.value, CheckpointError)
    assert not cache_path_for_url(url, tmp_path).exists()
    assert len(server.requests) == 1  # a 404 is not retried


def test_unreachable_server_gives_download_error(tmp_path, monkeypatch):
    monkeypatch.setattr(dl, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = http_server.server_address[1]
    http_server.server_close()  # nothing listens on this port any more
    url = f"http://127.0.0.1:{port}/x.pkl"
    with pytest.raises(DownloadError, match=re.escape(url)) as info:
        download_file(url, cache_dir=tmp_path, progress=False, retries=1, timeout=2)
    # the error says where an offline user puts the file; put there, it is used (checksum-verified) without a request
    final = cache_path_for_url(url, tmp_path)
    assert f"copy it to {final}" in str(info.value)
    final.write_bytes(PAYLOAD)
    assert download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False, retries=0) == final
    final.write_bytes(PAYLOAD[:-1])  # a wrong copy is not used: the download is tried again (and fails here)
    with pytest.raises(DownloadError, match="copy it to"):
        download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False, retries=0, timeout=2)


def test_rejects_non_http_urls_and_bad_hashes(tmp_path):
    with pytest.raises(DownloadError, match="ftp://"):
        download_file("ftp://example.com/a.pkl", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="64 hex"):
        download_file("https://example.com/a.pkl", cache_dir=tmp_path, sha256="abc")


def test_unusable_cache_dir_gives_download_error(server, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_bytes(b"")
    url = server.base + "/nets/model.pkl"
    with pytest.raises(DownloadError, match=re.escape(url)):
        download_file(url, cache_dir=not_a_dir / "cache", progress=False)


def test_env_var_overrides_cache_dir(server, tmp_path, monkeypatch):
    cache = tmp_path / "my-cache"
    monkeypatch.setenv(CACHE_ENV_VAR, str(cache))
    assert default_cache_dir() == cache
    path = download_file(server.base + "/nets/model.pkl", progress=False)
    assert path.parent == cache and path.read_bytes() == PAYLOAD


def test_default_cache_dir_follows_xdg_then_home(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "stylegan_disentangle"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "stylegan_disentangle"


def test_nothing_half_written_at_the_final_name_while_downloading(server, tmp_path, monkeypatch):
    url = server.base + "/nets/model.pkl"
    final = cache_path_for_url(url, tmp_path)
    opened_for_writing = []
    real_open = open

    def spying_open(file, mode="r", *args, **kwargs):
        if any(flag in mode for flag in "wax+"):
            opened_for_writing.append(os.path.abspath(os.fspath(file)))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spying_open)
    download_file(url, cache_dir=tmp_path, progress=False)
    assert str(final) + ".part" in opened_for_writing, "the body must be written to the .part file"
    assert str(final) not in opened_for_writing, "the final name may only appear by renaming a complete file"
    assert final.read_bytes() == PAYLOAD


def test_progress_bar_is_shown_on_request(server, tmp_path, capsys):
    url = server.base + "/nets/model.pkl"
    download_file(url, cache_dir=tmp_path, progress=True)
    assert "model.pkl" in capsys.readouterr().err
    download_file(server.base + "/nets/model.pkl?v=2", cache_dir=tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_a_download_that_is_no_network_pickle_is_dropped_from_the_cache(server, tmp_path):
    """A server's error page saved under a checkpoint's name is removed once the loader sees it, so that the next
    call fetches the file again instead of failing the same way forever."""
    from stylegan_disentangle.checkpoints import load_network_pkl, save_network_pkl

    url = server.base + "/nets/page.pkl"
    server.files["/nets/page.pkl"] = b"<!DOCTYPE html><html>rate limited</html>"
    with pytest.raises(CheckpointError, match=rf"not a pickle file.*downloaded from {re.escape(url)}.*removed"):
        load_network_pkl(url, cache_dir=tmp_path)
    assert not cache_path_for_url(url, tmp_path).exists()
    good = tmp_path / "good.pkl"
    save_network_pkl(good, tiny_networks("skip16"))
    server.files["/nets/page.pkl"] = good.read_bytes()
    assert load_network_pkl(url, cache_dir=tmp_path)["G_ema"].img_resolution == 16


def test_a_known_name_whose_file_is_another_network_is_refused(tmp_path):
    """A file in the cache under a registry name (copied by hand, as the offline message suggests) must be the
    network the record describes."""
    from stylegan_disentangle.checkpoints import get_checkpoint_info, load_network_pkl, save_network_pkl

    entry = get_checkpoint_info("stylegan2-ffhq-1024x1024")
    assert entry.sha256 is None  # (a record with a digest would refuse the file at its checksum already)
    save_network_pkl(entry.local_path(tmp_path), tiny_networks("skip16"))
    with pytest.raises(CheckpointError, match=rf"not the known checkpoint '{entry.name}'.*resolution 16 \(the record "
                                              rf"says {entry.resolution}\)"):
        load_network_pkl(entry.name, cache_dir=tmp_path)


def test_a_download_that_this_machine_cannot_read_is_kept(server, tmp_path, monkeypatch):
    """Out of memory (or an I/O error) says nothing about the file: it stays in the cache."""
    from stylegan_disentangle.checkpoints import load_network_pkl, loader, save_network_pkl

    url = server.base + "/nets/good.pkl"
    good = tmp_path / "good.pkl"
    save_network_pkl(good, tiny_networks("skip16"))
    server.files["/nets/good.pkl"] = good.read_bytes()

    def out_of_memory(f):
        raise MemoryError

    monkeypatch.setattr(loader, "restricted_load", out_of_memory)
    with pytest.raises(CheckpointError, match="MemoryError"):
        load_network_pkl(url, cache_dir=tmp_path / "cache")
    assert cache_path_for_url(url, tmp_path / "cache").is_file()


def test_a_download_waits_for_the_lock_and_uses_the_file_another_process_finished(server, tmp_path):
    """While another process holds `<file>.lock` (here: an OS lock taken by the test), a download of the same URL
    neither requests nor writes anything; once the holder has put the finished file in place and released the lock,
    the waiting call returns that file without a request."""
    url = server.base + "/nets/model.pkl"
    final = dl.cache_path_for_url(url, tmp_path)
    final.parent.mkdir(parents=True, exist_ok=True)
    holder = FileLock(str(final) + ".lock")
    holder.acquire()
    result: dict[str, object] = {}
    waiter = threading.Thread(
        target=lambda: result.update(path=download_file(url, cache_dir=tmp_path, sha256=_sha(PAYLOAD), progress=False))
    )
    try:
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive(), "the download did not wait for the lock"
        assert server.requests == [] and not final.with_name(final.name + ".part").exists()
        final.write_bytes(PAYLOAD)  # the holder finishes the file
    finally:
        holder.release()
    waiter.join(timeout=10)
    assert not waiter.is_alive()
    assert result["path"] == final and final.read_bytes() == PAYLOAD
    assert server.requests == []
