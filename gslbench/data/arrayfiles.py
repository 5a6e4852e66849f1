"""Reading the arrays of `gslbench features import` from the user's file(s) without loading them:
`.npy` and `.npz` (memory-mapped where uncompressed, every header checked against the bytes that
follow it), HDF5 and MATLAB v7.3 (read when indexed), MATLAB v5 (scipy). Each problem is a
one-line `GslbenchError` naming the file; `gslbench.data.imported` checks the values."""

from __future__ import annotations

import functools
import math
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from gslbench.errors import GslbenchError

CHUNK_BYTES = 1 << 24  # the source values checked and converted at a time: 16 MiB

@dataclass(frozen=True)
class ImportSource:
    """Where the arrays come from: the file, the `.npy` companions, and the keys to read."""

    path: Path
    labels_path: Path | None = None  # .npy only
    split_path: Path | None = None  # .npy only
    features_key: str = "features"
    labels_key: str = "labels"
    split_key: str = "split"


def read_arrays(source: ImportSource) -> dict[str, ArrayLike]:
    """{"features", "labels"[, "split"]} as stored in the source file(s), none of them read yet
    where the format allows: `.npy` files and uncompressed `.npz` members memory-mapped, HDF5 and
    MATLAB v7.3 datasets read when indexed (`_Stored`); a compressed `.npz` member is read whole
    on first use, a MATLAB v5 file whole at once (scipy reads no less). Every `.npy` header (also
    inside an `.npz`) is checked against the bytes that follow it before anything is allocated."""
    path = source.path
    for given in (path, source.labels_path, source.split_path):
        if given is not None and not given.is_file():
            raise GslbenchError(f"{given}: no such file")
        if given is not None and given.stat().st_size == 0:
            raise GslbenchError(f"{given}: an empty file (0 bytes)")
    suffix = path.suffix.lower()
    companions = source.labels_path is not None or source.split_path is not None
    if suffix != ".npy" and companions:
        raise GslbenchError(f"--labels and --split go with a .npy features file; {path.name} holds "
                            "its own arrays")
    keys = {"features": source.features_key, "labels": source.labels_key, "split": source.split_key}
    if suffix == ".npy":
        if source.labels_path is None:
            raise GslbenchError(f"{path}: a .npy file holds one array; give the labels with "
                                "--labels LABELS.npy")
        arrays = {"features": _map_npy(path), "labels": _map_npy(source.labels_path)}
        if source.split_path is not None:
            arrays["split"] = _map_npy(source.split_path)
        return arrays
    if suffix == ".npz":
        stored = _read_npz(path)
    elif suffix in (".h5", ".hdf5"):
        stored = read_hdf5(path, transpose=False)
    elif suffix == ".mat":
        stored = read_hdf5(path, transpose=True) if _is_mat73(path) else _read_mat_v5(path)
    else:
        raise GslbenchError(f"{path}: unknown file type {suffix!r}; use .npz, .npy, .h5, .hdf5 "
                            "or .mat")
    for role in ("features", "labels"):
        if keys[role] not in stored:
            raise GslbenchError(f"{path}: no array {keys[role]!r} (the {role}); it has "
                                f"{', '.join(sorted(stored)) or 'none'} (see --{role}-key)")
    return {role: stored[key] for role, key in keys.items() if key in stored}


def _is_mat73(path: Path) -> bool:
    """Whether a .mat file is MATLAB v7.3 (HDF5): its 128-byte header says version 0x0200 (also
    when the HDF5 part is cut off, so that it is reported as HDF5)."""
    with open(path, "rb") as handle:
        return handle.read(128)[124:] in (b"\x00\x02IM", b"\x02\x00MI") or h5py.is_hdf5(path)


class _Stored:
    """An array in a file, read only when indexed: `shape` and `dtype` from the file's metadata,
    `[()]` the whole array, `[start:stop]` rows, each read by `read(index)`; a failed read is a
    one-line error naming `what` (the file and the array)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype,
                 read: Callable[[tuple | slice], np.ndarray], what: str) -> None:
        self.shape, self.dtype, self._read, self._what = tuple(shape), np.dtype(dtype), read, what

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: tuple | slice) -> np.ndarray:
        try:
            return self._read(index)
        except (OSError, RuntimeError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            raise GslbenchError(f"{self._what}: not readable ({exc})") from None
        except MemoryError:  # a compressed array whose shape outgrows the memory
            raise GslbenchError(f"{self._what}: its shape {self.shape} {self.dtype} needs more "
                                "memory than this machine can allocate") from None


ArrayLike = np.ndarray | _Stored


def _npy_header(handle: BinaryIO, size: int, what: str) -> tuple[tuple[int, ...], np.dtype, bool]:
    """Read a `.npy` header from `handle` (at the start of `size` bytes of `.npy` data) and check
    it against those bytes: (shape, dtype, fortran_order), the data starting at `handle.tell()`.
    A header whose shape and dtype need more or fewer bytes than follow it (a truncated file, a
    forged header), a 0-byte or cut-off header, or Python objects are one-line errors."""
    try:
        version = np.lib.format.read_magic(handle)
        readers = {(1, 0): np.lib.format.read_array_header_1_0,
                   (2, 0): np.lib.format.read_array_header_2_0}
        if version not in readers:
            raise ValueError(f"format version {version[0]}.{version[1]} is not read here")
        shape, fortran_order, dtype = readers[version](handle)
    except (ValueError, EOFError, SyntaxError, tokenize.TokenError) as exc:  # a cut-off header
        raise GslbenchError(f"{what}: not a numpy .npy array ({exc})") from None
    if dtype.hasobject:
        raise GslbenchError(f"{what}: holds Python objects (dtype {dtype}); pickles are not read")
    needed = math.prod(shape) * dtype.itemsize
    held = size - handle.tell()
    if needed != held:
        raise GslbenchError(f"{what}: its header says shape {shape} {dtype} ({needed:,} bytes), but "
                            f"{held:,} bytes follow it (truncated, or not written by numpy)")
    return shape, dtype, fortran_order


def _mapped(path: Path, shape: tuple[int, ...], dtype: np.dtype, fortran_order: bool,
            offset: int) -> np.ndarray:
    """The array of `shape` and `dtype` at byte `offset` of `path`, memory-mapped read-only."""
    if math.prod(shape) == 0:  # nothing to map (mmap refuses 0 bytes)
        return np.zeros(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape,
                     order="F" if fortran_order else "C")


def _map_npy(path: Path) -> np.ndarray:
    """A `.npy` file's array, memory-mapped once its header fits the file (nothing read yet)."""
    with open(path, "rb") as handle:
        shape, dtype, fortran_order = _npy_header(handle, path.stat().st_size, str(path))
        offset = handle.tell()
    return _mapped(path, shape, dtype, fortran_order, offset)


def _read_npz(path: Path) -> dict[str, ArrayLike]:
    """The arrays of an `.npz` archive, each header checked against its member's size first: an
    uncompressed member (np.savez) memory-mapped, a compressed one (np.savez_compressed) read
    whole when first indexed."""
    arrays: dict[str, ArrayLike] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename.removesuffix(".npy")
                with archive.open(info) as member:
                    shape, dtype, fortran_order = _npy_header(member, info.file_size,
                                                              f"{path}: array {key!r}")
                    header_size = member.tell()
                if info.compress_type == zipfile.ZIP_STORED:
                    start = _member_data_offset(archive, info)
                    _check_crc(path, start, info)
                    arrays[key] = _mapped(path, shape, dtype, fortran_order, start + header_size)
                else:
                    arrays[key] = _Stored(shape, dtype, _whole_member(path, info.filename),
                                          f"{path}: array {key!r}")
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError) as exc:
        raise GslbenchError(f"{path}: not a readable .npz archive ({exc})") from None
    return arrays


def _member_data_offset(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> int:
    """Where a stored zip member's bytes start in the archive: after its local file header (30
    bytes, then the name and an extra field whose lengths it gives at bytes 26 and 28)."""
    archive.fp.seek(info.header_offset)
    header = archive.fp.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header of {info.filename}")
    name_size, extra_size = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_size + extra_size


def _check_crc(path: Path, start: int, info: zipfile.ZipInfo) -> None:
    """A stored member's CRC-32 (which a memory map skips), over its bytes from `start`, read
    through a memory map CHUNK_BYTES at a time: one pass over the file, nothing allocated."""
    if info.file_size == 0:
        return
    data = np.memmap(path, dtype=np.uint8, mode="r", offset=start, shape=(info.file_size,))
    crc = 0
    for begin in range(0, info.file_size, CHUNK_BYTES):
        crc = zlib.crc32(data[begin:begin + CHUNK_BYTES], crc)
    if crc != info.CRC:
        raise zipfile.BadZipFile(f"bad CRC-32 for {info.filename}")


def _whole_member(path: Path, name: str) -> Callable[[tuple | slice], np.ndarray]:
    """Reads of a compressed `.npz` member: decompressed once, on the first read."""
    @functools.cache
    def whole() -> np.ndarray:
        with zipfile.ZipFile(path) as archive, archive.open(name) as member:
            return np.lib.format.read_array(member, allow_pickle=False)
    return lambda index: whole()[index]


def read_hdf5(path: Path, transpose: bool) -> dict[str, _Stored]:
    """The datasets at the file's root, each read when indexed (the file opened per read);
    `transpose` for MATLAB v7.3 (column-major) files. Only bytes of this file are read: an
    external link, external storage or a virtual dataset (bytes of other files, e.g. of the
    system) is a one-line error."""
    try:
        with h5py.File(path, "r") as handle:
            for key in handle:
                if isinstance(handle.get(key, getlink=True), h5py.ExternalLink):
                    raise GslbenchError(f"{path}: {key!r} is a link to another file; import a "
                                        "file that holds its own arrays")
            datasets = {key: item for key, item in handle.items() if isinstance(item, h5py.Dataset)}
            for key, dataset in datasets.items():
                _check_storage(dataset, f"{path}: dataset {key!r}")
            return {key: _Stored(item.shape[::-1] if transpose else item.shape, item.dtype,
                                 _hdf5_reader(path, key, transpose), f"{path}: dataset {key!r}")
                    for key, item in datasets.items()}
    except (OSError, RuntimeError) as exc:  # RuntimeError: a damaged group
        raise GslbenchError(f"{path}: not a readable HDF5 file ({exc})") from None


def _check_storage(dataset: h5py.Dataset, what: str) -> None:
    """An uncompressed, unchunked dataset's shape and dtype checked against the bytes the file
    stores for it (as a .npy header is); compressed or chunked ones are bounded when read.
    A dataset whose bytes lie in other files (external storage, a virtual dataset) is refused."""
    if dataset.external or dataset.is_virtual:
        raise GslbenchError(f"{what}: its bytes are stored in other files "
                            f"({'virtual dataset' if dataset.is_virtual else 'external storage'}); "
                            "import a file that holds its own arrays")
    if dataset.chunks is not None or dataset.dtype.hasobject:
        return
    needed, stored = dataset.size * dataset.dtype.itemsize, dataset.id.get_storage_size()
    if needed != stored:
        raise GslbenchError(f"{what}: its shape {dataset.shape} {dataset.dtype} needs "
                            f"{needed:,} bytes, but the file stores {stored:,} for it")


def _hdf5_reader(path: Path, key: str, transpose: bool) -> Callable[[tuple | slice], np.ndarray]:
    """Reads of dataset `key`: `[()]` whole, `[start:stop]` rows (MATLAB's columns, transposed)."""
    def read(index: tuple | slice) -> np.ndarray:
        with h5py.File(path, "r") as handle:
            dataset = handle[key]
            if not transpose:
                return dataset[index]
            return (dataset[()] if index == () else dataset[..., index]).T
    return read


def _read_mat_v5(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return {key: value for key, value in loadmat(path).items() if not key.startswith("__")}
    except (MatReadError, OSError, ValueError, EOFError, IndexError, TypeError,
            UnboundLocalError) as exc:  # scipy's reactions to a cut or damaged file
        raise GslbenchError(f"{path}: not a readable MATLAB .mat file ({exc})") from None
    except MemoryError:  # a damaged header claiming a huge array: scipy allocates it first
        raise GslbenchError(f"{path}: not a readable MATLAB .mat file (an array's header "
                            "claims more memory than this machine can allocate)") from None
