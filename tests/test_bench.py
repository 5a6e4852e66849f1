"""bench: grids from TOML and flags, dry-run, failures, resuming after SIGKILL, the Ray executor."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from gslbench import bench
from gslbench.bench import tune
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.progress import Progress, format_duration, remaining_seconds
from gslbench.bench.tuning_plan import tuning_grid
from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.methods import METHODS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
SHORT = ["--epochs", "4", "--warmup-epochs", "1", "--epochs-per-refit", "2"]
RUN_FILES = ("config.json", "model.pt", "train_log.csv", "quantizer.h5", "codes.h5", "metrics.json",
             "codes-database.h5", "metrics-database.json")  # both codebook fits, bench's default


def invoke(tmp_path, *args):
    data, results = tmp_path / "data", tmp_path / "results"
    return CliRunner().invoke(cli, ["--data-dir", str(data), "--results-dir", str(results), *args])


def prepare_digits(tmp_path):
    for step in ("download", "features"):
        result = invoke(tmp_path, step, "digits")
        assert result.exit_code == 0, result.output


def dry_run(tmp_path, *args) -> tuple[list[list[str]], str]:
    """The dry-run's cell rows [run id, state, description] and its count line (the estimate
    line after it, there when cells are left, is checked and left out)."""
    result = invoke(tmp_path, "bench", "--dry-run", *args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["RUN", "STATE", "CELL"]
    estimate = lines.pop() if lines[-1].startswith("estimate: ") else None
    assert (estimate is None) == lines[-1].endswith(" 0 partial (trained, not evaluated), 0 todo")
    return [line.split(maxsplit=2) for line in lines[1:-1]], lines[-1]


def write_toml(tmp_path, text: str) -> Path:
    path = tmp_path / "grid.toml"
    path.write_text(text)
    return path


def assert_user_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gslbench: error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_quick_toml_gives_exactly_the_cells_of_bench_without_arguments(tmp_path):
    assert dry_run(tmp_path) == dry_run(tmp_path, str(BENCHMARKS / "quick.toml"))
    assert len(dry_run(tmp_path)[0]) == 31  # float 1 + 10 quantized methods x 3 code lengths


def test_paper_toml_declares_the_papers_grid_and_dry_run_touches_nothing(tmp_path):
    rows, count = dry_run(tmp_path, str(BENCHMARKS / "paper.toml"))
    configs = Grid.from_mapping(read_grid_file(BENCHMARKS / "paper.toml")).cells()
    assert {c.dataset for c in configs} == {"cifar10", "nuswide21"}
    assert {c.method for c in configs} == {"float", "two-step", "qloss", "gsl"}
    assert {c.quantizer for c in configs if c.quantized} == {"pq", "opq"}
    assert {c.bits for c in configs if c.quantized} == {32, 64, 128}
    assert {c.seed for c in configs} == {0, 1, 2}
    # per data set: float 3 seeds, two-step and qloss 2 x 3 x 3, gsl 2 alphas x 2 x 3 x 3
    assert len(rows) == len(configs) == 2 * (3 + 18 + 18 + 36)
    assert count == "150 cells: 0 done, 0 partial (trained, not evaluated), 150 todo"
    assert not (tmp_path / "data").exists() and not (tmp_path / "results").exists()


def registered(name: str) -> tuple[dict, list[RunConfig]]:
    """A benchmarks grid file's settings and its cells (a tuning grid's `[start]` tables left out:
    `tuning_plan.tuning_grid`)."""
    settings = read_grid_file(BENCHMARKS / name)
    settings.pop("start", None)
    return settings, Grid.from_mapping(settings).cells()


def test_the_core_grids_are_parts_of_campaign_2s_stage_1():
    """results_core.toml's cells are cells of campaign 2's stage 1 (every method, its
    declaration), and tuning_core.toml's studies are studies of its tuning, from the same start
    and seeds: running the campaign later re-uses their runs and trials."""
    core_settings, core_cells = registered("results_core.toml")
    full_settings, full_cells = registered("campaign2/results.toml")
    assert set(core_settings["method"]) == set(full_settings["method"]) == set(METHODS)
    assert core_settings["comparisons"] == full_settings["comparisons"]
    assert core_cells and {c.run_id for c in core_cells} < {c.run_id for c in full_cells}
    core, full = (tune.plan(grid, trials=8, start=start) for grid, start in (
        tuning_grid(BENCHMARKS / name) for name in ("tuning_core.toml", "campaign2/tuning.toml")))
    assert {s.key for s in core.studies} < {s.key for s in full.studies}
    assert core.seeds == full.seeds
    assert tuning_grid(BENCHMARKS / "tuning_core.toml")[1] == \
        tuning_grid(BENCHMARKS / "campaign2/tuning.toml")[1]
    assert {(c.protocol, c.quantizer, c.bits, c.sub_bits, c.method) for c in core_cells
            if c.quantized} == {(s.base.protocol, s.base.quantizer, s.base.bits, s.base.sub_bits,
                                 s.base.method) for s in core.studies if s.base.quantized}


def test_tuning_both_ways_toml_tunes_studies_of_campaign_2s_tuning():
    """Every method with knobs, PQ at 8 and 32 bits (16-word codebooks, standard protocol): studies
    of campaign 2's tuning, at its seeds and from its start."""
    both_ways, full = (tune.plan(grid, trials=8, start=start) for grid, start in (
        tuning_grid(BENCHMARKS / name) for name in ("tuning_both_ways.toml",
                                                    "campaign2/tuning.toml")))
    keys = {study.key for study in both_ways.studies}
    assert len(keys) == 2 * len([m for m in METHODS.values() if m.knobs]) == 2 * 8
    assert keys <= {study.key for study in full.studies}
    assert both_ways.seeds == full.seeds


def test_grid_parts_are_a_union_and_flags_override_every_part(tmp_path):
    grid = write_toml(tmp_path, 'method = "two-step"\nseed = [0, 1]\n[[grid]]\nbits = [8, 16]\n'
                                "sub_bits = 4\n[[grid]]\nbits = 16\nseed = 5\n")
    rows, _ = dry_run(tmp_path, str(grid))
    assert sorted(row[2] for row in rows) == sorted([
        "digits two-step pq 8 bits seed 0 sub_bits=4", "digits two-step pq 8 bits seed 1 sub_bits=4",
        "digits two-step pq 16 bits seed 0 sub_bits=4", "digits two-step pq 16 bits seed 1 sub_bits=4",
        "digits two-step pq 16 bits seed 5 sub_bits=8"])
    rows, _ = dry_run(tmp_path, str(grid), "--seeds", "3")
    assert {row[2].split(" seed ")[1].split()[0] for row in rows} == {"3"} and len(rows) == 3
    for text, fragment in (("grid = 3\n", "grid must be a list of tables"),
                           ("[[grid]]\nbitz = 8\n", "unknown key 'bitz'")):
        assert_user_error(invoke(tmp_path, "bench", str(write_toml(tmp_path, text))), fragment)


def test_hyper_parameter_lists_are_axes_only_for_the_methods_that_use_them(tmp_path):
    grid = write_toml(tmp_path, 'method = ["float", "two-step", "qloss", "gsl"]\nbits = [16, 32]\n'
                                "qloss_lambda = [0.1, 1]\ngsl_alpha = [0.25, 1.0]\nepochs = 8\n")
    rows, _ = dry_run(tmp_path, str(grid))
    methods = [row[2].split()[1] for row in rows]
    assert [methods.count(m) for m in ("float", "two-step", "qloss", "gsl")] == [1, 2, 4, 4]
    assert "digits qloss λ=1 pq 16 bits seed 0" in {row[2] for row in rows}
    # an integer in a float axis is the same setting as the float: the same run id
    flag_rows, _ = dry_run(tmp_path, "--methods", "qloss", "--bits", "16", "--qloss-lambda", "1",
                           "--epochs", "8")
    assert flag_rows[0][0] in {row[0] for row in rows}


def test_flags_given_override_the_file_and_the_file_overrides_the_defaults(tmp_path):
    grid = write_toml(tmp_path, 'method = ["gsl", "float"]\nbits = [16, 64]\nseed = [0, 1]\n'
                                "epochs = 8\nwarmup_epochs = 2\n")
    rows, _ = dry_run(tmp_path, str(grid), "--bits", "32", "--epochs", "12")
    assert sorted(row[2] for row in rows) == [
        "digits float seed 0", "digits float seed 1",
        "digits gsl α=1 k=8 select=aligned pq 32 bits seed 0",
        "digits gsl α=1 k=8 select=aligned pq 32 bits seed 1",
    ]
    same, _ = dry_run(tmp_path, "--methods", "gsl,float", "--bits", "32", "--seeds", "0,1",
                      "--epochs", "12", "--warmup-epochs", "2")
    assert sorted(same) == sorted(rows)


@pytest.mark.parametrize("text, fragment", [
    ('metod = ["gsl"]\n', "unknown key 'metod'"),
    ('bits = "16"\n', "bits must be a int"),
    ("bits = [16, true]\n", "bits must be a int"),
    ("seed = []\n", "seed must be"),
    ('gsl_alpha = "strong"\n', "gsl_alpha must be a float"),
    ("[gsl]\nalpha = 1\n", "unknown key 'gsl'"),
    ("bits = [16, 32\n", "not valid TOML"),
    ('method = ["sgd"]\n', "unknown method 'sgd'"),
    ('quantizer = ["pq", "ivf"]\n', "unknown quantizer 'ivf'"),
    ('dataset = "imagenet"\n', "unknown data set 'imagenet'"),
    ("bits = 12\n", "--bits 12"),
])
def test_a_bad_grid_file_is_one_line_naming_it_before_anything_is_fetched(tmp_path, text, fragment):
    grid = write_toml(tmp_path, text)
    assert_user_error(invoke(tmp_path, "bench", str(grid)), f"{grid}: ", fragment)
    assert not (tmp_path / "data").exists()


def test_a_missing_grid_file_and_bad_executor_options_are_one_line(tmp_path):
    assert_user_error(invoke(tmp_path, "bench", str(tmp_path / "nope.toml")), "nope.toml: no such file")
    assert_user_error(invoke(tmp_path, "bench", "--address", "auto"), "--address needs --executor ray")
    assert_user_error(invoke(tmp_path, "bench", "-j", "0"), "-j")
    assert_user_error(invoke(tmp_path, "bench", "--executor", "ray", "--address", "127.0.0.1:1"),
                      "cannot reach a Ray cluster at 127.0.0.1:1")


def test_the_ray_executor_without_ray_installed_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    result = invoke(tmp_path, "bench", "--executor", "ray", "--methods", "float", *SHORT)
    assert_user_error(result, "pip install 'gslbench[ray]'")


def test_a_second_bench_on_the_same_results_is_refused(tmp_path):
    runs = tmp_path / "results" / "runs"
    runs.mkdir(parents=True)
    with open(runs / ".bench.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert_user_error(invoke(tmp_path, "bench", "--methods", "float"), "another gslbench bench")


def test_remaining_time_and_durations():
    assert remaining_seconds(30.0, 3, 6) == 60.0
    assert remaining_seconds(30.0, 0, 6) is None and remaining_seconds(30.0, 3, 0) == 0.0
    assert [format_duration(s) for s in (0.4, 45, 62, 3725)] == ["0s", "45s", "1m02s", "1h02m"]


def test_the_progress_bar_names_the_running_cell_and_the_time_left(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # room for the whole label (a narrow one is elided)
    grid = Grid.from_mapping({"method": ["gsl", "qloss"], "bits": 16})
    first, second = grid.cells()
    with Progress(total=3, done=1, grid=grid, bar=True) as progress:
        progress.running([first])
        progress.finished(first, None)
        progress.running([second])
    err = capsys.readouterr().err
    assert f"{second.run_id} digits qloss λ=2.7 pq 16 bits seed 0" in err
    assert "bench: 2/3" in err and "left" in err


def test_the_time_left_follows_the_cells_estimates(monkeypatch):
    """Two costly cells (100 s each by their estimates) run first, then two cheap ones (10 s):
    after the costly ones, at this run's pace (twice the estimates), the cheap ones are 40 s
    away, not the 400 s the mean pace of the cells done would say; where a cell left has no
    estimate, the mean pace is all there is."""
    grid = Grid.from_mapping({"method": "qloss", "bits": 16, "seed": [0, 1, 2, 3]})
    cells = grid.cells()
    now = [0.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    costs = dict(zip((c.run_id for c in cells), (100.0, 100.0, 10.0, 10.0), strict=True))
    progress = Progress(total=4, done=0, grid=grid, bar=False, costs=costs)
    now[0] = 400.0
    for cell in cells[:2]:
        progress.finished(cell, None)
    assert progress._left() == format_duration(40.0)
    now[0] = 0.0
    progress = Progress(total=4, done=0, grid=grid, bar=False,
                        costs={**costs, cells[3].run_id: None})
    now[0] = 400.0
    for cell in cells[:2]:
        progress.finished(cell, None)
    assert progress._left() == format_duration(400.0)


@pytest.mark.slow
def test_a_failing_cell_is_reported_and_the_others_finish(tmp_path, monkeypatch):
    prepare_digits(tmp_path)
    evaluate = bench.evaluate_run

    def evaluate_but_not_gsl(run_dir, *args, **kwargs):
        if json.loads((Path(run_dir) / "config.json").read_text())["config"]["method"] == "gsl":
            raise RuntimeError("simulated crash\nsecond line")
        return evaluate(run_dir, *args, **kwargs)

    monkeypatch.setattr(bench, "evaluate_run", evaluate_but_not_gsl)
    args = ["bench", "--methods", "two-step,gsl", "--bits", "16,32", *SHORT]
    result = invoke(tmp_path, *args)
    assert result.exit_code == 2
    lines = result.output.splitlines()
    failed = [line for line in lines if "] failed " in line]
    assert len(failed) == 2 and all(line.endswith("RuntimeError: simulated crash") for line in failed)
    assert sum("] done " in line and "elapsed" in line and "left)" in line for line in lines) == 2
    assert lines[-1] == "gslbench: error: 2 cell(s) failed (listed above); finished cells are kept: " \
                        "run the same bench again to retry the others"
    tables = (tmp_path / "results" / "report" / "tables.md").read_text()
    assert "two-step" in tables and "A partial grid: 2 of the grid's 4 cells have no run" in tables
    rows, count = dry_run(tmp_path, *args[1:])
    assert count == "4 cells: 2 done, 2 partial (trained, not evaluated), 0 todo"
    monkeypatch.setattr(bench, "evaluate_run", evaluate)
    again = invoke(tmp_path, *args)
    assert again.exit_code == 0, again.output
    assert sum("] done " in line for line in again.output.splitlines()) == 2  # only the failed two
    assert "Every one of the grid's 4 cells has a run." in (
        tmp_path / "results" / "report" / "tables.md").read_text()
    assert dry_run(tmp_path, *args[1:])[1].startswith("4 cells: 4 done")


@pytest.mark.slow
def test_force_replaces_a_run_without_leaving_its_old_directory(tmp_path):
    prepare_digits(tmp_path)
    args = ["train", "--method", "float", "--epochs", "2", "--warmup-epochs", "0"]
    run = Path(invoke(tmp_path, *args).output.strip())
    first = (run / "config.json").stat().st_mtime_ns
    assert invoke(tmp_path, *args, "--force").exit_code == 0
    assert (run / "config.json").stat().st_mtime_ns != first
    assert [p.name for p in run.parent.iterdir()] == [run.name]


def start_bench(tmp_path, *args) -> subprocess.Popen:
    command = [sys.executable, "-c", "from gslbench.cli import main; main()",
               "--data-dir", str(tmp_path / "data"), "--results-dir", str(tmp_path / "results"),
               "bench", *args]
    with open(tmp_path / "bench.log", "ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)


def wait_until_gone(group: int, seconds: float = 10.0) -> None:
    """Until no process of the group is left (the workers die with the bench), or `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def finished_runs(runs: Path) -> dict[str, tuple[int, bytes]]:
    return {p.parent.name: (p.stat().st_mtime_ns, p.read_bytes())  # the last fit's, written last
            for p in runs.glob("*/metrics-database.json")}


@pytest.mark.slow
def test_bench_killed_mid_grid_finishes_on_the_next_run_and_redoes_nothing(tmp_path):
    prepare_digits(tmp_path)
    grid = ["--methods", "two-step,qloss,gsl", "--bits", "16,32", "--seeds", "0,1", *SHORT, "-j", "2"]
    runs = tmp_path / "results" / "runs"
    process = start_bench(tmp_path, *grid)
    deadline = time.monotonic() + 300
    while not finished_runs(runs):
        assert process.poll() is None, (tmp_path / "bench.log").read_text()
        assert time.monotonic() < deadline, "no cell finished in time"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    wait_until_gone(process.pid)
    finished = finished_runs(runs)
    trained = {p.parent.name: p.stat().st_mtime_ns for p in runs.glob("*/config.json")}
    rows, count = dry_run(tmp_path, *grid)
    assert 1 <= len(finished) < len(rows) == 12
    assert {row[0] for row in rows if row[1] == "done"} == set(finished)
    assert {row[0] for row in rows if row[1] == "partial"} == set(trained) - set(finished)
    todo = [row[0] for row in rows if row[1] == "todo"]
    # what a kill can leave under temporary names: it must not count, break the re-run or stay
    (runs / f".{todo[0]}.killed").mkdir()
    (runs / f".{todo[0]}.killed" / "metrics.json").write_text("{}")
    (runs / next(iter(finished)) / ".codes.h5.killed.tmp").write_bytes(b"half")

    again = start_bench(tmp_path, *grid[:-2], "-j", "1")  # the same grid, now in one process
    assert again.wait(timeout=300) == 0, (tmp_path / "bench.log").read_text()
    after = finished_runs(runs)
    assert {name: after[name] for name in finished} == finished  # finished cells untouched
    assert {name: runs.joinpath(name, "config.json").stat().st_mtime_ns for name in trained} == trained
    assert dry_run(tmp_path, *grid)[1].startswith("12 cells: 12 done")
    assert sorted(p.name for p in runs.iterdir() if p.name.startswith(".")) == [".bench.lock"]
    for run in runs.iterdir():
        if not run.name.startswith("."):
            assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)
    assert len(pd.read_csv(tmp_path / "results" / "report" / "results.csv")) == 24  # 2 fits
    report = invoke(tmp_path, "report")
    assert report.exit_code == 0 and "gsl α=1 k=8" in report.output


def codes_and_maps(root: Path) -> dict[str, tuple[np.ndarray, float]]:
    out = {}
    for run in (root / "results" / "runs").iterdir():
        if not run.name.startswith("."):
            with h5py.File(run / "codes.h5") as handle:
                out[run.name] = handle["codes"][()], json.loads((run / "metrics.json").read_text())["map"]
    return out


@pytest.mark.slow
def test_ray_executor_on_a_local_instance_matches_the_local_executor(tmp_path, one_ray_at_a_time):
    import ray  # in the test extra: CI runs this test
    # RQ: the quantizer whose GSL codes change with the thread count (so pinned to one here)
    grid = ["--methods", "float,two-step,gsl", "--quantizers", "rq", "--bits", "16", *SHORT,
            "--cpus-per-cell", "1"]
    prepare_digits(tmp_path / "ray")
    result = invoke(tmp_path / "ray", "bench", "--executor", "ray", "-j", "2", *grid)
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()  # the instance it started is shut down
    prepare_digits(tmp_path / "local")
    assert invoke(tmp_path / "local", "bench", *grid).exit_code == 0
    by_ray, by_local = codes_and_maps(tmp_path / "ray"), codes_and_maps(tmp_path / "local")
    assert sorted(by_ray) == sorted(by_local) and len(by_ray) == 3
    for run, (codes, map_value) in by_ray.items():
        np.testing.assert_array_equal(codes, by_local[run][0])  # one thread each: the same codes
        assert map_value == by_local[run][1]
        metrics = json.loads((tmp_path / "ray" / "results" / "runs" / run / "metrics.json").read_text())
        assert metrics["threads"] == {"torch": 1, "faiss": 1}
