"""A benchmark grid run cell by cell, resumable, on any executor (docs/design.md, section 7).

Each cell is a run directory keyed by its config hash, `RESULTS/runs/RUN_ID`, and is

- `done` when every step's output is there, valid and bound to the run, and the run was made
  from the current feature file (`check_trained`, `check_encoded`, `check_evaluated`), the codes
  and metrics of every codebook fit the grid lists (`Grid.codebooks`, `gslbench.codes.fits`);
- `partial` when it is trained (and that checks out) but its codes or metrics are missing or
  invalid: a re-run encodes and evaluates it without training again;
- `todo` otherwise: never trained, or trained from another feature file than the current one
  (stale), or with a damaged or unbound training output. It is trained again.

An archived run (`gslbench.archive`: its records alone, the artifacts left behind) is `done` when
its records make a finished run of every fit the grid lists (`check_archived`), else `todo`.

A cell whose files exist but do not count carries the reason, which bench logs and `--dry-run`
shows; each step re-runs itself when its output does not check out, so the re-run repairs the
cell from the first step whose output is missing or invalid. A bench killed at any point resumes
where it stopped and re-runs nothing that was complete. Temporary names (`.RUN_ID.*`
directories, `.NAME.*.tmp` files) never count as results; a bench restores a run that a killed
`train --force` left there (`restore_run`) and removes the rest, while it holds the results
folder's lock (`runs/.bench.lock`), which keeps a second bench off the same folder. Local worker
processes hold that lock too and die with the bench process (`executors`), so the lock is free
only once nothing of the bench can write any more.

Reuse (`gslbench.checkpoints`, `gslbench.bench.order`): the cells others start from (float,
two-step, one per other warm-up) are dispatched first, and a cell that starts from another's
checkpoint once that checkpoint is on disk or its producer has finished, on any executor, while
the other cells keep the workers busy.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gslbench import layout
from gslbench.archive import check_archived, is_archived
from gslbench.bench import estimate
from gslbench.bench.executors import ExecutorConfig
from gslbench.bench.grid import Cells, Grid
from gslbench.bench.order import Dependency, dependencies, producers_first, ready
from gslbench.bench.progress import Progress
from gslbench.codes import check_encoded, fits
from gslbench.config import RunConfig
from gslbench.data import download, feature_path, get_dataset
from gslbench.data.activations import ensure_activations
from gslbench.data.features import build_features
from gslbench.devices import resolve_device
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.step import check_evaluated, evaluate_run
from gslbench.storage import os_reason
from gslbench.threads import limit_threads
from gslbench.train import FeatureFile, check_trained, restore_run, train_run

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class BenchResult:
    """The grid's evaluated run directories and its failed cells with their one-line errors."""

    run_dirs: tuple[layout.RunDir, ...]
    failed: tuple[tuple[RunConfig, str], ...]


@dataclass(frozen=True)
class CellState:
    """A cell's state (`done`, `partial` or `todo`, see the module docstring) and, when files of
    it exist but do not count, why (one line)."""

    state: str
    reason: str = ""


def cell_state(run: layout.RunDir, features: FeatureFile | None,
               codebooks: tuple[str, ...] = layout.CODEBOOKS) -> CellState:
    """The state of a cell's run directory, every file checked, the training against the current
    feature file `features` (None: not known, not checked), the codes and metrics of each fit of
    `codebooks` the run has (`fits`)."""
    if not run.path.exists():
        return CellState("todo")
    if is_archived(run):
        try:
            check_archived(run, features, codebooks)
        except GslbenchError as exc:
            return CellState("todo", str(exc))
        return CellState("done")
    try:
        config, _ = check_trained(run, features)
    except GslbenchError as exc:
        return CellState("todo", str(exc))
    for fit in fits(config.quantized, codebooks):
        if not (run.codes_file(fit).is_file() and run.metrics_file(codebooks=fit).is_file()):
            return CellState("partial")
        try:
            check_evaluated(run, check_encoded(run, fit))
        except GslbenchError as exc:
            return CellState("partial", str(exc))
    return CellState("done")


def grid_status(grid: Grid | Cells, data_dir: str | Path,
                results_dir: str | Path) -> list[tuple[RunConfig, CellState]]:
    """Every cell of the grid with its state (feature files that exist are hashed once)."""
    cells = grid.cells(data_dir)
    features = _feature_files(cells, Path(data_dir), missing_ok=True)
    return [(config, cell_state(layout.run_dir(results_dir, config.run_id),
                                features[config.dataset, config.feature], grid.codebooks))
            for config in cells]


def run_cell(config: RunConfig, data_dir: Path, results_dir: Path, threads: int,
             force: bool = False, device: str = "auto",
             codebooks: tuple[str, ...] = layout.CODEBOOKS, reuse: bool = True) -> layout.RunDir:
    """Train one cell, then encode and evaluate each of its codebook fits (`fits`), with
    `threads` torch/faiss threads, torch on `device`; every executor runs this. Steps already
    done are skipped unless `force`; `reuse`: as `train_run`'s. Returns the run directory."""
    with limit_threads(threads):
        run = train_run(config, data_dir, results_dir, force=force, show_progress=False,
                        device=device, reuse=reuse)
        for fit in fits(config.quantized, codebooks):
            encode_run(run.path, data_dir, results_dir, force=force, device=device, codebooks=fit)
            evaluate_run(run.path, results_dir, force=force, codebooks=fit)
    return run


def run_grid(grid: Grid | Cells, data_dir: str | Path, results_dir: str | Path,
             executor: ExecutorConfig | None = None, force: bool = False,
             show_progress: bool = True, reuse: bool = True) -> BenchResult:
    """Run every cell that is not done (all with `force`) on `executor` (default: local, one
    cell at a time in this process) and return the outcome.

    The whole grid is validated first; then, holding the results folder's lock and the executor
    (a Ray connection fails here, before any download), the features of each data set are
    prepared here (downloaded and extracted once), leftovers of killed runs of the grid's cells
    are removed, and the cells are dispatched, those others start from first (`reuse`: see the
    module docstring; off, every cell trains every epoch, in grid order). A failing cell does not
    stop the others: it is logged as one line and listed in the result.
    """
    executor = executor or ExecutorConfig()
    data_dir, results_dir = Path(data_dir).resolve(), Path(results_dir).resolve()
    cells = grid.cells(data_dir)
    with _lock(results_dir) as lock, executor.make(lock) as pool:
        _prepare_features(cells, data_dir, executor.device)
        features = _feature_files(cells, data_dir)
        runs = {config.run_id: layout.run_dir(results_dir, config.run_id) for config in cells}
        _remove_leftovers(list(runs.values()))
        todo = []
        for config in cells:
            state = cell_state(runs[config.run_id], features[config.dataset, config.feature],
                               grid.codebooks)
            if state.reason:
                log.warning("%s does not count: %s; running it again from the first step whose "
                            "output is missing or invalid", config.run_id, state.reason)
            if force or state.state != "done":
                todo.append(config)
        plan = dependencies(todo, features, results_dir, executor) if reuse else {}
        todo = producers_first(todo, plan)
        costs = {cell.run_id: matched and matched[0] for cell, matched in estimate.cell_seconds(
            todo, estimate.timings([results_dir]) if todo else [])}
        with Progress(len(cells), len(cells) - len(todo), grid, bar=show_progress,
                      costs=costs) as progress:
            failed = _dispatch(pool, todo, plan, progress, data_dir, results_dir, executor, force,
                               grid.codebooks, reuse)
    done = {config.run_id for config in cells} - {config.run_id for config, _ in failed}
    return BenchResult(tuple(runs[run_id] for run_id in runs if run_id in done), tuple(failed))


def _dispatch(pool: Executor, todo: list[RunConfig], plan: dict[str, Dependency],
              progress: Progress, data_dir: Path, results_dir: Path, executor: ExecutorConfig,
              force: bool, codebooks: tuple[str, ...], reuse: bool) -> list[tuple[RunConfig, str]]:
    """Keep up to `pool.capacity` cells running until every cell has finished or failed, taking
    the first ready cell of `todo` (`order.ready`) for each free worker; when none is ready and none
    runs, the first waiting one."""
    waiting = list(todo)
    running: dict[Future, RunConfig] = {}
    finished_ids: set[str] = set()
    failed = []
    while True:
        while len(running) < pool.capacity and waiting:
            config = next((c for c in waiting if ready(c, plan, finished_ids)),
                          None if running else waiting[0])
            if config is None:
                break
            waiting.remove(config)
            progress.running([*running.values(), config])
            try:
                running[pool.submit(run_cell, config, data_dir, results_dir, executor.threads,
                                    force, executor.device, codebooks, reuse)] = config
            except Exception as exc:  # a broken pool refuses work: the cell failed
                failed.append((config, progress.finished(config, exc)))
                finished_ids.add(config.run_id)
        if not running:
            return failed
        progress.running(running.values())
        finished, _ = wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
        for future in finished:
            config = running.pop(future)
            finished_ids.add(config.run_id)
            error = future.exception()
            message = progress.finished(config, error)
            if error is not None:
                failed.append((config, message))


@contextlib.contextmanager
def _lock(results_dir: Path) -> Iterator[IO]:
    """Hold `runs/.bench.lock` (released by the OS when the process and the workers that share
    the open file have exited, even killed); yields the open lock file."""
    path = layout.lock_path(results_dir)
    runs = path.parent
    try:
        runs.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")
    except OSError as exc:
        raise GslbenchError(f"{path}: cannot create the bench lock ({os_reason(exc)})") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GslbenchError(f"{runs}: another gslbench bench is running on these results "
                                "(it holds .bench.lock); wait for it to finish") from None
        yield handle


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


def _feature_files(cells: list[RunConfig], data_dir: Path,
                   missing_ok: bool = False) -> dict[tuple[str, str], FeatureFile | None]:
    """Each (data set, feature) of the cells with its feature file's sha256, hashed once (None
    for a missing file when `missing_ok`)."""
    needed = sorted({(config.dataset, config.feature) for config in cells})
    paths = {key: feature_path(data_dir, *key) for key in needed}
    return {key: None if missing_ok and not path.is_file() else FeatureFile.of(path)
            for key, path in paths.items()}


def _remove_leftovers(runs: list[layout.RunDir]) -> None:
    """Put back runs that a killed `train --force` left under a temporary name, then remove what
    killed steps of these cells left under temporary names."""
    for run in runs:
        restore_run(run)
        for path in run.leftovers():
            log.debug("removing leftover %s", path)
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
