"""The feature file `datasets/DATASET/FEATURE.h5` (DESIGN.md section 3): features, labels, split.

Checked when written and when read (`check_feature_set`): features finite floats of magnitude at
most `MAX_ABS_FEATURE` and not all the same vector; labels multi-hot 0/1 integers with at least
one label per item; the attributes present and of the right types.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from gslbench.errors import GslbenchError
from gslbench.storage import open_h5, write_h5

FORMAT = "gslbench.features"
FORMAT_VERSION = 1
SPLITS = ("train", "query", "database")
MAX_ABS_FEATURE = 1e6  # larger values overflow float32 distances and standardisation


@dataclass(frozen=True)
class Split:
    """One part of a data set: features (n, d) float32, multi-hot labels (n, C) uint8, indices (n,)."""

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


@dataclass(frozen=True)
class FeatureSet:
    """A data set's features, split into train / query / database, with its provenance attrs."""

    dataset: str
    feature: str
    train: Split
    query: Split
    database: Split
    label_names: list[str]
    split_seed: int
    source_sha256: str
    extra_attrs: dict = field(default_factory=dict)

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
        return {"train": self.train, "query": self.query, "database": self.database}


def multi_hot(class_ids: np.ndarray, n_classes: int) -> np.ndarray:
    """(n,) int class ids -> (n, n_classes) uint8 multi-hot labels."""
    labels = np.zeros((len(class_ids), n_classes), dtype=np.uint8)
    labels[np.arange(len(class_ids)), class_ids] = 1
    return labels


def write_feature_file(path: str | Path, features: FeatureSet) -> None:
    """Check and write a feature file atomically (DESIGN.md section 3 layout)."""
    for name, split in features.splits().items():
        check_split(split, f"{path}: /{name}")
    with write_h5(path, FORMAT, FORMAT_VERSION) as handle:
        for name, split in features.splits().items():
            group = handle.create_group(name)
            group.create_dataset("features", data=split.features.astype(np.float32))
            group.create_dataset("labels", data=split.labels.astype(np.uint8))
            handle.create_dataset(f"split/{name}", data=split.indices.astype(np.int64))
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


def read_feature_file(path: str | Path) -> FeatureSet:
    """Read and validate a feature file; any inconsistency is a one-line user error."""
    with open_h5(path, FORMAT, FORMAT_VERSION) as handle:
        splits = {name: _read_split(handle, name, path) for name in SPLITS}
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
             "n_classes", "multilabel", "format", "format_version", "created_by", "content_sha256"}
    return FeatureSet(
        dataset=_attr(attrs, "dataset", str, path),
        feature=_attr(attrs, "feature", str, path),
        **splits,
        label_names=_label_names(attrs, classes.pop(), path),
        split_seed=_attr(attrs, "split_seed", int, path),
        source_sha256=_attr(attrs, "source_sha256", str, path),
        extra_attrs={k: v for k, v in attrs.items() if k not in known},
    )


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


def _read_split(handle: h5py.File, name: str, path: str | Path) -> Split:
    for key in (f"{name}/features", f"{name}/labels", f"split/{name}"):
        if key not in handle:
            raise GslbenchError(f"{path}: missing dataset /{key}")
    features = handle[f"{name}/features"][()]
    labels = handle[f"{name}/labels"][()]
    indices = handle[f"split/{name}"][()]
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
