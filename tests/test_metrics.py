"""gslbench.metrics against independent references: sklearn, plain loops, brute force."""

import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from gslbench.evaluation import metrics

# ----------------------------------------------------------------------------- references


def reference_ranking(distances: np.ndarray) -> np.ndarray:
    """Sort each row by (distance, index) with np.lexsort: the documented tie-break."""
    index = np.arange(distances.shape[1])
    return np.stack([np.lexsort((index, row)) for row in distances])


def reference_relevance(query_labels: np.ndarray, database_labels: np.ndarray) -> np.ndarray:
    return query_labels.astype(np.int64) @ database_labels.astype(np.int64).T > 0


def reference_ap(ranked: np.ndarray) -> float:
    """AP over the ranking given (a plain loop): mean precision at the relevant items found."""
    hits, total = 0, 0.0
    for position, relevant in enumerate(ranked, start=1):
        if relevant:
            hits += 1
            total += hits / position
    return total / hits if hits else 0.0


def reference_pr(ranked: np.ndarray, points: int) -> np.ndarray:
    """Interpolated precision at recall i/(points-1): max precision where recall >= level."""
    n_relevant = int(ranked.sum())
    precisions, recalls_scaled = [], []
    hits = 0
    for position, relevant in enumerate(ranked, start=1):
        hits += int(relevant)
        precisions.append(hits / position)
        recalls_scaled.append(hits * (points - 1))  # recall >= i/(points-1) <=> this >= i * n_rel
    out = []
    for level in range(points):
        out.append(
            max(p for p, r in zip(precisions, recalls_scaled, strict=True) if r >= level * n_relevant)
        )
    return np.array(out)


def random_case(seed: int, n_query: int = 17, n_db: int = 120, n_classes: int = 5,
                density: float = 0.25, levels: int = 6):
    """Integer-valued distances (many ties), multi-hot labels, some queries without labels."""
    rng = np.random.default_rng(seed)
    distances = rng.integers(0, levels, size=(n_query, n_db)).astype(np.float32)
    query_labels = (rng.random((n_query, n_classes)) < density).astype(np.uint8)
    database_labels = (rng.random((n_db, n_classes)) < density).astype(np.uint8)
    query_labels[0] = 0  # no relevant item at all
    return distances, query_labels, database_labels


def ranked_truth(distances, query_labels, database_labels):
    ranking = reference_ranking(distances)
    relevant = reference_relevance(query_labels, database_labels)
    return np.take_along_axis(relevant, ranking, axis=1), relevant.sum(axis=1)


# ----------------------------------------------------------------------------- relevance


@pytest.mark.parametrize("n_classes", [1, 3, 8, 9, 16, 17, 32, 33, 64, 65, 81, 130])
def test_relevance_is_the_label_matrix_product(n_classes):
    rng = np.random.default_rng(n_classes)
    query_labels = (rng.random((13, n_classes)) < 0.1).astype(np.uint8)
    database_labels = (rng.random((40, n_classes)) < 0.1).astype(np.uint8)
    truth = reference_relevance(query_labels, database_labels)
    assert truth.any() and not truth.all()
    assert np.array_equal(metrics.relevance(query_labels, database_labels), truth)

    query_packed = metrics.pack_labels(query_labels)
    database_packed = metrics.pack_labels(database_labels)
    ranking = rng.permuted(np.tile(np.arange(40), (13, 1)), axis=1)[:, :25]
    assert np.array_equal(
        metrics.ranked_relevance(query_packed, database_packed, ranking),
        np.take_along_axis(truth, ranking, axis=1),
    )
    patterns, counts = metrics.label_patterns(database_packed)
    assert counts.sum() == 40
    assert np.array_equal(
        metrics.count_relevant(query_packed, patterns, counts), truth.sum(axis=1)
    )


def test_single_label_one_hot_relevance_is_same_class():
    rng = np.random.default_rng(1)
    query_classes, database_classes = rng.integers(0, 10, 30), rng.integers(0, 10, 200)
    one_hot = np.eye(10, dtype=np.uint8)
    relevant = metrics.relevance(one_hot[query_classes], one_hot[database_classes])
    assert np.array_equal(relevant, query_classes[:, None] == database_classes[None, :])


# ----------------------------------------------------------------------------- ranking


@pytest.mark.parametrize("seed", range(5))
def test_rank_breaks_ties_by_index_whole_and_partial(seed):
    rng = np.random.default_rng(seed)
    n = 300
    distances = rng.integers(-3, 4, size=(9, n)).astype(np.float32)  # heavy ties, negatives
    distances[0] = 1.0  # all tied
    distances[1, ::2] = -0.0  # -0.0 ties with 0.0
    distances[1, 1::2] = 0.0
    distances[2] = rng.standard_normal(n).astype(np.float32) * 1e30
    distances[3, :10] = [np.inf, -np.inf, 1e-45, -1e-45, 3.4e38, -3.4e38, 0, 2, 2, np.inf]
    truth = reference_ranking(distances)
    whole = metrics.rank(distances)
    assert whole.dtype == np.int64 and whole.shape == (9, n)
    assert np.array_equal(whole, truth)
    for top in (1, 2, 7, 50, 74, 75, 76, 150, 299, 300, 1000):
        ranked = metrics.rank(distances, top)
        assert ranked.dtype == np.int64 and ranked.shape == (9, min(top, n))
        assert np.array_equal(ranked, truth[:, :top]), top


@pytest.mark.parametrize("seed", range(4))
def test_rank_relevance_is_the_relevance_of_the_ranking(seed):
    rng = np.random.default_rng(seed)
    n = 70000  # keys spanning more than 16 bits: both radix passes matter
    distances = np.empty((6, n), dtype=np.float32)
    distances[0] = rng.integers(0, 5, n)  # heavy ties, non-negative: the float bits as keys
    distances[1] = rng.random(n) * 3 + 0.5  # 25-bit span of keys
    distances[2] = rng.standard_normal(n)  # negatives: order keys
    distances[3, ::2], distances[3, 1::2] = -0.0, 0.0  # -0.0 ties with 0.0
    distances[4] = rng.standard_normal(n) * 1e30  # keys spanning > 2**31: through rank
    distances[5] = np.float32(1.0) + rng.integers(0, 3, n) * np.float32(2**-23)  # 1-ulp steps
    relevant = rng.random((6, n)) < 0.3
    expected = np.take_along_axis(relevant, reference_ranking(distances), axis=1)
    got = metrics.rank_relevance(distances, relevant)
    assert got.dtype == bool and np.array_equal(got, expected)
    empty = np.zeros((0, 4), np.float32)
    assert metrics.rank_relevance(empty, empty.astype(bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="same"):
        metrics.rank_relevance(distances, relevant[:, :5])


def test_rank_partial_with_ties_at_the_boundary():
    # The 10th smallest distance is shared by many items on both sides of the cut.
    distances = np.full((2, 1000), 5.0, dtype=np.float32)
    distances[:, 990:] = 0.0
    distances[1, ::3] = 4.0
    truth = reference_ranking(distances)
    for top in (5, 10, 11, 20, 200):
        assert np.array_equal(metrics.rank(distances, top), truth[:, :top])


def test_rank_nan_last_and_empty():
    distances = np.array([[np.nan, 1.0, np.nan, 0.0]], dtype=np.float32)
    assert metrics.rank(distances).tolist() == [[3, 1, 0, 2]]
    assert metrics.rank(distances, 2).tolist() == [[3, 1]]
    assert metrics.rank(np.zeros((0, 5), np.float32)).shape == (0, 5)


# ----------------------------------------------------------------------------- AP


@pytest.mark.parametrize("seed", range(6))
def test_ap_matches_sklearn_without_ties(seed):
    rng = np.random.default_rng(seed)
    n_query, n_db = 15, 250
    distances = np.stack([rng.permutation(n_db) for _ in range(n_query)]).astype(np.float32)
    distances += rng.random((n_query, n_db), dtype=np.float32) * 0.5  # distinct, no ties
    query_labels = (rng.random((n_query, 4)) < 0.3).astype(np.uint8)
    query_labels[0] = 0
    database_labels = (rng.random((n_db, 4)) < 0.3).astype(np.uint8)
    relevant = reference_relevance(query_labels, database_labels)
    ranked = np.take_along_axis(relevant, metrics.rank(distances), axis=1)
    ap = metrics.average_precision(ranked)
    for i in range(n_query):
        if relevant[i].any():
            expected = average_precision_score(relevant[i], -distances[i].astype(np.float64))
            assert ap[i] == pytest.approx(expected, abs=1e-12)
        else:
            assert ap[i] == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_ap_with_ties_matches_plain_loop(seed):
    distances, query_labels, database_labels = random_case(seed, levels=3 + seed)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    packed_q, packed_db = metrics.pack_labels(query_labels), metrics.pack_labels(database_labels)
    ours = np.take_along_axis(
        metrics.relevance(query_labels, database_labels), metrics.rank(distances), axis=1
    )
    assert np.array_equal(ours, ranked)
    assert np.array_equal(
        metrics.ranked_relevance(packed_q, packed_db, metrics.rank(distances)), ranked
    )
    block = metrics.query_metrics(ours, n_relevant)
    expected = [reference_ap(row) for row in ranked]
    np.testing.assert_allclose(block.ap, expected, rtol=0, atol=1e-12)
    assert block.ap[0] == 0.0 and n_relevant[0] == 0


@pytest.mark.parametrize("seed", range(8))
def test_map_at_k_precision_recall_match_plain_loops(seed):
    distances, query_labels, database_labels = random_case(seed, n_db=90, density=0.15)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    ks = (1, 3, 10, 40, 90, 500)
    block = metrics.query_metrics(
        ranked, n_relevant, map_at=ks, precision_at=ks, recall_at=ks
    )
    summary = metrics.summarize([block], n_db=90)
    for k in ks:
        top = ranked[:, :k]
        ap_at = [reference_ap(row) for row in top]
        np.testing.assert_allclose(block.ap_at[k], ap_at, rtol=0, atol=1e-12)
        assert np.array_equal(block.n_found_at[k], top.sum(axis=1))
        precision = top.sum(axis=1) / min(k, 90)
        np.testing.assert_allclose(block.precision_at[k], precision, rtol=0, atol=1e-15)
        recall = [t / r if r else 0.0 for t, r in zip(top.sum(axis=1), n_relevant, strict=True)]
        np.testing.assert_allclose(block.recall_at[k], recall, rtol=0, atol=1e-15)
        assert summary["map_at"][str(k)] == pytest.approx(np.mean(ap_at), abs=1e-12)
        assert summary["precision_at"][str(k)] == pytest.approx(precision.mean(), abs=1e-12)
        assert summary["recall_at"][str(k)] == pytest.approx(np.mean(recall), abs=1e-12)
        assert summary["n_query_no_relevant_at"][str(k)] == int((top.sum(axis=1) == 0).sum())
    assert summary["map_at"]["90"] == summary["map_at"]["500"] == summary["map"]
    assert summary["n_query_no_relevant"] == int((n_relevant == 0).sum()) >= 1
    assert summary["n_query"] == 17 and summary["n_db"] == 90


def test_map_at_k_divides_by_relevant_retrieved():
    # Relevant at ranks 2 and 5 among 10 items, 4 relevant in all.
    ranked = np.zeros((1, 10), dtype=bool)
    ranked[0, [1, 4, 7, 9]] = True
    block = metrics.query_metrics(ranked, np.array([4]), map_at=(5, 1))
    assert block.ap_at[5][0] == pytest.approx((1 / 2 + 2 / 5) / 2)
    assert block.ap_at[1][0] == 0.0 and block.n_found_at[1][0] == 0
    assert block.ap[0] == pytest.approx((1 / 2 + 2 / 5 + 3 / 8 + 4 / 10) / 4)


def test_partial_ranking_gives_the_same_top_metrics():
    distances, query_labels, database_labels = random_case(3, n_db=200)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    ks = dict(map_at=(5, 20), precision_at=(1, 20), recall_at=(3, 10))
    whole = metrics.query_metrics(ranked, n_relevant, **ks)
    top = metrics.query_metrics(ranked[:, :20], n_relevant, n_db=200, **ks)
    assert top.ap is None and top.pr_precision is None
    for name in ("ap_at", "precision_at", "recall_at", "n_found_at"):
        for k, values in getattr(whole, name).items():
            assert np.array_equal(getattr(top, name)[k], values)
    with pytest.raises(ValueError):
        metrics.query_metrics(ranked[:, :20], n_relevant, n_db=200, map_at=(21,))


# ----------------------------------------------------------------------------- PR curve


@pytest.mark.parametrize("seed", range(5))
def test_pr_curve_matches_plain_loop(seed):
    distances, query_labels, database_labels = random_case(seed, n_db=60, density=0.3)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    for points in (2, 11, 101):
        block = metrics.query_metrics(ranked, n_relevant, pr_points=points)
        assert block.pr_precision.shape == (17, points)
        for i in range(17):
            if n_relevant[i]:
                np.testing.assert_allclose(
                    block.pr_precision[i], reference_pr(ranked[i], points), rtol=0, atol=1e-15
                )
            else:
                assert not block.pr_precision[i].any()
        recall, precision = metrics.pr_curve(ranked, points)
        expected = np.mean([reference_pr(r, points) for r in ranked[n_relevant > 0]], axis=0)
        np.testing.assert_allclose(precision, expected, rtol=0, atol=1e-12)
        np.testing.assert_allclose(recall, np.linspace(0, 1, points), atol=1e-15)


def test_pr_curve_shape_monotonic_endpoints():
    distances, query_labels, database_labels = random_case(11, n_db=400, density=0.2)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    summary = metrics.summarize([metrics.query_metrics(ranked, n_relevant)])
    curve = np.array(summary["pr_curve"])
    assert curve.shape == (101, 2)
    assert curve[0, 0] == 0.0 and curve[-1, 0] == 1.0
    assert np.all(np.diff(curve[:, 0]) > 0)
    assert np.all(np.diff(curve[:, 1]) <= 0)
    assert np.all((curve[:, 1] > 0) & (curve[:, 1] <= 1))
    valid = n_relevant > 0
    # At recall 1: precision at the last relevant item; at recall 0: the best precision.
    last = [r.sum() / (np.flatnonzero(r)[-1] + 1) for r in ranked[valid]]
    assert curve[-1, 1] == pytest.approx(np.mean(last), abs=1e-12)
    best = [max(np.cumsum(r)[r] / (np.flatnonzero(r) + 1)) for r in ranked[valid]]
    assert curve[0, 1] == pytest.approx(np.mean(best), abs=1e-12)


def test_perfect_and_worst_rankings():
    ranked = np.zeros((2, 10), dtype=bool)
    ranked[0, :3] = True  # perfect
    ranked[1, -3:] = True  # worst
    block = metrics.query_metrics(ranked, np.array([3, 3]), map_at=(3,), precision_at=(3,))
    assert block.ap.tolist() == pytest.approx([1.0, (1 / 8 + 2 / 9 + 3 / 10) / 3])
    assert block.ap_at[3].tolist() == [1.0, 0.0]
    assert block.precision_at[3].tolist() == [1.0, 0.0]
    assert block.pr_precision[0].tolist() == [1.0] * 101
    assert block.pr_precision[1, -1] == pytest.approx(3 / 10)


def test_no_relevant_queries_count_and_score_zero():
    ranked = np.zeros((3, 8), dtype=bool)
    ranked[2, 0] = True
    block = metrics.query_metrics(ranked, np.array([0, 0, 1]), map_at=(4,), recall_at=(2,))
    summary = metrics.summarize([block])
    assert summary["n_query_no_relevant"] == 2
    assert summary["n_query_no_relevant_at"] == {"4": 2}
    assert summary["map"] == pytest.approx(1 / 3)
    assert summary["recall_at"]["2"] == pytest.approx(1 / 3)
    assert summary["pr_curve"][50] == [0.5, 1.0]  # averaged over the one query with relevant items
    empty = metrics.summarize([metrics.query_metrics(np.zeros((2, 5), bool), np.zeros(2, int))])
    assert empty["map"] == 0.0 and all(p == 0.0 for _, p in empty["pr_curve"])


# ----------------------------------------------------------------------------- blocks


def test_block_size_does_not_change_results():
    distances, query_labels, database_labels = random_case(5, n_query=40, n_db=150)
    ranked, n_relevant = ranked_truth(distances, query_labels, database_labels)
    options = dict(map_at=(10, 150), precision_at=(5,), recall_at=(1, 50))
    reference = metrics.summarize([metrics.query_metrics(ranked, n_relevant, **options)])
    for block_size in (1, 3, 7, 39):
        blocks = [
            metrics.query_metrics(ranked[s:s + block_size], n_relevant[s:s + block_size], **options)
            for s in range(0, 40, block_size)
        ]
        assert metrics.summarize(blocks) == reference


def test_bad_k_is_rejected():
    ranked = np.ones((1, 4), dtype=bool)
    for bad in ((0,), (-1,), (2.5,), (True,)):
        with pytest.raises(ValueError):
            metrics.query_metrics(ranked, np.array([4]), map_at=bad)
    with pytest.raises(ValueError):
        metrics.query_metrics(ranked, np.array([4]), pr_points=1)


def test_sklearn_reference_really_differs_on_ties():
    # Why ties are tested against a loop: sklearn scores a tie group as one threshold.
    relevant = np.array([True, False])
    distances = np.array([1.0, 1.0], dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sklearn_ap = average_precision_score(relevant, -distances)
    ranked = relevant[metrics.rank(distances[None])[0]]
    assert metrics.average_precision(ranked[None])[0] == 1.0 != sklearn_ap == 0.5
