"""gslbench.scoring.scoring: the block loop against brute force, bounded memory, threads, errors."""

import numpy as np
import pytest
from runfakes import make_run

from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.evaluation import scoring
from gslbench.evaluation.record import check_metrics_record, sealed
from gslbench.storage import read_json


class FakePQ:
    """A tiny PQ: M sub-spaces of `ksub` centroids; ADC by lookup tables (few codes: many ties)."""

    def __init__(self, dim: int = 6, m: int = 2, ksub: int = 3, seed: int = 0,
                 max_block: int | None = None):
        rng = np.random.default_rng(seed)
        self.m, self.dsub = m, dim // m
        self.centroids = rng.standard_normal((m, ksub, self.dsub)).astype(np.float32)
        self.max_block = max_block
        self.calls = []

    def adc_distances(self, queries: np.ndarray, codes: np.ndarray) -> np.ndarray:
        if self.max_block is not None:
            assert len(queries) <= self.max_block, "evaluate materialised more than a block"
        self.calls.append(len(queries))
        sub = queries.reshape(len(queries), self.m, 1, self.dsub)
        tables = ((sub - self.centroids[None]) ** 2).sum(-1)  # (b, m, ksub)
        out = np.zeros((len(queries), len(codes)), dtype=np.float32)
        for j in range(self.m):
            out += tables[:, j, codes[:, j]]
        return out


class FakeSearch:
    """The search of `codes` under a FakePQ, as `gslbench.quantizers.search` objects are."""

    def __init__(self, quantizer: FakePQ, codes: np.ndarray):
        self.quantizer, self.codes = quantizer, codes

    def __len__(self) -> int:
        return len(self.codes)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        return queries

    def distances(self, queries: np.ndarray) -> np.ndarray:
        return self.quantizer.adc_distances(queries, self.codes)


def make_data(seed: int = 0, n_query: int = 23, n_db: int = 140, n_classes: int = 4):
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((n_query, 6)).astype(np.float32)
    codes = rng.integers(0, 3, size=(n_db, 2)).astype(np.uint8)
    query_labels = (rng.random((n_query, n_classes)) < 0.3).astype(np.uint8)
    database_labels = (rng.random((n_db, n_classes)) < 0.3).astype(np.uint8)
    query_labels[1] = 0
    return queries, query_labels, codes, database_labels


def brute_force_metrics(distances, query_labels, database_labels, map_at, precision_at,
                        recall_at, points=101):
    """Plain per-query loops over the full distance matrix (sorted by (distance, index))."""
    relevant = query_labels.astype(int) @ database_labels.astype(int).T > 0
    n_db = distances.shape[1]
    per_query = []
    for row, rel in zip(distances, relevant, strict=True):
        ranked = rel[np.lexsort((np.arange(n_db), row))]
        positions = np.flatnonzero(ranked) + 1
        hits = np.arange(1, len(positions) + 1)
        precision = hits / positions

        def ap(k, precision=precision, positions=positions):
            inside = precision[positions <= k]
            return inside.mean() if len(inside) else 0.0

        pr = None
        if len(positions):
            pr = [max(precision[hits * (points - 1) >= i * len(positions)]) for i in range(points)]
        per_query.append({
            "map": ap(n_db),
            "map_at": {k: ap(min(k, n_db)) for k in map_at},
            "found_at": {k: int(ranked[:k].sum()) for k in map_at},
            "precision_at": {k: ranked[:k].sum() / min(k, n_db) for k in precision_at},
            "recall_at": {k: ranked[:k].sum() / rel.sum() if rel.sum() else 0.0
                          for k in recall_at},
            "pr": pr,
        })
    return {
        "map": np.mean([q["map"] for q in per_query]),
        "map_at": {str(k): np.mean([q["map_at"][k] for q in per_query]) for k in map_at},
        "precision_at": {str(k): np.mean([q["precision_at"][k] for q in per_query])
                         for k in precision_at},
        "recall_at": {str(k): np.mean([q["recall_at"][k] for q in per_query]) for k in recall_at},
        "pr_curve": np.mean([q["pr"] for q in per_query if q["pr"] is not None], axis=0),
        "n_query_no_relevant": int((relevant.sum(1) == 0).sum()),
        "n_query_no_relevant_at": {str(k): sum(q["found_at"][k] == 0 for q in per_query)
                                   for k in map_at},
    }


def assert_metrics_equal(ours, expected):
    assert ours["map"] == pytest.approx(expected["map"], abs=1e-12)
    for group in ("map_at", "precision_at", "recall_at"):
        assert list(ours[group]) == list(expected[group])
        for k, value in expected[group].items():
            assert ours[group][k] == pytest.approx(value, abs=1e-12), (group, k)
    curve = np.array(ours["pr_curve"])
    np.testing.assert_allclose(curve[:, 1], expected["pr_curve"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(curve[:, 0], np.linspace(0, 1, len(curve)), atol=1e-15)
    assert ours["n_query_no_relevant"] == expected["n_query_no_relevant"]
    assert ours["n_query_no_relevant_at"] == expected["n_query_no_relevant_at"]


OPTIONS = dict(map_at=(5, 50, 1000), precision_at=(1, 10), recall_at=(1, 20, 140))


@pytest.mark.parametrize("seed", range(3))
def test_evaluate_equals_brute_force_on_full_matrix(seed):
    queries, query_labels, codes, database_labels = make_data(seed)
    full = FakePQ(seed=seed).adc_distances(queries, codes)
    assert len(np.unique(full[0])) <= 9 < full.shape[1]  # 3 x 3 codes: ties in every row
    expected = brute_force_metrics(full, query_labels, database_labels, **OPTIONS)
    quantizer = FakePQ(seed=seed, max_block=4)
    ours = scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels,
                               block_size=4, **OPTIONS)
    assert_metrics_equal(ours, expected)
    assert ours["n_query"] == 23 and ours["n_db"] == 140
    assert ours["map_at"]["1000"] == ours["map"]  # capped to the database, key as asked
    assert set(ours["timings_s"]) == {"distances", "ranking", "metrics", "total"}
    assert sorted(quantizer.calls) == sorted([4] * 5 + [3])


def test_block_loop_never_materialises_all_queries():
    queries, query_labels, codes, database_labels = make_data(1, n_query=30)
    quantizer = FakePQ(max_block=7)
    scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels,
                        block_size=7, workers=2, **OPTIONS)
    assert max(quantizer.calls) == 7 and sum(quantizer.calls) == 30

    requested = []

    def blocks(start, stop):
        assert stop - start <= 5
        requested.append((start, stop))
        return FakePQ().adc_distances(queries[start:stop], codes)

    scoring.evaluate_distances(blocks, query_labels, database_labels, block_size=5, **OPTIONS)
    assert sorted(requested) == [(s, min(s + 5, 30)) for s in range(0, 30, 5)]


def test_default_block_size_is_bounded_by_database_size(monkeypatch):
    monkeypatch.setattr(scoring, "BLOCK_PAIRS", 140 * 3)
    queries, query_labels, codes, database_labels = make_data(2)
    quantizer = FakePQ(max_block=3)
    scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels, **OPTIONS)
    assert max(quantizer.calls) == 3


def test_block_size_workers_and_input_kind_do_not_change_results():
    queries, query_labels, codes, database_labels = make_data(4, n_query=41, n_db=230)
    full = FakePQ().adc_distances(queries, codes)
    reference = scoring.evaluate_distances(full, query_labels, database_labels,
                                              block_size=41, workers=1, **OPTIONS)
    reference.pop("timings_s")
    for block_size, workers in ((1, 1), (6, 2), (13, 2), (None, 2), (41, 2)):
        for source in ("matrix", "quantizer"):
            if source == "matrix":
                ours = scoring.evaluate_distances(
                    full, query_labels, database_labels, block_size=block_size,
                    workers=workers, **OPTIONS)
            else:
                ours = scoring.evaluate(FakeSearch(FakePQ(), codes), queries, query_labels, database_labels,
                    block_size=block_size, workers=workers, **OPTIONS)
            ours.pop("timings_s")
            assert ours == reference, (block_size, workers, source)


def test_top_only_ranking_gives_the_same_top_metrics():
    queries, query_labels, codes, database_labels = make_data(5, n_db=300)
    quantizer = FakePQ()
    options = dict(map_at=(5, 40), precision_at=(1, 10), recall_at=(1, 20))
    whole = scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels,
                                **options)
    top = scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels,
                              whole_ranking=False, **options)
    assert top["map"] is None and top["pr_curve"] is None
    for key in ("map_at", "precision_at", "recall_at", "n_query_no_relevant",
                "n_query_no_relevant_at", "n_query", "n_db"):
        assert top[key] == whole[key], key


def test_single_label_protocol_defaults():
    rng = np.random.default_rng(7)
    n_query, n_db = 20, 1200
    one_hot = np.eye(10, dtype=np.uint8)
    query_labels = one_hot[rng.integers(0, 10, n_query)]
    database_labels = one_hot[rng.integers(0, 10, n_db)]
    distances = rng.random((n_query, n_db), dtype=np.float32)
    ours = scoring.evaluate_distances(distances, query_labels, database_labels)
    assert list(ours["map_at"]) == ["100", "1000"]
    assert list(ours["precision_at"]) == ["10", "100", "1000"]
    assert list(ours["recall_at"]) == ["1", "10", "100", "1000"]
    assert len(ours["pr_curve"]) == 101
    assert ours["n_query_no_relevant"] == 0
    # Random distances: precision is about the class frequency (1/10).
    assert 0.05 < ours["precision_at"]["1000"] < 0.15


@pytest.mark.parametrize("change", ["queries_3d", "labels_count", "classes", "codes_count",
                                    "bad_k", "block_size", "workers", "distance_shape"])
def test_bad_input_is_a_user_error(change):
    queries, query_labels, codes, database_labels = make_data(0)
    kwargs = {}
    quantizer = FakePQ()
    if change == "queries_3d":
        queries = queries[:, :, None]
    elif change == "labels_count":
        query_labels = query_labels[:-1]
    elif change == "classes":
        database_labels = database_labels[:, :-1]
    elif change == "codes_count":
        codes = codes[:-1]
    elif change == "bad_k":
        kwargs["map_at"] = (0,)
    elif change == "block_size":
        kwargs["block_size"] = 0
    elif change == "workers":
        kwargs["workers"] = 0
    elif change == "distance_shape":
        quantizer.adc_distances = lambda q, c: np.zeros((len(q), len(c) + 1), np.float32)
    with pytest.raises(GslbenchError):
        scoring.evaluate(FakeSearch(quantizer, codes), queries, query_labels, database_labels, **kwargs)
    with pytest.raises(GslbenchError):
        scoring.evaluate_distances(np.zeros((3, 4), np.float32), np.zeros((3, 2), np.uint8),
                                      np.zeros((5, 2), np.uint8))


def test_a_metrics_record_names_a_known_codebook_fit(tmp_path):
    run = make_run(tmp_path, RunConfig(method="gsl", bits=16), 0.8)
    record = read_json(run.metrics)
    check_metrics_record(record, run.metrics, run.run_id)  # older records: no key, the train fit
    for fit in ("train", "database"):
        check_metrics_record(sealed({**record, "codebooks": fit}), run.metrics, run.run_id)
    for bad in ("test", None, 1):
        with pytest.raises(GslbenchError, match=f"metrics.json: 'codebooks' is {bad!r}, "
                                                "expected one of train, database"):
            check_metrics_record(sealed({**record, "codebooks": bad}), run.metrics, run.run_id)
