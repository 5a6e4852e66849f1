"""What reuse saves on a grid: epochs trained and wall time of the same small grid with reuse and
with --no-reuse, in one run, and the check that both give the same codes and mAPs (not a test;
prints its figures). Then the share of epochs the results grid (campaign 2's stage 1,
benchmarks/campaign2/results.toml) trains with reuse, counted from its cells.

The grid runs on a synthetic data set of Fashion-MNIST's shape, imported with `gslbench features
import`: 10 classes, 1,280-d features (EfficientNet-Lite0's), 5,000 training items, 1,000
queries and a 10,000-item database; every method, PQ with 16-word codebooks at 16 bits, one
seed, 20 epochs with the default warm-up of 5 (2 to 3 minutes on a busy 2-core machine);
--epochs 40: the results grid's schedule; --small: 10 epochs. Wall time on a shared machine
depends on its other load: the CPU time of the bench process and its workers is printed too.

    python benchmarks/grid_cost.py [--small] [--epochs N] [--bits 16,32] [--jobs N]
        [--cpus-per-cell N] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
import h5py
import numpy as np

from gslbench import bench
from gslbench.bench.executors import ExecutorConfig
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.order import reuse_plan
from gslbench.data import ImportProtocol, ImportSource, import_features
from gslbench.layout import RunDir

RESULTS_GRID = Path(__file__).resolve().parent / "campaign2" / "results.toml"
DATASET = "fmnist-shaped"
CLASSES, DIM, QUERY, TRAIN, DATABASE = 10, 1280, 100, 500, 1000  # per class


def synthetic_features(path: Path, seed: int = 0) -> Path:
    """An .npz of (16,000, 1,280) float32 features and class ids: each class a Gaussian in a
    32-d latent space, mapped to 1,280 non-negative dimensions (like ReLU6 activations) with
    noise, so that classes overlap and mAPs are not all 1."""
    rng = np.random.default_rng(seed)
    per_class = QUERY + TRAIN + DATABASE
    labels = np.repeat(np.arange(CLASSES), per_class)
    latent = rng.normal(size=(CLASSES, 32))[labels] + 1.5 * rng.normal(size=(len(labels), 32))
    mixing = rng.normal(size=(32, DIM)) / np.sqrt(32)
    features = np.clip(latent @ mixing + rng.normal(size=(len(labels), DIM)), 0, 6)
    np.savez(path, features=features.astype(np.float32), labels=labels)
    return path


def small_grid(bits: list[int], epochs: int) -> Grid:
    return Grid.from_mapping({
        "dataset": DATASET, "feature": "imported",
        "method": ["float", "two-step", "qloss", "gsl", "ste", "soft", "gumbel"],
        "quantizer": "pq", "sub_bits": 4, "bits": bits, "seed": 0, "epochs": epochs})


def cpu_seconds() -> float:
    """CPU seconds of this process and of its waited-for children (bench's workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def run_once(grid: Grid, data_dir: Path, results_dir: Path, executor: ExecutorConfig,
             reuse: bool) -> tuple[float, float, dict[str, RunDir]]:
    """Wall and CPU seconds of the whole grid (train, encode, evaluate) and its run directories."""
    start, cpu = time.perf_counter(), cpu_seconds()
    result = bench.run_grid(grid, data_dir, results_dir, executor, show_progress=False,
                            reuse=reuse)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    if result.failed:
        raise SystemExit(f"failed cells: {result.failed}")
    return seconds, cpu, {run.run_id: run for run in result.run_dirs}


def epochs_trained(runs: dict[str, RunDir]) -> int:
    return sum(json.loads(run.config.read_text())["epochs_trained"] for run in runs.values())


def check_same(with_reuse: dict[str, RunDir], without: dict[str, RunDir]) -> None:
    """Every run's codes and mAP are the same with and without reuse, to the bit."""
    assert with_reuse.keys() == without.keys()
    for run_id, run in with_reuse.items():
        other = without[run_id]
        maps = [json.loads(r.metrics.read_text())["map"] for r in (run, other)]
        with h5py.File(run.codes) as a, h5py.File(other.codes) as b:
            same_codes = np.array_equal(a["codes"][()], b["codes"][()])
        if maps[0] != maps[1] or not same_codes:
            raise SystemExit(f"{run_id}: reuse changed the result (mAP {maps[0]} vs {maps[1]}, "
                             f"same codes: {same_codes})")


def grid_share(path: Path) -> tuple[int, Counter, Counter]:
    """The number of cells of the grid of `path`, and the epochs it trains with reuse and without
    per method (bench's `reuse_plan`, every cell to run; none for a method that trains
    nothing, `Method.epochs`)."""
    cells = Grid.from_mapping(read_grid_file(path), str(path)).cells()
    plan = reuse_plan(cells)
    reused, full = Counter(), Counter()
    for config in cells:
        planned = config.method_spec.epochs(config.epochs)
        full[config.method] += planned
        reused[config.method] += planned - plan.get(config.run_id, ("", 0))[1]
    return len(cells), reused, full


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="10 epochs")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per run (default 20)")
    parser.add_argument("--bits", default="16", help="code lengths, comma-separated (default 16)")
    parser.add_argument("--jobs", type=int, default=1, help="bench's -j (default 1)")
    parser.add_argument("--cpus-per-cell", type=int, default=1,
                        help="torch/faiss threads per cell (default 1)")
    parser.add_argument("--work", type=Path, help="folder for the data and results (default: a "
                        "temporary one, removed)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = args.work or Path(temporary)
        data_dir = work / "data"
        source = synthetic_features(work / "features.npz")
        import_features(DATASET, ImportSource(source), data_dir,
                        protocol=ImportProtocol(QUERY, TRAIN))
        grid = small_grid([int(bits) for bits in args.bits.split(",")],
                          10 if args.small else args.epochs)
        executor = ExecutorConfig(jobs=args.jobs, cpus_per_cell=args.cpus_per_cell, device="cpu")
        cells = grid.cells(data_dir)
        methods = Counter(config.method for config in cells)
        print(f"grid: {len(cells)} cells ({', '.join(f'{n} {m}' for m, n in methods.items())}), "
              f"{cells[0].epochs} epochs, -j {args.jobs}, {executor.threads} thread(s) per cell")
        timing = {}
        for reuse in (False, True):
            seconds, cpu, runs = run_once(grid, data_dir,
                                          work / ("reuse" if reuse else "no-reuse"), executor,
                                          reuse)
            timing[reuse] = (seconds, cpu, epochs_trained(runs), runs)
            print(f"{'reuse   ' if reuse else 'no-reuse'}: {seconds:7.1f} s wall, {cpu:7.1f} s "
                  f"CPU, {timing[reuse][2]} epochs trained")
        check_same(timing[True][3], timing[False][3])
        print(f"same codes and mAPs in all {len(cells)} cells")
        with_reuse, without = timing[True], timing[False]
        print(f"with reuse: {with_reuse[2] / without[2]:.1%} of the epochs, "
              f"{with_reuse[0] / without[0]:.1%} of the wall time, "
              f"{with_reuse[1] / without[1]:.1%} of the CPU time")
    n_cells, reused, full = grid_share(RESULTS_GRID)
    total, total_reused = sum(full.values()), sum(reused.values())
    print(f"{RESULTS_GRID.name}: {n_cells} cells; with reuse they train {total_reused} of "
          f"{total} epochs ({total_reused / total:.1%})")
    for method, epochs in full.items():
        print(f"  {method:9s} {reused[method]:6d} of {epochs:6d} epochs "
              f"({reused[method] / epochs:.0%})" if epochs else f"  {method:9s} trains nothing")


if __name__ == "__main__":
    main()
