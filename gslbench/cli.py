"""The `gslbench` command line: thin click commands over the library's steps."""

from __future__ import annotations

import logging
import signal
import sys
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import click
from click.core import ParameterSource

from gslbench import bench as bench_module
from gslbench import data, layout
from gslbench import report as report_module
from gslbench.bench import tune as tune_module
from gslbench.bench.executors import EXECUTORS, ExecutorConfig
from gslbench.bench.grid import DEFAULT_AXES, Cells, Grid, read_grid_file
from gslbench.bench.tune import Tuned
from gslbench.config import FEATURE_SETTINGS, FIELDS, RunConfig, check_feature_options
from gslbench.data.features import build_features
from gslbench.devices import DEVICES, resolve_device
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.speed import RECALL_AT, REPEATS, SINGLE_QUERIES, search_bench_run
from gslbench.evaluation.step import evaluate_run
from gslbench.export import export_ann_benchmarks, export_faiss
from gslbench.quantizers.search import METRICS, SEARCHES
from gslbench.settings import Setting
from gslbench.storage import os_reason
from gslbench.train import train_run


class Gslbench(click.Group):
    """A click group that turns user errors and OS errors (a read-only folder, a full disk) into
    one line, `gslbench: error: ...`, and exit 2; with -v the traceback comes first."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        verbose = any(flag in (kwargs.get("args") or sys.argv[1:]) for flag in ("-v", "--verbose"))
        try:
            return super().main(*args, **kwargs)
        except (GslbenchError, click.ClickException, OSError) as exc:
            if verbose:
                traceback.print_exc()
            click.echo(f"gslbench: error: {error_line(exc)}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("gslbench: aborted", err=True)
            sys.exit(130)


def error_line(error: Exception) -> str:
    """A user or OS error as one line; an OS error names its file."""
    if isinstance(error, click.ClickException):
        message = error.format_message()
    elif isinstance(error, OSError):
        message = os_reason(error)
        message = f"{error.filename}: {message}" if error.filename else message
    else:
        message = str(error)
    return " ".join(message.split()) or type(error).__name__


def _show_progress(ctx: click.Context) -> bool:
    return not ctx.obj["quiet"] and sys.stderr.isatty()


@click.group(cls=Gslbench, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), envvar="GSLBENCH_DATA",
              default=Path("datasets"), show_default=True, help="Root of the data sets.")
@click.option("--results-dir", type=click.Path(file_okay=False, path_type=Path),
              envvar="GSLBENCH_RESULTS", default=Path("results"), show_default=True,
              help="Root of runs and reports.")
@click.option("-v", "--verbose", is_flag=True, help="Log each step; show tracebacks.")
@click.option("-q", "--quiet", is_flag=True, help="Only errors and final results.")
@click.pass_context
def cli(ctx: click.Context, data_dir: Path, results_dir: Path, verbose: bool, quiet: bool) -> None:
    """Benchmark the Gradient Snapping Layer against quantization-loss training.

    \b
    Pipeline: download -> features -> train -> encode -> evaluate -> report; bench runs a grid.
    Example: gslbench bench
    """
    if ctx.invoked_subcommand is None:  # `gslbench` alone: the help
        click.echo(ctx.get_help())
        ctx.exit(0)
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(level=level, format="gslbench: %(message)s", stream=sys.stderr, force=True)
    ctx.obj = {"data_dir": data_dir, "results_dir": results_dir, "quiet": quiet}


@cli.command()
@click.argument("dataset")
@click.option("--url", help="Fetch from this URL instead of the registered source.")
@click.option("--from", "from_dir", type=click.Path(path_type=Path),
              help="Import files placed by hand from this folder.")
@click.pass_context
def download(ctx: click.Context, dataset: str, url: str | None, from_dir: Path | None) -> None:
    """Fetch a data set's raw files (checksums verified).

    Example: gslbench download digits
    """
    path = data.download(dataset, ctx.obj["data_dir"], url=url, from_dir=from_dir)
    click.echo(path)


def _setting_option(setting: Setting) -> Callable:
    """The click option of one setting: its type, default, choices and help."""
    kind = click.Choice(setting.choices) if setting.choices else setting.kind
    return click.option(setting.option, type=kind, default=setting.default, show_default=True,
                        help=setting.help)


def _options(settings: tuple[Setting, ...]) -> Callable:
    """Each of `settings` as an option."""
    def decorate(command: Callable) -> Callable:
        for setting in reversed(settings):
            command = _setting_option(setting)(command)
        return command
    return decorate


def _device_option(command: Callable) -> Callable:
    return click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                        help="Where torch runs (auto: a GPU when torch sees one, else the CPU); "
                             "faiss stays on the CPU.")(command)


class FeaturesGroup(click.Group):
    """`gslbench features DATASET ...` is `gslbench features extract DATASET ...`; `import` is
    the other subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            args = ["extract", *args]
        return super().parse_args(ctx, args)


@cli.group(cls=FeaturesGroup)
def features() -> None:
    """Write a data set's feature file: extract it (`gslbench features DATASET`, the same as
    `gslbench features extract DATASET`) or import your own (`gslbench features import NAME
    --from FILE`).

    Example: gslbench features digits
    """


@features.command()
@click.argument("dataset")
@click.option("--backbone", help="Feature extractor (default: the data set's own).")
@_options(FEATURE_SETTINGS)
@_device_option
@click.pass_context
def extract(ctx: click.Context, dataset: str, backbone: str | None, image_size: int,
            batch_size: int, split_seed: int, device: str) -> None:
    """Split a data set by its protocol and write its feature file (the default subcommand).

    Example: gslbench features digits
    """
    check_feature_options(image_size=image_size, batch_size=batch_size, split_seed=split_seed)
    path = build_features(dataset, ctx.obj["data_dir"], backbone=backbone, image_size=image_size,
                          batch_size=batch_size, split_seed=split_seed,
                          device=resolve_device(device))
    click.echo(path)


def _split(kind: type) -> Callable:
    """A click callback parsing a comma-separated list of `kind`."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        try:
            return tuple(kind(item) for item in value.split(",") if item)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list") from None
    return parse


@features.command("import")
@click.argument("name")
@click.option("--from", "source", required=True, type=click.Path(path_type=Path),
              help="The features: .npz, .npy, .h5/.hdf5 or MATLAB .mat (v5 to v7.3).")
@click.option("--labels", "labels_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the labels' .npy file.")
@click.option("--split", "split_path", type=click.Path(path_type=Path),
              help="With a .npy --from: the split's .npy file.")
@click.option("--feature", default="imported", show_default=True, help="The feature's name.")
@click.option("--features-key", default="features", show_default=True)
@click.option("--labels-key", default="labels", show_default=True)
@click.option("--split-key", default="split", show_default=True,
              help="Per item: 0 database, 1 query, 2 train, 3 train and database.")
@click.option("--query-per-class", type=click.IntRange(min=1),
              help="Queries drawn per class when the file has no split [100].")
@click.option("--train-per-class", type=click.IntRange(min=1),
              help="Training items drawn per class when the file has no split [500].")
@click.option("--train-in-database", is_flag=True,
              help="Drawn training items stay in the database.")
@click.option("--split-seed", default=0, show_default=True, type=click.IntRange(min=0))
@click.option("--map-at", "map_top", type=click.IntRange(min=1),
              help="Score mAP@K (default: mAP over the whole database).")
@click.option("--classes", "n_classes", type=click.IntRange(min=1),
              help="Number of classes of class-id labels (default: the largest id + 1).")
@click.pass_context
def import_(ctx: click.Context, name: str, source: Path, labels_path: Path | None,
            split_path: Path | None, feature: str, features_key: str, labels_key: str,
            split_key: str, query_per_class: int | None, train_per_class: int | None,
            train_in_database: bool, split_seed: int, map_top: int | None,
            n_classes: int | None) -> None:
    """Import your own features, labels and split as data set NAME.

    Example: gslbench features import cifar-vgg --from cifar10_vgg.mat --map-at 1000
    """
    arrays = data.ImportSource(source, labels_path, split_path, features_key, labels_key,
                               split_key)
    protocol = data.ImportProtocol(query_per_class, train_per_class, train_in_database, map_top,
                                   split_seed)
    click.echo(data.import_features(name, arrays, ctx.obj["data_dir"], protocol=protocol,
                                    feature=feature, n_classes=n_classes))


# RunConfig fields that train takes as their own options (bench takes them as comma lists)
AXIS_FIELDS = ("dataset", "feature", "method", "quantizer", "bits", "seed")


def _config_options(command: Callable) -> Callable:
    """Every RunConfig field but the grid axes as an option (shared by train and bench), and
    --force."""
    force = click.option("--force", is_flag=True, help="Re-run steps whose results exist.")
    settings = tuple(setting for name, setting in FIELDS.items() if name not in AXIS_FIELDS)
    return _options(settings)(force(command))


@cli.command()
@click.option("-d", "--dataset", default=FIELDS["dataset"].default, show_default=True)
@click.option("--feature", help=FIELDS["feature"].help)
@_setting_option(FIELDS["method"])
@_setting_option(FIELDS["quantizer"])
@_setting_option(FIELDS["bits"])
@_setting_option(FIELDS["seed"])
@_config_options
@_device_option
@click.pass_context
def train(ctx: click.Context, dataset: str, feature: str | None, force: bool, device: str,
          **options: Any) -> None:
    """Train one run; prints its run directory.

    Example: gslbench train -d digits --method gsl --quantizer pq --bits 32 --seed 0
    """
    feature = feature or data.get_dataset(dataset, ctx.obj["data_dir"]).default_feature
    config = RunConfig(dataset=dataset, feature=feature, **options)
    run = train_run(config, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                    show_progress=_show_progress(ctx), device=device)
    click.echo(run.path)


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-encode even if codes.h5 exists.")
@_device_option
@click.pass_context
def encode(ctx: click.Context, run: str, force: bool, device: str) -> None:
    """Encode a run's database into RUN/codes.h5.

    Example: gslbench encode results/runs/0123456789ab
    """
    click.echo(encode_run(run, ctx.obj["data_dir"], ctx.obj["results_dir"], force=force,
                          device=device))


def _metric_option(command: Callable) -> Callable:
    return click.option("--metric", type=click.Choice(tuple(METRICS)), default="l2",
                        show_default=True,
                        help="l2: squared Euclidean distance; ip: inner product (descending).")(command)


@cli.command()
@click.argument("run")
@click.option("--force", is_flag=True, help="Re-evaluate even if the metrics file exists.")
@click.option("--map-at", "map_at", multiple=True, type=int,
              help="Cut-offs K of mAP@K (repeatable; default: the data set's).")
@click.option("--search", type=click.Choice(SEARCHES), default="adc", show_default=True,
              help="adc: float queries against the codes; sdc: the queries quantized too.")
@_metric_option
@click.pass_context
def evaluate(ctx: click.Context, run: str, force: bool, map_at: tuple[int, ...], search: str,
             metric: str) -> None:
    """Search the run's codes and write RUN/metrics.json (adc, l2) or
    RUN/metrics-SEARCH-METRIC.json (reads only RUN/codes.h5).

    Example: gslbench evaluate 0123456789ab --search sdc --metric ip
    """
    path = evaluate_run(run, ctx.obj["results_dir"], force=force, map_at=map_at or None,
                        search=search, metric=metric)
    click.echo(path)


@cli.command("search-bench")
@click.argument("runs", nargs=-1, required=True)
@_metric_option
@click.option("--k", default=100, show_default=True, help="Neighbours each search returns.")
@click.option("--recall-at", default=",".join(map(str, RECALL_AT)), show_default=True,
              callback=_split(int), help="Comma-separated R of recall@R of the true neighbours.")
@click.option("--single-queries", default=SINGLE_QUERIES, show_default=True,
              help="Queries searched one at a time for the batch-1 QPS.")
@click.option("--repeats", default=REPEATS, show_default=True, help="Timings; the best is kept.")
@click.option("--threads", type=click.IntRange(min=1), help="faiss threads (default: all).")
@click.option("--force", is_flag=True, help="Measure again even if the result file exists.")
@click.pass_context
def search_bench(ctx: click.Context, runs: tuple[str, ...], force: bool,
                 **options: Any) -> None:
    """Time each run's codes as a faiss index against the exact float search: QPS (batch 1 and
    batched), bytes per vector, recall@R of the true neighbours; writes RUN/search.json.

    Example: gslbench search-bench 0123456789ab 3f2e1d0c9b8a --threads 1
    """
    for run in runs:
        click.echo(search_bench_run(run, ctx.obj["results_dir"], force=force, **options))


@cli.command()
@click.argument("run")
@click.option("--faiss", "faiss_path", type=click.Path(path_type=Path),
              help="Write the database codes as a faiss index here.")
@click.option("--ann-benchmarks", "ann_path", type=click.Path(path_type=Path),
              help="Write the representations and true neighbours as ann-benchmarks HDF5 here.")
@_metric_option
@click.pass_context
def export(ctx: click.Context, run: str, faiss_path: Path | None, ann_path: Path | None,
           metric: str) -> None:
    """Export a run's codes (faiss index) or representations (ann-benchmarks HDF5).

    Example: gslbench export 0123456789ab --faiss run.index --ann-benchmarks run.hdf5
    """
    if faiss_path is None and ann_path is None:
        raise click.UsageError("give --faiss FILE.index, --ann-benchmarks FILE.hdf5 or both")
    results_dir = ctx.obj["results_dir"]
    if faiss_path is not None:
        click.echo(export_faiss(run, results_dir, faiss_path, metric))
    if ann_path is not None:
        click.echo(export_ann_benchmarks(run, results_dir, ann_path, metric))


@cli.command()
@click.argument("runs", nargs=-1)
@click.option("--runs", "patterns", multiple=True, metavar="PATTERN",
              help="Only runs whose id matches this glob, e.g. 'a1*' (repeatable).")
@click.option("-d", "--dataset", "dataset_names", multiple=True, metavar="NAME",
              help="Only runs of this data set (repeatable or comma-separated).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Report folder (default: RESULTS/report), replaced as a whole.")
@click.option("--doc", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results document (GSL's wins, ties, losses) here.")
@click.option("--doc-intro", type=click.File("r"),
              help="Markdown to put at the top of the results document (protocol, tuning).")
@click.pass_context
def report(ctx: click.Context, runs: tuple[str, ...], patterns: tuple[str, ...],
           dataset_names: tuple[str, ...], out: Path | None, doc: Path | None,
           doc_intro: TextIO | None) -> None:
    """Tabulate and plot evaluated runs: results.csv, tables (Markdown, CSV, LaTeX), figures
    (PNG, SVG) and a self-contained index.html in the report folder.

    Example: gslbench report --dataset digits --runs 'a1*' --doc docs/results.md
    """
    results_dir = ctx.obj["results_dir"]
    names = tuple(name for value in dataset_names for name in value.split(",") if name)
    run_dirs = report_module.select_runs(results_dir, runs, patterns, names)
    intro = doc_intro.read() if doc_intro else ""
    out = out or layout.report_dir(results_dir)
    _, markdown = report_module.write_report(run_dirs, out, doc, intro)
    click.echo(markdown, nl=False)
    if not ctx.obj["quiet"]:
        click.echo(f"report written to {out / 'index.html'}", err=True)


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
        _device_option,
    ]
    for option in reversed(options):
        command = option(command)
    return command


@cli.command()
@click.argument("grid_file", metavar="[GRID.toml]", required=False,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("-d", "--datasets", "dataset_names", default=",".join(DEFAULT_AXES["dataset"]),
              show_default=True, callback=_split(str), help="Comma-separated data sets.")
@click.option("--methods", default=",".join(DEFAULT_AXES["method"]), show_default=True,
              callback=_split(str))
@click.option("--quantizers", default=",".join(DEFAULT_AXES["quantizer"]), show_default=True,
              callback=_split(str))
@click.option("--bits", default=",".join(map(str, DEFAULT_AXES["bits"])), show_default=True,
              callback=_split(int))
@click.option("--seeds", default=",".join(map(str, DEFAULT_AXES["seed"])), show_default=True,
              callback=_split(int))
@_config_options
@click.option("--tuned", type=click.Path(path_type=Path),
              help="A choice file of `gslbench tune`: its knob values replace the grid's for "
                   "each tuned method and cell.")
@_executor_options
@click.pass_context
def bench(ctx: click.Context, grid_file: Path | None, force: bool, tuned: Path | None,
          executor: str, jobs: int | None, cpus_per_cell: int | None, address: str | None,
          dry_run: bool, device: str, **options: Any) -> None:
    """Run a grid of runs, skipping finished ones, then report.

    \b
    The grid is GRID.toml (keys: RunConfig fields; a list is an axis) or the flags;
    flags given on the command line override the file's keys. A killed bench resumes.
    Example: gslbench bench benchmarks/paper.toml --dry-run
    """
    grid = _bench_grid(ctx, grid_file, options)
    if tuned is not None:
        grid = Tuned.read(tuned).cells(grid)
    executor_config = ExecutorConfig(executor, jobs, cpus_per_cell, address, device)
    results_dir = ctx.obj["results_dir"]
    if dry_run:
        _echo_cells(grid, ctx.obj["data_dir"], results_dir)
        return
    result = bench_module.run_grid(grid, ctx.obj["data_dir"], results_dir, executor_config,
                                   force=force, show_progress=_show_progress(ctx))
    if result.run_dirs:
        out = layout.report_dir(results_dir)
        _, markdown = report_module.write_report(list(result.run_dirs), out)
        click.echo(markdown, nl=False)
        click.echo(f"report written to {out}")
    if result.failed:
        raise GslbenchError(f"{len(result.failed)} cell(s) failed (listed above); finished cells "
                            "are kept: run the same bench again to retry the others")


def _bench_grid(ctx: click.Context, grid_file: Path | None, options: dict) -> Grid:
    """The grid of the flags, or GRID.toml's keys over the flags' defaults and under the flags
    given on the command line."""
    settings = {AXIS_FLAGS.get(name, name): value for name, value in options.items()}
    if grid_file is None:
        return Grid.from_mapping(settings)
    given = {AXIS_FLAGS.get(name, name): value for name, value in options.items()
             if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE}
    return Grid.from_mapping({**settings, **read_grid_file(grid_file)}, source=str(grid_file),
                             overrides=given)


@cli.command()
@click.argument("grid_file", metavar="GRID.toml", type=click.Path(path_type=Path))
@click.option("--budget", type=click.IntRange(min=1),
              help="Settings tried per method and cell, the same for every method (default: "
                   "the fewest any tuned method's knobs offer).")
@click.option("--out", type=click.Path(path_type=Path),
              help="The choices, for bench --tuned (default: RESULTS/tuning/tuned.toml).")
@click.option("--doc", type=click.Path(path_type=Path),
              help="The table of every setting tried (default: RESULTS/tuning/tuning.md).")
@click.option("--doc-intro", type=click.File("r"), help="Markdown to put at the top of --doc.")
@click.option("--force", is_flag=True, help="Re-run tuning runs whose results exist.")
@_executor_options
@click.pass_context
def tune(ctx: click.Context, grid_file: Path, budget: int | None, out: Path | None,
         doc: Path | None, doc_intro: TextIO | None, force: bool, executor: str,
         jobs: int | None, cpus_per_cell: int | None, address: str | None,
         dry_run: bool, device: str) -> None:
    """Choose each method's knobs on the validation split, with the same budget for every method.

    \b
    For every (data set, quantizer, bits, sub-bits) cell of GRID.toml and every method with
    knobs: BUDGET settings of its knobs, each trained at every seed of the grid (at least 2) on
    the training pool minus the validation queries, scored by validation mAP. Runs go to
    RESULTS/tuning/runs (resumable); the choices to --out, every setting tried to --doc.
    Example: gslbench tune benchmarks/tuning.toml -j 2 && gslbench bench benchmarks/results.toml
    --tuned results/tuning/tuned.toml
    """
    grid = Grid.from_mapping(read_grid_file(grid_file), source=str(grid_file))
    results_dir = ctx.obj["results_dir"]
    if dry_run:
        tuning = tune_module.plan(grid, budget)
        _echo_cells(Cells(tuning.runs), ctx.obj["data_dir"], layout.tuning_dir(results_dir))
        return
    executor_config = ExecutorConfig(executor, jobs, cpus_per_cell, address, device)
    tuning, results, failed = tune_module.tune(grid, ctx.obj["data_dir"], results_dir, budget,
                                               executor_config, force=force,
                                               show_progress=_show_progress(ctx))
    chosen = tune_module.choose(tuning, results)
    if not chosen.empty:
        out = out or layout.tuned_path(results_dir)
        doc = doc or layout.tuning_table_path(results_dir)
        tune_module.write_outputs(tuning, results, chosen, grid_file, out, doc,
                                  doc_intro.read() if doc_intro else "")
        click.echo(f"{len(chosen)} choices written to {out}; every setting tried in {doc}")
    if failed:
        raise GslbenchError(f"{failed} tuning run(s) failed (listed above); their cells have "
                            "no choice: run the same tune again to retry them")


def _echo_cells(grid: Grid | Cells, data_dir: Path, results_dir: Path) -> None:
    """Print each cell's run id, state, description and why its files do not count (stale or
    damaged), then the count per state."""
    cells = bench_module.grid_status(grid, data_dir, results_dir)
    fields = tuple(grid.axes())
    click.echo(f"{'RUN':<12}  {'STATE':<7}  CELL")
    for config, cell in cells:
        reason = f"  [does not count: {cell.reason}]" if cell.reason else ""
        click.echo(f"{config.run_id:<12}  {cell.state:<7}  "
                   f"{bench_module.describe(config, fields)}{reason}")
    counts = Counter(cell.state for _, cell in cells)
    rerun = sum(bool(cell.reason) for _, cell in cells)
    click.echo(f"{len(cells)} cells: {counts['done']} done, {counts['partial']} partial "
               f"(trained, not evaluated), {counts['todo']} todo"
               + (f"; {rerun} stale or damaged, to run again" if rerun else ""))


def main() -> None:
    """Console entry point. SIGTERM ends gslbench like Ctrl-C does (temporary files removed,
    bench's workers stopped), with exit status 143."""
    signal.signal(signal.SIGTERM, _terminate)
    cli()


def _terminate(signum: int, frame: Any) -> None:
    sys.stderr.write("gslbench: terminated\n")
    raise SystemExit(128 + signum)
