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
produces distance blocks; `score_databases` ranks each block over several databases (subsets of
the items' columns) at once.

A run of the unseen-class protocol, trained on the seen classes, is scored under four conditions
(`CONDITIONS`, `evaluate_conditions`): its queries of the seen classes against the database
items of the seen classes (`seen@seen`) and against all of them (`seen@all`), its queries of the
unseen classes against the unseen classes' items (`unseen@unseen`, the primary) and against all
(`unseen@all`). Each query group's distances are computed once per block and ranked over both of
its databases.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.evaluation import metrics, neighbours
from gslbench.evaluation.primary import primary_score

if TYPE_CHECKING:
    from gslbench.data.featurefile import Split

MAP_AT = (100, 1000)  # the K of mAP@K where a protocol does not fix one
PRECISION_AT = (10, 100, 1000)
RECALL_AT = (1, 10, 100, 1000)
# Default block: about this many (query, database item) pairs, i.e. ~25-40 bytes each in flight.
BLOCK_PAIRS = 2**22
# The unseen-class protocol's conditions, QUERIES@DATABASE: the classes of the queries, and of
# the database items ranked. The primary one is what metrics.json's top level holds (what tune
# optimizes).
CONDITIONS = ("seen@seen", "seen@all", "unseen@unseen", "unseen@all")
PRIMARY_CONDITION = "unseen@unseen"
CONDITION_KEYS = ("map", "map_at", "precision_at", "recall_at", "pr_curve", "n_query", "n_db",
                  "n_query_no_relevant", "n_query_no_relevant_at")

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
    prepared = _prepared(search, queries, query_labels, database_labels)

    def distance_block(start: int, stop: int) -> np.ndarray:
        return search.distances(prepared[start:stop])

    return evaluate_distances(distance_block, query_labels, database_labels, **options)


def evaluate_primary(search: Search, queries: np.ndarray, query: Split, database: Split) -> float:
    """The primary metric (`primary.primary_score`) of a feature file's query part searched in
    its database part's codes (`search`): ``(nq, d) float32`` query representations -> mAP by the
    parts' labels, or 1-recall@10 by the query part's true neighbours (then only the top of each
    ranking is scored). No PR curve."""
    found = query.neighbours
    return primary_score(evaluate(search, queries, query.labels, database.labels, pr_points=0,
                                  query_neighbours=found, whole_ranking=found is None))


def evaluate_conditions(search: Search, queries: np.ndarray, query_labels: np.ndarray,
                        database_labels: np.ndarray, unseen_classes: Sequence[int],
                        **options: Any) -> dict[str, Any]:
    """`evaluate` for a run that held `unseen_classes` out of training: the four `CONDITIONS`
    from one search. The queries of the seen (unseen) classes are searched once per block, and
    each block's distances are ranked twice: over the database items of their own classes
    (`seen@seen`, `unseen@unseen`) and over the whole database (`seen@all`, `unseen@all`).
    Relevant items are those sharing a label, as in `evaluate`.

    unseen_classes: the held-out class indices (columns of the labels); every query and every
    database item must belong to seen classes only or to unseen classes only, and each group
    must hold queries and database items. Returns the `PRIMARY_CONDITION`'s metrics dict
    (`evaluate`'s shape) with ``conditions`` = {name: its `CONDITION_KEYS`} for the four, and
    ``timings_s`` summed over both query groups (``total``: wall-clock of the whole)."""
    start_time = time.perf_counter()
    prepared = _prepared(search, queries, query_labels, database_labels)
    query_unseen = unseen_members(query_labels, unseen_classes, "query")
    database_unseen = unseen_members(database_labels, unseen_classes, "database")
    scored, clock = {}, {}
    for group, unseen in (("seen", False), ("unseen", True)):
        rows, own = np.flatnonzero(query_unseen == unseen), np.flatnonzero(database_unseen == unseen)

        def distance_block(start: int, stop: int, rows: np.ndarray = rows) -> np.ndarray:
            return search.distances(prepared[rows[start:stop]])

        own_metrics, all_metrics = score_databases(distance_block, np.asarray(query_labels)[rows],
                                                   database_labels, (own, None), **options)
        scored[f"{group}@{group}"], scored[f"{group}@all"] = own_metrics, all_metrics
        for name, seconds in own_metrics["timings_s"].items():
            clock[name] = clock.get(name, 0.0) + seconds
    out = dict(scored[PRIMARY_CONDITION])
    out["conditions"] = {name: {key: scored[name][key] for key in CONDITION_KEYS}
                         for name in CONDITIONS}
    out["timings_s"] = {**clock, "total": time.perf_counter() - start_time}
    return out


def unseen_members(labels: np.ndarray, unseen_classes: Sequence[int], part: str) -> np.ndarray:
    """Which items belong to the unseen classes: ``(n, C) multi-hot -> (n,) bool``. An item
    labelled with a seen and an unseen class at once, or a part with no item of the seen or of
    the unseen classes, is a user error (`part`: "query" or "database", for the message)."""
    labels = np.asarray(labels)
    held = np.zeros(labels.shape[1], dtype=bool)
    held[list(unseen_classes)] = True
    unseen, seen = labels[:, held].any(axis=1), labels[:, ~held].any(axis=1)
    mixed = np.count_nonzero(unseen & seen)
    if mixed:
        raise GslbenchError(f"{mixed} {part} items are labelled with a seen and an unseen class "
                            f"at once (unseen classes {list(unseen_classes)}): the unseen-class "
                            "conditions need items of seen or of unseen classes")
    for name, count in (("seen", np.count_nonzero(~unseen)), ("unseen", np.count_nonzero(unseen))):
        if count == 0:
            raise GslbenchError(f"no {part} item of the {name} classes (unseen classes "
                                f"{list(unseen_classes)} of {labels.shape[1]}): the four "
                                "conditions need seen and unseen queries and database items")
    return unseen


def _prepared(search: Search, queries: np.ndarray, query_labels: np.ndarray,
              database_labels: np.ndarray) -> np.ndarray:
    """The queries checked against their labels and the database, prepared (`Search.prepare`)."""
    queries = np.asarray(queries)
    if queries.ndim != 2:
        raise GslbenchError(f"queries must be 2-D (nq, d), got shape {queries.shape}")
    if len(queries) != len(query_labels):
        raise GslbenchError(f"{len(queries)} queries but {len(query_labels)} query labels")
    if len(search) != len(database_labels):
        raise GslbenchError(f"{len(search)} codes but {len(database_labels)} database labels")
    return search.prepare(queries)


def evaluate_distances(
    distances: np.ndarray | DistanceBlocks,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    **options: Any,
) -> dict[str, Any]:
    """Rank and score query blocks whose distances come from a matrix or a callable, over the
    whole database: `score_databases` with one database, every item."""
    return score_databases(distances, query_labels, database_labels, (None,), **options)[0]


def score_databases(
    distances: np.ndarray | DistanceBlocks,
    query_labels: np.ndarray,
    database_labels: np.ndarray,
    databases: Sequence[np.ndarray | None],
    *,
    map_at: Sequence[int] = MAP_AT,
    precision_at: Sequence[int] = PRECISION_AT,
    recall_at: Sequence[int] = RECALL_AT,
    pr_points: int = metrics.PR_POINTS,
    whole_ranking: bool = True,
    block_size: int | None = None,
    workers: int = 2,
    query_neighbours: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Rank and score query blocks whose distances come from a matrix or a callable, against
    each of several databases made of the items' columns: each block's distances are computed
    once and ranked over every database.

    distances: ``(nq, n) float32``, or a callable ``(start, stop) -> (stop - start, n) float32``
        giving the distances of queries ``start:stop`` to every database item.
    query_labels: ``(nq, C) uint8``; database_labels: ``(n, C) uint8`` (multi-hot).
    databases: per database, the ``(n_j,) int`` indices of its items (ascending, so ties keep
        index order), or None for all n.
    map_at, precision_at, recall_at: the K of mAP@K, precision@K and recall@R; a K above a
        database's size is capped to it, the keys stay as asked.
    pr_points: recall levels of the PR curve (0: no curve).
    whole_ranking: rank the whole database, for ``map`` (mAP over the whole ranking) and the PR
        curve; False ranks only the top max(K) items and reports both as None (faster at scale).
    block_size: queries per block (default: about `BLOCK_PAIRS` / n, and at most nq / workers).
    workers: threads working on blocks at once.
    query_neighbours: ``(nq, k) int64`` database positions of each query's k true neighbours,
        for data without labels (`gslbench.evaluation.neighbours`; one database of every item):
        the relevance instead of the labels (then of no columns), and the keys
        ``one_recall_at`` and ``k_recall_at`` added.

    Returns per database ``{"map", "map_at", "precision_at", "recall_at", "pr_curve",
    "n_query", "n_db", "n_query_no_relevant", "n_query_no_relevant_at", "timings_s"}``;
    ``timings_s`` (the same for every database) has the ``distances``, ``ranking`` (relevance in
    rank order) and ``metrics`` seconds summed over blocks and databases (over all workers, so
    they can add up to more than the wall-clock ``total``).
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
    n_query, n_all = len(query_labels), len(database_labels)
    parts = [_Database.of(items, database_labels) for items in databases]
    if n_query == 0 or min(part.n for part in parts) == 0:
        raise GslbenchError(f"nothing to evaluate: {n_query} queries, "
                            f"{min(part.n for part in parts)} database items")
    if isinstance(distances, np.ndarray):
        if distances.shape != (n_query, n_all):
            raise GslbenchError(
                f"distances have shape {distances.shape}, expected ({n_query}, {n_all})"
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
        block_size = min(max(1, BLOCK_PAIRS // n_all), -(-n_query // workers))
    if block_size < 1:
        raise GslbenchError(f"block_size must be >= 1, got {block_size}")

    if query_neighbours is not None:
        if np.ndim(query_neighbours) != 2 or len(query_neighbours) != n_query \
                or tuple(databases) != (None,):
            raise GslbenchError(f"query_neighbours have shape {np.shape(query_neighbours)}, "
                                f"expected ({n_query}, k), for one database of every item")
        recall_at = sorted({*recall_at, query_neighbours.shape[1]})
    top = max(map_at + precision_at + recall_at, default=1)
    query_packed = metrics.pack_labels(query_labels)

    def run_block(start: int) -> tuple[list[metrics.QueryMetrics], np.ndarray, np.ndarray | None]:
        stop = min(start + block_size, n_query)
        clock = np.zeros(3)
        tick = time.perf_counter()
        block_distances = np.asarray(distance_block(start, stop))
        if block_distances.shape != (stop - start, n_all):
            raise GslbenchError(
                f"distance block has shape {block_distances.shape}, "
                f"expected ({stop - start}, {n_all})"
            )
        clock[0] = time.perf_counter() - tick
        block_packed = query_packed[start:stop]
        scored, nearest = [], None
        for part in parts:
            tick = time.perf_counter()
            part_distances = block_distances if part.items is None \
                else np.ascontiguousarray(block_distances[:, part.items])  # a[:, i] is F-order
            depth = part.n if whole_ranking else min(part.n, top)
            n_relevant = None
            if query_neighbours is not None:  # relevance by neighbours (one database: all)
                block_neighbours = query_neighbours[start:stop]
                nearest = neighbours.nearest_rank(part_distances, block_neighbours[:, 0])
                relevant = neighbours.neighbour_relevance(block_neighbours, part.n)
                n_relevant = np.full(stop - start, block_neighbours.shape[1], dtype=np.int64)
                relevant = (metrics.rank_relevance(part_distances, relevant) if depth == part.n
                            else np.take_along_axis(relevant, metrics.rank(part_distances, depth),
                                                    axis=1))
            elif depth == part.n:  # the relevance sorted along, no ranking materialised
                relevant = metrics.packed_relevance(block_packed, part.packed)
                relevant = metrics.rank_relevance(part_distances, relevant)
            else:
                ranking = metrics.rank(part_distances, depth)
                relevant = metrics.ranked_relevance(block_packed, part.packed, ranking)
            del part_distances
            clock[1] += time.perf_counter() - tick
            tick = time.perf_counter()
            if n_relevant is None:
                n_relevant = metrics.count_relevant(block_packed, part.patterns,
                                                    part.pattern_counts)
            scored.append(metrics.query_metrics(
                relevant, n_relevant, n_db=part.n, map_at=map_at, precision_at=precision_at,
                recall_at=recall_at,
                pr_points=pr_points if whole_ranking else 0,
            ))
            clock[2] += time.perf_counter() - tick
        return scored, clock, nearest

    starts = range(0, n_query, block_size)
    if workers == 1 or len(starts) == 1:
        results = [run_block(start) for start in starts]
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(starts), os.cpu_count() or 1)) as pool:
            results = list(pool.map(run_block, starts))
    clock = np.sum([clock for _, clock, _ in results], axis=0)
    timings = {
        "distances": float(clock[0]),
        "ranking": float(clock[1]),
        "metrics": float(clock[2]),
        "total": time.perf_counter() - start_time,
    }
    out = [{**metrics.summarize([blocks[j] for blocks, _, _ in results], n_db=part.n),
            "timings_s": dict(timings)} for j, part in enumerate(parts)]
    if query_neighbours is not None:
        ranks = np.concatenate([nearest for _, _, nearest in results])
        out[0].update(neighbours.neighbour_metrics(ranks, out[0]["recall_at"],
                                                   query_neighbours.shape[1]))
    return out


@dataclass(frozen=True)
class _Database:
    """One database of `score_databases`: its item indices (None: all), size, packed labels
    and their distinct patterns with counts (`metrics.label_patterns`)."""

    items: np.ndarray | None
    n: int
    packed: np.ndarray
    patterns: np.ndarray
    pattern_counts: np.ndarray

    @classmethod
    def of(cls, items: np.ndarray | None, database_labels: np.ndarray) -> _Database:
        """The database of `items` (indices into `database_labels`' rows, or None: all)."""
        labels = database_labels if items is None else database_labels[np.asarray(items)]
        packed = metrics.pack_labels(labels)
        return cls(None if items is None else np.asarray(items), len(labels), packed,
                   *metrics.label_patterns(packed))
