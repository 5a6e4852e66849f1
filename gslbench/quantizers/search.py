"""Searching a database of codes: one search object per (quantizer, codes), prepared once.

`AdcSearch`: asymmetric distance computation (the query stays float, the database is codes):
squared L2 distances ||q - decode(code)||^2 from per-query lookup tables (`Quantizer.adc_tables`),
summed over the M codebooks by `torch.nn.functional.embedding_bag`, plus each item's squared norm
for additive quantizers. What depends only on the codes (unpacked indices, item norms) is computed
once, when the search is built. `FlatSearch`: exact squared L2 distances to decoded float codes
(the `float` ceiling). `make_search` picks the one a quantizer needs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from gslbench.quantizers.base import Quantizer
from gslbench.quantizers.identity import Identity

ADC_BLOCK = 16384  # database items per embedding_bag call


class AdcSearch:
    """ADC over one database: `distances(queries)` -> (nq, n) float32."""

    def __init__(self, quantizer: Quantizer, codes: np.ndarray) -> None:
        """codes: (n, code_bytes) uint8 packed codes of `quantizer` (checked)."""
        self.quantizer = quantizer
        offsets = np.arange(quantizer.n_codebooks, dtype=np.int64) * quantizer.codebook_size
        self.bags = torch.from_numpy(quantizer.unpack(quantizer.check_codes(codes)) + offsets)
        norms = quantizer.item_norms(codes)
        self.norms = None if norms is None else torch.from_numpy(norms)

    def __len__(self) -> int:
        return len(self.bags)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> (nq, n) float32 squared L2 distances by ADC."""
        tables = self.quantizer.adc_tables(queries)
        n_queries = len(tables)
        weight = torch.from_numpy(tables.reshape(n_queries, -1).T.copy())  # (M * K, nq)
        distances = torch.empty(n_queries, len(self.bags))
        for start in range(0, len(self.bags), ADC_BLOCK):
            block = self.bags[start : start + ADC_BLOCK]
            distances[:, start : start + len(block)] = F.embedding_bag(block, weight, mode="sum").T
        if self.norms is not None:
            distances += self.norms
        return distances.numpy()


class FlatSearch:
    """Exact search over float codes (`Identity`): `distances(queries)` -> (nq, n) float32."""

    def __init__(self, quantizer: Identity, codes: np.ndarray) -> None:
        """codes: (n, 4 * dim) uint8, the database's float32 bytes."""
        self.database = torch.from_numpy(quantizer.decode(codes))
        self.norms = (self.database**2).sum(1)

    def __len__(self) -> int:
        return len(self.database)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, n) float32 exact squared L2 distances."""
        queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        distances = (queries**2).sum(1, keepdim=True) - 2 * queries @ self.database.T
        return (distances + self.norms).clamp_min_(0).numpy()


def make_search(quantizer: Quantizer | Identity, codes: np.ndarray) -> AdcSearch | FlatSearch:
    """The search of `codes` (n, code_bytes) uint8 under `quantizer`: exact for float codes,
    ADC otherwise."""
    if isinstance(quantizer, Identity):
        return FlatSearch(quantizer, codes)
    return AdcSearch(quantizer, codes)
