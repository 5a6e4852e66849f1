"""Fetching raw data: resumable verified downloads, safe extraction, files placed by hand.

Each data set's module declares its `Source` (plain data): the files to fetch (mirrors tried in
order, size, md5 and sha256), the archive to unpack and the checksums of what it must yield.
`fetch_file` streams one file to `NAME.part` (resuming it with an HTTP Range request, retrying
network errors with exponential back-off), checks its size and checksums, and only then renames it
to `NAME`: a file without the `.part` suffix has always been verified. http(s):// and file:// URLs
both work (urllib). Every failure is a one-line `GslbenchError` naming the URL and the file.

After a successful download, `write_manifest` records the sha256 of every verified file in
`RAW/SOURCE.json`; `source_sha256` is what the feature file records as `source_sha256`.

Longer than 400 lines on purpose: the HTTP transfer, its retries, the checks and the safe
extraction are one concern (a file is verified before it gets its final name).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from gslbench.errors import GslbenchError
from gslbench.storage import CHUNK_BYTES, Digest, atomic_path, digest_file, md5_file, read_json, write_json

log = logging.getLogger(__name__)

MANIFEST = "SOURCE.json"


@dataclass(frozen=True)
class RemoteFile:
    """One file to fetch: its name under RAW/, mirrors (tried in order) and expected content.

    `size`, `md5` and `sha256` are of the file's bytes, or of its gunzipped bytes when `gunzip` is
    set (mirrors may recompress a .gz file, so only the decompressed content is stable). A None
    checksum is not checked.
    """

    name: str
    urls: tuple[str, ...]
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None
    gunzip: bool = False


@dataclass(frozen=True)
class Source:
    """Where a data set's raw files come from.

    `files` are fetched into RAW/; when `archive` is "tar", `files[0]` is unpacked into RAW/ and
    `extracted` lists (path relative to RAW/, md5) pairs it must yield. `manual` explains how to
    get the files by hand where no host serves them (then `files` is empty).
    """

    name: str
    files: tuple[RemoteFile, ...] = ()
    archive: str | None = None
    extracted: tuple[tuple[str, str], ...] = ()
    manual: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    """Network attempts per URL, back-off before attempt i+1 (`backoff_s * 2**i`), read timeout."""

    attempts: int = 4
    backoff_s: float = 1.0
    timeout_s: float = 60.0


RETRY = RetryPolicy()

# --- checksums ---------------------------------------------------------------------------------

def check_content(path: Path, remote: RemoteFile) -> tuple[str | None, Digest | None]:
    """(None, digest) when `path` matches `remote`'s size and checksums, else (reason, digest)."""
    try:
        digest = digest_file(path, remote.gunzip)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        return f"not a complete gzip file ({exc})", None
    what = "decompressed " if remote.gunzip else ""
    if remote.size is not None and digest.size != remote.size:
        return f"{what}size {digest.size:,} bytes, expected {remote.size:,}", digest
    if remote.md5 and digest.md5 != remote.md5:
        return f"checksum mismatch: {what}md5 {digest.md5}, expected {remote.md5}", digest
    if remote.sha256 and digest.sha256 != remote.sha256:
        return f"checksum mismatch: {what}sha256 {digest.sha256}, expected {remote.sha256}", digest
    return None, digest


# --- one URL -----------------------------------------------------------------------------------

class _Retryable(Exception):
    """A failure worth trying the same URL again for (network error, early close, 5xx)."""


class _Failed(Exception):
    """A failure of this URL that retrying will not fix (404, wrong content); try the next mirror."""


def _user_agent() -> str:
    try:
        from importlib import metadata

        return f"gslbench/{metadata.version('gslbench')}"
    except Exception:  # any failure just means a generic agent
        return "gslbench"


def _transfer(url: str, part: Path, remote: RemoteFile, timeout_s: float) -> None:
    """Stream `url` into `part`, resuming from its current size; raise on any incomplete transfer."""
    offset = part.stat().st_size if part.exists() else 0
    if not remote.gunzip and remote.size is not None and offset > remote.size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        request = urllib.request.Request(url, headers=headers)
        response = urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            return  # nothing left to send: the .part is already whole (checked by the caller)
        if exc.code >= 500 or exc.code in (408, 429):
            raise _Retryable(f"HTTP {exc.code} {exc.reason}") from None
        raise _Failed(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, FileNotFoundError | PermissionError | IsADirectoryError):
            raise _Failed(f"{exc.reason.strerror or exc.reason}") from None
        if isinstance(exc.reason, str):  # urllib's own complaints: unknown url type, no host
            raise _Failed(exc.reason) from None
        raise _Retryable(str(exc.reason)) from None
    except (ValueError, http.client.InvalidURL) as exc:
        raise _Failed(f"not a usable URL: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(f"{type(exc).__name__}: {exc}") from None
    with response:
        status = getattr(response, "status", None)
        total = _expected_total(response, offset, status)
        if status != 206:
            offset = 0  # the server sent the whole file (no Range support, or file://)
        if not remote.gunzip and remote.size is not None and total not in (None, remote.size):
            raise _Failed(f"size {total:,} bytes, expected {remote.size:,}")
        received = offset
        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, leave=False,
                   desc=remote.name, disable=not sys.stderr.isatty())
        try:
            with open(part, "ab" if offset else "wb") as handle, bar:
                while True:
                    try:
                        chunk = response.read(CHUNK_BYTES)
                    except (OSError, http.client.HTTPException) as exc:
                        raise _Retryable(
                            f"connection lost after {received:,} bytes ({type(exc).__name__})"
                        ) from None
                    if not chunk:
                        break
                    handle.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        except OSError as exc:  # writing failed: disk full, permission
            raise GslbenchError(f"{part}: cannot write ({exc.strerror or exc})") from None
    if total is not None and received < total:
        raise _Retryable(f"connection closed after {received:,} of {total:,} bytes")


def _expected_total(response: Any, offset: int, status: int | None) -> int | None:
    """Total size of the file from Content-Range (206) or Content-Length (200), if announced."""
    if status == 206:
        match = re.fullmatch(r"bytes (\d+)-(\d+)/(\d+|\*)", response.headers.get("Content-Range", ""))
        if not match or int(match.group(1)) != offset:
            raise _Retryable(f"bad Content-Range {response.headers.get('Content-Range')!r}")
        return None if match.group(3) == "*" else int(match.group(3))
    length = response.headers.get("Content-Length")
    return int(length) if length and length.isdigit() else None


def download_url(url: str, dest: Path, remote: RemoteFile, retry: RetryPolicy) -> Digest:
    """Fetch `url` to `dest` through `dest.part`: resume, retry, verify, then rename atomically.

    Raises _Failed when this URL cannot deliver the right content; wrong bytes are deleted, even
    as `.part`. A network failure keeps the `.part` for the next attempt to resume.
    """
    part = dest.with_name(dest.name + ".part")
    last = "no attempt"
    for attempt in range(retry.attempts):
        if attempt:
            delay = retry.backoff_s * 2 ** (attempt - 1)
            log.info("%s: %s; retrying in %.1f s", url, last, delay)
            time.sleep(delay)
        resumed = part.exists() and part.stat().st_size > 0
        try:
            _transfer(url, part, remote, retry.timeout_s)
        except _Retryable as exc:
            last = str(exc)
            continue
        problem, digest = check_content(part, remote)
        if problem is None:
            os.replace(part, dest)
            return digest
        part.unlink(missing_ok=True)  # never leave wrong bytes behind, not even as .part
        last = f"{problem}; deleted the download"
        if not resumed:  # a resumed prefix may have been the bad part: start over once more
            break
    raise _Failed(last)


# --- one file, all mirrors ---------------------------------------------------------------------

def fetch_file(
    remote: RemoteFile,
    directory: Path,
    urls: Iterable[str] | None = None,
    retry: RetryPolicy | None = None,
    advice: str | None = None,
) -> Digest:
    """Make sure DIRECTORY/remote.name holds `remote`'s verified content; return its digest.

    A file already there and matching is kept; otherwise each URL (default: the registered mirrors)
    is tried in turn. When none delivers, one line names the URLs and `advice` (default: where to
    put the file by hand).
    """
    retry = retry or RETRY
    dest = directory / remote.name
    if dest.is_file():
        problem, digest = check_content(dest, remote)
        if problem is None:
            return digest
        log.warning("%s: %s; fetching it again", dest, problem)
        dest.unlink()
    directory.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls or remote.urls:
        try:
            return download_url(url, dest, remote, retry)
        except _Failed as exc:
            failures.append(f"{url} ({exc})")
    tried = "; ".join(failures) or "no URL"
    advice = advice or f"fetch it by hand and put it at {dest}"
    raise GslbenchError(f"cannot get {remote.name} from {tried}; {advice}")


def resolve_urls(remote: RemoteFile, url: str | None, n_files: int) -> tuple[str, ...]:
    """The URLs to try for `remote`: the registered mirrors, or the user's override.

    An override ending in "/" (or any override for a multi-file source) is a folder the file name is
    appended to; otherwise it is the file's own URL.
    """
    if url is None:
        return remote.urls
    if url.endswith("/") or n_files > 1:
        return (url.rstrip("/") + "/" + remote.name,)
    return (url,)


def fetch_source(
    source: Source,
    raw_dir: Path,
    url: str | None = None,
    from_dir: str | Path | None = None,
    retry: RetryPolicy | None = None,
) -> dict[str, Digest]:
    """Fetch (or import from `from_dir`) and verify all of `source`'s files into `raw_dir`.

    Unpacks the archive if the source has one, and writes RAW/SOURCE.json. Returns name -> digest.
    """
    if not source.files:
        raise GslbenchError(f"{source.name}: {source.manual}")
    if url is not None and from_dir is not None:
        raise GslbenchError("give either a URL or a folder to import from, not both")
    digests = {}
    for remote in source.files:
        if from_dir is not None:
            local = Path(from_dir) / remote.name
            if not local.is_file():
                raise GslbenchError(f"{local}: no such file (importing {source.name})")
            urls = (local.resolve().as_uri(),)
            advice = f"{local} is not the official {remote.name}"
        else:
            urls = resolve_urls(remote, url, len(source.files))
            advice = (f"fetch it by hand and put it at {raw_dir / remote.name}, or run "
                      f"`gslbench download {source.name} --from DIR` with the file in DIR")
        digests[remote.name] = fetch_file(remote, raw_dir, urls, retry, advice)
    if source.archive == "tar":
        extract_tar(raw_dir / source.files[0].name, raw_dir, source.extracted)
    write_manifest(raw_dir, source.name, {name: d.sha256 for name, d in digests.items()})
    return digests


# --- archives ----------------------------------------------------------------------------------

def extract_tar(archive: Path, directory: Path, expected: tuple[tuple[str, str], ...]) -> None:
    """Unpack `archive` into `directory` safely and check the md5 of every `expected` member.

    Uses tarfile's "data" filter (no absolute paths, no `..`, no links leaving the folder, no
    devices). Unpacks into a temporary folder first and moves the top-level folders into place
    only once every expected file is there with the right md5, so a failure leaves nothing half
    unpacked. Skips the work when the expected files are already in place and match.
    """
    if expected and _extracted_ok(directory, expected):
        return
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=directory))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                tar.extractall(staging, filter="data")
        except tarfile.FilterError as exc:
            raise GslbenchError(
                f"{archive}: refusing to unpack unsafe member {exc.tarinfo.name!r} ({exc})"
            ) from None
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise GslbenchError(f"{archive}: cannot unpack ({exc})") from None
        for relative, md5 in expected:
            member = staging / relative
            if not member.is_file():
                raise GslbenchError(f"{archive}: has no member {relative}")
            if md5_file(member) != md5:
                raise GslbenchError(f"{archive}: member {relative} fails its md5 checksum")
        for top in sorted({Path(relative).parts[0] for relative, _ in expected}):
            target = directory / top
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / top, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extracted_ok(directory: Path, expected: tuple[tuple[str, str], ...]) -> bool:
    return all((directory / rel).is_file() and md5_file(directory / rel) == md5
               for rel, md5 in expected)


# --- files placed by hand ----------------------------------------------------------------------

def import_files(
    from_dir: str | Path, raw_dir: Path, layout: tuple[tuple[str, str], ...]
) -> dict[str, str]:
    """Copy the files of `from_dir` matching `layout` ((sub-folder, glob) pairs) into `raw_dir`.

    Keeps the sub-folders; each copy is atomic, and a file already copied (same size and mtime) is
    kept. Returns relative path -> sha256.
    """
    source_root = Path(from_dir)
    if not source_root.is_dir():
        raise GslbenchError(f"{source_root}: no such folder")
    copied = {}
    for sub, pattern in layout:
        for path in sorted((source_root / sub).glob(pattern)):
            if not path.is_file():
                continue
            relative = f"{sub}/{path.name}"
            target = raw_dir / relative
            stat = path.stat()
            if not (target.is_file() and target.stat().st_size == stat.st_size
                    and target.stat().st_mtime_ns == stat.st_mtime_ns):
                with atomic_path(target) as tmp:
                    shutil.copyfile(path, tmp)
                    os.utime(tmp, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            copied[relative] = digest_file(target).sha256
    return copied


# --- provenance --------------------------------------------------------------------------------

def combined_sha256(files: dict[str, str]) -> str:
    """One sha256 for several files: that of their `sha256sum`-style listing sorted by name.

    For a single file it is simply that file's sha256.
    """
    if len(files) == 1:
        return next(iter(files.values()))
    listing = "".join(f"{sha}  {name}\n" for name, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def write_manifest(raw_dir: Path, source: str, files: dict[str, str]) -> Path:
    """Record the verified files of `source` in RAW/SOURCE.json."""
    path = raw_dir / MANIFEST
    write_json(path, {"source": source, "files": files, "sha256": combined_sha256(files)})
    return path


def read_manifest(raw_dir: Path, source: str) -> dict[str, Any]:
    """RAW/SOURCE.json, the download record of `source`: {"source", "files": {name: sha256},
    "sha256"}; a user error if it was never fetched or the record is not `source`'s."""
    path = raw_dir / MANIFEST
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download {source}` first")
    manifest = read_json(path)
    if (not isinstance(manifest, dict) or manifest.get("source") != source
            or "sha256" not in manifest or not isinstance(manifest.get("files", {}), dict)):
        raise GslbenchError(f"{path}: not a download record of {source!r}; download it again")
    return manifest


def source_sha256(raw_dir: Path, source: str) -> str:
    """The checksum of `source`'s raw files as recorded at download; a user error if never fetched."""
    return str(read_manifest(raw_dir, source)["sha256"])
