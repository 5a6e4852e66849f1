"""The wall time of each step of campaign 2, from benchmarks/campaign.sh's log: the table of the
results page's "What the runs cost".

campaign.sh logs `campaign: STEP started T` and `campaign: done T` around each step (T in UTC),
`campaign: alive T` once a minute while it runs, and a restart is logged as `campaign: restarted
at T ...`. A step may run in several pieces (a kill, the end of a session, a restart): its time
is the sum of its pieces. A piece with no `done` (the process was killed) ends at the last time
the log shows it running: its last `alive` line, or its start plus the `elapsed` of the last bench
progress line in it, whichever is later (a lower bound where a piece predates the `alive` lines:
the table says how many pieces ended that way). Prints a Markdown table, one row per step in the
order of their first start, and the total; an unreadable log is one line on stderr, exit 2.

    python benchmarks/campaign2/stage_times.py results/campaign.log
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

STAMP = r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"
STARTED = re.compile(rf"^campaign: (.+) started {STAMP}$")
DONE = re.compile(rf"^campaign: done {STAMP}$")
ALIVE = re.compile(rf"^campaign: alive {STAMP}$")
RESTARTED = re.compile(rf"^campaign: restarted at {STAMP}")
ELAPSED = re.compile(r"\(elapsed ((?:\d+h)?(?:\d+m)?(?:\d+s)?)[,)]")


@dataclass
class Step:
    """A step's pieces: their summed time, how many there were, how many had no `done`."""

    seconds: float = 0.0
    pieces: int = 0
    unfinished: int = 0


@dataclass
class Log:
    """The steps read so far and the piece now open (its step, start and last time seen)."""

    steps: dict[str, Step] = field(default_factory=dict)
    open: tuple[str, datetime, datetime] | None = None

    def close(self, end: datetime | None) -> None:
        """Close the open piece at `end` (None: at the last time it was seen, unfinished)."""
        if self.open is None:
            return
        name, start, seen = self.open
        step = self.steps.setdefault(name, Step())
        step.seconds += ((end or seen) - start).total_seconds()
        step.pieces += 1
        step.unfinished += end is None
        self.open = None

    def seen(self, moment: datetime) -> None:
        if self.open is not None:
            name, start, seen = self.open
            self.open = (name, start, max(seen, moment))


def parse_stamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")


def parse_duration(text: str) -> timedelta:
    """bench's elapsed time ("1h55m", "28m30s", "14s") -> timedelta."""
    parts = {unit: number for number, unit in re.findall(r"(\d+)([hms])", text)}
    return timedelta(hours=int(parts.get("h", 0)), minutes=int(parts.get("m", 0)),
                     seconds=int(parts.get("s", 0)))


def read_log(lines: list[str]) -> dict[str, Step]:
    """The log's lines -> each step's time, in the order of the steps' first start."""
    log = Log()
    for line in lines:
        line = line.rstrip("\n")
        if match := STARTED.match(line):
            log.close(None)
            start = parse_stamp(match[2])
            log.open = (match[1], start, start)
        elif match := DONE.match(line):
            log.close(parse_stamp(match[1]))
        elif match := ALIVE.match(line):
            log.seen(parse_stamp(match[1]))
        elif RESTARTED.match(line):
            log.close(None)
        elif (match := ELAPSED.search(line)) and log.open is not None:
            log.seen(log.open[1] + parse_duration(match[1]))
    log.close(None)
    return log.steps


def hours(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min"


def table(steps: dict[str, Step]) -> str:
    """Markdown: step, wall time, pieces, pieces with no end logged; then the total."""
    rows = ["| step | wall time | pieces | of them killed |", "|---|---|---|---|"]
    rows += [f"| {name} | {hours(step.seconds)} | {step.pieces} | {step.unfinished} |"
             for name, step in steps.items()]
    total = sum(step.seconds for step in steps.values())
    rows.append(f"| **total** | **{hours(total)}** | | |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path)
    args = parser.parse_args()
    try:
        steps = read_log(args.log.read_text(encoding="utf-8").splitlines())
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a time that is none
        print(f"stage_times: error: {args.log}: {exc}", file=sys.stderr)
        sys.exit(2)
    print(table(steps))


if __name__ == "__main__":
    main()
