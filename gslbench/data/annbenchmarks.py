"""An ann-benchmarks file as a data set: `gslbench features import NAME --ann-benchmarks FILE`.

The format (ann-benchmarks' `datasets/*.hdf5`): datasets `train` (n, d) and `test` (q, d) real
numbers, `neighbors` (q, K) integers (each test query's K nearest `train` rows, nearest first)
and `distances` (q, K); the attribute `distance` says the metric, `euclidean` or `angular` (other
metrics, such as `hamming` or `jaccard`, are refused). No labels: relevance by neighbours
(`gslbench.data.neighbours`).

Protocol: the test queries are `test`; the test database is every `train` row, the training
items included (the file has no separate learn set, as in ann-benchmarks); a test query's
relevant items are the file's first k `neighbors` (k as the GloVe track's, 10 by default; at
most K). The training set is a seeded sample of `train` (default min(100,000, n / 2) rows); the
validation queries and database are carved, seeded, out of the other rows (`carve_validation`:
as many validation queries as test queries, a validation database of n / 7), so no run trains on
them; they stay in the test database, and their relevance (like the training set's k-NN graph)
is computed exactly (`with_neighbours`). Angular: every vector is L2-normalised (the GloVe
track's convention), so that the Euclidean order is the cosine's; euclidean: the vectors as
they are.

Before anything is written, the file's `neighbors` are checked against an exact search for a
seeded sample of test queries (`check_ground_truth`). Source indices in the feature file: the
`train` rows 0..n-1, then the `test` rows n..n+q-1.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np

from gslbench.data.arrayfiles import read_hdf5
from gslbench.data.base import Validation
from gslbench.data.featurefile import Split
from gslbench.data.imported import check_names, checked_features, with_validation, write_import
from gslbench.data.neighbours import DEFAULT_K, true_neighbours, with_neighbours
from gslbench.errors import GslbenchError
from gslbench.storage import sha256_file

DISTANCES = ("euclidean", "angular")
DATASETS = ("train", "test", "neighbors", "distances")
TRAIN_SIZE = 100_000  # the training sample's default size (at most half of `train`)
CHECKED_QUERIES = 100  # test queries whose neighbours are checked against an exact search
TOLERANCE = 1e-4  # of a distance's scale (`check_ground_truth`): ties within it are ties


@dataclass(frozen=True)
class AnnBenchmarksSource:
    """An ann-benchmarks HDF5 file and how to split it (see the module docstring). train_size:
    the training sample's size (None: min(TRAIN_SIZE, n // 2)); neighbours: the k of relevance;
    checked_queries: how many test queries `check_ground_truth` searches exactly."""

    path: Path
    train_size: int | None = None
    neighbours: int = DEFAULT_K
    checked_queries: int = CHECKED_QUERIES


@dataclass(frozen=True)
class AnnArrays:
    """A checked file: train (n, d) and test (q, d) float32 (unit rows for angular), neighbors
    (q, K) int64 in 0..n-1, distinct per row; distance: "euclidean" or "angular"."""

    train: np.ndarray
    test: np.ndarray
    neighbors: np.ndarray
    distance: str


def import_ann_benchmarks(name: str, source: AnnBenchmarksSource, data_dir: str | Path,
                          feature: str = "imported", split_seed: int = 0,
                          map_top: int | None = 100,
                          validation: Validation | None = None) -> Path:
    """Read and check the ann-benchmarks file of `source`, check its ground truth, split it by
    the protocol of the module docstring (`split_seed`; the validation sizes of `validation`,
    default the protocol's) and write DATA/NAME/FEATURE.h5 and DATA/NAME/imported.json (mAP@
    `map_top`: the neighbour track ranks only the top); returns the feature file's path. Every
    problem is a one-line error, raised before anything is written."""
    check_names(name, feature)
    arrays = read_ann_file(source.path, source.neighbours)
    check_ground_truth(arrays, source.path, source.checked_queries, split_seed)
    n, k = len(arrays.train), source.neighbours
    train_size = _train_size(source.train_size, n, k)
    rng = np.random.default_rng(split_seed)
    training = np.sort(rng.choice(n, train_size, replace=False))
    validation = (validation or Validation()).resolved(n, 1, len(arrays.test))
    one_class = np.ones((n, 1), np.uint8)  # split as one class
    rows = with_validation(one_class, {"train": training, "database": np.arange(n)}, validation,
                           split_seed, keep_database=True)
    parts = {part: Split(arrays.train[idx], np.zeros((len(idx), 0), np.uint8), idx)
             for part, idx in rows.items()}
    parts = with_neighbours(parts, k)  # the training k-NN graph, the validation relevance
    parts["query"] = Split(arrays.test, np.zeros((len(arrays.test), 0), np.uint8),
                           n + np.arange(len(arrays.test)), arrays.neighbors[:, :k])
    record = {"source": "ann-benchmarks", "distance": arrays.distance,
              "query_per_class": len(arrays.test), "train_per_class": train_size,
              "train_in_database": True, "map_top": map_top, "split_seed": split_seed,
              "given_split": True, "neighbours": k}
    return write_import(name, feature, data_dir, parts, record, sha256_file(source.path), {
        "backbone": "imported", "image_size": 0, "weights_sha256": "",
        "validation": json.dumps(asdict(validation)), "validation_in_database": True,
        "imported_from": json.dumps([str(source.path)]), "distance": arrays.distance})


def _train_size(given: int | None, n: int, k: int) -> int:
    """The training sample's size: `given`, else min(TRAIN_SIZE, n // 2); it must leave k
    neighbours besides each item and rows outside it."""
    size = min(TRAIN_SIZE, n // 2) if given is None else given
    if not k < size < n:
        raise GslbenchError(f"--train-size {size}: the training sample must hold more than k={k} "
                            f"items and fewer than the file's {n} train rows")
    return size


def read_ann_file(path: Path, k: int) -> AnnArrays:
    """The checked arrays of the ann-benchmarks file `path` (`AnnArrays`); a file that is not one
    (a missing dataset or attribute, an unknown metric, shapes that disagree, non-finite values,
    neighbour indices outside `train` or repeated in a row, fewer than `k` neighbours per query)
    is a one-line error naming it."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as handle:
            distance = _distance(handle, path)
    except OSError as exc:
        raise GslbenchError(f"{path}: not an HDF5 file ({exc})") from None
    stored = read_hdf5(path, transpose=False)  # only this file's bytes, read when indexed
    missing = [key for key in DATASETS if key not in stored]
    if missing:
        raise GslbenchError(f"{path}: no dataset {', '.join(missing)} (an ann-benchmarks file "
                            f"holds {', '.join(DATASETS)})")
    _check_shapes({key: stored[key].shape for key in DATASETS}, path, k)
    if stored["neighbors"].dtype.kind not in "iu":
        raise GslbenchError(f"{path}: neighbors are {stored['neighbors'].dtype}, not integer "
                            "indices")
    if stored["distances"].dtype.kind not in "biuf" or not np.isfinite(
            stored["distances"][()]).all():
        raise GslbenchError(f"{path}: distances must be finite real numbers")
    neighbors = stored["neighbors"][()].astype(np.int64)
    train = checked_features(stored["train"], Path(f"{path}: train"))
    test = checked_features(stored["test"], Path(f"{path}: test"))
    _check_indices(neighbors, len(train), path)
    if distance == "angular":
        train, test = _unit(train, path, "train"), _unit(test, path, "test")
    return AnnArrays(train, test, neighbors, distance)


def _distance(handle: h5py.File, path: Path) -> str:
    """The file's attribute `distance`, one of DISTANCES."""
    value = handle.attrs.get("distance")
    if value is None:
        raise GslbenchError(f"{path}: no attribute 'distance' (euclidean or angular)")
    value = value.decode() if isinstance(value, bytes) else str(value)
    if value not in DISTANCES:
        raise GslbenchError(f"{path}: attribute distance is {value!r}; only "
                            f"{' and '.join(DISTANCES)} files are read")
    return value


def _check_shapes(shapes: dict[str, tuple[int, ...]], path: Path, k: int) -> None:
    """train (n, d), test (q, d), neighbors and distances (q, K) with n >= 2, q >= 1, K >= k."""
    (n, dim), (q, _), (_, big_k) = (s if len(s) == 2 else (0, 0) for s in
                                     (shapes["train"], shapes["test"], shapes["neighbors"]))
    wanted = {"train": (n, dim), "test": (q, dim), "neighbors": (q, big_k),
              "distances": (q, big_k)}
    if n < 2 or q < 1 or dim < 1 or big_k < 1 or shapes != wanted:
        raise GslbenchError(f"{path}: shapes train {shapes['train']}, test {shapes['test']}, "
                            f"neighbors {shapes['neighbors']}, distances {shapes['distances']}; "
                            "want (n, d), (q, d), (q, K) and (q, K)")
    if k > big_k:
        raise GslbenchError(f"--neighbours {k}: {path} lists {big_k} neighbours per query")


def _check_indices(neighbors: np.ndarray, n: int, path: Path) -> None:
    """Each row of (q, K) `neighbors`: indices in 0..n-1, none twice."""
    outside = (neighbors < 0) | (neighbors >= n)
    if outside.any():
        row = int(np.flatnonzero(outside.any(axis=1))[0])
        raise GslbenchError(f"{path}: neighbors hold {int(outside.sum())} indices outside "
                            f"0..{n - 1} (the first in row {row})")
    ordered = np.sort(neighbors, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
    if repeated.any():
        raise GslbenchError(f"{path}: {int(repeated.sum())} rows of neighbors list a train row "
                            f"twice (the first: row {int(np.flatnonzero(repeated)[0])})")


def _unit(vectors: np.ndarray, path: Path, part: str) -> np.ndarray:
    """(n, d) float32 -> (n, d) float32 rows of L2 norm 1 (computed in float64); a zero row has
    no angle: a one-line error."""
    wide = vectors.astype(np.float64)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    if (norms == 0).any():
        raise GslbenchError(f"{path}: {part} holds {int((norms == 0).sum())} zero vectors, which "
                            "have no angular distance")
    return (wide / norms).astype(np.float32)


def exact_distances(queries: np.ndarray, rows: np.ndarray, distance: str) -> np.ndarray:
    """(b, d) queries and (b, m, d) rows (float32) -> (b, m) float64 distances of each query to
    its rows: angular, 1 - the inner product (on unit vectors: the cosine distance); euclidean,
    the squared L2 distance."""
    queries, rows = queries.astype(np.float64)[:, None, :], rows.astype(np.float64)
    if distance == "angular":
        return 1.0 - (queries * rows).sum(axis=2)
    return ((queries - rows) ** 2).sum(axis=2)


def check_ground_truth(arrays: AnnArrays, path: Path, n_checked: int, seed: int) -> None:
    """Check the file's neighbour lists of `n_checked` test queries (seeded sample) against an
    exact search: rank by rank, the distance of the listed neighbour must equal the exact one
    (float64) within TOLERANCE of the distances' scale (angular: 1; euclidean: the query's
    squared norm plus the largest of its candidates'), so ties may be listed in any order. The
    candidates: faiss's exact top 2K (`true_neighbours`; on unit vectors the L2 order is the
    angular one), rescored in float64. Any query that disagrees refuses the file, with the
    count."""
    q, big_k = arrays.neighbors.shape
    sample = np.sort(np.random.default_rng(seed).choice(q, min(n_checked, q), replace=False))
    queries = arrays.test[sample]
    candidates = true_neighbours(queries, arrays.train, min(2 * big_k, len(arrays.train)))
    exact = np.sort(exact_distances(queries, arrays.train[candidates], arrays.distance),
                    axis=1)[:, :big_k]
    listed = exact_distances(queries, arrays.train[arrays.neighbors[sample]], arrays.distance)
    scale = np.ones(len(sample))
    if arrays.distance == "euclidean":
        norms = (arrays.train[candidates].astype(np.float64) ** 2).sum(axis=2).max(axis=1)
        scale = (queries.astype(np.float64) ** 2).sum(axis=1) + norms
    wrong = (np.abs(listed - exact) > TOLERANCE * scale[:, None]).any(axis=1)
    if wrong.any():
        raise GslbenchError(f"{path}: neighbors disagree with an exact search for "
                            f"{int(wrong.sum())} of {len(sample)} sampled queries (the first: "
                            f"test row {int(sample[wrong][0])})")
