"""Searching a database of codes: one search object per (quantizer, codes, mode, metric), prepared
once, and the same database as a faiss index (`faiss_index`).

Definitions, for a query q (its float representation) and a database item x with code c, decoded
as x̂ = decode(c):

- **ADC** (asymmetric, `search="adc"`): the query stays float. `metric="l2"`: the distance is
  ||q - x̂||^2; `metric="ip"`: the distance is -<q, x̂>, so that ascending distance (the metrics'
  ranking, ties by database index) is descending inner product, equal products tied by index.
- **SDC** (symmetric, `search="sdc"`): the query is quantized too, q̂ = decode(encode(q)), and the
  distance is between the two reconstructions: ||q̂ - x̂||^2, or -<q̂, x̂>. All queries are encoded
  in one `encode` call (`prepare`), so an encoder whose codes depend on the batch (LSQ) gives the
  same codes however the caller blocks the queries.
- **float** runs (`Identity`): codes are the float vectors themselves, so both modes are the exact
  search: ||q - x||^2 or -<q, x>.

How: `AdcSearch` sums per-query lookup tables over the M codebooks with
`torch.nn.functional.embedding_bag`: `Quantizer.adc_tables` (for l2, plus each item's squared
norm for additive quantizers) or minus `Quantizer.ip_tables` (for ip). `SdcSearch` is ADC with
the tables of q̂: for PQ/OPQ those are rows of the codebook-to-codebook tables,
||c_{m,j} - c_{m,i}||^2 or <c_{m,j}, c_{m,i}> for the query's codeword j (computed per block of
queries rather than stored: K^2 entries per codebook would not fit at 16-bit codebooks); for
additive quantizers they give ||q̂||^2 - 2 <q̂, x̂> + ||x̂||^2 exactly as ADC does for a float
query. What depends only on the database codes (unpacked indices, item norms) is computed once.
`FlatSearch` is the exact search over float codes. `make_search` picks the one asked for.
"""

from __future__ import annotations

import numpy as np

from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.quantizers.base import Quantizer
from gslbench.quantizers.identity import Identity

faiss = lazy_import("faiss")
torch = lazy_import("torch")
F = lazy_import("torch.nn.functional")

ADC_BLOCK = 16384  # database items per embedding_bag call
SEARCHES = ("adc", "sdc")
METRICS = ("l2", "ip")
# faiss's names (read on use: faiss loads with the first search): the metric of each of METRICS,
# the additive quantizers' search type (l2: the item norm stored as a float) and their indexes
FAISS_METRICS = {"l2": "METRIC_L2", "ip": "METRIC_INNER_PRODUCT"}
SEARCH_TYPES = {"l2": "ST_norm_float", "ip": "ST_LUT_nonorm"}
ADDITIVE_INDEXES = {"rq": ("IndexResidualQuantizer", "rq"),
                    "lsq": ("IndexLocalSearchQuantizer", "lsq")}


def check_mode(search: str, metric: str) -> None:
    """A user error unless `search` is adc or sdc and `metric` l2 or ip."""
    if search not in SEARCHES:
        raise GslbenchError(f"--search {search!r}: expected one of {', '.join(SEARCHES)}")
    if metric not in METRICS:
        raise GslbenchError(f"--metric {metric!r}: expected one of {', '.join(METRICS)}")


class AdcSearch:
    """ADC over one database: `distances(prepare(queries))` -> (nq, n) float32."""

    def __init__(self, quantizer: Quantizer, codes: np.ndarray, metric: str = "l2") -> None:
        """codes: (n, code_bytes) uint8 packed codes of `quantizer` (checked); metric l2 or ip."""
        check_mode("adc", metric)
        self.quantizer, self.metric = quantizer, metric
        offsets = np.arange(quantizer.n_codebooks, dtype=np.int64) * quantizer.codebook_size
        self.bags = torch.from_numpy(quantizer.unpack(quantizer.check_codes(codes)) + offsets)
        norms = quantizer.item_norms(codes) if metric == "l2" else None
        self.norms = None if norms is None else torch.from_numpy(norms)

    def __len__(self) -> int:
        return len(self.bags)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> what `distances` takes for them: themselves."""
        return np.ascontiguousarray(queries, dtype=np.float32)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> (nq, n) float32 distances by ADC (module docstring)."""
        return self._scan(queries)

    def _scan(self, vectors: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, n) float32: the tables of `vectors` summed over each code."""
        if self.metric == "l2":
            tables = self.quantizer.adc_tables(vectors)
        else:
            tables = self.quantizer.ip_tables(vectors)
            np.negative(tables, out=tables)
        n_queries = len(tables)
        weight = torch.from_numpy(tables.reshape(n_queries, -1).T.copy())  # (M * K, nq)
        distances = torch.empty(n_queries, len(self.bags))
        for start in range(0, len(self.bags), ADC_BLOCK):
            block = self.bags[start : start + ADC_BLOCK]
            distances[:, start : start + len(block)] = F.embedding_bag(block, weight, mode="sum").T
        if self.norms is not None:
            distances += self.norms
        return distances.numpy()


class SdcSearch(AdcSearch):
    """SDC over one database: `distances(prepare(queries))` -> (nq, n) float32."""

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> (nq, code_bytes) uint8 their codes, in one encode call."""
        return self.quantizer.encode(queries)

    def distances(self, query_codes: np.ndarray) -> np.ndarray:
        """(nq, code_bytes) uint8 query codes -> (nq, n) float32 distances between the
        reconstructions (module docstring)."""
        return self._scan(self.quantizer.decode(query_codes))


class FlatSearch:
    """Exact search over float codes (`Identity`): `distances(prepare(queries))` -> (nq, n)."""

    def __init__(self, quantizer: Identity, codes: np.ndarray, metric: str = "l2") -> None:
        """codes: (n, 4 * dim) uint8, the database's float32 bytes; metric l2 or ip."""
        check_mode("adc", metric)
        self.metric = metric
        self.database = torch.from_numpy(quantizer.decode(codes))
        self.norms = (self.database**2).sum(1)

    def __len__(self) -> int:
        return len(self.database)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 queries -> themselves (decoding is exact: ADC and SDC agree)."""
        return np.ascontiguousarray(queries, dtype=np.float32)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """(nq, dim) float32 -> (nq, n) float32 exact ||q - x||^2 (l2) or -<q, x> (ip)."""
        queries = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
        products = queries @ self.database.T
        if self.metric == "ip":
            return products.neg_().numpy()
        distances = (queries**2).sum(1, keepdim=True) - 2 * products
        return (distances + self.norms).clamp_min_(0).numpy()


def make_search(quantizer: Quantizer | Identity, codes: np.ndarray, search: str = "adc",
                metric: str = "l2") -> AdcSearch | SdcSearch | FlatSearch:
    """The search of `codes` (n, code_bytes) uint8 under `quantizer`: exact for float codes,
    ADC or SDC otherwise, by squared L2 distance or by inner product (module docstring)."""
    check_mode(search, metric)
    if isinstance(quantizer, Identity):
        return FlatSearch(quantizer, codes, metric)
    return (SdcSearch if search == "sdc" else AdcSearch)(quantizer, codes, metric)


def faiss_index(quantizer: Quantizer | Identity, codes: np.ndarray,
                metric: str = "l2") -> faiss.Index:
    """The database as a faiss index that holds these very codes and searches by ADC.

    codes: (n, code_bytes) uint8 of `quantizer`, added as they are (no re-encoding). PQ:
    `IndexPQ` with the quantizer's ProductQuantizer copied in; OPQ: an `IndexPreTransform` of an
    `OPQMatrix` holding the learned rotation over that IndexPQ; RQ / LSQ:
    `IndexResidualQuantizer` / `IndexLocalSearchQuantizer` with the quantizer copied in, each code
    followed by the item's squared norm as a float32 for l2 (faiss's ST_norm_float; 4 bytes more
    per vector), nothing more for ip (ST_LUT_nonorm); float codes: `IndexFlatL2` / `IndexFlatIP`.
    faiss's search then returns the ADC distances of `AdcSearch` for l2 and the inner products
    <q, x̂> (the negated distances) for ip, and the index encodes new vectors as `quantizer`
    does (the same faiss quantizer and settings).
    """
    check_mode("adc", metric)
    if isinstance(quantizer, Identity):
        flat = faiss.IndexFlatL2 if metric == "l2" else faiss.IndexFlatIP
        index = flat(quantizer.dim)
        index.add(quantizer.decode(codes))
        return index
    codes = quantizer.check_codes(codes)
    if quantizer.name in ADDITIVE_INDEXES:
        return _additive_index(quantizer, codes, metric)
    if not quantizer.faiss_searchable:
        raise GslbenchError(f"--sub-bits {quantizer.sub_bits}: faiss's IndexPQ cannot search "
                            f"{quantizer.codebook_size}-word codebooks of 2-d sub-vectors (it "
                            "needs a multiple of 8 words); gslbench evaluate can")
    index = faiss.IndexPQ(quantizer.dim, quantizer.n_codebooks, quantizer.sub_bits,
                        getattr(faiss, FAISS_METRICS[metric]))
    index.pq = quantizer.faiss_quantizer  # a copy
    index.is_trained = True
    index.add_sa_codes(codes)
    if quantizer.name != "opq":
        return index
    rotation = faiss.OPQMatrix(quantizer.dim, quantizer.n_codebooks)
    faiss.copy_array_to_vector(quantizer.rotation.ravel(), rotation.A)
    rotation.is_trained = rotation.is_orthonormal = True
    return faiss.IndexPreTransform(rotation, index)


def _additive_index(quantizer: Quantizer, codes: np.ndarray, metric: str) -> faiss.Index:
    """IndexResidualQuantizer / IndexLocalSearchQuantizer holding `codes` (see `faiss_index`)."""
    index_class, member = ADDITIVE_INDEXES[quantizer.name]
    index = getattr(faiss, index_class)(quantizer.dim, quantizer.n_codebooks, quantizer.sub_bits,
                                        getattr(faiss, FAISS_METRICS[metric]))
    setattr(index, member, quantizer.faiss_quantizer)  # a copy
    additive = getattr(index, member)
    additive.search_type = getattr(faiss.AdditiveQuantizer, SEARCH_TYPES[metric])
    additive.set_derived_values()  # the code size with the norm's bytes
    index.code_size = additive.code_size
    index.is_trained = True
    if metric == "l2":
        indices = np.ascontiguousarray(quantizer.unpack(codes), dtype=np.int32)
        norms = np.ascontiguousarray(quantizer.item_norms(codes), dtype=np.float32)
        packed = np.zeros((len(codes), additive.code_size), dtype=np.uint8)
        additive.pack_codes(len(codes), faiss.swig_ptr(indices), faiss.swig_ptr(packed), -1,
                            faiss.swig_ptr(norms))
        codes = packed
    index.add_sa_codes(codes)
    return index
