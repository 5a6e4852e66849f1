"""The feature file `datasets/DATASET/FEATURE.h5` (DESIGN.md section 3): features, labels, split."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from gslbench.errors import GslbenchError
from gslbench.storage import atomic_path, open_h5, set_format_attrs

FORMAT = "gslbench.features"
FORMAT_VERSION = 1
SPLITS = ("train", "query", "database")


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
    """Write a feature file atomically (DESIGN.md section 3 layout)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        set_format_attrs(handle, FORMAT, FORMAT_VERSION)
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
    if int(attrs.get("dim", -1)) not in dims:
        raise GslbenchError(f"{path}: attr dim={attrs.get('dim')} but features have {dims.pop()}")
    known = {"dataset", "feature", "label_names", "split_seed", "source_sha256", "dim",
             "n_classes", "multilabel", "format", "format_version", "created_by"}
    return FeatureSet(
        dataset=str(attrs["dataset"]),
        feature=str(attrs["feature"]),
        **splits,
        label_names=json.loads(attrs["label_names"]),
        split_seed=int(attrs["split_seed"]),
        source_sha256=str(attrs["source_sha256"]),
        extra_attrs={k: v for k, v in attrs.items() if k not in known},
    )


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
    return Split(features.astype(np.float32, copy=False), labels.astype(np.uint8, copy=False),
                 indices.astype(np.int64, copy=False))
