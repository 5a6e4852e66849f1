"""Report tables, figures, verdicts, run selection and the results document on hand-made runs."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from runfakes import MAPS, make_run, make_runs

from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.report import select_runs, write_report
from gslbench.report.document import shared_settings
from gslbench.report.frames import read_runs, tuned_figures_data
from gslbench.report.plots import method_colours
from gslbench.report.stats import comparisons
from gslbench.report.tables import paper_tables, tables_latex, tables_markdown, tuned_rows

GSL, QLOSS = "gsl α=1 k=8 select=aligned", "qloss λ=0.1"
KEY = ("digits", "pixels", "pairwise", "pq", 8, "adc", "l2")  # the default mode goes unsaid
SLUG = "digits-pixels-pairwise-pq-256w"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The report of `MAPS` on digits: (report folder, results, tables' Markdown)."""
    root = tmp_path_factory.mktemp("report")
    results, markdown = write_report(make_runs(root / "runs"), root / "report")
    return root / "report", results, markdown


def tables_of(results):
    return {(table.key, table.kind): table for table in paper_tables(results)}


def test_map_table_holds_mean_and_std_over_seeds_and_the_float_ceiling(report):
    _, results, markdown = report
    assert len(results) == 21
    table = tables_of(results)[(KEY, "map")]
    assert list(table.value.index) == ["float", "two-step", QLOSS, GSL]
    assert list(table.value.columns) == [16, 32] and table.headers == ["16 bits", "32 bits"]
    gsl = MAPS[("gsl", 32)]
    assert table.cells().at[GSL, 32] == f"{np.mean(gsl):.4f} ± {np.std(gsl, ddof=1):.4f} (3)"
    assert table.cells().at["float", 16] == table.cells().at["float", 32]  # one ceiling for all
    assert "| float | 0.9100 ± 0.0100 (3) | 0.9100 ± 0.0100 (3) |" in markdown


def test_bold_marks_the_best_quantized_method_per_column_ties_included(report):
    _, results, markdown = report
    best = tables_of(results)[(KEY, "map")].best
    # 16 bits: qloss and gsl tie at 0.80 (both bold); 32 bits: qloss alone; float never competes
    assert best[16].to_dict() == {"float": False, "two-step": False, QLOSS: True, GSL: True}
    assert best[32].to_dict() == {"float": False, "two-step": False, QLOSS: True, GSL: False}
    assert f"| {QLOSS} | **0.8000 ± 0.0200 (3)** | **0.8500 ± 0.0100 (3)** |" in markdown
    assert f"| {GSL} | **0.8000 ± 0.0100 (3)** | 0.7500 ± 0.0100 (3) |" in markdown
    assert "Bold: the best quantized method per code length" in markdown


def test_bold_compares_means_at_the_printed_precision(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="float", seed=0), 0.99),
            make_run(tmp_path, RunConfig(method="qloss", bits=16, seed=0), 0.812340),
            make_run(tmp_path, RunConfig(method="gsl", bits=16, seed=0), 0.812344),  # prints equal
            make_run(tmp_path, RunConfig(method="two-step", bits=16, seed=0), 0.81234 - 1e-4)]
    results, _ = write_report(runs, tmp_path / "report")
    assert tables_of(results)[(KEY, "map")].best[16].tolist() == [False, False, True, True]


def test_missing_cells_and_variants_of_one_method(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="float", seed=0), 0.9),
            make_run(tmp_path, RunConfig(method="qloss", bits=16, qloss_lambda=1.0), 0.7),
            make_run(tmp_path, RunConfig(method="qloss", bits=32, qloss_lambda=1.0), 0.8),
            make_run(tmp_path, RunConfig(method="qloss", bits=16, qloss_lambda=0.1), 0.75)]
    tables = paper_tables(read_runs(runs).results)
    map_table = tables[0]
    assert list(map_table.value.index) == ["float", QLOSS, "qloss λ=1"]
    assert map_table.cells().at[QLOSS, 32] == "—" and not map_table.best.at[QLOSS, 32]
    assert map_table.best[32].tolist() == [False, False, True]
    assert tables_markdown(tables).count("| — |") == 3  # in the mAP, gap and error tables
    assert tables[1].cells().at[QLOSS, 16] == "+0.1500 (1)"  # no spread from single seeds
    assert r"qloss $\lambda$=0.1 & \textbf{0.7500 (1)} & --- \\" in tables_latex(tables)  # one seed
    assert set(method_colours(map_table.value.index).values()) == {"#000000", "#1f77b4", "#ff7f0e"}


def test_gap_to_float_against_a_hand_computation(report):
    _, results, markdown = report
    gap = tables_of(results)[(KEY, "gap")]
    assert list(gap.value.index) == ["two-step", QLOSS, GSL]  # float has no gap to itself
    # float: mean 0.91, std 0.01; gsl 16: mean 0.80, std 0.01; qloss 16: mean 0.80, std 0.02
    assert gap.value.at[GSL, 16] == pytest.approx(0.11)
    assert gap.spread.at[GSL, 16] == pytest.approx((0.01**2 / 3 + 0.01**2 / 3) ** 0.5)
    assert gap.spread.at[QLOSS, 16] == pytest.approx((0.01**2 / 3 + 0.02**2 / 3) ** 0.5)
    assert gap.value.at[QLOSS, 32] == pytest.approx(0.91 - 0.85)
    assert gap.best[32].tolist() == [False, True, False]  # the smallest gap
    assert f"| {QLOSS} | **+0.1100 ± 0.0129 (3)** | **+0.0600 ± 0.0082 (3)** |" in markdown


def test_latex_tables_are_booktabs_with_a_row_per_method(report):
    folder, results, _ = report
    text = (folder / "tables.tex").read_text()
    unescaped = re.sub(r"\\[{}]", "", text)
    assert unescaped.count("{") == unescaped.count("}")
    assert text.isascii()  # ± α λ − written as LaTeX
    assert text.count(r"\begin{table}") == text.count(r"\end{table}") == 3  # mAP, gap, error
    for rule in (r"\toprule", r"\bottomrule"):
        assert text.count(rule) == 3
    map_table, gap_table = text.split(r"\end{table}")[:2]
    assert re.findall(r"^(.*?) & ", map_table, re.M) == [
        "Method", "float", "two-step", r"qloss $\lambda$=0.1", r"gsl $\alpha$=1 k=8 select=aligned"]
    assert map_table.count(r"\midrule") == 2  # under the header, and under the float ceiling
    assert gap_table.count(r"\midrule") == 1 and gap_table.count(r"\\") == 4
    assert r"\textbf{0.8000 $\pm$ 0.0200 (3)}" in map_table and map_table.count(r"\textbf") == 3
    assert r"\label{tab:digits-pixels-pairwise-pq-256w-gap}" in gap_table
    assert (r"\caption{digits (pixels), PQ, 256-word codebooks, pairwise loss: gap to float "
            r"(float mAP $-$ mAP)") in gap_table
    for line in map_table.splitlines():
        if line.endswith(r"\\"):
            assert line.count("&") == 2  # method + two code lengths


def test_csv_tables_round_trip_through_pandas(report):
    folder, results, _ = report
    tables = tables_of(results)
    for kind, value, spread in (("map", "mean", "std"), ("gap", "gap", "se")):
        saved = pd.read_csv(folder / f"tables_{kind}.csv").set_index("method")
        table = tables[(KEY, kind)]
        assert list(saved.index) == list(table.value.index)
        assert list(saved.columns[:4]) == ["dataset", "feature", "loss", "quantizer"]
        for bits in (16, 32):
            np.testing.assert_allclose(saved[f"{bits}_{value}"], table.value[bits])
            np.testing.assert_allclose(saved[f"{bits}_{spread}"], table.spread[bits])
            assert saved[f"{bits}_n"].tolist() == [3] * len(saved)
            assert saved[f"{bits}_best"].tolist() == table.best[bits].tolist()
    runs = pd.read_csv(folder / "results.csv")
    assert len(runs) == 21 and runs.run.str.fullmatch(r"[0-9a-f]{12}").all()
    assert {"dataset", "feature", "method", "variant", "quantizer", "code_bits", "seed", "map",
            "map_at_100", "precision_at_10", "recall_at_100", "train_s", "encode_s", "eval_s",
            "run"} <= set(runs)
    pd.testing.assert_frame_equal(runs, results.reset_index(drop=True), check_dtype=False)


FIGURES = ["map_vs_bits", *(f"{SLUG}-{name}" for name in
                            ("recall_at", "precision_at", "pr_curve", "training"))]


def test_every_figure_is_written_as_png_and_svg(report):
    folder, _, _ = report
    for stem in FIGURES:
        assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        root = ElementTree.parse(folder / f"{stem}.svg").getroot()
        assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert not list(folder.glob(".*.tmp"))  # nothing left of the atomic writes


def test_method_colours_are_one_map_for_every_figure(report):
    folder, results, _ = report
    colours = method_colours(results.variant)
    assert colours["float"] == "#000000" and len(set(colours.values())) == 4
    assert colours == method_colours(reversed(results.variant.tolist()))
    for stem in FIGURES:  # each method's colour is drawn in each figure
        svg = (folder / f"{stem}.svg").read_text()
        assert all(colour in svg for colour in colours.values()), stem


def test_the_report_is_reproducible(tmp_path, report):
    folder, _, _ = report
    write_report(make_runs(tmp_path / "runs"), tmp_path / "again")
    for path in folder.iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name


def test_index_html_is_self_contained(report):
    folder, _, _ = report
    page = (folder / "index.html").read_text()
    assert page.count("<img ") == len(FIGURES) == page.count('src="data:image/png;base64,')
    assert page.count('<table class="paper"') == 3  # mAP, gap to float, database error
    assert not re.search(r'(src|href)="(?!data:|#)', page)  # no file or network reference
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)".*?<code>([^<]+)</code>', page)
    assert [name for _, name in embedded] == [f"{stem}.png" for stem in FIGURES]
    for data, name in embedded:  # the whole PNG, byte for byte
        assert base64.b64decode(data) == (folder / name).read_bytes()


def test_paired_verdicts_on_the_made_up_seeds(report):
    _, results, _ = report
    table = comparisons(results).set_index(["code_bits", "method", "against"])
    # gsl 16 - two-step 16 per seed: 0.11, 0.08, 0.11: t(0.975, 2) = 4.303 (a t table)
    row = table.loc[(16, GSL, "two-step")]
    half = 4.303 * np.std([0.11, 0.08, 0.11], ddof=1) / np.sqrt(3)
    assert row["mean"] == pytest.approx(0.10) and row.n == 3 and row.positive == 3
    assert row.low == pytest.approx(0.10 - half, abs=1e-4) and row.verdict == "win"
    assert table.loc[(16, GSL, QLOSS)].verdict == "tie"  # 0.01, 0.01, -0.02
    assert table.loc[(32, GSL, QLOSS)].verdict == "loss"  # -0.10, -0.12, -0.08
    assert table.loc[(32, GSL, "two-step")].verdict == "tie"  # 0, -0.02, 0.02
    assert table.loc[(16, QLOSS, "two-step")].verdict == "win"
    assert len(table) == 6  # per code length: qloss and gsl against two-step, gsl against qloss


def test_results_document(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    write_report(make_runs(tmp_path / "runs"), tmp_path / "report", doc, "Tuning: none.\n")
    text = doc.read_text()
    assert text.startswith("# gslbench results\n\nTuning: none.\n")
    assert "gsl_alpha=1," in text and "method=float/gsl/qloss/two-step" in text
    assert "| gsl | qloss | 0 | 1 | 1 | 0 |" in text  # one tie, one loss against qloss (by name)
    assert "gap to float" in text and "database quantization MSE" in text
    assert ("- **digits (pixels), PQ, 32 bits = 4 × 256 words, pairwise loss**: two-step is 0.1600 "
            f"mAP below float; {GSL} ties two-step (+0.0000, 95% CI [-0.0497, +0.0497], 1/3 seeds "
            f"above); loses to {QLOSS} (-0.1000, 95% CI [-0.1497, -0.0503], 0/3 seeds above).") in text
    # the training set's last-epoch error beside encode's database and query errors
    assert f"| digits | pixels | pq | 256 | 16 | {GSL} | 0.2000 | 0.16000 | 0.02000 | 0.04000 |" in text


def test_runs_without_metrics_are_named_and_skipped(tmp_path, caplog):
    runs = make_runs(tmp_path / "runs")
    runs[0].metrics.unlink()
    results, _ = write_report(runs, tmp_path / "report")
    assert len(results) == 20 and runs[0].run_id not in set(results.run)
    assert f"skipping 1 run(s) without metrics.json: {runs[0].run_id}" in caplog.text
    with pytest.raises(GslbenchError, match="no evaluated runs"):
        write_report([runs[0]], tmp_path / "report")


def test_select_runs_by_id_pattern_and_data_set(tmp_path):
    digits = make_runs(tmp_path / "runs")
    fashion = make_runs(tmp_path / "runs", dataset="fashion-mnist")
    assert select_runs(tmp_path) == sorted(digits + fashion)
    first = digits[0].run_id
    assert select_runs(tmp_path, patterns=[first[:6] + "*"]) == [digits[0]]
    assert select_runs(tmp_path, patterns=[first, fashion[0].run_id]) == sorted([digits[0], fashion[0]])
    assert select_runs(tmp_path, datasets=["fashion-mnist"]) == sorted(fashion)
    assert select_runs(tmp_path, [first], datasets=["digits"]) == [digits[0]]
    with pytest.raises(GslbenchError, match="no run id matches --runs zz"):
        select_runs(tmp_path, patterns=["zz*"])
    with pytest.raises(GslbenchError, match="no run of data set cifar10 .the runs hold: digits"):
        select_runs(tmp_path, patterns=[first], datasets=["cifar10"])
    with pytest.raises(GslbenchError, match="no evaluated runs to report: .* holds no runs"):
        select_runs(tmp_path / "nothing")


def invoke(results_dir, *args):
    return CliRunner().invoke(cli, ["--results-dir", str(results_dir), *args])


def test_report_command_filters_and_errors(tmp_path):
    make_runs(tmp_path / "runs")
    make_runs(tmp_path / "runs", dataset="fashion-mnist")
    unevaluated = make_run(tmp_path / "runs", RunConfig(dataset="fashion-mnist", seed=7), 0.5,
                           evaluated=False)
    result = invoke(tmp_path, "report", "--dataset", "digits", "--out", str(tmp_path / "digits"))
    assert result.exit_code == 0, result.output
    assert "## digits (pixels)" in result.output and "fashion-mnist" not in result.output
    assert set(pd.read_csv(tmp_path / "digits" / "results.csv").dataset) == {"digits"}
    result = invoke(tmp_path, "report", "-d", "digits,fashion-mnist")
    assert result.exit_code == 0, result.output
    assert f"without metrics.json: {unevaluated.run_id}" in result.output
    assert len(pd.read_csv(tmp_path / "report" / "results.csv")) == 42
    result = invoke(tmp_path, "report", "--runs", unevaluated.run_id)
    assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith(
        "gslbench: error: no evaluated runs to report")
    for args, message in ((["--runs", "zz*"], "no run id matches --runs zz*"),
                          (["--dataset", "cifar10"], "no run of data set cifar10")):
        result = invoke(tmp_path, "report", *args)
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith(f"gslbench: error: {message}")


def test_report_on_an_empty_results_folder_is_one_line(tmp_path):
    (tmp_path / "runs").mkdir()
    for results_dir in (tmp_path, tmp_path / "missing"):
        result = invoke(results_dir, "report")
        assert result.exit_code == 2
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("gslbench: error: no evaluated runs to report: ")
        assert "holds no runs" in lines[0]


@pytest.mark.parametrize("damage", ["metrics", "train_log"])
def test_a_malformed_run_file_is_an_error_naming_the_run(tmp_path, damage):
    runs = make_runs(tmp_path / "runs")
    broken = runs[3]
    if damage == "metrics":  # valid JSON, not a gslbench metrics record
        broken.metrics.write_text('{"run": "x", "config": {}}')
    else:
        broken.train_log.write_bytes(b'epoch,sim_loss\n1,"unterminated\n')
    name = "metrics.json" if damage == "metrics" else "train_log.csv"
    with pytest.raises(GslbenchError, match=f"{broken.path}: {name} is not what"):
        read_runs(runs)


def test_other_search_modes_get_their_own_tables_and_search_bench_its_section(tmp_path):
    runs = make_runs(tmp_path / "runs")
    for run in runs:  # every run evaluated by SDC / inner product too, 0.1 lower
        record = json.loads(run.metrics.read_text())
        record.update(search="sdc", metric="ip", map=record["map"] - 0.1)
        run.metrics_file("sdc", "ip").write_text(json.dumps(record))
    for index, run in enumerate([runs[0], *runs[3:6]]):  # a float run, two-step 16 bits x 3 seeds
        record = json.loads(run.metrics.read_text())
        measured = {"index": "IndexPQ", "bytes_per_vector": 4, "index_bytes": 1000,
                    "qps_batch1": 1000.0 * (index + 1), "qps_batched": 5000.0 * (index + 1),
                    "recall_at": {"1": 0.5, "10": 0.25 * index}, "nn_recall_at": {"1": 0.5, "10": 0.9}}
        reference = {**measured, "index": "IndexFlatL2", "bytes_per_vector": 256,
                     "qps_batched": 2500.0,
                     "recall_at": {"1": 1.0, "10": 1.0}, "nn_recall_at": {"1": 1.0, "10": 1.0}}
        indexes = {"codes": measured} if index == 0 else {"codes": measured, "float": reference}
        run.search_file().write_text(json.dumps({
            "run": record["run"], "label": record["label"], "config": record["config"],
            "metric": "l2", "indexes": indexes}))
    folder = tmp_path / "report"
    results, markdown = write_report(runs, folder)
    assert len(results) == 42 and set(results.search) == {"adc", "sdc"}
    tables = tables_of(results)
    sdc_key = (*KEY[:5], "sdc", "ip")
    np.testing.assert_allclose(tables[(sdc_key, "map")].value.loc[GSL],
                               tables[(KEY, "map")].value.loc[GSL] - 0.1)
    assert f"## {KEY[0]} (pixels), PQ, 256-word codebooks, pairwise loss: mAP" in markdown
    assert "PQ, 256-word codebooks, pairwise loss, SDC, inner product: mAP" in markdown
    assert (folder / f"{SLUG}-sdc-ip-recall_at.png").is_file()
    speed = pd.read_csv(folder / "search.csv")
    float_runs = speed[speed.variant == "float"]
    assert len(float_runs) == 1 and float_runs.quantizer.item() == "none"  # a float run's codes
    assert float_runs.code_bits.item() == 32 and float_runs.bytes_per_vector.item() == 4
    two_step = speed[speed.variant == "two-step"]
    assert two_step.n.item() == 3 and two_step.qps_batched.item() == pytest.approx(15000.0)
    assert two_step["map"].item() == pytest.approx(np.mean(MAPS[("two-step", 16)]))
    assert two_step.recall_at_10.item() == pytest.approx(0.5)  # (0.25 + 0.5 + 0.75) / 3
    assert two_step.speedup_batched.item() == pytest.approx(6.0)  # (4 + 6 + 8) / 3, run by run
    assert float_runs.speedup_batched.isna().all()  # a float run has no reference
    reference = speed[speed.variant == "exact search (reference)"]
    assert reference.n.item() == 3 and reference.qps_batched.item() == pytest.approx(2500.0)
    assert reference.speedup_batched.isna().all()
    assert reference["map"].isna().all() and list(speed.variant)[-1] == "exact search (reference)"
    assert "| exact search (reference) | none |" in (folder / "search.md").read_text()
    page = (folder / "index.html").read_text()
    assert 'id="search-table"' in page and "search_recall_qps.png" in page


def test_codebook_sizes_get_tables_of_their_own(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="float", seed=0), 0.9),
            make_run(tmp_path, RunConfig(method="two-step", bits=16, sub_bits=4, seed=0), 0.7),
            make_run(tmp_path, RunConfig(method="two-step", bits=16, sub_bits=8, seed=0), 0.8)]
    results, markdown = write_report(runs, tmp_path / "report")
    tables = tables_of(results)
    small, large = tables[((*KEY[:4], 4, *KEY[5:]), "map")], tables[((*KEY[:4], 8, *KEY[5:]), "map")]
    assert small.value.at["two-step", 16] == 0.7 and large.value.at["two-step", 16] == 0.8
    assert small.value.at["float", 16] == large.value.at["float", 16] == 0.9  # one ceiling
    assert "## digits (pixels), PQ, 16-word codebooks, pairwise loss: mAP" in markdown
    assert sorted(results.sub_bits) == [4, 8, 8]
    assert (tmp_path / "report" / "digits-pixels-pairwise-pq-16w-pr_curve.png").is_file()


def test_validation_runs_are_never_reported_with_test_runs(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="qloss", bits=16, seed=0), 0.8),
            make_run(tmp_path, RunConfig(method="qloss", bits=16, seed=0, split="validation"), 0.7)]
    assert runs[0].run_id != runs[1].run_id
    with pytest.raises(GslbenchError, match="the runs mix the test and validation splits"):
        read_runs(runs)
    assert read_runs(runs[1:]).results["map"].tolist() == [0.7]


def test_settings_line_prints_whole_knob_values_as_integers():
    configs = pd.DataFrame({"method": ["gsl", "gsl", "qloss"], "gsl_k": [8.0, 16.0, None],
                            "qloss_lambda": [None, None, 0.1], "lr": [0.001, 0.001, 0.001]})
    assert shared_settings(configs) == "method=gsl/qloss, gsl_k=8/16, qloss_lambda=0.1, lr=0.001"


def _tuned_results() -> pd.DataFrame:
    """qloss tuned per code length (λ=1 at 8 bits, λ=10 at 16 and 32), gsl with two variants at
    one code length (a knob comparison), two-step, float; 2 seeds each."""
    key = {"dataset": "digits", "feature": "pixels", "loss": "pairwise", "quantizer": "pq",
           "sub_bits": 4, "search": "adc", "metric": "l2"}
    runs = [("float", "float", 0), ("two-step", "two-step", 8), ("two-step", "two-step", 16),
            ("qloss", "qloss λ=1", 8), ("qloss", "qloss λ=10", 16), ("qloss", "qloss λ=10", 32),
            ("gsl", "gsl α=1", 8), ("gsl", "gsl α=0.5", 8)]
    return pd.DataFrame([{**key, "method": m, "variant": v, "code_bits": b, "seed": s,
                          "map": 0.5 + b / 100 + s / 1000 + 0.001 * len(v),
                          "quant_mse_database": np.nan if m == "float" else 0.1}
                         for m, v, b in runs for s in (0, 1)])


def test_a_method_tuned_per_code_length_is_one_row_with_its_knobs_in_the_note():
    results = _tuned_results()
    merged, notes = tuned_rows(results)
    assert set(merged.variant) == {"float", "two-step", "qloss", "gsl α=1", "gsl α=0.5"}
    assert list(notes.values()) == ["Knobs per code length: qloss λ=1 (8 bits), λ=10 (16, 32 bits)."]
    table = paper_tables(results)[0]
    assert table.kind == "map" and list(table.value.index) == [
        "float", "two-step", "qloss", "gsl α=0.5", "gsl α=1"]
    qloss = results[results.method == "qloss"].groupby("code_bits")["map"].mean()
    assert table.value.loc["qloss"].dropna().to_dict() == pytest.approx(qloss.to_dict())
    assert table.note.endswith(notes[next(iter(notes))])
    assert "qloss λ=1 (8 bits)" in tables_markdown([table])
    assert r"$\lambda$=10 (16, 32 bits)" in tables_latex([table])


def test_figures_draw_a_method_tuned_per_code_length_as_one_line(tmp_path):
    runs = [make_run(tmp_path / "runs", RunConfig(dataset="digits", method=method, bits=bits,
                                                  seed=seed, **knobs), 0.7 + bits / 1000)
            for method, bits, knobs in [("two-step", 16, {}), ("two-step", 32, {}),
                                        ("qloss", 16, {"qloss_lambda": 1.0}),
                                        ("qloss", 32, {"qloss_lambda": 10.0})]
            for seed in (0, 1)]
    data = tuned_figures_data(read_runs(runs))
    for frame in (data.results, data.curves, data.logs):
        assert set(frame.variant) == {"two-step", "qloss"}
    assert len(data.results) == 8 and len(data.logs) == len(read_runs(runs).logs)
