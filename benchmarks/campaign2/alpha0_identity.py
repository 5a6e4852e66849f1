"""Check that campaign 2's α = 0 control is two-step: for every GSL cell of the grid at α = 0,
its codes under each codebook fit equal (every dataset of the codes file, to the bit) those of
two-step's cell of the same settings and seed. Without snapping GSL trains float's network and
every method's final codebooks are fitted alike (issue 33), so the two must agree; the results
page says so from this script's output. Where a run is archived (`gslbench archive`: its codes
file left behind), the fit's metrics files are compared instead: every score they hold (mAP,
mAP@K, precision, recall, the PR curve, the quantization error, code usage, the unseen
protocol's conditions), not their binding, provenance and timings.

    python benchmarks/campaign2/alpha0_identity.py [--grid benchmarks/campaign2/results.toml] \
        [--results-dir results]

Prints the number of codes files equal, of fits with every score equal (codes archived),
different and missing; exits 1 unless all are equal.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import h5py
import numpy as np

from gslbench import layout
from gslbench.bench.grid import Grid, read_grid_file
from gslbench.storage import read_json

HERE = Path(__file__).resolve().parent
# what a metrics record holds besides its scores: its binding, provenance and timings
NOT_SCORES = {"run", "label", "config", "codes_sha256", "content_sha256", "devices", "threads",
              "versions", "train_s", "encode_s", "eval_s", "timings_s"}


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by name."""
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, item: found.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return found


def compare(grid_path: Path, results_dir: Path) -> dict[str, int]:
    """{"equal", "scores equal", "different", "missing"}: each codebook fit of the α = 0 cells
    against two-step's, by their codes files, or by their metrics' scores where a codes file was
    archived."""
    grid = Grid.from_mapping(read_grid_file(grid_path), source=str(grid_path))
    counts = {"equal": 0, "scores equal": 0, "different": 0, "missing": 0}
    for config in grid.cells():
        if config.method != "gsl" or config.gsl_alpha != 0.0:
            continue
        two_step = dataclasses.replace(config, method="two-step").resolved()
        runs = [layout.run_dir(results_dir, run_id) for run_id in (config.run_id, two_step.run_id)]
        for fit in grid.codebooks:
            codes = [run.codes_file(fit) for run in runs]
            metrics = [run.metrics_file(codebooks=fit) for run in runs]
            if all(path.is_file() for path in codes):
                mine, theirs = (datasets(path) for path in codes)
                same, kind = mine.keys() == theirs.keys() and all(
                    np.array_equal(mine[name], theirs[name]) for name in mine), "equal"
            elif all(path.is_file() for path in metrics):
                same, kind = scores(metrics[0]) == scores(metrics[1]), "scores equal"
            else:
                counts["missing"] += 1
                continue
            counts[kind if same else "different"] += 1
    return counts


def scores(path: Path) -> dict:
    """A metrics file's scores: everything but `NOT_SCORES`."""
    return {name: value for name, value in read_json(path).items() if name not in NOT_SCORES}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=HERE / "results.toml")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args()
    counts = compare(args.grid, args.results_dir)
    print(f"GSL at α = 0 against two-step: {counts['equal']} codes files equal, "
          f"{counts['scores equal']} fits with every score equal (codes archived), "
          f"{counts['different']} different, {counts['missing']} missing")
    equal = counts["equal"] + counts["scores equal"]
    sys.exit(0 if equal and not counts["different"] and not counts["missing"] else 1)


if __name__ == "__main__":
    main()
