"""A grid of runs (data sets x methods x quantizers x code lengths x seeds), resumable.

Each cell is a run directory keyed by its config hash; a cell is done when its metrics.json exists
(written atomically, last), so a killed bench re-runs only what was not finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from gslbench.config import RunConfig
from gslbench.datasets import build_features, download, feature_path, get_dataset
from gslbench.pipeline import encode_run, evaluate_run, runs_dir, train_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grid:
    """The axes of a benchmark grid and the settings shared by every cell."""

    datasets: tuple[str, ...] = ("digits",)
    methods: tuple[str, ...] = ("float", "two-step", "qloss", "gsl")
    quantizers: tuple[str, ...] = ("pq",)
    bits: tuple[int, ...] = (16, 32, 64)
    seeds: tuple[int, ...] = (0,)
    base: RunConfig = RunConfig()

    def cells(self) -> list[RunConfig]:
        """The distinct resolved configs of the grid (float cells collapse across bits/quantizers)."""
        configs: dict[str, RunConfig] = {}
        for dataset, method, quantizer, bits, seed in itertools.product(
            self.datasets, self.methods, self.quantizers, self.bits, self.seeds
        ):
            config = dataclasses.replace(
                self.base, dataset=dataset, feature=get_dataset(dataset).default_feature,
                method=method, quantizer=quantizer, bits=bits, seed=seed,
            ).resolved()
            configs.setdefault(config.run_id, config)
        return list(configs.values())


def run_grid(grid: Grid, data_dir: Path, results_dir: Path, force: bool = False,
             show_progress: bool = True) -> list[Path]:
    """Run every cell not done yet (train, encode, evaluate); return all cells' run directories."""
    cells = grid.cells()  # validates every setting before any download
    for dataset in grid.datasets:
        _ensure_features(dataset, data_dir)
    run_dirs = []
    for config in tqdm(cells, desc="bench", disable=not show_progress):
        run_dir = runs_dir(results_dir) / config.run_id
        if (run_dir / "metrics.json").is_file() and not force:
            log.info("done already: %s %s", config.run_id, _describe(config))
        else:
            log.info("running %s %s", config.run_id, _describe(config))
            train_run(config, data_dir, results_dir, force=force, show_progress=False)
            encode_run(run_dir, data_dir, results_dir, force=force)
            evaluate_run(run_dir, data_dir, results_dir, force=force)
        run_dirs.append(run_dir)
    return run_dirs


def _ensure_features(dataset: str, data_dir: Path) -> None:
    if not feature_path(data_dir, dataset).is_file():
        download(dataset, data_dir)
        build_features(dataset, data_dir)


def _describe(config: RunConfig) -> str:
    return f"{config.dataset} {config.method} {config.quantizer} {config.bits} bits seed {config.seed}"
