"""Grids: bench (a resumable grid of runs) and tune (knobs chosen on the validation split)."""

from __future__ import annotations

import signal
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click
from click.core import ParameterSource

from gslbench import bench as bench_module
from gslbench import curves, layout
from gslbench.bench import estimate
from gslbench.bench.executors import EXECUTORS, ExecutorConfig, check_executor_options
from gslbench.bench.grid import DEFAULT_AXES, Cells, Grid, read_grid_file
from gslbench.bench.progress import describe, format_duration
from gslbench.cli.base import (
    cli,
    config_options,
    device_option,
    reuse_option,
    show_progress,
    split,
    tensorboard_option,
)
from gslbench.cli.outputs import echo_report
from gslbench.errors import GslbenchError
from gslbench.layout import CODEBOOKS
from gslbench.targets import check_tune_outputs

# bench's axis flags and the RunConfig fields they set
AXIS_FLAGS = {"dataset_names": "dataset", "methods": "method", "quantizers": "quantizer",
              "bits": "bits", "seeds": "seed"}


def _executor_options(command: Callable) -> Callable:
    """The options of where cells run (bench and tune): --executor, -j, --cpus-per-cell,
    --address, --device and --dry-run."""
    options = [
        click.option("--executor", type=click.Choice(EXECUTORS), default="local",
                     show_default=True,
                     help="local: processes on this machine; ray: tasks on a Ray cluster."),
        click.option("-j", "--jobs", type=click.IntRange(min=1),
                     help="Cells at once: local worker processes (default 1, in this process); "
                          "with ray and no --address, the local Ray instance gets jobs x "
                          "cpus-per-cell CPUs."),
        click.option("--cpus-per-cell", type=click.IntRange(min=1),
                     help="torch/faiss threads of a cell, and its Ray CPU request "
                          "(default: CPUs // jobs for local, 1 for ray)."),
        click.option("--address", help="Ray cluster to use (e.g. auto or HOST:6379; default: "
                                        "start a local Ray instance)."),
        click.option("--dry-run", is_flag=True,
                     help="List the cells and which are done; run nothing."),
        device_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("grid_file", metavar="[GRID.toml]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("-d", "--datasets", "dataset_names", default=",".join(DEFAULT_AXES["dataset"]),
              show_default=True, callback=split(str), help="Comma-separated data sets.")
@click.option("--methods", default=",".join(DEFAULT_AXES["method"]), show_default=True,
              callback=split(str, "method"),
              help="Comma-separated training methods (built-in or plugin; float is the ceiling).")
@click.option("--quantizers", default=",".join(DEFAULT_AXES["quantizer"]), show_default=True,
              callback=split(str, "quantizer"),
              help="Comma-separated quantizers (pq, opq, rq, lsq, plugins).")
@click.option("--bits", default=",".join(map(str, DEFAULT_AXES["bits"])), show_default=True,
              callback=split(int, "bits"), help="Comma-separated code lengths in bits.")
@click.option("--seeds", default=",".join(map(str, DEFAULT_AXES["seed"])), show_default=True,
              callback=split(int, "seed"),
              help="Comma-separated seeds: each cell is trained once per seed.")
@click.option("--codebooks", default=",".join(CODEBOOKS), show_default=True, callback=split(str),
              help="Comma-separated codebook fits each quantized cell is encoded and evaluated "
                   "with (float cells: train only).")
@config_options
@click.option("--tuned", type=click.Path(path_type=Path),
              help="A choice file of `gslbench tune`: its knob values replace the grid's for "
                   "each tuned method and cell.")
@_executor_options
@reuse_option
@tensorboard_option
@click.pass_context
def bench(ctx: click.Context, grid_file: Path | None, force: bool, tuned: Path | None,
          executor: str, jobs: int | None, cpus_per_cell: int | None, address: str | None,
          dry_run: bool, device: str, reuse: bool, tensorboard: Path | None,
          **options: Any) -> None:
    """Run a grid of runs (train, encode, evaluate), skipping finished ones, then report.

    \b
    The grid is GRID.toml (keys: RunConfig fields; a list is an axis) or the flags;
    flags given on the command line override the file's keys. A killed bench resumes.
    At the end it writes the report as `gslbench report` does and prints what it found
    (the verdict blocks of tables.md) and index.html's path; with -q the path alone.
    Example: gslbench bench benchmarks/paper.toml --dry-run
    """
    grid = _bench_grid(ctx, grid_file, options)
    if tuned is not None:
        from gslbench.bench.tuned import Tuned

        grid = Tuned.read(tuned).cells(grid, ctx.obj["data_dir"])
    results_dir = ctx.obj["results_dir"]
    if dry_run:  # before the executor, whose device check loads torch
        check_executor_options(executor, jobs, cpus_per_cell, address)
        _echo_cells(grid, ctx.obj["data_dir"], results_dir, jobs or 1)
        return
    if tensorboard is not None:
        curves.check_writer()
    executor_config = ExecutorConfig(executor, jobs, cpus_per_cell, address, device)
    result = bench_module.run_grid(grid, ctx.obj["data_dir"], results_dir, executor_config,
                                   force=force, show_progress=show_progress(ctx), reuse=reuse)
    for run in result.run_dirs if tensorboard is not None else ():
        curves.write_curves(run, tensorboard)
    if result.run_dirs:
        from gslbench import report as report_module  # pandas, matplotlib: loaded to report

        out = layout.report_dir(results_dir)
        _, markdown = report_module.write_report(list(result.run_dirs), out,
                                                 grid_cells=len(result.run_dirs)
                                                 + len(result.failed))
        echo_report(ctx, markdown, out)
    if result.failed:
        raise GslbenchError(f"{len(result.failed)} cell(s) failed (listed above); finished cells "
                            "are kept: run the same bench again to retry the others")


def _bench_grid(ctx: click.Context, grid_file: Path | None, options: dict) -> Grid:
    """The grid of the flags, or GRID.toml's keys over the flags' defaults and under the flags
    given on the command line. A setting flag left at its default is left out (the grid takes
    RunConfig's default, the same), so the grid sets only what the file or the command line
    sets: a knob it sets makes a control of `bench --tuned` (`bench.tuned.Tuned.cells`)."""
    settings = {AXIS_FLAGS.get(name, name): value for name, value in options.items()
                if name in AXIS_FLAGS
                or ctx.get_parameter_source(name) is not ParameterSource.DEFAULT}
    if grid_file is None:
        return Grid.from_mapping(settings)
    given = {AXIS_FLAGS.get(name, name): value for name, value in options.items()
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    return Grid.from_mapping({**settings, **read_grid_file(grid_file)}, source=str(grid_file),
                             overrides=given)


@cli.command()
@click.argument("grid_file", metavar="GRID.toml", type=click.Path(path_type=Path))
@click.option("--trials", type=click.IntRange(min=1), default=8, show_default=True,
              help="Trials per cell and method, the same for every method with knobs (the "
                   "start knobs the grid pins first, then draws from its knobs' search "
                   "spaces); each method is chosen from the first TRIALS of its study.")
@click.option("--storage", help="Optuna storage URL holding the studies, shared by every tune "
                                "process on it (default: sqlite:///RESULTS/tuning/studies.db; "
                                "not in memory).")
@click.option("--prune/--no-prune", default=True, show_default=True,
              help="Stop a trial that a third of the trials beat on its mean validation mAP so "
                   "far, from its second codebook refit on (every trial alike, trial 0 "
                   "included; off below 6 trials).")
@click.option("--no-reuse", "no_reuse", is_flag=True,
              help="Train every run from scratch, never from a stored checkpoint.")
@click.option("--out", type=click.Path(path_type=Path),
              help="The choices, for bench --tuned (default: RESULTS/tuning/tuned.toml); every "
                   "trial goes beside it (tuned.trials.csv).")
@click.option("--doc", type=click.Path(path_type=Path),
              help="The document of every trial (default: RESULTS/tuning/tuning.md).")
@click.option("--doc-intro", type=click.File("r"), help="Markdown to put at the top of --doc.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Trials at once: this process and JOBS - 1 helper processes on the storage, "
                   "each with CPUs // JOBS torch/faiss threads.")
@click.option("--force", is_flag=True, help="Replace an existing --out or --doc that tune did "
                                            "not write.")
@device_option
@click.pass_context
def tune(ctx: click.Context, grid_file: Path, trials: int, storage: str | None, prune: bool,
         no_reuse: bool, out: Path | None, doc: Path | None, doc_intro: TextIO | None,
         jobs: int, device: str, force: bool) -> None:
    """Choose each method's knobs on the validation split: an Optuna search, the same number of
    trials for every method.

    \b
    For every (data set, protocol, quantizer, bits, sub-bits) cell of GRID.toml and every method:
    TRIALS settings of its knobs (the first: its [start.METHOD] table in GRID.toml, else its
    defaults), each trained at every seed of the grid (at least 2) on the training set the test
    runs train on, scored by the mAP of the validation queries against the validation database
    (items no run trains on). Runs go to
    RESULTS/tuning/runs, studies to --storage; several tune processes on one storage share the
    trials, and a killed tune resumes (an interrupted trial runs again with its knobs). The
    choices go to --out, every trial beside it as CSV and to --doc.
    Example: gslbench tune benchmarks/tuning_core.toml --trials 8 -j 2 && gslbench bench
    benchmarks/results_core.toml --tuned results/tuning/tuned.toml
    """
    from gslbench.bench import tune as tune_module  # pandas: loaded to tune
    from gslbench.bench.tuning_plan import tuning_grid

    grid, start = tuning_grid(grid_file)
    results_dir = ctx.obj["results_dir"]
    out = out or layout.tuned_path(results_dir)
    doc = doc or layout.tuning_table_path(results_dir)
    check_tune_outputs(out, doc, results_dir, ctx.obj["data_dir"], storage, force)
    try:
        chosen = tune_module.tune_and_write(grid, ctx.obj["data_dir"], results_dir, trials, out,
                                            doc, doc_intro.read() if doc_intro else "",
                                            storage=storage, prune=prune, reuse=not no_reuse,
                                            device=device, jobs=jobs, start=start,
                                            show_progress=show_progress(ctx))
    except tune_module.Interrupted as exc:  # SIGTERM or Ctrl-C, seen between steps
        click.echo("gslbench: aborted" if exc.signum == signal.SIGINT else "gslbench: terminated",
                   err=True)
        sys.exit(128 + exc.signum)
    click.echo(f"{len(chosen)} choices written to {out}, every trial to "
               f"{layout.trials_csv_path(out)} and {doc}")


def _echo_cells(grid: Grid | Cells, data_dir: Path, results_dir: Path, jobs: int) -> None:
    """Print each cell's run id, state, description and why its files do not count (stale or
    damaged), then the count per state and what the cells left will cost (`bench.estimate`)."""
    cells = bench_module.grid_status(grid, data_dir, results_dir)
    fields = tuple(grid.axes())
    click.echo(f"{'RUN':<12}  {'STATE':<7}  CELL")
    for config, cell in cells:
        reason = f"  [does not count: {cell.reason}]" if cell.reason else ""
        click.echo(f"{config.run_id:<12}  {cell.state:<7}  "
                   f"{describe(config, fields)}{reason}")
    counts = Counter(cell.state for _, cell in cells)
    rerun = sum(bool(cell.reason) for _, cell in cells)
    click.echo(f"{len(cells)} cells: {counts['done']} done, {counts['partial']} partial "
               f"(trained, not evaluated), {counts['todo']} todo"
               + (f"; {rerun} stale or damaged, to run again" if rerun else ""))
    left = [config for config, cell in cells if cell.state != "done"]
    if left:
        click.echo(_estimate_line(estimate.estimate(left, estimate.timings([results_dir])), jobs))


def _estimate_line(cost: estimate.Estimate, jobs: int) -> str:
    """bench --dry-run's last line: the cells left's time, and how it was found."""
    if not cost.estimated:
        return (f"estimate: none ({cost.timed_runs} finished runs, none of the same data set, "
                "representation and fine-tuning to time the cells left from)")
    exact, same_split, other_split, quantizer, dataset = cost.per_level
    method = same_split + other_split
    missing = f"; {cost.unestimated} cells not estimated (no run like them)" \
        if cost.unestimated else ""
    return (f"estimate: {format_duration(cost.seconds)} of cell time for {cost.estimated} of the "
            f"{cost.cells} cells left, about {format_duration(cost.wall_seconds(jobs))} at -j "
            f"{jobs} (the median of {cost.timed_runs} finished runs: {exact} cells timed by "
            f"their own settings at other seeds, {method} by their method, {quantizer} by their "
            f"quantizer and code length, {dataset} by their data set only; partial cells counted "
            f"in full){missing}")


