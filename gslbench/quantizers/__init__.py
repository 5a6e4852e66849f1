"""Vector quantizers behind one interface: PQ, OPQ, RQ and LSQ (one module each), the `float`
ceiling's `Identity`, their HDF5 storage (`io`) and the search over a database of codes
(`search`). `make_quantizer(name, dim, bits, sub_bits, seed)` builds one by name; `QUANTIZERS`
holds the built-ins and the plugins of the entry-point group `gslbench.quantizers`
(`gslbench.plugins`). Importing them loads neither faiss nor torch (`gslbench.lazy`)."""

from gslbench.quantizers.base import Assignment, Quantizer
from gslbench.quantizers.identity import Identity
from gslbench.quantizers.io import load_quantizer, save_quantizer
from gslbench.quantizers.registry import BUILTIN_QUANTIZERS, QUANTIZERS, make_quantizer
from gslbench.quantizers.search import AdcSearch, FlatSearch, make_search

__all__ = ["BUILTIN_QUANTIZERS", "QUANTIZERS", "AdcSearch", "Assignment", "FlatSearch",
           "Identity", "Quantizer", "load_quantizer", "make_quantizer", "make_search",
           "save_quantizer"]
