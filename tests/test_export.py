"""Through the CLI on short digits runs: evaluate's search modes, search-bench, and the exports
(faiss index, ann-benchmarks HDF5) against brute force on the run's own arrays."""

import errno
import json
import os
import shutil

import faiss
import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from tampering import forged_h5
from test_cli import assert_user_error

from gslbench.cli import cli
from gslbench.codes import read_codes
from gslbench.layout import RunDir
from gslbench.quantizers import load_quantizer, make_search
from gslbench.storage import sha256_file


def invoke(root, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                    str(root / "results"), *args])


def ok(root, *args) -> str:
    result = invoke(root, *args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def plain_neighbours(queries, database, k, metric):
    """float64 brute force, a stable sort by (distance, index) per query."""
    queries, database = queries.astype(np.float64), database.astype(np.float64)
    if metric == "l2":
        distances = ((queries[:, None] - database[None]) ** 2).sum(-1)
    else:
        distances = -(queries @ database.T)
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(distances, order, axis=1)


def test_evaluate_search_modes_write_their_own_files(digits_runs):
    root, runs = digits_runs
    run = RunDir(root / "results" / "runs" / runs["pq"].split("/")[-1])
    default = json.loads(ok(root, "evaluate", runs["pq"]) and run.metrics.read_text())
    assert (default["search"], default["metric"]) == ("adc", "l2")
    path = ok(root, "evaluate", runs["pq"], "--search", "sdc", "--metric", "ip")
    assert path.endswith("metrics-sdc-ip.json") and run.metrics_file("sdc", "ip").is_file()
    record = json.loads(run.metrics_file("sdc", "ip").read_text())
    assert (record["search"], record["metric"]) == ("sdc", "ip")
    assert json.loads(run.metrics.read_text()) == default  # the default file is left alone
    assert run.evaluations() == [run.metrics, run.metrics_file("sdc", "ip")]
    codes = read_codes(run.codes)
    search = make_search(codes.quantizer, codes.codes, "sdc", "ip")
    reconstructions = codes.quantizer.decode(codes.quantizer.encode(codes.queries))
    expected = -(reconstructions @ codes.quantizer.decode(codes.codes).T)
    np.testing.assert_allclose(search.distances(search.prepare(codes.queries)), expected,
                               rtol=1e-4, atol=1e-5)
    assert_user_error(invoke(root, "evaluate", runs["pq"], "--metric", "cosine"), "cosine")


def test_search_bench_writes_qps_bytes_and_recalls(digits_runs):
    root, runs = digits_runs
    ok(root, "search-bench", runs["pq"], runs["float"], "--threads", "1", "--single-queries",
       "20", "--repeats", "1", "--k", "20", "--recall-at", "1,10")
    pq = json.loads((root / "results" / "runs" / runs["pq"].split("/")[-1] / "search.json")
                    .read_text())
    assert set(pq["indexes"]) == {"codes", "float"}
    assert pq["indexes"]["codes"]["index"] == "IndexPQ"
    assert pq["indexes"]["codes"]["bytes_per_vector"] == 2
    assert pq["indexes"]["float"]["bytes_per_vector"] == 4 * pq["dim"]
    assert pq["indexes"]["float"]["recall_at"] == {"1": 1.0, "10": 1.0}
    assert 0 < pq["indexes"]["codes"]["recall_at"]["10"] < 1
    assert pq["threads"]["faiss"] == 1 and pq["k"] == 20 and len(pq["codes_sha256"]) == 64
    floating = json.loads((root / "results" / "runs" / runs["float"].split("/")[-1]
                           / "search.json").read_text())
    assert set(floating["indexes"]) == {"codes"}  # a float run's codes are the reference
    assert floating["indexes"]["codes"]["index"] == "IndexFlatL2"
    assert_user_error(invoke(root, "search-bench", runs["pq"], "--recall-at", "200"),
                      "--recall-at 200", "--k 100")


def test_faiss_export_holds_the_codes_and_gives_adc_distances(digits_runs, tmp_path):
    root, runs = digits_runs
    path = tmp_path / "pq.index"
    assert ok(root, "export", runs["pq"], "--faiss", str(path)) == str(path)
    codes = read_codes(RunDir(root / "results" / "runs" / runs["pq"].split("/")[-1]).codes)
    index = faiss.read_index(str(path))
    stored = faiss.vector_to_array(index.codes).reshape(index.ntotal, -1)
    np.testing.assert_array_equal(stored, codes.codes)
    distances, ids = index.search(codes.queries[:10], 50)
    ours = make_search(codes.quantizer, codes.codes).distances(codes.queries[:10])
    np.testing.assert_allclose(distances, np.take_along_axis(ours, ids, axis=1), rtol=1e-5,
                               atol=1e-6)
    assert_user_error(invoke(root, "export", runs["pq"]), "--faiss", "--ann-benchmarks")


@pytest.mark.parametrize("metric", ["l2", "ip"])
def test_ann_benchmarks_export_has_the_layout_and_exact_neighbours(digits_runs, tmp_path, metric):
    root, runs = digits_runs
    path = tmp_path / f"digits-{metric}.hdf5"
    ok(root, "export", runs["pq"], "--ann-benchmarks", str(path), "--metric", metric)
    codes = read_codes(RunDir(root / "results" / "runs" / runs["pq"].split("/")[-1]).codes)
    with h5py.File(path) as handle:
        assert set(handle) == {"train", "test", "neighbors", "distances"}
        arrays = {key: handle[key][()] for key in handle}
        attrs = dict(handle.attrs)
    n_db, n_query, dim = len(codes.codes), len(codes.queries), codes.quantizer.dim
    assert arrays["train"].shape == (n_db, dim) and arrays["train"].dtype == np.float32
    assert arrays["test"].shape == (n_query, dim) and arrays["test"].dtype == np.float32
    assert arrays["neighbors"].shape == (n_query, 100) and arrays["neighbors"].dtype == np.int32
    assert arrays["distances"].shape == (n_query, 100)
    assert arrays["distances"].dtype == np.float32
    np.testing.assert_array_equal(arrays["train"], codes.database)
    np.testing.assert_array_equal(arrays["test"], codes.queries)
    assert attrs["distance"] == {"l2": "euclidean", "ip": "angular"}[metric]
    assert attrs["dimension"] == dim and attrs["point_type"] == "float"
    assert attrs["type"] == "dense"
    neighbours, distances = plain_neighbours(codes.queries, codes.database, 100, metric)
    expected = np.sqrt(distances) if metric == "l2" else 1 + distances
    np.testing.assert_allclose(arrays["distances"], expected, rtol=1e-4, atol=1e-5)
    # the listed items are the 100 nearest, nearest first: their float64 distances are the
    # sorted true ones; where no other item is within 1e-6, they are the very same items
    _, all_distances = plain_neighbours(codes.queries, codes.database, n_db, metric)
    queries, database = codes.queries.astype(np.float64), codes.database.astype(np.float64)
    if metric == "l2":
        listed = ((queries[:, None] - database[arrays["neighbors"]]) ** 2).sum(-1)
    else:
        listed = -np.einsum("qd,qkd->qk", queries, database[arrays["neighbors"]])
    np.testing.assert_allclose(listed, distances, atol=1e-6)
    gaps = np.diff(all_distances[:, :101], axis=1)
    isolated = (gaps[:, :100] > 1e-6) & np.concatenate(
        [np.ones((n_query, 1), bool), gaps[:, :99] > 1e-6], axis=1)
    assert isolated.mean() > 0.9
    np.testing.assert_array_equal(arrays["neighbors"][isolated], neighbours[isolated])


def codes_of(handle: h5py.File, database: np.ndarray) -> np.ndarray:
    """What the quantizer stored in an open codes file assigns to `database`."""
    return load_quantizer(handle["quantizer"]).encode(database)


def test_older_codes_files_and_non_unit_vectors_are_user_errors(digits_runs, tmp_path):
    root, runs = digits_runs
    source = root / "results" / "runs" / runs["pq"].split("/")[-1]
    copy = tmp_path / "results" / "runs" / source.name
    shutil.copytree(source, copy)
    for path in RunDir(copy).results_of("train"):  # made from the codes before the edit
        path.unlink()
    with forged_h5(copy / "codes.h5") as handle:  # representations and codes made consistent
        handle["database/representations"][...] *= 2
        handle["codes"][...] = codes_of(handle, handle["database/representations"][()])
    assert_user_error(invoke(tmp_path, "export", str(copy), "--ann-benchmarks",
                             str(tmp_path / "x.hdf5"), "--metric", "ip"), "unit-norm")
    with forged_h5(copy / "codes.h5") as handle:
        del handle["database"]
        handle.attrs["format_version"] = 2
    assert_user_error(invoke(tmp_path, "search-bench", str(copy), "--force"), "encode RUN --force")
    assert not (tmp_path / "x.hdf5").exists()


@pytest.fixture
def copied_pq(digits_runs, tmp_path):
    """(root of the session's runs, a private copy of its PQ run under tmp_path/results)."""
    root, runs = digits_runs
    copy = tmp_path / "results" / "runs" / runs["pq"].split("/")[-1]
    shutil.copytree(runs["pq"], copy)
    return root, RunDir(copy)


def export(root, run, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                    str(run.path.parent.parent), "export", str(run.path), *args])


def test_export_never_writes_into_a_run_directory(copied_pq, tmp_path):
    root, run = copied_pq
    codes = run.codes.read_bytes()
    for target in (run.codes, run.path / "new.index", run.path.parent / "x.index"):
        assert_user_error(export(root, run, "--faiss", str(target), "--force"), str(target),
                          "where gslbench keeps its runs")
    assert run.codes.read_bytes() == codes and not (run.path / "new.index").exists()
    assert read_codes(run.codes).codes.shape[0] > 0  # still a codes file
    elsewhere = tmp_path / "elsewhere"  # a run directory outside the results folder
    shutil.copytree(run.path, elsewhere)
    assert_user_error(export(root, run, "--faiss", str(elsewhere / "sub" / "x.index")),
                      "where gslbench keeps its runs")
    project = tmp_path / "project"  # a folder with a config.json of its own is no run
    project.mkdir()
    (project / "config.json").write_text("{}")
    assert export(root, run, "--faiss", str(project / "x.index")).exit_code == 0


def test_export_writes_two_outputs_to_two_files_and_replaces_only_with_force(copied_pq, tmp_path):
    root, run = copied_pq
    same = tmp_path / "out" / "x.bin"
    assert_user_error(export(root, run, "--faiss", str(same), "--ann-benchmarks",
                             str(tmp_path / "out" / ".." / "out" / "x.bin")),
                      "given for two outputs", "--faiss and --ann-benchmarks")
    assert not (tmp_path / "out").exists()
    index, ann = tmp_path / "x.index", tmp_path / "x.hdf5"
    index.write_bytes(b"mine")
    assert_user_error(export(root, run, "--faiss", str(index), "--ann-benchmarks", str(ann)),
                      str(index), "exists", "--force")
    assert index.read_bytes() == b"mine" and not ann.exists()
    result = export(root, run, "--faiss", str(index), "--ann-benchmarks", str(ann), "--force")
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(index), str(ann)]
    assert faiss.read_index(str(index)).ntotal == len(read_codes(run.codes).codes)
    with h5py.File(ann) as handle:
        assert handle.attrs["codebooks"] == "train"
        assert handle.attrs["codes_sha256"] == sha256_file(run.codes)


@pytest.mark.parametrize("fault", ["full disk", "read-only"])
@pytest.mark.parametrize("kind", ["--faiss", "--ann-benchmarks"])
def test_a_full_disk_or_read_only_target_is_one_line_and_leaves_nothing(copied_pq, tmp_path,
                                                                         monkeypatch, fault, kind):
    root, run = copied_pq
    out = tmp_path / "out"
    out.mkdir()
    if fault == "full disk":  # the data reach the disk at fsync at the latest
        def fail(fd):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(os, "fsync", fail)
        reason = "No space left on device"
    else:  # a read-only file system refuses the rename onto the target
        def fail(source, target):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        monkeypatch.setattr(os, "replace", fail)
        reason = "Read-only file system"
    target = out / "x.out"
    result = export(root, run, kind, str(target))
    assert_user_error(result, str(target), "cannot write", reason)
    assert "Traceback" not in result.output and list(out.iterdir()) == []


def test_export_of_the_database_fit(copied_pq, tmp_path):
    root, run = copied_pq
    assert_user_error(export(root, run, "--faiss", str(tmp_path / "x.index"), "--codebooks",
                             "database"), str(run.codes_file("database")), "no such file",
                      "--codebooks database")
    ok_result = CliRunner().invoke(cli, ["--data-dir", str(root / "data"), "--results-dir",
                                         str(tmp_path / "results"), "encode", str(run.path),
                                         "--codebooks", "database"])
    assert ok_result.exit_code == 0, ok_result.output
    result = export(root, run, "--faiss", str(tmp_path / "x.index"), "--codebooks", "database")
    assert result.exit_code == 0, result.output
    index = faiss.read_index(str(tmp_path / "x.index"))
    stored = faiss.vector_to_array(index.codes).reshape(index.ntotal, -1)
    np.testing.assert_array_equal(stored, read_codes(run.codes_file("database")).codes)
