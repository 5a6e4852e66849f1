"""The registered quantizers, by name."""

from __future__ import annotations

from gslbench.errors import lookup
from gslbench.quantizers.base import Quantizer
from gslbench.quantizers.lsq import LSQ
from gslbench.quantizers.opq import OPQ
from gslbench.quantizers.pq import PQ
from gslbench.quantizers.rq import RQ

QUANTIZERS: dict[str, type[Quantizer]] = {"pq": PQ, "opq": OPQ, "rq": RQ, "lsq": LSQ}


def make_quantizer(
    name: str, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int
) -> Quantizer:
    """The quantizer registered as `name` ("pq", "opq", "rq", "lsq"), not fitted yet."""
    return lookup(QUANTIZERS, name, "quantizer")(dim, bits, sub_bits, seed, **options)
