"""The `gslbench` click group, its one-line errors, and the option helpers every command uses: a
RunConfig setting as an option, --device, comma lists, names with a close match suggested.

Importing the command line loads neither torch nor faiss (`gslbench.lazy`): `gslbench --help`,
`--version`, `download`, `report` and a grid's checks start in a fraction of a second; a step
loads them when it runs."""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from gslbench.config import FIELDS
from gslbench.devices import DEVICES
from gslbench.errors import GslbenchError, did_you_mean
from gslbench.layout import CODEBOOKS
from gslbench.quantizers.search import METRICS
from gslbench.settings import Setting
from gslbench.storage import os_reason

# the commands as `gslbench --help` lists them: the pipeline's order, then the grids and outputs
COMMAND_ORDER = ("download", "features", "train", "encode", "evaluate", "report", "bench", "tune",
                 "search-bench", "export", "archive")


class Gslbench(click.Group):
    """A click group that turns user errors and OS errors (a read-only folder, a full disk) into
    one line, `gslbench: error: ...`, and exit 2 (with -v the traceback comes first); it lists
    its commands in pipeline order with their whole first sentence."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        order = {name: index for index, name in enumerate(COMMAND_ORDER)}
        return sorted(self.commands, key=lambda name: (order.get(name, len(order)), name))

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, self.commands[name].get_short_help_str(limit=10_000))
                for name in self.list_commands(ctx) if not self.commands[name].hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

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

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; an EOFError is a file that ended early, not the Ctrl-D that click's
        main takes every EOFError for ("aborted", exit 130): gslbench never prompts."""
        try:
            return super().invoke(ctx)
        except EOFError as exc:
            raise GslbenchError(f"a file ended before its data did ({exc}); -v shows "
                                "which") from exc


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


def show_progress(ctx: click.Context) -> bool:
    """Whether a step shows a progress bar: stderr is a terminal, and no -q."""
    return not ctx.obj["quiet"] and sys.stderr.isatty()


def log_progress(ctx: click.Context) -> bool:
    """Whether a step logs its progress as lines instead: stderr is a file or a pipe (a log, a
    job's output), not a terminal (which shows the bar) nor an in-memory capture; and no -q."""
    if ctx.obj["quiet"] or sys.stderr.isatty():
        return False
    try:
        sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # captured in memory (click's test runner)
        return False
    return True


class NameChoice(click.Choice):
    """A choice of names (methods, quantizers, metrics...) whose error suggests the closest:
    `'gls' is not one of ... (did you mean 'gsl'?)`."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter as exc:
            exc.message = exc.message.rstrip(".") + did_you_mean(str(value), self.choices)
            raise


@click.group(cls=Gslbench, context_settings={"help_option_names": ["-h", "--help"]},
             invoke_without_command=True)
@click.version_option(None, "-V", "--version", package_name="gslbench",
                      message="gslbench %(version)s", help="Print the version and exit.")
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
    if not verbose:  # faiss, loaded by the first step that needs it, logs how it loaded
        logging.getLogger("faiss").setLevel(logging.WARNING)
    ctx.obj = {"data_dir": data_dir, "results_dir": results_dir, "quiet": quiet}


def setting_option(setting: Setting) -> Callable:
    """The click option of one setting: its type, default, choices and help."""
    kind = NameChoice(setting.choices) if setting.choices else setting.kind
    return click.option(setting.option, type=kind, default=setting.default, show_default=True,
                        help=setting.help)


def options(settings: tuple[Setting, ...]) -> Callable:
    """Each of `settings` as an option."""
    def decorate(command: Callable) -> Callable:
        for setting in reversed(settings):
            command = setting_option(setting)(command)
        return command
    return decorate


def device_option(command: Callable) -> Callable:
    return click.option("--device", type=NameChoice(DEVICES), default="auto", show_default=True,
                        help="Where torch runs (auto: a GPU when torch sees one, else the CPU); "
                             "faiss stays on the CPU.")(command)


def reuse_option(command: Callable) -> Callable:
    """--no-reuse (train, bench, tune): passes `reuse` to the command."""
    return click.option("--no-reuse", "reuse", is_flag=True, flag_value=False, default=True,
                        help="Train every epoch here instead of starting from the training "
                             "state another run saved in RESULTS/checkpoints/ (the results are "
                             "the same; for checking and timing).")(command)


def split(kind: type, field: str | None = None) -> Callable:
    """A click callback parsing a comma-separated list of `kind`; with `field` each item is
    checked as that RunConfig setting, and a bad one is a user error naming the option as typed
    (`--quantizers: unknown quantizer 'qp' (did you mean 'pq'?)`)."""
    def parse(ctx: click.Context, param: click.Parameter, value: str) -> tuple:
        try:
            items = tuple(kind(item) for item in value.split(",") if item)
        except ValueError:
            raise click.BadParameter(f"{value!r} is not a comma-separated list") from None
        for item in items if field else ():
            FIELDS[field].check(item, option=max(param.opts, key=len))
        return items
    return parse


# RunConfig fields that train takes as their own options (bench takes them as comma lists)
AXIS_FIELDS = ("dataset", "feature", "method", "quantizer", "bits", "seed")


def config_options(command: Callable) -> Callable:
    """Every RunConfig field but the grid axes as an option (shared by train and bench), and
    --force."""
    force = click.option("--force", is_flag=True, help="Re-run steps whose results exist.")
    settings = tuple(setting for name, setting in FIELDS.items() if name not in AXIS_FIELDS)
    return options(settings)(force(command))


def tensorboard_option(command: Callable) -> Callable:
    """--tensorboard DIR (train, bench): each run's training curves as TensorBoard event files
    in DIR/RUN (`gslbench.curves`; the optional extra `gslbench[tensorboard]`)."""
    return click.option("--tensorboard", type=click.Path(file_okay=False, path_type=Path),
                        metavar="DIR",
                        help="Also write each run's training curves (similarity loss, "
                             "quantization error at each refit) as TensorBoard event files in "
                             "DIR/RUN; needs `pip install 'gslbench[tensorboard]'`.")(command)


def codebooks_option(command: Callable) -> Callable:
    return click.option("--codebooks", type=click.Choice(CODEBOOKS), default="train",
                        show_default=True,
                        help="The codes of which fit: train (the final codebooks fitted on the "
                             "training representations) or database (fitted on the database's, "
                             "as an indexer would).")(command)


def metric_option(command: Callable) -> Callable:
    return click.option("--metric", type=NameChoice(METRICS), default="l2",
                        show_default=True,
                        help="l2: squared Euclidean distance; ip: inner product (descending).")(command)


