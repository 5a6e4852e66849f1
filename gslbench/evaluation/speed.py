"""`gslbench search-bench`: what a run's codes buy at search time (docs/design.md, section 6).

For a run, from its codes file only (`gslbench.codes`, checked like evaluate's; its database
codes and representations, query representations and quantizer), it builds the faiss index of the codes
(`gslbench.quantizers.search.faiss_index`: the learned codebooks copied in, the codes added as
they are) and the exact float reference (`IndexFlatL2` / `IndexFlatIP` over the database
representations), and measures for each, by `metric` (l2 or ip):

- **QPS batched**: queries per second of one `index.search(all queries, k)`;
- **QPS at batch 1**: queries per second of `index.search(one query, k)` over the first
  `single_queries` queries, one at a time; both the best of `repeats` timings after a warm-up,
  with the faiss threads given (recorded);
- **bytes per vector**: `index.sa_code_size()`, what one database vector costs in the index, and
  `index_bytes`, the whole serialized index (codebooks, rotation included);
- **recall of the true neighbours** (the ann-benchmarks view): the true neighbours are the exact
  k nearest of the run's float database representations to its float query representations by
  the metric, ties by database index (`exact_neighbours`). `recall_at[R]` = mean over queries of
  |returned top R ∩ true top R| / R (ann-benchmarks' k-NN recall with k = R);
  `nn_recall_at[R]` = the fraction of queries whose true nearest neighbour is in the returned
  top R (faiss's 1-recall@R).

For a run of the nearest-neighbour track (a data set related by neighbours: its codes file holds
each query's k true neighbours in the data set's own vectors, `gslbench.data.neighbours`), each
index also gets the track's metrics against those neighbours, as evaluate defines them
(`gslbench.evaluation.neighbours`, ranking in faiss's order): `one_recall_at[R]`, the share of
queries whose true nearest neighbour is among the index's first R (QPS against
`one_recall_at["10"]` is the track's speed curve), and `k_recall_at[k]`, the share of the k
true neighbours among the first k.

mAP is evaluate's (metrics.json); the report puts the two side by side. Results go to
RUN/search.json (RUN/search-ip.json for ip; search-database[-ip].json for the codes of codebooks
fitted on the database, `--codebooks database`), with the threads, versions, the fit
(`codebooks`) and the codes file's sha256.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.codes import check_codes_use, check_encoded
from gslbench.errors import GslbenchError
from gslbench.evaluation import metrics
from gslbench.evaluation.record import check_search_record
from gslbench.evaluation.scoring import BLOCK_PAIRS, Search
from gslbench.lazy import lazy_import
from gslbench.quantizers import Identity
from gslbench.quantizers.search import check_mode, faiss_index, make_search
from gslbench.storage import package_versions, read_json, write_json
from gslbench.threads import limit_threads, thread_counts

faiss = lazy_import("faiss")
log = logging.getLogger(__name__)

RECALL_AT = (1, 10, 100)
SINGLE_QUERIES = 1000
REPEATS = 3


def exact_neighbours(queries: np.ndarray, database: np.ndarray, metric: str,
                     k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact k nearest database vectors of each query: ``(nq, d), (n, d) float32 ->
    (nq, k) int64 indices, (nq, k) float32 distances`` (squared L2, or -inner product for ip),
    nearest first, ties by database index; in blocks of queries (bounded memory)."""
    identity = Identity(database.shape[1])
    return search_top(make_search(identity, identity.encode(database), metric=metric), queries,
                      min(k, len(database)))


def search_top(search: Search, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first k of each query's ranking by `search` (ascending distance, ties by database
    index: `metrics.rank`): ``(nq, d) float32`` queries -> (nq, k) int64 positions in the
    searched codes and their (nq, k) float32 distances, in blocks of queries of about
    `BLOCK_PAIRS` distances (bounded memory)."""
    prepared = search.prepare(queries)
    block = max(1, BLOCK_PAIRS // max(len(search), 1))
    indices, distances = [], []
    for start in range(0, len(queries), block):
        block_distances = search.distances(prepared[start : start + block])
        ranking = metrics.rank(block_distances, k)
        indices.append(ranking)
        distances.append(np.take_along_axis(block_distances, ranking, axis=1))
    return np.concatenate(indices), np.concatenate(distances)


def neighbour_recalls(found: np.ndarray, truth: np.ndarray,
                      recall_at: Sequence[int]) -> tuple[dict[str, float], dict[str, float]]:
    """``(nq, >= R) found, (nq, >= R) true`` neighbour indices -> (recall_at, nn_recall_at), each
    ``{str(R): float}`` (the module docstring's definitions)."""
    recall, nn_recall = {}, {}
    for r in recall_at:
        found_r, truth_r = found[:, :r], truth[:, :r]
        shared = (found_r[:, :, None] == truth_r[:, None, :]).any(axis=2).sum(axis=1)
        recall[str(r)] = float(np.mean(shared / truth_r.shape[1]))
        nn_recall[str(r)] = float(np.mean((found_r == truth[:, :1]).any(axis=1)))
    return recall, nn_recall


def track_recalls(found: np.ndarray, neighbours: np.ndarray,
                  recall_at: Sequence[int]) -> dict[str, dict[str, float]]:
    """The neighbour track's recalls of one index: ``(nq, >= max(R, k)) found`` indices and the
    data set's ``(nq, k)`` true neighbours (nearest first) -> ``{"one_recall_at": {str(R): share},
    "k_recall_at": {str(k): share}}`` (the module docstring)."""
    k = neighbours.shape[1]
    shared, nearest = neighbour_recalls(found, neighbours, sorted({*recall_at, k}))
    return {"one_recall_at": {str(r): nearest[str(r)] for r in recall_at},
            "k_recall_at": {str(k): shared[str(k)]}}


def index_name(index: faiss.Index) -> str:
    """`IndexPQ`, `IndexPreTransform(OPQMatrix, IndexPQ)`, ...: what the index is."""
    if isinstance(index, faiss.IndexPreTransform):
        inner = type(faiss.downcast_index(index.index)).__name__
        return f"IndexPreTransform(OPQMatrix, {inner})"
    return type(index).__name__


def measure_index(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, k: int,
                  recall_at: Sequence[int], single_queries: int, repeats: int,
                  neighbours: np.ndarray | None = None) -> dict:
    """QPS (batched and at batch 1), bytes per vector, recalls of one index (module docstring).

    queries: (nq, d) float32; truth: (nq, >= max(recall_at)) int64 true neighbours of the
    representations; neighbours: the neighbour track's (nq, k) int64 true neighbours in the data
    set's vectors (`track_recalls`), or None."""
    index.search(queries[:16], k)  # warm-up: threads, pages
    batched = []
    for _ in range(repeats):
        start = time.perf_counter()
        _, found = index.search(queries, k)
        batched.append(time.perf_counter() - start)
    singles = queries[:single_queries]
    one_by_one = []
    for _ in range(repeats):
        start = time.perf_counter()
        for row in range(len(singles)):
            index.search(singles[row : row + 1], k)
        one_by_one.append(time.perf_counter() - start)
    recall, nn_recall = neighbour_recalls(found, truth, recall_at)
    return {
        "index": index_name(index),
        "bytes_per_vector": int(index.sa_code_size()),
        "index_bytes": int(faiss.serialize_index(index).nbytes),
        "qps_batched": len(queries) / min(batched),
        "qps_batch1": len(singles) / min(one_by_one),
        "seconds_batched": min(batched),
        "seconds_batch1": min(one_by_one),
        "batch1_queries": len(singles),
        "recall_at": recall,
        "nn_recall_at": nn_recall,
        **(track_recalls(found, neighbours, recall_at) if neighbours is not None else {}),
    }


def search_bench_run(run: str | Path, results_dir: str | Path, *, metric: str = "l2",
                     k: int = 100, recall_at: Sequence[int] = RECALL_AT,
                     single_queries: int = SINGLE_QUERIES, repeats: int = REPEATS,
                     threads: int | None = None, force: bool = False,
                     codebooks: str = "train") -> Path:
    """Measure a run's codes of the fit `codebooks` as a faiss index against the exact float
    search; write RUN/search.json (search-ip.json for ip, search-database*.json for the database
    fit) and return its path (the module docstring)."""
    check_mode("adc", metric)
    recall_at = metrics.positive_ints(recall_at, "recall_at") if recall_at else []
    for name, value in (("--k", k), ("--single-queries", single_queries), ("--repeats", repeats),
                        ("--threads", threads or 1)):
        if value < 1:
            raise GslbenchError(f"{name} {value}: must be a positive integer")
    if recall_at and max(recall_at) > k:
        raise GslbenchError(f"--recall-at {max(recall_at)} is above --k {k}")
    run_dir = layout.resolve_run(results_dir, run)
    out = run_dir.search_file(metric, codebooks)
    codes = check_encoded(run_dir, codebooks)
    codes_sha256 = check_codes_use(run_dir, codes, codebooks)
    if out.is_file() and not force:
        try:
            record = read_json(out)
            check_search_record(record, out, run_dir.run_id)
            if record.get("codes_sha256") != codes_sha256:
                raise GslbenchError(f"{out}: made from other codes than "
                                    f"{run_dir.codes_file(codebooks).name} as it is now")
            return out
        except GslbenchError as exc:  # not bound to these codes: it does not count
            log.warning("%s; measuring run %s again", exc, run_dir.run_id)
    database = codes.database
    k = min(k, len(database))
    neighbours = codes.query_neighbours
    if neighbours is not None and neighbours.shape[1] > k:
        raise GslbenchError(f"--k {k} is below the {neighbours.shape[1]} true neighbours of "
                            "k-recall@k")
    truth, _ = exact_neighbours(codes.queries, database, metric, k)
    indexes = {"codes": faiss_index(codes.quantizer, codes.codes, metric)}
    if not isinstance(codes.quantizer, Identity):  # a float run's codes are the reference
        indexes["float"] = faiss_index(Identity(codes.quantizer.dim),
                                       Identity(codes.quantizer.dim).encode(database), metric)
    with limit_threads(threads or faiss.omp_get_max_threads()):
        measured = {name: measure_index(index, codes.queries, truth, k, recall_at,
                                        single_queries, repeats, neighbours)
                    for name, index in indexes.items()}
        used_threads = thread_counts()
    attrs = codes.attrs
    write_json(out, {
        "run": str(attrs["run"]), "label": str(attrs["label"]), "metric": metric, "k": k,
        "codebooks": codebooks,
        "n_query": len(codes.queries), "n_db": len(database), "dim": codes.quantizer.dim,
        "indexes": measured, "threads": used_threads, "repeats": repeats,
        "config": json.loads(attrs["config"]), "versions": package_versions(),
        "codes_sha256": codes_sha256,
    })
    return out
