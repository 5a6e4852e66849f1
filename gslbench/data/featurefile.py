"""The feature file `datasets/DATASET/FEATURE.h5` (the design page, docs/design.md): features,
labels, split.

Checked when written and when read (`check_feature_set`): features finite floats of magnitude at
most `MAX_ABS_FEATURE` and not all the same vector; labels multi-hot 0/1 integers with at least
one label per item; the attributes present and of the right types.

Format version 4 holds the validation split, carved class by class from the items no run trains
on and disjoint from the test queries and database: /validation/{query,database}/{features,labels}
and /split/{validation_query,validation_database} (absent when the data set is too small for
them); the attr `validation` records its sizes per class. Tuning runs (`for_split("validation")`)
and test runs train on the same training items. The unseen protocol's classes are not stored:
they are computed from the file's split seed and the run's `unseen` and `draw`
(`gslbench.data.unseen`, `FeatureSet.for_protocol`). An older file is refused with one line
saying to rebuild it with `gslbench features DATASET`, which keeps its features (no CNN runs
again).

A data set without labels (`glove-6b-50d`) has labels of no columns and relates its items by
neighbours instead: /train/neighbours, /query/neighbours and /validation/query/neighbours (n, k)
int64 (`gslbench.data.neighbours`, checked here by `check_neighbours`).

Longer than 400 lines on purpose: the format's writer, its reader and the checks of its content
stay in one file, so that a reader checks them against the format's description in one place.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gslbench import layout
from gslbench.data.neighbours import NEIGHBOUR_TARGETS
from gslbench.data.unseen import DEFAULT_UNSEEN, unseen_classes, validation_unseen_classes
from gslbench.errors import GslbenchError
from gslbench.storage import open_h5, read_json, sha256_file, write_h5

FORMAT = "gslbench.features"
FORMAT_VERSION = 4  # 4: validation out of the items no run trains on; unseen classes computed
SPLITS = ("train", "query", "database")
MAX_ABS_FEATURE = 1e6  # larger values overflow float32 distances and standardisation
VALIDATION_SPLITS = ("validation/query", "validation/database")
RUN_SPLITS = ("test", "validation")  # what a run trains and is scored on (`FeatureSet.for_split`)
PROTOCOLS = ("standard", "unseen")  # which classes a run sees (`FeatureSet.for_protocol`)


@dataclass(frozen=True)
class Split:
    """One part of a data set: features (n, d) float32, multi-hot labels (n, C) uint8, indices (n,).

    A data set without labels (C = 0) relates items by `neighbours` (n, k) int64 instead: the
    positions of each item's k true nearest neighbours (`gslbench.data.neighbours`), for the
    query parts and the training part; None elsewhere and for labelled data.
    """

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    neighbours: np.ndarray | None = None


@dataclass(frozen=True)
class FeatureSet:
    """A data set's features, split into train / query / database, with its provenance attrs.

    validation_query / validation_database: the validation split, drawn from the items no run
    trains on (None when the data set was too small for one). protocol: which protocol's items
    the parts hold (`for_protocol`); unseen_classes: the classes a run of it holds out of
    training, sorted (empty for the standard protocol), drawn by `draw`.
    """

    dataset: str
    feature: str
    train: Split
    query: Split
    database: Split
    label_names: list[str]
    split_seed: int
    source_sha256: str
    extra_attrs: dict = field(default_factory=dict)
    validation_query: Split | None = None
    validation_database: Split | None = None
    unseen_classes: tuple[int, ...] = ()
    protocol: str = "standard"
    draw: int = 0

    @property
    def dim(self) -> int:
        return int(self.train.features.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.train.labels.shape[1])

    @property
    def multilabel(self) -> bool:
        return bool(any((s.labels.sum(axis=1) > 1).any() for s in self.splits().values()))

    def splits(self) -> dict[str, Split]:
        """The test protocol's parts: train, query, database."""
        return {"train": self.train, "query": self.query, "database": self.database}

    def parts(self) -> dict[str, Split]:
        """Every part the file holds, by its group: the `splits` and validation/query,
        validation/database."""
        validation = {"validation/query": self.validation_query,
                      "validation/database": self.validation_database}
        return {**self.splits(), **{name: part for name, part in validation.items()
                                    if part is not None}}

    def for_protocol(self, protocol: str, unseen: int = DEFAULT_UNSEEN,
                     draw: int = 0) -> FeatureSet:
        """The parts a run of `protocol` uses: `standard`, the file as it is; `unseen`, `unseen`
        classes held out by draw `draw` (`gslbench.data.unseen.unseen_classes`, a one-line
        error for multi-label data or fewer than 2 unseen or seen classes): train = the seen
        classes' training items, query and database = every test query and database item (the
        evaluation splits them by `unseen_classes`), the validation split restricted to the seen
        classes (`for_split`)."""
        if protocol == "standard":
            return self
        if protocol not in PROTOCOLS:
            raise GslbenchError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        held_out = unseen_classes(self.n_classes, unseen, draw, self.split_seed,
                                  multilabel=self.multilabel)
        return dataclasses.replace(
            self, train=_without(self.train, held_out),
            validation_query=_without(self.validation_query, held_out),
            validation_database=_without(self.validation_database, held_out),
            unseen_classes=held_out, protocol=protocol, draw=draw)

    def for_split(self, split: str) -> FeatureSet:
        """What a run of `split` trains on and is scored on: `test`, the parts as they are;
        `validation`, the same training items (the unseen protocol: minus classes of its own,
        `validation_unseen_classes`, which become its `unseen_classes`), query = the validation
        queries, database = the validation database; no test query or database item is seen."""
        if split == "test":
            return self
        if split != "validation":
            raise GslbenchError(f"unknown split {split!r}; known: {', '.join(RUN_SPLITS)}")
        if self.validation_query is None or self.validation_database is None:
            raise GslbenchError("no validation split (the data set is too small to hold one out "
                                "of the items no run trains on); run `gslbench features "
                                f"{self.dataset}` with smaller --validation-queries and "
                                "--validation-database")
        held_out = self.unseen_classes
        if self.protocol == "unseen":
            held_out = validation_unseen_classes(self.n_classes, self.unseen_classes, self.draw,
                                                 self.split_seed)
        return dataclasses.replace(self, train=_without(self.train, held_out),
                                   query=self.validation_query,
                                   database=self.validation_database, unseen_classes=held_out)


def _without(split: Split | None, classes: tuple[int, ...]) -> Split | None:
    """The items of single-label `split` whose class is not one of `classes`."""
    if split is None or not classes:
        return split
    rows = ~np.isin(split.labels.argmax(axis=1), classes)
    return Split(split.features[rows], split.labels[rows], split.indices[rows])


def items_record(split: Split) -> dict:
    """What a run records of the items it used: {"n": count, "indices_sha256": sha256 of the
    source indices as little-endian int64}, so a record can be checked against a feature file."""
    indices = np.ascontiguousarray(split.indices, dtype="<i8")
    return {"n": len(indices), "indices_sha256": hashlib.sha256(indices.tobytes()).hexdigest()}


def multi_hot(class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """(n,) int class ids -> (n, n_classes) uint8 multi-hot labels."""
    labels = np.zeros((len(class_ids), n_classes), dtype=np.uint8)
    labels[np.arange(len(class_ids)), class_ids] = 1
    return labels


def write_feature_file(path: str | Path, features: FeatureSet) -> None:
    """Check and write a feature file atomically (the layout of docs/design.md, section 3)."""
    for name, split in features.parts().items():
        check_split(split, f"{path}: /{name}")
    check_neighbours(features, path)
    with write_h5(path, FORMAT, FORMAT_VERSION) as handle:
        for name, split in features.parts().items():
            group = handle.create_group(name)
            group.create_dataset("features", data=split.features.astype(np.float32))
            group.create_dataset("labels", data=split.labels.astype(np.uint8))
            handle.create_dataset(_index_key(name), data=split.indices.astype(np.int64))
            if split.neighbours is not None:
                group.create_dataset("neighbours", data=split.neighbours.astype(np.int64))
        attrs = {
            "dataset": features.dataset,
            "feature": features.feature,
            "dim": features.dim,
            "n_classes": features.n_classes,
            "multilabel": features.multilabel,
            "label_names": json.dumps(features.label_names),
            "split_seed": features.split_seed,
            "source_sha256": features.source_sha256,
            **features.extra_attrs,
        }
        handle.attrs.update(attrs)


def read_feature_file(path: str | Path, split: str = "test", protocol: str = "standard",
                      unseen: int = DEFAULT_UNSEEN, draw: int = 0) -> FeatureSet:
    """Read and validate a feature file; any inconsistency is a one-line user error.

    protocol: `standard` or `unseen` (`FeatureSet.for_protocol`, with `unseen` classes held out
    by draw `draw`); split: `test` or `validation` (`FeatureSet.for_split`). A file older than
    format_version 4 is refused with one line saying to rebuild it with `gslbench features`. An
    unchanged file (same inode, size and mtime) is read once per process: a bench cell's train
    and encode, and the cells of one worker, share it (its arrays are shared too: do not modify
    them)."""
    features = _read_unchanged(Path(path).absolute(), _stamp(Path(path)), FORMAT_VERSION)
    try:
        return features.for_protocol(protocol, unseen, draw).for_split(split)
    except GslbenchError as exc:
        raise GslbenchError(f"{path}: {exc}") from None


def read_any_version(path: str | Path) -> FeatureSet:
    """The test parts of a feature file of any format version (its validation split only from
    version 4): what `gslbench features` reuses the features of when it rebuilds a file."""
    return _read_unchanged(Path(path).absolute(), _stamp(Path(path)), 1)


def feature_file_sha256(path: str | Path) -> str:
    """The sha256 of a feature file's bytes, computed once per process while it is unchanged."""
    return _sha256_unchanged(Path(path).absolute(), _stamp(Path(path)))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime in ns) of a file, None if it cannot be stat'ed: what marks it as
    unchanged for the caches (a rewrite is a rename: another inode)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@functools.lru_cache(maxsize=2)
def _sha256_unchanged(path: Path, stamp: tuple[int, int, int] | None) -> str:
    return sha256_file(path)


@functools.lru_cache(maxsize=2)
def _read_unchanged(path: Path, stamp: tuple[int, int, int] | None,
                    min_version: int) -> FeatureSet:
    """The whole file (test split) at `path` with this stamp, of format_version `min_version` or
    later; errors are not cached."""
    with open_h5(path, FORMAT, FORMAT_VERSION, min_version=min_version,
                 rewrite=_rebuild_advice(path), sealed_since=2) as handle:
        version = int(handle.attrs["format_version"])
        names = SPLITS + tuple(name for name in VALIDATION_SPLITS
                               if version >= FORMAT_VERSION and name in handle)
        splits = {name: _read_split(handle, name, path) for name in names}
        attrs = dict(handle.attrs)
    dims = {s.features.shape[1] for s in splits.values()}
    classes = {s.labels.shape[1] for s in splits.values()}
    if len(dims) != 1 or len(classes) != 1:
        raise GslbenchError(
            f"{path}: splits disagree on feature dimension {sorted(dims)} or classes {sorted(classes)}"
        )
    if _attr(attrs, "dim", int, path) not in dims:
        raise GslbenchError(f"{path}: attr dim={attrs.get('dim')} but features have {dims.pop()}")
    known = {"dataset", "feature", "label_names", "split_seed", "source_sha256", "dim",
             "n_classes", "multilabel", "format", "format_version", "created_by", "content_sha256",
             "unseen_classes"}  # unseen_classes: format_version 3's stored draw, dropped
    _check_validation(splits, path, in_database=bool(attrs.get("validation_in_database", False)))
    n_classes = classes.pop()
    features = FeatureSet(
        dataset=_attr(attrs, "dataset", str, path),
        feature=_attr(attrs, "feature", str, path),
        train=splits["train"], query=splits["query"], database=splits["database"],
        label_names=_label_names(attrs, n_classes, path),
        split_seed=_attr(attrs, "split_seed", int, path),
        source_sha256=_attr(attrs, "source_sha256", str, path),
        extra_attrs={k: v for k, v in attrs.items() if k not in known},
        validation_query=splits.get("validation/query"),
        validation_database=splits.get("validation/database"),
    )
    check_neighbours(features, path)
    return features


# the option of `features import` that each imported source (its record's protocol `source`) uses
IMPORT_OPTIONS = {"ann-benchmarks": "--ann-benchmarks FILE.hdf5", "image-list": "--image-list DIR"}


def _rebuild_advice(path: Path) -> str:
    """How to rebuild the feature file `path` (DATA/NAME/FEATURE.h5) of the current version: an
    imported data set names the `features import` option it was imported with (its record,
    DATA/NAME/imported.json; `--from FILE` where the record does not say)."""
    name = path.parent.name
    record = layout.imported_path(path.parent.parent, name)
    if record.is_file():
        try:
            source = read_json(record)["protocol"]["source"]
        except (GslbenchError, KeyError, TypeError):  # the advice stays general
            source = None
        option = IMPORT_OPTIONS.get(source, "--from FILE")
        return f"import it again (`gslbench features import {name} {option}`)"
    return f"rebuild it with `gslbench features {name}` (its features are kept)"


def _attr(attrs: dict, name: str, kind: type, path: str | Path) -> Any:
    """The attribute `name` as a plain `kind` (str or int); missing or of another type: an error."""
    value = attrs.get(name)
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise GslbenchError(f"{path}: attribute {name!r} is {value!r}, expected a {kind.__name__}")
    return value


def _label_names(attrs: dict, n_classes: int, path: str | Path) -> list[str]:
    """The `label_names` attribute: a JSON list of one string per class."""
    try:
        names = json.loads(_attr(attrs, "label_names", str, path))
    except json.JSONDecodeError:
        raise GslbenchError(f"{path}: attribute 'label_names' is not JSON") from None
    if not (isinstance(names, list) and len(names) == n_classes
            and all(isinstance(name, str) for name in names)):
        raise GslbenchError(f"{path}: attribute 'label_names' is not a list of {n_classes} names")
    return names


def check_split(split: Split, where: str) -> None:
    """Raise a user error naming `where` unless the split's values are usable: features finite
    floats, |x| <= MAX_ABS_FEATURE, not all one vector; labels 0/1 integers, one or more per item."""
    check_features(split.features, f"{where}/features")
    check_labels(split.labels, f"{where}/labels")


def check_features(features: np.ndarray, where: str) -> None:
    """(n, d) features: floating point, finite, |x| <= MAX_ABS_FEATURE, not all the same row.
    Reductions only, so no copy of the features is made unless one is wrong."""
    if features.dtype.kind != "f":
        raise GslbenchError(f"{where} are {features.dtype}, not floating point numbers")
    if not features.size:
        return
    low, high = float(features.min()), float(features.max())  # NaN propagates
    if not (math.isfinite(low) and math.isfinite(high)):
        bad = np.count_nonzero(~np.isfinite(features))
        raise GslbenchError(f"{where} hold {bad} non-finite values (NaN or inf)")
    largest = max(high, -low)
    if largest > MAX_ABS_FEATURE:
        raise GslbenchError(f"{where} hold values as large as {largest:.3g} (at most "
                            f"{MAX_ABS_FEATURE:g} are accepted; rescale them)")
    if len(features) > 1 and (features.min(axis=0) == features.max(axis=0)).all():
        raise GslbenchError(f"{where} are constant: every item has the same feature vector")


def check_labels(labels: np.ndarray, where: str) -> None:
    """(n, C) multi-hot labels: integers 0 or 1 (bool or any integer dtype), at least one 1 per
    row; C = 0 for a data set without labels (`check_neighbours`)."""
    if labels.dtype.kind not in "biu":
        raise GslbenchError(f"{where} are {labels.dtype}; labels are multi-hot 0/1 integers (uint8)")
    if labels.size and not np.isin(labels, (0, 1)).all():
        values = np.unique(labels[~np.isin(labels, (0, 1))])[:3].tolist()
        raise GslbenchError(f"{where} hold values other than 0 and 1 (e.g. {values}); labels are "
                            "multi-hot 0/1")
    unlabelled = np.count_nonzero(~labels.any(axis=1))
    if unlabelled and labels.shape[1]:  # no columns: a set related by neighbours
        raise GslbenchError(f"{where}: {unlabelled} of {len(labels)} items have no label")


def _check_validation(splits: dict[str, Split], path: str | Path, in_database: bool = False
                      ) -> None:
    """The validation queries and database must be disjoint from each other and from the test
    parts (training items, queries, database); `in_database` (attr `validation_in_database`: an
    import that keeps the test parts as its source gives them, `gslbench.data.annbenchmarks`,
    `gslbench.data.imagelist`): they may be test database items, never training items or test
    queries."""
    if ("validation/query" in splits) != ("validation/database" in splits):
        raise GslbenchError(f"{path}: holds only one of /validation/query and /validation/database")
    if "validation/query" not in splits:
        return
    query, database = splits["validation/query"].indices, splits["validation/database"].indices
    together = np.concatenate([query, database])
    test = [name for name in SPLITS if not (in_database and name == "database")]
    seen = np.concatenate([splits[name].indices for name in test])
    if len(np.unique(together)) != len(together) or np.isin(together, seen).any():
        raise GslbenchError(f"{path}: /split/validation_query and /split/validation_database are "
                            "not disjoint from each other and from "
                            f"{', '.join('/split/' + name for name in test)}")


def has_validation_split(path: str | Path) -> bool:
    """Whether the feature file at `path` (which must exist) is of the current format_version
    (a validation split out of the items no run trains on); reads only its attrs."""
    with open_h5(path, FORMAT, FORMAT_VERSION, sealed_since=2) as handle:
        return int(handle.attrs["format_version"]) >= FORMAT_VERSION


def _index_key(name: str) -> str:
    """The index array of a part: train -> split/train, validation/query -> split/validation_query."""
    return "split/" + name.replace("/", "_")


def _read_split(handle: h5py.File, name: str, path: str | Path) -> Split:
    for key in (f"{name}/features", f"{name}/labels", _index_key(name)):
        if key not in handle:
            raise GslbenchError(f"{path}: missing dataset /{key}")
    features = handle[f"{name}/features"][()]
    labels = handle[f"{name}/labels"][()]
    indices = handle[_index_key(name)][()]
    neighbours = handle[f"{name}/neighbours"][()] if f"{name}/neighbours" in handle else None
    if neighbours is not None and neighbours.dtype.kind not in "iu":
        raise GslbenchError(f"{path}: /{name}/neighbours is {neighbours.dtype}, not integers")
    if features.ndim != 2 or labels.ndim != 2 or indices.ndim != 1:
        raise GslbenchError(
            f"{path}: /{name} has wrong shapes: features {features.shape} (want 2-d), "
            f"labels {labels.shape} (want 2-d), split {indices.shape} (want 1-d)"
        )
    if not len(features) == len(labels) == len(indices) or len(features) == 0:
        raise GslbenchError(
            f"{path}: /{name} row counts disagree or are empty: features {len(features)}, "
            f"labels {len(labels)}, split indices {len(indices)}"
        )
    check_split(Split(features, labels, indices), f"{path}: /{name}")
    if indices.dtype.kind not in "iu":
        raise GslbenchError(f"{path}: /split/{name} is {indices.dtype}, not integer indices")
    return Split(features.astype(np.float32, copy=False), labels.astype(np.uint8, copy=False),
                 indices.astype(np.int64, copy=False),
                 None if neighbours is None else neighbours.astype(np.int64, copy=False))


def check_neighbours(features: FeatureSet, path: str | Path) -> None:
    """A data set without labels (no label columns) must relate its items by neighbours: its
    training part and query parts hold /PART/neighbours (n, k) integers, the same k throughout,
    each a position in the part it refers to (`NEIGHBOUR_TARGETS`), distinct within a row, never
    the training item itself; labelled data holds none."""
    ks = set()
    for name, target in NEIGHBOUR_TARGETS.items():
        part, within = getattr(features, name), getattr(features, target)
        found = None if part is None else part.neighbours
        where = f"{path}: /{name.replace('_', '/')}/neighbours"
        if found is None:
            if part is not None and not features.n_classes:
                raise GslbenchError(f"{where}: missing (the data set has no labels)")
            continue
        if features.n_classes:
            raise GslbenchError(f"{where}: a labelled data set holds no neighbours")
        if found.dtype.kind not in "iu" or found.ndim != 2 or len(found) != len(part.indices):
            raise GslbenchError(f"{where}: {found.dtype} {found.shape}, want ({len(part.indices)}, k)"
                                " integers")
        ks.add(found.shape[1])
        if found.size and (found.min() < 0 or found.max() >= len(within.indices)):
            raise GslbenchError(f"{where}: positions outside 0..{len(within.indices) - 1}")
        ordered = np.sort(found, axis=1)
        if (ordered[:, 1:] == ordered[:, :-1]).any():
            raise GslbenchError(f"{where}: an item lists the same neighbour twice")
        if name == target and (found == np.arange(len(found))[:, None]).any():
            raise GslbenchError(f"{where}: an item is listed as its own neighbour")
    if len(ks) > 1 or 0 in ks:
        raise GslbenchError(f"{path}: the parts' neighbours disagree on k ({sorted(ks)})")
