"""Relevance by neighbours, for data sets without labels (`glove-6b-50d`): an item's relevant
items are its k true nearest neighbours in the float features, by Euclidean distance (on
L2-normalised vectors the same order as the angular distance), computed exactly (faiss's
brute-force `IndexFlatL2`) once, when the feature file is written.

Stored per part of the feature file as /PART/neighbours (n, k) int64, row positions (not source
indices) in the part the queries are scored against: a query part's neighbours are positions in
its database (query -> database, validation/query -> validation/database); the training part's
are positions in the training part itself, the item itself excluded (its k-NN graph, from which
the pairwise losses take their positives). Database parts have none. Rows list the neighbours
nearest first.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import

faiss = lazy_import("faiss")

DEFAULT_K = 10
# which part's neighbours are positions in which part (`with_neighbours`)
NEIGHBOUR_TARGETS = {"train": "train", "query": "database",
                     "validation_query": "validation_database"}


def true_neighbours(queries: np.ndarray, database: np.ndarray, k: int,
                    exclude_self: bool = False) -> np.ndarray:
    """The exact k nearest database rows of each query: (nq, d), (n, d) float32 -> (nq, k) int64
    positions in `database`, nearest first (faiss's brute-force L2 search). `exclude_self`: the
    queries are the database itself (row i of both is the same item) and an item is not its own
    neighbour (a duplicate vector of it still is)."""
    if k < 1 or k + exclude_self > len(database):
        raise ValueError(f"k={k} neighbours asked of a database of {len(database)} items")
    index = faiss.IndexFlatL2(database.shape[1])
    index.add(np.ascontiguousarray(database, dtype=np.float32))
    _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), k + exclude_self)
    if not exclude_self:
        return found.astype(np.int64)
    own = found == np.arange(len(queries))[:, None]
    own[~own.any(axis=1), -1] = True  # itself not among the k + 1 (ties): drop the farthest
    return found[~own].reshape(len(queries), k).astype(np.int64)


# how an error names each part neighbours are searched in: the option that sizes it
TARGET_NAMES = {"train": "--neighbours: the training set", "database": "--neighbours: the database",
                "validation_database": "--validation-database: the validation database"}


def with_neighbours(parts: dict, k: int) -> dict:
    """The feature file's parts (name -> `Split`, the names of `split_indices`) with the k true
    neighbours of each query part and of the training part (`NEIGHBOUR_TARGETS`) added. A part
    with too few items for k (k + 1 for the training part: an item is not its own neighbour) is
    a user error naming the option that sizes it."""
    out = dict(parts)
    for name, target in NEIGHBOUR_TARGETS.items():
        if name in parts:
            need = k + (name == target)
            if len(parts[target].features) < need:
                raise GslbenchError(f"{TARGET_NAMES[target]} has {len(parts[target].features)} "
                                    f"items, fewer than the {need} that k={k} neighbours need")
            found = true_neighbours(parts[name].features, parts[target].features, k,
                                    exclude_self=name == target)
            out[name] = dataclasses.replace(parts[name], neighbours=found)
    return out


def neighbour_rows(neighbours: np.ndarray) -> np.ndarray:
    """What the pairwise losses take for a training set related by neighbours: (n, k) positions
    -> (n, 1 + k) int64 rows [i, its k neighbours], so that a batch's rows (any subset, in any
    order) carry who each item is and whom it is related to (`gslbench.methods.losses`)."""
    return np.concatenate([np.arange(len(neighbours))[:, None], neighbours], axis=1).astype(np.int64)
