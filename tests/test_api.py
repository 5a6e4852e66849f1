"""The Python API (`gslbench.api`, exported by `gslbench`): the worked example of the docs,
docs/examples/quickstart.py, run as a user runs it, and its DataFrame checked against the
metrics files the steps wrote and the report's results.csv."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

import gslbench
from gslbench.errors import GslbenchError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "quickstart.py"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True)


@pytest.fixture(scope="module")
def example(tmp_path_factory, one_thread):
    """The example's DataFrame and the folder it worked in."""
    root = tmp_path_factory.mktemp("quickstart")
    table = runpy.run_path(str(EXAMPLE))["quickstart"](root)
    return root, table


@pytest.mark.slow
def test_example_returns_the_runs_with_their_map_and_gap(example):
    root, table = example
    assert isinstance(table, pd.DataFrame)
    assert sorted(zip(table.method, table.codebooks, strict=True)) == [
        ("float", "train"), ("gsl", "database"), ("gsl", "train"), ("two-step", "database"),
        ("two-step", "train")]
    assert list(table.columns) == ["method", "variant", "quantizer", "code_bits", "codebooks",
                                   "seed", "map", "gap_to_float"]
    assert table["map"].is_monotonic_decreasing
    records = [json.loads(path.read_text())
               for path in (root / "results" / "runs").glob("*/metrics*.json")]
    runs = {(record["label"], record["codebooks"]): record["map"] for record in records}
    assert len({record["run"] for record in records}) == 3  # the step-by-step gsl run reused
    ceiling = runs["float", "train"]
    for row in table.itertuples():
        assert row.map == pytest.approx(runs[row.variant, row.codebooks], abs=0)
        assert row.gap_to_float == pytest.approx(ceiling - runs[row.variant, row.codebooks])
    assert table.set_index("method").loc["float", "code_bits"] == 0
    assert (table.loc[table.method != "float", "code_bits"] == 16).all()


@pytest.mark.slow
def test_load_results_has_the_columns_and_values_of_results_csv(example):
    root, _ = example
    results = gslbench.load_results(root / "results")
    index = gslbench.report(results_dir=root / "results", out=root / "report")
    assert index == root / "report" / "index.html" and index.is_file()
    csv = pd.read_csv(root / "report" / "results.csv")
    assert list(results.columns) == list(csv.columns)
    assert len(results) == len(csv) == 5  # float, and two quantized runs with two fits each
    merged = results.merge(csv, on=["run", "codebooks"], suffixes=("", "_csv"))
    assert len(merged) == 5
    assert (merged["map"] - merged["map_csv"]).abs().max() < 1e-12
    only = gslbench.load_results(root / "results", runs=[results.run.iloc[0]])
    assert list(only.run) == [results.run.iloc[0]]


@pytest.mark.slow
def test_evaluate_returns_the_metrics_record(example):
    root, _ = example
    run = gslbench.load_results(root / "results").run.iloc[0]
    record = gslbench.evaluate(run, results_dir=root / "results")
    on_disk = json.loads((root / "results" / "runs" / run / "metrics.json").read_text())
    assert record == on_disk


def test_import_loads_neither_torch_nor_faiss():
    out = _python("import sys, gslbench, gslbench.api; dir(gslbench); "
                  "print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))")
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_load_results_and_report_load_neither_torch_nor_faiss(example):
    root, _ = example
    results, out = str(root / "results"), str(root / "light_report")
    code = (f"import sys, gslbench; n = len(gslbench.load_results({results!r})); "
            f"gslbench.report(results_dir={results!r}, out={out!r}); "
            "print(n, sorted(m for m in ('torch', 'faiss') if m in sys.modules))")
    assert _python(code).stdout.strip() == "5 []"


def test_exports():
    from gslbench.config import RunConfig
    from gslbench.methods.base import Method
    from gslbench.methods.snapping import GradientSnappingLayer, snap_gradient

    assert gslbench.RunConfig is RunConfig and gslbench.Method is Method
    assert gslbench.GradientSnappingLayer is GradientSnappingLayer
    assert gslbench.snap_gradient is snap_gradient
    for name in ("evaluate", "tune", "load_results"):
        assert getattr(gslbench, name) is getattr(gslbench.api, name)
    assert set(gslbench.__all__) <= set(dir(gslbench))
    with pytest.raises(AttributeError):
        gslbench.no_such_name  # noqa: B018


def test_step_modules_are_callable_and_stay_modules():
    """`gslbench.train` is both the train module and the API's train, however it was imported
    (the import system binds a submodule on its package after import)."""
    import gslbench.bench
    import gslbench.train as train_module
    from gslbench import report as report_module

    for name in ("train", "encode", "bench", "report"):
        step = getattr(gslbench, name)
        assert callable(step) and step is sys.modules[f"gslbench.{name}"]
    assert train_module.train_run and report_module.write_report and gslbench.bench.run_grid
    with pytest.raises(GslbenchError, match="not both"):
        gslbench.train(gslbench.RunConfig(), dataset="digits")


@pytest.mark.slow
def test_tune_then_bench_with_the_choice(example):
    """tune's choice is the setting of highest mean validation mAP, and bench applies it."""
    root, _ = example
    results = root / "tuned"  # apart from the example's runs, which other tests count
    dirs = {"data_dir": root / "datasets", "results_dir": results}
    grid = {"dataset": "digits", "method": ["two-step", "qloss"], "quantizer": "pq", "bits": 16,
            "seed": [0, 1], "epochs": 3, "warmup_epochs": 1, "epochs_per_refit": 2}
    chosen = gslbench.tune(grid, trials=2, prune=False, **dirs)  # both trials run to the end
    assert list(chosen.method) == ["qloss", "two-step"]
    assert chosen.knobs.iloc[1] == {}  # two-step has no knobs: one trial
    chosen = chosen[chosen.method == "qloss"]
    tuned = results / "tuning" / "tuned.toml"
    assert tuned.is_file() and (results / "tuning" / "tuning.md").is_file()
    runs = gslbench.load_results(results / "tuning")
    means = runs[runs.method == "qloss"].groupby("variant")["map"].mean()
    assert set(runs.seed) == {0, 1} and len(means) == 2
    assert chosen.variant.iloc[0] == means.idxmax()
    assert chosen.validation_map.iloc[0] == pytest.approx(means.max())
    frame = gslbench.bench({**grid, "seed": 0}, tuned=tuned, **dirs)
    assert set(frame.variant) == {"two-step", chosen.variant.iloc[0]}
