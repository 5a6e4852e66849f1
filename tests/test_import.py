"""`gslbench features import`: a user's own features as a data set, from every file format, and
the one-line errors for bad input."""

from __future__ import annotations

import io
import json
import shutil
import tracemalloc
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner

from gslbench import data as datasets
from gslbench import layout
from gslbench.cli import cli
from gslbench.data import imported
from gslbench.data.featurefile import read_feature_file

N, DIM, CLASSES = 60, 6, 3


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"),
                                    "--results-dir", str(root / "results"), *args])


def arrays(seed: int = 0, multilabel: bool = False) -> dict[str, np.ndarray]:
    """features (60, 6) float64; class ids (60,) 20 per class, or multi-hot (60, 3) with one or
    two labels per item; split codes (60,): 6 queries, 12 training items (3 of them also in the
    database), the rest database."""
    rng = np.random.default_rng(seed)
    class_ids = np.repeat(np.arange(CLASSES), N // CLASSES)
    features = rng.normal(size=(N, DIM)) + 3 * np.eye(CLASSES, DIM)[class_ids]
    labels = class_ids
    if multilabel:
        labels = np.eye(CLASSES, dtype=np.uint8)[class_ids]
        labels[::4, (class_ids[::4] + 1) % CLASSES] = 1
    split = np.zeros(N, dtype=np.int64)
    split[[0, 1, 20, 21, 40, 41]] = 1
    split[[2, 3, 4, 5, 22, 23, 24, 25, 42, 43]] = 2
    split[[6, 44]] = 3
    return {"features": features, "labels": labels, "split": split}


def write_mat73(path: Path, values: dict[str, np.ndarray]) -> None:
    """A MATLAB v7.3 file as MATLAB writes one: HDF5 behind a 512-byte header, each variable
    stored column-major (so h5py sees it transposed), with its MATLAB_class."""
    with h5py.File(path, "w", userblock_size=512) as handle:
        for name, value in values.items():
            matrix = np.atleast_2d(np.asarray(value, dtype=np.float64))
            handle.create_dataset(name, data=matrix.T).attrs["MATLAB_class"] = np.bytes_("double")
    header = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Nov 26 12:00:00 2026 "
              b"HDF5 schema 1.00 .")
    with open(path, "r+b") as handle:
        handle.write(header.ljust(116) + b"\0" * 8 + b"\x00\x02" + b"IM")


def write_source(directory: Path, kind: str, values: dict[str, np.ndarray]) -> list[str]:
    """Write `values` as `kind`; returns the CLI arguments naming the file(s)."""
    if kind == "npy":
        paths = {}
        for name, value in values.items():
            paths[name] = directory / f"{name}.npy"
            np.save(paths[name], value)
        extra = ["--labels", str(paths["labels"])]
        if "split" in paths:
            extra += ["--split", str(paths["split"])]
        return ["--from", str(paths["features"]), *extra]
    path = directory / {"npz": "data.npz", "h5": "data.h5", "mat5": "data.mat",
                        "mat73": "data.mat"}[kind]
    if kind == "npz":
        np.savez(path, **values)
    elif kind == "h5":
        with h5py.File(path, "w") as handle:
            for name, value in values.items():
                handle.create_dataset(name, data=value)
    elif kind == "mat5":
        scipy.io.savemat(path, values)  # vectors become (1, n) row vectors, as MATLAB's
    else:
        write_mat73(path, values)
    return ["--from", str(path)]


@pytest.mark.parametrize("kind", ["npy", "npz", "h5", "mat5", "mat73"])
@pytest.mark.parametrize("with_split", [True, False])
def test_import_round_trips(tmp_path, kind, with_split):
    values = arrays()
    if not with_split:
        del values["split"]
    protocol = [] if with_split else ["--query-per-class", "2", "--train-per-class", "4"]
    result = invoke(tmp_path, "features", "import", "mine", *write_source(tmp_path, kind, values),
                    *protocol, "--map-at", "10")
    assert result.exit_code == 0, result.output
    path = Path(result.output.strip())
    assert path == layout.feature_path(tmp_path / "data", "mine", "imported")
    features = read_feature_file(path)
    for split in features.splits().values():
        np.testing.assert_array_equal(split.features, values["features"][split.indices].astype(np.float32))
        np.testing.assert_array_equal(split.labels.argmax(1), values["labels"][split.indices])
        assert split.labels.sum(1).tolist() == [1] * len(split.indices)
    if with_split:
        assert features.query.indices.tolist() == [0, 1, 20, 21, 40, 41]
        assert features.train.indices.tolist() == [2, 3, 4, 5, 6, 22, 23, 24, 25, 42, 43, 44]
        given = set(range(N)) - {0, 1, 20, 21, 40, 41, 2, 3, 4, 5, 22, 23, 24, 25, 42, 43}
        held = {*features.validation_query.indices.tolist(),  # 2 + 3 per class, out of it
                *features.validation_database.indices.tolist()}
        assert len(held) == 15 and held <= given
        assert features.database.indices.tolist() == sorted(given - held)
    else:
        assert len(features.query.indices) == 6 and len(features.train.indices) == 12
        assert len(features.database.indices) == N - 18 - 15  # training, validation kept out
    dataset = datasets.get_dataset("mine", tmp_path / "data")
    assert dataset.default_feature == "imported" and dataset.protocol.map_top == 10
    record = json.loads(layout.imported_path(tmp_path / "data", "mine").read_text())
    assert record["protocol"]["given_split"] is with_split


@pytest.mark.parametrize("kind", ["mat5", "mat73"])
def test_a_multilabel_mat_file_round_trips(tmp_path, kind):
    values = arrays(multilabel=True)
    values["labels"] = values["labels"].astype(np.float64)  # MATLAB's doubles
    result = invoke(tmp_path, "features", "import", "multi", *write_source(tmp_path, kind, values),
                    "--feature", "cnn")
    assert result.exit_code == 0, result.output
    features = read_feature_file(layout.feature_path(tmp_path / "data", "multi", "cnn"))
    assert features.multilabel and features.n_classes == CLASSES
    for split in features.splits().values():
        np.testing.assert_array_equal(split.labels, values["labels"][split.indices])
        np.testing.assert_allclose(split.features, values["features"][split.indices], rtol=1e-6)


BAD_INPUTS = [
    ("features 1-d", {"features": np.zeros(N)},
     "features must be a 2-d array (items, dimensions), got shape (60,)"),
    ("labels too short", {"labels": np.zeros(N - 1, dtype=int)},
     "labels must be (60,) class ids or (60, C) multi-hot for the 60 feature rows, got shape (59,)"),
    ("NaN", {"features": np.where(np.arange(N * DIM).reshape(N, DIM) == 13, np.nan, 1.0)},
     "features hold 1 non-finite value(s) (NaN or inf, or beyond float32) in 1 row(s), the first row 2"),
    ("beyond float32", {"features": np.full((N, DIM), 1e300)},
     "features hold 360 non-finite value(s)"),
    ("negative class id", {"labels": np.r_[-1, np.zeros(N - 1, dtype=int)]},
     "class ids must lie in 0..0, found -1 to 0"),
    ("fractional class id", {"labels": np.full(N, 0.5)},
     "class ids must be integers, got float64 values that are not"),
    ("multi-hot 2", {"labels": np.full((N, CLASSES), 2)}, "multi-hot labels must be 0 or 1"),
    ("no label", {"labels": np.zeros((N, CLASSES))},
     "60 item(s) have no label (the first row 0); remove them"),
    ("split code 5", {"split": np.full(N, 5)},
     "split codes must be 0 (database), 1 (query), 2 (train) or 3 (train and database), found [5]"),
    ("no query", {"split": np.zeros(N, dtype=int)}, "the split has no query item"),
    ("strings", {"features": np.array([["a"] * DIM] * N)}, "features must be real numbers, got dtype <U1"),
]


@pytest.mark.parametrize("changes, message", [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])
def test_bad_arrays_are_one_line_errors(tmp_path, changes, message):
    values = {**arrays(), **changes}
    path = tmp_path / "data.npz"
    np.savez(path, **values)
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(path))
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"gslbench: error: {path}: {message}")
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "mine").exists()  # nothing is registered


def test_class_ids_beyond_the_classes_given(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays())
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(path), "--classes", "2")
    assert result.output.strip() == (f"gslbench: error: {path}: class ids must lie in 0..1, "
                                     "found 0 to 2")


def test_bad_files_and_options_are_one_line_errors(tmp_path):
    values = arrays()
    np.savez(tmp_path / "data.npz", **values)
    np.savez(tmp_path / "nosplit.npz", features=values["features"], labels=values["labels"])
    np.save(tmp_path / "features.npy", values["features"])
    (tmp_path / "garbage.npz").write_bytes(b"not a zip archive")
    (tmp_path / "data.csv").write_text("1,2\n")
    cases = [
        (["mine", "--from", str(tmp_path / "data.npz"), "--query-per-class", "2"],
         "has its own split; drop --query-per-class and --train-per-class to use it"),
        (["mine", "--from", str(tmp_path / "nosplit.npz"), "--labels-key", "y"],
         "no array 'y' (the labels); it has features, labels (see --labels-key)"),
        (["mine", "--from", str(tmp_path / "nosplit.npz"), "--query-per-class", "30"],
         "class 0 has 20 items left, the protocol needs 30"),
        (["mine", "--from", str(tmp_path / "features.npy")], "give the labels with --labels"),
        (["mine", "--from", str(tmp_path / "data.npz"), "--labels", str(tmp_path / "data.npz")],
         "--labels and --split go with a .npy features file"),
        (["mine", "--from", str(tmp_path / "garbage.npz")], "not a readable .npz archive"),
        (["mine", "--from", str(tmp_path / "data.csv")], "unknown file type '.csv'"),
        (["mine", "--from", str(tmp_path / "missing.mat")], "no such file"),
        (["cifar10", "--from", str(tmp_path / "data.npz")], "cifar10 is a built-in data set"),
        (["../up", "--from", str(tmp_path / "data.npz")], "data set name '../up': use letters"),
    ]
    for args, message in cases:
        result = invoke(tmp_path, "features", "import", *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("gslbench: error: ") and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_a_second_feature_joins_the_record_and_protocols_must_agree(tmp_path):
    values = arrays()
    np.savez(tmp_path / "a.npz", **values)
    np.savez(tmp_path / "b.npz", **{**values, "features": values["features"] * 2})
    assert invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "a.npz")).exit_code == 0
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "b.npz"),
                    "--feature", "doubled")
    assert result.exit_code == 0, result.output
    dataset = datasets.get_dataset("mine", tmp_path / "data")
    assert set(dataset.features) == {"imported", "doubled"} and dataset.default_feature == "imported"
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "b.npz"),
                    "--feature", "other", "--map-at", "5")
    assert result.exit_code == 2 and "mine was imported with another protocol" in result.output


@pytest.mark.slow
def test_an_imported_set_trains_benches_and_reports(tmp_path):
    rng = np.random.default_rng(1)
    class_ids = np.repeat(np.arange(4), 60)
    features = rng.normal(size=(240, 16)) + 4 * np.eye(4, 16)[class_ids]
    np.savez(tmp_path / "mine.npz", features=features, labels=class_ids)
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "mine.npz"),
                    "--query-per-class", "10", "--train-per-class", "30")
    assert result.exit_code == 0, result.output
    for step in (["download", "mine"], ["features", "mine"]):
        result = invoke(tmp_path, *step)
        assert result.exit_code == 2 and "mine is an imported data set" in result.output
    result = invoke(tmp_path, "train", "-d", "mine", "--method", "float", "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert json.loads((Path(result.output.split()[-1]) / "config.json").read_text())[
        "config"]["feature"] == "imported"
    grid = ["-d", "mine", "--methods", "float,gsl", "--bits", "8", "--sub-bits", "4",
            "--epochs", "3", "--warmup-epochs", "1", "--epochs-per-refit", "1"]
    dry = invoke(tmp_path, "bench", *grid, "--dry-run")
    assert dry.exit_code == 0 and "2 cells: 0 done" in dry.output, dry.output
    result = invoke(tmp_path, "-q", "bench", *grid, "--device", "cpu")
    assert result.exit_code == 0, result.output
    tables = tmp_path / "results" / "report" / "tables.md"
    assert "mine (imported), PQ, 16-word codebooks, pairwise loss" in tables.read_text()
    metrics = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").glob("*/metrics.json")]
    assert len(metrics) == 2 and all(m["map"] > 0.5 for m in metrics)  # well separated classes
    result = invoke(tmp_path, "report", "-d", "mine")
    assert result.exit_code == 0 and "mine (imported)" in result.output


def assert_one_line_error(result, path: Path, message: str, root: Path) -> None:
    """exit 2, one line naming `path` and saying `message`, no traceback, nothing registered."""
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"gslbench: error: {path}: "), result.output
    assert message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (root / "data" / "mine").exists()


def cut_source(directory: Path, kind: str, keep: int | None) -> tuple[Path, list[str]]:
    """A valid source of `kind` whose first file is cut to `keep` bytes (None: to half, 0: empty);
    returns the cut file and the CLI arguments."""
    args = write_source(directory, kind, arrays())
    path = Path(args[1])
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2 if keep is None else keep])
    return path, args


@pytest.mark.parametrize("kind", ["npy", "npz", "h5", "mat5", "mat73"])
def test_an_empty_file_is_a_one_line_error_not_aborted(tmp_path, kind):
    path, args = cut_source(tmp_path, kind, keep=0)
    result = invoke(tmp_path, "features", "import", "mine", *args)
    assert_one_line_error(result, path, "an empty file (0 bytes)", tmp_path)


@pytest.mark.parametrize("role", ["labels", "split"])
def test_an_empty_companion_npy_is_a_one_line_error(tmp_path, role):
    args = write_source(tmp_path, "npy", arrays())
    (tmp_path / f"{role}.npy").write_bytes(b"")
    result = invoke(tmp_path, "features", "import", "mine", *args)
    assert_one_line_error(result, tmp_path / f"{role}.npy", "an empty file (0 bytes)", tmp_path)


@pytest.mark.parametrize("kind, message", [
    ("npy", "its header says shape (60, 6) float64 (2,880 bytes), but 1,"),
    ("npz", "not a readable .npz archive"),
    ("h5", "not a readable HDF5 file"),
    ("mat5", "not a readable MATLAB .mat file"),
    ("mat73", "not a readable"),
])
@pytest.mark.parametrize("keep", [None, 100], ids=["half", "100 bytes"])
def test_a_truncated_file_is_a_one_line_error(tmp_path, kind, message, keep):
    path, args = cut_source(tmp_path, kind, keep)
    if kind == "npy" and keep == 100:  # inside the header
        message = "not a numpy .npy array (EOF"
    result = invoke(tmp_path, "features", "import", "mine", *args)
    assert_one_line_error(result, path, message, tmp_path)


def forged_npy(shape: tuple[int, ...], data: bytes) -> bytes:
    """A .npy header claiming float32 `shape`, followed by `data`."""
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": "<f4", "fortran_order": False,
                                                  "shape": shape})
    return stream.getvalue() + data


def test_an_oversized_npy_header_is_refused_before_anything_is_allocated(tmp_path):
    path = tmp_path / "features.npy"
    path.write_bytes(forged_npy((10**9, 64), b"\0" * 1000))  # claims 238 GiB, holds 1 KB
    np.save(tmp_path / "labels.npy", arrays()["labels"])
    tracemalloc.start()
    try:
        result = invoke(tmp_path, "features", "import", "mine", "--from", str(path),
                        "--labels", str(tmp_path / "labels.npy"))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert_one_line_error(result, path, "its header says shape (1000000000, 64) float32 "
                          "(256,000,000,000 bytes), but 1,000 bytes follow it", tmp_path)
    assert peak < 8 * 2**20


def test_an_oversized_header_inside_an_npz_is_refused(tmp_path):
    path = tmp_path / "data.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("features.npy", forged_npy((10**9, 64), b"\0" * 1000))
        archive.writestr("labels.npy", forged_npy((N,), np.zeros(N, np.float32).tobytes()))
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(path))
    assert_one_line_error(result, path, "array 'features': its header says shape "
                          "(1000000000, 64) float32", tmp_path)


LARGE_ROWS, LARGE_DIM = 20_000, 128  # 20 MB of float64 features


@pytest.mark.parametrize("kind", ["npy", "npz", "h5", "mat73"])
def test_a_large_file_failing_a_cheap_check_is_not_read(tmp_path, kind):
    """The split's check fails before the features are read: far less than their 20 MB is ever
    allocated (numpy reports its allocations to tracemalloc; memory-mapped pages are not
    allocations)."""
    rng = np.random.default_rng(0)
    values = {"features": rng.normal(size=(LARGE_ROWS, LARGE_DIM)),
              "labels": np.arange(LARGE_ROWS) % CLASSES,
              "split": np.zeros(LARGE_ROWS, dtype=np.int64)}  # no query: refused
    args = write_source(tmp_path, kind, values)
    tracemalloc.start()
    try:
        result = invoke(tmp_path, "features", "import", "mine", *args)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    path = Path(args[-1] if kind == "npy" else args[1])
    assert_one_line_error(result, path, "the split has no query item", tmp_path)
    assert peak < values["features"].nbytes / 8, peak


@pytest.mark.parametrize("kind", ["npy", "npz", "npz-compressed", "h5", "mat73"])
def test_features_are_read_and_checked_in_chunks(tmp_path, monkeypatch, kind):
    """With a chunk of 3 rows, every value still arrives and a non-finite value is found in any
    chunk, its row counted from the file's start."""
    monkeypatch.setattr(imported, "CHUNK_BYTES", 3 * DIM * 8)

    def write(values: dict[str, np.ndarray]) -> list[str]:
        if kind != "npz-compressed":
            return write_source(tmp_path, kind, values)
        np.savez_compressed(tmp_path / "data.npz", **values)
        return ["--from", str(tmp_path / "data.npz")]

    values = arrays()
    result = invoke(tmp_path, "features", "import", "mine", *write(values))
    assert result.exit_code == 0, result.output
    features = read_feature_file(Path(result.output.strip()))
    for split in features.splits().values():
        np.testing.assert_array_equal(split.features,
                                      values["features"][split.indices].astype(np.float32))
    shutil.rmtree(tmp_path / "data")
    values["features"][[50, 7], [1, 5]] = np.inf, np.nan
    args = write(values)
    result = invoke(tmp_path, "features", "import", "mine", *args)
    assert_one_line_error(result, Path(args[1]), "features hold 2 non-finite value(s) (NaN or "
                          "inf, or beyond float32) in 2 row(s), the first row 7", tmp_path)


def test_an_end_of_file_anywhere_is_an_error_not_an_abort(tmp_path, monkeypatch):
    """click takes any EOFError for Ctrl-D ("aborted", exit 130); gslbench's group makes one an
    error line."""
    def ends_early(source):
        raise EOFError("No data left in file")
    monkeypatch.setattr(imported, "read_arrays", ends_early)
    result = invoke(tmp_path, "features", "import", "mine", "--from", "x.npz")
    assert result.exit_code == 2, result.output
    assert result.output.strip() == ("gslbench: error: a file ended before its data did (No data "
                                     "left in file); -v shows which")


def test_a_damaged_byte_in_a_memory_mapped_npz_member_is_caught(tmp_path):
    """A memory map skips the zip's CRC-32; the import checks it (one pass, nothing allocated)."""
    values = {"features": np.ones((LARGE_ROWS, LARGE_DIM)), "labels": np.arange(LARGE_ROWS) % 3}
    path = tmp_path / "data.npz"
    np.savez(path, **values)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the features' values: 1.0 becomes another finite number
    path.write_bytes(bytes(data))
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(path))
    assert_one_line_error(result, path, "not a readable .npz archive (bad CRC-32 for features.npy)",
                          tmp_path)
