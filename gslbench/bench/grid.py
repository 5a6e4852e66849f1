"""A benchmark grid: values for RunConfig fields; a field with several values is an axis.

A grid is declared in a TOML file (`gslbench bench GRID.toml`) whose keys are RunConfig fields:

    dataset = ["cifar10", "nuswide21"]     # a list is an axis
    method = ["float", "two-step", "qloss", "gsl"]
    bits = [32, 64, 128]
    gsl_alpha = [0.25, 1.0]                # hyper-parameters are axes too
    epochs = 40                            # a scalar is a setting shared by every cell

or given by bench's flags. The key `codebooks` (bench's --codebooks) lists the codebook fits each
quantized cell is encoded and evaluated with (`layout.CODEBOOKS`, default both: "train" and
"database"); float cells have only their train codes. A field left out takes its RunConfig
default, except `feature`, which defaults to each data set's own feature. A grid may be a union
of products: each `[[grid]]` table is one part, its keys over the file's top-level ones:

    method = ["float", "two-step", "qloss", "gsl"]
    [[grid]]                               # 16-word codebooks at 8 to 64 bits
    sub_bits = 4
    bits = [8, 16, 32, 64]
    [[grid]]                               # 256-word codebooks at 16 to 64 bits
    sub_bits = 8
    bits = [16, 32, 64]

A `[comparisons]` table declares what the report tests (`gslbench.declared`); it sets no
run.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gslbench.config import FIELDS, RunConfig
from gslbench.data import DATASETS, get_dataset
from gslbench.data.backbones import check_fine_tunable
from gslbench.data.features import check_feature
from gslbench.declared import DEFAULT, Declared, declared_of
from gslbench.errors import GslbenchError, did_you_mean
from gslbench.layout import CODEBOOKS, check_codebooks
from gslbench.methods import BUILTIN_METHODS

FIELD_TYPES: dict[str, type] = {name: setting.kind for name, setting in FIELDS.items()}

# The grid `gslbench bench` runs without arguments (benchmarks/quick.toml declares the same):
# the built-in methods, whatever plugins are installed.
DEFAULT_AXES: dict[str, tuple] = {
    "dataset": ("digits",),
    "method": tuple(BUILTIN_METHODS),
    "quantizer": ("pq",),
    "bits": (16, 32, 64),
    "seed": (0,),
}


@dataclass(frozen=True)
class Grid:
    """The values of each given RunConfig field (in field order) per part; the grid's cells are
    the union of its parts' products. `source` names the TOML file; `codebooks` are the fits
    each quantized cell is encoded and evaluated with; `comparisons` what its report tests."""

    parts: tuple[tuple[tuple[str, tuple], ...], ...]
    source: str = ""
    codebooks: tuple[str, ...] = CODEBOOKS
    comparisons: Declared = DEFAULT

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any], source: str = "",
                     overrides: Mapping[str, Any] | None = None) -> Grid:
        """A grid from {field: value or list of values}; unknown fields and wrong types are errors.

        A `grid` key holding a list of tables (TOML `[[grid]]`) makes one part per table, its
        keys over the others; `overrides` (the flags given on bench's command line) go over all.
        A `comparisons` table is the declaration of `gslbench.declared`.
        """
        settings, overrides = dict(settings), dict(overrides or {})
        declared = declared_of(settings, source or "grid")
        settings.pop("comparisons", None)
        tables = settings.pop("grid", [{}])
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise GslbenchError(f"{source or 'grid'}: grid must be a list of tables ([[grid]]), "
                                f"got {tables!r}")
        codebooks = _codebooks(overrides.pop("codebooks", settings.pop("codebooks", CODEBOOKS)),
                               source)
        return cls(tuple(_part({**settings, **table, **overrides}, source) for table in tables),
                   source, codebooks, declared)

    def fields(self) -> set[str]:
        """The fields the grid sets (in any part)."""
        return {name for part in self.parts for name, _ in part}

    def axes(self) -> dict[str, tuple]:
        """The fields with more than one value (within a part or across parts: a part that does
        not set a field another part sets has its default)."""
        found: dict[str, dict] = {}
        for part in self.parts:
            for name, values in part:
                found.setdefault(name, {}).update(dict.fromkeys(values))
        for part in self.parts:
            for name in found.keys() - {name for name, _ in part}:
                found[name].setdefault(FIELDS[name].default)
        return {name: tuple(values) for name, values in found.items() if len(values) > 1}

    def cells(self, data_dir: str | Path | None = None) -> list[RunConfig]:
        """The distinct resolved configs of the grid, all validated (every setting's range,
        names, feature names, bits, quantizers: `RunConfig`); `data_dir` holds the data sets
        imported there.

        Float cells collapse across bits and quantizers, and a setting a method does not use does
        not split its runs (`RunConfig.resolved`).
        """
        configs: dict[str, RunConfig] = {}
        try:
            for part in self.parts:
                names = [name for name, _ in part]
                for combination in itertools.product(*(values for _, values in part)):
                    config = _config(dict(zip(names, combination, strict=True)), data_dir)
                    configs.setdefault(config.run_id, config)
        except GslbenchError as exc:
            raise GslbenchError(f"{self.source}: {exc}" if self.source else str(exc)) from None
        return list(configs.values())


def _part(settings: Mapping[str, Any], source: str) -> tuple[tuple[str, tuple], ...]:
    unknown = sorted(set(settings) - set(FIELD_TYPES))
    if unknown:
        raise GslbenchError(f"{source or 'grid'}: unknown key {unknown[0]!r}"
                            f"{did_you_mean(unknown[0], FIELD_TYPES)}; "
                            f"known: {', '.join(FIELD_TYPES)}")
    return tuple((name, _field_values(name, settings[name], source))
                 for name in FIELD_TYPES if name in settings)


def _config(settings: dict[str, Any], data_dir: str | Path | None = None) -> RunConfig:
    """The resolved RunConfig of one combination; `feature` defaults to the data set's own (an
    imported data set's is read from `data_dir`)."""
    dataset = get_dataset(settings.get("dataset", FIELDS["dataset"].default), data_dir)
    settings.setdefault("feature", dataset.default_feature)
    # a feature is a backbone's name, suffixed with a CNN input size (`-224`)
    backbone = re.sub(r"-\d+$", "", settings["feature"])
    check_feature(dataset, backbone)
    if settings.get("train_blocks"):  # as the activation cache will (an imported set has no CNN)
        check_fine_tunable(backbone if dataset.name in DATASETS else "imported",
                           settings["train_blocks"], settings["feature"], dataset.name)
    return RunConfig(**settings).resolved()


@dataclass(frozen=True)
class Cells:
    """Run configs given one by one (tune's runs, a grid with tuned knobs), which bench runs like
    a grid's cells: `cells()` (distinct by run id, in order), `axes()` (`shown`, else the
    fields that take more than one value among the cells) and the codebook fits (`Grid`'s)."""

    configs: tuple[RunConfig, ...]
    shown: tuple[tuple[str, tuple], ...] | None = None
    codebooks: tuple[str, ...] = CODEBOOKS

    def cells(self, data_dir: str | Path | None = None) -> list[RunConfig]:
        """The configs, distinct by run id, in order (`data_dir`: as `Grid.cells`, unused)."""
        return list({config.run_id: config for config in self.configs}.values())

    def axes(self) -> dict[str, tuple]:
        if self.shown is not None:
            return dict(self.shown)
        values = {name: tuple(dict.fromkeys(getattr(c, name) for c in self.configs))
                  for name in FIELD_TYPES}
        return {name: found for name, found in values.items() if len(found) > 1}


def read_grid_file(path: str | Path) -> dict[str, Any]:
    """The settings of a grid TOML file; a missing, unreadable or invalid file is a user error."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise GslbenchError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise GslbenchError(f"{path}: cannot read ({exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise GslbenchError(f"{path}: not valid TOML ({exc})") from None


def _codebooks(value: Any, source: str) -> tuple[str, ...]:
    """The grid's codebook fits: a non-empty list of `layout.CODEBOOKS`, duplicates dropped."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or not all(isinstance(item, str) for item in items):
        raise GslbenchError(f"{source or 'grid'}: codebooks must be a non-empty list of "
                            f"{', '.join(CODEBOOKS)}, got {value!r}")
    try:
        return tuple(check_codebooks(item) for item in dict.fromkeys(items))
    except GslbenchError as exc:
        raise GslbenchError(f"{source or 'grid'}: {exc}") from None


def _field_values(name: str, value: Any, source: str) -> tuple:
    """A field's value or list of values as a tuple of the field's type, duplicates dropped."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    kind = FIELD_TYPES[name]
    allowed = (int, float) if kind is float else (kind,)
    if not items or any(isinstance(item, bool) or not isinstance(item, allowed) for item in items):
        raise GslbenchError(f"{source or 'grid'}: {name} must be a {kind.__name__} or a non-empty "
                            f"list of them, got {value!r}")
    return tuple(dict.fromkeys(kind(item) for item in items))
