"""Vector quantizers behind one interface: PQ, OPQ, RQ and LSQ (one module each), the `float`
ceiling's `Identity`, their HDF5 storage (`io`) and the search over a database of codes
(`search`). `make_quantizer(name, dim, bits, sub_bits, seed)` builds one by name."""

from gslbench.quantizers.base import Assignment, Quantizer
from gslbench.quantizers.identity import Identity
from gslbench.quantizers.io import load_quantizer, save_quantizer
from gslbench.quantizers.registry import QUANTIZERS, make_quantizer
from gslbench.quantizers.search import AdcSearch, FlatSearch, make_search

__all__ = ["QUANTIZERS", "AdcSearch", "Assignment", "FlatSearch", "Identity", "Quantizer",
           "load_quantizer", "make_quantizer", "make_search", "save_quantizer"]
