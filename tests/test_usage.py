"""Codebook usage (`gslbench.evaluation.usage`) on hand-made codes against values computed by
hand, its path from encode through evaluate into results.csv, and the report's usage table and
figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from gslbench.evaluation.usage import codebook_usage, usage_columns, usage_record
from gslbench.quantizers import make_quantizer
from gslbench.report.usage import usage_markdown, usage_tables, usage_text


def test_all_items_on_one_codeword():
    usage = codebook_usage(np.full((10, 1), 7), 16)
    assert usage == {"perplexity": [1.0], "unused": [15 / 16], "entropy_bits": [0.0],
                     "entropy_max_bits": 4.0}


def test_uniform_use_of_every_codeword():
    usage = codebook_usage(np.repeat(np.arange(16), 3)[:, None], 16)  # each word 3 times
    assert usage["perplexity"] == pytest.approx([16.0])
    assert usage["entropy_bits"] == pytest.approx([4.0]) and usage["unused"] == [0.0]


def test_two_of_sixteen_codewords_per_codebook():
    """Codebook 0: words 3 and 9 equally (H = 1 bit, perplexity 2); codebook 1: words 0 and 1 in
    3 : 1 (H = −(3/4 log2 3/4 + 1/4 log2 1/4) = 0.8113 bits); 14 of 16 unused in both."""
    indices = np.array([[3, 0], [9, 0], [3, 0], [9, 1]])
    usage = codebook_usage(indices, 16)
    h = -(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25))
    assert usage["entropy_bits"] == pytest.approx([1.0, h])
    assert usage["perplexity"] == pytest.approx([2.0, 2**h])
    assert usage["unused"] == [14 / 16, 14 / 16]


def test_usage_of_packed_codes_unpacks_them_per_sub_quantizer():
    """The record of faiss's packed codes equals the usage of the indices they pack."""
    rng = np.random.default_rng(0)
    quantizer = make_quantizer("pq", 8, 8, sub_bits=4, seed=0).fit(
        rng.normal(size=(256, 8)).astype(np.float32))
    codes = quantizer.encode(rng.normal(size=(40, 8)).astype(np.float32))
    record = usage_record(quantizer, {"database": codes})
    assert record["database"] == codebook_usage(quantizer.unpack(codes), 16)
    columns = usage_columns(record)
    assert columns["usage_database_perplexity"] == pytest.approx(
        np.mean(record["database"]["perplexity"]))
    assert math.isnan(columns["usage_train_perplexity"])  # the part not measured
    assert all(math.isnan(value) for value in usage_columns(None).values())  # a float run


def test_bad_indices_are_refused():
    with pytest.raises(ValueError, match=r"\(n, M\)"):
        codebook_usage(np.zeros(4, dtype=int), 16)


def test_usage_reaches_metrics_and_results_csv(digits_runs):
    """encode measures it (training and database codes), evaluate copies it, the report's
    results.csv averages it over the sub-quantizers, and tables.md holds the usage table."""
    from click.testing import CliRunner

    from gslbench.cli import cli
    from gslbench.layout import resolve_run

    root, runs = digits_runs
    base = ["--data-dir", str(root / "data"), "--results-dir", str(root / "results"), "-q"]
    for run in runs.values():
        result = CliRunner().invoke(cli, [*base, "evaluate", run])
        assert result.exit_code == 0, result.output
    pq = resolve_run(root / "results", runs["pq"])
    record = json.loads(pq.metrics_file().read_text())
    assert set(record["usage"]) == {"train", "database"}
    assert len(record["usage"]["train"]["perplexity"]) == 2  # 16 bits of 256-word codebooks
    assert record["usage"]["database"]["entropy_max_bits"] == 8.0
    float_record = json.loads(resolve_run(root / "results", runs["float"]).metrics_file()
                              .read_text())
    assert float_record["usage"] is None
    out = root / "usage-report"
    result = CliRunner().invoke(cli, [*base, "report", "--out", str(out)])
    assert result.exit_code == 0, result.output
    results = pd.read_csv(out / "results.csv")
    row = results[results.run == pq.run_id].iloc[0]
    assert row.usage_database_perplexity == pytest.approx(
        np.mean(record["usage"]["database"]["perplexity"]))
    assert row.usage_train_unused == pytest.approx(np.mean(record["usage"]["train"]["unused"]))
    assert results[results.method == "float"].usage_database_perplexity.isna().all()
    assert "## Codebook usage" in (out / "tables.md").read_text()
    page = (out / "index.html").read_text()  # the usage panel of each table set's figure
    assert 'id="usage"' in page and "perplexity against mAP" in page


def test_usage_table_gives_mean_and_std_over_seeds():
    rows = [{"dataset": "d", "feature": "f", "protocol": "standard", "loss": "pairwise",
             "quantizer": "pq", "sub_bits": 4, "codebooks": "train", "search": "adc",
             "metric": "l2", "condition": "", "method": "ste", "variant": "ste β=1",
             "code_bits": 16, "seed": seed, "map": 0.5 + seed / 10,
             "usage_train_perplexity": 10.0 + seed, "usage_train_unused": 0.0,
             "usage_database_perplexity": 12.0, "usage_database_unused": 0.25 * seed,
             "usage_database_entropy_bits": 3.5} for seed in (0, 1)]
    floats = {**rows[0], "method": "float", "variant": "float",
              **{name: float("nan") for name in rows[0] if name.startswith("usage_")}}
    [(key, table)] = usage_tables(pd.DataFrame([*rows, floats]))
    assert list(table.method) == ["ste β=1"] and table.n.tolist() == [2] and key[4] == "pq"
    assert table.usage_train_perplexity_mean[0] == 10.5
    assert table.usage_database_unused_std[0] == pytest.approx(np.std([0, 0.25], ddof=1))
    text = usage_text(table)
    assert text["train perplexity"][0] == f"10.50 ± {np.std([10, 11], ddof=1):.2f}"
    assert text["database unused"][0] == f"0.125 ± {np.std([0, 0.25], ddof=1):.3f}"
    assert text["mAP"][0] == f"0.5500 ± {np.std([0.5, 0.6], ddof=1):.4f}"
    assert "| ste β=1 | 16 | 16 |" in usage_markdown([(key, table)])
