"""The registered quantizers, by name: the built-ins, then the plugins of the entry-point group
`gslbench.quantizers` (`gslbench.plugins`: a `Quantizer` subclass whose `name` is the entry
point's)."""

from __future__ import annotations

from typing import Any

from gslbench.errors import lookup
from gslbench.plugins import named_subclass
from gslbench.quantizers.base import Quantizer, positive_int
from gslbench.quantizers.lsq import LSQ
from gslbench.quantizers.opq import OPQ
from gslbench.quantizers.pq import PQ
from gslbench.quantizers.rq import RQ

BUILTIN_QUANTIZERS: dict[str, type[Quantizer]] = {"pq": PQ, "opq": OPQ, "rq": RQ, "lsq": LSQ}
# the built-ins, then the plugins (`gslbench.plugins.register_plugins`, run by gslbench.config)
QUANTIZERS: dict[str, type[Quantizer]] = dict(BUILTIN_QUANTIZERS)


def plugin_problem(name: str, loaded: Any) -> str | None:
    """What is wrong with `loaded` as the plugin quantizer `name` (None: nothing): also its
    default `OPTIONS`, checked here as a run checks the options it is given."""
    problem = named_subclass(name, loaded, Quantizer)
    options = getattr(loaded, "OPTIONS", None)
    if problem or not isinstance(options, dict):
        return problem or "its OPTIONS is not a dict of option names and default values"
    for key, value in options.items():
        if not (isinstance(key, str) and positive_int(value)):
            return f"its default option {key}={value!r} is not a positive integer"
    return None


def make_quantizer(
    name: str, dim: int, bits: int, sub_bits: int = 8, seed: int = 0, **options: int
) -> Quantizer:
    """The quantizer registered as `name` ("pq", "opq", "rq", "lsq" or a plugin's), not fitted
    yet."""
    return lookup(QUANTIZERS, name, "quantizer")(dim, bits, sub_bits, seed, **options)
