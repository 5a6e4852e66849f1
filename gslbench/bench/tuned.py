"""The choices of `gslbench tune` as a TOML file (`Tuned`), and how `bench --tuned` applies them
to a grid's cells (controls keep the knobs their grid part sets)."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gslbench.bench.grid import Cells, Grid
from gslbench.bench.progress import describe
from gslbench.bench.studies import CELL_FIELDS
from gslbench.config import FIELDS, KNOBS, RunConfig
from gslbench.errors import GslbenchError
from gslbench.storage import atomic_path

if TYPE_CHECKING:
    import pandas as pd

    from gslbench.bench.tuning_plan import Plan

KEY_FIELDS = ("dataset", "protocol", "quantizer", "bits", "sub_bits")  # in every choice


@dataclass(frozen=True)
class Tuned:
    """The choices of a tuning run: per cell (`CELL_FIELDS` values) and method, its knob values.

    File layout (TOML): `trials`, `seeds`, a `[shared]` table with the cell fields every choice
    has in common, and one `[[choice]]` table per (cell, method): the other cell fields (always
    `KEY_FIELDS`), `method`, the knob values, `validation_map`.
    """

    trials: int
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
        return cls(tuning.trials, tuning.seeds, shared, tuple(choices))

    @classmethod
    def read(cls, path: str | Path) -> Tuned:
        """A tuned file; a missing or malformed one is a one-line user error naming it."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
            tuned = cls(int(data["trials"]), tuple(data["seeds"]), dict(data["shared"]),
                        tuple(dict(choice) for choice in data.get("choice", [])), str(path))
            for number, choice in enumerate(tuned.choices, 1):
                config = RunConfig(**{**tuned.shared, **{k: v for k, v in choice.items()
                                                         if k != "validation_map"}})
                missing = [knob.name for knob in config.method_spec.knobs if knob.name not in choice]
                if missing:
                    raise ValueError(f"choice {number} ({config.method}) has no {missing[0]}")
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
                 f"trials = {self.trials}", f"seeds = {toml_value(list(self.seeds))}", "", "[shared]",
                 *(f"{name} = {toml_value(value)}" for name, value in self.shared.items())]
        for choice in self.choices:
            lines += ["", "[[choice]]", *(f"{name} = {toml_value(value)}" for name, value in choice.items())]
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text("\n".join(lines) + "\n")

    def apply(self, config: RunConfig, keep: frozenset[str] = frozenset()) -> RunConfig:
        """The cell with its method's knobs set to the tuned choice, except those in `keep` (a
        control's knobs, set by the grid); methods without knobs, and cells whose grid sets all
        their knobs, as they are (tune need not have covered them). A cell that was not tuned is
        a user error."""
        knobs = [knob for knob in config.method_spec.knobs if knob.name not in keep]
        if not knobs:  # no knobs, or a control that sets them all: nothing to look up
            return config
        cell = {name: getattr(config, name) for name in CELL_FIELDS}
        differ = [f"{name}={value!r} (this grid: {cell[name]!r})"
                  for name, value in self.shared.items() if name in cell and cell[name] != value]
        if differ:
            raise GslbenchError(f"{self.source}: tuned with {', '.join(differ)}; tune this grid's "
                                "settings first")
        for choice in self.choices:
            if choice["method"] == config.method and all(
                    cell.get(name, FIELDS[name].default) == value
                    for name, value in choice.items() if name in FIELDS and name in CELL_FIELDS):
                return dataclasses.replace(config, **{k.name: choice[k.name] for k in knobs})
        raise GslbenchError(f"{self.source}: no tuned choice for {describe(config)} "
                            f"(sub_bits {config.sub_bits}, protocol {config.protocol}); tune this "
                            "cell first")

    def cells(self, grid: Grid, data_dir: str | Path | None = None) -> Cells:
        """The grid's cells with the tuned knobs (`apply`), as bench runs them; a control (a
        part that sets a knob of the cell's method) keeps the knobs its part sets. data_dir:
        where imported data sets are (`Grid.cells`)."""
        configs = []
        for part in grid.parts:
            set_knobs = frozenset(name for name, _ in part if FIELDS[name] in KNOBS)
            configs += [self.apply(config, set_knobs).resolved()
                        for config in Grid((part,), grid.source).cells(data_dir)]
        return Cells(tuple(configs), shown=tuple(grid.axes().items()),
                     codebooks=grid.codebooks)


def toml_value(value: Any) -> str:
    """A TOML value: a string, a boolean, an integer, a float (repr: 0.1, 1e-05) or a list."""
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value.item() if isinstance(value, np.generic) else value)
