"""Check that campaign 2's α = 0 control is two-step: for every GSL cell of the grid at α = 0,
its codes under each codebook fit equal (every dataset of the codes file, to the bit) those of
two-step's cell of the same settings and seed. Without snapping GSL trains float's network and
every method's final codebooks are fitted alike (issue 33), so the two must agree; the results
page says so from this script's output.

    python benchmarks/campaign2/alpha0_identity.py [--grid benchmarks/campaign2/results.toml] \
        [--results-dir results]

Prints the number of codes files equal, different and missing; exits 1 unless all are equal.
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

HERE = Path(__file__).resolve().parent


def datasets(path: Path) -> dict[str, np.ndarray]:
    """Every dataset of an HDF5 file by name."""
    found: dict[str, np.ndarray] = {}
    with h5py.File(path) as handle:
        handle.visititems(lambda name, item: found.__setitem__(name, item[()])
                          if isinstance(item, h5py.Dataset) else None)
    return found


def compare(grid_path: Path, results_dir: Path) -> dict[str, int]:
    """{"equal", "different", "missing"}: codes files of the α = 0 cells against two-step's."""
    grid = Grid.from_mapping(read_grid_file(grid_path), source=str(grid_path))
    counts = {"equal": 0, "different": 0, "missing": 0}
    for config in grid.cells():
        if config.method != "gsl" or config.gsl_alpha != 0.0:
            continue
        two_step = dataclasses.replace(config, method="two-step").resolved()
        for fit in grid.codebooks:
            files = [layout.run_dir(results_dir, run_id).codes_file(fit)
                     for run_id in (config.run_id, two_step.run_id)]
            if not all(path.is_file() for path in files):
                counts["missing"] += 1
                continue
            mine, theirs = (datasets(path) for path in files)
            same = mine.keys() == theirs.keys() and all(
                np.array_equal(mine[name], theirs[name]) for name in mine)
            counts["equal" if same else "different"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=Path, default=HERE / "results.toml")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
    args = parser.parse_args()
    counts = compare(args.grid, args.results_dir)
    print(f"GSL at α = 0 against two-step: {counts['equal']} codes files equal, "
          f"{counts['different']} different, {counts['missing']} missing")
    sys.exit(0 if counts["equal"] and not counts["different"] and not counts["missing"] else 1)


if __name__ == "__main__":
    main()
