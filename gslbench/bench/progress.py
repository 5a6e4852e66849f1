"""How a bench shows its progress: cells done / total, the running cells, the time elapsed and
left (a tqdm bar on a TTY, one line per finished cell off it), and the one-line descriptions of a
cell and of an error that its lines and other commands use."""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import time
from collections.abc import Iterable

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gslbench.bench.grid import Cells, Grid
from gslbench.config import KNOBS, RunConfig
from gslbench.errors import GslbenchError

log = logging.getLogger("gslbench.bench")

# Fields that `describe` always shows (dataset, quantizer, bits, seed; the method's knobs are in
# its label).
DESCRIBED = ("dataset", "method", "quantizer", "bits", "seed")


class Progress:
    """Cells done / total, the running cells, elapsed and remaining time.

    On a TTY a tqdm bar (postfix: time left and the running cells); off it, one INFO line per
    finished cell: `[3/12] done RUN_ID digits gsl ... (elapsed 1m02s, ~2m10s left)`. A failed cell
    is always logged as an error line. The time left: with `costs` (each cell to run's estimated
    seconds, `estimate.cell_seconds`; None where no finished run is like it) and every cell left
    estimated, the estimated seconds left at this run's pace so far (elapsed over the estimated
    seconds of the cells finished here), so that cheap cells after costly ones are not timed at
    the costly ones' pace; otherwise the mean pace of the cells finished here.
    """

    def __init__(self, total: int, done: int, grid: Grid | Cells, bar: bool,
                 costs: dict[str, float | None] | None = None) -> None:
        self.total, self.done, self.finished_here = total, done, 0
        self.costs, self.spent = dict(costs or {}), 0.0
        self.fields = tuple(grid.axes())
        self.start = time.monotonic()
        self.current = ""
        self.bar = tqdm(total=total, initial=done, desc="bench", unit="cell", dynamic_ncols=True,
                        bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {elapsed}{postfix}") \
            if bar else None
        self._redirect = logging_redirect_tqdm() if bar else contextlib.nullcontext()

    def __enter__(self) -> Progress:
        self._redirect.__enter__()  # from here log lines go above the bar, never over it
        log.info("%d cells: %d done already, %d to run", self.total, self.done,
                 self.total - self.done)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._redirect.__exit__(*exc_info)
        if self.bar is not None:
            self.running([])
            self.bar.close()

    def running(self, configs: Iterable[RunConfig]) -> None:
        """Show these cells as the ones running now."""
        self.current = "; ".join(f"{c.run_id} {describe(c, self.fields)}" for c in configs)
        self.refresh()

    def refresh(self) -> None:
        if self.bar is not None:
            postfix = " | ".join(filter(None, [f"~{self._left()} left", self.current]))
            # what the line leaves to the postfix: the terminal's width less the bar's frame
            room = shutil.get_terminal_size().columns - len(f"bench: {self.total}/{self.total} "
                                                            "|| 00:00:00, ") - 10
            self.bar.set_postfix_str(elide(postfix, room))

    def finished(self, config: RunConfig, error: BaseException | None) -> str:
        """Count a finished cell and log it; returns the error's one-line message ("" if none)."""
        self.done += 1
        self.finished_here += 1
        cost = self.costs.pop(config.run_id, None)
        self.spent += math.nan if cost is None else cost  # NaN: the pace falls back to the mean
        cell = f"[{self.done}/{self.total}] %s {config.run_id} {describe(config, self.fields)}"
        if self.bar is not None:
            self.bar.update()
        if error is not None:
            message = one_line(error)
            log.error(cell + ": %s", "failed", message)
            return message
        elapsed = format_duration(time.monotonic() - self.start)
        log.log(logging.DEBUG if self.bar is not None else logging.INFO,
                cell + " (elapsed %s, ~%s left)", "done", elapsed, self._left())
        return ""

    def _left(self) -> str:
        elapsed, left = time.monotonic() - self.start, self.total - self.done
        costs = list(self.costs.values())
        if self.spent > 0 and len(costs) == left and None not in costs:  # NaN: not > 0
            seconds = elapsed / self.spent * sum(costs)
        else:
            seconds = remaining_seconds(elapsed, self.finished_here, left)
        return "?" if seconds is None else format_duration(seconds)


def elide(text: str, width: int) -> str:
    """`text` shortened to `width` characters by replacing its middle with "…" (its start and
    end, which name the cell's run and its last axes, stay); at most `width`, at least "…"."""
    if len(text) <= width:
        return text
    head = max(width - 1, 0) // 2
    return text[:head] + "…" + text[len(text) - max(width - 1 - head, 0):]


def remaining_seconds(elapsed: float, finished: int, left: int) -> float | None:
    """Estimated seconds until `left` more cells finish, at the pace of the `finished` cells of
    this run so far (wall time, so parallel cells count); None before the first finishes."""
    if left == 0:
        return 0.0
    return elapsed / finished * left if finished else None


def format_duration(seconds: float) -> str:
    """45 -> '45s', 62 -> '1m02s', 3725 -> '1h02m'."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe(config: RunConfig, fields: Iterable[str] = ()) -> str:
    """`digits gsl α=1 k=8 pq 32 bits seed 0`, then `name=value` for each other field in `fields`
    (the grid's axes); float cells have no quantizer and bits."""
    text = f"{config.dataset} {config.label}"
    if config.quantized:
        text += f" {config.quantizer} {config.bits} bits"
    text += f" seed {config.seed}"
    knobs = {knob.name for knob in KNOBS}
    extra = [f"{name}={getattr(config, name)}" for name in fields
             if name not in DESCRIBED and name not in knobs]
    return " ".join([text, *extra])


def one_line(error: BaseException) -> str:
    """An error as one line: its message's first line, with the type unless it is a user error."""
    lines = str(error).strip().splitlines()
    message = lines[0] if lines else ""
    return message if isinstance(error, GslbenchError) else f"{type(error).__name__}: {message}"
