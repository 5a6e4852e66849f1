"""gslbench.quantizers.search (ADC / SDC, L2 / IP, the faiss index of the codes) and search-bench
(gslbench.evaluation.speed) against brute force on decoded vectors and plain loops."""

import faiss
import numpy as np
import pytest
from test_quantizers import DIM, FAST, NAMES, TEST, TRAIN, brute_force, fitted_quantizer

from gslbench.errors import GslbenchError
from gslbench.evaluation import scoring, speed
from gslbench.quantizers import FlatSearch, Identity, make_quantizer, make_search
from gslbench.quantizers.search import AdcSearch, SdcSearch, faiss_index

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fitted(one_thread) -> dict:
    return {name: fitted_quantizer(name) for name in NAMES}


def brute_inner(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    return queries.astype(np.float64) @ database.astype(np.float64).T


def assert_close(got: np.ndarray, reference: np.ndarray) -> None:
    scale = np.abs(reference).mean()
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * scale)


# ----------------------------------------------------------------------------- distances


@pytest.mark.parametrize("sub_bits", [8, 4])
@pytest.mark.parametrize("name", NAMES)
def test_every_mode_equals_brute_force_on_decoded_vectors(fitted, name, sub_bits):
    q = fitted[name] if sub_bits == 8 else fitted_quantizer(name, sub_bits=sub_bits)
    codes = q.encode(TEST)
    queries = TRAIN[:29]
    database = q.decode(codes)
    quantized_queries = q.decode(q.encode(queries))  # q̂ = decode(encode(q)), one batch
    references = {
        ("adc", "l2"): brute_force(queries, database),
        ("adc", "ip"): -brute_inner(queries, database),
        ("sdc", "l2"): brute_force(quantized_queries, database),
        ("sdc", "ip"): -brute_inner(quantized_queries, database),
    }
    for (search, metric), reference in references.items():
        searcher = make_search(q, codes, search, metric)
        assert isinstance(searcher, SdcSearch if search == "sdc" else AdcSearch)
        distances = searcher.distances(searcher.prepare(queries))
        assert distances.shape == (29, len(TEST)) and distances.dtype == np.float32
        assert_close(distances, reference)


@pytest.mark.parametrize("name", ["pq", "opq"])
@pytest.mark.parametrize("sub_bits", [1, 2])
def test_two_dimensional_sub_vectors_with_few_words_search_exactly(name, sub_bits):
    """faiss's table kernel for 2-d sub-vectors asserts a multiple of 8 words: with 2 or 4 the
    tables come from numpy, and the faiss index, which would crash, is refused naming the option."""
    q = make_quantizer(name, DIM, DIM // 2 * sub_bits, sub_bits, 0, **FAST[name]).fit(TRAIN)
    assert q.codebook_shape == (DIM // 2, 2**sub_bits, 2) and not q.faiss_searchable
    codes = q.encode(TEST)
    database = q.decode(codes)
    for metric, reference in (("l2", brute_force(TRAIN[:29], database)),
                              ("ip", -brute_inner(TRAIN[:29], database))):
        searcher = make_search(q, codes, "adc", metric)
        assert_close(searcher.distances(searcher.prepare(TRAIN[:29])), reference)
        with pytest.raises(GslbenchError, match=f"^--sub-bits {sub_bits}: faiss's IndexPQ cannot"):
            faiss_index(q, codes, metric)
    assert fitted_quantizer(name, sub_bits=4).faiss_searchable  # 4-d sub-vectors


def test_ip_tables_give_the_inner_product_with_the_decoded_vector(fitted):
    for name in NAMES:
        q = fitted[name]
        codes = q.encode(TEST[:50])
        tables = q.ip_tables(TRAIN[:7])
        assert tables.shape == (7, q.n_codebooks, q.codebook_size) and tables.dtype == np.float32
        indices = q.unpack(codes)
        summed = sum(tables[:, m, indices[:, m]] for m in range(q.n_codebooks))
        assert_close(summed, brute_inner(TRAIN[:7], q.decode(codes)))


def test_pq_sdc_is_the_codebook_to_codebook_tables_and_faiss_sdc(fitted):
    pq = fitted["pq"]
    codes, queries = pq.encode(TEST), TRAIN[:11]
    codebooks = pq.codebooks.astype(np.float64)  # (M, K, dsub)
    c2c = ((codebooks[:, :, None] - codebooks[:, None]) ** 2).sum(-1)  # (M, K, K)
    query_indices, indices = pq.unpack(pq.encode(queries)), pq.unpack(codes)
    reference = sum(c2c[m][query_indices[:, m][:, None], indices[:, m][None]]
                    for m in range(pq.n_codebooks))
    search = make_search(pq, codes, "sdc")
    distances = search.distances(search.prepare(queries))
    assert_close(distances, reference)
    index = faiss_index(pq, codes)
    index.search_type = faiss.IndexPQ.ST_SDC  # faiss's own symmetric search, its own tables
    index.pq.compute_sdc_table()
    faiss_distances, faiss_ids = index.search(queries, len(codes))
    assert_close(np.take_along_axis(distances, faiss_ids, axis=1), faiss_distances)


def test_sdc_encodes_all_queries_at_once_so_lsq_blocks_do_not_matter(fitted):
    lsq = fitted["lsq"]
    codes = lsq.encode(TEST)
    queries = TRAIN[:60]
    labels = np.eye(3, dtype=np.uint8)
    query_labels, database_labels = labels[np.arange(60) % 3], labels[np.arange(len(TEST)) % 3]
    search = make_search(lsq, codes, "sdc")
    np.testing.assert_array_equal(search.prepare(queries), lsq.encode(queries))
    results = [scoring.evaluate(search, queries, query_labels, database_labels, block_size=size,
                                workers=1) for size in (7, 60)]
    for key in ("map", "map_at", "precision_at", "recall_at", "pr_curve"):
        assert results[0][key] == results[1][key], key


def test_float_codes_are_exact_in_every_mode():
    identity = Identity(TEST.shape[1])
    codes = identity.encode(TEST)
    for search in ("adc", "sdc"):
        for metric, reference in (("l2", brute_force(TRAIN[:6], TEST)),
                                  ("ip", -brute_inner(TRAIN[:6], TEST))):
            searcher = make_search(identity, codes, search, metric)
            assert isinstance(searcher, FlatSearch)
            assert_close(searcher.distances(searcher.prepare(TRAIN[:6])), reference)


def test_inner_product_ranking_is_descending_with_ties_by_index(fitted):
    """evaluate with ip against a plain per-query loop sorting by (-<q, x̂>, index)."""
    pq = make_quantizer("pq", TEST.shape[1], 6, 3).fit(TRAIN)  # 64 codes for 300 items: ties
    codes = pq.encode(TEST)
    queries = TRAIN[:25]
    rng = np.random.default_rng(0)
    query_labels = (rng.random((25, 4)) < 0.4).astype(np.uint8)
    database_labels = (rng.random((len(TEST), 4)) < 0.4).astype(np.uint8)
    search = make_search(pq, codes, metric="ip")
    got = scoring.evaluate(search, queries, query_labels, database_labels, map_at=(50,),
                           precision_at=(10,), recall_at=(20,))
    products = search.distances(queries) * -1  # the exact float32 products that were ranked
    assert len(np.unique(products[0])) < len(TEST) / 2  # ties do occur
    relevant = query_labels.astype(int) @ database_labels.astype(int).T > 0
    aps, aps_50, precisions = [], [], []
    for row, rel in zip(products, relevant, strict=True):
        order = sorted(range(len(row)), key=lambda i, row=row: (-row[i], i))
        ranked = rel[order]
        hits = np.cumsum(ranked)
        found = [hits[i] / (i + 1) for i in range(len(ranked)) if ranked[i]]
        aps.append(np.mean(found) if found else 0.0)
        top = [hits[i] / (i + 1) for i in range(50) if ranked[i]]
        aps_50.append(np.mean(top) if top else 0.0)
        precisions.append(hits[9] / 10)
    assert got["map"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert got["map_at"]["50"] == pytest.approx(np.mean(aps_50), abs=1e-12)
    assert got["precision_at"]["10"] == pytest.approx(np.mean(precisions), abs=1e-12)


def test_unknown_mode_or_metric_is_a_user_error(fitted):
    with pytest.raises(GslbenchError, match="--search 'bdc'"):
        make_search(fitted["pq"], fitted["pq"].encode(TEST), "bdc")
    with pytest.raises(GslbenchError, match="--metric 'cosine'"):
        make_search(fitted["pq"], fitted["pq"].encode(TEST), metric="cosine")


# ----------------------------------------------------------------------------- faiss index


@pytest.mark.parametrize("metric", ["l2", "ip"])
@pytest.mark.parametrize("name", NAMES)
def test_faiss_index_round_trips_with_the_same_codes_and_distances(fitted, name, metric, tmp_path):
    q = fitted[name]
    codes = q.encode(TEST)
    path = tmp_path / f"{name}.index"
    faiss.write_index(faiss_index(q, codes, metric), str(path))
    index = faiss.read_index(str(path))
    assert index.ntotal == len(TEST)
    inner = faiss.downcast_index(index.index) if name == "opq" else index
    stored = faiss.vector_to_array(inner.codes).reshape(len(TEST), -1)
    np.testing.assert_array_equal(stored[:, : q.code_bytes], codes)  # the codes as they are
    norm_bytes = 4 if metric == "l2" and name in ("rq", "lsq") else 0
    assert index.sa_code_size() == q.code_bytes + norm_bytes
    np.testing.assert_array_equal(index.sa_encode(TEST)[:, : q.code_bytes], codes)  # same encoder
    queries = TRAIN[:9]
    found, ids = index.search(queries, len(TEST))
    ours = make_search(q, codes, metric=metric).distances(queries)
    expected = np.take_along_axis(ours, ids, axis=1)
    assert_close(found if metric == "l2" else -found, expected)
    np.testing.assert_array_equal(np.sort(ids, axis=1), np.tile(np.arange(len(TEST)), (9, 1)))


def test_faiss_index_of_float_codes_is_flat():
    identity = Identity(TEST.shape[1])
    for metric, expected in (("l2", faiss.IndexFlatL2), ("ip", faiss.IndexFlatIP)):
        index = faiss_index(identity, identity.encode(TEST), metric)
        assert isinstance(index, expected) and index.ntotal == len(TEST)
        np.testing.assert_array_equal(index.reconstruct_n(0, len(TEST)), TEST)


# ----------------------------------------------------------------------------- search-bench


def plain_neighbours(queries: np.ndarray, database: np.ndarray, k: int) -> np.ndarray:
    distances = brute_force(queries, database)
    return np.stack([np.lexsort((np.arange(len(row)), row))[:k] for row in distances])


def test_exact_neighbours_are_brute_force_with_ties_by_index():
    database = np.repeat(TEST[:100], 2, axis=0)  # every vector twice: ties
    neighbours, distances = speed.exact_neighbours(TRAIN[:13], database, "l2", 10)
    truth = plain_neighbours(TRAIN[:13], database, 10)
    np.testing.assert_array_equal(neighbours, truth)
    assert_close(distances, np.take_along_axis(brute_force(TRAIN[:13], database), truth, axis=1))
    by_ip, _ = speed.exact_neighbours(TRAIN[:13], database, "ip", 10)
    products = brute_inner(TRAIN[:13], database)
    for row, found in zip(products, by_ip, strict=True):
        np.testing.assert_array_equal(found, np.lexsort((np.arange(len(row)), -row))[:10])


def test_search_bench_recall_against_a_brute_force_reference():
    pq = make_quantizer("pq", TEST.shape[1], 64, **FAST["pq"]).fit(TRAIN)  # 8 codebooks
    database, queries = TEST, TRAIN[:40]
    codes = pq.encode(database)
    truth = plain_neighbours(queries, database, 20)
    adc = brute_force(queries, pq.decode(codes))
    assert len(np.unique(adc)) == adc.size  # no ties: the returned sets are unambiguous
    returned = np.argsort(adc, axis=1)[:, :20]
    measured = speed.measure_index(faiss_index(pq, codes), queries, truth, 20, (1, 5, 20),
                                   single_queries=7, repeats=2)
    for r in (1, 5, 20):
        expected = np.mean([len(set(a[:r]) & set(b[:r])) / r for a, b in zip(returned, truth,
                                                                                strict=True)])
        nn_expected = np.mean([t[0] in a[:r] for a, t in zip(returned, truth, strict=True)])
        assert measured["recall_at"][str(r)] == pytest.approx(expected, abs=1e-12)
        assert measured["nn_recall_at"][str(r)] == pytest.approx(nn_expected, abs=1e-12)
    assert measured["bytes_per_vector"] == 8 and measured["index"] == "IndexPQ"
    assert measured["batch1_queries"] == 7
    assert measured["qps_batched"] > 0 and measured["qps_batch1"] > 0
