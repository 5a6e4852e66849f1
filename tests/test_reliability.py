"""No silent wrong result, no traceback (issue 13): files bound to their run, stale inputs,
corrupted content, labels, degenerate settings, OS errors, faults.

Every failure case asserts exit status 2, one line `gslbench: error: ...` naming the file or the
option, no traceback, and nothing left behind that looks like a valid result.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tampering import forged_h5

from gslbench import layout, storage
from gslbench.bench import cell_state
from gslbench.cli import cli
from gslbench.data.featurefile import FeatureSet, Split, multi_hot, read_feature_file, write_feature_file
from gslbench.errors import GslbenchError
from gslbench.methods import losses
from gslbench.report.tables import MISSING, paper_tables

SHORT = ["--epochs", "3", "--warmup-epochs", "1", "--epochs-per-refit", "1"]
# a GSL run with 3 codebooks of 16 words (12-bit codes: 4 padding bits), a two-step run with 4
# (16-bit codes)
GSL = ["train", "--method", "gsl", "--bits", "12", "--sub-bits", "4", "--dim-out", "48", *SHORT]
TWO_STEP = ["train", "--method", "two-step", "--bits", "16", "--sub-bits", "4", "--dim-out", "48",
            *SHORT]
ROOT = Path(__file__).resolve().parents[1]


def invoke(root: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(root / "data"),
                                    "--results-dir", str(root / "results"), *args])


def assert_error(result, *fragments: str) -> str:
    """Exit 2, one line `gslbench: error: ...` holding every fragment, no traceback."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), result.output
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def ok(result) -> str:
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> Path:
    """digits features and two complete runs: GSL (12-bit PQ) and two-step (16-bit PQ)."""
    root = tmp_path_factory.mktemp("pipeline")
    ok(invoke(root, "download", "digits"))
    ok(invoke(root, "features", "digits"))
    for args in (GSL, TWO_STEP):
        run = ok(invoke(root, *args))
        ok(invoke(root, "encode", run))
        ok(invoke(root, "evaluate", run))
    return root


class Work:
    """A private copy of the pipeline: its root, feature file and the two runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.features = root / "data" / "digits" / "pixels.h5"
        runs = {json.loads(p.read_text())["config"]["method"]: layout.RunDir(p.parent)
                for p in (root / "results" / "runs").glob("*/config.json")}
        self.gsl, self.two_step = runs["gsl"], runs["two-step"]

    def run(self, *args: str):
        return invoke(self.root, *args)

    def forge_record(self, run: layout.RunDir, **values) -> None:
        """Set config.json fields (not the config itself, whose hash is the run id)."""
        record = json.loads(run.config.read_text())
        record.update(values)
        run.config.write_text(json.dumps(record))


@pytest.fixture
def work(pipeline, tmp_path) -> Work:
    shutil.copytree(pipeline, tmp_path / "w")
    return Work(tmp_path / "w")


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if p.name != ".bench.lock"]


# ------------------------------------------------------------------ files bound to their run


def test_a_hand_edited_config_is_refused_by_every_step(work):
    run = work.gsl
    record = json.loads(run.config.read_text())
    record["config"]["epochs"] = 40  # relabel the run
    run.config.write_text(json.dumps(record))
    run.metrics.unlink()
    assert_error(work.run("evaluate", str(run.path)), str(run.codes),
                 "made from another config.json than the run's")
    assert not run.metrics.exists()
    run.codes.unlink()
    assert_error(work.run("encode", str(run.path)), str(run.config), "hashes to run id",
                 f"not to {run.run_id}")
    assert not run.codes.exists()
    assert cell_state(run, None).state == "todo"


@pytest.mark.parametrize("name", ["model", "quantizer"])
def test_a_model_or_quantizer_copied_from_another_run_is_refused(work, name):
    shutil.copy(getattr(work.two_step, name), getattr(work.gsl, name))
    work.gsl.codes.unlink()
    assert_error(work.run("encode", str(work.gsl.path)), str(getattr(work.gsl, name)),
                 "sha256 is not the one config.json records")
    assert not work.gsl.codes.exists()


def test_codes_and_metrics_copied_from_another_run_are_refused(work):
    shutil.copy(work.two_step.codes, work.gsl.codes)
    work.gsl.metrics.unlink()
    assert_error(work.run("evaluate", str(work.gsl.path)), str(work.gsl.codes),
                 f"made for run {work.two_step.run_id}")
    assert not work.gsl.metrics.exists()
    shutil.copy(work.two_step.metrics, work.gsl.metrics)
    assert_error(work.run("report"), str(work.gsl.metrics), f"records run {work.two_step.run_id}")


def test_metrics_of_codes_that_changed_since_are_not_reported(work):
    with forged_h5(work.gsl.codes) as handle:
        handle.attrs["encode_seconds"] = 99.0
    assert_error(work.run("report"), str(work.gsl.codes), "metrics.json records")


# ------------------------------------------------------------------ stale inputs


@pytest.mark.slow
def test_cells_made_from_an_older_feature_file_are_stale_and_bench_runs_them_again(work):
    grid = ["--methods", "gsl,two-step", "--bits", "12,16", "--sub-bits", "4", "--dim-out", "48",
            *SHORT]
    ok(work.run("features", "digits", "--split-seed", "1"))
    dry = work.run("bench", "--dry-run", *grid)
    assert dry.exit_code == 0, dry.output
    stale = [line for line in dry.output.splitlines() if "the run is stale" in line]
    assert len(stale) == 2 and all(" todo " in line and "pixels.h5: changed since run" in line
                                   for line in stale)
    assert "2 stale or damaged, to run again" in dry.output
    # a step on a stale run refuses it
    work.gsl.codes.unlink()
    assert_error(work.run("encode", str(work.gsl.path)), str(work.features), "the run is stale")
    result = work.run("bench", *grid)
    assert result.exit_code == 0, result.output
    assert result.output.count("does not count") == 2
    sha = storage.sha256_file(work.features)
    for run in (work.gsl, work.two_step):
        assert json.loads(run.metrics.read_text())["features_sha256"] == sha
    assert "4 cells: 4 done" in work.run("bench", "--dry-run", *grid).output


# ------------------------------------------------------------------ corrupted content


def test_flipped_code_bytes_are_caught_by_the_digest(work):
    with storage.open_h5(work.gsl.codes, "gslbench.codes", 3) as handle:
        offset = handle["codes"].id.get_offset()
    data = bytearray(work.gsl.codes.read_bytes())
    data[offset] ^= 0xFF
    work.gsl.codes.write_bytes(bytes(data))
    work.gsl.metrics.unlink()
    assert_error(work.run("evaluate", str(work.gsl.path)), str(work.gsl.codes),
                 "does not match its content_sha256")
    assert not work.gsl.metrics.exists()


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: h["codes"].__setitem__((0, 1), 0xF0), "/codes are out of range"),
    (lambda h: h["labels"].__setitem__(slice(None), 0), "/labels: 1337 of 1337 items have no label"),
    (lambda h: h["query/representations"].__setitem__((3, 0), np.nan),
     "/query/representations hold non-finite values"),
    (lambda h: h["quantizer/codebooks"].__setitem__((0, 0, 0), np.inf), "non-finite values"),
    (lambda h: h.attrs.__delitem__("run"), "attribute 'run' is None"),
    (lambda h: h.attrs.__setitem__("config", "{"), "corrupt or incomplete file"),
])
def test_forged_codes_content_is_refused(work, edit, fragment):
    with forged_h5(work.gsl.codes) as handle:
        edit(handle)
    work.gsl.metrics.unlink()
    assert_error(work.run("evaluate", str(work.gsl.path)), str(work.gsl.codes), fragment)
    assert not work.gsl.metrics.exists()


def test_nan_codebooks_and_weights_are_refused_even_with_forged_checksums(work):
    run = work.gsl
    run.codes.unlink()
    with forged_h5(run.quantizer) as handle:
        handle["quantizer/codebooks"][0, 0, 0] = np.nan
    work.forge_record(run, quantizer_sha256=storage.sha256_file(run.quantizer))
    assert_error(work.run("encode", str(run.path)), "quantizer.h5", "non-finite values")
    saved = torch.load(run.model, weights_only=True)
    next(iter(saved["state_dict"].values()))[0] = float("nan")
    torch.save(saved, run.model)
    work.forge_record(run, model_sha256=storage.sha256_file(run.model))
    assert_error(work.run("encode", str(run.path)), str(run.model), "non-finite")
    assert not run.codes.exists()


@pytest.mark.parametrize("content, kind", [
    (b"garbage, not a zip", "garbage"),
    (None, "a plain tensor"),
    (None, "a pickle weights_only refuses"),
])
def test_a_model_that_is_not_a_gslbench_model_is_one_line(work, content, kind):
    run = work.two_step
    if kind == "a plain tensor":
        torch.save(torch.zeros(3), run.model)
    elif kind == "a pickle weights_only refuses":
        torch.save({"state_dict": {}, "dim_in": 64, "hook": Work}, run.model)
    else:
        run.model.write_bytes(content)
    work.forge_record(run, model_sha256=storage.sha256_file(run.model))
    run.codes.unlink()
    line = assert_error(work.run("encode", str(run.path)), str(run.model), "not a gslbench model")
    assert "weights_only" not in line
    assert not run.codes.exists()


def test_nan_or_huge_features_in_the_feature_file_are_refused(work):
    with forged_h5(work.features) as handle:
        handle["database/features"][5, 3] = np.inf
    assert_error(work.run("train", "--force"), str(work.features), "/database/features",
                 "1 non-finite")
    with forged_h5(work.features) as handle:
        handle["database/features"][5, 3] = 1e30
    assert_error(work.run("train", "--force"), "/database/features", "as large as 1e+30")


def replace_dataset(handle, name: str, data: np.ndarray) -> None:
    del handle[name]
    handle[name] = data


@pytest.mark.parametrize("edit, fragment", [
    (lambda h: replace_dataset(h, "train/features", np.full((500, 64), b"a", dtype="S1")),
     "/train/features are |S1, not floating point numbers"),
    (lambda h: h.attrs.__delitem__("dataset"), "attribute 'dataset' is None, expected a str"),
    (lambda h: h.attrs.__setitem__("label_names", "[not json"), "'label_names' is not JSON"),
    (lambda h: h.attrs.__setitem__("label_names", '["one"]'), "not a list of 10 names"),
    (lambda h: h.attrs.__setitem__("format_version", "one"), "format_version 'one' is not an integer"),
    (lambda h: h.attrs.__setitem__("format_version", 1.5), "format_version 1.5 is not an integer"),
    (lambda h: h.attrs.__setitem__("split_seed", "zero"), "attribute 'split_seed' is 'zero'"),
])
def test_a_bad_feature_file_is_one_line_naming_it(work, edit, fragment):
    with forged_h5(work.features) as handle:
        edit(handle)
    runs = sorted((work.root / "results" / "runs").iterdir())
    assert_error(work.run("train", "--force", "--method", "float", "--epochs", "2"),
                 str(work.features), fragment)
    assert sorted((work.root / "results" / "runs").iterdir()) == runs


@pytest.mark.parametrize("key, value, fragment", [
    ("map", "0.7", "'map' is '0.7', expected a number in [0, 1]"),
    ("map", 1.5, "'map' is 1.5, expected a number in [0, 1]"),
    ("map", float("nan"), "'map' is nan, expected a number in [0, 1]"),
    ("map_at", [0.5], "'map_at' is [0.5], expected {K: value}"),
    ("recall_at", {"10": "high"}, "'recall_at[10]' is 'high'"),
    ("train_s", None, "'train_s' is None, expected seconds >= 0"),
    ("pr_curve", [[0.0]], "'pr_curve' is not a list of [recall, precision] pairs"),
    ("map_top", 7, "'map_top' is 7, expected null or one of the K of 'map_at'"),
    ("config", "gsl", "'config' is 'gsl', expected a dict"),
])
def test_a_report_over_a_metrics_json_with_wrong_types_is_one_line(work, key, value, fragment):
    record = json.loads(work.gsl.metrics.read_text())
    record[key] = value
    work.gsl.metrics.write_text(json.dumps(record))
    assert_error(work.run("report"), str(work.gsl.metrics), fragment)
    assert not (work.root / "results" / "report").exists()


# ------------------------------------------------------------------ labels


def feature_set(labels: np.ndarray, features: np.ndarray | None = None) -> FeatureSet:
    n, rng = len(labels), np.random.default_rng(0)
    features = rng.normal(size=(n, 4)).astype(np.float32) if features is None else features
    split = Split(features, labels, np.arange(n))
    return FeatureSet("digits", "pixels", split, split, split, ["a", "b"], 0, "")


@pytest.mark.parametrize("labels, fragment", [
    (np.eye(2, dtype=np.float32)[[0, 1, 0, 1]], "float32; labels are multi-hot 0/1"),
    (np.array([[1, 0], [0, -1], [1, 0], [0, 1]], np.int8), "values other than 0 and 1"),
    (np.array([[1, 0], [0, 0], [1, 0], [0, 1]], np.uint8), "1 of 4 items have no label"),
    (np.zeros((4, 2), np.uint8), "4 of 4 items have no label"),
])
def test_bad_labels_are_refused_when_written_and_when_read(tmp_path, labels, fragment):
    path = tmp_path / "pixels.h5"
    with pytest.raises(GslbenchError, match="/train/labels"):
        write_feature_file(path, feature_set(labels))
    assert not path.exists() and not leftovers(tmp_path)
    write_feature_file(path, feature_set(multi_hot(np.array([0, 1, 0, 1]), 2)))
    with forged_h5(path) as handle:
        for name in ("train", "query", "database"):
            del handle[f"{name}/labels"]
            handle[f"{name}/labels"] = labels
    with pytest.raises(GslbenchError, match=fragment):
        read_feature_file(path)


def test_constant_features_are_refused(tmp_path):
    labels = multi_hot(np.array([0, 1, 0, 1]), 2)
    with pytest.raises(GslbenchError, match="constant: every item has the same feature vector"):
        write_feature_file(tmp_path / "x.h5", feature_set(labels, np.ones((4, 3), np.float32)))


def test_queries_without_a_relevant_item_are_counted_and_warned_about(work):
    run = work.two_step
    # evaluate compares the codes' labels with the feature file's where it is at hand (labels
    # edited and resealed are refused: test_codes_whose_labels_were_permuted...); without it,
    # as on another machine, the edited labels are scored as they are
    recorded = Path(json.loads(run.config.read_text())["features_file"])
    hidden = recorded.with_name(recorded.name + ".away")
    recorded.rename(hidden)
    try:
        with forged_h5(run.codes) as handle:  # no database item of class 9 any more
            labels = handle["labels"][()]
            labels[labels[:, 9] == 1] = np.eye(10, dtype=np.uint8)[8]
            handle["labels"][...] = labels
        run.metrics.unlink()  # made from the codes before the edit: evaluate would refuse them
        result = work.run("evaluate", str(run.path))
        assert result.exit_code == 0, result.output
        assert "10 of 100 queries have no relevant item in the database" in result.output
        assert json.loads(run.metrics.read_text())["n_query_no_relevant"] == 10
        with forged_h5(run.codes) as handle:  # no label in common at all
            handle["query/labels"][...] = np.eye(10, dtype=np.uint8)[9]
        run.metrics.unlink()
        assert_error(work.run("evaluate", str(run.path)), str(run.codes),
                     "no query has a relevant item")
        assert not run.metrics.exists()
    finally:
        hidden.rename(recorded)


# ------------------------------------------------------------------ degenerate settings

SETTING_CASES = [  # (field, value, the one error every entry point gives)
    ("batch_size", "1", "--batch-size 1 is outside [2, 65536]"),
    ("batch_size", "0", "--batch-size 0 is outside [2, 65536]"),
    ("hidden", "0", "--hidden 0 is outside [1, 16384]"),
    ("lr", "1e10", "--lr 1e+10 is outside (0, 1]"),
    ("lr", "nan", "--lr nan is not a finite number"),
    ("lr", "-inf", "--lr -inf is not a finite number"),
    ("weight_decay", "-1", "--weight-decay -1 is outside [0, 1]"),
    ("qloss_lambda", "-1", "--qloss-lambda -1 is outside [0, inf)"),
    ("margin", "-1", "--margin -1 is outside (0, 2]"),
    ("sub_bits", "0", "--sub-bits 0 is outside [1, 16]"),
    ("seed", "-1", "--seed -1 is outside [0, 4294967295]"),
    ("gsl_alpha", "2", "--gsl-alpha 2 is outside [0, 1]"),
]


@pytest.mark.parametrize("field, value, message", SETTING_CASES)
def test_a_bad_setting_is_the_same_error_from_every_entry_point(work, field, value, message):
    option = "--" + field.replace("_", "-")
    assert_error(work.run("train", option, value), message)
    typed = {"seed": "--seeds"}.get(field, option)  # bench names the option as typed
    assert_error(work.run("bench", typed, value), message.replace(option, typed, 1))
    grid = work.root / "grid.toml"
    grid.write_text(f"{field} = {value}\n")
    for args in (("bench", str(grid)), ("bench", "--dry-run", str(grid))):
        assert_error(work.run(*args), f"{grid}: {message}")
    record = json.loads(work.gsl.config.read_text())
    record["config"][field] = json.loads(value) if value not in ("nan", "-inf") else float(value)
    work.gsl.config.write_text(json.dumps(record))
    assert_error(work.run("encode", str(work.gsl.path), "--force"), f"{work.gsl.config}: {message}")
    assert not (work.root / "results" / "report").exists()


@pytest.mark.parametrize("args, message", [
    (("--split-seed", "-1"), "--split-seed -1 is outside [0, 4294967295]"),
    (("--batch-size", "0"), "--batch-size 0 is outside [1, 65536]"),
    (("--image-size", "0"), "--image-size 0 is outside [16, 1024]"),
])
def test_bad_features_options_are_one_line(work, args, message):
    before = work.features.read_bytes()
    assert_error(work.run("features", "digits", *args), message)
    assert work.features.read_bytes() == before


def test_a_config_json_with_missing_keys_is_one_line(work):
    run = work.gsl
    record = json.loads(run.config.read_text())
    del record["config"]["hidden"]
    run.config.write_text(json.dumps(record))
    assert_error(work.run("encode", str(run.path), "--force"), str(run.config),
                 "missing config keys: hidden")
    record = json.loads(work.two_step.config.read_text())
    del record["model_sha256"]
    work.two_step.config.write_text(json.dumps(record))
    assert_error(work.run("encode", str(work.two_step.path), "--force"), str(work.two_step.config),
                 "records no sha256 of model.pt")


def test_a_training_whose_loss_becomes_nan_stops_without_saving_a_model(work, monkeypatch):
    class NanLoss(torch.nn.Module):
        def __init__(self, *args) -> None:
            super().__init__()

        def forward(self, z, labels):
            return z.sum() * float("nan")

    monkeypatch.setitem(losses.LOSSES, "pairwise", NanLoss)
    runs = sorted((work.root / "results" / "runs").iterdir())
    assert_error(work.run("train", "--method", "qloss", *SHORT), "training diverged at epoch 1",
                 "no model was saved")
    assert sorted((work.root / "results" / "runs").iterdir()) == runs


def test_a_float_run_ignores_the_quantizer_schedule(work):
    ok(work.run("train", "--method", "float", "--epochs", "2"))  # default --warmup-epochs 5


def test_grid_validation_checks_feature_names(work):
    grid = work.root / "grid.toml"
    grid.write_text('feature = "resnet"\n')
    assert_error(work.run("bench", "--dry-run", str(grid)), f"{grid}: digits has no feature 'resnet'")


# ------------------------------------------------------------------ OS errors


def test_folders_that_are_files_and_files_that_are_folders_are_one_line(work):
    a_file = work.root / "a-file"
    a_file.write_text("x")
    assert_error(work.run("--results-dir", str(a_file), "train"), "--results-dir", "is a file")
    assert_error(work.run("--data-dir", str(a_file), "train"), "--data-dir", "is a file")
    assert_error(work.run("report", "--out", str(a_file)), "--out", "is a file")
    assert_error(work.run("report", "--doc", str(work.root)), "--doc", "is a directory")
    assert_error(work.run("bench", str(work.root)), "GRID.toml", "is a directory")
    (work.root / "mine").mkdir()
    (work.root / "mine" / "notes.txt").write_text("keep me")
    assert_error(work.run("report", "--out", str(work.root / "mine")), "not a gslbench report folder")
    assert (work.root / "mine" / "notes.txt").read_text() == "keep me"
    runs = work.root / "results" / "runs"
    shutil.rmtree(runs)
    runs.write_text("x")  # RESULTS/runs is a file
    assert_error(work.run("train"), str(runs))
    assert_error(work.run("bench", "--methods", "float"), str(runs))


def test_an_injected_full_disk_fails_cleanly_in_every_writing_step(work, monkeypatch):
    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", full)
    run = work.gsl
    run.codes.unlink()
    run.metrics.unlink()
    for args, path in ((("encode", str(run.path)), run.codes),
                       # --no-reuse: a checkpoint that cannot be saved is a warning line of its
                       # own (test_reuse), before the run's error
                       (("train", "--method", "float", "--epochs", "2", "--no-reuse"), None),
                       (("features", "digits"), work.features),
                       (("report", work.two_step.run_id), work.root / "results" / "report")):
        line = assert_error(work.run(*args), "No space left on device")
        assert path is None or str(path) in line
    assert not run.codes.exists() and not (work.root / "results" / "report").exists()
    assert not leftovers(work.root)
    assert len(list((work.root / "results" / "runs").iterdir())) == 2  # no float run


def namespace_available() -> bool:
    """Whether this test may mount file systems in a private mount namespace (root, unshare)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


needs_mounts = pytest.mark.skipif(not namespace_available(),
                                  reason="needs root and unshare for a private tmpfs / ro mount")


def gslbench_in_namespace(setup: str, root: Path, *args: str, listing: Path | None = None
                          ) -> subprocess.CompletedProcess:
    """Run gslbench after the shell commands `setup` in a private mount namespace (its mounts
    vanish with it); the names in the folder `listing` afterwards go to root/listing.txt."""
    command = " ".join([sys.executable, "-c", "'from gslbench.cli import main; main()'",
                        "--data-dir", str(root / "data"), "--results-dir", str(root / "results"),
                        *args])
    after = f"ls -A {listing} > {root / 'listing.txt'}" if listing else "true"
    script = f"set -e\n{setup}\nset +e\n{command}\nstatus=$?\n{after}\nexit $status\n"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True,
                          env=env, timeout=300)


def assert_process_error(process: subprocess.CompletedProcess, *fragments: str) -> str:
    assert process.returncode == 2, process.stdout + process.stderr
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), process.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
@needs_mounts
def test_a_full_disk_is_one_line_without_a_crash_or_a_partial_file(work):
    """A 4 MB tmpfs as the runs folder, filled up to its last 8 KB."""
    run = work.gsl
    run.codes.unlink()
    run.metrics.unlink()
    runs = work.root / "results" / "runs"
    on_disk = shutil.move(runs, work.root / "runs-on-disk")
    runs.mkdir()
    setup = (f"mount -t tmpfs -o size=4m tmpfs {runs}\ncp -r {on_disk}/. {runs}/\n"
             f"avail=$(df -B1 --output=avail {runs} | tail -1)\n"
             f"head -c $((avail - 8192)) /dev/zero > {runs}/filler")
    cases = [(("encode", str(run.path)), run.path, run.codes),
             (("train", "--method", "float", "--epochs", "2"), runs, runs),
             (("report", work.two_step.run_id, "--out", str(runs / "report")), runs, runs / "report")]
    for args, listing, path in cases:
        process = gslbench_in_namespace(setup, work.root, *args, listing=listing)
        assert "Segmentation" not in process.stderr
        assert_process_error(process, str(path), "No space left on device")
        names = (work.root / "listing.txt").read_text().split()
        assert not [name for name in names if name.startswith(".")], names
        assert path.name not in names or path == runs
        assert len([name for name in names if name != "filler"]) == (4 if listing == run.path else 2)


@pytest.mark.slow
@needs_mounts
def test_a_read_only_results_folder_is_one_line_naming_the_file(work):
    results = work.root / "results"
    setup = f"mount --bind {results} {results}\nmount -o remount,ro,bind {results}"
    run = work.gsl
    metrics = run.metrics.read_bytes()
    for args, path in ((("train", "--method", "float", "--epochs", "2", "--no-reuse"),
                        results / "runs"),
                       (("evaluate", str(run.path), "--force"), run.metrics),
                       (("report",), results / "report"),
                       (("bench", "--methods", "float", "--epochs", "2"), results / "runs")):
        line = assert_process_error(gslbench_in_namespace(setup, work.root, *args), str(path))
        assert "Read-only file system" in line
    assert run.metrics.read_bytes() == metrics


# ------------------------------------------------------------------ faults


def start_gslbench(root: Path, *args: str, code: str = "") -> subprocess.Popen:
    """gslbench in a new process group (its workers join it); `code` runs first (fault hooks)."""
    command = [sys.executable, "-c", f"{code}\nfrom gslbench.cli import main; main()",
               "--data-dir", str(root / "data"), "--results-dir", str(root / "results"), *args]
    with open(root / "gslbench.log", "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(condition, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_killing_bench_with_workers_leaves_no_process_behind(work, signum):
    grid = ["--methods", "two-step,qloss,gsl", "--bits", "16,32", "--epochs", "300", "-j", "2"]
    process = start_gslbench(work.root, "bench", *grid)
    started = work.root / "results" / "runs"
    wait_for(lambda: len(list(started.glob(".*.*"))) >= 2 or process.poll() is not None, 300,
             "the workers did not start training")
    assert process.poll() is None, (work.root / "gslbench.log").read_text()
    os.kill(process.pid, signum)  # the bench process only, not its group
    status = process.wait(timeout=60)
    wait_for(lambda: not group_alive(process.pid), 15, "a worker outlived the bench")
    if signum == signal.SIGTERM:  # one line, then nothing (no multiprocessing warning: the
        # killed workers held no named semaphore for the resource tracker to clean up)
        log = (work.root / "gslbench.log").read_text()
        assert status == 143 and log.rstrip("\n").endswith("\ngslbench: terminated"), log[-2000:]
    rerun = work.run("bench", "--dry-run", *grid)  # nothing half-written counts
    assert rerun.exit_code == 0 and "does not count" not in rerun.output


@pytest.mark.slow
def test_local_workers_hold_the_bench_lock_as_long_as_they_live(tmp_path):
    import fcntl

    from gslbench.bench.executors import LocalExecutor

    path = tmp_path / ".bench.lock"
    with open(path, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        pool = LocalExecutor(1, held)
        assert pool.submit(os.getppid).result(timeout=120) == os.getpid()
    with open(path, "a") as other:  # the bench's own handle is closed: the worker's holds it
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
        pool.shutdown()
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.slow
def test_a_failing_or_interrupted_report_leaves_the_previous_one_whole(work, monkeypatch):
    import gslbench.report as report_module

    report = work.root / "results" / "report"
    ok(work.run("report"))
    (report / "from-an-older-report.png").write_bytes(b"old")
    before = {path.name: path.read_bytes() for path in report.iterdir()}
    real = report_module.write_figures

    def fail_halfway(data, out_dir, error=None):  # after the tables, one figure written
        (Path(out_dir) / "map_vs_bits.png").write_bytes(b"half a figure")
        raise error or OSError(28, "No space left on device")

    monkeypatch.setattr(report_module, "write_figures", fail_halfway)
    assert_error(work.run("report"), str(report), "No space left on device")
    monkeypatch.setattr(report_module, "write_figures",
                        lambda data, out_dir: fail_halfway(data, out_dir, KeyboardInterrupt()))
    assert work.run("report").exit_code == 130
    assert {path.name: path.read_bytes() for path in report.iterdir()} == before
    assert not leftovers(work.root / "results")
    monkeypatch.setattr(report_module, "write_figures", real)
    ok(work.run("report"))
    assert not (report / "from-an-older-report.png").exists()  # replaced as a unit


KILL_AFTER_FIRST_RENAME = """
import os, pathlib
_rename = pathlib.Path.rename
def rename(self, target):
    result = _rename(self, target)
    os._exit(137)  # killed between train's two renames
pathlib.Path.rename = rename
"""


@pytest.mark.slow
def test_train_force_killed_between_its_renames_loses_nothing(work):
    run = work.two_step
    args = ("train", "--method", "two-step", "--bits", "16", "--sub-bits", "4", "--dim-out", "48",
            *SHORT, "--force")
    process = start_gslbench(work.root, *args, code=KILL_AFTER_FIRST_RENAME)
    assert process.wait(timeout=300) == 137
    assert not run.path.exists()
    copies = list(run.path.parent.glob(f".{run.run_id}.*"))
    new = [copy for copy in copies if (copy / "config.json").is_file()]
    assert len(copies) == 2 and len(new) == 1  # the new run, and the old one moved aside
    record = (new[0] / "config.json").read_text()
    result = work.run("bench", "--methods", "two-step", "--bits", "16", "--sub-bits", "4",
                      "--dim-out", "48", *SHORT)
    assert result.exit_code == 0, result.output
    assert "restored from" in result.output
    assert run.config.read_text() == record  # the new run, not trained a third time
    assert run.metrics.is_file() and not leftovers(work.root / "results")


@pytest.mark.slow
def test_bench_repairs_damaged_cells_from_the_first_invalid_step(work):
    grid = ["--methods", "gsl,two-step", "--bits", "12,16", "--sub-bits", "4", "--dim-out", "48",
            *SHORT]
    cells = ("gsl α=1 k=8 select=aligned pq 12 bits", "two-step pq 16 bits")
    work.gsl.metrics.write_text("{")  # a corrupt metrics.json: re-evaluate only
    work.two_step.model.unlink()  # a trained cell without its model: train again
    trained = {run: run.config.read_bytes() for run in (work.gsl, work.two_step)}
    codes = work.gsl.codes.read_bytes()
    dry = work.run("bench", "--dry-run", *grid).output.splitlines()
    rows = {cell: next(line for line in dry if cell in line) for cell in cells}
    assert " partial " in rows[cells[0]] and "metrics.json: not valid JSON" in rows[cells[0]]
    assert " todo " in rows[cells[1]] and "model.pt: no such file" in rows[cells[1]]
    ok(work.run("bench", *grid))
    assert work.gsl.config.read_bytes() == trained[work.gsl] and work.gsl.codes.read_bytes() == codes
    assert json.loads(work.gsl.metrics.read_text())["run"] == work.gsl.run_id
    assert work.two_step.model.is_file() and work.two_step.config.read_bytes() != trained[work.two_step]
    assert "4 cells: 4 done" in work.run("bench", "--dry-run", *grid).output


@pytest.mark.slow
def test_the_ray_executor_on_two_nodes_survives_losing_one_mid_grid(pipeline, tmp_path,
                                                                   one_ray_at_a_time):
    from ray.cluster_utils import Cluster  # ray is in the test extra

    root = tmp_path / "ray"
    shutil.copytree(pipeline / "data", root / "data")
    grid = ["--methods", "two-step,qloss,gsl", "--bits", "16,32", *SHORT, "--executor", "ray",
            "--cpus-per-cell", "1"]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        process = start_gslbench(root, "bench", *grid, "--address", cluster.address)
        runs = root / "results" / "runs"
        wait_for(lambda: list(runs.glob("*/metrics.json")) or process.poll() is not None, 300,
                 "no cell finished")
        cluster.remove_node(workers[1])
        assert process.wait(timeout=600) == 0, (root / "gslbench.log").read_text()
        log = (root / "gslbench.log").read_text()
        done = [line.split()[3] for line in log.splitlines() if "] done " in line]
        assert len(done) == len(set(done)) == 6  # every cell once
        again = invoke(root, "bench", *grid, "--address", cluster.address)
        assert again.exit_code == 0 and "6 done already, 0 to run" in again.output
    finally:
        cluster.shutdown()


# ------------------------------------------------------------------ smaller


def test_evaluate_with_other_cut_offs_evaluates_again(work):
    run = work.two_step
    ok(work.run("evaluate", str(run.path), "--map-at", "5"))
    assert json.loads(run.metrics.read_text())["map_at"].keys() == {"5"}
    ok(work.run("evaluate", str(run.path)))
    assert json.loads(run.metrics.read_text())["map_at"].keys() == {"100", "1000"}


def test_a_nan_map_is_not_shown_as_a_missing_cell():
    import pandas as pd

    rows = [("float", "float", 0, 0.9), ("qloss", "qloss λ=0.1", 16, 0.8),
            ("qloss", "qloss λ=0.1", 32, 0.85), ("gsl", "gsl α=1 k=8", 16, float("nan"))]
    results = pd.DataFrame([{"dataset": "digits", "feature": "pixels", "loss": "pairwise",
                             "quantizer": "none" if m == "float" else "pq", "method": m,
                             "variant": v, "code_bits": b, "seed": 0, "map": value,
                             "search": "adc", "metric": "l2", "sub_bits": 8,
                             "quant_mse_database": 0.0 if m == "float" else 0.1}
                            for m, v, b, value in rows])
    cells = paper_tables(results)[0].cells()
    assert cells.loc["gsl α=1 k=8", 16] == "NaN" and cells.loc["gsl α=1 k=8", 32] == MISSING


def test_gslbench_alone_prints_the_help_and_verbose_errors_still_exit_2(work):
    result = CliRunner().invoke(cli, [])
    assert result.exit_code == 0 and result.output.startswith("Usage: ")
    verbose = work.run("-v", "train", "--hidden", "0")
    assert verbose.exit_code == 2 and "Traceback" in verbose.output
    assert verbose.output.strip().splitlines()[-1] == ("gslbench: error: --hidden 0 is outside "
                                                       "[1, 16384]")


THREADS_FIRST = """
import numpy as np
from gslbench.evaluation.scoring import evaluate_distances
rng = np.random.default_rng(0)
labels = np.eye(4, dtype=np.uint8)[rng.integers(0, 4, 300)]
out = evaluate_distances(rng.random((64, 300), dtype=np.float32), labels[:64], labels,
                         block_size=8, workers=8)
assert 0 < out["map"] <= 1, out
print("ok")
"""


@pytest.mark.parametrize("attempt", range(4))
def test_a_fresh_interpreter_evaluates_through_threads_first(attempt):
    """The first faiss read comes from the scoring threads at once: each waits for the whole
    import, none gets a partially initialised module (issue 32)."""
    process = subprocess.run([sys.executable, "-c", THREADS_FIRST], capture_output=True,
                             text=True, cwd=ROOT, timeout=300,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert process.returncode == 0 and process.stdout.strip() == "ok", process.stderr


def _wider(self, z):
    return torch.cat([z, z[:, :1]], dim=1)


def _refuse(self, config, quantizer):
    raise RuntimeError("the plugin's bug")


@pytest.mark.parametrize("attribute, replacement, fragment", [
    ("representation", _wider, "its representation of a (64, 48) batch has shape (64, 49)"),
    ("representation", lambda self, z: z[:, 0], "has shape (64,)"),
    ("penalty", lambda self, z: (z ** 2).sum(dim=1), "its penalty has shape (64,), not a scalar"),
    ("__init__", _refuse, "the method cannot be built: RuntimeError: the plugin's bug"),
])
def test_a_method_that_breaks_the_contract_stops_the_run_in_one_line(work, monkeypatch,
                                                                     attribute, replacement,
                                                                     fragment):
    """As a plugin method could: what `gslbench.testing` checks is enforced when runs train."""
    from gslbench.methods import METHODS

    monkeypatch.setattr(METHODS["qloss"], attribute, replacement)
    runs = sorted((work.root / "results" / "runs").iterdir())
    assert_error(work.run("train", "--method", "qloss", "--dim-out", "48", "--batch-size", "64",
                          *SHORT), "--method qloss", fragment)
    assert sorted((work.root / "results" / "runs").iterdir()) == runs


# ------------------------------------------------------------------ imports read only their file


def _h5_source(tmp_path: Path, how: str) -> Path:
    """An .h5 for `features import` whose `features` keeps its bytes outside the file: in another
    file through external storage, an external link or a virtual dataset."""
    rng = np.random.default_rng(0)
    features, labels = rng.random((40, 3)), np.arange(40) % 2
    outside = tmp_path / "outside.bin"
    features.tofile(outside)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["x"] = features
    path = tmp_path / f"{how}.h5"
    with h5py.File(path, "w") as handle:
        handle["labels"] = labels
        if how == "external":
            handle.create_dataset("features", features.shape, features.dtype,
                                  external=[(str(outside), 0, features.nbytes)])
        elif how == "link":
            handle["features"] = h5py.ExternalLink(str(other), "/x")
        else:
            layout_ = h5py.VirtualLayout(features.shape, features.dtype)
            layout_[:] = h5py.VirtualSource(str(other), "x", features.shape)
            handle.create_virtual_dataset("features", layout_)
    return path


@pytest.mark.parametrize("how, fragment", [
    ("external", "stored in other files (external storage)"),
    ("link", "'features' is a link to another file"),
    ("virtual", "stored in other files (virtual dataset)"),
])
def test_an_hdf5_import_reads_no_other_file(tmp_path, how, fragment):
    path = _h5_source(tmp_path, how)
    assert_error(invoke(tmp_path, "features", "import", "mine", "--from", str(path),
                        "--query-per-class", "2", "--train-per-class", "5"), str(path), fragment)
    assert not (tmp_path / "data" / "mine").exists()


def test_a_failed_import_writes_nothing(tmp_path):
    """Constant features are refused when the feature file is written: no record is left
    either, and the name is free for the next import."""
    labels = np.arange(40) % 2
    constant = tmp_path / "constant.npz"
    np.savez(constant, features=np.ones((40, 3)), labels=labels)
    args = ["features", "import", "mine", "--query-per-class", "2", "--train-per-class", "5"]
    assert_error(invoke(tmp_path, *args, "--from", str(constant)), "constant")
    assert not [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
    good = tmp_path / "good.npz"
    np.savez(good, features=np.random.default_rng(0).random((40, 3)), labels=labels)
    ok(invoke(tmp_path, *args, "--split-seed", "1", "--from", str(good)))


# ------------------------------------------------------------------ where a command may write

TUNING_GRID = 'method = "qloss"\nbits = 16\nseed = [0, 1]\nepochs = 2\nwarmup_epochs = 1\n'


@pytest.mark.slow
def test_report_doc_and_tune_outputs_never_overwrite_what_they_did_not_write(work):
    import sqlite3

    storage = work.root / "studies.db"  # a storage, as --storage sqlite:///studies.db makes
    with sqlite3.connect(storage) as connection:
        connection.execute("create table studies (id integer)")
    notes = work.root / "notes.md"
    notes.write_text("mine\n")
    grid = work.root / "tuning.toml"
    grid.write_text(TUNING_GRID)
    protected = {work.gsl.config: "where gslbench keeps its runs",
                 work.gsl.model: "where gslbench keeps its runs",
                 work.features: "inside the data folder",
                 storage: "is an SQLite database"}
    before = {path: path.read_bytes() for path in [*protected, notes]}
    for path, fragment in {**protected, notes: "exists; choose a new file, or give --force"}.items():
        assert_error(work.run("report", "--doc", str(path)), f"--doc {path}", fragment)
        assert_error(work.run("tune", str(grid), "--out", str(path)), f"--out {path}", fragment)
        assert_error(work.run("tune", str(grid), "--doc", str(path)), f"--doc {path}", fragment)
    for path, fragment in protected.items():  # --force replaces none of them
        assert_error(work.run("report", "--force", "--doc", str(path)), fragment)
        assert_error(work.run("tune", str(grid), "--force", "--out", str(path)), fragment)
    assert {path: path.read_bytes() for path in before} == before
    default_storage = work.root / "results" / "tuning" / "studies.db"  # before tune makes it
    assert_error(work.run("tune", str(grid), "--out", str(default_storage)),
                 "is the storage of the studies")
    assert_error(work.run("tune", str(grid), "--out", str(work.root / "x.md"), "--doc",
                          str(work.root / "x.md")), "given for two outputs (--out and --doc)")
    # report's own document (and its CSV) is replaced without --force, a user's file with it
    doc = work.root / "results.md"
    ok(work.run("report", "--doc", str(doc)))
    ok(work.run("report", "--doc", str(doc)))
    ok(work.run("report", "--force", "--doc", str(notes)))
    assert notes.read_text().startswith("# gslbench results")


def test_tune_replaces_its_own_outputs_without_force(tmp_path):
    from gslbench.targets import check_tune_outputs

    tuned, doc = tmp_path / "tuned.toml", tmp_path / "tuning.md"
    tuned.write_text("# a tuned file\ntrials = 1\nseeds = [0, 1]\n\n[shared]\nbits = 16\n")
    doc.write_text("# gslbench tuning\n\nevery trial\n")
    check_tune_outputs(tuned, doc, tmp_path / "results", tmp_path / "data", None, force=False)
    tuned.write_text("# not a tuned file\n")
    with pytest.raises(GslbenchError, match="--out .*tuned.toml: exists"):
        check_tune_outputs(tuned, doc, tmp_path / "results", tmp_path / "data", None, force=False)


@pytest.mark.parametrize("margin", ["inf", "1e9", "1", "0.51", "nan", "0"])
def test_report_margin_is_bounded_to_half_a_point(work, margin):
    assert_error(work.run("report", "--margin", margin),
                 "must be a positive mAP difference of at most 0.5")


def test_bench_dry_run_refuses_an_address_without_ray(work):
    assert_error(work.run("bench", "--dry-run", "--address", "auto"),
                 "--address needs --executor ray")


def test_the_api_checks_what_the_cli_checks(tmp_path):
    import gslbench

    a_file = tmp_path / "a_file"
    a_file.write_text("")
    for call, fragment in [
        (lambda: gslbench.train("digits"), "config must be a RunConfig, got 'digits'"),
        (lambda: gslbench.train(data_dir=a_file), f"{a_file}: not a folder (data_dir)"),
        (lambda: gslbench.load_results(results_dir=a_file), "not a folder (results_dir)"),
        (lambda: gslbench.tune({"seed": [0, 1]}, trials=0, data_dir=tmp_path / "d",
                               results_dir=tmp_path / "r"), "trials must be a positive integer"),
        (lambda: gslbench.tune({"seed": [0, 1]}, trials="2", data_dir=tmp_path / "d",
                               results_dir=tmp_path / "r"), "got '2'"),
        (lambda: gslbench.report(results_dir=tmp_path / "r", doc=a_file), "exists; choose"),
    ]:
        with pytest.raises(GslbenchError, match=re.escape(fragment)):
            call()


@pytest.mark.slow
def test_a_report_waits_for_another_report_on_the_same_folder(work):
    import fcntl

    results = work.root / "results"
    descriptor = os.open(results, os.O_RDONLY)  # as a report being written holds it
    fcntl.flock(descriptor, fcntl.LOCK_EX)
    try:
        process = start_gslbench(work.root, "report")
        log = work.root / "gslbench.log"
        wait_for(lambda: "another report is being written" in log.read_text()
                 or process.poll() is not None, 120, "the report did not wait")
        assert process.poll() is None, log.read_text()
        assert not (results / "report").exists()
    finally:
        os.close(descriptor)
    assert process.wait(timeout=300) == 0, log.read_text()
    assert (results / "report" / "index.html").is_file()


# ------------------------------------------------------------------ every result bound


def reseal(path: Path, **changes) -> None:
    """Edit a metrics or search record and give it the digest of its new content, as a
    deliberate forger would (a key set to None is removed)."""
    from gslbench.evaluation.record import sealed

    record = json.loads(path.read_text())
    record.update(changes)
    record = {key: value for key, value in record.items() if value is not None}
    path.write_text(json.dumps(sealed(record) if "content_sha256" in record else record))


@pytest.mark.slow
def test_database_fit_metrics_and_search_records_are_bound_to_their_codes(work):
    run = work.two_step
    ok(work.run("encode", str(run.path), "--codebooks", "database"))
    ok(work.run("evaluate", str(run.path), "--codebooks", "database"))
    ok(work.run("search-bench", str(run.path), "--single-queries", "5", "--repeats", "1"))
    database_metrics, search = run.metrics_file(codebooks="database"), run.search_file()
    reseal(database_metrics, codes_sha256="0" * 64)
    assert_error(work.run("report"), "codes-database.h5: its sha256 is not the one")
    reseal(database_metrics, codes_sha256=None)
    assert_error(work.run("report"), "records no sha256 of codes-database.h5")
    ok(work.run("evaluate", str(run.path), "--codebooks", "database", "--force"))
    measured = json.loads(search.read_text())
    reseal(search, codes_sha256="0" * 64)
    assert_error(work.run("report"), "codes.h5: its sha256 is not the one search.json records")
    reseal(search, codes_sha256=None)
    assert_error(work.run("report"), "search.json: records no sha256 of codes.h5")
    done = work.run("search-bench", str(run.path), "--single-queries", "5", "--repeats", "1")
    assert done.exit_code == 0 and "measuring run" in done.output  # not counted as done
    assert json.loads(search.read_text())["codes_sha256"] == measured["codes_sha256"]
    ok(work.run("report"))


def test_an_edited_metrics_value_or_train_log_is_not_reported(work):
    record = json.loads(work.gsl.metrics.read_text())
    work.gsl.metrics.write_text(json.dumps({**record, "map": record["map"] / 2}))
    assert_error(work.run("report"), str(work.gsl.metrics), "its content_sha256 records")
    work.gsl.metrics.write_text(json.dumps(record))
    with work.two_step.train_log.open("a") as log:
        log.write("99,0.1,0.1,0.1,1.0\n")
    assert_error(work.run("report"), "train_log.csv: its sha256 is not the one config.json")


def test_codes_whose_labels_were_permuted_and_resealed_are_refused(work):
    with forged_h5(work.gsl.codes) as handle:
        labels = handle["labels"][()]
        handle["labels"][...] = labels[np.random.default_rng(0).permutation(len(labels))]
    for path in work.gsl.results_of("train"):
        path.unlink()
    assert_error(work.run("evaluate", str(work.gsl.path)), str(work.gsl.codes),
                 "its database labels are not those of", "at the items it records")
    assert not work.gsl.metrics.exists()


def test_a_checkpoint_holding_another_trainings_state_is_not_used(tmp_path):
    from gslbench.checkpoints import Checkpoints

    states = {}
    for seed in (0, 1):
        checkpoints = Checkpoints(tmp_path, {"settings": {"seed": seed}})
        checkpoints.save(5, {"model": {"w": torch.full((2,), float(seed))}, "optimizer": {},
                             "loss": {}, "generator": torch.zeros(1, dtype=torch.uint8),
                             "rng": torch.zeros(1, dtype=torch.uint8), "log": []})
        states[seed] = checkpoints
    assert float(states[0].load(5)["model"]["w"][0]) == 0.0
    # seed 1's payload under seed 0's record, its size and sha256 made to match
    record, _, _ = states[0].path(5).read_bytes().partition(b"\n")
    _, _, payload = states[1].path(5).read_bytes().partition(b"\n")
    forged = {**json.loads(record), "size": len(payload),
              "sha256": hashlib.sha256(payload).hexdigest()}
    states[0].path(5).write_bytes(json.dumps(forged, sort_keys=True).encode() + b"\n" + payload)
    assert states[0].load(5) is None


# ------------------------------------------------------------------ messages that say what is wrong


def test_the_unseen_protocol_of_a_one_class_set_says_why(tmp_path):
    import dataclasses

    labels = np.ones((4, 1), np.uint8)
    one_class = feature_set(labels)
    one_class = dataclasses.replace(one_class, label_names=["a"],
                                    validation_query=one_class.query,
                                    validation_database=one_class.database)
    with pytest.raises(GslbenchError, match=r"no unseen protocol: 1 class\(es\) are too few"):
        one_class.for_protocol("unseen")


def test_nan_codebooks_are_not_called_non_finite_representations():
    from gslbench.quantizers.candidates import k_smallest

    with pytest.raises(GslbenchError, match="non-finite representations or codebooks"):
        k_smallest(torch.full((2, 8), float("nan")), 2)


def test_the_database_fit_names_database_vectors(tmp_path):
    """An imported set whose 100 database items are fewer than the 256 words of a codebook that
    its 300 training items can fit."""
    rng = np.random.default_rng(0)
    source = tmp_path / "small.npz"
    np.savez(source, features=rng.normal(size=(420, 8)), labels=np.arange(420) % 2,
             split=np.repeat([0, 1, 2], [100, 20, 300]))
    ok(invoke(tmp_path, "features", "import", "small", "--from", str(source)))
    run = ok(invoke(tmp_path, "train", "-d", "small", "--method", "two-step", "--bits", "16",
                    "--dim-out", "8", "--epochs", "2", "--warmup-epochs", "1"))
    assert_error(invoke(tmp_path, "encode", run, "--codebooks", "database"),
                 "100 database vectors are fewer than the 256 codewords")
