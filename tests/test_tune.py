"""`gslbench tune`: knob search spaces, one seeded Optuna study per (cell, method) with the
default first, held-out validation runs, pruning, resumption after SIGKILL, two processes on one
storage, controls, then bench --tuned on digits in both protocols."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import optuna
import pandas as pd
import pytest
from click.testing import CliRunner
from optuna.trial import TrialState

from gslbench import layout
from gslbench.bench import stopping, studies, tune
from gslbench.bench.choices import CSV_COLUMNS
from gslbench.bench.grid import Grid
from gslbench.bench.tuning_plan import tuning_grid
from gslbench.cli import cli
from gslbench.config import KNOBS, RunConfig
from gslbench.data.featurefile import feature_file_sha256, items_record, read_feature_file
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS
from gslbench.report.tuning import pruning_markdown
from gslbench.settings import Setting
from gslbench.threads import cpu_count


def invoke(tmp_path, *args):
    return CliRunner().invoke(cli, ["--data-dir", str(tmp_path / "data"),
                                    "--results-dir", str(tmp_path / "results"), "-q", *args])


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    """A folder whose data/ holds the digits feature file (format 3)."""
    root = tmp_path_factory.mktemp("digits")
    for args in (("download", "digits"), ("features", "digits")):
        result = invoke(root, *args)
        assert result.exit_code == 0, result.output
    return root


def copy_data(digits: Path, tmp_path: Path) -> None:
    (tmp_path / "data").symlink_to(digits / "data", target_is_directory=True)


# --- search spaces -----------------------------------------------------------------------------

def test_every_knob_declares_a_search_space_that_holds_its_default():
    for knob in KNOBS:
        assert knob.space, knob.name
        kind, *bounds = knob.space
        assert (knob.default in bounds[0] if kind == "choice"
                else bounds[0] <= knob.default <= bounds[1])
    spaces = {knob.name: knob.space[0] for knob in KNOBS}
    assert spaces["qloss_lambda"] == spaces["ste_beta"] == spaces["soft_tau"] == "log"
    assert spaces["gsl_alpha"] == "float" and spaces["gsl_k"] == "int"
    assert spaces["gsl_select"] == "choice"
    for bad in (("log", 0.0, 1.0), ("float", 1.0, 0.0), ("int", 1.5, 2), ("grid", 1, 2),
                ("float", 0.5, 1.0)):  # default 0.25 outside the last one
        with pytest.raises(ValueError):
            Setting("x", float if bad[0] != "int" else int, 0.25 if bad[0] != "int" else 1,
                    space=bad)


# --- studies -----------------------------------------------------------------------------------

def knob_objective(draws: dict) -> callable:
    """An objective that draws the knobs as tune does and scores them without training."""
    def objective(study: tune.Study, trial: optuna.Trial) -> float:
        knobs = tune.suggest_knobs(study, trial)
        draws.setdefault(study.method, []).append(knobs)
        return float(sum(v for v in knobs.values() if isinstance(v, int | float)))
    return objective


def test_two_methods_with_knobs_alike_get_different_draws_and_their_default_first(tmp_path):
    grid = Grid.from_mapping({"method": ["soft", "gumbel", "two-step"], "bits": 16,
                              "sub_bits": 4, "seed": [0, 1]})
    plan = tune.plan(grid, trials=5)
    assert [s.method for s in plan.studies] == ["soft", "gumbel", "two-step"]
    assert plan.studies[0].sampler_seed != plan.studies[1].sampler_seed
    distributions = plan.studies[0].distributions()
    assert distributions["soft_k"].high == 16  # capped at the 16-word codebooks
    assert distributions["soft_tau"].log
    runs = []
    for attempt in range(2):
        store = tune.open_storage(f"sqlite:///{tmp_path}/studies-{attempt}.db", heartbeat=1,
                                  grace=5)
        draws: dict = {}
        for study in plan.studies:
            tune._run_study(study, store, plan.trials, True, 1.0, knob_objective(draws))
        runs.append(draws)
    soft, gumbel = runs[0]["soft"], runs[0]["gumbel"]
    for method, draws in (("soft", soft), ("gumbel", gumbel)):  # the default first
        assert draws[0] == {knob.name: knob.default for knob in METHODS[method].knobs}
    assert len(soft) == len(gumbel) == 5 and runs[0]["two-step"] == [{}]  # no knobs: 1 trial
    assert all(a["soft_tau"] != b["gumbel_tau"] for a, b in zip(soft[1:], gumbel[1:], strict=True))
    assert len({d["soft_tau"] for d in soft}) == 5  # no draw twice
    assert runs[1] == runs[0]  # seeded: the same draws on a fresh storage


def test_a_grid_tune_cannot_serve_is_a_user_error():
    for settings, fragment in [
        ({"method": ["qloss", "gsl"], "seed": [0, 1], "split": "validation"}, "split is chosen by tune"),
        ({"method": ["qloss", "gsl"], "seed": 0}, "at least 2 seeds, the grid has 1"),
        ({"method": ["float", "two-step"], "seed": [0, 1]}, "no method of the grid has knobs"),
        ({"method": ["qloss"], "seed": [0, 1], "lr": [0.001, 0.01]}, "lr is an axis"),
        ({"method": "qloss", "seed": [0, 1], "qloss_lambda": 1.0}, "no method of the grid has knobs"),
    ]:
        with pytest.raises(GslbenchError, match=fragment):
            tune.plan(Grid.from_mapping(settings, source="grid.toml"), trials=4)


# --- the tuned file and controls ---------------------------------------------------------------

def test_the_tuned_file_round_trips_and_controls_keep_the_knobs_their_grid_sets(tmp_path):
    grid = Grid.from_mapping({"method": ["two-step", "qloss", "gsl"], "bits": [16, 32],
                              "seed": [0, 1], "epochs": 8,
                              "grid": [{}, {"method": "gsl", "gsl_alpha": 0.0},
                                       {"method": "gsl", "gsl_select": ["aligned", "nearest"]}]})
    plan = tune.plan(grid, trials=4)
    assert len(plan.studies) == 2 * 3 and len(plan.controls) == 2 * 2 * 3  # bits x seeds x ...
    chosen = pd.DataFrame([{"cell": json.dumps(s.cell, sort_keys=True), "method": s.method,
                            "trial": 2, "variant": "",
                            "knobs": {"gsl_alpha": 0.4, "gsl_k": 3, "gsl_select": "nearest"}
                            if s.method == "gsl" else {"qloss_lambda": 0.02}
                            if s.method == "qloss" else {}, "validation_map": 0.5}
                           for s in plan.studies])
    path = tmp_path / "tuned.toml"
    tune.Tuned.from_choices(plan, chosen).write(path, header="a header")
    assert path.read_text().startswith("# a header\ntrials = 4\nseeds = [0, 1]\n")
    tuned = tune.Tuned.read(path)
    assert tuned.shared["epochs"] == 8 and len(tuned.choices) == 6
    labels = {(c.bits, c.label) for c in tuned.cells(grid).cells() if c.seed == 0}
    assert {label for bits, label in labels if bits == 16} == {
        "two-step", "qloss λ=0.02", "gsl α=0.4 k=3 select=nearest",
        "gsl α=0 k=3 select=nearest",  # the control: α from the grid, the rest tuned
        "gsl α=0.4 k=3 select=aligned"}  # and both select rules (nearest is the tuned row)
    with pytest.raises(GslbenchError, match="no tuned choice for digits gsl"):
        tuned.apply(RunConfig(method="gsl", bits=64, epochs=8))
    with pytest.raises(GslbenchError, match=r"tuned with epochs=8 \(this grid: 40\)"):
        tuned.apply(RunConfig(method="gsl", bits=32))
    path.write_text("trials = 4\n")
    with pytest.raises(GslbenchError, match="not a gslbench tuned file"):
        tune.Tuned.read(path)


# --- tune, then bench --tuned ------------------------------------------------------------------

GRID = """method = ["float", "two-step", "qloss", "gsl"]
dataset = "digits"
protocol = "{protocol}"
quantizer = "pq"
bits = 16
sub_bits = 4
seed = [0, 1]
epochs = 4
warmup_epochs = 1
epochs_per_refit = 1
"""


def records(run: Path) -> tuple[dict, dict, dict]:
    """config.json, metrics.json and the codes' `items` record of a run directory."""
    with h5py.File(run / "codes.h5") as handle:
        items = json.loads(handle.attrs["items"])
    return (json.loads((run / "config.json").read_text()),
            json.loads((run / "metrics.json").read_text()), items)


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["standard", "unseen"])
def test_tune_then_bench_tuned_on_digits_never_trains_on_what_it_scores(tmp_path, digits,
                                                                        protocol):
    copy_data(digits, tmp_path)
    path = tmp_path / "data" / "digits" / "pixels.h5"
    validation = read_feature_file(path, "validation", protocol)
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID.format(protocol=protocol))
    result = invoke(tmp_path, "tune", str(grid), "--trials", "3")
    assert result.exit_code == 0, result.output
    runs = sorted((tmp_path / "results" / "tuning" / "runs").glob("[!.]*"))
    assert runs
    for run in runs:  # every tuning run: trained on neither the validation queries nor database
        config, metrics, items = records(run)
        assert config["config"]["split"] == "validation"
        assert config["config"].get("protocol", "standard") == protocol
        assert config["train_items"] == items_record(validation.train)
        assert items == {"query": items_record(validation.query),
                         "database": items_record(validation.database)}
    trained, scored = validation.train.indices, np.concatenate([validation.query.indices,
                                                                validation.database.indices])
    assert not np.isin(trained, scored).any()
    store = tune.open_storage(tune.default_storage(tmp_path / "results"))
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    assert len(names) == 4  # float, two-step, qloss, gsl
    for name in names:
        trials = optuna.load_study(study_name=name, storage=store).get_trials(
            states=tune.FINISHED)
        assert len(trials) == (1 if name.split()[0] in ("float", "two-step") else 3)
        method = METHODS[name.split()[0]]
        assert trials[0].params == {k.name: k.default for k in method.knobs}  # the default first

    tuned_file = tmp_path / "results" / "tuning" / "tuned.toml"
    tuned = tune.Tuned.read(tuned_file)
    assert tuned.trials == 3 and tuned.seeds == (0, 1) and len(tuned.choices) == 4
    result = invoke(tmp_path, "bench", str(grid), "--tuned", str(tuned_file), "--seeds", "2,3")
    assert result.exit_code == 0, result.output
    test = read_feature_file(path, "test", protocol)
    test_runs = sorted((tmp_path / "results" / "runs").glob("[!.]*"))
    assert len(test_runs) == 8  # float, two-step, qloss, gsl at the test grid's own 2 seeds
    for run in test_runs:
        config, metrics, items = records(run)
        assert config["config"]["split"] == "test" and config["train_items"] == items_record(test.train)
        assert items["query"] == items_record(test.query)
        assert tuned.apply(RunConfig.from_dict(config["config"])) == RunConfig.from_dict(config["config"])
    test_grid = tmp_path / "test-grid.toml"  # the test grid as a file: report finds its 8 runs
    test_grid.write_text(GRID.format(protocol=protocol).replace("seed = [0, 1]", "seed = [2, 3]"))
    result = invoke(tmp_path, "report", "--grid", str(test_grid), "--tuned", str(tuned_file),
                    "--out", str(tmp_path / "test-report"))
    assert result.exit_code == 0, result.output
    reported = pd.read_csv(tmp_path / "test-report" / "results.csv")
    assert sorted(set(reported.run)) == sorted(run.name for run in test_runs)
    result = invoke(tmp_path, "tune", str(grid), "--trials", "3")  # nothing to run: the document
    assert result.exit_code == 0, result.output
    document = (tmp_path / "results" / "tuning" / "tuning.md").read_text()
    assert f"{protocol} protocol" in document and "## What pruning saved" in document
    compared = document.split("## Validation against test")[1].split("## Every trial")[0]
    assert "Over 1 cell(s)" in compared and "| 3 | " in compared  # two-step, qloss, gsl
    assert document.count("**") == 2 * 4  # each study's choice in bold


def fake_test_run(results: Path, config: RunConfig, score: float) -> None:
    """A run directory that `choices.test_results` reads: config.json bound to its run id, and a
    metrics record with its mAP."""
    config = config.resolved()
    run = results / "runs" / config.run_id
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({
        "config": config.to_dict(), "run": config.run_id, "features_sha256": "0" * 64,
        "train_seconds": 1.0}))
    (run / "metrics.json").write_text(json.dumps({"map": score}))


def test_validation_against_test_takes_every_unit_of_a_tuned_cell(tmp_path):
    """The test runs of a tuned unseen-protocol cell count at every class draw and seed (the
    tuning grid has draw 0 alone); runs of other knobs or another cell do not."""
    from gslbench.bench.choices import test_results

    grid = Grid.from_mapping({"method": "qloss", "dataset": "digits", "quantizer": "pq",
                              "bits": 16, "sub_bits": 4, "protocol": "unseen",
                              "seed": [100, 101]})
    tuned_file = tmp_path / "tuned.toml"
    tuned_file.write_text(
        'trials = 2\nseeds = [100, 101]\n[shared]\n[[choice]]\ndataset = "digits"\n'
        'protocol = "unseen"\nquantizer = "pq"\nbits = 16\nsub_bits = 4\nmethod = "qloss"\n'
        "qloss_lambda = 0.5\nvalidation_map = 0.7\n")
    base = RunConfig(dataset="digits", protocol="unseen", quantizer="pq", bits=16, sub_bits=4,
                     method="qloss", qloss_lambda=0.5)
    units = {(draw, seed): 0.5 + draw / 10 + seed / 100 for draw in range(3) for seed in range(2)}
    for (draw, seed), score in units.items():
        fake_test_run(tmp_path / "results", dataclasses.replace(base, draw=draw, seed=seed), score)
    fake_test_run(tmp_path / "results", dataclasses.replace(base, qloss_lambda=0.25), 0.1)  # other knobs
    fake_test_run(tmp_path / "results", dataclasses.replace(base, bits=32), 0.2)  # another cell
    found = test_results(tune.Tuned.read(tuned_file), grid, tmp_path / "results")
    assert sorted(zip(found.seed, found["map"], strict=True)) == \
        sorted((seed, score) for (_, seed), score in units.items())
    assert set(found.variant) == {"qloss λ=0.5"}


# --- several processes, killed processes -------------------------------------------------------

TUNE_SCRIPT = """
import sys
from gslbench.bench import stopping, studies, tune
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.threads import limit_threads
grid = Grid.from_mapping(read_grid_file(sys.argv[1]), source=sys.argv[1])
with limit_threads(1):
    tune.tune(grid, sys.argv[2], sys.argv[3], trials=int(sys.argv[4]), prune=False, heartbeat=1,
              grace=float(sys.argv[5]))
"""
SMALL_GRID = """method = ["qloss", "gsl"]
dataset = "digits"
quantizer = "pq"
bits = 8
sub_bits = 4
seed = [0, 1]
epochs = 3
warmup_epochs = 1
epochs_per_refit = 1
"""


def start_tune(tmp_path: Path, trials: int, grace: float) -> subprocess.Popen:
    """tune of SMALL_GRID in a process of its own, heartbeats every second, stale after `grace`."""
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-c", TUNE_SCRIPT, str(grid), str(tmp_path / "data"),
                             str(tmp_path / "results"), str(trials), str(grace)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def trial_rows(tmp_path: Path) -> list[tuple]:
    """(study, number, state, params) of every trial in the default storage."""
    database = tmp_path / "results" / "tuning" / "studies.db"
    if not database.is_file():
        return []
    with sqlite3.connect(database, timeout=60) as connection:
        try:
            rows = connection.execute(
                "SELECT s.study_name, t.number, t.state, t.trial_id FROM trials t JOIN studies s "
                "ON s.study_id = t.study_id").fetchall()
            params = connection.execute("SELECT trial_id, param_name, param_value FROM "
                                        "trial_params").fetchall()
        except sqlite3.OperationalError:  # the tables are not there yet
            return []
    by_trial: dict = {}
    for trial_id, name, value in params:
        by_trial.setdefault(trial_id, {})[name] = value
    return [(study, number, state, tuple(sorted(by_trial.get(trial_id, {}).items())))
            for study, number, state, trial_id in rows]


def finished_once(rows: list[tuple], trials: int) -> None:
    """Each study has `trials` finished trials, and no knobs finished twice."""
    finished = [(study, params) for study, _, state, params in rows if state == "COMPLETE"]
    for study in {row[0] for row in rows}:
        mine = [params for name, params in finished if name == study]
        assert len(mine) == trials and len(set(mine)) == trials, (study, mine)


@pytest.mark.slow
def test_a_tune_killed_mid_way_resumes_keeping_every_finished_trial(tmp_path, digits):
    copy_data(digits, tmp_path)
    process = start_tune(tmp_path, trials=3, grace=5)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # kill it once a trial finished and another runs
        rows = trial_rows(tmp_path)  # with its knobs drawn (a trial has none for an instant)
        states = [state for _, _, state, _ in rows]
        if "COMPLETE" in states and any(state == "RUNNING" and params
                                        for _, _, state, params in rows):
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {(study, number): params for study, number, state, params in trial_rows(tmp_path)
              if state == "COMPLETE"}
    interrupted = [(study, params) for study, _, state, params in trial_rows(tmp_path)
                   if state == "RUNNING" and params]  # without knobs: nothing to run again
    assert before and interrupted
    runs = tmp_path / "results" / "tuning" / "runs"
    trained = {run.name: (run / "config.json").stat().st_mtime_ns for run in runs.glob("[!.]*")}
    rerun = start_tune(tmp_path, trials=3, grace=5)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read().decode()[-2000:]
    rows = trial_rows(tmp_path)
    finished_once(rows, 3)
    after = {(study, number): params for study, number, state, params in rows
             if state == "COMPLETE"}
    assert all(after[key] == params for key, params in before.items())  # kept as they were
    for study, params in interrupted:  # failed as stale, then run again with the same knobs
        assert (study, params) in {(s, p) for s, _, state, p in rows if state == "FAIL"}
        assert params in [p for (s, _), p in after.items() if s == study]
    for run, mtime in trained.items():  # no finished run trained again
        assert (runs / run / "config.json").stat().st_mtime_ns == mtime


@pytest.mark.slow
def test_two_tune_processes_on_one_storage_run_each_trial_once(tmp_path, digits):
    copy_data(digits, tmp_path)
    tune.open_storage(tune.default_storage(tmp_path / "results"))  # the tables, once
    processes = [start_tune(tmp_path, trials=3, grace=120) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read().decode()[-2000:]
    rows = trial_rows(tmp_path)
    finished_once(rows, 3)
    assert {state for _, _, state, _ in rows} <= {"COMPLETE", "FAIL"}  # FAIL: surplus asks only
    runs = list((tmp_path / "results" / "tuning" / "runs").glob("[!.]*"))
    assert len(runs) == 2 * 3 * 2  # methods x trials x seeds: none trained twice


@pytest.mark.slow
def test_tune_with_two_jobs_runs_each_trial_once_at_its_share_of_the_threads(tmp_path, digits):
    copy_data(digits, tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    result = invoke(tmp_path, "tune", str(grid), "--trials", "3", "--no-prune", "-j", "2")
    assert result.exit_code == 0, result.output
    rows = trial_rows(tmp_path)
    finished_once(rows, 3)
    assert len({study for study, *_ in rows}) == 2  # qloss and gsl
    runs = list((tmp_path / "results" / "tuning" / "runs").glob("[!.]*"))
    assert len(runs) == 2 * 3 * 2  # methods x trials x seeds: none trained twice
    threads = max(1, cpu_count() // 2)
    for run in runs:
        assert json.loads((run / "config.json").read_text())["threads"] == {"torch": threads,
                                                                           "faiss": threads}
    assert "2 choices written" in result.output


def test_progress_counts_the_finished_trials_of_every_process(caplog):
    store = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name="a", storage=store)
    for state, value in ((TrialState.COMPLETE, 0.5), (TrialState.PRUNED, None),
                         (TrialState.FAIL, None)):  # as another process left them
        study.add_trial(optuna.trial.create_trial(state=state, value=value))
    progress = tune.TrialProgress([("a", 4), ("b", 2)], store, bar=False)  # b: not created yet
    assert (progress.planned, progress.finished()) == (6, 2)
    study.add_trial(optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.7))
    with caplog.at_level(logging.INFO, logger="gslbench"), progress:
        progress.trial_done("a: trial 3 complete")
    assert "[3/6] a: trial 3 complete" in caplog.messages


@pytest.mark.slow
def test_a_few_cells_tuned_without_pruning_show_whether_the_choice_changed(tmp_path, digits):
    copy_data(digits, tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    assert invoke(tmp_path, "tune", str(grid), "--trials", "6").exit_code == 0  # pruned first
    pruned = tune.Tuned.read(tmp_path / "results" / "tuning" / "tuned.toml")
    doc = tmp_path / "no-prune.md"
    result = invoke(tmp_path, "tune", str(grid), "--trials", "6", "--no-prune", "--out",
                    str(tmp_path / "no-prune.toml"), "--doc", str(doc))
    assert result.exit_code == 0, result.output
    full = tune.Tuned.read(tmp_path / "no-prune.toml")
    section = doc.read_text().split("### Tuned with and without pruning")[1].split("## ")[0]
    rows = [line.split(" | ") for line in section.splitlines() if line.startswith("| digits")]
    assert len(rows) == 2  # qloss and gsl
    trials = {True: pd.read_csv(tmp_path / "results" / "tuning" / "tuned.trials.csv"),
              False: pd.read_csv(tmp_path / "no-prune.trials.csv")}
    assert (trials[False].state == "complete").all() and len(trials[False]) == 2 * 6
    for row in rows:
        method = row[1]
        by_mode = {}
        for prune, frame in trials.items():  # the choice: the best trial the rule kept
            kept = frame[(frame.method == method) & (frame.state == "complete")]
            by_mode[prune] = kept.sort_values(["validation_map", "trial"],
                                              ascending=[False, True]).iloc[0]
        assert f"({by_mode[True].validation_map:.4f})" in row[2]
        assert f"({by_mode[False].validation_map:.4f})" in row[3]
        assert row[4] == ("yes" if by_mode[True].knobs == by_mode[False].knobs else "no")
        with_, without = map(int, row[5].rstrip(" |").split(" / "))
        assert with_ <= without == 6 * 2 * 3  # trials x seeds x epochs, none pruned
    assert len(pruned.choices) == len(full.choices) == 2


def test_the_most_frequent_choice_of_each_kind_of_knob():
    """Choice and integer knobs: the plain mode (ties to the space's order, the smaller
    integer); real knobs: the modal decade (log) or tenth of the range (linear; 1.0 falls in the
    last), as the median of its values to two digits; ties to the lower bin."""
    from gslbench.report.tuning import frequent_choices, frequent_markdown

    gsl = [(1.0, 8, "nearest"), (0.95, 8, "aligned"), (0.2, 2, "nearest"), (0.91, 2, "aligned"),
           (0.5, 16, "aligned")]
    qloss = [0.1, 2.0, 3.0, 0.5, 8.0, 0.004]
    soft = [(0.02, 4), (0.2, 4), (0.3, 2), (0.05, 2)]  # decades -2 and -1 tie: the lower wins
    chosen = pd.DataFrame(
        [{"cell": "c", "method": "gsl", "knobs": dict(zip(("gsl_alpha", "gsl_k", "gsl_select"),
                                                         value, strict=True))} for value in gsl]
        + [{"cell": "c", "method": "qloss", "knobs": {"qloss_lambda": v}} for v in qloss]
        + [{"cell": "c", "method": "soft", "knobs": {"soft_tau": t, "soft_k": k}} for t, k in soft]
        + [{"cell": "c", "method": "two-step", "knobs": {}}])
    frequent = frequent_choices(chosen).set_index(["method", "knob"])
    assert frequent.loc[("gsl", "gsl_alpha")].tolist() == [0.95, 3, 5, [0.91, 0.95, 1.0]]
    assert frequent.loc[("gsl", "gsl_k")].tolist() == [2, 2, 5, [2, 2]]  # 2 and 8 tie
    assert frequent.loc[("gsl", "gsl_select")].tolist() == ["aligned", 3, 5, ["aligned"] * 3]
    assert frequent.loc[("qloss", "qloss_lambda")].tolist() == [3.0, 3, 6, [2.0, 3.0, 8.0]]
    assert frequent.loc[("soft", "soft_tau")].tolist() == [0.035, 2, 4, [0.02, 0.05]]
    assert frequent.loc[("soft", "soft_k")].tolist() == [2, 2, 4, [2, 2]]
    assert list(frequent.index.get_level_values(0)) == ["qloss", "gsl", "gsl", "gsl", "soft",
                                                        "soft"]  # the registry's order
    markdown = frequent_markdown(frequent.reset_index())
    assert "| qloss | λ | 3 | 3 of 6 | 2 to 8 | " in markdown
    defaults = {knob.name: knob.default for name in ("qloss", "gsl", "soft")
                for knob in METHODS[name].knobs}
    assert f"| gsl | select | aligned | 3 of 5 | aligned | {defaults['gsl_select']} |" in markdown
    differ = [f"{method} {symbol}" for (method, knob), symbol in zip(
        frequent.index, ["λ", "α", "k", "select", "τ", "k"], strict=True)
        if frequent.value[(method, knob)] != defaults[knob]]
    assert f"this version of gslbench differ in {', '.join(differ)}." in markdown
    assert "qloss λ" in differ and "gsl select" not in differ


# --- the search, alike in effect (issue 29) and tune's defects (issue 32) ----------------------

QLOSS_GSL = {"method": ["qloss", "gsl"], "bits": 8, "sub_bits": 4, "seed": [0, 1], "epochs": 4,
             "warmup_epochs": 1, "epochs_per_refit": 1}


def curve_objective(curves: dict[int, list[float]]) -> callable:
    """An objective that reports the hand-made curve of its trial number (steps 1, 2, ...),
    asking the pruner after each report, and returns its last value."""
    def objective(study: tune.Study, trial: optuna.Trial) -> float:
        tune.suggest_knobs(study, trial)
        values = curves[trial.number]
        for step, value in enumerate(values, 1):
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return values[-1]
    return objective


def test_the_pruning_rule_never_decides_on_one_report_and_prunes_trial_0_alike():
    # the rule by hand: from the second report on, the mean so far against the other trials'
    curves = {0: {1: 0.9, 2: 0.1, 3: 0.1}, 1: {1: 0.1, 2: 0.8}, 2: {1: 0.2, 2: 0.9},
              3: {1: 0.95, 2: 0.2}}
    # trial 0 at step 2: mean 0.5; trial 1: 0.45, trial 2: 0.55, trial 3: 0.575
    assert studies.pruned_step(curves, 0, keep=2, final_step=4) == 2  # beaten by 2 and 3
    assert studies.pruned_step(curves, 0, keep=3, final_step=4) is None  # not by 3 trials
    assert studies.pruned_step(curves, 1, keep=1, final_step=4) == 2  # step 1 alone never prunes
    assert studies.pruned_step({0: {1: 0.1}, 1: {1: 0.9}}, 0, keep=1, final_step=4) is None
    assert studies.pruned_step(curves, 0, keep=1, final_step=2) is None  # the last report: the value
    assert studies.survivors(8) == 3 and studies.survivors(6) == 2 and studies.survivors(1) == 1


def test_trial_0_is_pruned_by_the_same_rule_when_it_is_worse(tmp_path):
    """Trial 0 ends best but trails 2 trials (a third of 6) on its mean mAP so far at step 2,
    where trial 3, with its curve, is pruned: it is pruned too, and not chosen. Trial 1, run
    before 2 and 4 and beaten by them, is pruned by hindsight alike."""
    plan = tune.plan(Grid.from_mapping(QLOSS_GSL), trials=6)
    study = next(s for s in plan.studies if s.method == "qloss")
    weak = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.95]  # final_step: 4 epochs x 2 seeds = 8
    curves = {0: weak, 1: [0.5] * 8, 2: [0.6] * 8, 3: weak, 4: [0.55] * 8, 5: [0.52] * 8}
    store = tune.open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=1, grace=5)
    tune._run_study(study, store, plan.trials, True, 1.0, curve_objective(curves))
    frame = tune.trial_frame(plan, store, prune=True).set_index("trial")
    assert frame.state.to_dict() == {0: "pruned", 1: "pruned", 2: "complete", 3: "pruned",
                                     4: "complete", 5: "pruned"}
    assert frame.epochs_trained.tolist() == [0] * 6  # the fake objective trains nothing
    assert frame.pruned_at[0] == frame.pruned_at[3] == {"seed": 0, "epoch": 2}
    assert tune.choose(frame.reset_index()).trial.tolist() == [2]  # not trial 0's 0.95
    frame = tune.trial_frame(plan, store, prune=False)  # the other study: none tuned that way
    assert frame.empty


def test_every_method_is_chosen_from_the_first_trials_of_its_study(tmp_path):
    """issue 32: qloss tuned with 3 trials, then both with --trials 1: both chosen from 1."""
    store = tune.open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=1, grace=5)
    three, one = (tune.plan(Grid.from_mapping(QLOSS_GSL), trials=n) for n in (3, 1))
    qloss = next(s for s in three.studies if s.method == "qloss")
    tune._run_study(qloss, store, 3, False, 1.0, knob_objective({}))
    for study in one.studies:
        tune._run_study(study, store, 1, False, 1.0, knob_objective({}))
    frame = tune.trial_frame(one, store, prune=False)
    assert frame.groupby("method").trial.apply(list).to_dict() == {"gsl": [0], "qloss": [0]}
    assert len(tune.trial_frame(three, store, prune=False).query("method == 'qloss'")) == 3


def test_the_start_knobs_the_grid_pins_are_trial_0_and_key_the_study(tmp_path):
    start = {"gsl": {"gsl_alpha": 0.5, "gsl_select": "nearest"}}
    grid = Grid.from_mapping(QLOSS_GSL, source="grid.toml")
    pinned, plain = tune.plan(grid, trials=3, start=start), tune.plan(grid, trials=3)
    gsl = next(s for s in pinned.studies if s.method == "gsl")
    default = {knob.name: knob.default for knob in METHODS["gsl"].knobs}
    assert gsl.default == {**default, "gsl_alpha": 0.5, "gsl_select": "nearest"}
    assert {s.key for s in pinned.studies} != {s.key for s in plain.studies}
    draws: dict = {}
    store = tune.open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=1, grace=5)
    tune._run_study(gsl, store, 3, False, 1.0, knob_objective(draws))
    assert draws["gsl"][0] == gsl.default and len(draws["gsl"]) == 3
    assert studies.startup_trials(8) == 2 and studies.startup_trials(30) == 10
    assert tune.load_study(gsl, store, False, 8).sampler.startup == 2  # TPE from trial 2 of 8
    for bad, fragment in [({"gsl": {"gsl_alpha": 2.0}}, "outside"),
                          ({"gsl": {"qloss_lambda": 0.1}}, "not a tuned knob of gsl"),
                          ({"gsl": {"gsl_k": 64}}, "gsl_k = 64 is outside its search space"),
                          ({"ste": {"ste_beta": 1.0}}, "not a tuned method of the grid")]:
        with pytest.raises(GslbenchError, match=fragment):
            tune.plan(grid, trials=3, start=bad)
    with pytest.raises(GslbenchError, match=r"gsl_k = 12 is outside \[1, 8\]"):  # 8 words
        tune.plan(Grid.from_mapping({**QLOSS_GSL, "bits": 6, "sub_bits": 3}), trials=3,
                  start={"gsl": {"gsl_k": 12}})
    path = tmp_path / "grid.toml"
    path.write_text('method = ["qloss", "gsl"]\nseed = [0, 1]\n[start.gsl]\ngsl_k = 4\n')
    grid, start = tuning_grid(path)
    assert start == {"gsl": {"gsl_k": 4}} and grid.source == str(path)


def test_a_study_is_keyed_by_the_feature_files_sha256():
    grid = Grid.from_mapping(QLOSS_GSL)
    old, new = (tune.plan(grid, trials=3, features={("digits", "pixels"): sha})
                for sha in ("a" * 64, "b" * 64))
    for before, after in zip(old.studies, new.studies, strict=True):
        assert before.name(True) != after.name(True)  # another split: another study
        assert before.sampler_seed == after.sampler_seed  # with the same draws


def test_an_interrupted_trial_runs_again_with_its_knobs(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM's flag) inside trial 1: it is enqueued again with its knobs, which
    the resumed tune runs first."""
    plan = tune.plan(Grid.from_mapping(QLOSS_GSL), trials=3)
    study = next(s for s in plan.studies if s.method == "qloss")
    calls = []

    def train(study, trial, knobs, *args):
        calls.append(knobs)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return knobs["qloss_lambda"]

    monkeypatch.setattr(tune, "_train_trial", train)
    store = tune.open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=1, grace=5)

    def objective(s, t):
        return tune.run_trial(s, t, tmp_path, tmp_path, 3, False, True, "cpu")
    with pytest.raises(KeyboardInterrupt):
        tune._run_study(study, store, 3, False, 1.0, objective)
    tune._run_study(study, store, 3, False, 1.0, objective)
    assert calls[2] == calls[1]  # run again first, with the interrupted trial's knobs
    frame = tune.trial_frame(plan, store, prune=False).query("method == 'qloss'")
    assert len(frame) == 3 and calls[1] in frame.knobs.tolist()


def test_a_ctrl_c_swallowed_where_it_lands_still_stops_tune(tmp_path, digits, monkeypatch):
    """Ctrl-C sets tune's stop flag instead of raising where it lands: raised inside a callback
    that swallows exceptions (as SQLAlchemy's garbage-collection hooks do), it was lost and tune
    ran on to its end (a CI run saw `tune -j 2` exit 0 after Ctrl-C)."""
    copy_data(digits, tmp_path)
    train_run = tune.train_run

    def swallowing_callback_then_train(*args, **kwargs):
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        except KeyboardInterrupt:
            pass
        return train_run(*args, **kwargs)

    monkeypatch.setattr(tune, "train_run", swallowing_callback_then_train)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
    try:
        with pytest.raises(stopping.Interrupted) as raised:
            tune.tune(Grid.from_mapping({**QLOSS_GSL, "method": "qloss"}), tmp_path / "data",
                      tmp_path / "results", 1, prune=False)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert raised.value.signum == signal.SIGINT


def test_sigterm_sets_a_flag_checked_between_steps():
    previous = signal.getsignal(signal.SIGTERM)
    with stopping.stop_on(signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler raises nothing
        time.sleep(0.01)
        with pytest.raises(stopping.Interrupted) as raised:
            stopping.check_stop()
        assert raised.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous


def test_a_trials_user_error_is_one_line_naming_the_study(tmp_path, caplog):
    plan = tune.plan(Grid.from_mapping(QLOSS_GSL), trials=3)
    store = tune.open_storage(f"sqlite:///{tmp_path}/studies.db", heartbeat=1, grace=5)

    def failing(study, trial):
        raise GslbenchError("digits.h5: damaged")
    with caplog.at_level(logging.WARNING), pytest.raises(GslbenchError) as raised:
        tune._run_study(plan.studies[0], store, 3, False, 1.0, failing)
    assert str(raised.value) == f"{plan.studies[0].name(False)}: trial 0: digits.h5: damaged"
    assert not any(record.exc_info for record in caplog.records)


def one_line_error(result, fragment: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), result.output
    assert fragment in lines[0] and "Traceback" not in result.output


def test_tune_checks_the_device_and_the_storage_before_any_trial(tmp_path, monkeypatch):
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    one_line_error(invoke(tmp_path, "tune", str(grid), "--device", "mps"), "--device mps")
    one_line_error(invoke(tmp_path, "tune", str(grid), "--storage", ""), "--storage: empty")
    one_line_error(invoke(tmp_path, "tune", str(grid), "--storage", "sqlite:///:memory:"),
                   "in-memory database")
    folder = tmp_path / "locked"
    folder.mkdir()
    (folder / "studies.db").touch()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anyway: as an ordinary user sees the folder
        monkeypatch.setattr(studies.os, "access", lambda path, mode: Path(path) != folder)
    try:
        one_line_error(invoke(tmp_path, "tune", str(grid), "--storage",
                              f"sqlite:///{folder}/studies.db"), "is read-only")
    finally:
        folder.chmod(0o755)
    assert not (tmp_path / "results" / "tuning" / "runs").exists()  # no trial ran


def test_bench_tuned_with_a_knob_missing_is_one_line(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    tuned = tmp_path / "tuned.toml"
    cell = 'quantizer = "pq"\nbits = 8\nsub_bits = 4\nprotocol = "standard"\n'
    tuned.write_text('trials = 3\nseeds = [0, 1]\n\n[shared]\ndataset = "digits"\nepochs = 3\n'
                     'warmup_epochs = 1\nepochs_per_refit = 1\n\n[[choice]]\n' + cell +
                     'method = "gsl"\ngsl_alpha = 0.5\ngsl_select = "aligned"\n'
                     'validation_map = 0.5\n\n[[choice]]\n' + cell +
                     'method = "qloss"\nqloss_lambda = 0.1\nvalidation_map = 0.5\n')
    one_line_error(invoke(tmp_path, "bench", str(grid), "--tuned", str(tuned), "--dry-run"),
                   "choice 1 (gsl) has no gsl_k")


QLOSS_GRID = SMALL_GRID.replace('method = ["qloss", "gsl"]', 'method = "qloss"').replace(
    "epochs = 3", "epochs = 4")


@pytest.mark.slow
def test_a_new_split_of_the_feature_file_is_tuned_again(tmp_path):
    """issue 32: after `features digits --split-seed 1`, tune trains again, on the new split."""
    for args in (("download", "digits"), ("features", "digits")):
        assert invoke(tmp_path, *args).exit_code == 0
    grid = tmp_path / "grid.toml"
    grid.write_text(QLOSS_GRID)
    assert invoke(tmp_path, "tune", str(grid), "--trials", "1").exit_code == 0
    result = invoke(tmp_path, "features", "digits", "--split-seed", "1")
    assert result.exit_code == 0, result.output
    result = invoke(tmp_path, "tune", str(grid), "--trials", "1")
    assert result.exit_code == 0, result.output
    sha = feature_file_sha256(tmp_path / "data" / "digits" / "pixels.h5")
    store = tune.open_storage(tune.default_storage(tmp_path / "results"))
    names = [s.study_name for s in optuna.get_all_study_summaries(store)]
    assert len(names) == 2  # a study per feature file
    runs = list((tmp_path / "results" / "tuning" / "runs").glob("[!.]*"))
    assert len(runs) == 2 and all(  # trained again on the new file
        json.loads((run / "config.json").read_text())["features_sha256"] == sha for run in runs)
    trials = pd.read_csv(tmp_path / "results" / "tuning" / "tuned.trials.csv")
    assert trials.features_sha256.tolist() == [sha]
    tuned = tune.Tuned.read(tmp_path / "results" / "tuning" / "tuned.toml")
    assert tuned.choices[0]["validation_map"] == pytest.approx(trials.validation_map[0], abs=1e-6)


@pytest.mark.slow
def test_tune_and_bench_tuned_take_an_imported_data_set(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 100)
    np.savez(tmp_path / "source.npz", labels=labels,
             features=rng.normal(size=(400, 8)) + 3 * np.eye(4, 8)[labels])
    result = invoke(tmp_path, "features", "import", "mine", "--from", str(tmp_path / "source.npz"),
                    "--query-per-class", "10", "--train-per-class", "60",
                    "--validation-queries", "4", "--validation-database", "8")  # of 30 free
    assert result.exit_code == 0, result.output
    grid = tmp_path / "grid.toml"
    grid.write_text(QLOSS_GRID.replace('"digits"', '"mine"') + "dim_out = 8\n")
    result = invoke(tmp_path, "tune", str(grid), "--trials", "2")
    assert result.exit_code == 0, result.output
    out = tmp_path / "results" / "tuning" / "tuned.toml"
    assert tune.Tuned.read(out).choices[0]["dataset"] == "mine"
    trials = pd.read_csv(layout.trials_csv_path(out))
    assert list(trials.columns) == CSV_COLUMNS and trials.trial.tolist() == [0, 1]
    assert set(trials.state) == {"complete"} and trials.epochs_trained.tolist() == [8, 8]
    assert json.loads(trials.knobs[0]) == {"qloss_lambda": METHODS["qloss"].knobs[0].default}
    result = invoke(tmp_path, "bench", str(grid), "--tuned", str(out), "--seeds", "5")
    assert result.exit_code == 0, result.output


def test_a_method_that_trains_nothing_counts_no_epoch(digits, tmp_path):
    """pca trains nothing: its trial trained and planned no epoch (tune records its epochs a
    seed times its seeds); two-step's trained 2 seeds x 3 epochs."""
    copy_data(digits, tmp_path)
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID.replace('["qloss", "gsl"]', '["pca", "two-step", "qloss"]'))
    result = invoke(tmp_path, "tune", str(grid), "--trials", "1", "--no-prune")
    assert result.exit_code == 0, result.output
    trials = pd.read_csv(layout.trials_csv_path(tmp_path / "results" / "tuning" / "tuned.toml"))
    epochs = {row.method: (row.epochs_trained, row.epochs_planned) for row in trials.itertuples()}
    assert epochs == {"pca": (0, 0), "two-step": (6, 6), "qloss": (6, 6)}
    with sqlite3.connect(tmp_path / "results" / "tuning" / "studies.db") as connection:
        stored = connection.execute(  # tune writes them so (the page does not correct them)
            "SELECT s.study_name, a.key, a.value_json FROM trial_user_attributes a JOIN trials t "
            "ON t.trial_id = a.trial_id JOIN studies s ON s.study_id = t.study_id WHERE a.key "
            "LIKE 'epochs_%'").fetchall()
    assert sorted((key, value) for name, key, value in stored if "pca" in name) == [
        ("epochs_planned", "0"), ("epochs_trained", "0")]


def start_cli_tune(tmp_path: Path, *args: str) -> subprocess.Popen:
    """`python -m gslbench tune` of SMALL_GRID with `args`, in a session of its own."""
    grid = tmp_path / "grid.toml"
    grid.write_text(SMALL_GRID)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    return subprocess.Popen([sys.executable, "-m", "gslbench", "--data-dir", str(tmp_path / "data"),
                             "--results-dir", str(tmp_path / "results"), "tune", str(grid),
                             "--trials", "3", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def wait_mid_seed(tmp_path: Path, count: int) -> None:
    """Wait until a trial finished and `count` trials are inside the first seed's training (a
    refit reported, more to come: SMALL_GRID trains 3 epochs a seed)."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        database = tmp_path / "results" / "tuning" / "studies.db"
        complete, steps = 0, []
        with contextlib.suppress(sqlite3.OperationalError), contextlib.closing(
                sqlite3.connect(database, timeout=60)) as db:  # read all, then let go
            complete = db.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'"
                                  ).fetchone()[0]
            steps = db.execute(
                "SELECT MAX(v.step) FROM trial_intermediate_values v JOIN trials t ON "
                "t.trial_id = v.trial_id WHERE t.state = 'RUNNING' GROUP BY t.trial_id").fetchall()
        if complete and sum(step < 3 for step, in steps) >= count:
            return
        time.sleep(0.05)
    raise AssertionError("no trial ran")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_tune_in_one_line_and_the_resume_runs_its_trial_again(tmp_path, digits,
                                                                             signum):
    """SIGTERM of `tune` (a flag checked between steps) or Ctrl-C of `tune -j 2` (the whole
    process group) in a trial's training: no traceback, one line. After SIGTERM the trial is
    enqueued again with its knobs, and the resumed tune runs them; after Ctrl-C the resumed tune
    finishes every study (the helper's trial, killed with it, runs again once stale)."""
    copy_data(digits, tmp_path)
    jobs = ["-j", "2"] if signum == signal.SIGINT else []
    process = start_cli_tune(tmp_path, "--no-prune", *jobs)
    wait_mid_seed(tmp_path, 1)
    os.killpg(process.pid, signum)
    assert process.wait(timeout=120) == 128 + signum
    stderr = process.stderr.read().decode()
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == ("gslbench: terminated" if signum == signal.SIGTERM
                                               else "gslbench: aborted"), stderr
    rows = trial_rows(tmp_path)
    failed = {(study, params) for study, _, state, params in rows if state == "FAIL"}
    if signum == signal.SIGTERM:  # one process: its trial was in training
        assert failed and all(params for _, params in failed)  # stopped with its knobs drawn
        assert sum(state == "WAITING" for _, _, state, _ in rows) == len(failed)  # enqueued
    rerun = start_tune(tmp_path, trials=3, grace=5)
    assert rerun.wait(timeout=600) == 0, rerun.stderr.read().decode()[-2000:]
    rows = trial_rows(tmp_path)
    assert failed <= {(study, params) for study, _, state, params in rows if state == "COMPLETE"}
    finished_once(rows, 3)


def test_the_api_checks_the_trials_as_the_cli_does(tmp_path):
    grid = Grid.from_mapping(QLOSS_GSL)
    for trials in (0, "2", True):
        with pytest.raises(GslbenchError, match="--trials must be a whole number of at least 1"):
            tune.tune(grid, tmp_path / "data", tmp_path / "results", trials)
    assert not (tmp_path / "results").exists()


def test_the_pruning_table_counts_what_pruning_saved_and_what_the_trials_ran_through():
    trials = pd.DataFrame({"method": ["qloss", "qloss", "qloss", "pca"],
                           "state": ["complete", "pruned", "complete", "complete"],
                           "epochs_trained": [80, 30, 80, 0], "epochs_planned": [80, 80, 80, 0]})
    text = pruning_markdown(trials).splitlines()
    assert text[0] == ("Pruning saved 50 of 240 planned training epochs (21%); 1 of 4 trials were "
                       "pruned. The trials ran through the other 190: those of a warm-up that a "
                       "trial started from a shared checkpoint (`gslbench.checkpoints`) are "
                       "counted there, though not trained again.")
    assert text[2:] == ["| method | trials | pruned | epochs run | epochs planned | saved |",
                        "|---|---|---|---|---|---|", "| qloss | 3 | 1 | 190 | 240 | 50 (21%) |",
                        "| pca | 1 | 0 | 0 | 0 | 0 |"]
