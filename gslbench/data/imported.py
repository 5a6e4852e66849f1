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
The other sources of `features import` (`gslbench.data.annbenchmarks`, `gslbench.data.imagelist`)
write through the same `write_import` and carve their validation split with `with_validation`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.data.arrayfiles import CHUNK_BYTES, ArrayLike, ImportSource, read_arrays
from gslbench.data.base import (
    Dataset,
    Protocol,
    RawData,
    Validation,
    carve_validation,
    split_indices,
)
from gslbench.data.featurefile import FeatureSet, Split, multi_hot, write_feature_file
from gslbench.errors import GslbenchError
from gslbench.storage import read_json, sha256_file, write_json

RECORD_FORMAT = "gslbench.imported"
RECORD_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
PARTS = {0: "database", 1: "query", 2: "train", 3: "train and database"}


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
    from the items no run trains on, `validation`'s sizes per class, default the protocol's:
    `Protocol`; with a given split, out of its database items that are no training items) and
    write
    DATA/NAME/FEATURE.h5 and the record DATA/NAME/imported.json; returns the feature file's
    path."""
    check_names(name, feature)
    arrays = read_arrays(source)
    features = arrays["features"]  # not read yet where the format allows: read last, in chunks
    labels = checked_labels(arrays["labels"], feature_rows(features, source.path), n_classes,
                            source.labels_path or source.path)
    record = _record_protocol(protocol, given_split="split" in arrays,
                              path=source.split_path or source.path)
    parts = (given_split(arrays["split"], len(features), source.split_path or source.path)
             if "split" in arrays else None)
    validation = (validation or Validation()).resolved(
        len(labels), labels.shape[1],
        record["query_per_class"] or round(len(parts["query"]) / labels.shape[1]))
    if parts is not None:
        parts = with_validation(labels, parts, validation, protocol.split_seed)
    else:
        parts = split_indices(labels, _as_protocol(record), protocol.split_seed, validation)
    sources = [p for p in (source.path, source.labels_path, source.split_path) if p is not None]
    features = checked_features(features, source.path)  # after the cheap checks
    parts = {part: Split(features[idx], labels[idx], idx) for part, idx in parts.items()}
    return write_import(name, feature, data_dir, parts, record, _sources_sha256(sources), {
        "backbone": "imported", "image_size": 0, "weights_sha256": "",
        "validation": json.dumps(asdict(validation)),
        "imported_from": json.dumps([str(p) for p in sources])})


def write_import(name: str, feature: str, data_dir: str | Path, parts: dict[str, Split],
                 record: dict, source_sha256: str, attrs: dict) -> Path:
    """Write an imported data set: DATA/NAME/FEATURE.h5 with `parts` (the names of
    `split_indices`, labels (n, C) uint8 of C columns alike), `attrs` and the protocol `record`
    (`split_seed` among its keys) as its attr `protocol`, then the record DATA/NAME/imported.json
    (`record` its protocol, `feature` added). Nothing is written when a check refuses the
    features; returns the feature file's path."""
    check_names(name, feature)
    n_classes = parts["train"].labels.shape[1]
    feature_set = FeatureSet(
        dataset=name, feature=feature, **parts, label_names=[str(c) for c in range(n_classes)],
        split_seed=record["split_seed"], source_sha256=source_sha256,
        extra_attrs={**attrs, "protocol": json.dumps(record)})
    path = layout.feature_path(data_dir, name, feature)
    registered = _registered(data_dir, name, feature, record, source_sha256)
    write_feature_file(path, feature_set)  # checks the features: nothing written if refused
    write_json(layout.imported_path(data_dir, name), registered)
    return path


def with_validation(labels: np.ndarray, parts: dict[str, np.ndarray], validation: Validation,
                    seed: int, keep_database: bool = False) -> dict[str, np.ndarray]:
    """A given split's parts (sorted int64 indices of the (n, C) multi-hot `labels`' items) with
    the validation split carved (seeded, `carve_validation`) out of its database items that are
    no training items: they leave the database, or with `keep_database` stay in it (the test
    parts as a source gives them; the file's attr `validation_in_database`)."""
    free = np.zeros(len(labels), bool)
    free[parts["database"]] = True
    free[parts["train"]] = False
    held = carve_validation(labels, free, validation, np.random.default_rng(seed))
    if keep_database:
        return {**parts, **held}
    database = np.setdiff1d(parts["database"], np.concatenate([np.empty(0, np.int64),
                                                               *held.values()]))
    return {**parts, "database": database, **held}


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
                    record["train_in_database"], record.get("neighbours", 0))


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


def check_names(name: str, feature: str) -> None:
    """The data set's and the feature's names must be letters, digits, '_' and '-'."""
    for what, value in (("data set", name), ("feature", feature)):
        if not NAME_PATTERN.fullmatch(value):
            raise GslbenchError(f"{what} name {value!r}: use letters, digits, '_' and '-' "
                                "(starting with a letter or digit)")


def _registered(data_dir: str | Path, name: str, feature: str, protocol: dict,
                sha256: str) -> dict:
    """The record of `name` (new, with `protocol`) with `feature` added, to be written once the
    feature file is; a record with another protocol is an error."""
    path = layout.imported_path(data_dir, name)
    record = (read_json(path) if path.is_file() else
              {"format": RECORD_FORMAT, "format_version": RECORD_VERSION, "name": name,
               "protocol": protocol, "default_feature": feature, "features": {}})
    if record.get("protocol") != protocol:
        raise GslbenchError(f"{path}: {name} was imported with another protocol "
                            f"({record.get('protocol')}); import under another name")
    record["features"][feature] = {"source_sha256": sha256}
    return record


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
