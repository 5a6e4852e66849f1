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

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

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
    features = checked_features(arrays["features"], source.path)
    labels = checked_labels(arrays["labels"], len(features), n_classes,
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


def read_arrays(source: ImportSource) -> dict[str, np.ndarray]:
    """{"features", "labels"[, "split"]} as stored in the source file(s)."""
    path = source.path
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
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
        arrays = {"features": _load_npy(path), "labels": _load_npy(source.labels_path)}
        if source.split_path is not None:
            arrays["split"] = _load_npy(source.split_path)
        return arrays
    if suffix == ".npz":
        stored = _read_npz(path)
    elif suffix in (".h5", ".hdf5"):
        stored = _read_hdf5(path, transpose=False)
    elif suffix == ".mat":
        stored = _read_hdf5(path, transpose=True) if h5py.is_hdf5(path) else _read_mat_v5(path)
    else:
        raise GslbenchError(f"{path}: unknown file type {suffix!r}; use .npz, .npy, .h5, .hdf5 "
                            "or .mat")
    for role in ("features", "labels"):
        if keys[role] not in stored:
            raise GslbenchError(f"{path}: no array {keys[role]!r} (the {role}); it has "
                                f"{', '.join(sorted(stored)) or 'none'} (see --{role}-key)")
    return {role: stored[key] for role, key in keys.items() if key in stored}


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise GslbenchError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise GslbenchError(f"{path}: not a numpy .npy array ({exc})") from None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as exc:
        raise GslbenchError(f"{path}: not a readable .npz archive ({exc})") from None


def _read_hdf5(path: Path, transpose: bool) -> dict[str, np.ndarray]:
    """The datasets at the file's root; `transpose` for MATLAB v7.3 (column-major) files."""
    try:
        with h5py.File(path, "r") as handle:
            return {key: (item[()].T if transpose else item[()]) for key, item in handle.items()
                    if isinstance(item, h5py.Dataset)}
    except OSError as exc:
        raise GslbenchError(f"{path}: not a readable HDF5 file ({exc})") from None


def _read_mat_v5(path: Path) -> dict[str, np.ndarray]:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        return {key: value for key, value in loadmat(path).items() if not key.startswith("__")}
    except (MatReadError, OSError, ValueError) as exc:
        raise GslbenchError(f"{path}: not a readable MATLAB .mat file ({exc})") from None


def _vector(values: np.ndarray) -> np.ndarray:
    """A MATLAB row or column vector (1, n) or (n, 1) as (n,); anything else unchanged."""
    return values.ravel() if values.ndim == 2 and 1 in values.shape else values


def _integral(values: np.ndarray, path: Path, what: str) -> np.ndarray:
    """Integer-valued numbers (MATLAB stores them as doubles) as int64."""
    if values.dtype.kind not in "biuf" or values.dtype.kind == "f" and not (
            np.isfinite(values).all() and (values == np.round(values)).all()):
        raise GslbenchError(f"{path}: {what} must be integers, got {values.dtype} values "
                            "that are not")
    return values.astype(np.int64)


def checked_features(features: np.ndarray, path: Path) -> np.ndarray:
    """(n, d) real numbers -> (n, d) float32; any other shape or dtype, or a non-finite value
    (also after the cast), is a one-line error."""
    if features.ndim != 2 or len(features) < 2 or features.shape[1] < 1:
        raise GslbenchError(f"{path}: features must be a 2-d array (items, dimensions), got shape "
                            f"{features.shape}")
    if features.dtype.kind not in "biuf":
        raise GslbenchError(f"{path}: features must be real numbers, got dtype {features.dtype}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf, reported below
        features = features.astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise GslbenchError(f"{path}: features hold {int(bad.sum())} non-finite value(s) (NaN or "
                            f"inf, or beyond float32) in {len(rows)} row(s), the first row {rows[0]}")
    return features


def checked_labels(labels: np.ndarray, n: int, n_classes: int | None, path: Path) -> np.ndarray:
    """Class ids (n,) in [0, n_classes) or multi-hot (n, C) of 0 and 1 -> (n, C) uint8 multi-hot,
    every item with at least one label. n_classes: C (default: the largest id + 1, or the
    multi-hot width)."""
    labels = _vector(labels)
    if labels.ndim not in (1, 2) or len(labels) != n:
        raise GslbenchError(f"{path}: labels must be ({n},) class ids or ({n}, C) multi-hot for the "
                            f"{n} feature rows, got shape {labels.shape}")
    if labels.ndim == 1:
        ids = _integral(labels, path, "class ids")
        classes = n_classes if n_classes is not None else int(ids.max()) + 1
        if ids.min() < 0 or ids.max() >= classes:
            raise GslbenchError(f"{path}: class ids must lie in 0..{classes - 1}, found "
                                f"{ids.min()} to {ids.max()}")
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


def given_split(split: np.ndarray, n: int, path: Path) -> dict[str, np.ndarray]:
    """(n,) part codes (see the module docstring) -> sorted int64 indices of query, train and
    database; each part must be non-empty."""
    split = _vector(split)
    if split.shape != (n,):
        raise GslbenchError(f"{path}: split must be ({n},), one part code per feature row, got "
                            f"shape {split.shape}")
    codes = _integral(split, path, "split codes")
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
