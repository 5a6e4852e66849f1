"""`gslbench report --grid GRID.toml --tuned TUNED.toml`: the grid's declared comparisons, and
the best other method chosen by the validation mAP of tuned.toml, never by test mAP; the
document names its declaration and margin, from which its CSV makes its tables again."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner
from runfakes import make_runs

from gslbench.cli import cli
from gslbench.declared import DEFAULT, Declared
from gslbench.errors import GslbenchError
from gslbench.report.answer import declared_in, declared_line
from gslbench.report.doc_csv import rebuild_tables
from gslbench.report.stats import MARGIN

GRID = """dataset = "digits"
method = ["two-step", "qloss", "gsl"]
bits = 16
seed = [0, 1, 2]

[comparisons]
pairs = [["gsl", "best-other"], ["gsl", "two-step"]]
"""
# two-step best on validation, qloss on test (0.80 against 0.70 at 16 bits in runfakes.MAPS)
TUNED = """trials = 1
seeds = [100, 101]

[shared]

[[choice]]
dataset = "digits"
bits = 16
method = "two-step"
validation_map = 0.75

[[choice]]
dataset = "digits"
bits = 16
method = "qloss"
qloss_lambda = 2.7
validation_map = 0.70

[[choice]]
dataset = "digits"
bits = 16
method = "gsl"
gsl_alpha = 1.0
gsl_k = 8
gsl_select = "aligned"
validation_map = 0.72
"""


@pytest.mark.slow
def test_report_tests_what_the_grid_declares_with_the_best_other_by_validation(tmp_path):
    make_runs(tmp_path / "runs")
    (tmp_path / "grid.toml").write_text(GRID, encoding="utf-8")
    (tmp_path / "tuned.toml").write_text(TUNED, encoding="utf-8")
    doc = tmp_path / "results.md"
    result = CliRunner().invoke(cli, [
        "--results-dir", str(tmp_path), "report", "--grid", str(tmp_path / "grid.toml"),
        "--tuned", str(tmp_path / "tuned.toml"), "--out", str(tmp_path / "report"),
        "--doc", str(doc), "--margin", "0.02"])
    assert result.exit_code == 0, result.output
    rows = pd.read_csv(doc.with_suffix(".csv"))
    assert rows.groupby("method").validation_map.first().to_dict() == {
        "gsl": 0.72, "qloss": 0.70, "two-step": 0.75}
    text = doc.read_text(encoding="utf-8")
    # the best other is two-step (validation), not qloss (test); it is also a declared pair,
    # so the family holds one comparison
    assert "(gsl − best-other, gsl − two-step, over every regime)" in text
    assert "one Holm family of 1 tests" in text
    assert "| 16: +0.1000 better (two-step) | 16: +0.1000 better | 3 (< 10) |" in text
    assert "λ=2.7 − " not in text and "− qloss" not in text  # qloss is compared with nothing
    # the document names its declaration and margin, so its CSV alone makes its tables again;
    # the default declaration, or another margin, makes other ones
    answer, tables = rebuild_tables(doc.with_suffix(".csv"))
    assert answer in text and tables in text and "±0.02 mAP" in tables
    assert rebuild_tables(doc.with_suffix(".csv"), declared=DEFAULT)[0] not in text
    assert rebuild_tables(doc.with_suffix(".csv"), margin=0.005)[1] not in text


def test_a_document_names_its_declaration_and_margin_in_a_line_read_back_as_they_were():
    declared = Declared.parse({"pairs": [["gsl α=0 k=8 select=aligned", "two-step"],
                                         ["gsl", "best-other"]],
                               "quantizer": ["pq", "opq"], "code_bits": 16}, "grid")
    line = declared_line(declared, 0.01)
    assert line.startswith("<!-- declared: {") and line.endswith("} -->")
    assert declared_in(f"# results\n\n{line}\n\ntext\n", "doc.md") == (declared, 0.01)
    assert declared_in("# results written before the line\n", "doc.md") == (DEFAULT, MARGIN)
    for bad, match in (("<!-- declared: {not json} -->", "is not the JSON"),
                       ('<!-- declared: {"comparisons": {}} -->', "is not the JSON"),
                       ('<!-- declared: {"comparisons": {"pairs": [["gsl", "gsl"]]}, '
                        '"margin": 0.01} -->', "compares nothing"),
                       ('<!-- declared: {"comparisons": {}, "margin": 0.9} -->',
                        r"margin 0.9 is not in \(0, 0.5\]"),
                       ('<!-- declared: {"comparisons": {}, "margin": NaN} -->', "margin nan")):
        with pytest.raises(GslbenchError, match=match) as caught:
            declared_in(f"{bad}\n", "doc.md")
        assert str(caught.value).startswith("doc.md: ")


@pytest.mark.slow
def test_a_declared_name_no_run_has_is_named_and_grids_must_agree(tmp_path):
    make_runs(tmp_path / "runs")
    one, two = tmp_path / "one.toml", tmp_path / "two.toml"
    cells = 'dataset = "digits"\nmethod = ["two-step", "gsl"]\nbits = 16\nseed = [0, 1, 2]\n'
    one.write_text(cells + '[comparisons]\npairs = [["gsl", "two-step"], ["gsl", "pcaa"]]\n',
                   encoding="utf-8")
    two.write_text(cells + '[comparisons]\npairs = [["gsl", "two-step"]]\n', encoding="utf-8")

    def report(*grids):
        args = [arg for grid in grids for arg in ("--grid", str(grid))]
        return CliRunner().invoke(cli, ["--results-dir", str(tmp_path), "report", *args,
                                        "--out", str(tmp_path / "report")])

    result = report(one)
    assert result.exit_code == 0, result.output
    assert "the declared comparisons name pcaa, which no run has" in result.output
    mixed = report(one, two)
    assert mixed.exit_code == 2 and len(mixed.output.strip().splitlines()) == 1
    assert "the grids declare different [comparisons]" in mixed.output
