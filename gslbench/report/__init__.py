"""`gslbench report`: the evaluated runs as results.csv, paper tables (Markdown, CSV, LaTeX),
figures (PNG, SVG), one self-contained index.html, and optionally the results document with its
per-seed rows as CSV. index.html and tables.md open with what the report found (the verdict block
per table set), the runs' settings and what made the report (`gslbench.report.summary`).

Every metrics.json is checked first (`check_metrics_record`: bound to its run, values of the
right types and ranges). The report folder is written as a unit: built under a temporary name
beside it and swapped in, so a killed or failing report leaves the previous one whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd

from gslbench.declared import BEST_OTHER, DEFAULT, Declared
from gslbench.errors import GslbenchError
from gslbench.evaluation.record import check_result
from gslbench.layout import RunDir, list_runs, resolve_run, runs_dir
from gslbench.report.cost import cost_section, read_cost
from gslbench.report.doc_csv import results_csv
from gslbench.report.document import found_section, results_document, settings_section
from gslbench.report.frames import Evaluated, read_runs
from gslbench.report.page import report_html
from gslbench.report.plots import method_colours, write_figures
from gslbench.report.search_plot import plot_recall_qps
from gslbench.report.stats import MARGIN, MAX_MARGIN, comparisons
from gslbench.report.summary import generator, made_text
from gslbench.report.tables import (
    KINDS,
    PaperTable,
    paper_tables,
    search_markdown,
    search_table,
    tables_frame,
    tables_latex,
    tables_markdown,
)
from gslbench.report.usage import usage_frame, usage_html, usage_markdown, usage_tables
from gslbench.storage import atomic_path, check_sha256, os_reason, read_json, write_text

INDEX = "index.html"
MISSING_NAMED = 10  # a grid's cells without a run named by the warning (a partial grid has many)
log = logging.getLogger(__name__)


def select_runs(results_dir: Path, runs: Sequence[str] = (), patterns: Sequence[str] = (),
                datasets: Sequence[str] = (), cells: Sequence[str] = ()) -> list[RunDir]:
    """The run directories to report on.

    runs: run ids or directories (default: every run under RESULTS/runs); patterns: keep the runs
    whose id matches any of these globs (`fnmatch`, case-sensitive); datasets: keep the runs of
    these data sets (read from config.json); cells: keep the runs of these run ids (a grid's
    cells; those with no run among the others are named in a warning). An empty runs folder, or
    filters that leave nothing, are user errors.
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
    if cells:
        run_dirs = _grid_runs(run_dirs, cells)
    return run_dirs


def _grid_runs(run_dirs: list[RunDir], cells: Sequence[str]) -> list[RunDir]:
    """The runs of `run_dirs` whose id is one of `cells` (a grid's run ids); the cells with no
    run among them are counted in a warning that names the first `MISSING_NAMED`, and none found
    is a user error."""
    wanted = set(cells)
    matched = [run for run in run_dirs if run.run_id in wanted]
    if not matched:
        raise GslbenchError(f"none of the grid's {len(wanted)} cells has a run among the "
                            f"{len(run_dirs)} selected (run `gslbench bench GRID.toml` first)")
    missing = sorted(wanted - {run.run_id for run in matched})
    if missing:
        more = len(missing) - MISSING_NAMED
        log.warning("%d of the grid's %d cells have no run: %s%s", len(missing), len(wanted),
                    ", ".join(missing[:MISSING_NAMED]), f" and {more} more" if more > 0 else "")
    return matched


def _run_dataset(run: RunDir) -> str | None:
    if not run.config.is_file():
        return None
    record = read_json(run.config)
    config = record.get("config") if isinstance(record, dict) else None
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if not isinstance(dataset, str):
        raise GslbenchError(f"{run.config}: not a gslbench run config (no config.dataset)")
    return dataset


def write_report(runs: list[RunDir], out_dir: Path, doc: Path | None = None,
                 doc_intro: str = "", margin: float = MARGIN, declared: Declared = DEFAULT,
                 validation: Mapping[str, float] | None = None,
                 grid_cells: int | None = None,
                 grids: Mapping[str, str] | None = None) -> tuple[pd.DataFrame, str]:
    """Report on the runs that have metrics.json (the others are named and skipped).

    Replaces `out_dir` as a whole with: results.csv (a row per run and evaluation), tables.md
    (what it found, the settings, the tables, the codebook usage), tables.tex, tables_map.csv,
    tables_gap.csv, a figure per table set (`plots.write_figures`), for runs that went through search-bench
    search.csv, search.md and search_recall_qps.{png,svg}, for quantized runs whose codes' usage
    was measured usage.csv (`report.usage`), and index.html; `out_dir` must be new,
    empty or an earlier report (it holds index.html). Writes the results document to `doc` if
    given, and its per-seed rows beside it (`doc` with the suffix .csv). margin: the equivalence
    margin of the verdicts (mAP); declared: the comparisons to test (the grid's, `--grid`);
    validation: run id -> the validation mAP of the tuned choice the run is (`--tuned`), which
    picks the best other method (a `validation_map` column of results.csv); grid_cells: the
    number of cells of the grids reported on (`--grid`), so that every output says whether each
    has a run (`summary.made_text`); grids: run id -> the grid file it is a cell of, for the cost
    per grid (a campaign's stages). Returns the results and tables.md's Markdown.
    """
    if not 0 < margin <= MAX_MARGIN:  # NaN too
        raise GslbenchError(f"--margin {margin} must be a positive mAP difference of at most "
                            f"{MAX_MARGIN} (e.g. 0.005)")
    _check_metrics(runs)
    data = read_runs(runs)
    if validation:
        data = dataclasses.replace(data, results=data.results.assign(
            validation_map=data.results.run.map(dict(validation)).astype(float)))
    results = data.results
    _check_declared_names(results, declared)
    tables = paper_tables(results)
    made = made_text(generator(), data, grid_cells)
    compared = comparisons(results, declared, margin=margin)
    cost = read_cost((run for run in runs if run.evaluations()), grids)
    usage = usage_tables(results)
    markdown = report_markdown(data, tables, compared, made, margin, cost) + usage_markdown(usage)
    _check_out_dir(out_dir)
    with _staging(out_dir) as staging:
        _write_csv(results, staging / "results.csv")
        write_text(staging / "tables.md", markdown)
        write_text(staging / "tables.tex", tables_latex(tables))
        for kind in KINDS:
            _write_csv(tables_frame(tables, kind), staging / f"tables_{kind}.csv")
        figures = write_figures(data, staging)
        usage_section = ""
        if usage:  # some quantized run's codes were measured (`evaluation.usage`)
            _write_csv(usage_frame(usage), staging / "usage.csv")
            usage_section = usage_html(usage)
        search = None
        speed = search_table(data.searches, results)
        if not speed.empty:  # some run went through search-bench
            _write_csv(speed, staging / "search.csv")
            write_text(staging / "search.md", search_markdown(speed))
            colours = method_colours(results.variant)
            search = (speed, plot_recall_qps(speed, colours, staging / "search_recall_qps"))
        write_text(staging / INDEX, report_html(data, tables, figures, compared, made, margin,
                                                search, usage_section))
        _swap_in(staging, out_dir)
    if doc is not None:
        csv = doc.with_suffix(".csv")
        _write_csv(results_csv(results), csv)
        write_text(doc, results_document(data, doc_intro, margin, csv.name, cost, declared,
                                         made))
    return results, markdown


def report_markdown(data: Evaluated, tables: list[PaperTable], compared: pd.DataFrame,
                    made: str, margin: float = MARGIN,
                    cost: pd.DataFrame | None = None) -> str:
    """tables.md: the title, what made the report (`made`: `summary.made_text`), what it found (from
    `compared`, `stats.comparisons`), the settings, what the runs cost
    (`cost.read_cost`'s frame), the tables."""
    return "\n".join([
        "# gslbench report", "",
        made, "",
        *found_section(tables, compared, margin), *settings_section(data),
        *(cost_section(cost) if cost is not None else []), tables_markdown(tables)])


def _check_declared_names(results: pd.DataFrame, declared: Declared) -> None:
    """A grid's declared comparison that names a method or variant no run has (a typo, or a
    method left out) is named in a warning; its comparisons show `—`."""
    if declared == DEFAULT:
        return
    names = {name for pair in declared.pairs for name in pair} - {BEST_OTHER}
    unknown = sorted(names - set(results.method) - set(results.variant))
    if unknown:
        log.warning("the declared comparisons name %s, which no run has: those comparisons "
                    "are not made", ", ".join(unknown))


def _check_metrics(runs: list[RunDir]) -> None:
    """Each metrics file (every evaluation mode and codebook fit) and search-bench file must be a
    valid record bound to its run and made from the codes file of its fit as it is now (its
    sha256); an evaluated run's train_log.csv must be the one its config.json records."""
    for run in runs:
        for path in [*run.evaluations(), *run.search_benches()]:
            check_result(path, run)
        if run.evaluations() and run.train_log.is_file():
            check_sha256(run.train_log, read_json(run.config).get("train_log_sha256"), run.config)


def _check_out_dir(out_dir: Path) -> None:
    """A report folder may be new, empty or an earlier report (it holds index.html): it is
    replaced as a whole, so a folder of other files is refused."""
    if out_dir.exists() and not out_dir.is_dir():
        raise GslbenchError(f"{out_dir}: exists and is not a folder; choose another report folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / INDEX).is_file():
        raise GslbenchError(f"{out_dir}: holds files but no {INDEX}, so it is not a gslbench report "
                            "folder (a report replaces its folder); choose a new or empty folder")


@contextlib.contextmanager
def _staging(out_dir: Path) -> Iterator[Path]:
    """A new temporary folder beside `out_dir` (`.NAME.*.tmp`, like those killed reports left,
    which are removed first), itself removed after the block unless `_swap_in` moved it. The
    folder holding `out_dir` is locked meanwhile (`_lock_folder`): a report written there at the
    same time waits, and never takes the other's staging folder for a leftover."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GslbenchError(f"{out_dir}: cannot write the report there ({os_reason(exc)})") from None
    with _lock_folder(out_dir.parent), _staged(out_dir) as staging:
        yield staging


@contextlib.contextmanager
def _lock_folder(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on `folder` itself (flock on its descriptor: no lock file to leave
    behind; the OS releases it when the process ends, even killed), waiting while another
    report holds it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise GslbenchError(f"{folder}: cannot lock it for the report ({os_reason(exc)})") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("another report is being written in %s: waiting for it", folder)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _staged(out_dir: Path) -> Iterator[Path]:
    """`_staging` once the folder is locked."""
    try:
        for leftover in out_dir.parent.glob(f".{out_dir.name}.*.tmp"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = _temporary_dir(out_dir)
    except OSError as exc:
        raise GslbenchError(f"{out_dir}: cannot write the report there ({os_reason(exc)})") from None
    try:
        yield staging
    except GslbenchError as exc:  # name the report's file, not its temporary copy
        raise GslbenchError(str(exc).replace(str(staging), str(out_dir))) from None
    except OSError as exc:
        raise GslbenchError(f"{out_dir}: cannot write the report ({os_reason(exc)})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _temporary_dir(out_dir: Path) -> Path:
    return Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))


def _swap_in(staging: Path, out_dir: Path) -> None:
    """Replace `out_dir` by the complete report in `staging`: the old folder is renamed aside,
    the new one into place (the old one back if that fails), then the old one removed. Killed
    between the two renames, the folder is missing (never mixed) until the next report."""
    try:
        staging.chmod(0o755)  # mkdtemp creates 0700
        retired = _temporary_dir(out_dir) / out_dir.name
        if out_dir.exists():
            out_dir.rename(retired)
        try:
            staging.rename(out_dir)
        except OSError:
            if retired.exists():
                retired.rename(out_dir)
            raise
    except OSError as exc:
        raise GslbenchError(f"{out_dir}: cannot replace the report ({os_reason(exc)})") from None
    shutil.rmtree(retired.parent, ignore_errors=True)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
