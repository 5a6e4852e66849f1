"""The unseen-class protocol's four conditions from one run (issue 29): seen and unseen queries
against the seen classes', the unseen classes' and the whole database, scored against plain
loops on hand-made labels and distances; the codes file's `unseen_classes`, metrics.json's
`conditions` and the report's rows per condition; and a digits run end to end."""

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from runfakes import make_run
from tampering import forged_h5
from test_cli import assert_user_error

from gslbench import api
from gslbench.cli import cli
from gslbench.codes import read_codes
from gslbench.config import RunConfig
from gslbench.data.featurefile import read_feature_file
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation import scoring
from gslbench.evaluation.record import check_metrics_record
from gslbench.evaluation.step import evaluate_run
from gslbench.layout import RunDir, feature_path
from gslbench.quantizers import make_search
from gslbench.report.frames import read_runs
from gslbench.storage import read_json

UNSEEN = (1, 3)  # of 5 hand-made classes
K = (3, 10, 1000)


class MatrixSearch:
    """A search over a hand-made (nq, n) distance matrix: a query is its row number."""

    def __init__(self, matrix: np.ndarray):
        self.matrix, self.rows = matrix, []

    def __len__(self) -> int:
        return self.matrix.shape[1]

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        return queries[:, 0].astype(np.int64)

    def distances(self, rows: np.ndarray) -> np.ndarray:
        self.rows += rows.tolist()
        return self.matrix[rows]


def one_hot(classes: np.ndarray, n_classes: int = 5) -> np.ndarray:
    return np.eye(n_classes, dtype=np.uint8)[classes]


def hand_made(seed: int):
    """(distances (30, 80) float32 with few values, so ties everywhere, and small negative ones,
    as L2 ADC's rounding gives; query classes (30,); database classes (80,)), every class among
    the queries and the database."""
    rng = np.random.default_rng(seed)
    query_classes = np.concatenate([np.arange(5), rng.integers(0, 5, 25)])
    database_classes = np.concatenate([np.arange(5), rng.integers(0, 5, 75)])
    distances = (rng.integers(-2, 4, (30, 80)) * 1e-3).astype(np.float32)
    return distances, query_classes, database_classes


def plain_scores(distances, query_classes, database_classes, queries, items):
    """Plain loops over the queries `queries` ranking the database items `items` by (distance,
    index): mAP, mAP@K, precision@K (K capped to the items), counts."""
    aps, aps_at, precisions, missing = [], {k: [] for k in K}, {k: [] for k in K}, 0
    for q in queries:
        ranked = sorted(items, key=lambda j, q=q: (distances[q, j], j))
        relevant = [database_classes[j] == query_classes[q] for j in ranked]
        missing += not any(relevant)

        def ap(depth, relevant=relevant):
            hits, total = 0, 0.0
            for rank, hit in enumerate(relevant[:depth], start=1):
                if hit:
                    hits += 1
                    total += hits / rank
            return total / hits if hits else 0.0

        aps.append(ap(len(ranked)))
        for k in K:
            aps_at[k].append(ap(k))
            precisions[k].append(sum(relevant[:k]) / min(k, len(ranked)))
    return {"map": np.mean(aps), "map_at": {str(k): np.mean(v) for k, v in aps_at.items()},
            "precision_at": {str(k): np.mean(v) for k, v in precisions.items()},
            "n_query": len(queries), "n_db": len(items), "n_query_no_relevant": missing}


def expected_conditions(distances, query_classes, database_classes):
    """The four conditions by hand: the query and database subsets of each, scored by loops."""
    unseen_query = np.isin(query_classes, UNSEEN)
    unseen_item = np.isin(database_classes, UNSEEN)
    everything = list(range(len(database_classes)))
    subsets = {
        "seen@seen": (np.flatnonzero(~unseen_query), np.flatnonzero(~unseen_item)),
        "seen@all": (np.flatnonzero(~unseen_query), everything),
        "unseen@unseen": (np.flatnonzero(unseen_query), np.flatnonzero(unseen_item)),
        "unseen@all": (np.flatnonzero(unseen_query), everything),
    }
    return {name: plain_scores(distances, query_classes, database_classes, list(queries),
                               list(items))
            for name, (queries, items) in subsets.items()}


@pytest.mark.parametrize(("seed", "block_size", "workers"), [(0, None, 2), (1, 1, 1), (2, 4, 2)])
def test_the_four_conditions_equal_plain_loops(seed, block_size, workers):
    distances, query_classes, database_classes = hand_made(seed)
    search = MatrixSearch(distances)
    queries = np.arange(30, dtype=np.float32)[:, None]
    ours = scoring.evaluate_conditions(search, queries, one_hot(query_classes),
                                       one_hot(database_classes), UNSEEN, map_at=K,
                                       precision_at=K, block_size=block_size, workers=workers)
    expected = expected_conditions(distances, query_classes, database_classes)
    assert list(ours["conditions"]) == list(scoring.CONDITIONS)
    for name, values in expected.items():
        scores = ours["conditions"][name]
        assert scores["map"] == pytest.approx(values["map"], abs=1e-12), name
        for group in ("map_at", "precision_at"):
            assert scores[group] == pytest.approx(values[group], abs=1e-12), (name, group)
        for count in ("n_query", "n_db", "n_query_no_relevant"):
            assert scores[count] == values[count], (name, count)
    primary = ours["conditions"]["unseen@unseen"]
    assert (ours["map"], ours["map_at"], ours["n_db"]) == (primary["map"], primary["map_at"],
                                                           primary["n_db"])
    assert sorted(search.rows) == list(range(30))  # each query's distances computed once


def test_the_conditions_rank_a_top_alone_alike():
    """Ranking only the top max(K) (no whole ranking) gives the same mAP@K per condition."""
    distances, query_classes, database_classes = hand_made(3)
    queries = np.arange(30, dtype=np.float32)[:, None]
    options = dict(map_at=(3, 10), precision_at=(3,), recall_at=(5,))
    whole, top = (scoring.evaluate_conditions(MatrixSearch(distances), queries,
                                              one_hot(query_classes), one_hot(database_classes),
                                              UNSEEN, whole_ranking=whole, **options)
                  for whole in (True, False))
    expected = expected_conditions(distances, query_classes, database_classes)
    for name in scoring.CONDITIONS:
        assert top["conditions"][name]["map"] is None
        assert top["conditions"][name]["map_at"] == pytest.approx(
            whole["conditions"][name]["map_at"], abs=1e-12)
        assert top["conditions"][name]["map_at"]["3"] == pytest.approx(
            expected[name]["map_at"]["3"], abs=1e-12)


@pytest.mark.parametrize(("query_classes", "database_classes", "message"), [
    ([0, 2, 4], [0, 1, 3], "no query item of the unseen classes"),
    ([0, 1, 2], [1, 3, 3], "no database item of the seen classes"),
])
def test_a_condition_without_items_is_a_user_error(query_classes, database_classes, message):
    with pytest.raises(GslbenchError, match=message):
        scoring.evaluate_conditions(MatrixSearch(np.zeros((3, 3), np.float32)),
                                    np.arange(3, dtype=np.float32)[:, None],
                                    one_hot(np.array(query_classes)),
                                    one_hot(np.array(database_classes)), UNSEEN)


def test_an_item_of_a_seen_and_an_unseen_class_is_a_user_error():
    labels = one_hot(np.array([0, 1, 2]))
    labels[0, 1] = 1  # class 0 (seen) and 1 (unseen) at once
    with pytest.raises(GslbenchError, match="1 query items are labelled with a seen and an unseen"):
        scoring.unseen_members(labels, UNSEEN, "query")


# ----------------------------------------------------------------------------- metrics.json


def test_an_unseen_run_records_the_four_conditions_and_the_primary_on_top(tmp_path):
    run = make_run(tmp_path, RunConfig(method="gsl", bits=16, protocol="unseen"), 0.8)
    record = read_json(run.metrics)
    check_metrics_record(record, run.metrics, run.run_id)

    def refused(changed: dict, match: str) -> None:
        with pytest.raises(GslbenchError, match=match):
            check_metrics_record(changed, run.metrics, run.run_id)

    conditions = record["conditions"]
    refused({**record, "conditions": None}, r"'conditions' is None, expected the unseen "
            "protocol's seen@seen, seen@all, unseen@unseen, unseen@all")
    refused({**record, "conditions": {k: v for k, v in conditions.items() if k != "seen@all"}},
            "'conditions' is")
    refused({**record, "map": record["map"] - 0.1}, r"top-level map and map_at are not those of "
            r"conditions\[unseen@unseen\]")
    broken = {**conditions, "seen@all": {**conditions["seen@all"], "n_query_no_relevant": 11}}
    refused({**record, "conditions": broken}, r"conditions\[seen@all\] counts")
    broken = {**conditions, "seen@seen": {**conditions["seen@seen"], "map": 1.5}}
    refused({**record, "conditions": broken}, r"'conditions\[seen@seen\] map' is 1.5")
    standard = make_run(tmp_path, RunConfig(method="gsl", bits=16), 0.8)
    with pytest.raises(GslbenchError, match="holds 'conditions' for a run of the standard"):
        check_metrics_record({**read_json(standard.metrics), "conditions": conditions},
                             standard.metrics, standard.run_id)


# ----------------------------------------------------------------------------- report frame


def test_the_frame_has_a_row_per_condition_with_its_draw(tmp_path):
    unseen = make_run(tmp_path, RunConfig(method="gsl", bits=16, protocol="unseen"), 0.8)
    standard = make_run(tmp_path, RunConfig(method="gsl", bits=16, seed=1), 0.7)
    results = read_runs([unseen, standard]).results
    rows = results.set_index(["run", "condition"])
    assert sorted(rows.loc[unseen.run_id].index) == sorted(scoring.CONDITIONS)
    assert list(rows.loc[standard.run_id].index) == ["standard"]
    assert set(results.draw) == {0}
    conditions = read_json(unseen.metrics)["conditions"]
    for name, scores in conditions.items():
        row = rows.loc[(unseen.run_id, name)]
        assert (row["map"], row["map_at_100"], row["precision_at_10"]) == (
            scores["map"], scores["map_at"]["100"], scores["precision_at"]["10"])
    assert rows.loc[(standard.run_id, "standard"), "map"] == 0.7


# ----------------------------------------------------------------------------- digits, end to end


@pytest.fixture(scope="module")
def unseen_digits(digits_runs, tmp_path_factory):
    """A two-step PQ digits run of the unseen protocol (3 classes held out, draw 0), trained,
    encoded (both fits) and evaluated (ADC and SDC) through the API and the steps: (data dir,
    results dir, RunDir)."""
    data = digits_runs[0] / "data"
    results = tmp_path_factory.mktemp("unseen") / "results"
    config = RunConfig(dataset="digits", method="two-step", quantizer="pq", bits=16, epochs=3,
                       warmup_epochs=1, protocol="unseen")
    run = RunDir(api.train(config, data_dir=data, results_dir=results))
    for codebooks in ("train", "database"):  # the steps: the API has no codebooks option
        encode_run(run.path, data, results, codebooks=codebooks)
        evaluate_run(run.path, results, codebooks=codebooks)
    api.evaluate(run.path, results_dir=results, search="sdc")
    return data, results, run


def test_an_unseen_digits_run_scores_the_four_conditions(unseen_digits):
    data, _, run = unseen_digits
    codes = read_codes(run.codes)
    held_out = read_feature_file(feature_path(data, "digits", "pixels"), "test", "unseen", 3,
                                 0).unseen_classes
    assert codes.unseen_classes == tuple(held_out) and len(held_out) == 3
    assert json.loads(codes.attrs["unseen_classes"]) == sorted(held_out)
    query_unseen = codes.query_labels[:, list(held_out)].any(axis=1)
    database_unseen = codes.labels[:, list(held_out)].any(axis=1)
    assert query_unseen.any() and not query_unseen.all()  # queries of every class
    for path in (run.metrics, run.metrics_file("sdc", "l2"), run.metrics_file(codebooks="database")):
        record = read_json(path)
        check_metrics_record(record, path, run.run_id)
        fit = read_codes(run.codes_file(record["codebooks"]))
        matrix = make_search(fit.quantizer, fit.codes, record["search"], "l2")
        distances = matrix.distances(matrix.prepare(fit.queries))
        for name, scores in record["conditions"].items():
            queries, items = name.split("@")
            rows = np.flatnonzero(query_unseen == (queries == "unseen"))
            columns = np.arange(len(fit.codes)) if items == "all" \
                else np.flatnonzero(database_unseen == (items == "unseen"))
            alone = scoring.evaluate_distances(distances[np.ix_(rows, columns)],
                                               fit.query_labels[rows], fit.labels[columns],
                                               map_at=fit.map_at)
            assert scores["map"] == pytest.approx(alone["map"], abs=1e-12), (path.name, name)
            assert scores["map_at"] == pytest.approx(alone["map_at"], abs=1e-12)
            assert (scores["n_query"], scores["n_db"]) == (len(rows), len(columns))
        assert record["map"] == record["conditions"]["unseen@unseen"]["map"]
        unseen_at_all = record["conditions"]["unseen@all"]
        assert unseen_at_all["n_db"] == len(fit.codes) and unseen_at_all["n_query"] == \
            np.count_nonzero(query_unseen)
    results = read_runs([run]).results
    assert sorted(results.condition) == sorted(2 * [*scoring.CONDITIONS] + [*scoring.CONDITIONS])
    assert set(results.draw) == {0} and set(results.protocol) == {"unseen"}


def invoke(data: Path, results: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--results-dir", str(results), *args])


@pytest.mark.parametrize(("forged", "message"), [
    ("[1, 1]", "attribute 'unseen_classes' is '[1, 1]', expected a JSON list of sorted, distinct "
               "classes in [0, 10)"),
    ("[3, 1]", "expected a JSON list of sorted"),
    ("[1, 10]", "in [0, 10)"),
    ("[]", "attribute 'unseen_classes' is [] for a run of the unseen protocol"),
    ("[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]", "no query item of the seen classes"),
])
def test_a_forged_unseen_classes_is_refused_in_one_line(unseen_digits, tmp_path, forged, message):
    data, results, run = unseen_digits
    copy = RunDir(tmp_path / "runs" / run.run_id)
    shutil.copytree(run.path, copy.path)
    for path in copy.results_of("train"):
        path.unlink()
    with forged_h5(copy.codes) as handle:
        handle.attrs["unseen_classes"] = forged
    assert_user_error(invoke(data, tmp_path, "evaluate", str(copy.path)), str(copy.codes), message)
    assert not copy.metrics.exists()


def test_an_edited_unseen_classes_breaks_the_digest(unseen_digits, tmp_path):
    _, _, run = unseen_digits
    copy = tmp_path / "codes.h5"
    copy.write_bytes(run.codes.read_bytes())
    with h5py.File(copy, "r+") as handle:
        handle.attrs["unseen_classes"] = "[2, 3]"
    with pytest.raises(GslbenchError, match="does not match its content_sha256"):
        read_codes(copy)
