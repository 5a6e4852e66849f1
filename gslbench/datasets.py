"""Data sets and their protocols (DESIGN.md section 2): download, split, write the feature file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.featurefile import FeatureSet, Split, multi_hot, write_feature_file
from gslbench.storage import atomic_path, sha256_file


@dataclass(frozen=True)
class Protocol:
    """How a data set is split and scored: per-class query/train counts and the mAP cut-off."""

    query_per_class: int
    train_per_class: int
    map_top: int | None  # None: mAP over the whole database


@dataclass(frozen=True)
class Dataset:
    """A registered data set: its protocol, default feature and how to fetch and featurize it."""

    name: str
    protocol: Protocol
    default_feature: str
    download: Callable[[Path], Path]
    load_raw: Callable[[Path], tuple[np.ndarray, np.ndarray, list[str]]]


def split_indices(labels: np.ndarray, protocol: Protocol, seed: int) -> dict[str, np.ndarray]:
    """(n, C) multi-hot labels -> sorted int64 indices for query, train and database.

    Per class: draw `query_per_class` queries among the items not drawn yet; the database is the
    rest; then draw `train_per_class` training items per class from the database.
    """
    rng = np.random.default_rng(seed)
    query = _draw_per_class(labels, np.ones(len(labels), bool), protocol.query_per_class, rng)
    in_database = np.ones(len(labels), bool)
    in_database[query] = False
    train = _draw_per_class(labels, in_database, protocol.train_per_class, rng)
    return {"query": query, "train": train, "database": np.flatnonzero(in_database)}


def _draw_per_class(
    labels: np.ndarray, available: np.ndarray, per_class: int, rng: np.random.Generator
) -> np.ndarray:
    drawn = np.zeros(len(labels), bool)
    for c in range(labels.shape[1]):
        pool = np.flatnonzero(available & ~drawn & (labels[:, c] > 0))
        if len(pool) < per_class:
            raise GslbenchError(f"class {c} has {len(pool)} items left, the protocol needs {per_class}")
        drawn[rng.choice(pool, per_class, replace=False)] = True
    return np.flatnonzero(drawn)


# --- digits: scikit-learn's bundled copy, nothing to fetch -------------------------------------

def _download_digits(raw_dir: Path) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = raw_dir / "digits.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=digits.data.astype(np.float32), target=digits.target)
    return path


def _load_digits(raw_dir: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    path = raw_dir / "digits.npz"
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download digits` first")
    with np.load(path) as raw:
        return raw["images"] / np.float32(16.0), raw["target"], [str(i) for i in range(10)]


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(
        name="digits",
        protocol=Protocol(query_per_class=10, train_per_class=50, map_top=None),
        default_feature="pixels",
        download=_download_digits,
        load_raw=_load_digits,
    ),
}


def get_dataset(name: str) -> Dataset:
    """The registered data set called `name`; an unknown name is a user error listing the known."""
    try:
        return DATASETS[name]
    except KeyError:
        raise GslbenchError(
            f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


def raw_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name / "raw"


def feature_path(data_dir: str | Path, name: str, feature: str | None = None) -> Path:
    """Where the feature file of data set `name` with feature `feature` lives."""
    return Path(data_dir) / name / f"{feature or get_dataset(name).default_feature}.h5"


def download(
    name: str, data_dir: str | Path, url: str | None = None, from_dir: str | Path | None = None
) -> Path:
    """Fetch data set `name`'s raw files under DATA_DIR/NAME/raw; return the main file.

    `url` overrides the registered source; `from_dir` imports files placed by hand.
    """
    directory = raw_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    return get_dataset(name).download(directory)


def build_features(
    name: str,
    data_dir: str | Path,
    backbone: str | None = None,
    image_size: int = 64,
    batch_size: int = 256,
    split_seed: int = 0,
) -> Path:
    """Split data set `name` by its protocol and write its feature file; return its path."""
    dataset = get_dataset(name)
    directory = raw_dir(data_dir, name)
    features, class_ids, label_names = dataset.load_raw(directory)
    labels = multi_hot(class_ids, len(label_names))
    indices = split_indices(labels, dataset.protocol, split_seed)
    source = sorted(directory.glob("*"))
    feature_set = FeatureSet(
        dataset=name,
        feature=dataset.default_feature,
        **{part: Split(features[idx], labels[idx], idx) for part, idx in indices.items()},
        label_names=label_names,
        split_seed=split_seed,
        source_sha256=sha256_file(source[0]) if len(source) == 1 else "",
    )
    path = feature_path(data_dir, name, dataset.default_feature)
    write_feature_file(path, feature_set)
    return path
