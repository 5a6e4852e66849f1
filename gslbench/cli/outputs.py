"""What the codes and runs give: search-bench, export, report."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from gslbench import layout
from gslbench.archive import archive_runs
from gslbench.cli.base import (
    cli,
    codebooks_option,
    metric_option,
    split,
)
from gslbench.declared import DEFAULT, Declared, validation_maps
from gslbench.errors import GslbenchError
from gslbench.evaluation.speed import RECALL_AT, REPEATS, SINGLE_QUERIES, search_bench_run
from gslbench.export import export_run
from gslbench.targets import check_report_doc

if TYPE_CHECKING:
    from gslbench.config import RunConfig

log = logging.getLogger(__name__)


@cli.command("search-bench")
@click.argument("runs", nargs=-1, required=True)
@metric_option
@click.option("--k", default=100, show_default=True, help="Neighbours each search returns.")
@click.option("--recall-at", default=",".join(map(str, RECALL_AT)), show_default=True,
              callback=split(int), help="Comma-separated R of recall@R of the true neighbours.")
@click.option("--single-queries", default=SINGLE_QUERIES, show_default=True,
              help="Queries searched one at a time for the batch-1 QPS.")
@click.option("--repeats", default=REPEATS, show_default=True, help="Timings; the best is kept.")
@click.option("--threads", type=click.IntRange(min=1), help="faiss threads (default: all).")
@click.option("--force", is_flag=True, help="Measure again even if the result file exists.")
@codebooks_option
@click.pass_context
def search_bench(ctx: click.Context, runs: tuple[str, ...], force: bool,
                 **options: Any) -> None:
    """Time each run's codes as a faiss index against the exact float search: prints QPS,
    bytes per vector and recall@R.

    Measures QPS at batch 1 and batched, bytes per vector and recall@R of the true neighbours;
    writes RUN/search.json and prints each run's headline numbers, then the file's path.

    Example: gslbench search-bench 0123456789ab 3f2e1d0c9b8a --threads 1
    """
    for run in runs:
        path = search_bench_run(run, ctx.obj["results_dir"], force=force, **options)
        click.echo(search_headline(json.loads(path.read_text())))
        click.echo(path)


def search_headline(record: dict[str, Any]) -> str:
    """One line of a search.json record: `RUN LABEL: codes 8 B/vector, 51234 QPS batched, 2301
    QPS at batch 1, recall@10 0.612 (exact float: 256 B/vector, ...)`."""
    def numbers(measured: dict[str, Any]) -> str:
        recalls = [f"recall@{r} {value:.3f}" for r, value in measured["recall_at"].items()]
        recalls += [f"1-recall@{r} of the data set's neighbours {value:.3f}"  # the track's
                    for r, value in (measured.get("one_recall_at") or {}).items() if r == "10"]
        return ", ".join([f"{measured['bytes_per_vector']} B/vector",
                          f"{measured['qps_batched']:.0f} QPS batched",
                          f"{measured['qps_batch1']:.0f} QPS at batch 1", *recalls])
    indexes = record["indexes"]
    exact = f" (exact float: {numbers(indexes['float'])})" if "float" in indexes else ""
    return f"{record['run']} {record['label']}: codes {numbers(indexes['codes'])}{exact}"


@cli.command()
@click.argument("run")
@click.option("--faiss", "faiss_path", type=click.Path(path_type=Path),
              help="Write the database codes as a faiss index here.")
@click.option("--ann-benchmarks", "ann_path", type=click.Path(path_type=Path),
              help="Write the representations and true neighbours as ann-benchmarks HDF5 here.")
@metric_option
@codebooks_option
@click.option("--force", is_flag=True, help="Replace an existing file (never one of a run).")
@click.pass_context
def export(ctx: click.Context, run: str, faiss_path: Path | None, ann_path: Path | None,
           metric: str, codebooks: str, force: bool) -> None:
    """Export a run's codes as a faiss index or its representations as ann-benchmarks HDF5.

    Example: gslbench export 0123456789ab --faiss run.index --ann-benchmarks run.hdf5
    """
    if faiss_path is None and ann_path is None:
        raise click.UsageError("give --faiss FILE.index, --ann-benchmarks FILE.hdf5 or both")
    for path in export_run(run, ctx.obj["results_dir"], faiss_path, ann_path, metric, codebooks,
                           force):
        click.echo(path)


@cli.command()
@click.argument("runs", nargs=-1)
@click.option("--runs", "patterns", multiple=True, metavar="PATTERN",
              help="Only runs whose id matches this glob, e.g. 'a1*' (repeatable).")
@click.option("-d", "--dataset", "dataset_names", multiple=True, metavar="NAME",
              help="Only runs of this data set (repeatable or comma-separated).")
@click.option("--grid", "grid_files", multiple=True, metavar="GRID.toml",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Only the runs of this grid's cells, as `bench GRID.toml` makes them "
                   "(repeatable; cells without a run are counted on stderr); the report tests "
                   "the comparisons its [comparisons] table declares.")
@click.option("--tuned", type=click.Path(dir_okay=False, path_type=Path),
              help="With --grid: the choice file the grid was benched with (`bench --tuned`); "
                   "its validation mAPs choose the best other method.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (default: RESULTS/report), replaced as a whole.")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results document (GSL's wins, ties, losses) here.")
@click.option("--doc-intro", type=click.File("r"),
              help="Markdown to put at the top of the results document (protocol, tuning).")
@click.option("--margin", type=float, default=0.005, show_default=True,
              help="Equivalence margin of the verdicts (mAP, in (0, 0.5]): a difference shown "
                   "within ±margin by two one-sided tests is 'equivalent'.")
@click.option("--force", is_flag=True,
              help="Replace an existing --doc (or its CSV) that report did not write.")
@click.pass_context
def report(ctx: click.Context, runs: tuple[str, ...], patterns: tuple[str, ...],
           dataset_names: tuple[str, ...], grid_files: tuple[Path, ...], tuned: Path | None,
           out: Path | None, doc: Path | None, doc_intro: TextIO | None, margin: float,
           force: bool) -> None:
    """Tabulate and plot evaluated runs into a report folder with a self-contained index.html.

    Writes results.csv, tables (Markdown, CSV, LaTeX), figures (PNG, SVG) and index.html, then
    prints what it found (the verdict blocks of tables.md) and index.html's path; with -q the
    path alone.

    Example: gslbench report --dataset digits --runs 'a1*' --doc docs/results.md
    """
    from gslbench import report as report_module  # pandas, matplotlib: loaded to report

    results_dir = ctx.obj["results_dir"]
    if doc is not None:
        check_report_doc(doc, results_dir, ctx.obj["data_dir"], force)
    names = tuple(name for value in dataset_names for name in value.split(",") if name)
    if tuned is not None and not grid_files:
        raise click.UsageError("--tuned applies to the cells of a --grid: give one")
    configs, declared, validation, grids = _grid_cells(grid_files, tuned, ctx.obj["data_dir"])
    run_dirs = report_module.select_runs(results_dir, runs, patterns, names,
                                         [config.run_id for config in configs])
    intro = doc_intro.read() if doc_intro else ""
    out = out or layout.report_dir(results_dir)
    grid_cells = len({config.run_id for config in configs}) if grid_files else None
    _, markdown = report_module.write_report(run_dirs, out, doc, intro, margin, declared,
                                             validation, grid_cells, grids)
    echo_report(ctx, markdown, out)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.pass_context
def archive(ctx: click.Context, out: Path) -> None:
    """Copy the records of every finished run under RESULTS/runs (config, training log, metrics,
    search-bench) into OUT/runs, without its model, quantizer and codes, whose sha256 each
    RUN/archived.json records; runs already in OUT are kept, so OUT grows run after run.

    Copied back under a results folder (cp -rn OUT/runs RESULTS/), an archived run counts as done
    for bench and report and tune read it as a finished run: a grid's results move to another
    machine, or into a repository, at kilobytes a run. Prints each run left out (unfinished, or
    not checking out) and why, then how many runs were archived and left out.

    Example: gslbench archive benchmarks/campaign2/archive
    """
    archived, left_out = archive_runs(ctx.obj["results_dir"], out)
    for run_id, reason in left_out:
        log.info("left out %s: %s", run_id, reason)
    click.echo(f"archived {len(archived)} runs into {layout.runs_dir(out)}; "
               f"{len(left_out)} unfinished left out")


def echo_report(ctx: click.Context, markdown: str, out: Path) -> None:
    """What report and bench print once the report folder `out` is written: the verdict blocks
    of its tables.md `markdown` (`found_text`) and its index.html's path; with -q the path alone."""
    if ctx.obj["quiet"]:
        click.echo(out / "index.html")
    else:
        click.echo(found_text(markdown))
        click.echo(f"report written to {out / 'index.html'}")


def found_text(markdown: str) -> str:
    """The `## What it found` section of a report's tables.md (its verdict blocks), up to the
    next section; "" when it has none."""
    from gslbench.report.document import FOUND_TITLE

    lines = markdown.splitlines()
    if f"## {FOUND_TITLE}" not in lines:
        return ""
    start = lines.index(f"## {FOUND_TITLE}")
    end = next((index for index in range(start + 1, len(lines)) if lines[index].startswith("## ")),
               len(lines))
    return "\n".join(lines[start:end]).strip() + "\n"


def _grid_cells(grid_files: tuple[Path, ...], tuned: Path | None, data_dir: Path
                ) -> tuple[list[RunConfig], Declared, dict[str, float], dict[str, str]]:
    """The run configs `bench GRID_FILE [--tuned TUNED]` runs for each grid file, the
    comparisons the grids declare (`gslbench.declared`: the same in every grid file; the
    default without --grid), with --tuned each run's validation mAP, and the first grid file
    each run is a cell of (run id -> its path), for the cost per grid."""
    from gslbench.bench.grid import Grid, read_grid_file
    from gslbench.bench.tuned import Tuned

    configs, declarations, grids = [], set(), {}
    for path in grid_files:
        grid = Grid.from_mapping(read_grid_file(path), source=str(path))
        cells = (Tuned.read(tuned).cells(grid, data_dir) if tuned is not None
                 else grid).cells(data_dir)
        configs += cells
        for config in cells:
            grids.setdefault(config.run_id, str(path))
        declarations.add(grid.comparisons)
    if len(declarations) > 1:
        raise GslbenchError(f"{', '.join(map(str, grid_files))}: the grids declare different "
                            "[comparisons]; report them apart, or declare the same")
    declared = next(iter(declarations), DEFAULT)
    if tuned is None:
        return configs, declared, {}, grids
    chosen = Tuned.read(tuned)
    return configs, declared, validation_maps(chosen.choices, chosen.shared, configs), grids
