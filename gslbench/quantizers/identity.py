"""No quantization, for the `float` ceiling: a code is the vector's own float32 bytes."""

from __future__ import annotations

import numpy as np


class Identity:
    """The quantizer of `float` runs, registered as "none": a code is the vector's float32 bytes
    ((n, 4 * dim) uint8) and decoding is exact. It has encode, decode, state and quantization_error
    like the quantizers (so codes.h5 and the search treat it alike), and nothing to fit."""

    name = "none"
    is_fitted = True
    options: dict[str, int] = {}

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

    def quantization_error(self, x: np.ndarray) -> float:
        """Always 0: decoding is exact."""
        return 0.0

    def state(self) -> dict[str, np.ndarray]:
        """No arrays: nothing is trained."""
        return {}
