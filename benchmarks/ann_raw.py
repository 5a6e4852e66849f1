"""The raw quantizers of the nearest-neighbour track (issue 31; not a test): faiss's PQ, OPQ, RQ
and LSQ fitted on the raw GloVe training vectors (no network) at 8 and 16 bytes, scored on the
test queries against the test database with the track's metrics (1-recall@1/10/100, k-recall@10,
the database's quantization MSE), so that a reader sees whether a trained transform beats them.

The vectors are 50-d; 8 or 16 sub-quantizers need a multiple of 8 or 16 dimensions: PQ and OPQ
run on the vectors turned by a seeded random rotation and zero-padded to 64 dimensions (faiss's
RandomRotationMatrix 50 -> 64, an orthonormal map: distances are kept, each sub-quantizer sees a
mix of every coordinate; without the rotation the last sub-space would hold 2 real coordinates
and zeros). RQ and LSQ are additive over the whole vector and take the 50 dimensions as they are.
Ranking by faiss's own search (ties in faiss's heap order, not gslbench's index order).

    python benchmarks/ann_raw.py [DATA_DIR] [--quick] [--kinds pq,opq,rq,lsq]
        (after `gslbench features glove-6b-50d`)

`--quick` subsamples (seeded): 20,000 training items, a database of 50,000 and 1,000 queries,
their true neighbours found again in that database (exact), for RQ and LSQ, whose fits and
encodings are slow on a small machine; its figures are of that smaller database, not comparable
to the full one's. Each row also gives the seconds of the fit and of encoding the database
(faiss on one thread).
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from gslbench.data import feature_path
from gslbench.data.featurefile import read_feature_file
from gslbench.data.neighbours import true_neighbours

R = (1, 10, 100)


def index_for(kind: str, dim: int, n_bytes: int) -> faiss.Index:
    """A faiss index of `n_bytes` codes of 8-bit sub-quantizers over `dim`-d vectors."""
    if kind == "pq":
        return faiss.IndexPreTransform(faiss.RandomRotationMatrix(dim, 64),
                                       faiss.IndexPQ(64, n_bytes, 8))
    if kind == "opq":
        return faiss.index_factory(dim, f"OPQ{n_bytes}_64,PQ{n_bytes}")
    if kind == "rq":
        return faiss.IndexResidualQuantizer(dim, n_bytes, 8)
    return faiss.IndexLocalSearchQuantizer(dim, n_bytes, 8)


QUICK = {"train": 20_000, "database": 50_000, "query": 1_000}


def quick_parts(train: np.ndarray, base: np.ndarray, queries: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`--quick`'s seeded subsample (`QUICK`) and its queries' exact k neighbours in it."""
    rng = np.random.default_rng(0)
    train, base, queries = (part[np.sort(rng.choice(len(part), QUICK[name], replace=False))]
                            for part, name in ((train, "train"), (base, "database"),
                                               (queries, "query")))
    return train, base, queries, true_neighbours(queries, base, k)


def main(data_dir: str, quick: bool, kinds: list[str]) -> None:
    faiss.omp_set_num_threads(1)
    features = read_feature_file(feature_path(data_dir, "glove-6b-50d"))
    train, base = features.train.features, features.database.features
    queries, truth = features.query.features, features.query.neighbours
    k = truth.shape[1]
    if quick:
        train, base, queries, truth = quick_parts(train, base, queries, k)
    print(f"{len(train)} training items, a database of {len(base)}, {len(queries)} queries")
    print("| quantizer | bytes | 1-recall@1 | 1-recall@10 | 1-recall@100 | k-recall@10 | MSE | "
          "fit s | encode s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n_bytes in (8, 16):
        for kind in kinds:
            index = index_for(kind, base.shape[1], n_bytes)
            start = time.perf_counter()
            index.train(train)
            seconds = time.perf_counter() - start
            start = time.perf_counter()
            index.add(base)
            encode = time.perf_counter() - start
            _, found = index.search(queries, max(R))
            decoded = index.reconstruct_n(0, len(base))
            mse = float(np.mean(np.sum((decoded.astype(np.float64) - base) ** 2, axis=1)))
            ones = [np.mean((found[:, :r] == truth[:, :1]).any(axis=1)) for r in R]
            k_recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found[:, :k], truth,
                                                                           strict=True)])
            print(f"| {kind} | {n_bytes} | " + " | ".join(f"{v:.4f}" for v in ones)
                  + f" | {k_recall:.4f} | {mse:.5f} | {seconds:.0f} | {encode:.0f} |", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", nargs="?", default="datasets")
    parser.add_argument("--quick", action="store_true", help="a seeded subsample (QUICK)")
    parser.add_argument("--kinds", default="pq,opq,rq,lsq", help="comma-separated quantizers")
    args = parser.parse_args()
    main(args.data_dir, args.quick, args.kinds.split(","))
