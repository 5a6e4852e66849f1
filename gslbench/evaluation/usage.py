"""Codebook usage: how many of each codebook's codewords a run's codes use, and how evenly.

For the codes of n items under M codebooks of K codewords (per PQ/OPQ sub-quantizer, per RQ/LSQ
stage), codebook m's histogram gives p_k = n_k / n and

    entropy H_m = −Σ_k p_k log2 p_k bits (0 log 0 = 0), at most log2 K (every codeword alike),
    perplexity 2^H_m: the number of equally used codewords with the same entropy (1 to K),
    unused_m = the share of the K codewords no item is assigned to.

`encode` measures it on the training items' codes and the database's (`usage_record`, a JSON
attribute `usage` of the codes file, sealed with it); `evaluate` copies it into metrics.json; the
report averages each measure over the M codebooks (`usage_columns`).
"""

from __future__ import annotations

import numpy as np

from gslbench.quantizers import Quantizer

MEASURES = ("perplexity", "unused", "entropy_bits")
PARTS = ("train", "database")


def codebook_usage(indices: np.ndarray, codebook_size: int) -> dict[str, list[float] | float]:
    """(n, M) integer codeword indices in [0, K) -> per codebook `perplexity`, `unused` (share of
    the K codewords never used) and `entropy_bits`, lists of M floats, and `entropy_max_bits`
    (log2 K)."""
    indices = np.asarray(indices)
    if indices.ndim != 2 or len(indices) == 0:
        raise ValueError(f"codebook_usage: want (n, M) indices, n >= 1; got {indices.shape}")
    counts = np.stack([np.bincount(column, minlength=codebook_size) for column in indices.T])
    shares = counts / len(indices)  # (M, K)
    logs = np.log2(shares, out=np.zeros_like(shares), where=shares > 0)
    entropy = -(shares * logs).sum(1)
    return {"perplexity": (2.0**entropy).tolist(), "unused": (counts == 0).mean(1).tolist(),
            "entropy_bits": entropy.tolist(), "entropy_max_bits": float(np.log2(codebook_size))}


def usage_record(quantizer: Quantizer, codes: dict[str, np.ndarray]) -> dict[str, dict]:
    """{part: (n, code_bytes) uint8 packed codes} -> {part: `codebook_usage` of its codes}."""
    return {part: codebook_usage(quantizer.unpack(packed), quantizer.codebook_size)
            for part, packed in codes.items()}


def usage_columns(record: dict | None) -> dict[str, float]:
    """A metrics.json `usage` record (None: a float run, or one evaluated before usage was
    measured) -> the results columns `usage_{part}_{measure}` (means over the codebooks, NaN when
    absent) and `usage_entropy_max_bits`."""
    columns = {f"usage_{part}_{measure}": float("nan") for part in PARTS for measure in MEASURES}
    columns["usage_entropy_max_bits"] = float("nan")
    for part, usage in (record or {}).items():
        columns.update({f"usage_{part}_{measure}": float(np.mean(usage[measure]))
                        for measure in MEASURES})
        columns["usage_entropy_max_bits"] = float(usage["entropy_max_bits"])
    return columns
