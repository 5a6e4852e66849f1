"""A benchmark grid: values for RunConfig fields; a field with several values is an axis.

A grid is declared in a TOML file (`gslbench bench GRID.toml`) whose keys are RunConfig fields:

    dataset = ["cifar10", "nuswide21"]     # a list is an axis
    method = ["float", "two-step", "qloss", "gsl"]
    bits = [32, 64, 128]
    gsl_alpha = [0.25, 1.0]                # hyper-parameters are axes too
    epochs = 40                            # a scalar is a setting shared by every cell

or given by bench's flags. A field left out takes its RunConfig default, except `feature`, which
defaults to each data set's own feature.
"""

from __future__ import annotations

import itertools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gslbench.config import FIELDS, RunConfig
from gslbench.data import get_dataset
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS
from gslbench.quantizers import make_quantizer

FIELD_TYPES: dict[str, type] = {name: setting.kind for name, setting in FIELDS.items()}

# The grid `gslbench bench` runs without arguments (benchmarks/quick.toml declares the same).
DEFAULT_AXES: dict[str, tuple] = {
    "dataset": ("digits",),
    "method": tuple(METHODS),
    "quantizer": ("pq",),
    "bits": (16, 32, 64),
    "seed": (0,),
}


@dataclass(frozen=True)
class Grid:
    """The values of each given RunConfig field, in field order; `source` names the TOML file."""

    values: tuple[tuple[str, tuple], ...]
    source: str = ""

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any], source: str = "") -> Grid:
        """A grid from {field: value or list of values}; unknown fields and wrong types are errors."""
        unknown = sorted(set(settings) - set(FIELD_TYPES))
        if unknown:
            raise GslbenchError(f"{source or 'grid'}: unknown key {unknown[0]!r}; "
                                f"known: {', '.join(FIELD_TYPES)}")
        values = tuple((name, _field_values(name, settings[name], source))
                       for name in FIELD_TYPES if name in settings)
        return cls(values, source)

    def axes(self) -> dict[str, tuple]:
        """The fields with more than one value."""
        return {name: values for name, values in self.values if len(values) > 1}

    def cells(self, data_dir: str | Path | None = None) -> list[RunConfig]:
        """The distinct resolved configs of the grid, all validated (names, bits, quantizers);
        `data_dir` holds the data sets imported there.

        Float cells collapse across bits and quantizers, and a setting a method does not use does
        not split its runs (`RunConfig.resolved`).
        """
        names = [name for name, _ in self.values]
        configs: dict[str, RunConfig] = {}
        try:
            for combination in itertools.product(*(values for _, values in self.values)):
                settings = dict(zip(names, combination, strict=True))
                dataset = get_dataset(settings.get("dataset", FIELDS["dataset"].default), data_dir)
                settings.setdefault("feature", dataset.default_feature)
                config = RunConfig(**settings).resolved()
                if config.run_id not in configs and config.quantized:
                    make_quantizer(config.quantizer, config.dim_out, config.bits, config.sub_bits)
                configs.setdefault(config.run_id, config)
        except GslbenchError as exc:
            raise GslbenchError(f"{self.source}: {exc}" if self.source else str(exc)) from None
        return list(configs.values())


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


def _field_values(name: str, value: Any, source: str) -> tuple:
    """A field's value or list of values as a tuple of the field's type, duplicates dropped."""
    items = list(value) if isinstance(value, list | tuple) else [value]
    kind = FIELD_TYPES[name]
    allowed = (int, float) if kind is float else (kind,)
    if not items or any(isinstance(item, bool) or not isinstance(item, allowed) for item in items):
        raise GslbenchError(f"{source or 'grid'}: {name} must be a {kind.__name__} or a non-empty "
                            f"list of them, got {value!r}")
    return tuple(dict.fromkeys(kind(item) for item in items))
