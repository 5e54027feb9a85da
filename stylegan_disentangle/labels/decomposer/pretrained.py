"""The official pretrained Unsup3D decomposers by name, and decomposers given as a URL or as the official zip.

Wu et al. publish their trained networks as zip archives (`pretrained_celeba.zip` holds
`pretrained_celeba/checkpoint030.pth`, ...). `known_decomposers.json` beside this module records each one's URL,
the checkpoint inside the archive and the output scalings of its test configuration that differ from the
defaults (the cat model translates in z, the car model's diffuse light starts at 0.5). `resolve_decomposer`
turns a spec into a local checkpoint file:

- a known name (`unsup3d-celeba`, ...): the archive is downloaded once into the checkpoint cache (resumable,
  checked against the recorded sha256 where one is known), and its checkpoint extracted beside it;
- an http(s) URL of a `.pth` checkpoint or of a zip archive holding exactly one;
- a local `.zip` archive (the one a user downloaded by hand) or any other local path.

Only the checkpoint's bytes are copied out of an archive (never to a path taken from the archive), and the file
is read by `load_unsup3d`, which never runs code stored in it.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ...checkpoints.download import (
    cache_path_for_url,
    cached_sha256,
    default_cache_dir,
    download_file,
    remove_cached,
)
from ...errors import CheckpointError
from ...utils import atomic_write

__all__ = ["KNOWN_FILE", "KnownDecomposer", "checkpoint_in_zip", "known_decomposers", "resolve_decomposer"]

KNOWN_FILE = Path(__file__).with_name("known_decomposers.json")

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CHECKPOINT_RE = re.compile(r"^checkpoint\d*\.pth$")


@dataclass(frozen=True)
class KnownDecomposer:
    """One official pretrained decomposer: the archive's URL, the checkpoint inside it, its scalings."""

    name: str
    url: str
    member: str
    """Base name of the checkpoint inside the archive (its folder is not relied on)."""
    description: str
    scalings: dict[str, Any] = field(default_factory=dict)
    """Output scalings of the official test configuration that differ from `Unsup3DDecomposer`'s defaults."""
    sha256: str | None = None
    """Digest of the archive; None where no published value is known (the download is then not verified)."""

    def __post_init__(self) -> None:
        problems = []
        if not _NAME_RE.match(self.name):
            problems.append("name must be lower-case letters, digits, '.', '_' or '-'")
        if not self.url.startswith("https://"):
            problems.append(f"url {self.url!r} is not https")
        if not _CHECKPOINT_RE.match(self.member):
            problems.append(f"member {self.member!r} is not a checkpoint file name (checkpointNNN.pth)")
        if not isinstance(self.scalings, dict):
            problems.append("scalings must be a JSON object")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            problems.append(f"sha256 {self.sha256!r} is not 64 lower-case hex digits")
        if problems:
            raise CheckpointError(f"{KNOWN_FILE}: bad decomposer record {self.name!r}: " + "; ".join(problems))

    def is_cached(self, cache_dir: str | os.PathLike | None = None) -> bool:
        """True when the archive is in the download cache (loading it then makes no request)."""
        return cache_path_for_url(self.url, cache_dir).is_file()


@functools.cache
def _load_known(path: str) -> tuple[KnownDecomposer, ...]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        records = doc["decomposers"]
        entries = tuple(KnownDecomposer(**record) for record in records)
    except CheckpointError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot read the decomposer registry {path}: {type(exc).__name__}: {exc}") from None
    names = [e.name for e in entries]
    if len(set(names)) != len(names):
        raise CheckpointError(f"decomposer registry {path}: a name appears twice in {names}")
    return entries


def known_decomposers() -> dict[str, KnownDecomposer]:
    """The official pretrained decomposers by name (registry order)."""
    return {entry.name: entry for entry in _load_known(str(KNOWN_FILE))}


def resolve_decomposer(spec: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None,
                       progress: bool | None = None) -> tuple[Path, dict[str, Any]]:
    """A decomposer spec -> (local checkpoint path, scalings the registry records for it).

    `spec` is a known name (see `known_decomposers`), an http(s) URL (a `.pth` checkpoint or a zip archive holding
    one), or a local path (a `.zip` archive holding one checkpoint, or anything `load_unsup3d` reads). An existing
    local file wins over a name of the same spelling. Raises CheckpointError (DownloadError for the network).
    """
    text = os.fspath(spec)
    local = Path(text).expanduser()
    known = known_decomposers()
    if not local.exists() and text.strip().lower() in known:
        entry = known[text.strip().lower()]
        archive = download_file(entry.url, cache_dir=cache_dir, sha256=entry.sha256, progress=progress)
        return _downloaded_checkpoint(archive, entry.member, cache_dir), dict(entry.scalings)
    if re.match(r"^https?://", text, flags=re.IGNORECASE):
        path = download_file(text, cache_dir=cache_dir, progress=progress)
        if (path.suffix.lower() == ".zip" or zipfile.is_zipfile(path)) and not _is_torch_file(path):
            return _downloaded_checkpoint(path, None, cache_dir), {}
        return path, {}
    if local.is_file() and local.suffix.lower() == ".zip" and not _is_torch_file(local):
        return checkpoint_in_zip(local, cache_dir=cache_dir), {}
    return local, {}


def _downloaded_checkpoint(archive: Path, member: str | None, cache_dir: str | os.PathLike | None) -> Path:
    """`checkpoint_in_zip` of a downloaded archive; one that is no zip at all (a truncated transfer that the server
    called complete, an error page) is removed from the cache, so that the next call downloads it again."""
    try:
        return checkpoint_in_zip(archive, member=member, cache_dir=cache_dir)
    except CheckpointError as exc:
        if zipfile.is_zipfile(archive):
            raise
        remove_cached(archive)
        raise CheckpointError(f"{exc} (the download was removed from the cache: the next call fetches it "
                              "again)") from None


def _is_torch_file(path: Path) -> bool:
    """True for a checkpoint written by `torch.save`: itself a zip, whose members sit in one folder with a
    `data.pkl` (so "is it a zip" cannot tell an archive of files from a checkpoint)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any(re.fullmatch(r"[^/]+/data\.pkl", name) for name in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def checkpoint_in_zip(archive: str | os.PathLike, member: str | None = None,
                      cache_dir: str | os.PathLike | None = None) -> Path:
    """The checkpoint inside a zip archive, extracted (once, atomically) into the cache.

    `member` is the checkpoint's base name; None takes the archive's only `checkpointNNN.pth` (several, or none, is an
    error naming the archive and what it holds). The extracted file is named after the archive's digest (from the
    download cache's record, or its size and modification time for a local archive), so a changed archive is
    extracted again.
    """
    archive = Path(archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            info = _pick_member(zf, archive, member)
            target = _extraction_path(archive, info, cache_dir)
            if target.is_file() and target.stat().st_size == info.file_size:
                return target
            with zf.open(info) as src, atomic_write(target) as dst:
                shutil.copyfileobj(src, dst, length=1 << 20)
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{archive}: not a readable zip archive ({exc}); download it again") from None
    except (zipfile.LargeZipFile, NotImplementedError, RuntimeError, EOFError) as exc:  # encrypted, odd compression
        raise CheckpointError(f"{archive}: cannot extract its checkpoint ({type(exc).__name__}: {exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{archive}: cannot extract its checkpoint into the cache ({exc})") from None
    return target


def _pick_member(zf: zipfile.ZipFile, archive: Path, member: str | None) -> zipfile.ZipInfo:
    files = [i for i in zf.infolist() if not i.is_dir()]
    if member is not None:
        found = [i for i in files if PurePosixPath(i.filename).name == member]
        what = f"a checkpoint named {member!r}"
    else:
        found = [i for i in files if _CHECKPOINT_RE.match(PurePosixPath(i.filename).name)]
        what = "exactly one checkpoint (checkpointNNN.pth)"
    if len(found) != 1:
        listing = ", ".join(i.filename for i in files[:20]) + (" ..." if len(files) > 20 else "") or "nothing"
        raise CheckpointError(f"{archive}: expected {what} in the archive, found {len(found)}; it holds {listing}")
    return found[0]


def _extraction_path(archive: Path, info: zipfile.ZipInfo, cache_dir: str | os.PathLike | None) -> Path:
    root = Path(cache_dir if cache_dir is not None else default_cache_dir()).expanduser()
    if archive.resolve().parent == root.resolve():
        key = cached_sha256(archive)[:16]  # a download: its digest is on record, no hashing
        stem = archive.name
    else:
        st = archive.stat()
        key = f"{st.st_size:x}-{st.st_mtime_ns:x}"
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", archive.name)
    name = PurePosixPath(info.filename).name
    return root / "unsup3d" / f"{stem}-{key}-{name}"
