"""bench --dry-run's estimate (gslbench.bench.estimate): finished runs timed from their metrics
files, cells left matched to them level by level, against sums worked out by hand."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from gslbench import layout
from gslbench.bench import estimate
from gslbench.cli import cli
from gslbench.config import RunConfig


def finished(results, config: RunConfig, train: float, fits: dict[str, tuple[float, float]],
             tuning: bool = False):
    """A run directory whose metrics files record `train` seconds and, per fit, (encode, eval)."""
    root = layout.tuning_dir(results) if tuning else results
    run = layout.run_dir(root, config.run_id)
    run.path.mkdir(parents=True)
    for codebooks, (encode, evaluate) in fits.items():
        record = {"config": config.to_dict(), "train_s": train, "encode_s": encode,
                  "eval_s": evaluate}
        run.metrics_file(codebooks=codebooks).write_text(json.dumps(record))
    return run


def cell(**settings) -> RunConfig:
    return RunConfig(**{"dataset": "digits", "quantizer": "pq", "bits": 16, **settings})


def test_a_run_costs_its_training_once_and_each_fits_encoding_and_evaluation(tmp_path):
    run = finished(tmp_path, cell(method="gsl"), 10.0, {"train": (1.0, 2.0), "database": (4.0, 3.0)})
    config, seconds = estimate.run_seconds(run)
    assert seconds == 10.0 + 1.0 + 2.0 + 4.0 + 3.0 and config["method"] == "gsl"


@pytest.mark.parametrize("record", [{"train_s": 1.0, "encode_s": 1.0}, "[1]", "{",
                                    {"train_s": -1.0, "encode_s": 1.0, "eval_s": 1.0},
                                    {"train_s": math.nan, "encode_s": 1.0, "eval_s": 1.0},
                                    {"train_s": True, "encode_s": 1.0, "eval_s": 1.0}])
def test_a_run_whose_times_are_missing_or_out_of_range_is_not_timed(tmp_path, record):
    run = finished(tmp_path, cell(method="gsl"), 1.0, {"train": (1.0, 1.0)})
    text = record if isinstance(record, str) else json.dumps({"config": {}, **record})
    run.metrics.write_text(text)
    assert estimate.run_seconds(run) is None
    assert estimate.timings([tmp_path]) == []


def test_cells_take_the_median_of_the_closest_level_that_has_runs(tmp_path):
    for seed, train in ((0, 10.0), (1, 30.0), (2, 14.0)):  # gsl 16 bits: median 14 + 1
        finished(tmp_path, cell(method="gsl", seed=seed), train, {"train": (0.5, 0.5)})
    finished(tmp_path, cell(method="gsl", gsl_alpha=0.0), 100.0, {"train": (0.0, 0.0)})
    finished(tmp_path, cell(method="qloss", bits=32), 40.0, {"train": (0.0, 0.0)},
             tuning=True)  # a tuning trial: the same training
    timed = estimate.timings([tmp_path])
    assert len(timed) == 5
    cells = [cell(method="gsl", seed=7),              # its own settings: 15
             cell(method="gsl", seed=3, gsl_k=4),     # gsl at 16 bits, any knobs: (14+15+31+100)/4
             cell(method="ste", bits=32),             # pq 32 bits, any method: the qloss trial, 40
             cell(method="ste", bits=64),             # digits only: median of all five: 31
             cell(method="float", dataset="fashion-mnist")]  # nothing like it
    cost = estimate.estimate(cells, timed)
    assert cost.per_level == (1, 1, 0, 1, 1) and cost.cells == 5 and cost.unestimated == 1
    assert cost.seconds == pytest.approx(15.0 + (15.0 + 31.0) / 2 + 40.0 + 31.0)
    assert cost.wall_seconds(2) == pytest.approx(cost.seconds / 2) and cost.timed_runs == 5


def test_a_cell_is_timed_by_runs_of_its_own_split_before_the_other_split(tmp_path):
    """A tuning trial (split validation) fits no database codebooks: a trial left to run is
    timed from trials, a test cell from test runs, and either from the other split only where
    its own has no run of its method, quantizer and code length."""
    finished(tmp_path, cell(method="qloss", seed=0), 60.0, {"train": (1.0, 1.0),
                                                          "database": (30.0, 8.0)})
    finished(tmp_path, cell(method="qloss", seed=100, split="validation"), 20.0,
             {"train": (1.0, 1.0)}, tuning=True)
    finished(tmp_path, cell(method="ste", seed=100, split="validation"), 30.0,
             {"train": (1.0, 1.0)}, tuning=True)
    timed = estimate.timings([tmp_path])
    cells = [cell(method="qloss", seed=101, split="validation", qloss_lambda=0.5),  # 22
             cell(method="qloss", seed=1, qloss_lambda=0.5),                        # 100
             cell(method="ste", seed=1),                                           # 32
             cell(method="gsl", seed=100, split="validation")]    # any method: median 32
    cost = estimate.estimate(cells, timed)
    assert cost.per_level == (0, 2, 1, 1, 0)
    assert cost.seconds == pytest.approx(22.0 + 100.0 + 32.0 + 32.0)


def test_a_dry_run_prints_the_estimate_of_the_cells_left(tmp_path):
    results = tmp_path / "results"
    runner = CliRunner()
    args = ["--data-dir", str(tmp_path / "data"), "--results-dir", str(results)]
    assert runner.invoke(cli, [*args, "download", "digits"]).exit_code == 0
    grid = ["bench", "--methods", "gsl", "--bits", "16", "--seeds", "0,1", "--dry-run", "-j", "2"]
    lines = runner.invoke(cli, [*args, *grid]).output.splitlines()
    assert lines[-1] == ("estimate: none (0 finished runs, none of the same data set, "
                         "representation and fine-tuning to time the cells left from)")
    finished(results, cell(method="gsl", gsl_k=4), 100.0, {"train": (10.0, 10.0)})
    lines = runner.invoke(cli, [*args, *grid]).output.splitlines()
    assert lines[-2] == "2 cells: 0 done, 0 partial (trained, not evaluated), 2 todo"
    assert lines[-1].startswith("estimate: 4m00s of cell time for 2 of the 2 cells left, about "
                                "2m00s at -j 2 (the median of 1 finished runs: 0 cells timed by "
                                "their own settings at other seeds, 2 by their method")
