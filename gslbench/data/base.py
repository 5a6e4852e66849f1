"""What a data set is: its protocol (how it is split and scored), its raw data, and the split.

One module per data set (`digits`, `fashion_mnist`, `cifar10`, `nuswide21`) declares a `Dataset`:
its source, checksums, reader and protocol; `gslbench.data.DATASETS` registers them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gslbench.data import fetch
from gslbench.data.backbones import BACKBONES
from gslbench.data.featurefile import multi_hot
from gslbench.errors import GslbenchError
from gslbench.storage import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How a data set is split and scored: per-class query/train counts and the mAP cut-off.

    `train_in_database`: training items are drawn from the database (digits, NUS-WIDE) or kept out
    of it (CIFAR-10, Fashion-MNIST: database = everything but the queries and the training set).
    """

    query_per_class: int
    train_per_class: int
    map_top: int | None  # None: mAP over the whole database
    train_in_database: bool = True


@dataclass(frozen=True)
class Validation:
    """The validation split's shares of the training pool (`gslbench features
    --validation-queries`, `--validation-database`): per class, `queries` x the pool's smallest
    class count (rounded, at least 1) become validation queries and `database` x that count the
    validation database; tuning runs train on the rest of the pool."""

    queries: float = 0.1
    database: float = 0.2

    def per_class(self, pool_labels: np.ndarray) -> tuple[int, int] | None:
        """(validation queries, validation database items) per class for a training pool of
        (n, C) multi-hot labels; None when the pool is too small to draw both and keep items to
        train on (the file then has no validation split; tuning refuses it)."""
        counts = pool_labels.sum(axis=0)
        smallest = int(counts[counts > 0].min())
        queries, database = (max(1, round(share * smallest)) for share in (self.queries,
                                                                          self.database))
        if queries + database >= smallest:
            log.warning("no validation split: --validation-queries %g and --validation-database "
                        "%g take %d + %d of the %d training items of the smallest class, none "
                        "would be left to train on", self.queries, self.database, queries,
                        database, smallest)
            return None
        return queries, database


@dataclass(frozen=True)
class RawData:
    """A data set as loaded from its raw files, before any feature extraction.

    `labels` (n, C) uint8 multi-hot. Either `images` ((n, H, W) or (n, 3, H, W), values in
    [0, pixel_max]) or `vectors`, a function giving the provided features named by its argument
    as (n, d) float32 (NUS-WIDE). `source_sha256` is the checksum of the raw files.
    """

    labels: np.ndarray
    label_names: list[str]
    source_sha256: str
    images: np.ndarray | None = None
    pixel_max: float = 255.0
    vectors: Callable[[str], np.ndarray] | None = None


@dataclass(frozen=True)
class Dataset:
    """A registered data set: its protocol, features and how to fetch and load its raw files.

    `download(raw_dir, url, from_dir)` fetches into DATA_DIR/NAME/raw and returns the main path;
    `features` lists the feature names `build_features` accepts (NUS-WIDE also takes `+`-joined
    combinations of its own).
    """

    name: str
    protocol: Protocol
    default_feature: str
    download: Callable[[Path, str | None, Path | None], Path]
    load_raw: Callable[[Path], RawData]
    features: tuple[str, ...] = tuple(BACKBONES)


def split_indices(labels: np.ndarray, protocol: Protocol, seed: int,
                  validation: Validation = Validation()) -> dict[str, np.ndarray]:
    """(n, C) multi-hot labels -> sorted int64 indices for query, train, database,
    validation_query and validation_database.

    Per class: draw `query_per_class` queries among the items not drawn yet; then draw
    `train_per_class` training items per class among the non-queries. The database is every item
    that is not a query, minus the training items when `protocol.train_in_database` is false.
    Then, from the training pool only, the validation queries and the validation database
    (`carve_validation`). The validation draws come last, so the first three parts are those of a
    file written before validation splits existed.
    """
    rng = np.random.default_rng(seed)
    query = _draw_per_class(labels, np.ones(len(labels), bool), protocol.query_per_class, rng)
    in_database = np.ones(len(labels), bool)
    in_database[query] = False
    train = _draw_per_class(labels, in_database, protocol.train_per_class, rng)
    if not protocol.train_in_database:
        in_database[train] = False
    return {"query": query, "train": train, "database": np.flatnonzero(in_database),
            **carve_validation(labels, train, validation, rng)}


def carve_validation(labels: np.ndarray, train: np.ndarray, validation: Validation,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """From the training pool `train` (int64 indices into the (n, C) labels) only, class by
    class (`Validation.per_class`): the validation queries, then the validation database, both
    sorted int64 and disjoint; the rest of the pool is what tuning runs train on. Empty when
    the pool is too small for them."""
    counts = validation.per_class(labels[train])
    if counts is None:
        return {}
    queries, database = counts
    in_train = np.zeros(len(labels), bool)
    in_train[train] = True
    validation_query = _draw_per_class(labels, in_train, queries, rng)
    in_train[validation_query] = False
    return {"validation_query": validation_query,
            "validation_database": _draw_per_class(labels, in_train, database, rng)}


def unseen_classes(labels: np.ndarray, seed: int) -> np.ndarray | None:
    """The classes the unseen protocol holds out, sorted int64: a quarter of the C classes
    (C - round(3C/4), at least 1), drawn with a generator seeded by (seed, 1) so that the
    standard split's draws are untouched. None for multi-label (n, C) labels, whose items may
    belong to seen and held-out classes at once, or a single class."""
    n_classes = labels.shape[1]
    if n_classes < 2 or (labels.sum(axis=1) > 1).any():
        return None
    seen = min(n_classes - 1, int(np.floor(0.75 * n_classes + 0.5)))
    rng = np.random.default_rng((seed, 1))
    return np.sort(rng.choice(n_classes, n_classes - seen, replace=False)).astype(np.int64)


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


# CIFAR-10 and Fashion-MNIST: 100 queries and 500 training items per class, the training items
# kept out of the database; mAP over the whole database
HELD_OUT_PROTOCOL = Protocol(query_per_class=100, train_per_class=500, map_top=None,
                             train_in_database=False)


def class_images(images: list[np.ndarray], class_ids: list[np.ndarray], label_names: list[str],
                 source_sha256: str) -> RawData:
    """Single-label image parts (uint8 images, (n,) class ids) joined into one RawData."""
    return RawData(labels=multi_hot(np.concatenate(class_ids), len(label_names)),
                   label_names=label_names, source_sha256=source_sha256,
                   images=np.concatenate(images))


def source_sha256(raw_dir: Path, name: str, single_file: Path | None = None) -> str:
    """The download record's checksum; for a single raw file written before records, its sha256."""
    if not (raw_dir / fetch.MANIFEST).is_file() and single_file is not None:
        return sha256_file(single_file)
    return fetch.source_sha256(raw_dir, name)
