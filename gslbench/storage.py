"""Files on disk: atomic writes, checksums, validated HDF5 reading and writing, provenance records.

Every write goes to a temporary name beside its target and is renamed into place only when it
succeeded, so a killed or failing step leaves nothing that looks finished. An OS error while
writing (read-only folder, a parent that is a file, a full disk) is a one-line user error naming
the file. HDF5 files are built in memory and written with plain file I/O: HDF5 never writes to
disk itself, so a full disk cannot leave it with open handles on a deleted file (which crashed
h5py). Each HDF5 file written whole carries `content_sha256`, a digest of its datasets and
attributes, checked when it is read, so an edited or damaged file is refused; a file of a format
version that carries one is refused without it (removing it does not switch the check off).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import platform
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gslbench.errors import GslbenchError

CHUNK_BYTES = 1 << 20
PACKAGES = ("gslbench", "torch", "numpy", "faiss-cpu", "h5py", "pandas", "scikit-learn")
DIGEST_ATTR = "content_sha256"


def os_reason(error: OSError) -> str:
    """The first line of an OS error's message: `No space left on device`."""
    text = error.strerror or str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    The file is flushed to disk before the rename. An OS error (in the block too) is a user error
    naming `path`; the temporary file is removed whatever happens."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise GslbenchError(f"{path}: cannot write ({os_reason(exc)})") from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        if tmp.is_file():
            tmp.chmod(0o644)  # mkstemp creates 0600; results are meant to be shared
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        if path.is_dir():
            raise GslbenchError(f"{path}: is a folder, cannot write a file there")
        os.replace(tmp, path)
    except OSError as exc:
        raise GslbenchError(f"{path}: cannot write ({os_reason(exc)})") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: str | Path, data: bytes | memoryview) -> None:
    """Write `data` to `path`, atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` (UTF-8) to `path`, atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically; a NaN or inf is refused (JSON has none)."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False)
    except ValueError:
        raise GslbenchError(f"{path}: refusing to write a non-finite number (NaN or inf)") from None
    write_text(path, text + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file; a missing, unreadable or corrupt file is a user error naming it."""
    path = Path(path)
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise GslbenchError(f"{path}: cannot read ({os_reason(exc)})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GslbenchError(f"{path}: not valid JSON ({exc})") from None


def config_id(config: Mapping[str, Any]) -> str:
    """12 hex digits of the sha256 of a run config's canonical JSON: the run id."""
    text = json.dumps(dict(config), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


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


def check_sha256(path: Path, expected: Any, recorded_in: Path) -> None:
    """Raise a user error unless the file `path` exists and has the sha256 `recorded_in` records."""
    if not isinstance(expected, str) or not expected:
        raise GslbenchError(f"{recorded_in}: records no sha256 of {path.name} (written by an older "
                            "gslbench or edited); run the step that writes it again with --force")
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    if sha256_file(path) != expected:
        raise GslbenchError(f"{path}: its sha256 is not the one {recorded_in.name} records "
                            "(replaced, edited or damaged since)")


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


def content_sha256(handle: h5py.File) -> str:
    """sha256 of an HDF5 file's content: every dataset (name, dtype, shape, bytes) and every
    attribute but `content_sha256` itself, in name order."""
    digest = hashlib.sha256()
    names: list[str] = []
    handle.visit(names.append)
    for name in ["", *sorted(names)]:
        item = handle[name] if name else handle
        attrs = {key: _plain(value) for key, value in item.attrs.items() if key != DIGEST_ATTR}
        digest.update(f"{name}\0{json.dumps(attrs, sort_keys=True, default=repr)}\0".encode())
        if isinstance(item, h5py.Dataset):
            data = np.ascontiguousarray(item[()])
            digest.update(f"{data.dtype.str}\0{data.shape}\0".encode())
            digest.update(data.tobytes() if data.dtype.kind != "O" else repr(data.tolist()).encode())
    return digest.hexdigest()


def _plain(value: Any) -> Any:
    """An attribute value as plain JSON-able Python (numpy scalars and arrays, bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray | np.generic):
        return _plain(value.tolist()) if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


@contextlib.contextmanager
def write_h5(path: str | Path, file_format: str, version: int) -> Iterator[h5py.File]:
    """Yield a new HDF5 file (in memory) stamped with the format attrs; when the block succeeds,
    add its `content_sha256` and write it to `path` atomically."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        set_format_attrs(handle, file_format, version)
        yield handle
        handle.attrs[DIGEST_ATTR] = content_sha256(handle)
    write_bytes(path, buffer.getbuffer())


@contextlib.contextmanager
def open_h5(path: str | Path, file_format: str, max_version: int, min_version: int = 1,
            rewrite: str = "write it again", sealed_since: int | None = 1) -> Iterator[h5py.File]:
    """Open a gslbench HDF5 file for reading: it must exist, parse, have the right format and a
    version in [min_version, max_version] (`rewrite` says how to replace an older one), and its
    content must match its `content_sha256`, which files of format_version `sealed_since` and
    later must carry (None: a format written in pieces, without one)."""
    path = Path(path)
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise GslbenchError(f"{path}: not a readable HDF5 file (corrupt or truncated: "
                            f"{os_reason(exc)})") from None
    with handle:
        try:
            _check_header(handle, path, file_format, (min_version, max_version), rewrite)
            _check_digest(handle, path, sealed_since, rewrite)
            yield handle
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise GslbenchError(f"{path}: corrupt or incomplete file ({type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
                                ) from None


def _check_header(handle: h5py.File, path: Path, file_format: str, versions: tuple[int, int],
                  rewrite: str) -> None:
    min_version, max_version = versions
    found = _plain(handle.attrs.get("format"))
    if found != file_format:
        raise GslbenchError(f"{path}: expected a {file_format!r} file, found format {found!r}")
    version = _plain(handle.attrs.get("format_version"))
    if isinstance(version, bool) or not isinstance(version, int):
        raise GslbenchError(f"{path}: format_version {version!r} is not an integer")
    if version > max_version or version < 1:
        raise GslbenchError(f"{path}: unsupported format_version {version}")
    if version < min_version:
        raise GslbenchError(f"{path}: written by an older gslbench (format_version {version}); "
                            f"{rewrite}")


def _check_digest(handle: h5py.File, path: Path, sealed_since: int | None, rewrite: str) -> None:
    """The file's content must match its `content_sha256`, required from version `sealed_since`."""
    recorded = _plain(handle.attrs.get(DIGEST_ATTR))
    version = _plain(handle.attrs["format_version"])
    if recorded is None and sealed_since is not None and version >= sealed_since:
        raise GslbenchError(f"{path}: has no {DIGEST_ATTR} (every file of format_version "
                            f"{version} carries one: removed, or not written by gslbench); {rewrite}")
    if recorded is not None and recorded != content_sha256(handle):
        raise GslbenchError(f"{path}: its content does not match its content_sha256 "
                            "(edited or damaged since it was written)")
