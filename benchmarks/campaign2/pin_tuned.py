"""Pin a tuning's choices into a grid whose cells tune did not cover because they fine-tune
(stage 2 of campaign 2: tuning ran on frozen features only).

Reads GRID.toml (its top-level keys fix one cell; `method` lists the methods) and the choices of
`gslbench tune` (TUNED), and writes OUT: GRID.toml's text without its `method` line, then one
`[[grid]]` part per method, the tuned ones with the knobs tune chose for the same cell at
`train_blocks = 0` (every other setting as GRID.toml gives it). A cell tune did not choose for is
a one-line error.

    python benchmarks/campaign2/pin_tuned.py benchmarks/campaign2/finetune.toml \
        results/tuning/tuned.toml results/campaign2/finetune.toml
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
from pathlib import Path

from gslbench.bench.grid import Grid, read_grid_file
from gslbench.bench.tuned import Tuned, toml_value
from gslbench.errors import GslbenchError


def pinned_parts(grid_file: Path, tuned: Tuned) -> list[str]:
    """One `[[grid]]` part per method of the grid: its knobs as tune chose them for the frozen
    cell; methods without knobs as they are."""
    lines, seen = [], set()
    for config in Grid.from_mapping(read_grid_file(grid_file), source=str(grid_file)).cells():
        if config.method in seen:  # one part per method: its cells differ by seed only
            continue
        seen.add(config.method)
        frozen = tuned.apply(dataclasses.replace(config, train_blocks=0))
        knobs = {knob.name: getattr(frozen, knob.name) for knob in config.method_spec.knobs}
        lines += ["", "[[grid]]", f"method = {toml_value(config.method)}",
                  *(f"{name} = {toml_value(value)}" for name, value in knobs.items())]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", type=Path)
    parser.add_argument("tuned", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    try:
        parts = pinned_parts(args.grid, Tuned.read(args.tuned))
    except GslbenchError as exc:
        sys.exit(f"pin_tuned: error: {exc}")
    text = re.sub(r"(?ms)^method = \[.*?\]\n", "", args.grid.read_text())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n".join(parts) + "\n")
    print(f"{args.out}: {parts.count('[[grid]]')} methods pinned from {args.tuned}")


if __name__ == "__main__":
    main()
