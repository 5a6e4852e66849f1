"""Report tables, figures, verdicts, run selection and the results document on hand-made runs."""

from __future__ import annotations

import base64
import html
import json
import re
import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from runfakes import FEATURES_SHA256, MAPS, fake_conditions, make_run, make_runs

from gslbench.cli import cli
from gslbench.config import RunConfig
from gslbench.declared import Declared
from gslbench.errors import GslbenchError
from gslbench.evaluation.record import sealed
from gslbench.report import select_runs, write_report
from gslbench.report.cost import cost_section, read_cost
from gslbench.report.doc_csv import rebuild_tables
from gslbench.report.frames import TABLE_KEYS, key_slug, key_title, read_runs, tuned_figures_data
from gslbench.report.plots import method_colours, robust_limits
from gslbench.report.stats import comparisons
from gslbench.report.summary import generator, settings_tables
from gslbench.report.tables import paper_tables, tables_latex, tables_markdown, tuned_rows

GSL, QLOSS = "gsl α=1 k=8 select=aligned", "qloss λ=2.7"
# the default protocol, codebook fit, mode and condition, and no settings, go unsaid in titles
KEY = ("digits", "pixels", "standard", "pairwise", "pq", 8, "train", "adc", "l2", "", "standard")
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
    low = "qloss λ=0.1"
    map_table = tables[0]
    assert list(map_table.value.index) == ["float", low, "qloss λ=1"]
    assert map_table.cells().at[low, 32] == "—" and not map_table.best.at[low, 32]
    assert map_table.best[32].tolist() == [False, False, True]
    assert tables_markdown(tables).count("| — |") == 3  # in the mAP, gap and error tables
    assert tables[1].cells().at[low, 16] == "+0.1500 (1)"  # no spread from single seeds
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
        "Method", "float", "two-step", r"qloss $\lambda$=2.7", r"gsl $\alpha$=1 k=8 select=aligned"]
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
        assert list(saved.columns[:len(TABLE_KEYS)]) == TABLE_KEYS
        for bits in (16, 32):
            np.testing.assert_allclose(saved[f"{bits}_{value}"], table.value[bits])
            np.testing.assert_allclose(saved[f"{bits}_{spread}"], table.spread[bits])
            assert saved[f"{bits}_n"].tolist() == [3] * len(saved)
            assert saved[f"{bits}_best"].tolist() == table.best[bits].tolist()
    runs = pd.read_csv(folder / "results.csv", dtype={"settings": str}).fillna({"settings": ""})
    assert len(runs) == 21 and runs.run.str.fullmatch(r"[0-9a-f]{12}").all()
    assert {"dataset", "feature", "method", "variant", "quantizer", "code_bits", "seed", "map",
            "map_at_100", "precision_at_10", "recall_at_100", "train_s", "encode_s", "eval_s",
            "run"} <= set(runs)
    pd.testing.assert_frame_equal(runs, results.reset_index(drop=True), check_dtype=False)


FIGURES = [SLUG]  # one figure per table set


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


@pytest.mark.slow
def test_the_report_is_reproducible(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1796256000")  # the day the report says it was made
    runs = make_runs(tmp_path / "runs")
    write_report(runs, tmp_path / "first")
    write_report(runs, tmp_path / "again")
    for path in (tmp_path / "first").iterdir():
        assert (tmp_path / "again" / path.name).read_bytes() == path.read_bytes(), path.name
    assert "Generated on 2026-12-03 by gslbench " in (tmp_path / "first" / "tables.md").read_text()


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
    assert row.low == pytest.approx(0.10 - half, abs=1e-4)
    # t = 0.10 / (0.017321 / sqrt(3)) = 10.0, 2 degrees of freedom: p = 0.00985; one family of
    # the 4 declared comparisons (gsl against two-step and qloss at 16 and 32 bits; pca has no
    # runs, and without validation mAP no best other): Holm multiplies the smallest p by 4
    assert row.p == pytest.approx(0.00985, abs=1e-5)
    assert row.p_holm == pytest.approx(4 * row.p) and row.verdict == "better"
    assert len(table) == 4 and (table.family_size == 4).all()
    # 3 seeds cannot detect 0.005 (detectable over 0.1): what is not significant is not powered
    assert table.loc[(16, GSL, QLOSS)].verdict == "not powered"  # 0.01, 0.01, -0.02
    assert table.loc[(32, GSL, QLOSS)].verdict == "worse"  # -0.10, -0.12, -0.08
    assert table.loc[(32, GSL, "two-step")].verdict == "not powered"  # 0, -0.02, 0.02
    assert (table.detectable > 0.1).all()


def test_results_document(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    write_report(make_runs(tmp_path / "runs"), tmp_path / "report", doc, "Tuning: none.\n")
    text = doc.read_text()
    # the answer first, then the intro
    assert text.startswith("# gslbench results\n\n## The answer\n\nIn short: every variant's "
                           "verdicts in the comparisons declared before the runs on digits")
    assert ("In full: the comparisons declared before the runs (gsl − two-step, gsl − qloss, "
            "gsl − pca, gsl − best-other, over every regime)") in text
    # the short table: the verdicts alone (no run here is a tuned choice: every variant)
    assert (f"| standard | pq | 256 | {GSL} | 16: better<br>32: not powered | 16: not powered"
            "<br>32: worse |") in text
    assert (text.index("## The answer") < text.index("Tuning: none.") < text.index("Generated on ")
            < text.index("## Provenance") < text.index("## Settings")
            < text.index("## What it found"))
    # better, equivalent, worse, inconclusive, not powered
    assert "| gsl | qloss | 0 | 0 | 1 | 0 | 1 |" in text
    # per code length: at 16 bits GSL beats two-step (+0.10 at every seed), at 32 bits it loses
    # to qloss; pca has no runs, and without validation mAP there is no best other (a note says
    # why); 3 seeds are marked, and the largest detectable difference shown
    assert (f"| standard | pq | 256 | {GSL} | 16: +0.1000 better<br>32: +0.0000 not "
            "powered | 16: +0.0000 not powered<br>32: -0.1000 worse | 3 (< 10) | 0.1309 |") in text
    assert "no column for pca or the best other" in text
    assert "these runs have no validation score" in text
    assert "gap to float" in text and "database quantization MSE" in text
    assert ("- **digits (pixels), PQ, 32 bits = 4 × 256 words, pairwise loss**: two-step is 0.1600 "
            f"mAP below float; {GSL} is not powered against two-step (+0.0000, 95% CI [-0.0497, "
            "+0.0497], 1/3 units above, Holm p=1, detectable 0.1309); loses to "
            f"{QLOSS} (-0.1000, 95% CI [-0.1497, -0.0503], 0/3 units above, Holm p=0.0394, "
            "detectable 0.1309).") in text
    # the training set's last-epoch error beside encode's database and query errors, per protocol
    assert (f"| digits | pixels | standard | pq | 256 | 16 | {GSL} | 0.2000 | 0.16000 | 0.02000 | "
            "0.04000 |") in text


@pytest.mark.slow
def test_the_document_records_its_provenance_and_its_tables_rebuild_from_its_csv(tmp_path):
    doc = tmp_path / "docs" / "results.md"
    results, _ = write_report(make_runs(tmp_path / "runs"), tmp_path / "report", doc,
                              margin=0.02)
    text = doc.read_text()
    assert f"| digits | pixels | standard | {FEATURES_SHA256} | 21 |" in text  # every run's file
    assert "| torch | 2.3.0 (21) |" in text and "| threads: faiss | 2 (21) |" in text
    assert "| numpy | 1.26.4 (21) |" in text and "| device | type=cpu (21) |" in text
    assert "This document was made on a machine with CPU `" in text
    cpu = re.search(r"CPU `([^`]+)`", text).group(1)
    assert cpu and cpu != "unknown"
    assert "`results.csv` beside it" in text and "±0.02 mAP" in text
    rows = pd.read_csv(doc.with_suffix(".csv"))
    assert len(rows) == len(results) == 21
    assert set(rows.features_sha256) == {FEATURES_SHA256}
    answer, tables = rebuild_tables(doc.with_suffix(".csv"), margin=0.02)
    assert answer in text and tables in text  # the document's tables, from the CSV alone
    assert answer.startswith("## The answer") and "## Paired comparisons" in tables
    assert "### digits (pixels), pairwise loss, standard protocol" in tables
    assert "**digits (pixels), PQ, 256-word codebooks, pairwise loss.** Best by mean" in tables
    # a CSV with another number is a document with other tables
    rows.loc[rows.variant == GSL, "map"] += 0.001
    rows.to_csv(tmp_path / "edited.csv", index=False)
    assert rebuild_tables(tmp_path / "edited.csv", margin=0.02)[1] not in text
    with pytest.raises(GslbenchError, match="not a gslbench results CSV"):
        rows.drop(columns="map").to_csv(tmp_path / "bad.csv", index=False)
        rebuild_tables(tmp_path / "bad.csv")


def test_the_report_opens_with_what_it_found_and_the_settings(report):
    folder, results, markdown = report
    assert (folder / "tables.md").read_text() == markdown
    top = markdown[:markdown.index("## digits (pixels), PQ, 256-word codebooks, pairwise loss: mAP")]
    made = generator()
    assert top.startswith(f"# gslbench report\n\nGenerated on {made['date']} by gslbench "
                          f"{made['gslbench']} (commit {made['commit']}).")
    # the declared comparisons only (the best method is described, never tested): 16 bits: gsl
    # and qloss tie at 0.80 on mean (gsl ahead in the last digits); 32 bits: qloss best
    assert ("| 16 | gsl α=1 k=8 select=aligned − two-step | +0.1000 [+0.0570, +0.1430], "
            "p=0.0394 | 3 (< 10) | 0.1134 | better |") in top
    assert ("| 32 | gsl α=1 k=8 select=aligned − qloss λ=2.7 | -0.1000 [-0.1497, -0.0503], "
            "p=0.0394 | 3 (< 10) | 0.1309 | worse |") in top
    assert ("Best by mean mAP: gsl α=1 k=8 select=aligned at 16 bits; qloss λ=2.7 at 32 bits. "
            "gsl α=1 k=8 select=aligned − two-step: 1 better, 1 not powered. "
            "gsl α=1 k=8 select=aligned − qloss λ=2.7: 1 worse, 1 not powered.") in top
    assert "| epochs | 40 | 21 |" in top  # the same for every run
    assert "| gsl_alpha | 1 | 6 |" in top  # a knob: its method's runs
    assert "| seed | 0 (7), 1 (7), 2 (7) |" in top and "| bits | 0 (3), 16 (9), 32 (9) |" in top
    assert f"| features_sha256 | {FEATURES_SHA256} | 21 |" in top
    page = (folder / "index.html").read_text()
    assert page.index('id="found"') < page.index('id="settings"') < page.index(f'id="{SLUG}"')
    assert f"(commit {made['commit']})" in page and '<td class="better">better</td>' in page
    assert "a positive gap is what quantization costs" in page
    assert "max-width: 1400px" not in page
    # captions name the table or what the figure shows, not the table set its section is titled by
    assert "<caption>Gap to float (float mAP − mAP)" in page
    assert "<figcaption>Panels: mAP against code length (mean ± std over seeds); " in page
    assert "<caption>digits (pixels)" not in page and "<figcaption>digits" not in page


def test_the_commit_is_unknown_without_git(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert generator()["commit"] == "unknown"


def test_settings_tables_print_whole_knob_values_as_integers():
    configs = pd.DataFrame({"method": ["gsl", "gsl", "qloss"], "gsl_k": [8.0, 16.0, None],
                            "qloss_lambda": [None, None, 0.1], "lr": [0.001, 0.001, 0.001]})
    provenance = pd.DataFrame({"features_sha256": ["ab", "ab", "ab"]})
    same, differ = settings_tables(configs, provenance)
    assert same.values.tolist() == [["qloss_lambda", "0.1", 1], ["lr", "0.001", 3],
                                    ["features_sha256", "ab", 3]]
    assert differ.values.tolist() == [["method", "gsl (2), qloss (1)"], ["gsl_k", "8 (1), 16 (1)"]]


def test_training_panels_keep_every_method_in_view():
    calm = [np.linspace(0.5, 0.3, 40), np.linspace(0.45, 0.28, 40)]
    assert robust_limits(calm) is None  # nothing to cut
    spiky = np.linspace(0.6, 0.35, 40)
    spiky[[10, 11, 25]] = [2.3, 1.9, 2.1]  # ste's loss spikes
    low, high = robust_limits([*calm, spiky])
    assert low < 0.28 and 0.6 < high < 0.7  # every method's curve, not the spikes
@pytest.mark.slow
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


@pytest.mark.slow
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


def test_report_on_a_grid_takes_its_cells_only(tmp_path):
    make_runs(tmp_path / "runs")
    make_runs(tmp_path / "runs", dataset="fashion-mnist")
    grid = tmp_path / "grid.toml"  # 6 cells, of which seed 3 of each method was never run
    grid.write_text('dataset = "digits"\nmethod = ["two-step", "qloss"]\nbits = 16\n'
                    'seed = [0, 1, 3]\n', encoding="utf-8")
    result = invoke(tmp_path, "report", "--grid", str(grid), "--out", str(tmp_path / "grid"))
    assert result.exit_code == 0, result.output
    found = pd.read_csv(tmp_path / "grid" / "results.csv")
    assert sorted(zip(found.method, found.seed, strict=True)) == [
        ("qloss", 0), ("qloss", 1), ("two-step", 0), ("two-step", 1)]
    assert set(found.dataset) == {"digits"} and set(found.code_bits) == {16}
    missing = sorted(RunConfig(dataset="digits", method=m, bits=16, seed=3).run_id
                     for m in ("two-step", "qloss"))
    assert f"2 of the grid's 6 cells have no run: {', '.join(missing)}\n" in result.output
    partial = ("runs (dataset: digits, method: qloss, two-step, quantizer: pq, code_bits: 16, "
               "seed: 0, 1). A partial grid: 2 of the grid's 6 cells have no run yet; their "
               "figures are missing from every table and comparison.")
    assert partial in (tmp_path / "grid" / "tables.md").read_text(encoding="utf-8")
    assert html.escape(partial) in (tmp_path / "grid" / "index.html").read_text(encoding="utf-8")
    grid.write_text('dataset = "digits"\nmethod = ["two-step", "qloss"]\nbits = 16\n'
                    f'seed = {list(range(14))}\n', encoding="utf-8")  # 22 of 28 never run
    result = invoke(tmp_path, "report", "--grid", str(grid), "--out", str(tmp_path / "grid"))
    missing = sorted(RunConfig(dataset="digits", method=m, bits=16, seed=seed).run_id
                     for m in ("two-step", "qloss") for seed in range(3, 14))
    assert result.exit_code == 0, result.output
    assert (f"22 of the grid's 28 cells have no run: {', '.join(missing[:10])} and 12 more\n"
            in result.output)
    grid.write_text('dataset = "digits"\nmethod = ["two-step", "qloss"]\nbits = 16\n'
                    'seed = [0, 1]\n', encoding="utf-8")
    result = invoke(tmp_path, "report", "--grid", str(grid), "--out", str(tmp_path / "grid"),
                    "--doc", str(tmp_path / "doc.md"))
    assert result.exit_code == 0 and "have no run" not in result.output, result.output
    assert "seed: 0, 1). Every one of the grid's 4 cells has a run.\n" in (
        tmp_path / "doc.md").read_text(encoding="utf-8")
    grid.write_text('dataset = "digits"\nmethod = "qloss"\nbits = 64\n', encoding="utf-8")
    result = invoke(tmp_path, "report", "--grid", str(grid))
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("gslbench: error: none of the grid's 1 cells has a run among the 42")
    result = invoke(tmp_path, "report", "--tuned", str(grid))
    assert result.exit_code == 2 and "--tuned applies to the cells of a --grid" in result.output


def test_the_search_plot_draws_a_curve_per_method_and_quantizer_through_its_code_lengths(
        tmp_path):
    """Each (variant, quantizer) is one line through its code lengths in order of bits, its
    points labelled with their bits alone (the quantizer is the line's marker), the exact search
    a black star labelled float: no label repeats the quantizer beside every point."""
    import matplotlib.pyplot as plt

    from gslbench.report.search_plot import _search_curves, plot_recall_qps
    rows = [("gsl", "pq", 32, 900.0, 0.3), ("gsl", "pq", 8, 1500.0, 0.1),
            ("gsl", "opq", 8, 1400.0, 0.2), ("gsl", "opq", 32, 800.0, 0.4),
            ("two-step", "pq", 8, 1600.0, 0.05), ("exact", "none", 2048, 300.0, 1.0)]
    panel = pd.DataFrame(rows, columns=["variant", "quantizer", "code_bits", "qps_batched",
                                        "recall_at_10"]).assign(
        dataset="digits", feature="pixels", metric="l2", qps_batch1=lambda f: f.qps_batched / 2)
    colours = {"gsl": "#ff7f0e", "two-step": "#1f77b4"}
    fig, ax = plt.subplots()
    _search_curves(ax, panel, "qps_batched", "recall_at_10", colours)
    lines = {(line.get_label(), line.get_marker(), line.get_linestyle()):
             (list(line.get_xdata()), list(line.get_ydata())) for line in ax.lines}
    assert lines == {("gsl", "o", "-"): ([1500.0, 900.0], [0.1, 0.3]),
                     ("gsl", "s", "--"): ([1400.0, 800.0], [0.2, 0.4]),
                     ("two-step", "o", "-"): ([1600.0], [0.05])}
    assert sorted(text.get_text() for text in ax.texts) == ["32", "32", "8", "8", "8", "float"]
    plt.close(fig)
    figure = plot_recall_qps(panel, colours, tmp_path / "search")
    assert "●\u00a0pq, ■\u00a0opq; labels: code bits" in figure.title
    assert (tmp_path / "search.png").is_file() and (tmp_path / "search.svg").is_file()


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


@pytest.mark.slow
def test_other_search_modes_get_their_own_tables_and_search_bench_its_section(tmp_path):
    runs = make_runs(tmp_path / "runs")
    for run in runs:  # every run evaluated by SDC / inner product too, 0.1 lower
        record = json.loads(run.metrics.read_text())
        record.update(search="sdc", metric="ip", map=record["map"] - 0.1)
        run.metrics_file("sdc", "ip").write_text(json.dumps(sealed(record)))
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
    sdc_key = (*KEY[:7], "sdc", "ip", *KEY[9:])
    np.testing.assert_allclose(tables[(sdc_key, "map")].value.loc[GSL],
                               tables[(KEY, "map")].value.loc[GSL] - 0.1)
    assert f"## {KEY[0]} (pixels), PQ, 256-word codebooks, pairwise loss: mAP" in markdown
    assert "PQ, 256-word codebooks, pairwise loss, SDC, inner product: mAP" in markdown
    assert (folder / f"{SLUG}-sdc-ip.png").is_file()
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


@pytest.mark.slow
def test_codebook_sizes_get_tables_of_their_own(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="float", seed=0), 0.9),
            make_run(tmp_path, RunConfig(method="two-step", bits=16, sub_bits=4, seed=0), 0.7),
            make_run(tmp_path, RunConfig(method="two-step", bits=16, sub_bits=8, seed=0), 0.8)]
    results, markdown = write_report(runs, tmp_path / "report")
    tables = tables_of(results)
    small, large = tables[((*KEY[:5], 4, *KEY[6:]), "map")], tables[((*KEY[:5], 8, *KEY[6:]), "map")]
    assert small.value.at["two-step", 16] == 0.7 and large.value.at["two-step", 16] == 0.8
    assert small.value.at["float", 16] == large.value.at["float", 16] == 0.9  # one ceiling
    assert "## digits (pixels), PQ, 16-word codebooks, pairwise loss: mAP" in markdown
    assert sorted(results.sub_bits) == [4, 8, 8]
    assert (tmp_path / "report" / "digits-pixels-pairwise-pq-16w.png").is_file()


def test_validation_runs_are_never_reported_with_test_runs(tmp_path):
    runs = [make_run(tmp_path, RunConfig(method="qloss", bits=16, seed=0), 0.8),
            make_run(tmp_path, RunConfig(method="qloss", bits=16, seed=0, split="validation"), 0.7)]
    assert runs[0].run_id != runs[1].run_id
    with pytest.raises(GslbenchError, match="the runs mix the test and validation splits"):
        read_runs(runs)
    assert read_runs(runs[1:]).results["map"].tolist() == [0.7]


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


def test_controls_stay_rows_of_their_own_beside_a_method_tuned_per_code_length():
    results = _tuned_results()
    control = results[results.variant == "gsl α=1"].assign(variant="gsl α=0")  # at 8 bits only
    tuned_gsl = results[results.variant == "qloss λ=10"].assign(method="gsl", variant="gsl α=0.25")
    everywhere = pd.concat([control, tuned_gsl.assign(variant="gsl α=0")])  # α=0: 8, 16, 32
    frame = pd.concat([results[results.method != "gsl"], results[results.variant == "gsl α=1"],
                       tuned_gsl, everywhere], ignore_index=True)
    merged, notes = tuned_rows(frame)
    # gsl: α=1 at 8 bits and α=0.25 at 16 and 32 are one tuned row; α=0 ran everywhere
    assert set(merged[merged.method == "gsl"].variant) == {"gsl", "gsl α=0"}
    assert "gsl α=1 (8 bits), α=0.25 (16, 32 bits)" in next(iter(notes.values()))
    declared = Declared((("gsl", "gsl α=0"), ("gsl", "two-step")))  # a variant label, a method
    compared = comparisons(frame, declared)
    pairs = set(zip(compared.method, compared.against, strict=True))
    # the control is compared with the tuned method, and both with two-step
    assert pairs == {("gsl", "gsl α=0"), ("gsl", "two-step"), ("gsl α=0", "two-step")}


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


def _rewrite_metrics(run, **changes):
    """Change fields of a run's metrics.json (its `config` too: read_runs does not check the
    binding, write_report does)."""
    record = json.loads(run.metrics.read_text())
    config = changes.pop("config", {})
    record.update(changes)
    record["config"].update(config)
    run.metrics.write_text(json.dumps(sealed(record)))


def test_protocol_and_codebook_fit_are_columns_and_get_tables_of_their_own(tmp_path):
    runs = make_runs(tmp_path / "runs")
    for run in runs[3:]:  # every quantized run: its codebooks fitted on the database too
        record = json.loads(run.metrics.read_text())
        record.update(codebooks="database", map=record["map"] + 0.01)
        run.metrics_file("sdc", "l2").write_text(json.dumps(sealed(record)))  # a second evaluation file
    data = read_runs(runs)
    results = data.results
    assert set(results.protocol) == {"standard"}  # a config without the key: the standard one
    assert results.groupby("codebooks").size().to_dict() == {"database": 18, "train": 21}
    tables = tables_of(results)
    database = (*KEY[:6], "database", *KEY[7:])
    np.testing.assert_allclose(tables[(database, "map")].value.loc[GSL],
                               tables[(KEY, "map")].value.loc[GSL] + 0.01)
    assert tables[(database, "map")].value.loc["float"].tolist() == pytest.approx([0.91, 0.91])
    assert key_title(database) == ("digits (pixels), PQ, 256-word codebooks, pairwise loss, "
                                   "codebooks fitted on the database")
    assert key_slug(database) == f"{SLUG}-database-fit"
    verdicts = comparisons(results)
    assert set(verdicts.codebooks) == {"train", "database"}  # compared within each fit
    # one family: both fits, 16 and 32 bits, gsl against two-step and qloss
    assert len(verdicts) == 8 and (verdicts.family_size == 8).all()
    unseen = make_runs(tmp_path / "unseen", dataset="digits")
    for run in unseen:
        record = json.loads(run.metrics.read_text())
        record["config"]["protocol"] = "unseen"
        _rewrite_metrics(run, config={"protocol": "unseen"}, conditions=fake_conditions(record))
    mixed = read_runs([*runs, *unseen])
    both = mixed.results
    assert set(both.protocol) == {"standard", "unseen"}
    same, differ = settings_tables(mixed.configs, mixed.provenance)  # standard: not written, used
    assert "protocol" not in set(same.setting)
    assert differ.set_index("setting").loc["protocol"].item() == (
        f"standard ({len(runs)}), unseen ({len(unseen)})")
    unseen_key = (*KEY[:2], "unseen", *KEY[3:10], "unseen@unseen")
    assert key_title(unseen_key).endswith("pairwise loss, unseen classes, unseen queries, unseen "
                                          "classes' database (unseen@unseen)")
    assert tables_of(both)[(unseen_key, "map")].count.loc["float"].tolist() == [3, 3]


@pytest.mark.slow
def test_runs_that_differ_in_a_setting_get_tables_of_their_own(tmp_path):
    """The mix of issue 23: a bench at --epochs 10 with seed 0, another at 40 epochs with seed 1."""
    runs = [make_run(tmp_path / "runs", RunConfig(method=method, bits=16, seed=seed,
                                                  epochs=epochs), value)
            for method, values in (("float", (0.97, 0.80)), ("two-step", (0.7, 0.6)),
                                   ("gsl", (0.72, 0.65)))
            for seed, epochs, value in ((0, 10, values[0]), (1, 40, values[1]))]
    results, markdown = write_report(runs, tmp_path / "report")
    assert results.groupby("settings").size().to_dict() == {"epochs=10": 3, "epochs=40": 3}
    tables = tables_of(results)
    for epochs in (10, 40):
        key = (*KEY[:9], f"epochs={epochs}", "standard")
        assert tables[(key, "map")].count.loc["float"].tolist() == [1]  # never pooled
    assert "0.8850" not in markdown  # float's mean over the two experiments
    assert all(table.count.eq(1).all().all() for table in tables.values())
    assert "## digits (pixels), PQ, 256-word codebooks, pairwise loss, epochs=10: mAP" in markdown
    assert "| float | 0.9700 (1) |" in markdown and "| float | 0.8000 (1) |" in markdown
    assert "| epochs | 10 (3), 40 (3) |" in markdown  # the settings table says what differs
    assert comparisons(results).n.tolist() == [1, 1]  # seed 0 with seed 0 at 10 epochs only
    result = invoke(tmp_path, "report", "--out", str(tmp_path / "cli"))  # the CLI alike
    assert result.exit_code == 0 and "epochs=40: mAP" in (tmp_path / "cli" / "tables.md").read_text()


def test_a_feature_file_of_another_split_is_refused_in_one_line(tmp_path):
    runs = make_runs(tmp_path / "runs")
    other = make_run(tmp_path / "runs", RunConfig(method="gsl", bits=16, seed=3), 0.7,
                     features_sha256="ab" * 32)  # trained after the split was written again
    with pytest.raises(GslbenchError, match=r"runs of digits \(pixels, standard protocol\) were "
                       r"trained on 2 different feature files \(sha256 f0f0f0f0f0f0 in 21 run"):
        write_report([*runs, other], tmp_path / "report")
    result = invoke(tmp_path, "report")
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output
    assert lines[0].startswith("gslbench: error: runs of digits (pixels, standard protocol) were")
    assert f"sha256 abababababab in 1 run(s) ({other.run_id})" in lines[0]
    assert "--runs PATTERN or -d DATASET" in lines[0]
    assert not (tmp_path / "report").exists()  # nothing written
    assert invoke(tmp_path, "report", *(r.run_id for r in runs)).exit_code == 0  # selected apart


def test_runs_of_one_cell_that_differ_in_a_quantizer_setting_are_refused(tmp_path):
    runs = [make_run(tmp_path / "runs", RunConfig(method="two-step", bits=16, seed=seed,
                                                  warmup_epochs=warmup), 0.7)
            for seed, warmup in ((0, 5), (1, 3))]
    with pytest.raises(GslbenchError, match=r"runs of one table cell differ in more than the seed and draw "
                       r"\(digits \(pixels\), two-step, PQ 16 bits: warmup_epochs 3/5\); a report "
                       "never averages different experiments"):
        read_runs(runs)


def test_the_margin_option(tmp_path):
    make_runs(tmp_path / "runs")
    wide = invoke(tmp_path, "report", "--margin", "0.5", "--out", str(tmp_path / "wide"))
    assert wide.exit_code == 0 and "within ±0.5 mAP" in wide.output
    assert "| equivalent |" in wide.output  # within half a point of mAP: everything
    bad = invoke(tmp_path, "report", "--margin", "-1")
    assert bad.exit_code == 2 and bad.output.strip() == (
        "gslbench: error: --margin -1.0 must be a positive mAP difference of at most 0.5 "
        "(e.g. 0.005)")


def test_what_the_runs_cost_counts_the_epochs_reuse_saved(tmp_path):
    runs = make_runs(tmp_path / "runs")
    started = {"two-step": (0, 70.0), "gsl": (35, 25.0)}  # epochs trained, seconds
    for run in runs:
        record = json.loads(run.config.read_text())
        method = record["config"]["method"]
        if method in started:
            trained, seconds = started[method]
            record.update(epochs_trained=trained, train_seconds=seconds,
                          started_from={"checkpoint": "0123456789abcdef", "epoch": 40 - trained})
            run.config.write_text(json.dumps(record))
    cost = read_cost(runs)
    methods = [json.loads(r.config.read_text())["config"]["method"] for r in runs]
    assert cost.method.tolist() == methods and (cost.epochs_planned == 40).all()
    by_method = cost.groupby("method").agg(trained=("epochs_trained", "sum"), runs=("run", "size"),
                                           reused=("reused", "sum"), seconds=("train_s", "sum"))
    counts = pd.Series(methods).value_counts()
    for method, row in by_method.iterrows():
        trained, seconds = started.get(method, (40, 1.0))
        assert (row.runs, row.trained, row.seconds) == (counts[method], trained * counts[method],
                                                        seconds * counts[method])
        assert row.reused == (counts[method] if method in started else 0)
    planned = 40 * len(runs)
    trained = sum(started.get(m, (40, 1.0))[0] for m in methods)
    text = "\n".join(cost_section(cost))
    assert (f"trained {trained} of the {planned} epochs" in text
            and f"saved {planned - trained} ({(planned - trained) / planned:.0%})" in text)
    assert "| method | runs | from a checkpoint | epochs planned | epochs trained |" in text
    report = tmp_path / "report"
    write_report(runs, report)
    assert "## What the runs cost" in (report / "tables.md").read_text()


def test_the_cost_section_names_the_cpu_each_run_trained_on(tmp_path):
    """config.json's `cpu` per run, counted per CPU, named in describe_cpu's order (model, torch,
    faiss) whatever the order of config.json's keys; a run trained before it was recorded is
    "not recorded"."""
    runs = make_runs(tmp_path / "runs")
    cpus = [{"model": "AMD EPYC", "torch": "AVX512", "faiss": "OPTIMIZE AVX2 AVX512"},
            {"model": "Intel Xeon", "torch": "AVX2", "faiss": "OPTIMIZE AVX2"}, None]
    for index, run in enumerate(runs):
        record = json.loads(run.config.read_text())
        record.pop("cpu", None)
        if cpus[index % 3]:
            record["cpu"] = cpus[index % 3]
        run.config.write_text(json.dumps(record, sort_keys=True))  # as storage writes it
    counts = [len(runs[index::3]) for index in range(3)]
    text = "\n".join(cost_section(read_cost(runs)))
    assert "| CPU (model; torch kernels; faiss build) | runs |" in text
    assert f"| AMD EPYC; torch AVX512; faiss OPTIMIZE AVX2 AVX512 | {counts[0]} |" in text
    assert f"| Intel Xeon; torch AVX2; faiss OPTIMIZE AVX2 | {counts[1]} |" in text
    assert f"| not recorded | {counts[2]} |" in text


def test_a_report_on_several_grids_gives_the_cost_of_each(tmp_path):
    """Where the runs are cells of several grid files (a campaign's stages), the cost section
    has a row per grid file: its runs, epochs planned and trained, training time; a run in two
    grids counts in the first."""
    for run in make_runs(tmp_path / "runs"):  # every run: 40 planned, 30 trained, 2 s
        record = json.loads(run.config.read_text())
        record.update(epochs_trained=30, train_seconds=2.0)
        run.config.write_text(json.dumps(record))
    first, second = tmp_path / "first.toml", tmp_path / "second.toml"
    first.write_text('dataset = "digits"\nmethod = ["two-step", "qloss"]\nbits = 16\n'
                     'seed = [0, 1]\n', encoding="utf-8")
    second.write_text('dataset = "digits"\nmethod = "qloss"\nbits = [16, 32]\nseed = 0\n',
                      encoding="utf-8")
    result = invoke(tmp_path, "report", "--grid", str(first), "--grid", str(second), "--out",
                    str(tmp_path / "both"))
    assert result.exit_code == 0, result.output
    text = (tmp_path / "both" / "tables.md").read_text(encoding="utf-8")
    assert "| grid | runs | from a checkpoint | epochs planned | epochs trained | training time |" \
        in text
    assert f"| {first} | 4 | 0 | 160 | 120 | 0 min 08 s |" in text  # qloss 16 bits seed 0 here
    assert f"| {second} | 1 | 0 | 40 | 30 | 0 min 02 s |" in text  # only its 32-bit cell
    result = invoke(tmp_path, "report", "--grid", str(first), "--out", str(tmp_path / "one"))
    assert "| grid |" not in (tmp_path / "one" / "tables.md").read_text(encoding="utf-8")


def test_a_method_that_trains_nothing_plans_no_epoch(tmp_path):
    """pca's config keeps the default `epochs` (40), but it trains nothing: reuse saved none."""
    runs = [make_run(tmp_path / "runs", RunConfig(dataset="digits", method=method, seed=0), 0.5)
            for method in ("pca", "float")]
    record = json.loads(runs[0].config.read_text())
    assert record["config"]["epochs"] == 40
    runs[0].config.write_text(json.dumps({**record, "epochs_trained": 0}))
    cost = read_cost(runs)
    assert cost.epochs_planned.tolist() == [0, 40] and cost.epochs_trained.tolist() == [0, 40]
    assert "trained 40 of the 40 epochs" in "\n".join(cost_section(cost))
    runs[0].config.write_text(json.dumps({**record, "epochs_trained": 3}))
    with pytest.raises(GslbenchError, match=re.escape("'epochs_trained' is 3, expected an "
                                                      "integer in [0, 0]")):
        read_cost(runs)


@pytest.mark.parametrize("change, fragment", [
    ({"epochs_trained": 41}, "'epochs_trained' is 41"),
    ({"epochs_trained": -1}, "'epochs_trained' is -1"),
    ({"train_seconds": -1.0}, "'train_seconds' is -1.0"),
    ({"train_seconds": "1.0"}, "'train_seconds' is '1.0'"),
    ({"train_seconds": None}, "'train_seconds' is None"),
    ({"run": "0" * 12}, "not the config.json of run"),
])
def test_a_config_json_out_of_range_or_not_the_runs_is_refused(tmp_path, change, fragment):
    run = make_runs(tmp_path / "runs")[0]
    record = json.loads(run.config.read_text())
    record.update(change)
    run.config.write_text(json.dumps(record))
    with pytest.raises(GslbenchError, match=re.escape(fragment)) as caught:
        read_cost([run])
    assert str(run.config) in str(caught.value)


def test_a_zero_difference_taken_either_way_prints_as_plus_zero():
    from gslbench.report.summary import _signed
    assert [_signed(v) for v in (-0.0, 0.0, -1 * 0.0, 0.01234, -0.01234)] == [
        "+0.0000", "+0.0000", "+0.0000", "+0.0123", "-0.0123"]


def test_pca_shares_the_tables_of_a_grid_that_sets_training_settings(tmp_path):
    """pca trains nothing, so its config keeps the training settings at their defaults (40
    epochs); in a grid at 12 epochs its runs still share the trained methods' tables (the digits
    demo put them in an `epochs=40` table of their own)."""
    runs = [make_run(tmp_path / "runs", RunConfig(method=method, bits=16, seed=seed, epochs=12,
                                                  warmup_epochs=2, epochs_per_refit=2).resolved(),
                     value + seed / 100)
            for method, value in (("float", 0.9), ("two-step", 0.8), ("pca", 0.6))
            for seed in (0, 1)]
    assert {json.loads(run.config.read_text())["config"]["epochs"] for run in runs} == {12, 40}
    results, _ = write_report(runs, tmp_path / "report")
    assert set(results.settings) == {""}
    table = tables_of(results)[((*KEY[:9], "", "standard"), "map")]
    assert table.count.loc["pca"].tolist() == [2] and table.count.loc["two-step"].tolist() == [2]
