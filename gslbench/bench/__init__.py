"""A benchmark grid run cell by cell, resumable, on any executor (DESIGN.md section 7).

Each cell is a run directory keyed by its config hash, `RESULTS/runs/RUN_ID`, and is

- `done` when its metrics.json exists (evaluate writes it atomically, last);
- `partial` when it is trained but not evaluated (train renames its whole directory into place,
  config.json included): a re-run encodes and evaluates it without training again;
- `todo` otherwise.

So a bench killed at any point resumes where it stopped and re-runs nothing that was complete.
Temporary names (`.RUN_ID.*` directories, `.NAME.*.tmp` files) never count as results; a bench
removes those of its own cells while it holds the results folder's lock (`runs/.bench.lock`),
which keeps a second bench off the same folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gslbench import layout
from gslbench.bench.executors import ExecutorConfig
from gslbench.bench.grid import Grid
from gslbench.config import KNOBS, RunConfig
from gslbench.data import download, feature_path, get_dataset
from gslbench.data.activations import ensure_activations
from gslbench.data.features import build_features
from gslbench.devices import resolve_device
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.step import evaluate_run
from gslbench.threads import limit_threads
from gslbench.train import train_run

log = logging.getLogger(__name__)

# Fields that `describe` always shows (dataset, quantizer, bits, seed; the method's knobs are in
# its label).
DESCRIBED = ("dataset", "method", "quantizer", "bits", "seed")


@dataclass(frozen=True)
class BenchResult:
    """The grid's evaluated run directories and its failed cells with their one-line errors."""

    run_dirs: tuple[layout.RunDir, ...]
    failed: tuple[tuple[RunConfig, str], ...]


def cell_state(run: layout.RunDir) -> str:
    """`done` (metrics.json), `partial` (trained, not evaluated) or `todo`."""
    if run.metrics.is_file():
        return "done"
    return "partial" if run.config.is_file() else "todo"


def grid_status(grid: Grid, results_dir: str | Path,
                data_dir: str | Path | None = None) -> list[tuple[RunConfig, str]]:
    """Every cell of the grid with its state; reads only whether files exist."""
    return [(config, cell_state(layout.run_dir(results_dir, config.run_id)))
            for config in grid.cells(data_dir)]


def run_cell(config: RunConfig, data_dir: Path, results_dir: Path, threads: int,
             force: bool = False, device: str = "auto") -> layout.RunDir:
    """Train, encode and evaluate one cell with `threads` torch/faiss threads, torch on `device`;
    every executor runs this. Steps already done are skipped unless `force`. Returns the run
    directory."""
    with limit_threads(threads):
        run = train_run(config, data_dir, results_dir, force=force, show_progress=False,
                        device=device)
        encode_run(run.path, data_dir, results_dir, force=force, device=device)
        evaluate_run(run.path, results_dir, force=force)
    return run


def run_grid(grid: Grid, data_dir: str | Path, results_dir: str | Path,
             executor: ExecutorConfig | None = None, force: bool = False,
             show_progress: bool = True) -> BenchResult:
    """Run every cell that is not done (all with `force`) on `executor` (default: local, one
    cell at a time in this process) and return the outcome.

    The whole grid is validated first; then, holding the results folder's lock and the executor
    (a Ray connection fails here, before any download), the features of each data set are
    prepared here (downloaded and extracted once), leftovers of killed runs of the grid's cells
    are removed, and the cells are dispatched. A failing cell does not stop the
    others: it is logged as one line and listed in the result.
    """
    executor = executor or ExecutorConfig()
    data_dir, results_dir = Path(data_dir).resolve(), Path(results_dir).resolve()
    cells = grid.cells(data_dir)
    with _lock(results_dir), executor.make() as pool:
        _prepare_features(cells, data_dir, executor.device)
        _remove_leftovers([layout.run_dir(results_dir, config.run_id) for config in cells])
        todo = [config for config in cells
                if force or cell_state(layout.run_dir(results_dir, config.run_id)) != "done"]
        with Progress(len(cells), len(cells) - len(todo), grid, bar=show_progress) as progress:
            failed = _dispatch(pool, todo, progress, data_dir, results_dir, executor, force)
    run_dirs = tuple(layout.run_dir(results_dir, config.run_id) for config in cells)
    return BenchResult(tuple(run for run in run_dirs if cell_state(run) == "done"), tuple(failed))


def _dispatch(pool: Executor, todo: list[RunConfig], progress: Progress, data_dir: Path,
              results_dir: Path, executor: ExecutorConfig,
              force: bool) -> list[tuple[RunConfig, str]]:
    """Keep up to `pool.capacity` cells running until every cell has finished or failed."""
    waiting = iter(todo)
    running: dict[Future, RunConfig] = {}
    failed = []
    while True:
        while len(running) < pool.capacity and (config := next(waiting, None)) is not None:
            progress.running([*running.values(), config])
            try:
                running[pool.submit(run_cell, config, data_dir, results_dir, executor.threads,
                                    force, executor.device)] = config
            except Exception as exc:  # a broken pool refuses work: the cell failed
                failed.append((config, progress.finished(config, exc)))
        if not running:
            return failed
        progress.running(running.values())
        finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
        for future in finished:
            config = running.pop(future)
            error = future.exception()
            message = progress.finished(config, error)
            if error is not None:
                failed.append((config, message))


class Progress:
    """Cells done / total, the running cells, elapsed and remaining time.

    On a TTY a tqdm bar (postfix: time left and the running cells); off it, one INFO line per
    finished cell: `[3/12] done RUN_ID digits gsl ... (elapsed 1m02s, ~2m10s left)`. A failed cell
    is always logged as an error line.
    """

    def __init__(self, total: int, done: int, grid: Grid, bar: bool) -> None:
        self.total, self.done, self.finished_here = total, done, 0
        self.fields = tuple(grid.axes())
        self.start = time.monotonic()
        self.current = ""
        self.bar = tqdm(total=total, initial=done, desc="bench", unit="cell", dynamic_ncols=True,
                        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}") \
            if bar else None
        self._redirect = logging_redirect_tqdm() if bar else contextlib.nullcontext()
        log.info("%d cells: %d done already, %d to run", total, done, total - done)

    def __enter__(self) -> Progress:
        self._redirect.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._redirect.__exit__(*exc_info)
        if self.bar is not None:
            self.running([])
            self.bar.close()

    def running(self, configs: Iterable[RunConfig]) -> None:
        """Show these cells as the ones running now."""
        self.current = "; ".join(f"{c.run_id} {describe(c, self.fields)}" for c in configs)
        self.refresh()

    def refresh(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(" | ".join(filter(None, [f"~{self._left()} left", self.current])))

    def finished(self, config: RunConfig, error: BaseException | None) -> str:
        """Count a finished cell and log it; returns the error's one-line message ("" if none)."""
        self.done += 1
        self.finished_here += 1
        cell = f"[{self.done}/{self.total}] %s {config.run_id} {describe(config, self.fields)}"
        if self.bar is not None:
            self.bar.update()
        if error is not None:
            message = one_line(error)
            log.error(cell + ": %s", "failed", message)
            return message
        elapsed = format_duration(time.monotonic() - self.start)
        log.log(logging.DEBUG if self.bar is not None else logging.INFO,
                cell + " (elapsed %s, ~%s left)", "done", elapsed, self._left())
        return ""

    def _left(self) -> str:
        seconds = remaining_seconds(time.monotonic() - self.start, self.finished_here,
                                    self.total - self.done)
        return "?" if seconds is None else format_duration(seconds)


def remaining_seconds(elapsed: float, finished: int, left: int) -> float | None:
    """Estimated seconds until `left` more cells finish, at the pace of the `finished` cells of
    this run so far (wall time, so parallel cells count); None before the first finishes."""
    if left == 0:
        return 0.0
    return elapsed / finished * left if finished else None


def format_duration(seconds: float) -> str:
    """45 -> '45s', 62 -> '1m02s', 3725 -> '1h02m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(config: RunConfig, fields: Iterable[str] = ()) -> str:
    """`digits gsl α=1 k=8 pq 32 bits seed 0`, then `name=value` for each other field in `fields`
    (the grid's axes); float cells have no quantizer and bits."""
    text = f"{config.dataset} {config.label}"
    if config.quantized:
        text += f" {config.quantizer} {config.bits} bits"
    text += f" seed {config.seed}"
    knobs = {knob.name for knob in KNOBS}
    extra = [f"{name}={getattr(config, name)}" for name in fields
             if name not in DESCRIBED and name not in knobs]
    return " ".join([text, *extra])


def one_line(error: BaseException) -> str:
    """An error as one line: its message's first line, with the type unless it is a user error."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    return message if isinstance(error, GslbenchError) else f"{type(error).__name__}: {message}"


@contextlib.contextmanager
def _lock(results_dir: Path) -> Iterator[None]:
    """Hold `runs/.bench.lock` (released by the OS even when the process is killed)."""
    path = layout.lock_path(results_dir)
    runs = path.parent
    runs.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GslbenchError(f"{runs}: another gslbench bench is running on these results "
                                "(it holds .bench.lock); wait for it to finish") from None
        yield


def _prepare_features(cells: list[RunConfig], data_dir: Path, device: str) -> None:
    """Download and extract each data set's default feature file if missing (another feature
    must have been extracted beforehand: checked for all before any download), then compute the
    trunk activations that fine-tuning cells read, once each, torch on `device`."""
    needed = {(config.dataset, config.feature) for config in cells}
    for dataset, feature in sorted(needed):
        if (feature != get_dataset(dataset, data_dir).default_feature
                and not feature_path(data_dir, dataset, feature).is_file()):
            raise GslbenchError(f"{feature_path(data_dir, dataset, feature)}: no such file; run "
                                f"`gslbench features {dataset} --backbone ...` first")
    for dataset, feature in sorted(needed):
        if not feature_path(data_dir, dataset, feature).is_file():
            download(dataset, data_dir)
            build_features(dataset, data_dir, device=resolve_device(device))
    for dataset, feature, blocks in sorted({(config.dataset, config.feature, config.train_blocks)
                                            for config in cells if config.train_blocks}):
        ensure_activations(data_dir, dataset, feature, blocks, resolve_device(device))


def _remove_leftovers(runs: list[layout.RunDir]) -> None:
    """Remove what killed runs of these cells left under temporary names."""
    for run in runs:
        for path in run.leftovers():
            log.debug("removing leftover %s", path)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
