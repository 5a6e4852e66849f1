"""What each stage of campaign 2 has left to run and what it will cost, before it runs: the
estimate of `bench --dry-run` (gslbench.bench.estimate: the median time of the finished runs most
like each cell) for every stage grid, and for the tuning the same estimate of every trial it may
run (8 per method with knobs, 1 without, at each of its seeds; trials already run are not
subtracted and pruning is not counted, so it is an upper bound). Cells of a stage that tune has
not chosen knobs for are estimated at the knobs they would run with untuned (the same training
cost up to the knobs' effect). Prints one row per stage and the total, at -j JOBS.

    python benchmarks/campaign2/estimate.py [--results-dir results] [--data-dir datasets] [-j 2]
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from gslbench import bench
from gslbench.bench import estimate
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.progress import format_duration
from gslbench.bench.tuning_plan import plan, tuning_grid
from gslbench.methods import METHODS

HERE = Path(__file__).resolve().parent
STAGES = ("results", "finetune", "pixels", "glove", "unseen_opq", "words256", "rq_lsq")
TRIALS = 8


def stage_cells(name: str, data_dir: Path, results_dir: Path) -> list:
    """The cells of a stage grid not done yet."""
    path = HERE / f"{name}.toml"
    grid = Grid.from_mapping(read_grid_file(path), source=str(path))
    return [config for config, cell in bench.grid_status(grid, data_dir, results_dir)
            if cell.state != "done"]


def tuning_trials() -> list:
    """Every trial run tuning.toml may make: its studies' start knobs at each seed, once per
    trial (one trial for a method without knobs)."""
    grid, start = tuning_grid(HERE / "tuning.toml")
    tuning = plan(grid, TRIALS, start=start)
    return [dataclasses.replace(study.base, seed=seed)
            for study in tuning.studies for seed in tuning.seeds
            for _ in range(TRIALS if METHODS[study.base.method].knobs else 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("-j", "--jobs", type=int, default=2)
    args = parser.parse_args()
    timed = estimate.timings([args.results_dir])
    rows = [("tuning (stage 1)", tuning_trials())]
    rows += [(name, stage_cells(name, args.data_dir, args.results_dir)) for name in STAGES]
    print(f"timed from {len(timed)} finished runs under {args.results_dir}; -j {args.jobs}")
    print(f"{'stage':<18} {'runs left':>9} {'estimated':>9} {'cell time':>10} {'wall':>8}")
    total = 0.0
    for name, cells in rows:
        cost = estimate.estimate(cells, timed)
        total += cost.wall_seconds(args.jobs)
        print(f"{name:<18} {cost.cells:>9} {cost.estimated:>9} "
              f"{format_duration(cost.seconds):>10} "
              f"{format_duration(cost.wall_seconds(args.jobs)):>8}")
    print(f"{'total':<18} {'':>9} {'':>9} {'':>10} {format_duration(total):>8}")


if __name__ == "__main__":
    main()
