"""Registry of known checkpoints, and `resolve_checkpoint`: name / URL / path -> a local file.

The records live as data in `known_checkpoints.json` next to this module (name -> URL or packaged file, flavour,
resolution, c_dim, description, expected sha256 when a published value is known). `load_network_pkl('ffhq')`
works because the loader first calls `resolve_checkpoint('ffhq')`, which downloads (or reuses) the cached file.
"""

from __future__ import annotations

import difflib
import functools
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import CheckpointError
from .download import cache_path_for_url, download_file

FLAVOURS = ("sg2ada", "sg3", "tf", "synthetic")
"""sg2ada: StyleGAN2-ADA-pytorch pickle; sg3: StyleGAN3-repository pickle; tf: original TensorFlow StyleGAN2
pickle; synthetic: a checkpoint made by this package."""

REGISTRY_FILE = Path(__file__).with_name("known_checkpoints.json")
PACKAGE_ROOT = Path(__file__).resolve().parent.parent

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_LIST_HINT = "run `stylegan-disentangle list-checkpoints` to see the known names"


@dataclass(frozen=True)
class KnownCheckpoint:
    """One known checkpoint: where it comes from and what it holds.

    Exactly one of `url` (downloaded into the cache) and `package_file` (shipped inside the package, relative to
    the `stylegan_disentangle` directory) is set. `sha256` is None when no published digest is known.
    """

    name: str
    flavour: str
    resolution: int
    c_dim: int
    description: str
    url: str | None = None
    package_file: str | None = None
    sha256: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not _NAME_RE.match(self.name):
            problems.append("name must be lower-case letters, digits, '.', '_' or '-'")
        if self.flavour not in FLAVOURS:
            problems.append(f"flavour {self.flavour!r} is not one of {FLAVOURS}")
        if (not isinstance(self.resolution, int) or isinstance(self.resolution, bool) or self.resolution < 4
                or self.resolution & (self.resolution - 1)):
            problems.append(f"resolution {self.resolution!r} is not a power of two >= 4")
        if not isinstance(self.c_dim, int) or isinstance(self.c_dim, bool) or self.c_dim < 0:
            problems.append(f"c_dim {self.c_dim!r} is not a non-negative int")
        if (self.url is None) == (self.package_file is None):
            problems.append("exactly one of url and package_file must be given")
        if self.url is not None and not self.url.startswith("https://"):
            problems.append(f"url {self.url!r} is not https")
        pkg = Path(self.package_file) if self.package_file is not None else None
        if pkg is not None and (pkg.is_absolute() or ".." in pkg.parts or not pkg.parts):
            problems.append(f"package_file {self.package_file!r} must be a relative path inside the package")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            problems.append(f"sha256 {self.sha256!r} is not 64 lower-case hex digits")
        if problems:
            raise CheckpointError(f"bad checkpoint record {self.name!r}: " + "; ".join(problems))

    @property
    def source(self) -> str:
        """The URL, or `package:<relative path>` for a packaged file."""
        return self.url if self.url is not None else f"package:{self.package_file}"

    def local_path(self, cache_dir: str | os.PathLike | None = None) -> Path:
        """Where the file is (packaged file) or will be once downloaded (cache entry)."""
        if self.package_file is not None:
            return PACKAGE_ROOT / self.package_file
        return cache_path_for_url(self.url, cache_dir)

    def is_available(self, cache_dir: str | os.PathLike | None = None) -> bool:
        """True when no download is needed: the packaged file exists or the URL is in the cache."""
        return self.local_path(cache_dir).is_file()

    def to_dict(self) -> dict:
        return asdict(self)


@functools.cache
def _load_registry(path: str) -> tuple[KnownCheckpoint, ...]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read the checkpoint registry {path}: {exc}") from exc
    records = doc.get("checkpoints") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise CheckpointError(f"checkpoint registry {path} has no 'checkpoints' list")
    fields = set(KnownCheckpoint.__dataclass_fields__)
    required = {"name", "flavour", "resolution", "c_dim", "description"}
    out, seen = [], set()
    for i, record in enumerate(records):
        if not isinstance(record, dict) or not required <= set(record):
            raise CheckpointError(f"checkpoint registry {path}: entry {i} lacks one of {sorted(required)}")
        unknown = set(record) - fields
        if unknown:
            raise CheckpointError(f"checkpoint registry {path}: entry {record['name']!r} has unknown {sorted(unknown)}")
        entry = KnownCheckpoint(**record)
        if entry.name in seen:
            raise CheckpointError(f"checkpoint registry {path}: name {entry.name!r} appears twice")
        seen.add(entry.name)
        out.append(entry)
    return tuple(out)


def known_checkpoints() -> dict[str, KnownCheckpoint]:
    """All known checkpoints by name, in registry order (a fresh dict; the records themselves are frozen)."""
    return {entry.name: entry for entry in _load_registry(str(REGISTRY_FILE))}


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name.strip().lower(), known_checkpoints(), n=5, cutoff=0.5)
    return f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""


def get_checkpoint_info(name: str) -> KnownCheckpoint:
    """The record of a known checkpoint; CheckpointError listing close matches for an unknown name."""
    registry = known_checkpoints()
    key = name.strip().lower()
    if key in registry:
        return registry[key]
    raise CheckpointError(f"unknown checkpoint name {name!r}; {_did_you_mean(name)}{_LIST_HINT}")


@dataclass(frozen=True)
class CheckpointSource:
    """Where `locate_checkpoint` found a file: the URL it was downloaded from (None for a local file or a packaged
    one) and the registry record when it was asked for by name."""

    path: Path
    url: str | None = None
    entry: KnownCheckpoint | None = None


def resolve_checkpoint(
    spec: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> Path:
    """Turn a checkpoint spec into a local file path.

    `spec` is an http(s) URL (downloaded into the cache), a path to an existing file, or a registry name
    (downloaded with its recorded sha256, or the packaged file). An existing local file wins over a registry
    name of the same spelling. Raises CheckpointError (DownloadError for network / checksum failures).
    """
    return locate_checkpoint(spec, cache_dir=cache_dir, progress=progress).path


def locate_checkpoint(
    spec: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool | None = None,
) -> CheckpointSource:
    """`resolve_checkpoint`, also saying whether the file was downloaded (and from where) and which registry
    record it stands for, so that the loader can drop a bad download from the cache and check the record."""
    if isinstance(spec, str) and re.match(r"^https?://", spec, flags=re.IGNORECASE):
        return CheckpointSource(download_file(spec, cache_dir=cache_dir, progress=progress), url=spec)

    path = Path(spec).expanduser()
    if path.is_file():
        return CheckpointSource(path)
    if path.exists():
        raise CheckpointError(f"checkpoint path {str(path)!r} is not a file")

    text = os.fspath(spec)
    if isinstance(spec, str) and text.strip().lower() in known_checkpoints():
        entry = get_checkpoint_info(text)
        if entry.package_file is not None:
            local = entry.local_path()
            if not local.is_file():
                raise CheckpointError(
                    f"checkpoint {entry.name!r} should ship with the package at {local}, but the file is missing; "
                    "reinstall stylegan_disentangle"
                )
            return CheckpointSource(local, entry=entry)
        local = download_file(entry.url, cache_dir=cache_dir, sha256=entry.sha256, progress=progress)
        return CheckpointSource(local, url=entry.url, entry=entry)

    if "/" in text or os.sep in text:
        raise CheckpointError(
            f"checkpoint file {str(path)!r} does not exist; pass an existing .pkl path, an http(s) URL, "
            f"or a known name ({_LIST_HINT})"
        )
    raise CheckpointError(
        f"checkpoint {text!r} is neither an existing file nor a known checkpoint name; "
        f"{_did_you_mean(path.stem if path.suffix else text)}{_LIST_HINT}"
    )
