"""The registered quantizers, by name: the built-ins, then the plugins of the entry-point group
`gslbench.quantizers` (`gslbench.plugins`: a `Quantizer` subclass whose `name` is the entry
point's)."""

from __future__ import annotations

import functools

from gslbench.errors import lookup
from gslbench.plugins import load_plugins, named_subclass
from gslbench.quantizers.base import Quantizer
from gslbench.quantizers.lsq import LSQ
from gslbench.quantizers.opq import OPQ
from gslbench.quantizers.pq import PQ
from gslbench.quantizers.rq import RQ

BUILTIN_QUANTIZERS: dict[str, type[Quantizer]] = {"pq": PQ, "opq": OPQ, "rq": RQ, "lsq": LSQ}
QUANTIZERS: dict[str, type[Quantizer]] = {
    **BUILTIN_QUANTIZERS,
    **load_plugins("gslbench.quantizers", BUILTIN_QUANTIZERS,
                   functools.partial(named_subclass, base=Quantizer)),
}


def make_quantizer(
    name: str, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int
) -> Quantizer:
    """The quantizer registered as `name` ("pq", "opq", "rq", "lsq" or a plugin's), not fitted
    yet."""
    return lookup(QUANTIZERS, name, "quantizer")(dim, bits, sub_bits, seed, **options)
