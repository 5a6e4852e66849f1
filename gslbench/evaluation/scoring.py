"""Score a search: distances block by block, ranking, metrics (the design page, docs/design.md, section 6).

`evaluate` prepares the queries once (``search.prepare(queries)``: themselves, or their codes for
SDC), asks a search object (`gslbench.quantizers.search`) for the distances of one block of them
to every database item (``search.distances(block) -> (b, n) float32``), ranks them and computes
the metrics of `gslbench.evaluation.metrics` (the definitions are in that module's docstring;
the whole ranking is never materialised: the relevance is sorted along with the distances,
`metrics.rank_relevance`). Only a block's
``(b, n)`` arrays exist at any time, a few per worker thread, so NUS-WIDE (2,100 x 193,734) runs in
bounded memory. Blocks run on a thread pool (numpy releases the GIL in the sorts and gathers).
`evaluate_distances` is the same loop over a precomputed distance matrix or any callable that
produces distance blocks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.evaluation import metrics, neighbours

MAP_AT = (100, 1000)  # the K of mAP@K where a protocol does not fix one
PRECISION_AT = (10, 100, 1000)
RECALL_AT = (1, 10, 100, 1000)
# Default block: about this many (query, database item) pairs, i.e. ~25-40 bytes each in flight.
BLOCK_PAIRS = 2**22

DistanceBlocks = Callable[[int, int], np.ndarray]


class Search(Protocol):
    """What `evaluate` needs: a database to search (`gslbench.quantizers.search`)."""

    def __len__(self) -> int:
        """n, the database size."""
        ...

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """``(nq, d) float32`` queries -> what `distances` takes for them (the queries, or their
        codes for SDC), computed once for all of them."""
        ...

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """A block of `prepare`'s rows -> ``(b, n) float32`` distances to the database."""
        ...


def evaluate(search: Search, queries: np.ndarray, query_labels: np.ndarray,
             database_labels: np.ndarray, **options: Any) -> dict[str, Any]:
    """Search the database with `queries` and return the metrics dict (metrics.json's shape).

    queries: ``(nq, d) float32``; query_labels: ``(nq, C) uint8`` multi-hot;
    database_labels: ``(n, C) uint8`` multi-hot, n = len(search).
    options: the keyword arguments of `evaluate_distances` (map_at, precision_at, ...).
    """
    queries = np.asarray(queries)
    if queries.ndim != 2:
        raise GslbenchError(f"queries must be 2-D (nq, d), got shape {queries.shape}")
    if len(queries) != len(query_labels):
        raise GslbenchError(f"{len(queries)} queries but {len(query_labels)} query labels")
    if len(search) != len(database_labels):
        raise GslbenchError(f"{len(search)} codes but {len(database_labels)} database labels")

    prepared = search.prepare(queries)

    def distance_block(start: int, stop: int) -> np.ndarray:
        return search.distances(prepared[start:stop])

    return evaluate_distances(distance_block, query_labels, database_labels, **options)


def evaluate_distances(
    distances: np.ndarray | DistanceBlocks,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    *,
    map_at: Sequence[int] = MAP_AT,
    precision_at: Sequence[int] = PRECISION_AT,
    recall_at: Sequence[int] = RECALL_AT,
    pr_points: int = metrics.PR_POINTS,
    whole_ranking: bool = True,
    block_size: int | None = None,
    workers: int = 2,
    query_neighbours: np.ndarray | None = None,
) -> dict[str, Any]:
    """Rank and score query blocks whose distances come from a matrix or a callable.

    distances: ``(nq, n) float32``, or a callable ``(start, stop) -> (stop - start, n) float32``
        giving the distances of queries ``start:stop`` to the whole database.
    query_labels: ``(nq, C) uint8``; database_labels: ``(n, C) uint8`` (multi-hot).
    map_at, precision_at, recall_at: the K of mAP@K, precision@K and recall@R; a K above the
        database size is capped to it, the keys stay as asked.
    pr_points: recall levels of the PR curve (0: no curve).
    whole_ranking: rank the whole database, for ``map`` (mAP over the whole ranking) and the PR
        curve; False ranks only the top max(K) items and reports both as None (faster at scale).
    block_size: queries per block (default: about `BLOCK_PAIRS` / n, and at most nq / workers).
    workers: threads working on blocks at once.
    query_neighbours: ``(nq, k) int64`` database positions of each query's k true neighbours,
        for data without labels (`gslbench.evaluation.neighbours`): the relevance instead of the
        labels (then of no columns), and the keys ``one_recall_at`` and ``k_recall_at`` added.

    Returns ``{"map", "map_at", "precision_at", "recall_at", "pr_curve", "n_query", "n_db",
    "n_query_no_relevant", "n_query_no_relevant_at", "timings_s"}``; ``timings_s`` has the
    ``distances``, ``ranking`` (relevance in rank order) and ``metrics`` seconds summed over
    blocks (over all workers, so they can add up to more than the wall-clock ``total``).
    """
    start_time = time.perf_counter()
    query_labels = np.asarray(query_labels)
    database_labels = np.asarray(database_labels)
    for name, labels in (("query_labels", query_labels), ("database_labels", database_labels)):
        if labels.ndim != 2:
            raise GslbenchError(f"{name} must be 2-D multi-hot (n, C), got shape {labels.shape}")
    if query_labels.shape[1] != database_labels.shape[1]:
        raise GslbenchError(
            f"query labels have {query_labels.shape[1]} classes, "
            f"database labels {database_labels.shape[1]}"
        )
    n_query, n_db = len(query_labels), len(database_labels)
    if n_query == 0 or n_db == 0:
        raise GslbenchError(f"nothing to evaluate: {n_query} queries, {n_db} database items")
    if isinstance(distances, np.ndarray):
        if distances.shape != (n_query, n_db):
            raise GslbenchError(
                f"distances have shape {distances.shape}, expected ({n_query}, {n_db})"
            )
        matrix = distances

        def distance_block(start: int, stop: int) -> np.ndarray:
            return matrix[start:stop]
    else:
        distance_block = distances
    try:
        map_at, precision_at, recall_at = (
            metrics.positive_ints(map_at, "map_at"),
            metrics.positive_ints(precision_at, "precision_at"),
            metrics.positive_ints(recall_at, "recall_at"),
        )
    except ValueError as error:
        raise GslbenchError(str(error)) from None
    if pr_points and pr_points < 2:
        raise GslbenchError(f"pr_points must be 0 or >= 2, got {pr_points}")
    if workers < 1:
        raise GslbenchError(f"workers must be >= 1, got {workers}")
    if block_size is None:
        block_size = min(max(1, BLOCK_PAIRS // n_db), -(-n_query // workers))
    if block_size < 1:
        raise GslbenchError(f"block_size must be >= 1, got {block_size}")

    if query_neighbours is not None:
        if np.ndim(query_neighbours) != 2 or len(query_neighbours) != n_query:
            raise GslbenchError(f"query_neighbours have shape {np.shape(query_neighbours)}, "
                                f"expected ({n_query}, k)")
        recall_at = sorted({*recall_at, query_neighbours.shape[1]})
    depth = n_db if whole_ranking else min(n_db, max(map_at + precision_at + recall_at, default=1))
    query_packed = metrics.pack_labels(query_labels)
    database_packed = metrics.pack_labels(database_labels)
    patterns, pattern_counts = metrics.label_patterns(database_packed)

    def run_block(start: int) -> tuple[metrics.QueryMetrics, np.ndarray, np.ndarray | None]:
        stop = min(start + block_size, n_query)
        clock = np.zeros(3)
        tick = time.perf_counter()
        block_distances = np.asarray(distance_block(start, stop))
        if block_distances.shape != (stop - start, n_db):
            raise GslbenchError(
                f"distance block has shape {block_distances.shape}, "
                f"expected ({stop - start}, {n_db})"
            )
        clock[0] = time.perf_counter() - tick
        tick = time.perf_counter()
        block_packed = query_packed[start:stop]
        nearest = None
        if query_neighbours is not None:  # relevance by neighbours
            block_neighbours = query_neighbours[start:stop]
            nearest = neighbours.nearest_rank(block_distances, block_neighbours[:, 0])
            relevant = neighbours.neighbour_relevance(block_neighbours, n_db)
            n_relevant = np.full(stop - start, block_neighbours.shape[1], dtype=np.int64)
            relevant = (metrics.rank_relevance(block_distances, relevant) if depth == n_db else
                        np.take_along_axis(relevant, metrics.rank(block_distances, depth), 1))
        elif depth == n_db:  # the relevance sorted along, no ranking materialised
            relevant = metrics.packed_relevance(block_packed, database_packed)
            relevant = metrics.rank_relevance(block_distances, relevant)
        else:
            ranking = metrics.rank(block_distances, depth)
            relevant = metrics.ranked_relevance(block_packed, database_packed, ranking)
        if nearest is None:
            n_relevant = metrics.count_relevant(block_packed, patterns, pattern_counts)
        del block_distances
        clock[1] = time.perf_counter() - tick
        tick = time.perf_counter()
        block = metrics.query_metrics(
            relevant, n_relevant, n_db=n_db, map_at=map_at, precision_at=precision_at, recall_at=recall_at,
            pr_points=pr_points if whole_ranking else 0,
        )
        clock[2] = time.perf_counter() - tick
        return block, clock, nearest

    starts = range(0, n_query, block_size)
    if workers == 1 or len(starts) == 1:
        results = [run_block(start) for start in starts]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(starts), os.cpu_count() or 1)) as pool:
            results = list(pool.map(run_block, starts))
    out = metrics.summarize([block for block, _, _ in results], n_db=n_db)
    if query_neighbours is not None:
        ranks = np.concatenate([nearest for _, _, nearest in results])
        out.update(neighbours.neighbour_metrics(ranks, out["recall_at"], query_neighbours.shape[1]))
    clock = np.sum([clock for _, clock, _ in results], axis=0)
    out["timings_s"] = {
        "distances": float(clock[0]),
        "ranking": float(clock[1]),
        "metrics": float(clock[2]),
        "total": time.perf_counter() - start_time,
    }
    return out
