"""The quantizer interface (docs/design.md, sections 4-6): `fit`, `encode`, `decode`, `adc_tables` and
a batched torch `assign` for the training loop.

faiss trains, encodes and decodes; the base adds what faiss does not expose: a torch `assign`
(nearest codewords and candidate reconstructions for the Gradient Snapping Layer and the other
training methods), warm-started refits and the trained state as arrays (`state`, `restore`) for
`gslbench.quantizers.io`. Searching a database is `gslbench.quantizers.search`.

Notation: M = `n_codebooks` = bits // sub_bits codebooks of K = `codebook_size` = 2**sub_bits
codewords; dsub = dim // M. Codes are faiss's packed codes, (n, code_bytes) uint8, M indices of
sub_bits bits each, least significant bit first.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import

faiss = lazy_import("faiss")
torch = lazy_import("torch")

MAX_SUB_BITS = 16


def restart_seed(seed: int, restart: int) -> int:
    """The seed of a final fit's restart: `seed` itself for restart 0, else a 31-bit seed drawn
    from numpy's SeedSequence((seed, restart)), so that no two (seed, restart) pairs share one
    by construction (seed + restart would give seed 1's first restart to seed 0's second)."""
    if restart == 0:
        return seed
    return int(np.random.SeedSequence((seed, restart)).generate_state(1)[0] >> 1)


def squared_error(x: np.ndarray, reconstruction: np.ndarray) -> float:
    """Mean over the rows of (n, d) float32 x of ||x - reconstruction||^2 (float64 sums)."""
    return float(np.mean(np.sum((x.astype(np.float64) - reconstruction) ** 2, axis=1)))


@dataclass(frozen=True)
class Assignment:
    """The quantizer's view of a training batch z, (b, dim) float32.

    reconstruction: (b, dim) float32, q(z) = decode(encode(z)) in the original space, no grad.
    candidates: (b, G, k, dim // G) float32, for each of the G snap groups the k candidate codewords
        nearest to z, in the snap space (`Quantizer.to_snap_space`), sorted by increasing distance.
    distances: (b, G, k) float32, the squared distance of z's group to each candidate, as the
        search computed it (||x||^2 - 2 <x, c> + ||c||^2: exact up to float32 rounding).
    """

    reconstruction: torch.Tensor
    candidates: torch.Tensor
    distances: torch.Tensor




def positive_int(value: Any) -> bool:
    """Whether `value` is an integer (not a bool) of at least 1: what every option must be."""
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value >= 1


class Quantizer(ABC):
    """A vector quantizer: `fit`, `encode`, `decode`, `adc_tables`, and a torch `assign`.

    Subclasses hold the faiss object that encodes in `self._faiss` and define `OPTIONS` (the
    positive integer options they accept, with their defaults) and the snap space's number of
    groups G (`n_groups`).
    """

    name: ClassVar[str]
    OPTIONS: ClassVar[dict[str, int]]
    # The final fit's number of cold restarts (`fit_final`), measured to convergence by
    # benchmarks/fit_convergence.py (docs/guide/quantizers.md).
    FINAL_RESTARTS: ClassVar[int] = 1
    # Whether an item's code may depend on the other items encoded with it (then only encoding
    # the same batch again gives the same codes).
    codes_depend_on_batch: ClassVar[bool] = False

    def __init__(self, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int):
        self._configure(dim, bits, sub_bits, seed, options)
        self._fitted = False
        self._reset()

    @classmethod
    def check_config(cls, dim: int, bits: int, sub_bits: int = 8, **options: int) -> int:
        """Raise the user error that building this quantizer for (dim, bits, sub_bits, options)
        would raise, without building its faiss objects (faiss is not loaded: the configuration
        checks run before any step); returns its codebook size K = 2**sub_bits."""
        unbuilt = cls.__new__(cls)
        unbuilt._configure(dim, bits, sub_bits, 0, options)
        return unbuilt.codebook_size

    def _configure(self, dim: int, bits: int, sub_bits: int, seed: int,
                   options: dict[str, int]) -> None:
        """Check and set the configuration (no faiss object yet); a user error when it is not
        one this quantizer can build."""
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
            if not positive_int(value):
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

    def state(self) -> dict[str, np.ndarray]:
        """The arrays that define the trained quantizer, by name: `codebooks` (M, K, dsub or dim)
        float32, and `rotation` (dim, dim) float32 for OPQ."""
        self._check_fitted()
        return {"codebooks": self.codebooks}

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each array of `state()`."""
        return {"codebooks": self.codebook_shape}

    @abstractmethod
    def _set_state(self, arrays: dict[str, np.ndarray]) -> None:
        """Load `state()`'s arrays into the faiss objects."""

    def restore(self, arrays: dict[str, np.ndarray]) -> Quantizer:
        """Load a trained state (`state()`'s arrays, shapes as `state_shapes()`); returns self."""
        self._set_state(arrays)
        self._fitted = True
        self._refresh()
        return self

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

    @abstractmethod
    def ip_tables(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> (nq, M, K) float32 inner-product tables.

        The inner product of a query with a decoded code (i_1..i_M) is
        <q, decode(code)> = sum_m tables[q, m, i_m].
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
    def faiss_quantizer(self) -> faiss.Quantizer:
        """The faiss object that encodes (faiss.ProductQuantizer, ResidualQuantizer or
        LocalSearchQuantizer; for OPQ the PQ after the rotation), to copy into a faiss index
        (`gslbench.quantizers.search.faiss_index`); read it, never change it."""
        self._check_fitted()
        return self._faiss

    @property
    def codebooks(self) -> np.ndarray:
        """(M, K, dsub) or (M, K, dim) float32, a copy of faiss's codebooks."""
        self._check_fitted()
        return faiss.vector_to_array(self._codebook_vector()).reshape(self.codebook_shape)

    def fit(self, x: np.ndarray, warm_start: bool = False,
            what: str = "training vectors") -> Quantizer:
        """Train on (n, dim) float32 vectors, n >= K; returns self.

        warm_start: refit starting from the current codebooks (see each subclass for how); on a
        quantizer that is not fitted yet it is an ordinary fit. what: the vectors, as errors name
        them (the database fit's are "database vectors").
        """
        x = self._check_vectors(x, what)
        if len(x) < self.codebook_size:
            raise GslbenchError(
                f"{len(x)} {what} are fewer than the {self.codebook_size} codewords of "
                f"each {self.name} codebook (--sub-bits {self.sub_bits})"
            )
        warm_start = warm_start and self._fitted
        if not warm_start:
            self._reset()
        self._fit(x, warm_start)
        self._fitted = True
        self._refresh()
        return self

    def final_options(self) -> dict[str, int]:
        """The options the final fit sets over the quantizer's own: training iterations only,
        never what encoding reads, measured to convergence by benchmarks/fit_convergence.py
        (docs/guide/quantizers.md); none by default."""
        return {}

    def fit_final(self, x: np.ndarray, what: str = "training vectors") -> Quantizer:
        """The final fit on (n, dim) float32 x, the one whose codebooks a run reports, alike for
        every method and for the training and the database fit; returns self.

        `FINAL_RESTARTS` cold fits (no warm start), each with `final_options` over the
        quantizer's options and its own seed (`restart_seed`: the first is the quantizer's), of
        which the one with the lowest mean squared error on x is kept (the first on a tie) and
        loaded into self. The quantizer keeps its seed and options: encoding is unchanged. It
        depends on x, the configuration and the seed only, never on earlier fits. what: the
        vectors, as errors name them (`fit`)."""
        x = self._check_vectors(x, what)
        best, best_error = None, math.inf
        # only the final options the class accepts: a subclass (a plugin's PQ with OPTIONS of its
        # own) that drops one of its parent's options is fitted without it
        options = {**self.options, **{key: value for key, value in self.final_options().items()
                                      if key in self.OPTIONS}}
        for restart in range(self.FINAL_RESTARTS):
            candidate = type(self)(self.dim, self.bits, self.sub_bits,
                                   restart_seed(self.seed, restart), **options).fit(x, what=what)
            error = candidate.quantization_error(x)
            if error < best_error:
                best, best_error = candidate, error
        self._reset()
        return self.restore(best.state())

    def encode(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> (n, code_bytes) uint8 packed codes (faiss's compute_codes)."""
        self._check_fitted()
        return self._faiss.compute_codes(self._to_code_space(self._check_vectors(x, "vectors")))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_bytes) uint8 packed codes -> (n, dim) float32 reconstructions."""
        self._check_fitted()
        return self._from_code_space(self._faiss.decode(self.check_codes(codes)))

    def assign(self, z: torch.Tensor, k: int = 8) -> Assignment:
        """(b, dim) float tensor z -> Assignment for the training loop, 1 <= k <= K.

        reconstruction (b, dim), candidates (b, G, k, dim // G) and their squared distances
        (b, G, k), float32 on z's device, no grad (see `Assignment` and each subclass for what the
        candidates are).
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
        return squared_error(x, self.decode(self.encode(x)))

    # -- helpers ---------------------------------------------------------------------------

    def _to_code_space(self, x: np.ndarray) -> np.ndarray:
        """(n, dim) float32 -> the vectors the faiss quantizer encodes (rotated for OPQ)."""
        return x

    def _from_code_space(self, y: np.ndarray) -> np.ndarray:
        return y

    def _refresh(self) -> None:
        """Rebuild what is derived from the trained state: the torch codebooks and their norms."""
        self._codebooks_t = torch.from_numpy(self.codebooks)  # (M, K, dsub or dim)
        self._codeword_norms_t = (self._codebooks_t**2).sum(-1)  # (M, K)

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

    def check_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] != self.code_bytes:
            raise GslbenchError(
                f"codes of shape {codes.shape} and dtype {codes.dtype} given to the {self.name} "
                f"quantizer, expected (n, {self.code_bytes}) uint8 for --bits {self.bits}"
            )
        return np.ascontiguousarray(codes)

    def unpack(self, codes: np.ndarray) -> np.ndarray:
        """(n, code_bytes) uint8 packed codes -> (n, M) int32 codeword indices."""
        return faiss.unpack_bitstrings(codes, self.n_codebooks, self.sub_bits)

    def item_norms(self, codes: np.ndarray) -> np.ndarray | None:
        """(n, code_bytes) uint8 -> (n,) float32 per-item term of the ADC distance; None when the
        tables hold it all (product quantizers)."""
        return None

