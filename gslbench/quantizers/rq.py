"""Residual quantization (RQ) with a beam search."""

from __future__ import annotations

import numpy as np

from gslbench.lazy import lazy_import
from gslbench.quantizers.additive import AdditiveQuantizer
from gslbench.quantizers.base import Assignment
from gslbench.quantizers.candidates import squared_distances

faiss = lazy_import("faiss")
torch = lazy_import("torch")


class RQ(AdditiveQuantizer):
    """Residual quantization: codebook m quantizes the residual left by codebooks 0..m-1; codes are
    found by a beam search (faiss.ResidualQuantizer).

    Options: beam_size (8, for training and encoding), kmeans_iters (10, faiss's default),
    kmeans_redo (1: faiss's nredo, each codebook's k-means run from other seeds, the one of lowest
    error kept; the final fit's restarts), warm_iters (2). Warm start: warm_iters rounds of faiss's
    codebook refinement (retrain_AQ_codebook: encode, then least-squares codebooks for those
    codes); faiss needs at least M * K training vectors for it, with fewer the refit starts from
    scratch.
    `assign`: the same beam search in torch with width max(k, beam_size); the candidates are its k
    best reconstructions and the reconstruction is the best of a width-beam_size search, the codes
    `encode` gives (the same search when k <= beam_size).
    """

    name = "rq"
    OPTIONS = {"beam_size": 8, "kmeans_iters": 10, "kmeans_redo": 1, "warm_iters": 2}

    def _reset(self) -> None:
        self._faiss = faiss.ResidualQuantizer(self.dim, self.n_codebooks, self.sub_bits)
        self._faiss.max_beam_size = self.options["beam_size"]
        self._faiss.cp.seed = self.seed
        self._faiss.cp.niter = self.options["kmeans_iters"]
        self._faiss.cp.nredo = self.options["kmeans_redo"]
        self._faiss.cp.min_points_per_centroid = 1

    def final_options(self) -> dict[str, int]:
        """kmeans_redo 2: at K = 256 it lowered the training MSE by 1.2% and 4 runs by 0.27% more
        (benchmarks/fit_convergence.py); kmeans_iters 10 -> 20 lowered it by 0.44%. At K = 16
        RQ's MSE moves by up to ±3% with any knob, up or down (the greedy codebooks' k-means
        objective is not the beam search's error), and 2 runs were 1.4% lower than 1."""
        return {"kmeans_redo": 2}

    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        if warm_start and len(x) >= self.n_codebooks * self.codebook_size:
            for _ in range(self.options["warm_iters"]):
                self._faiss.retrain_AQ_codebook(len(x), faiss.swig_ptr(x))
        else:
            self._faiss.train(x)

    def _beam_search(self, z: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(b, dim) -> (b, B, dim) reconstructions, best first (faiss's search), and their (b, B)
        squared distances to z; B = min(width, K**M)."""
        codebooks = self._codebooks_t.to(z.device)
        norms = self._codeword_norms_t.to(z.device)
        reconstructions = z.new_zeros(len(z), 1, self.dim)  # (b, B, dim), B grows to width
        for m in range(self.n_codebooks):
            residuals = (z[:, None] - reconstructions)[:, :, None]  # (b, B, 1, dim)
            distances = squared_distances(residuals, codebooks[m : m + 1], norms[m : m + 1])
            flat = distances.flatten(1)  # (b, B * K)
            beam_distances, best = flat.topk(min(width, flat.shape[1]), dim=1, largest=False)
            parents = torch.div(best, self.codebook_size, rounding_mode="floor")
            reconstructions = torch.take_along_dim(reconstructions, parents[..., None], 1)
            reconstructions = reconstructions + codebooks[m, best % self.codebook_size]
        return reconstructions, beam_distances

    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        beam_size = self.options["beam_size"]
        beam, distances = self._beam_search(z, max(k, beam_size))
        encoded = beam if k <= beam_size else self._beam_search(z, beam_size)[0]
        return Assignment(encoded[:, 0], beam[:, None, :k], distances[:, None, :k])

