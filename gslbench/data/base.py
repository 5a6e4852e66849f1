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
from gslbench.data.unseen import unseen_classes as unseen_classes  # the protocol's class draw
from gslbench.errors import GslbenchError
from gslbench.storage import sha256_file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Protocol:
    """How a data set is split and scored: per-class query/train counts and the mAP cut-off.

    `train_in_database`: training items are drawn from the database (digits, NUS-WIDE) or kept out
    of it (CIFAR-10, Fashion-MNIST).

    The validation split (what tuning runs are scored on) mirrors the test split on items no run
    trains on: per class, as many validation queries as test queries, and a validation database
    of round(n / 7C) items per class (n items, C classes: a seventh of the data set, as
    Fashion-MNIST's 10,000 of 70,000), drawn after the test queries and the training items from
    the items that are neither (`Validation.resolved`; none when that is more than half of a
    class's free items, `carve_validation`). The test database is everything else (with the
    training items when `train_in_database`). Tuning and test runs train on the same training
    items.

    A data set without labels (`neighbours` = k > 0) is split as one class (the counts are of
    the whole set) and relates its items by their k true nearest neighbours
    (`gslbench.data.neighbours`).
    """

    query_per_class: int
    train_per_class: int
    map_top: int | None  # None: mAP over the whole database
    train_in_database: bool = True
    neighbours: int = 0  # k > 0: no labels; relevance is the k true neighbours (`with_neighbours`)


@dataclass(frozen=True)
class Validation:
    """The validation split's sizes per class (`gslbench features --validation-queries N
    --validation-database N`); 0: the protocol's (`Protocol`: as many queries as the test's, a
    database of a seventh of the data set)."""

    queries: int = 0
    database: int = 0

    def resolved(self, n_items: int, n_classes: int, query_per_class: int) -> Validation:
        """The counts a split of `n_items` items of `n_classes` classes with `query_per_class`
        test queries per class uses: each given one, else the protocol's."""
        return Validation(self.queries or max(1, query_per_class),
                          self.database or max(1, round(n_items / (7 * n_classes))))


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

    Per class, seeded: draw `query_per_class` queries; then `train_per_class` training items
    among the non-queries; then the validation queries and database (`carve_validation`) among
    the items that are neither. The database is every item that is none of these, plus the
    training items when `protocol.train_in_database`. Every part is disjoint from the others
    but the training items from a database that holds them.
    """
    rng = np.random.default_rng(seed)
    query = _draw_per_class(labels, np.ones(len(labels), bool), protocol.query_per_class, rng)
    free = np.ones(len(labels), bool)  # neither a query nor a training item
    free[query] = False
    train = _draw_per_class(labels, free, protocol.train_per_class, rng)
    free[train] = False
    counts = validation.resolved(len(labels), labels.shape[1], protocol.query_per_class)
    held = carve_validation(labels, free, counts, rng)
    in_database = free.copy()
    for part in held.values():
        in_database[part] = False
    if protocol.train_in_database:
        in_database[train] = True
    return {"query": query, "train": train, "database": np.flatnonzero(in_database), **held}


def carve_validation(labels: np.ndarray, free: np.ndarray, counts: Validation,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """From the items `free` marks ((n,) bool: no run trains on them and they are no test
    query), class by class: `counts.queries` validation queries, then `counts.database`
    validation database items, both sorted int64 and disjoint; the caller keeps them out of the
    test database. Empty (with a warning) when they would take more than half the free items of
    a class: the test database keeps at least as many of them as the validation split."""
    smallest = int(labels[free].sum(axis=0).min())
    if 2 * (counts.queries + counts.database) > smallest:
        log.warning("no validation split: %d validation queries and %d validation database items "
                    "per class are more than half the %d free items (neither queries nor training "
                    "items) of the smallest class; set --validation-queries and "
                    "--validation-database lower", counts.queries, counts.database, smallest)
        return {}
    validation_query = _draw_per_class(labels, free, counts.queries, rng)
    free = free.copy()
    free[validation_query] = False
    return {"validation_query": validation_query,
            "validation_database": _draw_per_class(labels, free, counts.database, rng)}


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
