"""Each data set's primary metric: the one its tuning objective (`gslbench.bench.tune`), its
choices (`gslbench.bench.choices`) and the report's verdicts (`gslbench.report.stats`, the
answer table) use.

- A data set with labels: mAP (a metrics record's `map`, over the whole ranking; the unseen
  protocol's primary condition's), as before.
- A data set whose items are related by their true neighbours (`gslbench.data.neighbours`:
  `glove-6b-50d`, ann-benchmarks files): 1-recall@10, the share of queries whose true nearest
  neighbour is among the first 10 (faiss's and QINCo's measure, and search-bench's axis). Its
  records rank only the top of the database and hold no whole-ranking `map`.

The kind is read from the scores themselves (a record of the track holds `one_recall_at`), so a
record, `scoring.evaluate`'s dict and a report row all name their metric the same way. This module
imports nothing heavy (the report uses it).
"""

from __future__ import annotations

from typing import Any

LABELS = "map"  # the primary metric of a data set with labels
NEIGHBOURS = "one_recall_at_10"  # ... and of one related by neighbours
TITLES = {LABELS: "mAP", NEIGHBOURS: "1-recall@10"}


def primary_metric(scores: dict[str, Any]) -> str:
    """The name of the primary metric of `scores` (a metrics record or `scoring.evaluate`'s
    dict): `NEIGHBOURS` when it holds the neighbour track's `one_recall_at`, else `LABELS`."""
    return NEIGHBOURS if scores.get("one_recall_at") else LABELS


def primary_score(scores: dict[str, Any]) -> float:
    """The value of `primary_metric` in `scores`: its 1-recall@10 or its `map`, a fraction."""
    if primary_metric(scores) == NEIGHBOURS:
        return float(scores["one_recall_at"]["10"])
    return float(scores["map"])
