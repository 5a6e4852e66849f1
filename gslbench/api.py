"""The Python API: each pipeline step as one function, and the results as a pandas DataFrame.

    import gslbench

    config = gslbench.RunConfig(dataset="digits", method="gsl", quantizer="pq", bits=16, epochs=5)
    run = gslbench.train(config)           # results/runs/RUN: config.json, model.pt, ...
    gslbench.encode(run)                    # RUN/codes.h5
    gslbench.evaluate(run)["map"]           # RUN/metrics.json, returned as a dict
    frame = gslbench.load_results()         # one row per run and evaluation mode

Every function does what the command of the same name does (`gslbench train`, ...), with the
same checks, files and one-line `GslbenchError`s; paths default to the CLI's (`datasets`,
`results` under the current folder). This module imports nothing heavy itself: torch and faiss
load when a step runs, and `load_results` and `report` never load them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from gslbench.config import RunConfig

DATA_DIR = Path("datasets")
RESULTS_DIR = Path("results")
GridSpec = Mapping[str, Any] | str | Path | None


def train(config: RunConfig | None = None, *, data_dir: str | Path = DATA_DIR,
          results_dir: str | Path = RESULTS_DIR, force: bool = False, device: str = "auto",
          show_progress: bool = False, tensorboard: str | Path | None = None,
          **settings: Any) -> Path:
    """Train one run and return its directory, RESULTS/runs/RUN (`gslbench train`).

    When the data set's default feature file is missing it is downloaded and extracted first,
    as `gslbench bench` does.

    Args:
        config: The run's `RunConfig`; or leave it out and give its fields as keywords
            (`train(dataset="digits", method="gsl", bits=16)`; `feature` defaults to the data
            set's own).
        data_dir: The data sets' root (`--data-dir`).
        results_dir: The runs' and reports' root (`--results-dir`).
        force: Train again even when a valid run of this config exists (else it is reused).
        device: `auto`, `cpu`, `cuda` or `mps` for torch (faiss stays on the CPU).
        show_progress: Show the training progress.
        tensorboard: A folder: the run's training curves go to TENSORBOARD/RUN as TensorBoard
            event files (`gslbench.curves`, as `--tensorboard`; needs `pip install
            'gslbench[tensorboard]'`, checked before anything runs).
        **settings: `RunConfig` fields, when `config` is left out.

    Returns:
        The run's directory, RESULTS/runs/RUN.
    """
    from gslbench.bench import _prepare_features
    from gslbench.train import train_run

    _folders(data_dir, results_dir, tensorboard)
    config = _config(config, data_dir, settings)
    _check_curves(tensorboard)
    _prepare_features([config], Path(data_dir), device)
    run = train_run(config, data_dir, results_dir, force=force, show_progress=show_progress,
                    device=device)
    _write_curves([run], tensorboard)
    return run.path


def encode(run: str | Path, *, data_dir: str | Path = DATA_DIR,
           results_dir: str | Path = RESULTS_DIR, force: bool = False,
           device: str = "auto") -> Path:
    """Encode a trained run's database and embed its queries into RUN/codes.h5 (`gslbench
    encode`).

    Args:
        run: A run id, a unique prefix of one, or a run directory.
        data_dir: The data sets' root.
        results_dir: The runs' root.
        force: Encode again even when valid codes exist.
        device: Where torch runs (`auto`, `cpu`, `cuda`, `mps`).

    Returns:
        The path of RUN/codes.h5.
    """
    from gslbench.encode import encode_run

    _folders(data_dir, results_dir)
    return encode_run(run, data_dir, results_dir, force=force, device=device)


def evaluate(run: str | Path, *, results_dir: str | Path = RESULTS_DIR, force: bool = False,
             map_at: Sequence[int] | None = None, search: str = "adc",
             metric: str = "l2") -> dict[str, Any]:
    """Search an encoded run's codes with its queries (`gslbench evaluate`) and return the
    metrics record it wrote (metrics.json, or metrics-SEARCH-METRIC.json for another mode).

    Args:
        run: A run id, a unique prefix of one, or a run directory.
        results_dir: The runs' root.
        force: Evaluate again even when a valid record exists.
        map_at: The K of mAP@K (default: the protocol's).
        search: `adc` (float queries against the codes) or `sdc` (queries quantized too).
        metric: `l2` or `ip` (inner product).

    Returns:
        The metrics record, with `map` (mAP over the whole database), `map_at` {K: mAP@K},
            `precision_at`, `recall_at`, `quant_mse` {"database", "query"}, timings and the
            run's config.
    """
    from gslbench.evaluation.step import evaluate_run
    from gslbench.storage import read_json

    _folders(results_dir=results_dir)
    path = evaluate_run(run, results_dir, force=force, map_at=tuple(map_at) if map_at else None,
                        search=search, metric=metric)
    return read_json(path)


def bench(grid: GridSpec = None, *, data_dir: str | Path = DATA_DIR,
          results_dir: str | Path = RESULTS_DIR, executor: str = "local", jobs: int | None = None,
          cpus_per_cell: int | None = None, address: str | None = None, device: str = "auto",
          tuned: str | Path | None = None, show_progress: bool = False,
          tensorboard: str | Path | None = None, **options: Any) -> pd.DataFrame:
    """Train, encode and evaluate every cell of a grid that is not done yet (`gslbench bench`,
    without its report: call `report` for that) and return the grid's results as
    `load_results` does.

    A failed cell is logged; when any failed, a `GslbenchError` says how many after the others
    finished (they are kept).

    Args:
        grid: A mapping of `RunConfig` fields to a value or a list of values (an axis), a grid
            TOML file, or None for the default grid (`benchmarks/quick.toml`); keys a mapping or
            file leaves out take bench's defaults.
        data_dir: The data sets' root.
        results_dir: The runs' and reports' root.
        executor: `local` (processes on this machine) or `ray` (bench's `--executor`).
        jobs: Cells at once (`-j`).
        cpus_per_cell: torch and faiss threads of a cell (`--cpus-per-cell`).
        address: The Ray cluster (`--address`).
        device: Where torch runs (`auto`, `cpu`, `cuda`, `mps`).
        tuned: A choice file of `gslbench tune` whose knob values replace the grid's.
        show_progress: Show progress bars.
        tensorboard: A folder: each finished run's training curves go to TENSORBOARD/RUN (as
            `train`'s).
        **options: Passed on to `gslbench.bench.run_grid` (e.g. `force=True`).

    Returns:
        The grid's results, one row per run and evaluation mode (as `load_results`).
    """
    from gslbench import bench as bench_module
    from gslbench.bench.executors import ExecutorConfig
    from gslbench.bench.tuned import Tuned
    from gslbench.errors import GslbenchError
    from gslbench.report.frames import read_runs

    _folders(data_dir, results_dir, tensorboard)
    cells = _grid(grid)
    if tuned is not None:
        cells = Tuned.read(tuned).cells(cells, data_dir)
    _check_curves(tensorboard)
    executor_config = ExecutorConfig(executor, jobs, cpus_per_cell, address, device)
    result = bench_module.run_grid(cells, data_dir, results_dir, executor_config,
                                   show_progress=show_progress, **options)
    _write_curves(result.run_dirs, tensorboard)
    if result.failed:
        raise GslbenchError(f"{len(result.failed)} cell(s) failed (logged); finished cells are "
                            "kept: run the same bench again to retry the others")
    return _frame(read_runs(result.run_dirs).results)


def tune(grid: Mapping[str, Any] | str | Path, *, data_dir: str | Path = DATA_DIR,
         results_dir: str | Path = RESULTS_DIR, trials: int = 8, out: str | Path | None = None,
         doc: str | Path | None = None, force: bool = False, **options: Any) -> pd.DataFrame:
    """Choose each method's knobs on the validation split (`gslbench tune`) and return the
    choices.

    Args:
        grid: A tuning grid (mapping or TOML file: no split, at least 2 seeds; `start`: each
            method's pinned trial-0 knobs, {"gsl": {"gsl_alpha": 0.5, ...}}).
        data_dir: The data sets' root.
        results_dir: The runs' root (tuning's runs go under RESULTS/tuning).
        trials: Optuna trials per cell and method (the start knobs first).
        out: Where the choice file goes, for `bench(..., tuned=out)` (default
            RESULTS/tuning/tuned.toml).
        doc: Where the tuning document goes (default RESULTS/tuning/tuning.md).
        force: Replace an existing file at `out` or `doc` that tune did not write
            (`gslbench.targets`).
        **options: Passed on to `gslbench.bench.tune.tune`: storage (an Optuna storage URL),
            prune, reuse, device, jobs (trials at once, in helper processes on the storage).

    Returns:
        One row per tuning cell and method, with the columns cell (JSON), method, trial,
            variant, knobs and validation_map.
    """
    from gslbench import layout
    from gslbench.bench import tune as tune_module
    from gslbench.bench.tuning_plan import tuning_grid
    from gslbench.errors import GslbenchError
    from gslbench.targets import check_tune_outputs

    _folders(data_dir, results_dir)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise GslbenchError(f"trials must be a positive integer, got {trials!r}")
    out = Path(out) if out else layout.tuned_path(results_dir)
    doc = Path(doc) if doc else layout.tuning_table_path(results_dir)
    check_tune_outputs(out, doc, results_dir, data_dir, options.get("storage"), force)
    tuning, start = tuning_grid(grid)
    return tune_module.tune_and_write(tuning, data_dir, results_dir, trials, out, doc,
                                      start=start, **options)


def report(runs: Sequence[str | Path] = (), *, results_dir: str | Path = RESULTS_DIR,
           out: str | Path | None = None, doc: str | Path | None = None,
           datasets: Sequence[str] = (), patterns: Sequence[str] = (),
           force: bool = False) -> Path:
    """Write the report of the evaluated runs (`gslbench report`): results.csv, tables,
    figures and index.html.

    Args:
        runs: Run ids or directories (default: every run under RESULTS/runs).
        results_dir: The runs' root.
        out: The report folder (default RESULTS/report), replaced as a whole.
        doc: Also write the results document (paired comparisons) there.
        datasets: Keep only these data sets' runs.
        patterns: Keep only runs whose id matches one of these globs.
        force: Write `doc` even over a file report did not write (`gslbench.targets`).

    Returns:
        The path of index.html.
    """
    from gslbench import layout
    from gslbench import report as report_module
    from gslbench.targets import check_report_doc

    _folders(results_dir=results_dir)
    if doc:
        check_report_doc(Path(doc), results_dir, None, force)
    run_dirs = report_module.select_runs(Path(results_dir), runs, patterns, datasets)
    out_dir = Path(out) if out else layout.report_dir(results_dir)
    report_module.write_report(run_dirs, out_dir, Path(doc) if doc else None)
    return out_dir / report_module.INDEX


def load_results(results_dir: str | Path = RESULTS_DIR, runs: Sequence[str | Path] = (),
                 datasets: Sequence[str] = ()) -> pd.DataFrame:
    """The evaluated runs under RESULTS/runs as a DataFrame: one row per run and evaluation
    mode, with the columns of the report's results.csv (dataset, feature, method, variant,
    quantizer, code_bits, sub_bits, loss, seed, search, metric, map, map_all, map_at_K,
    precision_at_K, recall_at_R, quant_mse_database, quant_mse_query, train_s, encode_s,
    eval_s, run). Runs without metrics are skipped with a warning; none at all is a
    `GslbenchError`. Imports neither torch nor faiss.

    Args:
        results_dir: The runs' root.
        runs: Run ids or directories (default: all).
        datasets: Keep only these data sets' runs.

    Returns:
        One row per run and evaluation mode.
    """
    from gslbench.report import select_runs
    from gslbench.report.frames import read_runs

    _folders(results_dir=results_dir)
    return _frame(read_runs(select_runs(Path(results_dir), runs, (), datasets)).results)


def _config(config: RunConfig | None, data_dir: str | Path, settings: dict) -> RunConfig:
    """`config`, or a RunConfig of `settings` with the data set's own feature by default."""
    from gslbench.config import RunConfig
    from gslbench.data import get_dataset
    from gslbench.errors import GslbenchError

    if config is not None and not isinstance(config, RunConfig):
        raise GslbenchError(f"config must be a RunConfig, got {config!r}; give its fields as "
                            "keywords instead (train(dataset='digits', method='gsl'))")
    if config is not None:
        if settings:
            raise GslbenchError(f"give a RunConfig or settings, not both ({', '.join(settings)})")
        return config
    dataset = settings.setdefault("dataset", "digits")
    settings.setdefault("feature", get_dataset(dataset, data_dir).default_feature)
    return RunConfig(**settings)


def _folders(data_dir: str | Path | None = None, results_dir: str | Path | None = None,
             tensorboard: str | Path | None = None) -> None:
    """The data, results and TensorBoard folders, where given, are folders or do not exist yet
    (as the CLI's --data-dir, --results-dir and --tensorboard)."""
    from gslbench.errors import GslbenchError

    for name, folder in (("data_dir", data_dir), ("results_dir", results_dir),
                         ("tensorboard", tensorboard)):
        if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
            raise GslbenchError(f"{folder}: not a folder ({name})")


def _check_curves(tensorboard: str | Path | None) -> None:
    """With a `tensorboard` folder, a user error naming it when the extra is not installed."""
    from gslbench import curves

    if tensorboard is not None:
        curves.check_writer("tensorboard")


def _write_curves(runs: Sequence[Any], tensorboard: str | Path | None) -> None:
    """Each run's (`layout.RunDir`) training curves into TENSORBOARD/RUN, with a folder given."""
    from gslbench import curves

    for run in runs if tensorboard is not None else ():
        curves.write_curves(run, tensorboard)


def _grid(grid: GridSpec, defaults: bool = True) -> Any:
    """A `Grid` from a mapping or a TOML file, over bench's default axes when `defaults`."""
    from gslbench.bench.grid import DEFAULT_AXES, Grid, read_grid_file

    source = ""
    if isinstance(grid, (str, Path)):
        source, grid = str(grid), read_grid_file(grid)
    base = {name: list(values) for name, values in DEFAULT_AXES.items()} if defaults else {}
    return Grid.from_mapping({**base, **(grid or {})}, source=source)


def _frame(results: pd.DataFrame) -> pd.DataFrame:
    return results.reset_index(drop=True)
