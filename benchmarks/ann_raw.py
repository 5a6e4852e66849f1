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

    python benchmarks/ann_raw.py [DATA_DIR]   (after `gslbench features glove-6b-50d`)
"""

from __future__ import annotations

import sys
import time

import faiss
import numpy as np

from gslbench.data import feature_path
from gslbench.data.featurefile import read_feature_file

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


def main(data_dir: str) -> None:
    features = read_feature_file(feature_path(data_dir, "glove-6b-50d"))
    train, base = features.train.features, features.database.features
    queries, truth = features.query.features, features.query.neighbours
    k = truth.shape[1]
    print("| quantizer | bytes | 1-recall@1 | 1-recall@10 | 1-recall@100 | k-recall@10 | MSE | fit s |")
    print("|---|---|---|---|---|---|---|---|")
    for n_bytes in (8, 16):
        for kind in ("pq", "opq", "rq", "lsq"):
            index = index_for(kind, base.shape[1], n_bytes)
            start = time.perf_counter()
            index.train(train)
            seconds = time.perf_counter() - start
            index.add(base)
            _, found = index.search(queries, max(R))
            decoded = index.reconstruct_n(0, len(base))
            mse = float(np.mean(np.sum((decoded.astype(np.float64) - base) ** 2, axis=1)))
            ones = [np.mean((found[:, :r] == truth[:, :1]).any(axis=1)) for r in R]
            k_recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(found[:, :k], truth,
                                                                           strict=True)])
            print(f"| {kind} | {n_bytes} | " + " | ".join(f"{v:.4f}" for v in ones)
                  + f" | {k_recall:.4f} | {mse:.5f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "datasets")
