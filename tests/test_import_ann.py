"""`gslbench features import NAME --ann-benchmarks FILE.hdf5`: the ann-benchmarks reader on
hand-made files (both distances), its check of the file's ground truth (a corrupted file refused
with the count, ties accepted), its one-line errors, and a run on an imported file scored
against a plain loop."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from gslbench import layout
from gslbench.cli import cli
from gslbench.codes import read_codes
from gslbench.data import get_dataset
from gslbench.data.featurefile import read_feature_file

pytestmark = pytest.mark.usefixtures("one_thread")

N, Q, DIM, K = 300, 30, 8, 20


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"),
                                    "--results-dir", str(root / "results"), *args])


def run_imported(root: Path, import_args: list[str], batch_size: int):
    """Import a data set `toy` with `import_args`, train a float run on it, encode and evaluate
    it: its metrics.json and its codes."""
    for args in (["features", "import", "toy", *import_args],
                 ["train", "--dataset", "toy", "--method", "float", "--dim-out", "8", "--hidden",
                  "16", "--epochs", "2", "--batch-size", str(batch_size)]):
        out = invoke(root, *args)
        assert out.exit_code == 0, out.output
    run_dir = Path(out.output.strip().splitlines()[-1])
    for step in ("encode", "evaluate"):
        out = invoke(root, step, str(run_dir))
        assert out.exit_code == 0, out.output
    return json.loads((run_dir / "metrics.json").read_text()), read_codes(run_dir / "codes.h5")


def plain_distance(a: np.ndarray, b: np.ndarray, distance: str) -> float:
    """One pair's distance, float64: angular, 1 - cos; euclidean, L2."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    if distance == "angular":
        return 1.0 - float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.sqrt(((a - b) ** 2).sum()))


def plain_neighbours(queries, database, k, distance="euclidean", exclude_self=False):
    """Each query's k nearest database rows, by a loop over pairs (ties by index)."""
    rows = []
    for i, q in enumerate(queries):
        pairs = sorted((plain_distance(q, x, distance), j) for j, x in enumerate(database)
                       if not (exclude_self and i == j))
        rows.append([j for _, j in pairs[:k]])
    return np.array(rows, dtype=np.int64)


def vectors(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """train (300, 8) and test (30, 8) float32, not of unit length."""
    rng = np.random.default_rng(seed)
    return (rng.normal(1, 2, (N, DIM)).astype(np.float32),
            rng.normal(1, 2, (Q, DIM)).astype(np.float32))


def write_ann(path: Path, train: np.ndarray, test: np.ndarray, distance: str = "euclidean",
              truth: np.ndarray | None = None, replace: dict | None = None) -> Path:
    """An ann-benchmarks file as ann-benchmarks writes one (its neighbours by `plain_neighbours`
    unless `truth` is given); `replace` overrides datasets (None drops one) or the attribute."""
    neighbors = plain_neighbours(test, train, K, distance) if truth is None else truth
    found = np.array([[plain_distance(q, train[j], distance) for j in row]
                      for q, row in zip(test, neighbors, strict=True)])
    arrays = {"train": train, "test": test, "neighbors": neighbors.astype(np.int32),
              "distances": found.astype(np.float32)}
    replace = dict(replace or {})
    with h5py.File(path, "w") as handle:
        attribute = replace.pop("distance", distance)
        if attribute is not None:
            handle.attrs["distance"] = attribute
        for key, value in {**arrays, **replace}.items():
            if value is not None:
                handle.create_dataset(key, data=value)
    return path


@pytest.mark.parametrize("distance", ["euclidean", "angular"])
def test_an_ann_benchmarks_file_imports_as_its_protocol_says(tmp_path, distance):
    train, test = vectors()
    path = write_ann(tmp_path / f"toy-{distance}.hdf5", train, test, distance)
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path),
                    "--split-seed", "3")
    assert result.exit_code == 0, result.output
    feature_file = layout.feature_path(tmp_path / "data", "toy", "imported")
    assert Path(result.output.strip()) == feature_file
    test_set = read_feature_file(feature_file)
    if distance == "angular":  # unit rows
        train = train / np.linalg.norm(train.astype(np.float64), axis=1, keepdims=True)
        test = test / np.linalg.norm(test.astype(np.float64), axis=1, keepdims=True)
    np.testing.assert_allclose(test_set.database.features, train, atol=1e-6)
    np.testing.assert_allclose(test_set.query.features, test, atol=1e-6)
    assert test_set.database.indices.tolist() == list(range(N))  # every train row
    assert test_set.query.indices.tolist() == list(range(N, N + Q))
    assert test_set.n_classes == 0
    with h5py.File(path) as handle:  # the file's ground truth, its first k = 10
        assert np.array_equal(test_set.query.neighbours, handle["neighbors"][:, :10])
    training = test_set.train.indices
    assert len(training) == N // 2 and len(set(training)) == N // 2  # min(100,000, n / 2)
    np.testing.assert_array_equal(test_set.train.features, test_set.database.features[training])
    assert np.array_equal(test_set.train.neighbours,
                          plain_neighbours(test_set.train.features, test_set.train.features, 10,
                                           exclude_self=True))
    validation = read_feature_file(feature_file, split="validation")
    held = np.concatenate([validation.query.indices, validation.database.indices])
    assert (len(validation.query.indices), len(validation.database.indices)) == (Q, round(N / 7))
    assert len(set(held)) == len(held) and not set(held) & set(training)
    assert set(held) <= set(range(N))  # train rows no run trains on, still in the database
    assert np.array_equal(validation.query.neighbours,
                          plain_neighbours(validation.query.features,
                                           validation.database.features, 10))
    assert test_set.source_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert test_set.extra_attrs["distance"] == distance
    dataset = get_dataset("toy", tmp_path / "data")
    assert (dataset.protocol.neighbours, dataset.protocol.map_top) == (10, 100)


def test_the_training_sample_and_k_are_options(tmp_path):
    path = write_ann(tmp_path / "toy.hdf5", *vectors())
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path),
                    "--train-size", "100", "--neighbours", "4", "--map-at", "20")
    assert result.exit_code == 0, result.output
    features = read_feature_file(layout.feature_path(tmp_path / "data", "toy", "imported"))
    assert len(features.train.indices) == 100
    assert features.query.neighbours.shape == (Q, 4)
    assert features.train.neighbours.shape == (100, 4)
    assert get_dataset("toy", tmp_path / "data").protocol.map_top == 20


def test_neighbours_that_disagree_with_an_exact_search_are_refused_with_the_count(tmp_path):
    train, test = vectors()
    neighbors = plain_neighbours(test, train, K)
    for row in (2, 9, 17):  # the nearest replaced by the farthest
        neighbors[row, 0] = plain_neighbours(test[row:row + 1], train, N)[0, -1]
    neighbors[5, [3, 4]] = neighbors[5, [4, 3]]  # two neighbours of distinct distance swapped
    path = write_ann(tmp_path / "bad.hdf5", train, test, truth=neighbors)
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path))
    assert result.exit_code == 2
    assert result.output.strip() == (f"gslbench: error: {path}: neighbors disagree with an exact "
                                     f"search for 4 of {Q} sampled queries (the first: test row 2)")
    assert not (tmp_path / "data" / "toy").exists()


def test_the_check_samples_the_queries(tmp_path):
    train, test = vectors()
    neighbors = plain_neighbours(test, train, K)
    neighbors[:, [0, 1]] = neighbors[:, [1, 0]]  # every query wrong
    path = write_ann(tmp_path / "bad.hdf5", train, test, truth=neighbors)
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path))
    assert f"for {Q} of {Q} sampled queries" in result.output
    from gslbench.data import annbenchmarks
    from gslbench.errors import GslbenchError
    arrays = annbenchmarks.read_ann_file(path, 10)
    with pytest.raises(GslbenchError, match="for 7 of 7 sampled queries"):
        annbenchmarks.check_ground_truth(arrays, path, 7, seed=0)


def test_tied_neighbours_in_another_order_are_accepted(tmp_path):
    """Queries on a grid of integer points: many train points at exactly the same distance. The
    file lists the tied ones in reverse index order, and a different member at the cut-off."""
    grid = np.array([(x, y) for x in range(-4, 5) for y in range(-4, 5)], np.float32)
    test = np.array([(0, 0), (1, 1), (0.5, 0), (-2, 3)], np.float32)
    neighbors = []
    for q in test:
        d = ((grid - q) ** 2).sum(axis=1)
        neighbors.append(sorted(range(len(grid)), key=lambda j, d=d: (d[j], -j))[:K])
    neighbors = np.array(neighbors)
    exact = plain_neighbours(test, grid, K)
    assert not np.array_equal(neighbors, exact)  # other indices, the same distances
    assert not all(set(a) == set(b) for a, b in zip(neighbors, exact, strict=True))
    path = write_ann(tmp_path / "ties.hdf5", grid, test, truth=neighbors)
    result = invoke(tmp_path, "features", "import", "grid", "--ann-benchmarks", str(path),
                    "--train-size", "30", "--validation-queries", "4",
                    "--validation-database", "10")
    assert result.exit_code == 0, result.output
    features = read_feature_file(Path(result.output.strip()))
    assert np.array_equal(features.query.neighbours, neighbors[:, :10])


def _bad(train, test):
    neighbors = plain_neighbours(test, train, K)
    outside, repeated = neighbors.copy(), neighbors.copy()
    outside[4, 7] = N
    repeated[6, 1] = repeated[6, 0]
    nan = train.copy()
    nan[11, 2] = np.nan
    return {
        "hamming": ({"distance": "hamming"},
                    "attribute distance is 'hamming'; only euclidean and angular files are read"),
        "no attribute": ({"distance": None}, "no attribute 'distance' (euclidean or angular)"),
        "no neighbors": ({"neighbors": None}, "no dataset neighbors (an ann-benchmarks file "
                         "holds train, test, neighbors, distances)"),
        "shapes": ({"test": test[:, :5]}, "shapes train (300, 8), test (30, 5), neighbors "
                   "(30, 20), distances (30, 20); want (n, d), (q, d), (q, K) and (q, K)"),
        "distances shape": ({"distances": np.zeros((30, 3))}, "distances (30, 3); want"),
        "non-finite": ({"train": nan}, "train: features hold 1 non-finite value(s)"),
        "outside": ({"neighbors": outside}, "neighbors hold 1 indices outside 0..299 (the first "
                    "in row 4)"),
        "repeated": ({"neighbors": repeated}, "1 rows of neighbors list a train row twice (the "
                     "first: row 6)"),
        "float neighbors": ({"neighbors": neighbors.astype(np.float32)},
                            "neighbors are float32, not integer indices"),
        "nan distances": ({"distances": np.full((30, 20), np.nan)},
                          "distances must be finite real numbers"),
    }


@pytest.mark.parametrize("case", list(_bad(*vectors())))
def test_a_bad_file_is_one_line_and_writes_nothing(tmp_path, case):
    train, test = vectors()
    replace, message = _bad(train, test)[case]
    path = write_ann(tmp_path / "bad.hdf5", train, test, replace=replace)
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path))
    assert result.exit_code == 2, result.output
    assert result.output.count("\n") == 1 and message in result.output, result.output
    assert result.output.startswith(f"gslbench: error: {path}")
    assert not (tmp_path / "data" / "toy").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--neighbours", "21"], "--neighbours 21: {path} lists 20 neighbours per query"),
    (["--train-size", "300"], "--train-size 300: the training sample must hold more than k=10 "
                              "items and fewer than the file's 300 train rows"),
    (["--validation-database", "9"], "--validation-database: the validation database has 9 "
                                     "items, fewer than the 10 that k=10 neighbours need"),
    (["--labels", "x.npy"], "--labels: goes with --from, not with --ann-benchmarks"),
    (["--from", "x.npz"], "features import: give one of --from FILE, --ann-benchmarks "
                          "FILE.hdf5 and --image-list DIR"),
])
def test_bad_options_are_one_line(tmp_path, args, message):
    path = write_ann(tmp_path / "toy.hdf5", *vectors())
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path), *args)
    assert result.exit_code == 2
    assert result.output == f"gslbench: error: {message.format(path=path)}\n"
    assert not (tmp_path / "data" / "toy").exists()


def test_not_an_hdf5_file(tmp_path):
    path = tmp_path / "text.hdf5"
    path.write_text("not hdf5")
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path))
    assert result.exit_code == 2 and f"{path}: not an HDF5 file" in result.output


@pytest.mark.parametrize("distance", ["euclidean", "angular"])
def test_a_run_on_an_imported_file_scores_as_a_plain_loop(tmp_path, distance):
    train, test = vectors(1)
    path = write_ann(tmp_path / "toy.hdf5", train, test, distance)
    metrics, codes = run_imported(tmp_path, ["--ann-benchmarks", str(path)], 50)
    with h5py.File(path) as handle:
        truth = handle["neighbors"][:, :10]
    recall_at_10, nearest_within = [], {1: [], 10: [], 100: []}
    for i, query in enumerate(codes.queries.astype(np.float64)):
        ranking = sorted(range(N), key=lambda j, q=query: (
            float(((q - codes.database[j].astype(np.float64)) ** 2).sum()), j))
        recall_at_10.append(len(set(ranking[:10]) & set(truth[i])) / 10)
        for r, hits in nearest_within.items():
            hits.append(truth[i, 0] in ranking[:r])
    assert metrics["k_recall_at"]["10"] == pytest.approx(np.mean(recall_at_10))
    for r, hits in nearest_within.items():
        assert metrics["one_recall_at"][str(r)] == pytest.approx(np.mean(hits))
    assert 0 < metrics["k_recall_at"]["10"] < 1


def test_a_dataset_in_another_file_is_refused(tmp_path):
    train, test = vectors()
    other = write_ann(tmp_path / "other.hdf5", train, test)
    path = write_ann(tmp_path / "linked.hdf5", train, test, replace={"train": None})
    with h5py.File(path, "a") as handle:
        handle["train"] = h5py.ExternalLink(str(other), "train")
    result = invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path))
    assert result.output == (f"gslbench: error: {path}: 'train' is a link to another file; "
                             "import a file that holds its own arrays\n")


def test_a_stale_imported_file_says_which_import_rebuilds_it(tmp_path):
    """A feature file that must be written again names the `features import` option its data
    set was imported with (here --ann-benchmarks, not --from)."""
    from gslbench.storage import DIGEST_ATTR

    path = write_ann(tmp_path / "toy.hdf5", *vectors())
    assert invoke(tmp_path, "features", "import", "toy", "--ann-benchmarks", str(path)).exit_code == 0
    feature_file = layout.feature_path(tmp_path / "data", "toy", "imported")
    with h5py.File(feature_file, "a") as handle:
        del handle.attrs[DIGEST_ATTR]
    result = invoke(tmp_path, "train", "--dataset", "toy", "--method", "float", "--epochs", "1")
    assert result.exit_code == 2
    assert result.output.rstrip().endswith(
        "import it again (`gslbench features import toy --ann-benchmarks FILE.hdf5`)")
