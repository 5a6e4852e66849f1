"""The feature file `datasets/DATASET/FEATURE.h5` (the design page, docs/design.md): features,
labels, split.

Checked when written and when read (`check_feature_set`): features finite floats of magnitude at
most `MAX_ABS_FEATURE` and not all the same vector; labels multi-hot 0/1 integers with at least
one label per item; the attributes present and of the right types.

Format version 3 holds the validation split, carved class by class from the training pool only:
/validation/{query,database}/{features,labels} and /split/{validation_query,validation_database},
disjoint, with training items left over (what tuning runs train on: the pool minus both; the
split is absent when the pool is too small for that); the attr `validation` records the shares
it was carved with. The attr `unseen_classes` (a JSON list, null for multi-label data) names the
classes the `unseen` protocol holds out
(`FeatureSet.for_protocol`). Files of versions 1 and 2 (no validation split, or one that was the
whole pool) are still read for test runs of the standard protocol; a validation or unseen run
needs version 3, which `gslbench features DATASET` writes without running the CNN again.
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

from gslbench.errors import GslbenchError
from gslbench.storage import open_h5, sha256_file, write_h5

FORMAT = "gslbench.features"
FORMAT_VERSION = 3
VALIDATION_VERSION = 3  # the first version whose validation split tuning runs may use
SPLITS = ("train", "query", "database")
MAX_ABS_FEATURE = 1e6  # larger values overflow float32 distances and standardisation
VALIDATION_SPLITS = ("validation/query", "validation/database")  # format_version 3
RUN_SPLITS = ("test", "validation")  # what a run trains and is scored on (`FeatureSet.for_split`)
PROTOCOLS = ("standard", "unseen")  # which classes a run sees (`FeatureSet.for_protocol`)


@dataclass(frozen=True)
class Split:
    """One part of a data set: features (n, d) float32, multi-hot labels (n, C) uint8, indices (n,)."""

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class FeatureSet:
    """A data set's features, split into train / query / database, with its provenance attrs.

    validation_query / validation_database: the validation split, both drawn from the training
    pool (None in a file older than format_version 3). unseen_classes: the classes the unseen
    protocol holds out (None: no unseen protocol, multi-label data or an older file).
    protocol: which protocol's items the parts hold (`for_protocol`).
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
    unseen_classes: tuple[int, ...] | None = None
    protocol: str = "standard"

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
        """Every part the file holds, by its group: the `splits` and (format_version 2)
        validation/query, validation/database."""
        validation = {"validation/query": self.validation_query,
                      "validation/database": self.validation_database}
        return {**self.splits(), **{name: part for name, part in validation.items()
                                    if part is not None}}

    def for_protocol(self, protocol: str) -> FeatureSet:
        """The parts a run of `protocol` uses: `standard`, the file as it is; `unseen`, the
        training pool and the validation split restricted to the items of the seen classes
        (those not in `unseen_classes`), the queries and the database to the items of the held-out
        classes, so no query or database class is ever trained on."""
        if protocol == "standard":
            return self
        if protocol not in PROTOCOLS:
            raise GslbenchError(f"unknown protocol {protocol!r}; known: {', '.join(PROTOCOLS)}")
        if self.unseen_classes is None:
            raise GslbenchError(
                f"no unseen protocol (feature file older than format_version {FORMAT_VERSION}); "
                f"run `gslbench features {self.dataset}` again to add it"
                if self.validation_query is None else
                "no unseen protocol: multi-label items can belong to seen and held-out classes "
                "at once" if self.multilabel else
                f"no unseen protocol: {self.n_classes} class(es) are too few to hold some out")
        held_out = np.zeros(self.n_classes, bool)
        held_out[list(self.unseen_classes)] = True

        def keep(split: Split | None, of_held_out: bool) -> Split | None:
            if split is None:
                return None
            rows = held_out[split.labels.argmax(axis=1)] == of_held_out
            return Split(split.features[rows], split.labels[rows], split.indices[rows])

        return dataclasses.replace(
            self, train=keep(self.train, False), query=keep(self.query, True),
            database=keep(self.database, True),
            validation_query=keep(self.validation_query, False),
            validation_database=keep(self.validation_database, False), protocol=protocol)

    def for_split(self, split: str) -> FeatureSet:
        """What a run of `split` trains on and is scored on: `test`, the parts as they are;
        `validation`, train = the training pool minus the validation queries and the validation
        database, query = the validation queries, database = the validation database, so no item
        a tuning run is scored on was trained on, and no test query or database item is seen."""
        if split == "test":
            return self
        if split != "validation":
            raise GslbenchError(f"unknown split {split!r}; known: {', '.join(RUN_SPLITS)}")
        if self.validation_query is None or self.validation_database is None:
            raise GslbenchError(f"no validation split of format_version {VALIDATION_VERSION} (an "
                                "older file, or a training pool too small to hold one out); run "
                                f"`gslbench features {self.dataset}` again to add it")
        held = np.concatenate([self.validation_query.indices, self.validation_database.indices])
        rows = ~np.isin(self.train.indices, held)
        train = Split(self.train.features[rows], self.train.labels[rows], self.train.indices[rows])
        return dataclasses.replace(self, train=train, query=self.validation_query,
                                   database=self.validation_database)


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
    with write_h5(path, FORMAT, FORMAT_VERSION) as handle:
        for name, split in features.parts().items():
            group = handle.create_group(name)
            group.create_dataset("features", data=split.features.astype(np.float32))
            group.create_dataset("labels", data=split.labels.astype(np.uint8))
            handle.create_dataset(_index_key(name), data=split.indices.astype(np.int64))
        attrs = {
            "dataset": features.dataset,
            "feature": features.feature,
            "dim": features.dim,
            "n_classes": features.n_classes,
            "multilabel": features.multilabel,
            "label_names": json.dumps(features.label_names),
            "split_seed": features.split_seed,
            "source_sha256": features.source_sha256,
            "unseen_classes": json.dumps(None if features.unseen_classes is None
                                         else list(features.unseen_classes)),
            **features.extra_attrs,
        }
        handle.attrs.update(attrs)


def read_feature_file(path: str | Path, split: str = "test",
                      protocol: str = "standard") -> FeatureSet:
    """Read and validate a feature file; any inconsistency is a one-line user error.

    protocol: `standard` or `unseen` (`FeatureSet.for_protocol`); split: `test` or `validation`
    (`FeatureSet.for_split`). A file older than version 3 has neither a validation split nor an
    unseen protocol: a user error saying to run `gslbench features` again. An unchanged file
    (same inode, size and mtime) is read once per process: a bench cell's train and encode, and
    the cells of one worker, share it (its arrays are shared too: do not modify them)."""
    features = _read_unchanged(Path(path).absolute(), _stamp(Path(path)))
    try:
        return features.for_protocol(protocol).for_split(split)
    except GslbenchError as exc:
        raise GslbenchError(f"{path}: {exc}") from None


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
def _read_unchanged(path: Path, stamp: tuple[int, int, int] | None) -> FeatureSet:
    """The whole file (test split) at `path` with this stamp; errors are not cached."""
    with open_h5(path, FORMAT, FORMAT_VERSION, sealed_since=2) as handle:
        version = int(handle.attrs["format_version"])
        names = SPLITS + tuple(name for name in VALIDATION_SPLITS
                               if version >= VALIDATION_VERSION and name in handle)
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
             "unseen_classes"}
    _check_validation(splits, path)
    n_classes = classes.pop()
    unseen = _unseen_classes(attrs, n_classes, path) if version >= VALIDATION_VERSION else None
    return FeatureSet(
        dataset=_attr(attrs, "dataset", str, path),
        feature=_attr(attrs, "feature", str, path),
        train=splits["train"], query=splits["query"], database=splits["database"],
        label_names=_label_names(attrs, n_classes, path),
        split_seed=_attr(attrs, "split_seed", int, path),
        source_sha256=_attr(attrs, "source_sha256", str, path),
        extra_attrs={k: v for k, v in attrs.items() if k not in known},
        validation_query=splits.get("validation/query"),
        validation_database=splits.get("validation/database"),
        unseen_classes=unseen,
    )


def _unseen_classes(attrs: dict, n_classes: int, path: str | Path) -> tuple[int, ...] | None:
    """The `unseen_classes` attribute: JSON null or a list of distinct class ids, neither none nor
    every class."""
    try:
        value = json.loads(_attr(attrs, "unseen_classes", str, path))
    except json.JSONDecodeError:
        raise GslbenchError(f"{path}: attribute 'unseen_classes' is not JSON") from None
    if value is None:
        return None
    if not (isinstance(value, list) and 0 < len(set(value)) == len(value) < n_classes
            and all(isinstance(c, int) and 0 <= c < n_classes for c in value)):
        raise GslbenchError(f"{path}: attribute 'unseen_classes' is not a list of some of the "
                            f"{n_classes} class ids")
    return tuple(value)


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
    """(n, C) multi-hot labels: integers 0 or 1 (bool or any integer dtype), at least one 1 per row."""
    if labels.dtype.kind not in "biu":
        raise GslbenchError(f"{where} are {labels.dtype}; labels are multi-hot 0/1 integers (uint8)")
    if labels.size and not np.isin(labels, (0, 1)).all():
        values = np.unique(labels[~np.isin(labels, (0, 1))])[:3].tolist()
        raise GslbenchError(f"{where} hold values other than 0 and 1 (e.g. {values}); labels are "
                            "multi-hot 0/1")
    unlabelled = np.count_nonzero(~labels.any(axis=1))
    if unlabelled:
        raise GslbenchError(f"{where}: {unlabelled} of {len(labels)} items have no label")


def _check_validation(splits: dict[str, Split], path: str | Path) -> None:
    """The validation queries and database must be disjoint parts of the training pool that leave
    items to train on."""
    if ("validation/query" in splits) != ("validation/database" in splits):
        raise GslbenchError(f"{path}: holds only one of /validation/query and /validation/database")
    if "validation/query" not in splits:
        return
    train = splits["train"].indices
    query, database = splits["validation/query"].indices, splits["validation/database"].indices
    together = np.concatenate([query, database])
    if (len(np.unique(together)) != len(together) or not np.isin(together, train).all()
            or len(together) >= len(train)):
        raise GslbenchError(f"{path}: /split/validation_query and /split/validation_database are "
                            "not disjoint parts of the training pool /split/train that leave "
                            "items to train on")


def has_validation_split(path: str | Path) -> bool:
    """Whether the feature file at `path` (which must exist) is of format_version 3 or later,
    with a validation split tuning may use and the unseen protocol's classes; reads only its
    attrs."""
    with open_h5(path, FORMAT, FORMAT_VERSION, sealed_since=2) as handle:
        return int(handle.attrs["format_version"]) >= VALIDATION_VERSION


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
                 indices.astype(np.int64, copy=False))
