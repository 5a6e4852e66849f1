"""The torch side of candidate search, used in every training step: squared distances of
sub-vectors to codewords and the k nearest of them (faiss's heaps, ties by index)."""

from __future__ import annotations

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import

faiss = lazy_import("faiss")
torch = lazy_import("torch")


def squared_distances(
    x: torch.Tensor, codebooks: torch.Tensor, norms: torch.Tensor
) -> torch.Tensor:
    """||x_g - c_{g,i}||^2 for (..., G, d) vectors and (G, K, d) codebooks with (G, K) squared
    norms -> (..., G, K)."""
    return (x**2).sum(-1, keepdim=True) - 2 * torch.einsum("...gd,gkd->...gk", x, codebooks) + norms


def k_smallest(distances: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest values along the last axis, smallest first, ties by index:
    (..., K) float32 -> (..., k) int64.

    faiss's max-heaps select in one C++ pass over each row (threaded over the rows); torch's CPU
    topk costs about 2 µs a row whatever k, which made it the largest part of a GSL step. When k
    divides K, each heap starts just above the largest minimum of k blocks of the row (k
    values lie at or below it), so most values are rejected by one comparison: 30% faster."""
    rows = distances.detach().reshape(-1, distances.shape[-1]).float().cpu().contiguous()
    n_rows, n_values = rows.shape
    values = np.full((n_rows, k), np.inf, dtype=np.float32)
    indices = np.full((n_rows, k), -1, dtype=np.int64)
    if n_values % k == 0:
        bound = rows.view(n_rows, k, n_values // k).amin(2).amax(1).numpy()
        values[:] = np.nextafter(bound, np.float32(np.inf))[:, None]
    heaps = faiss.float_maxheap_array_t()
    heaps.nh, heaps.k = n_rows, k
    heaps.val, heaps.ids = faiss.swig_ptr(values), faiss.swig_ptr(indices)
    heaps.addn(n_values, faiss.swig_ptr(rows.numpy()))
    heaps.reorder()
    if indices.min(initial=0) < 0:
        raise GslbenchError("non-finite distances to the codewords (NaN or inf): non-finite "
                            "representations or codebooks")
    return torch.from_numpy(indices).reshape(*distances.shape[:-1], k).to(distances.device)

