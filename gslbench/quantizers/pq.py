"""Product quantization (PQ): M k-means sub-codebooks."""

from __future__ import annotations

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.quantizers.base import Assignment, Quantizer
from gslbench.quantizers.candidates import k_smallest, squared_distances

faiss = lazy_import("faiss")
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")


class PQ(Quantizer):
    """Product quantization: the vector is cut into M sub-vectors of dsub = dim // M dimensions,
    each quantized by its own k-means codebook (faiss.ProductQuantizer).

    Options: kmeans_iters (25), kmeans_redo (1: faiss's nredo, the k-means runs of each
    sub-space from other seeds, the one of lowest error kept; the final fit's restarts). Warm
    start: k-means initialised from the current centroids (faiss's Train_hot_start, one run).
    Snap space: the M sub-vectors (G = M); `assign`'s candidates are the k nearest
    sub-codewords of each sub-vector, the first being the encoded one.
    """

    name = "pq"
    OPTIONS = {"kmeans_iters": 25, "kmeans_redo": 1}

    @property
    def n_groups(self) -> int:
        return self.n_codebooks

    @property
    def codebook_shape(self) -> tuple[int, int, int]:
        return (self.n_codebooks, self.codebook_size, self.dim // self.n_codebooks)

    def _config_error(self) -> str | None:
        if self.dim % self.n_codebooks == 0:
            return None
        return (
            f"the {self.name} quantizer cuts {self.dim}-d vectors into {self.n_codebooks} "
            f"sub-vectors (--bits {self.bits} / --sub-bits {self.sub_bits}): "
            f"{self.dim} is not a multiple of {self.n_codebooks}"
        )

    def _reset(self) -> None:
        self._faiss = faiss.ProductQuantizer(self.dim, self.n_codebooks, self.sub_bits)
        self._faiss.cp.seed = self.seed
        self._faiss.cp.min_points_per_centroid = 1  # small training sets are the user's call

    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        self._train_pq(x, hot_start=warm_start)

    def _train_pq(self, x: np.ndarray, hot_start: bool) -> None:
        pq = self._faiss
        pq.train_type = pq.Train_hot_start if hot_start else pq.Train_default
        pq.cp.niter = self.options["kmeans_iters"]
        # redo: from other seeds (a subclass whose OPTIONS leave kmeans_redo out: one run)
        pq.cp.nredo = 1 if hot_start else self.options.get("kmeans_redo", 1)
        # faiss's default subsampling (256 points per centroid); OPQ's training sets 1000
        pq.cp.max_points_per_centroid = faiss.ClusteringParameters().max_points_per_centroid
        pq.train(x)

    def final_options(self) -> dict[str, int]:
        """kmeans_redo max(2, 256 // K) runs per sub-space, 256 codewords trained in all: 16 at
        K = 16 and 2 at K = 256, where more lowered the training MSE by less than 0.5%
        (benchmarks/fit_convergence.py; kmeans_iters 25 already was)."""
        return {"kmeans_redo": max(2, 256 // self.codebook_size)}

    def _codebook_vector(self) -> faiss.Float32Vector:
        return self._faiss.centroids

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        faiss.copy_array_to_vector(arrays["codebooks"].ravel(), self._faiss.centroids)

    @property
    def faiss_searchable(self) -> bool:
        """Whether faiss can compute this quantizer's distance tables: its kernel for 2-d
        sub-vectors needs a multiple of 8 words per codebook (it asserts ksub % 8 == 0), so
        2-d sub-vectors with --sub-bits 1 or 2 are not (the tables are then numpy's)."""
        return self.codebook_shape[2] != 2 or self.codebook_size % 8 == 0

    def adc_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32: tables[q, m, i] = ||q_m - c_{m,i}||^2,
        faiss's compute_distance_tables (on the rotated queries for OPQ)."""
        return self._tables(queries, l2=True)

    def ip_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32: tables[q, m, i] = <q_m, c_{m,i}>, faiss's
        compute_inner_prod_tables (on the rotated queries for OPQ: the rotation is orthonormal,
        so <R q, y> = <q, R^T y>)."""
        return self._tables(queries, l2=False)

    def _tables(self, queries: np.ndarray, l2: bool) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32 tables of the queries in code space: squared
        distances (l2) or inner products, from faiss's ProductQuantizer or, where faiss cannot
        (`faiss_searchable`), from the training step's torch distances."""
        self._check_fitted()
        queries = self._to_code_space(self._check_vectors(queries, "queries"))
        if not self.faiss_searchable:
            sub = torch.from_numpy(queries).reshape(len(queries), self.n_codebooks, -1)
            tables = (squared_distances(sub, self._codebooks_t, self._codeword_norms_t) if l2
                      else torch.einsum("qgd,gkd->qgk", sub, self._codebooks_t))
            return tables.numpy()
        compute = (self._faiss.compute_distance_tables if l2
                   else self._faiss.compute_inner_prod_tables)
        tables = np.empty((len(queries), self.n_codebooks, self.codebook_size), dtype=np.float32)
        compute(len(queries), faiss.swig_ptr(queries), faiss.swig_ptr(tables))
        return tables

    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        codebooks = self._codebooks_t.to(z.device)  # (M, K, dsub)
        norms = self._codeword_norms_t.to(z.device)
        distances = squared_distances(self.to_snap_space(z), codebooks, norms)  # (b, M, K)
        nearest = k_smallest(distances, k)  # (b, M, k), nearest first
        offsets = torch.arange(self.n_codebooks, device=z.device)[:, None] * self.codebook_size
        candidates = F.embedding(nearest + offsets, codebooks.flatten(0, 1))  # (b, M, k, dsub)
        return Assignment(self.from_snap_space(candidates[:, :, 0]), candidates,
                          distances.gather(-1, nearest))

