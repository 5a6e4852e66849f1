"""A user's own features as a data set: `gslbench features import NAME --from FILE`.

The import reads three arrays, `features` (n, d) (any real numbers), `labels` (class ids (n,), or
multi-hot (n, C) of 0 and 1) and optionally `split` (n,), from

- `.npz` (numpy, no pickles), or `.npy` holding the features with `--labels L.npy` (and
  `--split S.npy`) beside it;
- HDF5 (`.h5`, `.hdf5`): datasets at those keys;
- MATLAB `.mat`: version 5 to 7 through scipy.io, version 7.3 (HDF5) through h5py, transposed
  back from MATLAB's column-major layout; MATLAB's row or column vectors are flattened.

Other key names: `--features-key`, `--labels-key`, `--split-key`. `split` gives each item's part:
0 = database, 1 = query, 2 = training (kept out of the database), 3 = training and database.
Without it the items are split by class (`--query-per-class`, `--train-per-class`, seeded, as
the built-in data sets are), the training items kept out of the database unless
`--train-in-database`. `--map-at K` scores mAP@K (default: the whole database).

Everything is validated first (shapes, dtypes, finiteness, labels, split), each problem a
one-line error. The import writes the feature file `DATA/NAME/FEATURE.h5` and the data set's
record `DATA/NAME/imported.json` (its protocol and features), through which `get_dataset(NAME,
DATA)` finds it: train, encode, evaluate, bench and report then treat it as a built-in data set.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import h5py
import numpy as np

from gslbench import layout
from gslbench.data.base import (
    Dataset,
    Protocol,
    RawData,
    Validation,
    carve_validation,
    split_indices,
    unseen_classes,
)
from gslbench.data.featurefile import FeatureSet, Split, multi_hot, write_feature_file
from gslbench.errors import GslbenchError
from gslbench.storage import read_json, sha256_file, write_json

RECORD_FORMAT = "gslbench.imported"
RECORD_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
PARTS = {0: "database", 1: "query", 2: "train", 3: "train and database"}


@dataclass(frozen=True)
class ImportSource:
    """Where the arrays come from: the file, the `.npy` companions, and the keys to read."""

    path: Path
    labels_path: Path | None = None  # .npy only
    split_path: Path | None = None  # .npy only
    features_key: str = "features"
    labels_key: str = "labels"
    split_key: str = "split"


@dataclass(frozen=True)
class ImportProtocol:
    """How an imported data set is split and scored (see the module docstring). The per-class
    counts are None when not given: 100 and 500 without a split in the file, unused with one."""

    query_per_class: int | None = None
    train_per_class: int | None = None
    train_in_database: bool = False
    map_top: int | None = None
    split_seed: int = 0


def import_features(name: str, source: ImportSource, data_dir: str | Path,
                    protocol: ImportProtocol = ImportProtocol(), feature: str = "imported",
                    n_classes: int | None = None, validation: Validation | None = None) -> Path:
    """Validate the arrays of `source`, split them by `protocol` (the validation split carved
    from the training pool by `validation`'s shares, default `Validation()`) and write
    DATA/NAME/FEATURE.h5 and the record DATA/NAME/imported.json; returns the feature file's
    path."""
    _check_name(name, "data set")
    _check_name(feature, "feature")
    validation = validation or Validation()
    arrays = read_arrays(source)
    features = arrays["features"]  # not read yet where the format allows: read last, in chunks
    labels = checked_labels(arrays["labels"], feature_rows(features, source.path), n_classes,
                            source.labels_path or source.path)
    record = _record_protocol(protocol, given_split="split" in arrays,
                              path=source.split_path or source.path)
    if "split" in arrays:
        parts = given_split(arrays["split"], len(features), source.split_path or source.path)
        parts.update(carve_validation(labels, parts["train"], validation,
                                      np.random.default_rng(protocol.split_seed)))
    else:
        parts = split_indices(labels, _as_protocol(record), protocol.split_seed, validation)
    held_out = unseen_classes(labels, protocol.split_seed)
    sources = [p for p in (source.path, source.labels_path, source.split_path) if p is not None]
    features = checked_features(features, source.path)  # after the cheap checks
    feature_set = FeatureSet(
        dataset=name, feature=feature,
        **{part: Split(features[idx], labels[idx], idx) for part, idx in parts.items()},
        label_names=[str(c) for c in range(labels.shape[1])], split_seed=protocol.split_seed,
        source_sha256=_sources_sha256(sources),
        extra_attrs={"backbone": "imported", "image_size": 0, "weights_sha256": "",
                     "protocol": json.dumps(record), "validation": json.dumps(asdict(validation)),
                     "imported_from": json.dumps([str(p) for p in sources])},
        unseen_classes=None if held_out is None else tuple(held_out.tolist()),
    )
    path = layout.feature_path(data_dir, name, feature)
    _register(data_dir, name, feature, record, feature_set.source_sha256)
    write_feature_file(path, feature_set)
    return path


def _record_protocol(protocol: ImportProtocol, given_split: bool, path: Path) -> dict:
    """The protocol as the record keeps it: per-class counts resolved (0 with a given split)."""
    per_class = (protocol.query_per_class, protocol.train_per_class)
    if given_split and per_class != (None, None):
        raise GslbenchError(f"{path}: has its own split; drop --query-per-class and "
                            "--train-per-class to use it, or import a file without one")
    return {"query_per_class": 0 if given_split else protocol.query_per_class or 100,
            "train_per_class": 0 if given_split else protocol.train_per_class or 500,
            "train_in_database": protocol.train_in_database, "map_top": protocol.map_top,
            "split_seed": protocol.split_seed, "given_split": given_split}


def _as_protocol(record: dict) -> Protocol:
    return Protocol(record["query_per_class"], record["train_per_class"], record["map_top"],
                    record["train_in_database"])


def imported_dataset(data_dir: str | Path, name: str) -> Dataset:
    """The imported data set `name` from its record DATA/NAME/imported.json."""
    path = layout.imported_path(data_dir, name)
    record = read_json(path)
    try:
        if record["format"] != RECORD_FORMAT or record["format_version"] > RECORD_VERSION:
            raise GslbenchError(f"{path}: not a {RECORD_FORMAT} record (version {RECORD_VERSION})")
        protocol = _as_protocol(record["protocol"])
        features = tuple(record["features"])
        default = record["default_feature"]
    except (KeyError, TypeError, IndexError) as exc:
        raise GslbenchError(f"{path}: not a gslbench import record ({exc})") from None
    return Dataset(name=name, protocol=protocol, default_feature=default,
                   download=_nothing_to_download(name), load_raw=_no_raw_files(name),
                   features=features)


def _nothing_to_download(name: str):
    def download(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
        raise GslbenchError(f"{name} is an imported data set: nothing to download (its features "
                            "come from `gslbench features import`)")
    return download


def _no_raw_files(name: str):
    def load_raw(raw_dir: Path) -> RawData:
        raise GslbenchError(f"{name} is an imported data set: it has no raw images to extract "
                            f"features from or fine-tune on; import them again with `gslbench "
                            "features import`")
    return load_raw


def _check_name(name: str, what: str) -> None:
    if not NAME_PATTERN.fullmatch(name):
        raise GslbenchError(f"{what} name {name!r}: use letters, digits, '_' and '-' (starting "
                            "with a letter or digit)")


def _register(data_dir: str | Path, name: str, feature: str, protocol: dict, sha256: str) -> None:
    """Add `feature` to the record of `name` (created with `protocol`); a record with another
    protocol is an error."""
    path = layout.imported_path(data_dir, name)
    record = (read_json(path) if path.is_file() else
              {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "name": name,
               "protocol": protocol, "default_feature": feature, "features": {}})
    if record.get("protocol") != protocol:
        raise GslbenchError(f"{path}: {name} was imported with another protocol "
                            f"({record.get('protocol')}); import under another name")
    record["features"][feature] = {"source_sha256": sha256}
    write_json(path, record)


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
        stored = _read_hdf5(path, transpose=False)
    elif suffix == ".mat":
        stored = _read_hdf5(path, transpose=True) if _is_mat73(path) else _read_mat_v5(path)
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


def _read_hdf5(path: Path, transpose: bool) -> dict[str, _Stored]:
    """The datasets at the file's root, each read when indexed (the file opened per read);
    `transpose` for MATLAB v7.3 (column-major) files."""
    try:
        with h5py.File(path, "r") as handle:
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
    stores for it (as a .npy header is); compressed or chunked ones are bounded when read."""
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


def _vector_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A MATLAB row or column vector's shape (1, n) or (n, 1) as (n,); any other unchanged."""
    return (math.prod(shape),) if len(shape) == 2 and 1 in shape else shape


def _read_whole(values: ArrayLike, shape: tuple[int, ...]) -> np.ndarray:
    """All of `values` (read now if stored), as `shape` (its own or its vector shape)."""
    return np.asarray(values[()]).reshape(shape)


def _integral(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Integer-valued numbers (MATLAB stores them as doubles) within +-2**62 as int64."""
    if values.dtype.kind not in "biuf" or values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all()
            and (np.abs(values) < 2.0**62).all()):
        raise GslbenchError(f"{path}: {what} must be integers, got {values.dtype} values "
                            "that are not")
    return values.astype(np.int64)


CHUNK_BYTES = 1 << 24  # the source values checked and converted at a time: 16 MiB


def feature_rows(features: ArrayLike, path: Path) -> int:
    """The number of rows of (n, d) real-number features, from their shape and dtype alone
    (nothing read); any other shape or dtype is a one-line error."""
    if len(features.shape) != 2 or features.shape[0] < 2 or features.shape[1] < 1:
        raise GslbenchError(f"{path}: features must be a 2-d array (items, dimensions), got shape "
                            f"{features.shape}")
    if features.dtype.kind not in "biuf":
        raise GslbenchError(f"{path}: features must be real numbers, got dtype {features.dtype}")
    return features.shape[0]


def checked_features(features: ArrayLike, path: Path) -> np.ndarray:
    """(n, d) real numbers (in memory, memory-mapped or stored) -> (n, d) float32, read and
    checked CHUNK_BYTES of source values at a time; a bad shape or dtype, or a non-finite value
    (also after the cast), is a one-line error."""
    n, dim = feature_rows(features, path), features.shape[1]
    try:
        converted = np.empty((n, dim), np.float32)
    except MemoryError:
        raise GslbenchError(f"{path}: features of shape {features.shape} need {4 * n * dim:,} "
                            "bytes as float32, more than this machine can allocate") from None
    step = max(1, CHUNK_BYTES // (dim * features.dtype.itemsize))
    bad_values, bad_rows, first_bad = 0, 0, None
    for start in range(0, n, step):
        chunk = converted[start:start + step]
        with np.errstate(over="ignore", invalid="ignore"):  # inf or NaN now, reported below
            chunk[...] = features[start:start + step]
        bad = ~np.isfinite(chunk)
        if bad.any():
            rows = np.flatnonzero(bad.any(axis=1))
            bad_values, bad_rows = bad_values + int(bad.sum()), bad_rows + len(rows)
            first_bad = start + int(rows[0]) if first_bad is None else first_bad
    if bad_values:
        raise GslbenchError(f"{path}: features hold {bad_values} non-finite value(s) (NaN or inf, "
                            f"or beyond float32) in {bad_rows} row(s), the first row {first_bad}")
    return converted


def checked_labels(labels: ArrayLike, n: int, n_classes: int | None, path: Path) -> np.ndarray:
    """Class ids (n,) in [0, n_classes) or multi-hot (n, C) of 0 and 1 -> (n, C) uint8 multi-hot,
    every item with at least one label. n_classes: C (default: the largest id + 1, or the
    multi-hot width). The shape is checked before the values are read."""
    shape = _vector_shape(labels.shape)
    if len(shape) not in (1, 2) or shape[0] != n:
        raise GslbenchError(f"{path}: labels must be ({n},) class ids or ({n}, C) multi-hot for the "
                            f"{n} feature rows, got shape {shape}")
    labels = _read_whole(labels, shape)
    if labels.ndim == 1:
        ids = _integral(labels, path, "class ids")
        classes = n_classes if n_classes is not None else int(ids.max()) + 1
        if ids.min() < 0 or ids.max() >= classes:
            raise GslbenchError(f"{path}: class ids must lie in 0..{classes - 1}, found "
                                f"{ids.min()} to {ids.max()}")
        if classes > n:  # the (n, classes) multi-hot labels would be mostly empty classes
            raise GslbenchError(f"{path}: {classes} classes for {n} items; number the classes "
                                "0, 1, ... without gaps")
        return multi_hot(ids, classes)
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        raise GslbenchError(f"{path}: multi-hot labels must be 0 or 1, found other values")
    if n_classes is not None and labels.shape[1] != n_classes:
        raise GslbenchError(f"{path}: {labels.shape[1]} label columns, but --classes {n_classes}")
    empty = np.flatnonzero(labels.sum(axis=1) == 0)
    if len(empty):
        raise GslbenchError(f"{path}: {len(empty)} item(s) have no label (the first row "
                            f"{empty[0]}); remove them, they are relevant to nothing")
    return labels.astype(np.uint8)


def given_split(split: ArrayLike, n: int, path: Path) -> dict[str, np.ndarray]:
    """(n,) part codes (see the module docstring) -> sorted int64 indices of query, train and
    database; each part must be non-empty. The shape is checked before the values are read."""
    shape = _vector_shape(split.shape)
    if shape != (n,):
        raise GslbenchError(f"{path}: split must be ({n},), one part code per feature row, got "
                            f"shape {shape}")
    codes = _integral(_read_whole(split, shape), path, "split codes")
    if not np.isin(codes, list(PARTS)).all():
        raise GslbenchError(f"{path}: split codes must be 0 (database), 1 (query), 2 (train) or 3 "
                            f"(train and database), found {sorted(set(codes.tolist()) - set(PARTS))}")
    parts = {"query": np.flatnonzero(codes == 1), "train": np.flatnonzero((codes == 2) | (codes == 3)),
             "database": np.flatnonzero((codes == 0) | (codes == 3))}
    for part, indices in parts.items():
        if not len(indices):
            raise GslbenchError(f"{path}: the split has no {part} item")
    return parts


def _sources_sha256(paths: list[Path]) -> str:
    """The sha256 of the one source file, or of its files' sha256s in order."""
    digests = [sha256_file(path) for path in paths]
    return digests[0] if len(digests) == 1 else hashlib.sha256(" ".join(digests).encode()).hexdigest()
