"""Download cache for checkpoint URLs: streaming, resumable, checksummed, atomic.

A URL is stored once under the cache directory as `<12 hex of sha256(url)>-<basename>`, so two URLs never share a
file even when their basenames agree. While a transfer runs, bytes go to `<name>.part`; an interrupted transfer is
resumed with an HTTP `Range` request (by the built-in retries or by the next call), and only a complete file whose
checksum matched is renamed onto `<name>`. A small sidecar `<name>.meta.json` records the file's sha256 together
with its size and modification time, so a verified file is not hashed again on every load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sys
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

import requests
from tqdm import tqdm

from ..errors import DownloadError
from ..utils import atomic_write, sha256_file

if TYPE_CHECKING:
    from filelock import FileLock

logger = logging.getLogger(__name__)

CACHE_ENV_VAR = "STYLEGAN_DISENTANGLE_CACHE"
"""Environment variable that, when set, is the cache directory itself."""

CHUNK_SIZE = 1 << 16
"""Bytes read from the socket per iteration (64 KiB); a broken connection loses at most the chunk in flight."""

RETRY_BACKOFF_S = 1.0
"""First wait between retries in seconds; doubles after each consecutive failure (tests set it to 0)."""

_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTENT_RANGE_RE = re.compile(r"^bytes\s+(\d+)-(\d+)/(\d+|\*)$")
_UNSATISFIED_RANGE_RE = re.compile(r"^bytes\s+\*/(\d+)$")


class _IncompleteTransfer(Exception):
    """The server closed the stream before sending every byte it announced (internal; triggers a retry)."""


class _RetryableStatus(Exception):
    """A 5xx / 429 / 408 answer (internal; triggers a retry)."""


def default_cache_dir() -> Path:
    """Where downloaded checkpoints live.

    `$STYLEGAN_DISENTANGLE_CACHE` when set; otherwise `$XDG_CACHE_HOME/stylegan_disentangle`, falling back to
    `~/.cache/stylegan_disentangle`. The directory is not created here.
    """
    override = os.environ.get(CACHE_ENV_VAR)
    if override:
        return Path(override).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "stylegan_disentangle"


def cache_file_name(url: str) -> str:
    """The cache file name of `url`: a short hash of the whole URL, a dash, and the URL path's basename.

    The basename is percent-decoded and reduced to `[A-Za-z0-9._-]` so that it is a safe file name everywhere.
    """
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:12]
    basename = urllib.parse.unquote(urllib.parse.urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    basename = re.sub(r"[^A-Za-z0-9._-]+", "_", basename).strip("._") or "download"
    return f"{digest}-{basename[:100]}"


def cache_path_for_url(url: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The path a complete download of `url` has (whether or not it exists yet)."""
    return Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser() / cache_file_name(url)


def is_cached(url: str, cache_dir: str | os.PathLike | None = None) -> bool:
    """True when a complete download of `url` is in the cache (its checksum is not checked here)."""
    return cache_path_for_url(url, cache_dir).is_file()


def download_file(
    url: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    sha256: str | None = None,
    progress: bool | None = None,
    timeout: float = 60.0,
    retries: int = 3,
) -> Path:
    """Return the local path of `url`, downloading it into the cache unless a complete copy is already there.

    Parameters
    ----------
    url: http(s) URL of the file.
    cache_dir: cache directory; `default_cache_dir()` when None.
    sha256: expected hex digest. A cached file is verified once (the result is remembered in a sidecar); a fresh
        download that does not match raises DownloadError and leaves neither the file nor its `.part` behind.
    progress: show a tqdm bar; None means "only when stderr is a terminal".
    timeout: seconds to wait for the connection and for each read.
    retries: how many times a broken or timed-out transfer (or a 5xx answer) is retried, resuming each time.
        The count starts again whenever an attempt made progress.

    Raises
    ------
    DownloadError: HTTP error status, network failure after the retries, or checksum mismatch.
    """
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise DownloadError(f"not an http(s) URL: {url!r}")
    expected = _normalize_sha256(sha256)
    final = cache_path_for_url(url, cache_dir)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file() and (expected is None or _verified_digest(final) == expected):
            logger.debug("using cached %s for %s", final, url)
            return final  # no lock, no request: a read-only cache directory works too
        with _file_lock(final.with_name(final.name + ".lock")):
            return _download_into_cache(url, final, expected, progress=progress, timeout=timeout, retries=retries)
    except OSError as exc:  # disk full, permissions, and requests' own errors (they derive from IOError)
        raise DownloadError(f"could not download {url} into {final.parent}: {exc}") from exc


def _download_into_cache(
    url: str, final: Path, expected: str | None, *, progress: bool | None, timeout: float, retries: int
) -> Path:
    """Under the lock: fetch into `<final>.part`, verify, rename onto `final`, record the digest."""
    if final.is_file():
        if expected is None or _verified_digest(final) == expected:
            return final  # another process finished it while we waited for the lock
        logger.warning("cached %s does not match sha256 %s; downloading %s again", final, expected, url)
        final.unlink()
        _meta_path(final).unlink(missing_ok=True)

    part = final.with_name(final.name + ".part")
    _fetch_to_part(url, part, progress=progress, timeout=timeout, retries=retries)

    actual = sha256_file(part)
    if expected is not None and actual != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"sha256 mismatch for {url}: expected {expected}, got {actual}; the downloaded file was deleted"
        )
    os.replace(part, final)
    _write_meta(final, actual, url)
    logger.info("downloaded %s -> %s", url, final)
    return final


def _normalize_sha256(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    value = sha256.strip().lower()
    if not _SHA256_RE.match(value):
        raise ValueError(f"expected sha256 must be 64 hex digits, got {sha256!r}")
    return value


def _fetch_to_part(url: str, part: Path, *, progress: bool | None, timeout: float, retries: int) -> None:
    """Bring `part` to the complete content of `url`, resuming what is already there; retry broken transfers."""
    show = sys.stderr.isatty() if progress is None else bool(progress)
    failures = 0
    with requests.Session() as session:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _fetch_once(session, url, part, show=show, timeout=timeout)
                return
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                    _IncompleteTransfer, _RetryableStatus) as exc:
                after = part.stat().st_size if part.exists() else 0
                failures = 1 if after > before else failures + 1
                if failures > retries:
                    kept = f"; {after} bytes kept in {part} for the next attempt" if after else ""
                    cached = part.with_name(part.name.removesuffix(".part"))
                    raise DownloadError(f"could not download {url} after {retries + 1} attempts: {exc}{kept}. "
                                        f"Without network access, fetch the file elsewhere and copy it to {cached} "
                                        "(it is used from there), or give its local path instead") from exc
                wait = RETRY_BACKOFF_S * 2 ** (failures - 1)
                logger.warning("download of %s interrupted (%s); resuming at byte %d in %.1fs", url, exc, after, wait)
                time.sleep(wait)


def _fetch_once(session: requests.Session, url: str, part: Path, *, show: bool, timeout: float) -> None:
    """One HTTP request: append to `part` (206) or rewrite it (200); raise when the stream ends early."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Accept-Encoding": "identity"}  # byte offsets must refer to the file itself, not a gzip stream
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as response:
        status = response.status_code
        if status == 416 and offset:
            match = _UNSATISFIED_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match and int(match.group(1)) == offset:
                return  # the partial file already holds every byte
            logger.warning("server refused to resume %s at byte %d; starting over", url, offset)
            part.unlink()
            raise _IncompleteTransfer(f"range {offset}- not satisfiable")
        if status in _RETRYABLE_STATUS:
            raise _RetryableStatus(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise DownloadError(f"could not download {url}: HTTP {status} {response.reason}")
        if status == 206 and offset:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                part.unlink()
                got = response.headers.get("Content-Range")
                raise _IncompleteTransfer(f"asked for bytes {offset}- but the server sent range {got!r}")
            mode, start = "ab", offset
        elif status == 200:
            if offset:
                logger.info("server ignored the Range request for %s; downloading from the start", url)
            mode, start = "wb", 0
        else:
            raise DownloadError(f"could not download {url}: unexpected HTTP {status} {response.reason}")

        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None and length.isdigit() else None
        received = start
        with open(part, mode) as f, tqdm(
            total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name[: -len(".part")], disable=not show, leave=False,
        ) as bar:
            for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
        if total is not None and received != total:
            if received > total:
                part.unlink()
            raise _IncompleteTransfer(f"received {received} of {total} bytes")


def _meta_path(final: Path) -> Path:
    return final.with_name(final.name + ".meta.json")


def _write_meta(final: Path, digest: str, url: str) -> None:
    """Remember the digest of `final` along with its size and mtime (so a later change invalidates it)."""
    st = final.stat()
    meta = {"url": url, "sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    with atomic_write(_meta_path(final), "w") as f:
        json.dump(meta, f, indent=1)


def _read_meta(final: Path) -> dict:
    try:
        meta = json.loads(_meta_path(final).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _verified_digest(final: Path) -> str:
    """The sha256 of a cached file: from the sidecar when it still describes the file, else hashed (and stored)."""
    st = final.stat()
    meta = _read_meta(final)
    same_file = meta.get("size") == st.st_size and meta.get("mtime_ns") == st.st_mtime_ns
    if same_file and isinstance(meta.get("sha256"), str):
        return meta["sha256"]
    digest = sha256_file(final)
    with contextlib.suppress(OSError):
        _write_meta(final, digest, str(meta.get("url", "")))
    return digest


def remove_cached(path: str | os.PathLike) -> None:
    """Delete a cached download and its digest record (e.g. a server's error page saved under a checkpoint's name),
    so that the next `download_file` fetches it again."""
    final = Path(path)
    final.unlink(missing_ok=True)
    _meta_path(final).unlink(missing_ok=True)


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file in the download cache, reusing the sidecar digest when it is still valid."""
    return _verified_digest(Path(path))


def _file_lock(lock_path: Path) -> FileLock:
    """An exclusive OS file lock (released by the OS if the process dies; POSIX and Windows alike), so two
    processes never write the same `.part` at once. The empty lock file stays in the cache: deleting it on release
    would race with a process that has just opened it."""
    from filelock import FileLock  # imported on first download: importing the package stays light

    return FileLock(lock_path)
