"""Files on disk: atomic writes, checksums, validated HDF5 opening and provenance records."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py

from gslbench.errors import GslbenchError

CHUNK_BYTES = 1 << 20
PACKAGES = ("gslbench", "torch", "numpy", "faiss-cpu", "h5py", "pandas", "scikit-learn")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            tmp.chmod(0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing or corrupt file is a user error naming it."""
    path = Path(path)
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GslbenchError(f"{path}: not valid JSON ({exc})") from None


@dataclass(frozen=True)
class Digest:
    """Size in bytes, md5 and sha256 of a file's content."""

    size: int
    md5: str
    sha256: str


def digest_file(path: str | Path, gunzip: bool = False) -> Digest:
    """Size, md5 and sha256 of a file's bytes (or of its gunzipped bytes); one pass, in chunks.

    The one file-hashing helper: `sha256_file` and `md5_file` are its parts."""
    md5, sha256, size = hashlib.md5(), hashlib.sha256(), 0
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            md5.update(chunk)
            sha256.update(chunk)
            size += len(chunk)
    return Digest(size, md5.hexdigest(), sha256.hexdigest())


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return digest_file(path).sha256


def md5_file(path: str | Path) -> str:
    """Hex md5 of a file's bytes."""
    return digest_file(path).md5


def package_versions() -> dict[str, str]:
    """Versions of Python and of the packages that decide a result."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def set_format_attrs(handle: h5py.File, file_format: str, version: int) -> None:
    """Stamp an HDF5 file with the attrs every gslbench file carries."""
    handle.attrs["format"] = file_format
    handle.attrs["format_version"] = version
    handle.attrs["created_by"] = f"gslbench {package_versions()['gslbench']}"


@contextlib.contextmanager
def open_h5(path: str | Path, file_format: str, max_version: int) -> Iterator[h5py.File]:
    """Open a gslbench HDF5 file for reading, checking it exists, parses and has the right format."""
    path = Path(path)
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise GslbenchError(f"{path}: not a readable HDF5 file (corrupt or truncated: {exc})") from None
    with handle:
        found = handle.attrs.get("format")
        if found != file_format:
            raise GslbenchError(f"{path}: expected a {file_format!r} file, found format {found!r}")
        version = int(handle.attrs.get("format_version", -1))
        if not 1 <= version <= max_version:
            raise GslbenchError(f"{path}: unsupported format_version {version}")
        try:
            yield handle
        except (KeyError, OSError) as exc:
            raise GslbenchError(f"{path}: corrupt or incomplete file ({exc})") from None
