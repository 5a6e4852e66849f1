"""The codes file (`gslbench.codes`): checksums that cannot be removed, codes checked against the
representations stored beside them, the chain config.json -> codes -> results, and the two
codebook fits (`encode --codebooks train|database`) kept side by side."""

import dataclasses
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from tampering import forged_h5
from test_cli import assert_user_error

from gslbench import layout
from gslbench.bench import cell_state
from gslbench.bench.grid import Grid
from gslbench.cli import cli
from gslbench.codes import CHECKED_ITEMS, Codes, check_assigned, read_codes
from gslbench.errors import GslbenchError
from gslbench.quantizers import Identity, make_quantizer
from gslbench.storage import DIGEST_ATTR, open_h5, sha256_file, write_h5


def invoke(root: Path, data: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--results-dir", str(root / "results"),
                                    *args])


def ok(root: Path, data: Path, *args: str) -> str:
    result = invoke(root, data, *args)
    assert result.exit_code == 0, result.output
    return result.output.strip()


@pytest.fixture
def copied(digits_runs, tmp_path):
    """A private copy of the session's digits runs (their results removed): (data dir,
    {"float": RunDir, "pq": RunDir}); the results folder is tmp_path/results."""
    root, runs = digits_runs
    copies = {}
    for name, run in runs.items():
        target = tmp_path / "results" / "runs" / Path(run).name
        shutil.copytree(run, target)
        copies[name] = layout.RunDir(target)
        for path in copies[name].results_of("train"):
            path.unlink()
    return root / "data", copies


def files(run: layout.RunDir) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in run.path.iterdir()}


STEPS = [("evaluate",), ("search-bench", "--single-queries", "5", "--repeats", "1"),
         ("export", "--faiss", "{tmp}/x.index")]


def run_steps(tmp_path, data, run, *fragments):
    """Every step that makes a result from the codes refuses them with one line naming the
    codes file; nothing is written."""
    before = files(run)
    for step, *args in STEPS:
        args = [arg.format(tmp=tmp_path) for arg in args]
        assert_user_error(invoke(tmp_path, data, step, str(run.path), *args), str(run.codes),
                          *fragments)
    assert files(run) == before and not (tmp_path / "x.index").exists()


def flip_codes(handle: h5py.File) -> None:
    """Change one codeword of every third code: an edit that a digest alone does not catch
    once it is recomputed."""
    codes = handle["codes"][()]
    codes[::3, 0] ^= 0x01
    handle["codes"][...] = codes


def test_flipped_codes_with_the_checksum_removed_are_refused(copied, tmp_path):
    data, runs = copied
    with h5py.File(runs["pq"].codes, "r+") as handle:
        flip_codes(handle)
        del handle.attrs[DIGEST_ATTR]
    run_steps(tmp_path, data, runs["pq"], "has no content_sha256", "encode RUN --force")


@pytest.mark.parametrize("name", ["pq", "float"])
def test_flipped_codes_with_the_checksum_recomputed_are_refused(copied, tmp_path, name):
    data, runs = copied
    with forged_h5(runs[name].codes) as handle:
        flip_codes(handle)
    run_steps(tmp_path, data, runs[name], "/codes are not what its quantizer assigns")


def test_a_resealed_codes_file_is_not_the_one_its_results_were_made_from(copied, tmp_path):
    data, runs = copied
    run = runs["pq"]
    ok(tmp_path, data, "evaluate", str(run.path))
    before = run.metrics.read_bytes()
    with forged_h5(run.codes) as handle:  # consistent, re-sealed, codes untouched
        handle.attrs["encode_seconds"] = 99.0
    for args in (("evaluate", "--force"), ("evaluate", "--search", "sdc"),
                 ("search-bench", "--single-queries", "5", "--repeats", "1")):
        assert_user_error(invoke(tmp_path, data, args[0], str(run.path), *args[1:]),
                          str(run.codes), "not the file this run made", "metrics.json",
                          "--force")
    assert run.metrics.read_bytes() == before and run.results_of("train") == [run.metrics]
    # encode --force makes the codes again and drops the results of the codes it replaces
    ok(tmp_path, data, "encode", str(run.path), "--force")
    assert run.results_of("train") == []
    ok(tmp_path, data, "evaluate", str(run.path))
    assert json.loads(run.metrics.read_text())["codes_sha256"] == sha256_file(run.codes)


def test_database_codebooks_are_fitted_from_scratch_beside_the_train_ones(copied, tmp_path):
    data, runs = copied
    run = runs["pq"]
    train_codes = run.codes.read_bytes()
    path = ok(tmp_path, data, "encode", str(run.path), "--codebooks", "database")
    assert path == str(run.codes_file("database")) == str(run.path / "codes-database.h5")
    assert run.codes.read_bytes() == train_codes  # neither overwrites the other
    trained, fitted = read_codes(run.codes), read_codes(run.codes_file("database"))
    assert (trained.codebooks, fitted.codebooks) == ("train", "database")
    np.testing.assert_array_equal(fitted.database, trained.database)  # one network
    np.testing.assert_array_equal(fitted.queries, trained.queries)
    # the reference: a new quantizer of the run's settings and seed given the final fit (cold,
    # with restarts, as every method's codebooks) on those vectors
    config = json.loads(run.config.read_text())["config"]
    reference = make_quantizer("pq", config["dim_out"], 16, sub_bits=config["sub_bits"],
                               seed=config["seed"]).fit_final(fitted.database)
    np.testing.assert_array_equal(fitted.quantizer.codebooks, reference.codebooks)
    np.testing.assert_array_equal(fitted.codes, reference.encode(fitted.database))
    assert not np.array_equal(fitted.quantizer.codebooks, trained.quantizer.codebooks)
    # both evaluated, side by side
    ok(tmp_path, data, "evaluate", str(run.path))
    ok(tmp_path, data, "evaluate", str(run.path), "--codebooks", "database")
    ok(tmp_path, data, "evaluate", str(run.path), "--codebooks", "database", "--search", "sdc")
    records = {path.name: json.loads(path.read_text()) for path in run.evaluations()}
    assert sorted(records) == ["metrics-database-sdc-l2.json", "metrics-database.json",
                               "metrics.json"]
    assert records["metrics.json"]["codebooks"] == "train"
    assert records["metrics-database.json"]["codebooks"] == "database"
    assert records["metrics-database.json"]["codes_sha256"] == sha256_file(
        run.codes_file("database"))
    assert records["metrics.json"]["codes_sha256"] == sha256_file(run.codes)
    assert records["metrics.json"]["map"] != records["metrics-database.json"]["map"]
    # encoding either again keeps the other's files
    before = files(run)
    ok(tmp_path, data, "encode", str(run.path), "--codebooks", "database")
    assert files(run) == before
    ok(tmp_path, data, "encode", str(run.path), "--force")
    assert run.results_of("database") == [run.metrics_file("sdc", "l2", "database"),
                                          run.metrics_file(codebooks="database")]
    assert not run.metrics.exists() and run.codes_file("database").read_bytes() == before[
        "codes-database.h5"]
    # a codes file renamed to the other fit is refused
    shutil.copy(run.codes_file("database"), run.codes)
    assert_user_error(invoke(tmp_path, data, "evaluate", str(run.path)), str(run.codes),
                      "fitted on the database representations, not on the train ones")
    assert_user_error(invoke(tmp_path, data, "encode", str(runs["float"].path), "--codebooks",
                             "database"), "--codebooks database", "float run")
    assert_user_error(invoke(tmp_path, data, "evaluate", str(run.path), "--codebooks", "x"),
                      "--codebooks")


def test_a_cell_is_done_only_with_every_fit_the_grid_lists(copied, tmp_path):
    data, runs = copied
    run = runs["pq"]
    ok(tmp_path, data, "evaluate", str(run.path))
    assert cell_state(run, None, ("train",)).state == "done"
    assert cell_state(run, None).state == "partial"  # both fits by default
    assert cell_state(run, None, ("database",)).state == "partial"
    ok(tmp_path, data, "encode", str(run.path), "--codebooks", "database")
    ok(tmp_path, data, "evaluate", str(run.path), "--codebooks", "database")
    assert cell_state(run, None).state == "done"
    ok(tmp_path, data, "evaluate", str(runs["float"].path))
    assert cell_state(runs["float"], None).state == "done"  # a float run has train codes only
    with forged_h5(run.codes_file("database")) as handle:
        handle.attrs["encode_seconds"] = 1.0
    state = cell_state(run, None)
    assert state.state == "partial" and "metrics-database.json" in state.reason


def test_a_grid_lists_its_codebook_fits():
    assert Grid.from_mapping({}).codebooks == ("train", "database")
    assert Grid.from_mapping({"codebooks": ["database"]}).codebooks == ("database",)
    assert Grid.from_mapping({"codebooks": "train"}, overrides={"codebooks": ("database",)}
                             ).codebooks == ("database",)
    for bad in ([], ["test"], [1]):
        with pytest.raises(GslbenchError, match="grid.toml: .*codebooks"):
            Grid.from_mapping({"codebooks": bad}, source="grid.toml")


def test_run_files_of_each_fit_are_named_apart(tmp_path):
    run = layout.RunDir(tmp_path)
    assert run.codes_file() == run.codes and run.metrics_file() == run.metrics
    assert run.metrics_file("sdc", "ip", "database").name == "metrics-database-sdc-ip.json"
    assert run.search_file("ip", "database").name == "search-database-ip.json"
    assert run.search_file().name == "search.json"
    names = ["metrics.json", "metrics-sdc-ip.json", "metrics-database.json",
             "metrics-database-adc-ip.json", "search.json", "search-ip.json",
             "search-database.json"]
    for name in names:
        (tmp_path / name).write_text("{}")
    assert [p.name for p in run.results_of("train")] == ["metrics.json", "metrics-sdc-ip.json",
                                                         "search.json", "search-ip.json"]
    assert [p.name for p in run.results_of("database")] == [
        "metrics-database-adc-ip.json", "metrics-database.json", "search-database.json"]
    assert run.evaluations()[0] == run.metrics and len(run.evaluations()) == 4


# ------------------------------------------------------------------ check_assigned


def synthetic_codes(quantizer, database: np.ndarray) -> Codes:
    codes = quantizer.encode(database)
    labels = np.eye(2, dtype=np.uint8)[np.arange(len(database)) % 2]
    return Codes(codes, labels, database[:4], labels[:4], quantizer,
                 {DIGEST_ATTR: "ab" * 32}, database)


def worse_codeword(quantizer, x: np.ndarray, code: np.ndarray) -> int:
    """A mask for a code's first byte that makes its reconstruction of x clearly worse (another
    codeword; for float codes, another float)."""
    if isinstance(quantizer, Identity):
        return 0x80
    error = ((x - quantizer.decode(code[None])) ** 2).sum()
    for mask in (0x10, 0x20, 0x40, 0x80, 0x01, 0x02, 0x04, 0x08):
        changed = code.copy()
        changed[0] ^= mask
        if ((x - quantizer.decode(changed[None])) ** 2).sum() > error + 0.01:
            return mask
    raise AssertionError("no codeword is worse")


@pytest.mark.parametrize("name", ["pq", "opq", "rq", "lsq", "none"])
def test_codes_are_checked_against_the_quantizer_that_made_them(one_thread, name):
    rng = np.random.default_rng(0)
    database = rng.standard_normal((600, 16)).astype(np.float32)
    quantizer = Identity(16) if name == "none" else make_quantizer(name, 16, 16, sub_bits=4,
                                                                   seed=0).fit(database)
    codes = synthetic_codes(quantizer, database)
    check_assigned(codes, Path("x.h5"))  # as encoded: passes (lsq: the same batch again)
    for item in (0, 417):
        changed = codes.codes.copy()
        changed[item, 0] ^= worse_codeword(quantizer, database[item], codes.codes[item])
        with pytest.raises(GslbenchError, match=f"x.h5: /codes are not what its quantizer "
                                                f"assigns .*1 of 600 items .*item {item}"):
            check_assigned(dataclasses.replace(codes, codes=changed), Path("x.h5"))


def test_a_tie_broken_the_other_way_passes(one_thread):
    """Two equal codewords: a code naming either has the same error, both are the quantizer's."""
    rng = np.random.default_rng(1)
    database = rng.standard_normal((300, 4)).astype(np.float32)
    quantizer = make_quantizer("pq", 4, 8, sub_bits=4, seed=0).fit(database)
    state = quantizer.state()
    state["codebooks"][0, 1] = state["codebooks"][0, 0]  # codeword 1 = codeword 0
    quantizer.restore(state)
    codes = synthetic_codes(quantizer, database)
    unpacked = quantizer.unpack(codes.codes)
    tied = np.flatnonzero(unpacked[:, 0] == 0)
    assert len(tied)
    changed = codes.codes.copy()
    changed[tied, 0] = (changed[tied, 0] & 0xF0) | 1  # codeword 1 instead of 0
    check_assigned(dataclasses.replace(codes, codes=changed), Path("x.h5"))


def test_a_large_database_is_checked_on_a_seeded_sample(one_thread, monkeypatch):
    import gslbench.codes as codes_module
    monkeypatch.setattr(codes_module, "CHECKED_ITEMS", 100)
    rng = np.random.default_rng(2)
    database = rng.standard_normal((1000, 8)).astype(np.float32)
    quantizer = make_quantizer("pq", 8, 16, sub_bits=4, seed=0).fit(database)
    codes = synthetic_codes(quantizer, database)
    seen = []
    original = quantizer.encode
    monkeypatch.setattr(quantizer, "encode", lambda x: seen.append(len(x)) or original(x))
    changed = codes.codes.copy()
    changed[:, 0] ^= 0x01  # every item: any sample finds it
    with pytest.raises(GslbenchError, match="of 100 items checked"):
        check_assigned(dataclasses.replace(codes, codes=changed), Path("x.h5"))
    assert seen == [100] and CHECKED_ITEMS > 100


# ------------------------------------------------------------------ checksums that cannot be removed


def test_every_sealed_format_requires_its_checksum(tmp_path):
    path = tmp_path / "x.h5"
    with write_h5(path, "gslbench.test", 2) as handle:
        handle.create_dataset("a", data=np.arange(3))
    with open_h5(path, "gslbench.test", 2) as handle:
        assert handle["a"][()].tolist() == [0, 1, 2]
    with h5py.File(path, "r+") as handle:
        del handle.attrs[DIGEST_ATTR]
    with pytest.raises(GslbenchError, match=f"^{path}: has no content_sha256 .*; write it again$"):
        with open_h5(path, "gslbench.test", 2):
            pass
    with open_h5(path, "gslbench.test", 2, sealed_since=3):  # older versions carried none
        pass
    with open_h5(path, "gslbench.test", 2, sealed_since=None):  # a format written in pieces
        pass


def test_a_quantizer_file_without_its_checksum_is_refused(copied, tmp_path):
    data, runs = copied
    run = runs["pq"]
    with h5py.File(run.quantizer, "r+") as handle:
        del handle.attrs[DIGEST_ATTR]
    assert_user_error(invoke(tmp_path, data, "encode", str(run.path), "--codebooks", "database"),
                      str(run.quantizer))
    assert not run.codes_file("database").exists()
