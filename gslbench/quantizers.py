"""Vector quantizers behind one interface (DESIGN.md sections 4-6): PQ, OPQ, RQ and LSQ.

faiss trains, encodes and decodes (`faiss.ProductQuantizer`, `faiss.OPQMatrix`,
`faiss.ResidualQuantizer`, `faiss.LocalSearchQuantizer`); this module adds what faiss does not
expose: a batched torch `assign` for the training loop (nearest codewords and candidate
reconstructions for the Gradient Snapping Layer), asymmetric distances from lookup tables against a
whole database, warm-started refits and HDF5 storage.

Notation: M = `n_codebooks` = bits // sub_bits codebooks of K = `codebook_size` = 2**sub_bits
codewords; dsub = dim // M. Codes are faiss's packed codes, (n, code_bytes) uint8, M indices of
sub_bits bits each, least significant bit first.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import faiss
import h5py
import numpy as np
import torch
import torch.nn.functional as F

from gslbench.errors import GslbenchError

ADC_BLOCK = 16384  # database items per embedding_bag call in `adc_distances`
MAX_SUB_BITS = 16


@dataclass(frozen=True)
class Assignment:
    """The quantizer's view of a training batch z, (b, dim) float32.

    reconstruction: (b, dim) float32, q(z) = decode(encode(z)) in the original space, no grad.
    candidates: (b, G, k, dim // G) float32, for each of the G snap groups the k candidate codewords
        nearest to z, in the snap space (`Quantizer.to_snap_space`), sorted by increasing distance.
    """

    reconstruction: torch.Tensor
    candidates: torch.Tensor


@dataclass(frozen=True)
class _PreparedCodes:
    """What `adc_distances` needs from a database's codes, computed once per codes array."""

    codes: np.ndarray  # (n, code_bytes) uint8, a private copy: the cache key
    bags: torch.Tensor  # (n, M) int64, code index + m * K: rows of the flattened lookup tables
    norms: np.ndarray | None  # (n,) float32 squared norms of the decoded items, additive only


def _squared_distances(
    x: torch.Tensor, codebooks: torch.Tensor, norms: torch.Tensor
) -> torch.Tensor:
    """||x_g - c_{g,i}||^2 for (..., G, d) vectors and (G, K, d) codebooks with (G, K) squared
    norms -> (..., G, K)."""
    return (x**2).sum(-1, keepdim=True) - 2 * torch.einsum("...gd,gkd->...gk", x, codebooks) + norms


def _k_smallest(distances: torch.Tensor, k: int) -> torch.Tensor:
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
        raise GslbenchError("the quantizer was given non-finite representations (NaN or inf)")
    return torch.from_numpy(indices).reshape(*distances.shape[:-1], k).to(distances.device)


class Quantizer(ABC):
    """A vector quantizer: `fit`, `encode`, `decode`, `adc_tables`, and a torch `assign`.

    Subclasses hold the faiss object that encodes in `self._faiss` and define `OPTIONS` (the
    positive integer options they accept, with their defaults) and the snap space's number of
    groups G (`n_groups`).
    """

    name: ClassVar[str]
    OPTIONS: ClassVar[dict[str, int]]

    def __init__(self, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int):
        if not 1 <= sub_bits <= MAX_SUB_BITS:
            raise GslbenchError(f"--sub-bits {sub_bits} is out of range (1 to {MAX_SUB_BITS})")
        if bits <= 0:
            raise GslbenchError(f"--bits {bits} must be positive")
        if bits % sub_bits:
            raise GslbenchError(f"--bits {bits} is not a multiple of --sub-bits {sub_bits}")
        if dim <= 0:
            raise GslbenchError(f"the {self.name} quantizer needs a positive dimension, got {dim}")
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise GslbenchError(
                f"unknown option {unknown[0]!r} for the {self.name} quantizer "
                f"(known: {', '.join(sorted(self.OPTIONS)) or 'none'})"
            )
        for key, value in options.items():
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise GslbenchError(
                    f"option {key}={value!r} of the {self.name} quantizer "
                    "must be a positive integer"
                )
        self.dim = int(dim)
        self.bits = int(bits)
        self.sub_bits = int(sub_bits)
        self.seed = int(seed)
        self.options = {key: int(value) for key, value in {**self.OPTIONS, **options}.items()}
        self.n_codebooks = self.bits // self.sub_bits
        self.codebook_size = 2**self.sub_bits
        error = self._config_error()
        if error:
            raise GslbenchError(error)
        self._fitted = False
        self._prepared: _PreparedCodes | None = None
        self._reset()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(dim={self.dim}, bits={self.bits}, sub_bits={self.sub_bits}, "
            f"seed={self.seed}, options={self.options})"
        )

    # -- what subclasses define --------------------------------------------------------------

    @property
    @abstractmethod
    def n_groups(self) -> int:
        """G, the number of groups of the snap space."""

    @property
    @abstractmethod
    def codebook_shape(self) -> tuple[int, int, int]:
        """(M, K, dsub) for product quantizers, (M, K, dim) for additive ones."""

    def _config_error(self) -> str | None:
        """Why this quantizer cannot do this (dim, bits, sub_bits), or None."""
        return None

    @abstractmethod
    def _reset(self) -> None:
        """Create fresh, untrained faiss objects from the configuration."""

    @abstractmethod
    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        """Train the faiss objects on (n, dim) float32 x, from their current state if warm_start."""

    def _state(self) -> dict[str, np.ndarray]:
        """The arrays that define the trained quantizer, by dataset name."""
        return {"codebooks": self.codebooks}

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"codebooks": self.codebook_shape}

    @abstractmethod
    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Load `_state()`'s arrays into the faiss objects."""

    @abstractmethod
    def _codebook_vector(self) -> faiss.Float32Vector:
        """The faiss vector that holds the codebooks, (M, K, dsub or dim) flattened."""

    @abstractmethod
    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        """`assign` on a checked, detached float32 z, under no_grad."""

    @abstractmethod
    def adc_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> (nq, M, K) float32 lookup tables.

        The ADC distance of a query to a code (i_1..i_M) is sum_m tables[q, m, i_m], plus the
        decoded item's squared norm for additive quantizers.
        """

    # -- the shared interface ------------------------------------------------------------------

    @property
    def is_fitted(self) -> bool:
        return self._fitted

    @property
    def code_bytes(self) -> int:
        """Bytes per packed code, faiss's code_size: ceil(bits / 8)."""
        return int(self._faiss.code_size)

    @property
    def codebooks(self) -> np.ndarray:
        """(M, K, dsub) or (M, K, dim) float32, a copy of faiss's codebooks."""
        self._check_fitted()
        return faiss.vector_to_array(self._codebook_vector()).reshape(self.codebook_shape)

    def fit(self, x: np.ndarray, warm_start: bool = False) -> Quantizer:
        """Train on (n, dim) float32 vectors, n >= K; returns self.

        warm_start: refit starting from the current codebooks (see each subclass for how); on a
        quantizer that is not fitted yet it is an ordinary fit.
        """
        x = self._check_vectors(x, "training vectors")
        if len(x) < self.codebook_size:
            raise GslbenchError(
                f"{len(x)} training vectors are fewer than the {self.codebook_size} codewords of "
                f"each {self.name} codebook (--sub-bits {self.sub_bits})"
            )
        warm_start = warm_start and self._fitted
        if not warm_start:
            self._reset()
        self._fit(x, warm_start)
        self._fitted = True
        self._refresh()
        return self

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> (n, code_bytes) uint8 packed codes (faiss's compute_codes)."""
        self._check_fitted()
        return self._faiss.compute_codes(self._to_code_space(self._check_vectors(x, "vectors")))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_bytes) uint8 packed codes -> (n, dim) float32 reconstructions."""
        self._check_fitted()
        return self._from_code_space(self._faiss.decode(self._check_codes(codes)))

    def adc_distances(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries, (n, code_bytes) uint8 codes -> (nq, n) float32 distances.

        Squared L2 distances ||q - decode(code)||^2 by asymmetric distance computation. What depends
        only on the codes (unpacked indices, item norms) is computed once and cached until a call
        with different codes; the cache compares contents, so in-place edits are seen.
        """
        tables = self.adc_tables(queries)
        prepared = self._prepare(codes)
        n_queries, n_items = len(tables), len(prepared.bags)
        weight = torch.from_numpy(tables.reshape(n_queries, -1).T.copy())  # (M * K, nq)
        distances = torch.empty(n_queries, n_items)
        for start in range(0, n_items, ADC_BLOCK):
            block = prepared.bags[start : start + ADC_BLOCK]
            distances[:, start : start + len(block)] = F.embedding_bag(block, weight, mode="sum").T
        if prepared.norms is not None:
            distances += torch.from_numpy(prepared.norms)
        return distances.numpy()

    def assign(self, z: torch.Tensor, k: int = 8) -> Assignment:
        """(b, dim) float tensor z -> Assignment for the training loop, 1 <= k <= K.

        reconstruction (b, dim) and candidates (b, G, k, dim // G), float32 on z's device, no grad
        (see `Assignment` and each subclass for what the candidates are).
        """
        self._check_fitted()
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise GslbenchError(
                f"representations of shape {tuple(z.shape)} given to the {self.name} quantizer, "
                f"expected (batch, {self.dim})"
            )
        if not 1 <= k <= self.codebook_size:
            raise GslbenchError(f"k = {k} candidates is out of range (1 to {self.codebook_size})")
        with torch.no_grad():
            return self._assign(z.detach().float(), k)

    def to_snap_space(self, x: torch.Tensor) -> torch.Tensor:
        """(b, dim) -> (b, G, dim // G): the space the candidates live in."""
        return x.reshape(len(x), self.n_groups, self.dim // self.n_groups)

    def from_snap_space(self, x: torch.Tensor) -> torch.Tensor:
        """(b, G, dim // G) -> (b, dim), the inverse of `to_snap_space`."""
        return x.reshape(len(x), self.dim)

    def quantization_error(self, x: np.ndarray) -> float:
        """Mean over the rows of (n, dim) float32 x of ||x - decode(encode(x))||^2."""
        x = self._check_vectors(x, "vectors")
        residuals = x.astype(np.float64) - self.decode(self.encode(x))
        return float(np.mean(np.sum(residuals**2, axis=1)))

    def save(self, group: h5py.Group) -> None:
        """Write the trained state into an HDF5 group: datasets `codebooks` (M, K, dsub or dim)
        float32 (and `rotation` (dim, dim) float32 for OPQ), attrs name, dim, bits, sub_bits,
        seed and options (JSON)."""
        self._check_fitted()
        group.attrs.update(
            name=self.name,
            dim=self.dim,
            bits=self.bits,
            sub_bits=self.sub_bits,
            seed=self.seed,
            options=json.dumps(self.options, sort_keys=True),
        )
        for key, array in self._state().items():
            group.create_dataset(key, data=array)

    # -- helpers ---------------------------------------------------------------------------

    def _to_code_space(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> the vectors the faiss quantizer encodes (rotated for OPQ)."""
        return x

    def _from_code_space(self, y: np.ndarray) -> np.ndarray:
        return y

    def _refresh(self) -> None:
        """Rebuild what is derived from the trained state: torch codebooks, the ADC cache."""
        self._codebooks_t = torch.from_numpy(self.codebooks)  # (M, K, dsub or dim)
        self._codeword_norms_t = (self._codebooks_t**2).sum(-1)  # (M, K)
        self._prepared = None

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise GslbenchError(f"the {self.name} quantizer is not fitted: call fit() first")

    def _check_vectors(self, x: np.ndarray, what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise GslbenchError(
                f"{what} of shape {x.shape} given to the {self.name} quantizer, "
                f"expected (n, {self.dim})"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def _check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.code_bytes:
            raise GslbenchError(
                f"codes of shape {codes.shape} and dtype {codes.dtype} given to the {self.name} "
                f"quantizer, expected (n, {self.code_bytes}) uint8 for --bits {self.bits}"
            )
        return np.ascontiguousarray(codes)

    def _unpack(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_bytes) uint8 packed codes -> (n, M) int32 codeword indices."""
        return faiss.unpack_bitstrings(codes, self.n_codebooks, self.sub_bits)

    def _prepare(self, codes: np.ndarray) -> _PreparedCodes:
        self._check_fitted()
        codes = self._check_codes(codes)
        if self._prepared is not None and np.array_equal(self._prepared.codes, codes):
            return self._prepared
        offsets = np.arange(self.n_codebooks, dtype=np.int64) * self.codebook_size
        self._prepared = _PreparedCodes(
            codes=codes.copy(),
            bags=torch.from_numpy(self._unpack(codes) + offsets),
            norms=self._item_norms(codes),
        )
        return self._prepared

    def _item_norms(self, codes: np.ndarray) -> np.ndarray | None:
        """(n,) float32 per-item term of the ADC distance; None when the tables hold it all."""
        return None


class PQ(Quantizer):
    """Product quantization: the vector is cut into M sub-vectors of dsub = dim // M dimensions,
    each quantized by its own k-means codebook (faiss.ProductQuantizer).

    Options: kmeans_iters (25). Warm start: k-means initialised from the current centroids
    (faiss's Train_hot_start). Snap space: the M sub-vectors (G = M); `assign`'s candidates are the
    k nearest sub-codewords of each sub-vector, the first being the encoded one.
    """

    name = "pq"
    OPTIONS = {"kmeans_iters": 25}

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
        # faiss's default subsampling (256 points per centroid); OPQ's training sets 1000
        pq.cp.max_points_per_centroid = faiss.ClusteringParameters().max_points_per_centroid
        pq.train(x)

    def _codebook_vector(self) -> faiss.Float32Vector:
        return self._faiss.centroids

    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        faiss.copy_array_to_vector(arrays["codebooks"].ravel(), self._faiss.centroids)

    def adc_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, M, K) float32: tables[q, m, i] = ||q_m - c_{m,i}||^2,
        faiss's compute_distance_tables (on the rotated queries for OPQ)."""
        self._check_fitted()
        queries = self._to_code_space(self._check_vectors(queries, "queries"))
        tables = np.empty((len(queries), self.n_codebooks, self.codebook_size), dtype=np.float32)
        self._faiss.compute_distance_tables(
            len(queries), faiss.swig_ptr(queries), faiss.swig_ptr(tables)
        )
        return tables

    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        codebooks = self._codebooks_t.to(z.device)  # (M, K, dsub)
        norms = self._codeword_norms_t.to(z.device)
        distances = _squared_distances(self.to_snap_space(z), codebooks, norms)  # (b, M, K)
        nearest = _k_smallest(distances, k)  # (b, M, k), nearest first
        offsets = torch.arange(self.n_codebooks, device=z.device)[:, None] * self.codebook_size
        candidates = F.embedding(nearest + offsets, codebooks.flatten(0, 1))  # (b, M, k, dsub)
        return Assignment(self.from_snap_space(candidates[:, :, 0]), candidates)


class OPQ(PQ):
    """Optimized product quantization: a learned rotation (faiss.OPQMatrix), then PQ.

    Training follows faiss's OPQ: opq_iters (50) alternations of PQ training and a Procrustes
    rotation update (its PQ is this quantizer's PQ, so sub_bits other than 8 work), then the PQ
    is refined for kmeans_iters (25) k-means iterations on the rotated vectors, starting from the
    centroids OPQ left (faiss's alternation centres the data; the encoder does not). Warm start:
    the same, starting from the current rotation and centroids. The snap space is the rotated
    space, cut into M sub-vectors; queries are rotated before the ADC tables are built.
    """

    name = "opq"
    OPTIONS = {"kmeans_iters": 25, "opq_iters": 50}

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
        self._opq.train(x)
        self._train_pq(self._opq.apply(x), hot_start=True)

    def _state(self) -> dict[str, np.ndarray]:
        return {**super()._state(), "rotation": self.rotation}

    def _state_shapes(self) -> dict[str, tuple[int, ...]]:
        return {**super()._state_shapes(), "rotation": (self.dim, self.dim)}

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
        self._check_fitted()
        queries = self._check_vectors(queries, "queries")
        tables = np.empty((len(queries), self.n_codebooks, self.codebook_size), dtype=np.float32)
        self._faiss.compute_LUT(len(queries), faiss.swig_ptr(queries), faiss.swig_ptr(tables), -2.0)
        tables[:, 0, :] += np.sum(queries**2, axis=1, keepdims=True)
        return tables

    def _item_norms(self, codes: np.ndarray) -> np.ndarray:
        return np.sum(self.decode(codes) ** 2, axis=1)


class RQ(AdditiveQuantizer):
    """Residual quantization: codebook m quantizes the residual left by codebooks 0..m-1; codes are
    found by a beam search (faiss.ResidualQuantizer).

    Options: beam_size (8, for training and encoding), kmeans_iters (10, faiss's default),
    warm_iters (2). Warm start: warm_iters rounds of faiss's codebook refinement
    (retrain_AQ_codebook: encode, then least-squares codebooks for those codes); faiss needs at
    least M * K training vectors for it, with fewer the refit starts from scratch.
    `assign`: the same beam search in torch with width max(k, beam_size); the candidates are its k
    best reconstructions and the reconstruction is the best of a width-beam_size search, the codes
    `encode` gives (the same search when k <= beam_size).
    """

    name = "rq"
    OPTIONS = {"beam_size": 8, "kmeans_iters": 10, "warm_iters": 2}

    def _reset(self) -> None:
        self._faiss = faiss.ResidualQuantizer(self.dim, self.n_codebooks, self.sub_bits)
        self._faiss.max_beam_size = self.options["beam_size"]
        self._faiss.cp.seed = self.seed
        self._faiss.cp.niter = self.options["kmeans_iters"]
        self._faiss.cp.min_points_per_centroid = 1

    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        if warm_start and len(x) >= self.n_codebooks * self.codebook_size:
            for _ in range(self.options["warm_iters"]):
                self._faiss.retrain_AQ_codebook(len(x), faiss.swig_ptr(x))
        else:
            self._faiss.train(x)

    def _beam_search(self, z: torch.Tensor, width: int) -> torch.Tensor:
        """(b, dim) -> (b, min(width, K**M), dim) reconstructions, best first (faiss's search)."""
        codebooks = self._codebooks_t.to(z.device)
        norms = self._codeword_norms_t.to(z.device)
        reconstructions = z.new_zeros(len(z), 1, self.dim)  # (b, B, dim), B grows to width
        for m in range(self.n_codebooks):
            residuals = (z[:, None] - reconstructions)[:, :, None]  # (b, B, 1, dim)
            distances = _squared_distances(residuals, codebooks[m : m + 1], norms[m : m + 1])
            flat = distances.flatten(1)  # (b, B * K)
            best = flat.topk(min(width, flat.shape[1]), dim=1, largest=False).indices
            parents = torch.div(best, self.codebook_size, rounding_mode="floor")
            reconstructions = torch.take_along_dim(reconstructions, parents[..., None], 1)
            reconstructions = reconstructions + codebooks[m, best % self.codebook_size]
        return reconstructions

    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        beam_size = self.options["beam_size"]
        beam = self._beam_search(z, max(k, beam_size))
        encoded = beam if k <= beam_size else self._beam_search(z, beam_size)
        return Assignment(encoded[:, 0], beam[:, None, :k])


class LSQ(AdditiveQuantizer):
    """Local search quantization (LSQ++): M full-dimension codebooks trained jointly, codes found
    by iterated conditional modes with random perturbations (faiss.LocalSearchQuantizer).

    Options: train_iters (25), train_ils_iters (8), encode_ils_iters (16), warm_iters (2); faiss's
    nperts (4) is capped at M. Needs bits to be a multiple of 8. The seed drives faiss's random
    perturbations, so `encode` of the same batch is reproducible, but an item's code may depend
    on the other items of its batch. Warm start: warm_iters rounds of (encode, faiss's
    regularised least-squares update_codebooks), starting from the current codebooks.
    `assign`: the reconstruction is decode(encode(z)) (one faiss call per batch); the candidates are
    the k nearest among that reconstruction and its single-codebook changes (one codeword swapped
    for another of the same codebook). ICM does not guarantee a local minimum of that
    neighbourhood, so the first candidate may be nearer to z than the reconstruction (rare).
    """

    name = "lsq"
    OPTIONS = {"train_iters": 25, "train_ils_iters": 8, "encode_ils_iters": 16, "warm_iters": 2}

    def _config_error(self) -> str | None:
        if self.bits % 8 == 0:
            return None
        return f"the lsq quantizer needs --bits a multiple of 8, got {self.bits}"

    def _reset(self) -> None:
        lsq = faiss.LocalSearchQuantizer(self.dim, self.n_codebooks, self.sub_bits)
        lsq.random_seed = self.seed
        lsq.train_iters = self.options["train_iters"]
        lsq.train_ils_iters = self.options["train_ils_iters"]
        lsq.encode_ils_iters = self.options["encode_ils_iters"]
        lsq.nperts = min(lsq.nperts, self.n_codebooks)
        self._faiss = lsq

    def _fit(self, x: np.ndarray, warm_start: bool) -> None:
        if not warm_start:
            self._faiss.train(x)
            return
        for _ in range(self.options["warm_iters"]):
            indices = self._unpack(self.encode(x))
            self._faiss.update_codebooks(faiss.swig_ptr(x), faiss.swig_ptr(indices), len(x))

    def _assign(self, z: torch.Tensor, k: int) -> Assignment:
        codes = self.encode(z.cpu().numpy())
        reconstruction = torch.from_numpy(self.decode(codes)).to(z.device)  # (b, dim)
        indices = torch.from_numpy(self._unpack(codes)).long().to(z.device)  # (b, M)
        codebooks = self._codebooks_t.to(z.device)
        rows = torch.arange(self.n_codebooks, device=z.device)
        others = reconstruction[:, None] - codebooks[rows, indices]  # (b, M, dim): without m
        norms = self._codeword_norms_t.to(z.device)
        distances = _squared_distances(z[:, None] - others, codebooks, norms)  # (b, M, K)
        distances.scatter_(2, indices[..., None], torch.inf)  # the reconstruction: counted once
        own = ((z - reconstruction) ** 2).sum(-1, keepdim=True)
        nearest = torch.cat([own, distances.flatten(1)], dim=1).topk(k, largest=False).indices
        changed = (nearest - 1).clamp(min=0)  # (b, k) flat index into (M, K), for nearest > 0
        m = torch.div(changed, self.codebook_size, rounding_mode="floor")
        swapped = torch.take_along_dim(others, m[..., None], 1)
        swapped = swapped + codebooks[m, changed % self.codebook_size]  # (b, k, dim)
        candidates = torch.where((nearest == 0)[..., None], reconstruction[:, None], swapped)
        return Assignment(reconstruction, candidates[:, None])


class Identity:
    """No quantization, for the `float` ceiling: a code is the vector's float32 bytes
    ((n, 4 * dim) uint8), decoding is exact and `adc_distances` are exact squared L2 distances.
    Registered as "none"; it has encode/decode/adc_distances/save like the quantizers, no fit."""

    name = "none"
    is_fitted = True

    def __init__(self, dim: int, bits: int = 0, sub_bits: int = 32, seed: int = 0) -> None:
        self.dim, self.seed = int(dim), int(seed)
        self.bits, self.sub_bits, self.n_codebooks = 32 * self.dim, 32, self.dim
        self.code_bytes = 4 * self.dim

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> (n, 4 * dim) uint8, the float32 bytes."""
        return np.ascontiguousarray(x, dtype=np.float32).view(np.uint8)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, 4 * dim) uint8 -> (n, dim) float32."""
        return np.ascontiguousarray(codes).view(np.float32)

    def adc_distances(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """(nq, dim) float32, (n, 4 * dim) uint8 -> (nq, n) float32 exact squared L2 distances."""
        database = torch.from_numpy(self.decode(codes))
        queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        distances = (queries**2).sum(1, keepdim=True) - 2 * queries @ database.T
        return (distances + (database**2).sum(1)).clamp_min_(0).numpy()

    def save(self, group: h5py.Group) -> None:
        group.attrs.update(name=self.name, dim=self.dim, bits=self.bits, sub_bits=self.sub_bits,
                           seed=self.seed, options="{}")


QUANTIZERS: dict[str, type[Quantizer]] = {"pq": PQ, "opq": OPQ, "rq": RQ, "lsq": LSQ}


def make_quantizer(
    name: str, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int
) -> Quantizer:
    """The quantizer registered as `name` ("pq", "opq", "rq", "lsq"), not fitted yet."""
    if name not in QUANTIZERS:
        raise GslbenchError(f"unknown quantizer {name!r} (known: {', '.join(sorted(QUANTIZERS))})")
    return QUANTIZERS[name](dim, bits, sub_bits, seed, **options)


def load_quantizer(group: h5py.Group) -> Quantizer:
    """Rebuild the quantizer `Quantizer.save` wrote into `group`, bit-exact."""
    where = f"{group.file.filename}:{group.name}"
    keys = ("name", "dim", "bits", "sub_bits", "seed", "options")
    missing = [key for key in keys if key not in group.attrs]
    if missing:
        raise GslbenchError(f"{where}: no quantizer attribute {missing[0]!r}")
    attrs = {key: group.attrs[key] for key in keys}
    if attrs["name"] == Identity.name:
        return Identity(int(attrs["dim"]))
    try:
        quantizer = make_quantizer(
            str(attrs["name"]),
            int(attrs["dim"]),
            int(attrs["bits"]),
            int(attrs["sub_bits"]),
            int(attrs["seed"]),
            **json.loads(attrs["options"]),
        )
    except (GslbenchError, ValueError, TypeError) as exc:
        raise GslbenchError(f"{where}: bad quantizer attributes ({exc})") from None
    arrays = {}
    for key, shape in quantizer._state_shapes().items():
        if not isinstance(group.get(key), h5py.Dataset):
            raise GslbenchError(f"{where}: no {key!r} dataset")
        if group[key].shape != shape:
            raise GslbenchError(
                f"{where}/{key} has shape {group[key].shape}, but its attributes "
                f"({quantizer.name}, dim {quantizer.dim}, bits {quantizer.bits}, "
                f"sub_bits {quantizer.sub_bits}) need {shape}"
            )
        arrays[key] = np.asarray(group[key], dtype=np.float32)
    quantizer._set_state(arrays)
    quantizer._fitted = True
    quantizer._refresh()
    return quantizer
