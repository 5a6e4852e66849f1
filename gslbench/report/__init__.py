"""`gslbench report`: the evaluated runs as results.csv, paper tables (Markdown, CSV, LaTeX),
figures (PNG, SVG), one self-contained index.html, and optionally the results document with
GSL's wins, ties and losses against each baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd

from gslbench.errors import GslbenchError
from gslbench.layout import RunDir, list_runs, resolve_run, runs_dir
from gslbench.report.document import results_document
from gslbench.report.frames import read_runs
from gslbench.report.page import report_html
from gslbench.report.plots import write_figures
from gslbench.report.tables import KINDS, paper_tables, tables_frame, tables_latex, tables_markdown
from gslbench.storage import atomic_path, read_json


def select_runs(results_dir: Path, runs: Sequence[str] = (), patterns: Sequence[str] = (),
                datasets: Sequence[str] = ()) -> list[RunDir]:
    """The run directories to report on.

    runs: run ids or directories (default: every run under RESULTS/runs); patterns: keep the runs
    whose id matches any of these globs (`fnmatch`, case-sensitive); datasets: keep the runs of
    these data sets (read from config.json). An empty runs folder, or filters that leave nothing,
    are user errors.
    """
    if runs:
        run_dirs = [resolve_run(results_dir, run) for run in runs]
    else:
        root = runs_dir(results_dir)
        run_dirs = list_runs(results_dir)
        if not run_dirs:
            raise GslbenchError(f"no evaluated runs to report: {root} holds no runs "
                                "(run `gslbench bench`, or train, encode and evaluate first)")
    if patterns:
        matched = [p for p in run_dirs if any(fnmatchcase(p.run_id, pattern) for pattern in patterns)]
        if not matched:
            raise GslbenchError(f"no run id matches --runs {' '.join(patterns)} "
                                f"(among {len(run_dirs)} runs)")
        run_dirs = matched
    if datasets:
        found = {p: _run_dataset(p) for p in run_dirs}
        matched = [p for p, dataset in found.items() if dataset in datasets]
        if not matched:
            present = sorted({d for d in found.values() if d is not None})
            raise GslbenchError(f"no run of data set {', '.join(datasets)} "
                                f"(the runs hold: {', '.join(present) or 'none'})")
        run_dirs = matched
    return run_dirs


def _run_dataset(run: RunDir) -> str | None:
    return read_json(run.config)["config"]["dataset"] if run.config.is_file() else None


def write_report(runs: list[RunDir], out_dir: Path, doc: Path | None = None,
                 doc_intro: str = "") -> tuple[pd.DataFrame, str]:
    """Report on the runs that have metrics.json (the others are named and skipped).

    Writes into `out_dir`: results.csv (a row per run), tables.md, tables.tex, tables_map.csv,
    tables_gap.csv, the figures (`plots.write_figures`, PNG and SVG) and index.html; and the
    results document to `doc` if given. Returns the results and the tables' Markdown.
    """
    data = read_runs(runs)
    results = data.results
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = paper_tables(results)
    markdown = tables_markdown(tables)
    _write_csv(results, out_dir / "results.csv")
    _write_text(markdown, out_dir / "tables.md")
    _write_text(tables_latex(tables), out_dir / "tables.tex")
    for kind in KINDS:
        _write_csv(tables_frame(tables, kind), out_dir / f"tables_{kind}.csv")
    figures = write_figures(data, out_dir)
    _write_text(report_html(results, tables, figures), out_dir / "index.html")
    if doc is not None:
        _write_text(results_document(data, doc_intro), doc)
    return results, markdown


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
