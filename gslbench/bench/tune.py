"""`gslbench tune GRID`: each method's knobs chosen on the validation split, with the same budget
for every method (the design page, docs/design.md, sections 2 and 6).

For every cell of the grid (all its settings but the method, the knobs, the seed and the split:
data set, quantizer, code length, sub-bits, ...) and every method of the grid that has knobs,
`budget` settings of that method's own knobs are tried: the whole product of the knobs'
`Setting.tune` values, or, where the product holds more, a sample of `budget` of them (seeded by
`SAMPLE_SEED`, the same in every cell). The budget is one number for every method, so it can be
at most the smallest product. Each setting is trained at every seed of the grid (at least 2) as a
run of split `validation`: trained on the training pool minus the validation queries, scored by
the mAP of the validation queries against the validation database (`FeatureSet.for_split`), so
no query or database item of the test protocol informs a choice. The runs are ordinary run
directories under RESULTS/tuning/runs (resumable like bench; `split` is part of their run id, so
they are never taken for test runs). The choice of a cell is the setting of highest mean
validation mAP over the seeds (ties: the first tried).

The choices go to a TOML file (`Tuned`), which `gslbench bench GRID --tuned FILE` applies to its
cells, and every setting tried with its validation mAP to the tuning table
(`gslbench.report.tuning`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gslbench import layout
from gslbench.bench import describe, run_grid
from gslbench.bench.executors import ExecutorConfig
from gslbench.bench.grid import Cells, Grid
from gslbench.config import FIELDS, KNOBS, RunConfig
from gslbench.data import feature_path
from gslbench.data.featurefile import has_validation_split
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS, Method
from gslbench.report.frames import read_runs
from gslbench.report.tuning import tuning_document
from gslbench.storage import atomic_path

SAMPLE_SEED = 0
# The settings that name a tuning cell: every field but the method, the knobs, the seed and the split
CELL_FIELDS = tuple(name for name, setting in FIELDS.items()
                    if name not in ("method", "seed", "split") and setting not in KNOBS)
KEY_FIELDS = ("dataset", "quantizer", "bits", "sub_bits")  # in every choice, even when shared
# the axes a tuning grid may have: what names a cell in the tuning table, then method and seed
TUNED_AXES = ("dataset", "feature", "loss", "quantizer", "bits", "sub_bits", "method", "seed")


def knob_settings(method: type[Method], budget: int) -> list[dict[str, Any]]:
    """`budget` settings of the method's knobs: their whole `Setting.tune` product in order, or a
    sorted sample of it (seeded by SAMPLE_SEED) when it is larger; more is a user error."""
    product = [dict(zip((knob.name for knob in method.knobs), values, strict=True))
               for values in itertools.product(*(knob.tune for knob in method.knobs))]
    if budget > len(product):
        raise GslbenchError(f"--budget {budget}: {method.name}'s knobs offer only {len(product)} "
                            "settings (their tune values); the budget is the same for every method")
    if budget == len(product):
        return product
    chosen = np.random.default_rng(SAMPLE_SEED).choice(len(product), budget, replace=False)
    return [product[i] for i in sorted(chosen)]


@dataclass(frozen=True)
class Plan:
    """What tune runs: the methods with knobs, each one's settings, the validation runs."""

    budget: int
    settings: dict[str, list[dict[str, Any]]]  # method -> its settings, in the order tried
    runs: tuple[RunConfig, ...]
    seeds: tuple[int, ...]


def plan(grid: Grid, budget: int | None = None) -> Plan:
    """The tuning runs of a grid (see the module docstring); a grid that sets knobs or the split,
    has fewer than 2 seeds or no method with knobs is a user error. budget: default, the
    smallest number of settings any of the grid's tuned methods offers."""
    source = grid.source or "grid"
    decided = sorted(grid.fields() & ({k.name for k in KNOBS} | {"split"}))
    if decided:
        raise GslbenchError(f"{source}: {decided[0]} is chosen by tune, not by the grid "
                            "(it tries each knob's tune values on the validation split)")
    other = sorted(set(grid.axes()) - set(TUNED_AXES))
    if other:
        raise GslbenchError(f"{source}: {other[0]} is an axis; tune's cells are those of "
                            f"{', '.join(TUNED_AXES[:-2])} (the other settings are fixed)")
    cells = grid.cells()
    seeds = tuple(sorted({config.seed for config in cells}))
    if len(seeds) < 2:
        raise GslbenchError(f"{source}: tune needs at least 2 seeds, the grid has {len(seeds)}")
    methods = [name for name in dict.fromkeys(c.method for c in cells) if METHODS[name].knobs]
    if not methods:
        raise GslbenchError(f"{source}: no method of the grid has knobs to tune")
    offered = {name: int(np.prod([len(knob.tune) for knob in METHODS[name].knobs]))
               for name in methods}
    budget = budget or min(offered.values())
    settings = {name: knob_settings(METHODS[name], budget) for name in methods}
    runs = tuple(dataclasses.replace(config, split="validation", **setting)
                 for config in cells if config.method in settings
                 for setting in settings[config.method])
    return Plan(budget, settings, runs, seeds)


def tune(grid: Grid, data_dir: str | Path, results_dir: str | Path, budget: int | None = None,
         executor: ExecutorConfig | None = None, force: bool = False,
         show_progress: bool = True) -> tuple[Plan, pd.DataFrame, int]:
    """Run the tuning runs of `grid` under RESULTS/tuning (resumable) and read their validation
    mAPs; returns the plan, the results frame of the evaluated runs (`frames.read_runs`, plus
    each run's `cell_key`) and the number of failed runs (each logged as one line)."""
    tuning = plan(grid, budget)
    for dataset, feature in sorted({(c.dataset, c.feature) for c in tuning.runs}):
        path = feature_path(data_dir, dataset, feature)
        if path.is_file() and not has_validation_split(path):
            raise GslbenchError(f"{path}: no validation split (feature file format_version 1); "
                                f"run `gslbench features {dataset}` again to add it")
    outcome = run_grid(Cells(tuning.runs), data_dir, layout.tuning_dir(results_dir), executor,
                       force=force, show_progress=show_progress)
    if not outcome.run_dirs:
        return tuning, pd.DataFrame(columns=["cell", "method"]), len(outcome.failed)
    cells = {config.run_id: cell_key(config) for config in tuning.runs}
    results = read_runs(outcome.run_dirs).results
    return tuning, results.assign(cell=results.run.map(cells)), len(outcome.failed)


def cell_key(config: RunConfig) -> str:
    """A tuning cell's name: the JSON of its `CELL_FIELDS` values."""
    return json.dumps({name: getattr(config, name) for name in CELL_FIELDS}, sort_keys=True)


def choose(tuning: Plan, results: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, tuned method) whose every setting ran at every seed: the setting of highest
    mean validation mAP (ties: the first tried). Columns: cell, method, variant, knobs (the
    setting, a dict), validation_map (its mean over the seeds)."""
    rows = []
    for (cell, method), group in results.groupby(["cell", "method"], sort=False):
        counts = group.groupby("variant")["map"].count()
        tried = [METHODS[method].label(setting) for setting in tuning.settings[method]]
        if set(counts.index) != set(tried) or (counts < len(tuning.seeds)).any():
            continue  # some run failed or is missing: no choice for this cell
        means = group.groupby("variant")["map"].mean().reindex(tried)
        best = tried.index(means.idxmax())
        rows.append({"cell": cell, "method": method, "variant": tried[best],
                     "knobs": tuning.settings[method][best],
                     "validation_map": float(means.iloc[best])})
    return pd.DataFrame(rows, columns=["cell", "method", "variant", "knobs", "validation_map"])


@dataclass(frozen=True)
class Tuned:
    """The choices of a tuning run: per cell (`CELL_FIELDS` values) and method, its knob values.

    File layout (TOML): `budget`, `seeds`, a `[shared]` table with the cell fields every choice
    has in common, and one `[[choice]]` table per (cell, method): the other cell fields (always
    dataset, quantizer, bits, sub_bits), `method`, the knob values, `validation_map`.
    """

    budget: int
    seeds: tuple[int, ...]
    shared: dict[str, Any]
    choices: tuple[dict[str, Any], ...]
    source: str = ""

    @classmethod
    def from_choices(cls, tuning: Plan, chosen: pd.DataFrame) -> Tuned:
        cells = [json.loads(cell) for cell in chosen.cell]
        shared = {name: cells[0][name] for name in CELL_FIELDS if name not in KEY_FIELDS
                  and all(cell[name] == cells[0][name] for cell in cells)} if cells else {}
        choices = []
        for cell, (_, row) in zip(cells, chosen.iterrows(), strict=True):
            choices.append({**{n: cell[n] for n in CELL_FIELDS if n not in shared},
                            "method": row.method, **row.knobs, "validation_map": row.validation_map})
        return cls(tuning.budget, tuning.seeds, shared, tuple(choices))

    @classmethod
    def read(cls, path: str | Path) -> Tuned:
        """A tuned file; a missing or malformed one is a one-line user error naming it."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
            tuned = cls(int(data["budget"]), tuple(data["seeds"]), dict(data["shared"]),
                        tuple(dict(choice) for choice in data["choice"]), str(path))
            for choice in tuned.choices:
                RunConfig(**{**tuned.shared, **{k: v for k, v in choice.items()
                                                if k != "validation_map"}})
        except FileNotFoundError:
            raise GslbenchError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise GslbenchError(f"{path}: not a readable TOML file ({exc})") from None
        except (KeyError, TypeError, ValueError, GslbenchError) as exc:
            raise GslbenchError(f"{path}: not a gslbench tuned file ({type(exc).__name__}: "
                                f"{exc})") from None
        return tuned

    def write(self, path: str | Path, header: str = "") -> None:
        """Write the TOML file atomically; `header` becomes its leading comment lines."""
        lines = [*(f"# {line}".rstrip() for line in header.splitlines()),
                 f"budget = {self.budget}", f"seeds = {_toml(list(self.seeds))}", "", "[shared]",
                 *(f"{name} = {_toml(value)}" for name, value in self.shared.items())]
        for choice in self.choices:
            lines += ["", "[[choice]]", *(f"{name} = {_toml(value)}" for name, value in choice.items())]
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")

    def apply(self, config: RunConfig) -> RunConfig:
        """The cell with its method's knobs set to the tuned choice; methods without knobs as
        they are. A cell that was not tuned is a user error."""
        knobs = config.method_spec.knobs
        if not knobs:
            return config
        cell = {name: getattr(config, name) for name in CELL_FIELDS}
        differ = [f"{name}={value!r} (this grid: {cell[name]!r})"
                  for name, value in self.shared.items() if cell[name] != value]
        if differ:
            raise GslbenchError(f"{self.source}: tuned with {', '.join(differ)}; tune this grid's "
                                "settings first")
        for choice in self.choices:
            if choice["method"] == config.method and all(
                    cell[name] == value for name, value in choice.items() if name in cell):
                return dataclasses.replace(config, **{k.name: choice[k.name] for k in knobs})
        raise GslbenchError(f"{self.source}: no tuned choice for {describe(config)} "
                            f"(sub_bits {config.sub_bits}); tune this cell first")

    def cells(self, grid: Grid) -> Cells:
        """The grid's cells with the tuned knobs (`apply`), as bench runs them."""
        return Cells(tuple(self.apply(config).resolved() for config in grid.cells()),
                     shown=tuple(grid.axes().items()))


def _toml(value: Any) -> str:
    """A TOML value: a string, a boolean, an integer, a float (repr: 0.1, 1e-05) or a list."""
    if isinstance(value, list):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value.item() if isinstance(value, np.generic) else value)


def summary(tuning: Plan, grid_file: str | Path) -> str:
    """What was tuned and how, in a few lines (the tuned file's header, the table's preamble)."""
    tried = "; ".join(f"`{name}`: " + ", ".join(METHODS[name].label(s).split(" ", 1)[1]
                                                 for s in settings)
                      for name, settings in tuning.settings.items())
    return (f"Generated by `gslbench tune {grid_file}`: a budget of {tuning.budget} settings of "
            f"each method's own knobs per cell, the same for every method ({tried}); each "
            f"trained at seeds {', '.join(map(str, tuning.seeds))} on the training pool minus "
            "the validation queries and scored by the mAP of the validation queries against "
            "the validation database (no test query or database item is used). The choice of a "
            "cell: the highest mean validation mAP over the seeds.")


def write_outputs(tuning: Plan, results: pd.DataFrame, chosen: pd.DataFrame,
                  grid_file: str | Path, out: str | Path, doc: str | Path, intro: str = "") -> None:
    """Write the tuned file `out` (`Tuned`) and the tuning table `doc` (`report.tuning`)."""
    text = summary(tuning, grid_file)
    Tuned.from_choices(tuning, chosen).write(out, header=textwrap.fill(text, 98))
    with atomic_path(doc) as tmp:
        tmp.write_text(tuning_document(results, chosen, textwrap.fill(text, 98), intro),
                       encoding="utf-8")
