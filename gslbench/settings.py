"""A setting of a run: its name, type, default, allowed range and help, declared once.

The run configuration (`gslbench.config.RunConfig`) is built from these declarations: the common
settings of `config.py` and each training method's own knobs (`gslbench.methods`). The CLI
options, the grid keys, the checks and the report labels all derive from them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gslbench.errors import GslbenchError, did_you_mean

SPACE_KINDS = ("log", "float", "int", "choice")


@dataclass(frozen=True)
class Setting:
    """One configuration field.

    name: the field (`qloss_lambda`); the CLI option is `--qloss-lambda`.
    kind: str, int or float. low / high: the allowed range (None: unbounded); `low_open` excludes
    `low` itself. choices: the allowed values of a str setting. symbol: how a method's label shows
    it (`λ`: `qloss λ=0.1`). space: for a method's knob, the search space of `gslbench tune`
    (`Space`): `("log", low, high)` (a float range searched on a log scale: knobs that span
    decades), `("float", low, high)`, `("int", low, high)` or `("choice", (value, ...))`; empty: the
    knob is not tuned (it keeps its default). recorded_at_default: False for a setting added after
    runs existed, which config.json leaves out while it holds its default, so the older runs'
    ids (the hash of config.json's config) stay valid.
    """

    name: str
    kind: type
    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    choices: tuple[str, ...] = ()
    symbol: str = ""
    space: tuple = ()
    recorded_at_default: bool = True

    def __post_init__(self) -> None:
        if self.space:
            self.check_space()

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value: Any, option: str | None = None) -> None:
        """Raise a one-line user error when `value` is not of this setting's kind and range; the
        error names `option` (e.g. bench's `--quantizers`), by default this setting's own."""
        option = option or self.option
        allowed = (int, float) if self.kind is float else (self.kind,)
        if isinstance(value, bool) or not isinstance(value, allowed):
            raise GslbenchError(f"{option} must be a {self.kind.__name__}, got {value!r}")
        if self.choices and value not in self.choices:
            raise GslbenchError(f"{option}: unknown {self.name} {value!r}"
                                f"{did_you_mean(value, self.choices)}; known: "
                                f"{', '.join(self.choices)}")
        if self.kind is str:
            return
        if not math.isfinite(value):
            raise GslbenchError(f"{option} {value} is not a finite number")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        too_high = self.high is not None and value > self.high
        if too_low or too_high:
            raise GslbenchError(f"{option} {self._text(value)} is outside {self.range_text()}")

    def range_text(self) -> str:
        """`[0, 1]`, `(0, inf)`, `[1, inf)`."""
        low = "-inf" if self.low is None else self._text(self.low)
        high = "inf" if self.high is None else self._text(self.high)
        opening = "(" if self.low_open or self.low is None else "["
        return f"{opening}{low}, {high}{')' if self.high is None else ']'}"

    def _text(self, value: float) -> str:
        """A bound or value as this setting shows it: integers in full, floats as %g."""
        return str(int(value)) if self.kind is int else f"{value:g}"

    def check_space(self) -> None:
        """A declaration error (not a user error) unless `space` is a well-formed search space
        whose values are valid values of the setting, the default among them."""
        kind, *bounds = self.space
        if kind == "choice":
            values = tuple(bounds[0])
        elif kind in SPACE_KINDS and len(bounds) == 2 and bounds[0] < bounds[1]:
            values = tuple(bounds)
            if kind == "log" and bounds[0] <= 0:
                raise ValueError(f"{self.name}: a log space needs a positive lower bound")
        else:
            raise ValueError(f"{self.name}: malformed search space {self.space!r}")
        for value in values:
            try:
                self.check(value)
            except GslbenchError as exc:
                raise ValueError(f"{self.name}: search space {self.space!r}: {exc}") from None
        inside = (self.default in values if kind == "choice"
                  else values[0] <= self.default <= values[1])
        if not inside or (kind == "int") != (self.kind is int) or (kind == "choice") != (
                self.kind is str):
            raise ValueError(f"{self.name}: search space {self.space!r} does not fit a "
                             f"{self.kind.__name__} setting whose default is {self.default!r}")

    def label(self, value: Any) -> str:
        """`λ=0.1`, `k=8`: the setting in a method's label."""
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return f"{self.symbol or self.name}={shown}"
