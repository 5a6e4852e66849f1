"""Report tables, verdicts and the results document on hand-made metrics files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.report import gsl_verdicts, mean_std_table, write_report

MAPS = {  # (method, bits) -> mAP per seed
    ("float", 0): [0.90, 0.92, 0.91],
    ("two-step", 16): [0.70, 0.71, 0.69],
    ("qloss", 16): [0.80, 0.78, 0.82],
    ("gsl", 16): [0.81, 0.79, 0.80],
    ("two-step", 32): [0.75, 0.76, 0.74],
    ("qloss", 32): [0.85, 0.86, 0.84],
    ("gsl", 32): [0.75, 0.74, 0.76],
}


def make_runs(root):
    runs = []
    for (method, bits), maps in MAPS.items():
        for seed, value in enumerate(maps):
            config = RunConfig(method=method, bits=bits or 32, seed=seed)
            run = root / config.run_id
            run.mkdir(parents=True)
            metrics = {"run": config.run_id, "config": config.to_dict(), "map": value,
                       "map_top": None, "map_at": {"100": value}, "precision_at": {"10": value},
                       "recall_at": {"10": value / 2}, "train_s": 1.0, "encode_s": 0.1, "eval_s": 0.2}
            (run / "metrics.json").write_text(json.dumps(metrics))
            pd.DataFrame({"epoch": [1, 2], "sim_loss": [1.0, 0.5], "quant_mse": [np.nan, 0.1],
                          "quant_mse_refit": [0.2, 0.1], "seconds": [0.1, 0.1]}).to_csv(
                run / "train_log.csv", index=False)
            runs.append(run)
    return runs


def test_tables_hold_mean_and_std_over_seeds_and_the_float_ceiling(tmp_path):
    results, markdown = write_report(make_runs(tmp_path / "runs"), tmp_path / "report")
    assert len(results) == 21
    table = mean_std_table(results)[("digits", "pixels", "pairwise", "pq")]
    assert list(table.index) == ["float", "two-step", "qloss λ=0.1", "gsl α=1 k=8"]
    assert list(table.columns) == ["16 bits", "32 bits"]
    gsl = MAPS[("gsl", 32)]
    assert table.loc["gsl α=1 k=8", "32 bits"] == f"{np.mean(gsl):.4f} ± {np.std(gsl, ddof=1):.4f} (3)"
    assert table.loc["float", "16 bits"] == table.loc["float", "32 bits"]  # one ceiling for all
    assert "| float | 0.9100 ± 0.0100 (3) |" in markdown
    saved = pd.read_csv(tmp_path / "report" / "results.csv")
    assert {"map", "map_at_100", "precision_at_10", "recall_at_10", "train_s", "run"} <= set(saved)


def test_verdicts_need_twice_the_standard_error(tmp_path):
    results, _ = write_report(make_runs(tmp_path / "runs"), tmp_path / "report")
    verdicts = gsl_verdicts(results).set_index(["code_bits", "baseline"])["verdict"]
    assert verdicts[(16, "two-step")] == "win"
    assert verdicts[(16, "qloss λ=0.1")] == "tie"
    assert verdicts[(32, "qloss λ=0.1")] == "loss"
    assert verdicts[(32, "two-step")] == "tie"


def test_results_document(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    write_report(make_runs(tmp_path / "runs"), tmp_path / "report", doc, "Tuning: none.\n")
    text = doc.read_text()
    assert text.startswith("# gslbench results\n\nTuning: none.\n")
    assert "gsl_alpha=1.0" in text and "method=float/gsl/qloss/two-step" in text
    assert "| gsl α=1 k=8 | qloss λ=0.1 | 1 | 1 |" in text  # one loss, one tie against qloss
    assert "quant_mse_refit" in text and "0.10000" in text


def test_runs_without_metrics_are_skipped_and_nothing_is_an_error(tmp_path):
    runs = make_runs(tmp_path / "runs")
    (runs[0] / "metrics.json").unlink()
    results, _ = write_report(runs, tmp_path / "report")
    assert len(results) == 20
    with pytest.raises(GslbenchError, match="no evaluated runs"):
        write_report([], tmp_path / "report")
