"""The nearest-neighbour track's metrics, for data sets related by neighbours instead of labels
(`gslbench.data.neighbours`): a query's relevant database items are its k true nearest
neighbours, given as (nq, k) positions in the database, nearest first.

- **Relevance**: database item j is relevant to query i when j is among its k true neighbours;
  every query has k relevant items. mAP, precision@K and recall@R (`metrics`) follow from it.
- **1-recall@R** (faiss, QINCo): the share of queries whose true nearest neighbour (the first of
  its k) is among the first R of the ranking (the ranking of `metrics`: ascending distance, ties
  by database index).
- **k-recall@k** (ann-benchmarks' "recall"): the share of the true k nearest among the first k
  of the ranking, averaged over the queries: recall@k under this relevance.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ONE_RECALL_AT = (1, 10, 100)
NEIGHBOUR_AT = ("one_recall_at", "k_recall_at")  # metrics.json's keys of the track: {str(R): share}


def neighbour_relevance(neighbours: np.ndarray, n_db: int) -> np.ndarray:
    """(b, k) int positions in a database of `n_db` items -> (b, n_db) bool, True at each
    query's neighbours."""
    relevant = np.zeros((len(neighbours), n_db), dtype=bool)
    np.put_along_axis(relevant, np.asarray(neighbours, dtype=np.int64), True, axis=1)
    return relevant


def nearest_rank(distances: np.ndarray, nearest: np.ndarray) -> np.ndarray:
    """The 0-based rank of each query's true nearest neighbour in its ranking: (b, n) distances,
    (b,) positions -> (b,) int64, the items ranked before it (closer, or as close with a smaller
    index)."""
    rows = np.arange(len(nearest))
    own = distances[rows, nearest][:, None]
    before = np.arange(distances.shape[1])[None, :] < nearest[:, None]
    return ((distances < own) | ((distances == own) & before)).sum(axis=1).astype(np.int64)


def neighbour_metrics(ranks: np.ndarray, recall_at: dict[str, float], k: int,
                      one_recall_at: Sequence[int] = ONE_RECALL_AT) -> dict:
    """metrics.json's keys of the track: `one_recall_at` {str(R): share of queries whose nearest
    neighbour's rank (`nearest_rank`, (nq,) int) is below R} and `k_recall_at` {str(k): recall@k,
    taken from `recall_at` (`metrics.summarize`'s, which must hold k)}."""
    return {"one_recall_at": {str(r): float(np.mean(ranks < r)) for r in one_recall_at},
            "k_recall_at": {str(k): recall_at[str(k)]}}
