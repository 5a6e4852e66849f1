"""Time `gslbench.evaluation.scoring.evaluate` against faiss's top-K search, a per-query baseline
and a floor (not a test).

Two protocol shapes with random data and random 32-bit codes of gslbench's PQ (4 codebooks x 256):

- NUS-WIDE-21: 2,100 queries x 193,734 database items, 21 labels (multi-label), mAP@5000;
- CIFAR-10: 1,000 x 54,000, 10 classes (single-label), mAP@all.

Timed in the same run:

- `evaluate` (blocks of queries, the relevance radix-sorted along the distances, vectorised
  metrics, a thread per core), with every metric (mAP over the whole ranking, mAP@K, P@K, R@R,
  the PR curve);
- `evaluate` as it was before (the whole ranking materialised by `metrics.rank`, then the
  relevance gathered by `metrics.ranked_relevance`), the same blocks and threads;
- faiss's own top-K search on the same codes: `IndexPQ.search(queries, K)` (K = the protocol's
  mAP@K, or the database), the same threads; the metrics of its ranking (mAP@K, P@K, R@R) must
  equal evaluate's on every query where both distance computations agree on the order: the same
  top K items in the same order (faiss sums its float32 tables in another order than gslbench, so
  near-ties can swap, and tied items are ordered by index here, by faiss's heap there; how many
  queries that leaves is printed);
- the per-query baseline of the deep-hashing code bases: for each query, a stable np.argsort of
  its distance row and the cumulative precision of its relevance, one query at a time;
- the floor: the ADC distance matrix plus one np.argsort of it, block by block, no metrics.

Every metric of `evaluate` must equal the baseline's (to 1e-10; sums run in another order).
Targets: `evaluate` with every metric no slower than faiss's bare top-K search at the NUS-WIDE
shape; >= 3x faster than the baseline there, never slower at the CIFAR shape; peak memory of
`evaluate` at the NUS-WIDE shape < 2 GiB.

    python benchmarks/eval_speed.py [--quick] [--workers 2] [--rounds 2] [--shape nuswide cifar10]
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import faiss
import numpy as np

from gslbench.evaluation import metrics, scoring
from gslbench.quantizers import AdcSearch, make_quantizer

SHAPES = {
    # name: (queries, database, classes, multilabel, map_at)
    "nuswide": (2100, 193734, 21, True, (5000,)),
    "cifar10": (1000, 54000, 10, False, (54000,)),
}
QUICK = {"nuswide": (300, 20000), "cifar10": (200, 6000)}
PRECISION_AT = (10, 100, 1000)
RECALL_AT = (1, 10, 100, 1000)
PR_POINTS = 101


def random_labels(rng: np.random.Generator, n: int, n_classes: int, multilabel: bool) -> np.ndarray:
    """Multi-hot labels: one class each, or NUS-WIDE-like skewed concepts (>= 1 per item)."""
    if not multilabel:
        return np.eye(n_classes, dtype=np.uint8)[rng.integers(0, n_classes, n)]
    # Concept frequencies from ~3% to ~35% (NUS-WIDE-21: sky, clouds, person ... are common);
    # about 2 labels per image on average.
    frequency = 0.35 * (np.arange(1, n_classes + 1) ** -0.8)
    labels = (rng.random((n, n_classes)) < frequency).astype(np.uint8)
    empty = labels.sum(axis=1) == 0
    labels[empty, rng.choice(n_classes, empty.sum(), p=frequency / frequency.sum())] = 1
    return labels


def baseline(search, queries, query_labels, database_labels, map_at, block_size):
    """The straightforward way: distances in blocks, then one query at a time."""
    n_db = len(search)
    sums = {"map": 0.0, "map_at": dict.fromkeys(map_at, 0.0),
            "precision_at": dict.fromkeys(PRECISION_AT, 0.0),
            "recall_at": dict.fromkeys(RECALL_AT, 0.0)}
    pr_sum, n_pr, no_relevant = np.zeros(PR_POINTS), 0, 0
    no_relevant_at = dict.fromkeys(map_at, 0)
    levels = np.arange(PR_POINTS)
    database_t = database_labels.T.astype(np.float32)
    distance_seconds = 0.0
    start_time = time.perf_counter()
    for start in range(0, len(queries), block_size):
        tick = time.perf_counter()
        block = search.distances(queries[start:start + block_size])
        distance_seconds += time.perf_counter() - tick
        for i, row in enumerate(block):
            relevant = (query_labels[start + i].astype(np.float32) @ database_t) > 0
            ranked = relevant[np.argsort(row, kind="stable")]
            hits = np.cumsum(ranked)
            positions = np.flatnonzero(ranked) + 1
            precision = hits[ranked] / positions
            n_relevant = len(positions)
            sums["map"] += precision.mean() if n_relevant else 0.0
            for k in map_at:
                inside = precision[positions <= k]
                sums["map_at"][k] += inside.mean() if len(inside) else 0.0
                no_relevant_at[k] += len(inside) == 0
            for k in PRECISION_AT:
                sums["precision_at"][k] += hits[min(k, n_db) - 1] / min(k, n_db)
            for r in RECALL_AT:
                sums["recall_at"][r] += hits[min(r, n_db) - 1] / n_relevant if n_relevant else 0.0
            if n_relevant:
                best_after = np.maximum.accumulate(precision[::-1])[::-1]
                first = np.maximum(-(-levels * n_relevant // (PR_POINTS - 1)), 1)
                pr_sum += best_after[first - 1]
                n_pr += 1
            else:
                no_relevant += 1
    nq = len(queries)
    out = {
        "map": sums["map"] / nq,
        "map_at": {str(k): v / nq for k, v in sums["map_at"].items()},
        "precision_at": {str(k): v / nq for k, v in sums["precision_at"].items()},
        "recall_at": {str(k): v / nq for k, v in sums["recall_at"].items()},
        "pr_curve": [[i / (PR_POINTS - 1), p] for i, p in enumerate(pr_sum / max(n_pr, 1))],
        "n_query_no_relevant": no_relevant,
        "n_query_no_relevant_at": {str(k): v for k, v in no_relevant_at.items()},
    }
    return out, {"distances": distance_seconds, "total": time.perf_counter() - start_time}


def floor(search, queries, block_size, workers):
    """ADC distances plus one np.argsort per block, nothing else."""
    def run(start):
        block = search.distances(queries[start:start + block_size])
        return np.argsort(block, axis=1)[:, :1].copy()

    start_time = time.perf_counter()
    starts = range(0, len(queries), block_size)
    if workers == 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    return time.perf_counter() - start_time


def materialised(search, queries, query_labels, database_labels, map_at, block_size, workers):
    """evaluate's block loop as it was before: the whole ranking (`metrics.rank`), then the
    relevance gathered in rank order (`metrics.ranked_relevance`), then the same metrics."""
    query_packed, database_packed = metrics.pack_labels(query_labels), metrics.pack_labels(database_labels)
    patterns, counts = metrics.label_patterns(database_packed)

    def run(start):
        stop = min(start + block_size, len(queries))
        ranking = metrics.rank(search.distances(queries[start:stop]))
        relevant = metrics.ranked_relevance(query_packed[start:stop], database_packed, ranking)
        return metrics.query_metrics(
            relevant, metrics.count_relevant(query_packed[start:stop], patterns, counts),
            n_db=len(search), map_at=map_at, precision_at=PRECISION_AT, recall_at=RECALL_AT)

    with ThreadPoolExecutor(workers) as pool:
        blocks = list(pool.map(run, range(0, len(queries), block_size)))
    return metrics.summarize(blocks, n_db=len(search))


def faiss_index_of(quantizer, codes):
    """IndexPQ holding these codes with the quantizer's codebooks (gslbench's own export)."""
    from gslbench.quantizers.search import faiss_index

    return faiss_index(quantizer, codes)


def faiss_top_metrics(ids, query_labels, database_labels, map_at, k):
    """Per-query AP@K, P@K, R@R of faiss's ranking `ids` (nq, k) int64."""
    query_packed, database_packed = metrics.pack_labels(query_labels), metrics.pack_labels(database_labels)
    patterns, counts = metrics.label_patterns(database_packed)
    relevant = metrics.ranked_relevance(query_packed, database_packed, ids[:, :k])
    block = metrics.query_metrics(relevant, metrics.count_relevant(query_packed, patterns, counts),
                                  n_db=len(database_labels), map_at=map_at,
                                  precision_at=PRECISION_AT, recall_at=RECALL_AT, pr_points=0)
    return block


def top_metrics_of_rank(search, queries, query_labels, database_labels, map_at, k, block_size,
                        faiss_ids):
    """The same per-query values from gslbench's own ranking (`metrics.rank`, top k), and which
    queries it orders as faiss does: the same top k ids as `faiss_ids` (nq, k) int64, in the same
    order. Returns (blocks, (nq,) bool).
    """
    query_packed, database_packed = metrics.pack_labels(query_labels), metrics.pack_labels(database_labels)
    patterns, counts = metrics.label_patterns(database_packed)
    blocks, same_order = [], []
    for start in range(0, len(queries), block_size):
        stop = min(start + block_size, len(queries))
        ranking = metrics.rank(search.distances(queries[start:stop]), k)
        same_order.append(np.all(ranking == faiss_ids[start:stop], axis=1))
        relevant = metrics.ranked_relevance(query_packed[start:stop], database_packed, ranking)
        blocks.append(metrics.query_metrics(
            relevant, metrics.count_relevant(query_packed[start:stop], patterns, counts),
            n_db=len(database_labels), map_at=map_at, precision_at=PRECISION_AT,
            recall_at=RECALL_AT, pr_points=0))
    return blocks, np.concatenate(same_order)


def assert_same(ours: dict, theirs: dict, tolerance: float = 1e-10) -> None:
    def close(a, b, where):
        assert abs(a - b) <= tolerance, f"{where}: evaluate {a!r} != baseline {b!r}"

    close(ours["map"], theirs["map"], "map")
    for group in ("map_at", "precision_at", "recall_at"):
        for k, value in theirs[group].items():
            close(ours[group][k], value, f"{group}[{k}]")
    for (r1, p1), (r2, p2) in zip(ours["pr_curve"], theirs["pr_curve"], strict=True):
        close(r1, r2, "pr recall")
        close(p1, p2, f"pr precision at {r1}")
    assert ours["n_query_no_relevant"] == theirs["n_query_no_relevant"]
    assert ours["n_query_no_relevant_at"] == theirs["n_query_no_relevant_at"]


def bench_shape(name: str, quick: bool, workers: int, rounds: int, seed: int = 0) -> None:
    n_query, n_db, n_classes, multilabel, map_at = SHAPES[name]
    if quick:
        n_query, n_db = QUICK[name]
        map_at = tuple(min(k, n_db) for k in map_at)
    rng = np.random.default_rng(seed)
    dim = 32  # dsub = 8: faiss computes the tables per query (BLAS above 16: batch-dependent)
    quantizer = make_quantizer("pq", dim, 32, seed=seed, kmeans_iters=10)
    quantizer.fit(rng.standard_normal((256 * 40, dim)).astype(np.float32))
    queries = rng.standard_normal((n_query, dim)).astype(np.float32)
    codes = rng.integers(0, 256, size=(n_db, 4), dtype=np.uint8)
    query_labels = random_labels(rng, n_query, n_classes, multilabel)
    database_labels = random_labels(rng, n_db, n_classes, multilabel)
    density = metrics.relevance(query_labels[:100], database_labels).mean()
    print(f"\n== {name}: {n_query} queries x {n_db} database, {n_classes} classes "
          f"({'multi' if multilabel else 'single'}-label, {density:.1%} of pairs relevant), "
          f"32-bit PQ, mAP@{map_at[0]}")
    options = dict(map_at=map_at, precision_at=PRECISION_AT, recall_at=RECALL_AT)
    block_size = max(1, scoring.BLOCK_PAIRS // n_db)
    # Warm-up (allocator, page faults, faiss threads) on a few blocks of every method.
    warm = slice(0, min(n_query, 4 * block_size))
    search = AdcSearch(quantizer, codes)
    scoring.evaluate(search, queries[warm], query_labels[warm], database_labels, workers=workers,
                     **options)
    baseline(search, queries[warm][:8], query_labels[warm][:8], database_labels, map_at, block_size)
    floor(search, queries[warm], block_size, workers)

    def measure(function, *args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        return result, time.perf_counter() - wall, time.process_time() - cpu

    index = faiss_index_of(quantizer, codes)
    k = map_at[0]
    faiss.omp_set_num_threads(workers)
    index.search(queries[warm], k)

    load_before = os.getloadavg()[0]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    data = (search, queries, query_labels, database_labels)
    # evaluate, its former self and faiss interleaved, best of `rounds` each: the machine's load
    # varies, and each of the three sees the same
    ours_wall = before_wall = faiss_wall = ours_cpu = before_cpu = faiss_cpu = float("inf")
    for _ in range(rounds):
        ours, wall, cpu = measure(scoring.evaluate, *data, workers=workers, **options)
        ours_wall, ours_cpu = min(ours_wall, wall), min(ours_cpu, cpu)
        before, wall, cpu = measure(materialised, *data, map_at, block_size, workers)
        before_wall, before_cpu = min(before_wall, wall), min(before_cpu, cpu)
        _, wall, cpu = measure(index.search, queries, k)
        faiss_wall, faiss_cpu = min(faiss_wall, wall), min(faiss_cpu, cpu)
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    _, faiss_ids = index.search(queries, k)
    faiss_block = faiss_top_metrics(faiss_ids, query_labels, database_labels, map_at, k)
    ours_blocks, same_order = top_metrics_of_rank(search, queries, query_labels, database_labels,
                                                  map_at, k, block_size, faiss_ids)
    agree = np.ones(n_query, dtype=bool)
    for group in ("ap_at", "precision_at", "recall_at"):
        for key, values in getattr(faiss_block, group).items():
            mine = np.concatenate([getattr(block, group)[key] for block in ours_blocks])
            differ = np.flatnonzero(same_order & (np.abs(values - mine) > 1e-12))
            if len(differ):  # the same order must give the same metrics: a real disagreement
                print(f"MISMATCH {group}[{key}] on {len(differ)} queries ordered alike, "
                      f"e.g. query {differ[0]}: faiss {values[differ[0]]!r}, "
                      f"evaluate {mine[differ[0]]!r}")
            assert abs(mine.mean() - ours[group.replace("ap_at", "map_at")][str(key)]) < 1e-10
            agree &= np.abs(values - mine) <= 1e-12
    serial, serial_wall, serial_cpu = measure(scoring.evaluate, *data, workers=1, **options)
    top_only, top_wall, top_cpu = measure(
        scoring.evaluate, *data, workers=workers, whole_ranking=False, **options
    )
    (theirs, their_distances), base_wall, base_cpu = measure(baseline, *data, map_at, block_size)
    assert_same(ours, theirs)
    assert_same(serial, theirs)
    assert_same(before, theirs)
    for group in ("map_at", "precision_at", "recall_at"):
        assert top_only[group] == ours[group]
    _, floor_wall, floor_cpu = measure(floor, search, queries, block_size, 1)
    _, floor2_wall, floor2_cpu = measure(floor, search, queries, block_size, workers)
    load_after = os.getloadavg()[0]

    tracemalloc.start()
    scoring.evaluate(*data, workers=workers, **options)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    t = ours["timings_s"]
    print(f"metrics: map {ours['map']:.4f}, map@{map_at[0]} {ours['map_at'][str(map_at[0])]:.4f}, "
          f"P@100 {ours['precision_at']['100']:.4f}, R@1000 {ours['recall_at']['1000']:.4f}, "
          f"no-relevant queries {ours['n_query_no_relevant']}; equal to the baseline's (1e-10)")
    print(f"load average {load_before:.1f} -> {load_after:.1f} on {os.cpu_count()} cores "
          "(wall times suffer from other processes; CPU times much less)")
    print(f"{'':28s} {'wall s':>8s} {'CPU s':>8s}")
    print(f"faiss top-{k}: its mAP@{k}, P@K and R@R equal evaluate's (1e-12) on {agree.sum()} of "
          f"{n_query} queries; compared on the {same_order.sum()} queries whose top {k} both "
          "distance computations order alike (float32 sums in another order swap near-ties; tied "
          "items are ordered by index here, by faiss's heap there)")
    rows = [
        (f"evaluate, {workers} workers", ours_wall, ours_cpu),
        (f"evaluate before, {workers} workers", before_wall, before_cpu),
        (f"faiss IndexPQ top-{k}, {workers} t.", faiss_wall, faiss_cpu),
        ("evaluate, 1 worker", serial_wall, serial_cpu),
        (f"evaluate, top only, {workers} w.", top_wall, top_cpu),
        ("per-query baseline", base_wall, base_cpu),
        ("floor (ADC + argsort), 1 t.", floor_wall, floor_cpu),
        (f"floor, {workers} threads", floor2_wall, floor2_cpu),
    ]
    for label, wall, cpu in rows:
        print(f"{label:28s} {wall:8.2f} {cpu:8.2f}")
    print(f"  evaluate's blocks: distances {t['distances']:.2f} s, ranking {t['ranking']:.2f} s, "
          f"metrics {t['metrics']:.2f} s (summed over threads); baseline's distances "
          f"{their_distances['distances']:.2f} s; top only = whole_ranking=False (no map over "
          "the whole ranking, no PR curve)")
    print(f"evaluate / faiss top-{k}: wall {ours_wall / faiss_wall:.2f} (before: "
          f"{before_wall / faiss_wall:.2f}); evaluate's speed-up over before: "
          f"{before_wall / ours_wall:.2f}x wall, {before_cpu / ours_cpu:.2f}x CPU "
          f"(best of {rounds} interleaved rounds each)")
    print(f"speed-up vs baseline: wall {base_wall / ours_wall:.2f}x ({workers} workers), "
          f"{base_wall / serial_wall:.2f}x (1 worker); CPU {base_cpu / serial_cpu:.2f}x (1 worker)")
    print(f"evaluate / floor: wall {ours_wall / floor2_wall:.2f} ({workers} threads each), "
          f"{serial_wall / floor_wall:.2f} (1 each), {ours_wall / floor_wall:.2f} ({workers} workers "
          f"vs the serial floor); CPU {serial_cpu / floor_cpu:.2f} (1 each)")
    print(f"threads: evaluate {serial_wall / ours_wall:.2f}x faster with {workers} workers "
          f"(floor {floor_wall / floor2_wall:.2f}x)")
    print(f"peak memory of evaluate: {traced_peak / 2**30:.3f} GiB traced (numpy arrays included); "
          f"process max RSS {rss_before:.2f} -> {rss_after:.2f} GiB over the first call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="reduced sizes (seconds)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved timings, best kept")
    parser.add_argument("--shape", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    args = parser.parse_args()
    print(f"numpy {np.__version__}, faiss {faiss.__version__}, workers {args.workers}, "
          f"block_size {scoring.BLOCK_PAIRS} pairs")
    for name in args.shape:
        bench_shape(name, args.quick, args.workers, args.rounds)


if __name__ == "__main__":
    main()
