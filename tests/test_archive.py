"""archive: a grid's finished runs kept as their records alone, copied to a fresh results folder,
count as done for bench and give report the same results; an archive that does not check out
(edited, of another run, missing a fit) does not count."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from gslbench import layout
from gslbench.bench import cell_state
from gslbench.cli import cli

GRID = ["--methods", "float,two-step,gsl", "--bits", "16", "--seeds", "0", "--epochs", "3",
        "--warmup-epochs", "1", "--epochs-per-refit", "1", "-j", "1"]
RECORDS = {"config.json", "train_log.csv", "archived.json"}


def invoke(data: Path, results: Path, *args: str):
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--results-dir", str(results), *args])


def ok(data: Path, results: Path, *args: str) -> str:
    result = invoke(data, results, *args)
    assert result.exit_code == 0, result.output
    return result.output


def assert_user_error(result, *fragments: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def benched(tmp_path_factory):
    """A digits grid benched (both fits, one run evaluated again with SDC), then archived:
    (data, results, archive)."""
    root = tmp_path_factory.mktemp("archive")
    data, results, archive = root / "data", root / "results", root / "archive"
    for step in ("download", "features"):
        ok(data, results, step, "digits")
    ok(data, results, "bench", *GRID)
    gsl = next(run for run in layout.list_runs(results)
               if json.loads(run.config.read_text())["config"]["method"] == "gsl")
    ok(data, results, "evaluate", str(gsl.path), "--search", "sdc")
    (layout.runs_dir(results) / "0123456789ab").mkdir()  # unfinished runs are left out
    trained = Path(ok(data, results, "-q", "train", "-d", "digits", "--method", "qloss", "--bits",
                      "16", "--epochs", "2", "--warmup-epochs", "1").strip()).name
    output = ok(data, results, "archive", str(archive)).strip().splitlines()
    runs = layout.runs_dir(results)
    assert sorted(output[:2]) == sorted([
        f"gslbench: left out 0123456789ab: {runs}/0123456789ab/config.json: no such file",
        f"gslbench: left out {trained}: {runs}/{trained}/metrics.json: no such file, nor another "
        "metrics file; the run is not evaluated"])
    assert output[2:] == [f"archived 3 runs into {layout.runs_dir(archive)}; 2 unfinished left out"]
    return data, results, archive


def restored(benched, tmp_path) -> Path:
    """A fresh results folder holding the archive's runs alone (as on another machine)."""
    _, _, archive = benched
    results = tmp_path / "restored"
    shutil.copytree(layout.runs_dir(archive), layout.runs_dir(results))
    return results


def test_an_archived_run_holds_its_records_and_the_sha256_of_what_it_left_behind(benched):
    _, results, archive = benched
    for run in layout.list_runs(archive):
        full = layout.run_dir(results, run.run_id)
        names = {path.name for path in run.path.iterdir()}
        results_files = {path.name for path in full.path.glob("*.json")}
        assert names == RECORDS | results_files
        for name in names - {"archived.json"}:
            assert (run.path / name).read_bytes() == (full.path / name).read_bytes()
        record = json.loads(run.archived.read_text())
        artifacts = {path.name for path in full.path.iterdir()} - names
        assert record["run"] == run.run_id and set(record["artifacts"]) == artifacts
        config = json.loads(full.config.read_text())
        assert record["artifacts"]["model.pt"] == config["model_sha256"]
    gsl = [run for run in layout.list_runs(archive) if (run.path / "metrics-sdc-l2.json").is_file()]
    assert len(gsl) == 1
    assert sorted(json.loads(gsl[0].archived.read_text())["artifacts"]) == [
        "codes-database.h5", "codes.h5", "model.pt", "quantizer.h5"]
    again = ok(*benched[:2], "archive", str(archive))  # nothing new: nothing archived twice
    assert again.splitlines()[-1].startswith("archived 0 runs")


def test_a_run_archived_while_its_evaluation_ran_is_archived_again_complete(benched, tmp_path):
    """A save that copied a run between its two fits' evaluations (as `archive.sh save` beside a
    running bench does) holds it without the database fit; the next save copies it again, whole,
    and leaves the unchanged runs as they are."""
    data, results, _ = benched
    live, archive = tmp_path / "results", tmp_path / "archive"
    shutil.copytree(results, live)
    run = next(run for run in layout.list_runs(live) if run.metrics_file(codebooks="database").is_file())
    later = run.metrics_file(codebooks="database").read_bytes()
    run.metrics_file(codebooks="database").unlink()  # its database fit not evaluated yet
    ok(data, live, "archive", str(archive))
    copy = layout.run_dir(archive, run.run_id)
    assert not copy.metrics_file(codebooks="database").is_file()
    run.metrics_file(codebooks="database").write_bytes(later)  # evaluated since
    others = {other.run_id: other.config.stat().st_mtime_ns for other in layout.list_runs(archive)
              if other.run_id != run.run_id}
    again = ok(data, live, "archive", str(archive)).strip().splitlines()
    assert again[-1].startswith("archived 1 runs") and copy.metrics_file(codebooks="database").read_bytes() \
        == later
    assert {other.run_id: other.config.stat().st_mtime_ns for other in layout.list_runs(archive)
            if other.run_id != run.run_id} == others
    assert not list(layout.runs_dir(archive).glob(".*"))  # no staging or replaced copy left


def test_restored_on_a_fresh_folder_the_grid_is_done_and_reports_the_same(benched, tmp_path):
    data, results, _ = benched
    fresh = restored(benched, tmp_path)
    dry = ok(data, fresh, "bench", "--dry-run", *GRID)
    assert "3 cells: 3 done" in dry
    ok(data, fresh, "bench", *GRID)  # trains, encodes and evaluates nothing
    assert not list(layout.runs_dir(fresh).glob("*/model.pt"))
    assert not list(layout.runs_dir(fresh).glob("*/codes*.h5"))
    ok(data, results, "report")
    expected = pd.read_csv(layout.report_dir(results) / "results.csv")
    found = pd.read_csv(layout.report_dir(fresh) / "results.csv")
    pd.testing.assert_frame_equal(found, expected)
    # a grid asking for what the archive does not hold (another code length) trains that alone
    assert "5 cells: 3 done" in ok(data, fresh, "bench", "--dry-run", *GRID[:2],
                                   "--bits", "16,32", *GRID[4:])


def archived_runs(results: Path) -> dict[str, layout.RunDir]:
    return {json.loads(run.config.read_text())["config"]["method"]: run
            for run in layout.list_runs(results)}


def edit_json(path: Path, change) -> None:
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def test_an_archive_that_does_not_check_out_is_not_done(benched, tmp_path):
    data, _, _ = benched
    fresh = restored(benched, tmp_path)
    runs = archived_runs(fresh)
    two_step, gsl, float_run = runs["two-step"], runs["gsl"], runs["float"]
    edit_json(two_step.archived, lambda r: r["artifacts"].update({"codes.h5": "0" * 64}))
    state = cell_state(two_step, None)
    assert state.state == "todo" and "made from another codes.h5" in state.reason
    assert_user_error(invoke(data, fresh, "report"), str(two_step.metrics),
                      "made from another codes.h5 than")
    edit_json(gsl.archived, lambda r: r.update(run="0123456789ab"))
    state = cell_state(gsl, None)
    assert state.state == "todo" and "records run 0123456789ab" in state.reason
    edit_json(float_run.archived, lambda r: r["artifacts"].update({"model.pt": "0" * 64}))
    state = cell_state(float_run, None)
    assert state.state == "todo" and "another sha256 of model.pt" in state.reason


def test_an_archive_without_a_fit_or_a_training_log_is_not_done(benched, tmp_path):
    fresh = restored(benched, tmp_path)
    runs = archived_runs(fresh)
    runs["gsl"].metrics_file(codebooks="database").unlink()
    assert cell_state(runs["gsl"], None, ("train",)).state == "done"
    state = cell_state(runs["gsl"], None)
    assert state.state == "todo" and "metrics-database.json: no such file" in state.reason
    runs["two-step"].train_log.write_text("epoch\n")
    state = cell_state(runs["two-step"], None)
    assert state.state == "todo" and "train_log.csv: its sha256" in state.reason
    runs["float"].archived.write_text("{}")
    state = cell_state(runs["float"], None)
    assert state.state == "todo" and "not a gslbench archive record" in state.reason


def test_a_stale_archive_is_trained_again_in_its_place(benched, tmp_path):
    data, _, _ = benched
    fresh = restored(benched, tmp_path)
    two_step = archived_runs(fresh)["two-step"]
    edit_json(two_step.archived, lambda r: r["artifacts"].pop("codes-database.h5"))
    ok(data, fresh, "bench", *GRID)  # the two-step cell is trained again, the others kept
    assert sorted(path.parent.name for path in layout.runs_dir(fresh).glob("*/model.pt")) == [
        two_step.run_id]
    assert cell_state(two_step, None).state == "done"
    assert "archived 1 runs" in ok(data, fresh, "archive", str(tmp_path / "again"))


ARCHIVE_SH = Path(__file__).resolve().parents[1] / "benchmarks" / "campaign2" / "archive.sh"
TUNING = """method = "qloss"
dataset = "digits"
quantizer = "pq"
bits = 16
seed = [0, 1]
epochs = 3
warmup_epochs = 1
epochs_per_refit = 1
"""


def campaign_state(action: str, results: Path, archive: Path) -> None:
    """benchmarks/campaign2/archive.sh ACTION between `results` and `archive`."""
    env = {**os.environ, "CAMPAIGN_RESULTS": str(results), "CAMPAIGN_ARCHIVE": str(archive),
           "GSLBENCH": str(Path(sys.executable).with_name("gslbench")), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ARCHIVE_SH), action], env=env, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr


def test_the_campaigns_state_saved_and_restored_resumes_tune_without_a_trial_again(benched,
                                                                                 tmp_path):
    data = benched[0]
    results, archive, fresh = tmp_path / "results", tmp_path / "archive", tmp_path / "fresh"
    grid = tmp_path / "tuning.toml"
    grid.write_text(TUNING)
    ok(data, results, "-q", "tune", str(grid), "--trials", "2")
    (results / "campaign.log").write_text("campaign: data started 2026-12-07T02:08:37Z\n")
    campaign_state("save", results, archive)
    assert len(layout.list_runs(archive / "tuning")) == 4  # 2 trials x 2 seeds
    campaign_state("restore", fresh, archive)
    assert (fresh / "campaign.log").read_text() == (results / "campaign.log").read_text()
    ok(data, fresh, "-q", "tune", str(grid), "--trials", "2")  # every trial stored: none run
    assert not list(layout.runs_dir(fresh / "tuning").glob("*/model.pt"))
    tuned = layout.tuned_path(fresh).read_text()
    assert tuned == layout.tuned_path(results).read_text()
