"""What `gslbench tune` runs (`Plan`): a tuning grid and its `[start.METHOD]` tables read
(`tuning_grid`), checked, and cut into one study per cell and method (`plan`; a cell is every
setting but the method, the knobs, the seed and the split), keyed by the feature file's sha256
and the pinned start knobs, with the control cells (a grid part that sets a knob) left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.studies import Study, check_start
from gslbench.config import FIELDS, KNOBS, RunConfig
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS

# the axes a tuning grid may have: what names a cell in the tuning document, then method and seed
TUNED_AXES = ("dataset", "feature", "protocol", "loss", "quantizer", "bits", "sub_bits",
              "method", "seed")


@dataclass(frozen=True)
class Plan:
    """What tune runs: `trials` per study, the studies, the seeds, the control cells left out,
    and whether trials are pruned (`tune` turns pruning off below `MIN_PRUNED_TRIALS`)."""

    trials: int
    studies: tuple[Study, ...]
    seeds: tuple[int, ...]
    controls: tuple[RunConfig, ...] = ()
    prune: bool = True


def tuning_grid(grid: Mapping[str, Any] | str | Path) -> tuple[Grid, dict[str, dict]]:
    """A tuning grid (a TOML file or its mapping) and its `[start.METHOD]` tables (each method's
    pinned trial-0 knobs, checked by `plan`); a `start` that is not a table of tables is a user
    error."""
    source = ""
    if isinstance(grid, str | Path):
        source, grid = str(grid), read_grid_file(grid)
    settings = dict(grid)
    start = settings.pop("start", {})
    if not isinstance(start, dict) or not all(isinstance(v, dict) for v in start.values()):
        raise GslbenchError(f"{source or 'grid'}: start must hold one table per method, "
                            "[start.METHOD]")
    return Grid.from_mapping(settings, source=source), start


def plan(grid: Grid, trials: int, data_dir: str | Path | None = None,
         start: dict[str, dict] | None = None,
         features: dict[tuple[str, str], str] | None = None) -> Plan:
    """The studies of a grid (see the module docstring); a grid that sets the split, has an axis
    tune cannot name a cell by, fewer than 2 seeds or no method with knobs to tune is a user
    error. data_dir: where imported data sets are; start: the grid's `[start.METHOD]` tables;
    features: the sha256 of each (data set, feature) file, which keys the studies."""
    source = grid.source or "grid"
    if "split" in grid.fields():
        raise GslbenchError(f"{source}: split is chosen by tune, not by the grid (it tunes on the "
                            "validation split)")
    knob_names = {knob.name for knob in KNOBS}
    other = sorted(set(grid.axes()) - set(TUNED_AXES) - knob_names)
    if other:
        raise GslbenchError(f"{source}: {other[0]} is an axis; tune's cells are those of "
                            f"{', '.join(TUNED_AXES[:-2])} (the other settings are fixed)")
    cells, controls = _tuned_and_controls(grid, data_dir)
    if not any(METHODS[config.method].knobs for config in cells):
        raise GslbenchError(f"{source}: no method of the grid has knobs to tune")
    seeds = tuple(sorted({config.seed for config in cells}))
    if len(seeds) < 2:
        raise GslbenchError(f"{source}: tune needs at least 2 seeds, the grid has {len(seeds)}")
    pinned = {method: check_start(method, knobs, source) for method, knobs in (start or {}).items()}
    unused = sorted(set(pinned) - {config.method for config in cells})
    if unused:
        raise GslbenchError(f"{source}: [start.{unused[0]}]: {unused[0]} is not a tuned method "
                            "of the grid")
    studies = {}
    for config in cells:
        base = dataclasses.replace(config, seed=seeds[0], split="validation").resolved()
        sha = (features or {}).get((config.dataset, config.feature), "")
        study = Study(base, seeds, sha, pinned.get(config.method, ()))
        _check_first(study, source)
        studies.setdefault(study.key, study)
    return Plan(trials, tuple(studies.values()), seeds, tuple(controls))


def _check_first(study: Study, source: str) -> None:
    """Refuse trial 0's knobs outside the study's search space (a count of candidates above the
    cell's codebook size)."""
    for name, distribution in study.distributions().items():
        value = study.default[name]
        if isinstance(distribution, optuna.distributions.IntDistribution) and not (
                distribution.low <= value <= distribution.high):
            raise GslbenchError(f"{source}: trial 0 of {study.method} at {study.base.bits} bits, "
                                f"sub_bits {study.base.sub_bits}: {name} = {value} is outside "
                                f"[{distribution.low}, {distribution.high}]; pin another in "
                                f"[start.{study.method}]")


def _tuned_and_controls(grid: Grid, data_dir: str | Path | None
                        ) -> tuple[list[RunConfig], list[RunConfig]]:
    """The grid's cells split into those tune tunes and the controls: cells of a part that sets
    a knob of the cell's method."""
    tuned, controls = {}, {}
    for part in grid.parts:
        set_knobs = {name for name, _ in part if FIELDS[name] in KNOBS}
        for config in Grid((part,), grid.source).cells(data_dir):
            control = set_knobs & {knob.name for knob in config.method_spec.knobs}
            (controls if control else tuned).setdefault(config.run_id, config)
    return list(tuned.values()), list(controls.values())
