"""The comparisons a results grid declares before its runs: the `[comparisons]` table of a grid
file, which `gslbench report --grid GRID.toml` tests (`gslbench.report.stats.comparisons`).

    [comparisons]
    pairs = [["gsl", "two-step"], ["gsl", "qloss"], ["gsl", "pca"], ["gsl", "best-other"]]
    quantizer = ["pq", "opq"]              # optional: only these regimes (a value or a list)

Each pair is (method, against): a method name (every variant of that method: the tuned one and
any control) or a variant label (`gsl α=0 k=8 select=aligned`); `against` may be `best-other`,
the method other than `method`'s (and not float) with the highest *validation* mAP in the regime
(tuned.toml's `validation_map`). The other keys (`REGIME_FIELDS`) keep only the regimes with those
values; without them the comparisons run in every table cell of the grid (every data set,
protocol, condition, codebook fit, quantizer, codebook size and code length). A grid without a
`[comparisons]` table, or a report without --grid, uses `DEFAULT` (the pairs above, every regime).
Every comparison the report makes is one Holm family.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gslbench.errors import GslbenchError

BEST_OTHER = "best-other"
DEFAULT_PAIRS = (("gsl", "two-step"), ("gsl", "qloss"), ("gsl", "pca"), ("gsl", BEST_OTHER))
# the regime keys a declaration may restrict (the report's regime columns)
REGIME_FIELDS = ("dataset", "feature", "protocol", "condition", "loss", "quantizer", "sub_bits",
                 "code_bits", "codebooks", "search", "metric")


@dataclass(frozen=True)
class Declared:
    """Declared comparisons: `pairs` (method, against) and `regimes` (field, allowed values); no
    regimes: every regime."""

    pairs: tuple[tuple[str, str], ...] = DEFAULT_PAIRS
    regimes: tuple[tuple[str, tuple], ...] = ()

    @classmethod
    def parse(cls, table: Any, source: str = "grid") -> Declared:
        """The `[comparisons]` table of a grid file (`source` names it in errors); a malformed
        one is a one-line user error."""
        where = f"{source}: [comparisons]"
        if not isinstance(table, dict):
            raise GslbenchError(f"{where} must be a table (pairs = [[METHOD, AGAINST], ...])")
        unknown = sorted(set(table) - {"pairs", *REGIME_FIELDS})
        if unknown:
            raise GslbenchError(f"{where}: unknown key {unknown[0]!r}; known: pairs, "
                                f"{', '.join(REGIME_FIELDS)}")
        pairs = table.get("pairs", [list(pair) for pair in DEFAULT_PAIRS])
        if not isinstance(pairs, list) or not pairs or not all(
                isinstance(pair, list) and len(pair) == 2
                and all(isinstance(name, str) and name.strip() for name in pair)
                for pair in pairs):
            raise GslbenchError(f"{where}: pairs must be a non-empty list of [METHOD, AGAINST] "
                                f"names, got {pairs!r}")
        for method, against in pairs:
            if method == against or method == BEST_OTHER:
                raise GslbenchError(f"{where}: the pair [{method!r}, {against!r}] compares "
                                    f"nothing ({BEST_OTHER} may only be the second name)")
        regimes = []
        for name in REGIME_FIELDS:
            if name in table:
                values = table[name] if isinstance(table[name], list) else [table[name]]
                if not values or not all(isinstance(v, str | int) and not isinstance(v, bool)
                                         for v in values):
                    raise GslbenchError(f"{where}: {name} must be a value or a non-empty list, "
                                        f"got {table[name]!r}")
                regimes.append((name, tuple(dict.fromkeys(values))))
        return cls(tuple(dict.fromkeys((m, a) for m, a in pairs)), tuple(regimes))

    def covers(self, regime: Mapping[str, Any]) -> bool:
        """Whether a regime ({regime column: value}) is among the declared ones."""
        return all(regime.get(name) in values for name, values in self.regimes)

    def table(self) -> dict[str, list]:
        """The `[comparisons]` table this declaration parses from (`parse(d.table()) == d`)."""
        return {"pairs": [list(pair) for pair in self.pairs],
                **{name: list(values) for name, values in self.regimes}}

    def text(self) -> str:
        """`gsl − two-step, gsl − best-other, over every regime` (what is declared, not where: a
        document rebuilt from its CSV says the same)."""
        pairs = ", ".join(f"{method} − {against}" for method, against in self.pairs)
        where = "; ".join(f"{name} {', '.join(map(str, values))}"
                          for name, values in self.regimes) or "every regime"
        return f"{pairs}, over {where}"


DEFAULT = Declared()


def declared_of(settings: Mapping[str, Any], source: str = "grid") -> Declared:
    """The declaration of a grid file's settings (`DEFAULT` without a `[comparisons]` table)."""
    return Declared.parse(settings["comparisons"], source) if "comparisons" in settings else DEFAULT


def validation_maps(choices: Iterable[Mapping[str, Any]], shared: Mapping[str, Any],
                    configs: Iterable[Any]) -> dict[str, float]:
    """Run id -> the validation mAP of the tuned choice a run is (`bench --tuned`'s cells
    `configs`; `choices` and `shared`: a tuned.toml's `[[choice]]` and `[shared]` tables): its
    method, cell and knobs are the choice's. A control (other knobs than the tuned ones) has
    none; the draw and seed of a run do not matter (tuning ran at its own seeds)."""
    by_method: dict[str, list[dict]] = {}
    for choice in choices:
        settings = {**shared, **choice}
        by_method.setdefault(settings["method"], []).append(settings)
    found = {}
    for config in configs:
        for settings in by_method.get(config.method, []):
            if all(getattr(config, name, value) == value for name, value in settings.items()
                   if name not in ("validation_map", "draw", "seed", "split")):
                found[config.run_id] = float(settings["validation_map"])
                break
    return found
