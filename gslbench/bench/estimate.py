"""What the cells left to run will cost: `bench --dry-run`'s estimate, timed from finished runs.

A finished run's metrics files record the seconds it spent: training (`train_s`, the
training-set codebooks' final fit included) once, then for each codebook fit the encoding
(`encode_s`, the database fit included) and the evaluation (`eval_s`). A cell left to run costs
what finished runs most like it cost (the median over them), found at the first level of
`MATCH_LEVELS` where one exists: its own settings but another seed or draw; then the same
method, quantizer, code length and split under other knobs or schedules (a tuning trial fits no
database codebooks and ranks a smaller database than a test run: it is timed from trials first);
then the same under another split (a trial trains what the test run trains); then any method of
the same quantizer and code length; then any run of the same data set, representation and
fine-tuning. A cell matched at no level is counted as not estimated, never as free.

The estimate is cell time: summed over cells, as if one worker ran them all. With `-j J` local
workers sharing the machine as the timed runs did, wall time is about the sum over J. Runs that
started from another run's checkpoint took fewer epochs than one that trained its warm-up
itself; the median over seeds absorbs it. This module imports neither torch nor faiss.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gslbench import layout
from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.storage import read_json

# The fields two runs must share at each level; None: every field but seed and draw.
_CODE = ("dataset", "feature", "train_blocks", "protocol", "method", "quantizer", "bits",
         "sub_bits")
MATCH_LEVELS: tuple[tuple[str, ...] | None, ...] = (
    None,
    (*_CODE, "split"),
    _CODE,
    ("dataset", "feature", "train_blocks", "protocol", "quantizer", "bits", "sub_bits"),
    ("dataset", "feature", "train_blocks"),
)
UNPAIRED = ("seed", "draw")


@dataclass(frozen=True)
class Estimate:
    """Cells left to run and their cost: `seconds` summed over the `estimated` ones, `per_level`
    how many were matched at each level of `MATCH_LEVELS`, `timed_runs` the finished runs timed;
    `unestimated` cells found no finished run like them."""

    cells: int
    seconds: float
    per_level: tuple[int, ...]
    timed_runs: int

    @property
    def estimated(self) -> int:
        return sum(self.per_level)

    @property
    def unestimated(self) -> int:
        return self.cells - self.estimated

    def wall_seconds(self, jobs: int) -> float:
        """Wall time with `jobs` workers sharing the machine as the timed runs did."""
        return self.seconds / max(jobs, 1)


def run_seconds(run: layout.RunDir) -> tuple[dict, float] | None:
    """A finished run's config (a dict of RunConfig's fields) and its seconds: training once plus
    encoding and evaluation of each codebook fit it was evaluated with (default search mode).
    None where it has no readable metrics.json or a time is missing or out of range."""
    total, config = None, None
    for codebooks in layout.CODEBOOKS:
        path = run.metrics_file(codebooks=codebooks)
        if not path.is_file():
            continue
        try:
            record = read_json(path)
            times = [record["encode_s"], record["eval_s"]]
            if total is None:
                times.append(record["train_s"])
                config = record["config"]
        except (GslbenchError, KeyError, TypeError):
            return None
        if not all(_seconds(value) for value in times) or not isinstance(config, dict):
            return None
        total = (total or 0.0) + sum(times)
    return None if total is None else (config, total)


def _seconds(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value) and value >= 0


def timings(results_dirs: Iterable[str | Path]) -> list[tuple[dict, float]]:
    """(config, seconds) of every finished run under each results folder's runs/ and
    tuning/runs/ (tune's trials: the same training, a smaller validation database)."""
    found = []
    for results_dir in results_dirs:
        for root in (Path(results_dir), layout.tuning_dir(results_dir)):
            for run in layout.list_runs(root):
                timed = run_seconds(run)
                if timed is not None:
                    found.append(timed)
    return found


def _key(config: dict, level: tuple[str, ...] | None) -> tuple:
    names = sorted(set(config) - set(UNPAIRED)) if level is None else level
    return tuple((name, _hashable(config.get(name))) for name in names)


def _hashable(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def estimate(cells: Iterable[RunConfig], timed: list[tuple[dict, float]]) -> Estimate:
    """The cost of `cells` (those left to run) from the `timed` finished runs (see the module
    docstring)."""
    total, per_level, count = 0.0, [0] * len(MATCH_LEVELS), 0
    for _, matched in cell_seconds(cells, timed):
        count += 1
        if matched is not None:
            total += matched[0]
            per_level[matched[1]] += 1
    return Estimate(count, total, tuple(per_level), len(timed))


def cell_seconds(cells: Iterable[RunConfig], timed: list[tuple[dict, float]]
                 ) -> Iterator[tuple[RunConfig, tuple[float, int] | None]]:
    """Each cell with its estimated seconds and the index of the `MATCH_LEVELS` level that
    matched it, or None where no finished run is like it."""
    medians = []
    for level in MATCH_LEVELS:
        groups: dict[tuple, list[float]] = {}
        for config, seconds in timed:
            groups.setdefault(_key(config, level), []).append(seconds)
        medians.append({key: statistics.median(values) for key, values in groups.items()})
    for cell in cells:
        config = cell.to_dict()
        yield cell, next(((seconds, index) for index, level in enumerate(MATCH_LEVELS)
                          if (seconds := medians[index].get(_key(config, level))) is not None),
                         None)
