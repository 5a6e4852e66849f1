"""The base of additive quantizers (RQ, LSQ): a sum of M full-dimension codewords."""

from __future__ import annotations

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.quantizers.base import Quantizer

faiss = lazy_import("faiss")


class AdditiveQuantizer(Quantizer):
    """A quantizer whose reconstruction is a sum of M full-dimension codewords (RQ, LSQ).

    The snap space is the original space (G = 1): candidates are whole reconstructions. ADC tables
    hold -2 <q, c_{m,i}> (plus ||q||^2 in codebook 0's table, faiss's compute_LUT) and the
    distance adds each item's squared norm, computed once per codes array.
    """

    @property
    def n_groups(self) -> int:
        return 1

    @property
    def codebook_shape(self) -> tuple[int, int, int]:
        return (self.n_codebooks, self.codebook_size, self.dim)

    def _codebook_vector(self) -> faiss.Float32Vector:
        return self._faiss.codebooks

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        faiss.copy_array_to_vector(arrays["codebooks"].ravel(), self._faiss.codebooks)
        self._faiss.is_trained = True

    def adc_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32: tables[q, m, i] = -2 <q, c_{m,i}>, plus
        ||q||^2 for m = 0; add the item's squared norm to get ||q - decode(code)||^2."""
        queries = self._check_vectors(queries, "queries")
        tables = self._lut(queries, -2.0)
        tables[:, 0, :] += np.sum(queries**2, axis=1, keepdims=True)
        return tables

    def ip_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32: tables[q, m, i] = <q, c_{m,i}>."""
        return self._lut(self._check_vectors(queries, "queries"), 1.0)

    def _lut(self, queries: np.ndarray, alpha: float) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32 alpha * <q, c_{m,i}> (faiss's compute_LUT)."""
        self._check_fitted()
        tables = np.empty((len(queries), self.n_codebooks, self.codebook_size), dtype=np.float32)
        self._faiss.compute_LUT(len(queries), faiss.swig_ptr(queries), faiss.swig_ptr(tables), alpha)
        return tables

    def item_norms(self, codes: np.ndarray) -> np.ndarray:
        return np.sum(self.decode(codes) ** 2, axis=1)

