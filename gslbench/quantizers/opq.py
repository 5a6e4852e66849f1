"""Optimized product quantization (OPQ): a learned rotation, then PQ."""

from __future__ import annotations

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.quantizers.pq import PQ

faiss = lazy_import("faiss")
torch = lazy_import("torch")


class OPQ(PQ):
    """Optimized product quantization: a learned rotation (faiss.OPQMatrix), then PQ.

    Training follows faiss's OPQ: opq_iters (50) alternations of PQ training and a Procrustes
    rotation update (its PQ is this quantizer's PQ, so sub_bits other than 8 work), then the PQ
    is refined for kmeans_iters (25) k-means iterations on the rotated vectors, starting from the
    centroids OPQ left (faiss's alternation centres the data; the encoder does not). Warm start:
    warm_iters (20) alternations from the current rotation and centroids (each with faiss's 4
    k-means iterations, the first too), then the same refinement. The snap space is the rotated
    space, cut into M sub-vectors; queries are rotated before the ADC tables are built.
    """

    name = "opq"
    OPTIONS = {"kmeans_iters": 25, "opq_iters": 50, "warm_iters": 20}

    @property
    def rotation(self) -> np.ndarray:
        """(dim, dim) float32 orthonormal R: the rotated vector is R @ x."""
        self._check_fitted()
        return faiss.vector_to_array(self._opq.A).reshape(self.dim, self.dim)

    def _reset(self) -> None:
        super()._reset()
        self._opq = faiss.OPQMatrix(self.dim, self.n_codebooks)
        self._opq.pq = self._faiss  # a borrowed pointer: self._faiss keeps the PQ alive
        self._opq.niter = self.options["opq_iters"]

    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        pq = self._faiss
        pq.train_type = pq.Train_hot_start if warm_start else pq.Train_default
        if warm_start:  # a cold fit comes after _reset, with faiss's and opq_iters' counts
            self._opq.niter = self.options["warm_iters"]
            self._opq.niter_pq_0 = self._opq.niter_pq
        self._opq.train(x)
        self._train_pq(self._opq.apply(x), hot_start=True)

    def final_options(self) -> dict[str, int]:
        """opq_iters 800 alternations at K <= 16, 400 above: faiss's rotation converges slowly
        (benchmarks/fit_convergence.py, training representations: each doubling from 50 lowered
        the MSE by 8.3, 6.5, 4.0, 2.7 and then 0.0% at K = 16, 800 -> 1600; by 4.8, 3.7 and 2.3%
        at K = 256 up to 400, where 800 would cost 20 minutes a fit). The k-means refinement
        after them is hot-started, so PQ's kmeans_redo does not apply."""
        return {"opq_iters": 800 if self.codebook_size <= 16 else 400}

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), "rotation": self.rotation}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super().state_shapes(), "rotation": (self.dim, self.dim)}

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        super()._set_state(arrays)
        faiss.copy_array_to_vector(arrays["rotation"].ravel(), self._opq.A)
        self._opq.is_trained = True
        self._opq.is_orthonormal = True

    def _refresh(self) -> None:
        super()._refresh()
        self._rotation_t = torch.from_numpy(self.rotation)

    def _to_code_space(self, x: np.ndarray) -> np.ndarray:
        return self._opq.apply(x)

    def _from_code_space(self, y: np.ndarray) -> np.ndarray:
        return self._opq.reverse_transform(y)

    def to_snap_space(self, x: torch.Tensor) -> torch.Tensor:
        """(b, dim) -> (b, M, dsub): rotated by R, then cut into M sub-vectors."""
        return super().to_snap_space(x @ self._rotation_t.to(x.device).T)

    def from_snap_space(self, x: torch.Tensor) -> torch.Tensor:
        """(b, M, dsub) -> (b, dim): joined, then rotated back by R^T."""
        return super().from_snap_space(x) @ self._rotation_t.to(x.device)

