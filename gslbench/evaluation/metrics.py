"""Retrieval metrics as plain functions over arrays: ranking, relevance, mAP, P@K, recall@R, PR.

Definitions (every function below follows them; the tests check them against independent
references):

- **Relevance**: a database item is relevant to a query when they share at least one label. Labels
  are multi-hot ``uint8`` arrays ``(n, C)``, so single-label (one-hot) and multi-label data go
  through the same code: relevant = ``query_labels @ database_labels.T > 0``.
- **Ranking**: the database sorted by ascending distance to the query; ties are broken by database
  index (a stable sort on the distance: the order of the pair (distance, index)). ``-0.0`` equals
  ``0.0``; a NaN distance ranks after every number. Inner-product search hands in the distance
  ``-<q, x>`` (`gslbench.quantizers.search`): descending inner product, equal products by index.
- **AP** of one query over a ranking of length N (N = the whole database for ``map``, N = K for
  mAP@K): the mean, over the relevant items within the first N, of the precision at each such
  item's rank (precision at rank k = relevant items in the first k / k). A query with no relevant
  item within the first N has AP 0 and stays in the mean (its number is reported). So mAP@K divides
  each query's sum of precisions by the number of relevant items *retrieved in the top K*, not by
  all its relevant items: the convention of DQN and the DeepHash code bases.
- **precision@K**: relevant items in the first K / K, averaged over all queries.
- **recall@R**: relevant items in the first R / all relevant items of that query in the database,
  averaged over all queries; a query with no relevant item in the database has recall 0 and stays
  in the mean (it is counted as ``n_query_no_relevant``).
- **PR curve** over the whole ranking, ``points`` (default 101) recall levels r = 0, 0.01, ..., 1:
  the interpolated precision of a query at level r is the maximum precision at any rank whose
  recall is >= r (the VOC / 11-point interpolation, on a 101-point grid), i.e. the maximum of
  j / rank_j over its relevant items j >= ceil(r * n_relevant). The curve is the mean over the
  queries that have at least one relevant item in the database (the others have no recall).
- A K (or R) larger than the database is capped to the database size: precision@K then divides by
  the database size; the reported keys stay the K that was asked for.

The functions work on a block of b queries at a time, vectorised over the block (no per-query
Python loop), so a caller can bound memory by the block size. ``query_metrics`` computes every
per-query value of one block from its ranked relevance; ``summarize`` turns the blocks into the
metrics dict (``map``, ``map_at``, ``precision_at``, ``recall_at``, ``pr_curve``, counts).

Longer than 400 lines on purpose: the definitions above and the one vectorised implementation of
each stay in one file, so that a reader checks the code against the definition in one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from gslbench.lazy import lazy_import

faiss = lazy_import("faiss")

PR_POINTS = 101
# Above this fraction of the database, `rank` sorts everything instead of partitioning first.
_PARTIAL_FRACTION = 0.25


# ----------------------------------------------------------------------------- relevance


def pack_labels(labels: np.ndarray) -> np.ndarray:
    """Pack multi-hot labels into bit words: ``(n, C) uint8 -> (n, W) uint{8,16,32,64}``.

    Two rows share a label exactly when ``(a & b) != 0`` for some word. C <= 8, 16, 32 use one
    word of 1, 2, 4 bytes; larger C use ceil(C / 64) ``uint64`` words.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (n, C), got shape {labels.shape}")
    bits = np.packbits(labels != 0, axis=1, bitorder="little")
    n, nbytes = bits.shape
    width = next((w for w in (1, 2, 4) if nbytes <= w), 8)
    words = max(1, -(-nbytes // width))
    padded = np.zeros((n, words * width), dtype=np.uint8)
    padded[:, :nbytes] = bits
    return padded.view(np.dtype(f"u{width}"))


def relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    """Which database items are relevant to which query: ``(b, C), (n, C) uint8 -> (b, n) bool``.

    Relevant = at least one shared label (``query_labels @ database_labels.T > 0``).
    """
    _check_labels(query_labels, database_labels)
    return packed_relevance(pack_labels(query_labels), pack_labels(database_labels))


def packed_relevance(query_packed: np.ndarray, database_packed: np.ndarray) -> np.ndarray:
    """`relevance` of packed labels (`pack_labels`): ``(b, W), (n, W) -> (b, n) bool``."""
    out = np.zeros((len(query_packed), len(database_packed)), dtype=bool)
    for word in range(query_packed.shape[1]):
        out |= (query_packed[:, word, None] & database_packed[None, :, word]) != 0
    return out


def ranked_relevance(
    query_packed: np.ndarray, database_packed: np.ndarray, ranking: np.ndarray
) -> np.ndarray:
    """Relevance in rank order: ``(b, W), (n, W) packed, (b, K) int -> (b, K) bool``.

    ``out[i, k]`` says whether database item ``ranking[i, k]`` is relevant to query i. The packed
    arrays come from `pack_labels`; `ranking` from `rank`.
    """
    out = None
    for word in range(query_packed.shape[1]):
        shared = database_packed[:, word][ranking] & query_packed[:, word, None]
        hit = shared != 0
        out = hit if out is None else np.logical_or(out, hit, out=out)
    return out


def label_patterns(database_packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct label rows of the database and how often each occurs.

    ``(n, W) packed -> (U, W) packed, (U,) int64``; feed both to `count_relevant`.
    """
    if database_packed.shape[1] == 1:  # one word: a plain 1-D unique is much faster
        patterns, counts = np.unique(database_packed[:, 0], return_counts=True)
        return patterns[:, None], counts.astype(np.int64)
    patterns, counts = np.unique(database_packed, axis=0, return_counts=True)
    return patterns, counts.astype(np.int64)


def count_relevant(
    query_packed: np.ndarray, patterns: np.ndarray, pattern_counts: np.ndarray
) -> np.ndarray:
    """Number of relevant database items per query: ``(b, W), (U, W), (U,) -> (b,) int64``.

    `patterns` and `pattern_counts` come from `label_patterns` (or pass the packed database with
    counts of ones). Costs ``b * U``, with U the number of distinct label rows: small in practice.
    """
    shares = np.zeros((len(query_packed), len(patterns)), dtype=bool)
    for word in range(query_packed.shape[1]):
        shares |= (query_packed[:, word, None] & patterns[None, :, word]) != 0
    return shares.astype(np.int64) @ np.asarray(pattern_counts, dtype=np.int64)


def _check_labels(query_labels: np.ndarray, database_labels: np.ndarray) -> None:
    if np.ndim(query_labels) != 2 or np.ndim(database_labels) != 2:
        raise ValueError("labels must be 2-D multi-hot arrays (n, C)")
    if np.shape(query_labels)[1] != np.shape(database_labels)[1]:
        raise ValueError(
            f"query labels have {np.shape(query_labels)[1]} classes, "
            f"database labels {np.shape(database_labels)[1]}"
        )


# ----------------------------------------------------------------------------- ranking


def _order_keys(distances: np.ndarray) -> np.ndarray:
    """``(b, n) float32 -> (b, n) uint32`` keys whose unsigned order is the distances' order."""
    distances = np.asarray(distances, dtype=np.float32) + np.float32(0.0)  # -0.0 -> +0.0
    bits = distances.view(np.int32)
    # negatives: flip every bit (larger magnitude -> smaller key); others: set the sign bit.
    keys = bits >> 31  # -1 (all bits) for negatives, 0 otherwise
    keys |= np.int32(-(2**31))
    keys ^= bits
    return keys.view(np.uint32)


def rank(distances: np.ndarray, top: int | None = None) -> np.ndarray:
    """Rank the database for each query: ``(b, n) float32 -> (b, top) int64`` database indices.

    Ascending distance, ties by database index (see the module docstring); ``top=None`` (or
    ``top >= n``) ranks the whole database.

    The whole ranking is an LSD radix sort of the distances' order keys (their float bits) in two
    stable 16-bit passes of numpy's radix argsort: stable, so ties keep index order. A short top
    is a partial selection: the top-th smallest key of each row (np.partition), then every item
    whose key is at most that one (so all the items tied at the boundary are there) sorted on the
    combined 64-bit key (key, index) and cut to `top`.
    """
    distances = np.asarray(distances)
    if distances.ndim != 2:
        raise ValueError(f"distances must be 2-D (b, n), got shape {distances.shape}")
    b, n = distances.shape
    if n >= 2**32:
        raise ValueError("rank supports databases of fewer than 2**32 items")
    if top is None or top >= n:
        top = n
    if top < 0:
        raise ValueError(f"top must be >= 0, got {top}")
    if top == 0 or b == 0:
        return np.zeros((b, top), dtype=np.int64)
    keys = _order_keys(distances)
    if top > _PARTIAL_FRACTION * n:
        order = _radix_order(keys)
        return order[:, :top] if top < n else order
    return _partial_order(keys, top)


def rank_relevance(distances: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """Relevance in rank order over the whole database, without the ranking:
    ``(b, n) float32 distances, (b, n) bool relevance in database order -> (b, n) bool``,
    ``out[i, k] = relevant[i, rank(distances)[i, k]]`` (ascending distance, ties by index).

    The metrics need only this, so the sort carries the relevance bit instead of the indices: an
    LSD radix sort of the order keys minus each row's smallest (the float bits themselves when no
    distance is negative), row by row (the arrays stay in cache), in two stable passes: numpy's
    radix argsort on the low 16 bits, then faiss's counting sort (`faiss.bucket_sort`) on the
    rest, which takes few values, with the relevance bit packed above it. Both passes are stable,
    so ties keep index order. Keys spanning 2**31 or more (distances from -inf to inf, NaN) go
    through `rank`.
    """
    distances = np.asarray(distances)
    relevant = np.asarray(relevant, dtype=bool)
    if distances.ndim != 2 or relevant.shape != distances.shape:
        raise ValueError(f"distances {distances.shape} and relevance {relevant.shape} must be "
                         "the same (b, n) shape")
    if distances.size == 0:
        return relevant.copy()
    bits = np.ascontiguousarray(distances, dtype=np.float32).view(np.int32)
    lowest = bits.min(axis=1, keepdims=True)
    if lowest.min() >= 0:  # no negative distance, no -0.0: the float bits are in order already
        keys = (bits - lowest).view(np.uint32)
    else:
        keys = _order_keys(distances)
        keys -= keys.min(axis=1, keepdims=True)
    if keys.max() >= 2**31:
        return np.take_along_axis(relevant, rank(distances), axis=1)
    halves = keys.view(np.uint16)  # little-endian (numpy on every platform faiss supports)
    low, high = (halves[:, 0::2], halves[:, 1::2]) if np.little_endian else (halves[:, 1::2],
                                                                            halves[:, 0::2])
    bit, rest = np.uint16(15), np.uint16(0x7FFF)
    buckets = int(high.max()) + 1
    out = np.empty(relevant.shape, dtype=bool)
    for target, row_low, row_high, row_relevant in zip(out, low, high, relevant, strict=True):
        packed = row_high | (row_relevant.view(np.uint8).astype(np.uint16) << bit)
        packed = packed.take(np.argsort(row_low, kind="stable"))
        # the high parts take few values: faiss's counting sort (stable) beats numpy's there
        _, order = faiss.bucket_sort((packed & rest).astype(np.uint64), buckets)
        target[:] = packed.take(order) >> bit
    return out


def _radix_order(keys: np.ndarray) -> np.ndarray:
    """``(b, n) uint32 -> (b, n) int64``: stable argsort of each row, two 16-bit radix passes.

    Gathers go through flat indices (``row * n + column``): 1-D takes are much faster than
    take_along_axis.
    """
    b, n = keys.shape
    row_base = (np.arange(b, dtype=np.int64) * n)[:, None]
    order = np.argsort(keys.astype(np.uint16), axis=1, kind="stable")  # low 16 bits
    order += row_base
    high = np.take((keys >> np.uint32(16)).astype(np.uint16).ravel(), order)
    second = np.argsort(high, axis=1, kind="stable")  # high 16 bits, in low-bit order
    del high
    second += row_base
    order = np.take(order.ravel(), second)
    order -= row_base
    return order


def _partial_order(keys: np.ndarray, top: int) -> np.ndarray:
    """``(b, n) uint32 -> (b, top) int64``: the first `top` of each row by (key, index)."""
    b, n = keys.shape
    boundary = np.partition(keys, top - 1, axis=1)[:, top - 1 : top]
    rows, columns = np.nonzero(keys <= boundary)  # >= top per row: the boundary ties included
    counts = np.bincount(rows, minlength=b)
    starts = np.zeros(b, dtype=np.int64)
    np.cumsum(counts[:-1], out=starts[1:])
    combined = keys[rows, columns].astype(np.uint64) << np.uint64(32)
    combined |= columns.astype(np.uint64)
    candidates = np.full((b, counts.max()), np.iinfo(np.uint64).max, dtype=np.uint64)
    candidates[rows, np.arange(len(rows)) - starts[rows]] = combined
    candidates.sort(axis=1)
    return (candidates[:, :top] & np.uint64(0xFFFFFFFF)).astype(np.int64)


# ----------------------------------------------------------------------------- per-query metrics


@dataclass
class QueryMetrics:
    """Per-query metrics of one block of b queries (every array has b rows).

    ap: AP over the whole ranking ``(b,) float64``, or None when only a top was ranked.
    ap_at, n_found_at: for each mAP@K, AP@K ``(b,) float64`` and relevant items in the top K
        ``(b,) int64``.
    precision_at, recall_at: ``{K: (b,) float64}``.
    n_relevant: relevant items in the whole database ``(b,) int64``.
    pr_precision: interpolated precision at the PR recall levels ``(b, points) float64`` (0 for
        queries without relevant items), or None.
    """

    n_relevant: np.ndarray
    ap: np.ndarray | None = None
    ap_at: dict[int, np.ndarray] = field(default_factory=dict)
    n_found_at: dict[int, np.ndarray] = field(default_factory=dict)
    precision_at: dict[int, np.ndarray] = field(default_factory=dict)
    recall_at: dict[int, np.ndarray] = field(default_factory=dict)
    pr_precision: np.ndarray | None = None


@dataclass
class _Hits:
    """The relevant items of a block in rank order, flattened row by row."""

    starts: np.ndarray  # (b,) int64: offset of each row's first relevant item
    counts: np.ndarray  # (b,) int64: relevant items in the ranking
    precision: np.ndarray  # (nnz,) float64: precision at each relevant item's rank


def _hits(ranked_relevance: np.ndarray) -> _Hits:
    b, depth = ranked_relevance.shape
    flat = np.flatnonzero(ranked_relevance)  # row-major: row by row, rank order within a row
    bounds = np.searchsorted(flat, np.arange(b + 1, dtype=np.int64) * depth)  # flat is sorted
    starts, counts = bounds[:-1], np.diff(bounds)
    # The g-th hit overall, in row r at column c, is the j-th of its row: j = g - starts[r] + 1,
    # and its rank is c + 1 = flat[g] - r * depth + 1; precision there = j / rank.
    found = np.arange(1, len(flat) + 1, dtype=np.float64)
    found -= np.repeat(starts.astype(np.float64), counts)
    ranks = flat.astype(np.float64)
    ranks -= np.repeat(np.arange(b, dtype=np.float64) * depth - 1.0, counts)
    found /= ranks
    return _Hits(starts, counts, found)


def _ap_from_hits(hits: _Hits, lengths: np.ndarray) -> np.ndarray:
    """Mean precision over the first `lengths` relevant items of each row (0 where none)."""
    values = np.append(hits.precision, 0.0)
    bounds = np.empty(2 * len(lengths), dtype=np.int64)
    bounds[0::2] = hits.starts
    bounds[1::2] = hits.starts + lengths
    sums = np.add.reduceat(values, bounds)[0::2] if len(lengths) else np.zeros(0)
    return np.where(lengths > 0, sums / np.maximum(lengths, 1), 0.0)


def _pr_from_hits(hits: _Hits, n_relevant: np.ndarray, points: int) -> np.ndarray:
    """Interpolated precision at recall levels i / (points - 1): ``(b, points) float64``."""
    out = np.zeros((len(n_relevant), points), dtype=np.float64)
    valid = np.flatnonzero(n_relevant > 0)
    if len(valid) == 0:
        return out
    if np.any(hits.counts[valid] != n_relevant[valid]):
        raise ValueError("the PR curve needs the whole ranking (every relevant item found)")
    levels = np.arange(points, dtype=np.int64)
    n_rel = n_relevant[valid, None]
    # j-th relevant item with j >= ceil(r * n_relevant), at least the first: exact integers.
    first = np.maximum(-((-levels[None, :] * n_rel) // (points - 1)), 1)
    bounds = (hits.starts[valid, None] + first - 1).ravel()
    # Segments between consecutive bounds tile each row's relevant items; an empty segment
    # yields the next element of the same row, which the suffix maximum covers anyway.
    segment_max = np.maximum.reduceat(hits.precision, bounds).reshape(len(valid), points)
    out[valid] = np.maximum.accumulate(segment_max[:, ::-1], axis=1)[:, ::-1]
    return out


def positive_ints(values: Sequence[int], name: str) -> list[int]:
    """Validate a list of K (positive integers); drop repeats, keep the order asked."""
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} values must be positive integers, got {value!r}")
        if int(value) not in out:
            out.append(int(value))
    return out


def query_metrics(
    ranked_relevance: np.ndarray,
    n_relevant: np.ndarray,
    *,
    n_db: int | None = None,
    map_at: Sequence[int] = (),
    precision_at: Sequence[int] = (),
    recall_at: Sequence[int] = (),
    pr_points: int = PR_POINTS,
) -> QueryMetrics:
    """Every per-query metric of one block, from its relevance in rank order.

    ranked_relevance: ``(b, N) bool``, relevance of the first N ranked items (`ranked_relevance`).
    n_relevant: ``(b,) int``, relevant items of each query in the whole database
        (`count_relevant`).
    n_db: database size (default N). When N == n_db the ranking is whole: AP over the whole
        ranking and the PR curve (``pr_points`` levels, 0 for none) are computed too. Every K
        is capped to n_db and must then be <= N.
    """
    ranked_relevance = np.asarray(ranked_relevance, dtype=bool)
    n_relevant = np.asarray(n_relevant, dtype=np.int64)
    b, depth = ranked_relevance.shape
    n_db = depth if n_db is None else int(n_db)
    if n_relevant.shape != (b,):
        raise ValueError(f"n_relevant must have shape ({b},), got {n_relevant.shape}")
    whole = depth == n_db

    def capped(k: int) -> int:
        k = min(k, n_db)
        if k > depth:
            raise ValueError(f"K={k} is deeper than the {depth} ranked items")
        return k

    def found(k: int) -> np.ndarray:
        return np.count_nonzero(ranked_relevance[:, :k], axis=1).astype(np.int64)

    hits = _hits(ranked_relevance)
    result = QueryMetrics(n_relevant=n_relevant)
    if whole:
        result.ap = _ap_from_hits(hits, hits.counts)
        if pr_points:
            if pr_points < 2:
                raise ValueError(f"pr_points must be 0 or >= 2, got {pr_points}")
            result.pr_precision = _pr_from_hits(hits, n_relevant, pr_points)
    for k in positive_ints(map_at, "map_at"):
        n_found = found(capped(k))
        result.n_found_at[k] = n_found
        result.ap_at[k] = _ap_from_hits(hits, n_found)
    for k in positive_ints(precision_at, "precision_at"):
        result.precision_at[k] = found(capped(k)) / capped(k)
    for r in positive_ints(recall_at, "recall_at"):
        result.recall_at[r] = np.where(
            n_relevant > 0, found(capped(r)) / np.maximum(n_relevant, 1), 0.0
        )
    return result


def average_precision(ranked_relevance: np.ndarray) -> np.ndarray:
    """AP of each query over the ranking given: ``(b, N) bool -> (b,) float64``.

    Pass the whole ranking for AP, or its first K columns for AP@K (divides by the relevant items
    found in those K; 0 when there is none).
    """
    hits = _hits(np.asarray(ranked_relevance, dtype=bool))
    return _ap_from_hits(hits, hits.counts)


def pr_curve(
    ranked_relevance: np.ndarray, points: int = PR_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """Interpolated PR curve over whole rankings: ``(b, n) bool -> (points,), (points,) float64``.

    Returns (recall levels, mean interpolated precision over the queries with relevant items).
    """
    ranked_relevance = np.asarray(ranked_relevance, dtype=bool)
    n_relevant = np.count_nonzero(ranked_relevance, axis=1).astype(np.int64)
    block = query_metrics(ranked_relevance, n_relevant, pr_points=points)
    curve = summarize([block])["pr_curve"]
    return np.array([p[0] for p in curve]), np.array([p[1] for p in curve])


# ----------------------------------------------------------------------------- summary


def summarize(blocks: Sequence[QueryMetrics], n_db: int | None = None) -> dict:
    """Average the per-query metrics of all blocks into the metrics dict (plain Python values).

    Keys: ``map`` (None when only a top was ranked), ``map_at``, ``precision_at``, ``recall_at``
    (``{str(K): float}``), ``pr_curve`` (``[[recall, precision], ...]`` or None), ``n_query``,
    ``n_db`` (when given), ``n_query_no_relevant`` (no relevant item in the whole database) and
    ``n_query_no_relevant_at`` (``{str(K): count}``, none in the top K of mAP@K).
    Concatenating before averaging makes the result independent of how the queries were blocked.
    """
    if not blocks:
        raise ValueError("no query blocks to summarize")

    def cat(get) -> np.ndarray:
        return np.concatenate([get(block) for block in blocks])

    def mean(values: np.ndarray) -> float:
        return float(values.mean()) if len(values) else 0.0

    first = blocks[0]
    n_relevant = cat(lambda block: block.n_relevant)
    out: dict = {
        "map": None if first.ap is None else mean(cat(lambda block: block.ap)),
        "map_at": {str(k): mean(cat(lambda block, k=k: block.ap_at[k])) for k in first.ap_at},
        "precision_at": {
            str(k): mean(cat(lambda block, k=k: block.precision_at[k])) for k in first.precision_at
        },
        "recall_at": {
            str(k): mean(cat(lambda block, k=k: block.recall_at[k])) for k in first.recall_at
        },
        "pr_curve": None,
        "n_query": int(len(n_relevant)),
    }
    if n_db is not None:
        out["n_db"] = int(n_db)
    out["n_query_no_relevant"] = int(np.count_nonzero(n_relevant == 0))
    out["n_query_no_relevant_at"] = {
        str(k): int(np.count_nonzero(cat(lambda block, k=k: block.n_found_at[k]) == 0))
        for k in first.n_found_at
    }
    if first.pr_precision is not None:
        precision = cat(lambda block: block.pr_precision)[n_relevant > 0]
        points = precision.shape[1]
        curve = precision.mean(axis=0) if len(precision) else np.zeros(points)
        out["pr_curve"] = [[i / (points - 1), float(p)] for i, p in enumerate(curve)]
    return out
