"""What a report found, said at its top: the verdict block per table set, the settings of the
runs, and what made the report (date, gslbench version and commit).

The verdict block of a table set (a table key, `gslbench.report.frames.TABLE_KEYS`) has a row per
code length and declared comparison of that table (`gslbench.report.stats.comparisons`): the
paired difference (mean, raw 95% t-interval, Holm-adjusted p over the one family), the paired
units (marked when fewer than 10), the smallest difference detectable at 80% power after the
correction, and the verdict. Its sentence names the best method by mean mAP (a description: it
is chosen after seeing the data, so no test is made of it) and counts the verdicts.
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from gslbench.report.conditions import shown_value
from gslbench.report.frames import TABLE_KEYS, Evaluated, axes_summary
from gslbench.report.neighbours import metric_text
from gslbench.report.stats import ALPHA, MIN_UNITS, POWER, VERDICTS, units_text
from gslbench.report.tables import MISSING, PaperTable
from gslbench.storage import package_versions

BLOCK_COLUMNS = ["bits", "comparison", "difference", "units", "detectable", "verdict"]


def found_blocks(tables: list[PaperTable], compared: pd.DataFrame) -> list[tuple[tuple, str,
                                                                                 pd.DataFrame]]:
    """(table key, `verdict_sentence`, `verdict_block`) of every `map` table among `tables`
    (`tables.paper_tables`); compared: `stats.comparisons` of the same runs."""
    blocks = []
    for table in tables:
        if table.kind == "map":
            block = verdict_block(table, compared)
            blocks.append((table.key, verdict_sentence(table, block), block))
    return blocks


def verdict_block(table: PaperTable, compared: pd.DataFrame) -> pd.DataFrame:
    """The verdict block of one `map` table: a row per code length and declared comparison of
    its regimes (`BLOCK_COLUMNS`, as text)."""
    mine = compared
    for name, value in zip(TABLE_KEYS, table.key, strict=True):
        mine = mine[mine[name] == value]
    rows = [[f"{row.code_bits}", f"{row.method} − {row.against}", difference_text(row),
             units_text(row.n), detectable_text(row.detectable), row.verdict]
            for _, row in mine.sort_values("code_bits", kind="stable").iterrows()]
    return pd.DataFrame(rows, columns=BLOCK_COLUMNS)


def verdict_sentence(table: PaperTable, block: pd.DataFrame) -> str:
    """`Best by mean mAP: gsl at 16, 32 bits; qloss at 64 bits. gsl − two-step: 2 better, 1 not
    powered.` for a `map` table and its verdict block."""
    means = table.value.drop(index="float", errors="ignore")
    best = {bits: column.idxmax() for bits, column in means.items() if column.notna().any()}
    if not best:
        return "No quantized method ran."
    parts = [f"{name} at {', '.join(str(b) for b, n in best.items() if n == name)} bits"
             for name in dict.fromkeys(best.values())]
    sentence = f"Best by mean mAP: {'; '.join(parts)}."
    for comparison, rows in block.groupby("comparison", sort=False):
        counts = rows.verdict.value_counts()
        sentence += (f" {comparison}: "
                     + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts) + ".")
    return sentence


def block_note(margin: float, compared: pd.DataFrame) -> str:
    """What the verdict blocks' numbers and words mean, the differences named in the primary
    metrics of `compared` (`stats.comparisons`; `neighbours.metric_text`)."""
    metric = metric_text(compared.primary_metric)
    return (f"Only the comparisons declared before the runs are tested (the grid's "
            f"`[comparisons]`), and all of them, over every regime and condition, are one Holm "
            f"family. Differences are paired by (draw, seed) (the first minus the second, mean "
            f"over units) with their raw 95% t-interval and the Holm-adjusted p of the paired "
            f"t-test; the verdict is better or worse when that p is below {ALPHA}, equivalent "
            f"when the two one-sided tests put the difference within ±{margin:g} {metric} "
            f"(Holm-adjusted p below {ALPHA}), not powered when the smallest difference the "
            f"test could detect at {POWER:.0%} power after the correction (detectable: at "
            f"{ALPHA} divided by the family's size, Holm's threshold for its smallest p) exceeds "
            f"±{margin:g}, inconclusive otherwise. Units: paired (draw, seed) units, marked "
            f"(< {MIN_UNITS}) when fewer than {MIN_UNITS}. The best method by mean mAP is "
            "described, not tested (it is chosen after seeing the data).")


def difference_text(row: pd.Series) -> str:
    """`+0.0123 [+0.0100, +0.0150], p=0.012` (Holm-adjusted p) for a comparisons row;
    `+0.0123` alone for a single unit."""
    if row.n < 2:
        return _signed(row["mean"])
    return (f"{_signed(row['mean'])} [{_signed(row.low)}, {_signed(row.high)}], "
            f"p={row.p_holm:.3g}")


def detectable_text(value: float) -> str:
    """`0.0190`, `—` when no difference is detectable (fewer than 2 units)."""
    return MISSING if pd.isna(value) else f"{value:.4f}"


def _signed(value: float) -> str:
    """`+0.0123`; a zero difference is `+0.0000` whichever way it was taken (never `-0.0000`)."""
    return f"{value + 0.0:+.4f}"


def settings_tables(configs: pd.DataFrame, provenance: pd.DataFrame) -> tuple[pd.DataFrame,
                                                                               pd.DataFrame]:
    """The run settings that are the same for every run (setting, value, runs: how many runs
    have it; a method's knob only its method's runs) and those that differ (setting, values: each
    value with its number of runs); the feature file's sha256 is a setting too.

    configs: one row per run (`Evaluated.configs`); provenance: `Evaluated.provenance`."""
    frame = configs.reset_index(drop=True).assign(
        features_sha256=provenance.features_sha256.reset_index(drop=True))
    same, differ = [], []
    for column in frame.columns:
        values = frame[column].dropna()
        if values.empty:
            continue
        counts = values.map(shown_value).value_counts(sort=False)
        if len(counts) == 1:
            same.append([column, counts.index[0], int(counts.iloc[0])])
        else:
            ordered = sorted(counts.items(), key=lambda item: _sort_key(item[0]))
            differ.append([column, ", ".join(f"{value} ({count})" for value, count in ordered)])
    return (pd.DataFrame(same, columns=["setting", "value", "runs"]),
            pd.DataFrame(differ, columns=["setting", "values (runs)"]))


def _sort_key(text: str) -> tuple:
    try:
        return (0, float(text), text)
    except ValueError:
        return (1, 0.0, text)


def generator() -> dict[str, str]:
    """What made the report: `date` (UTC day; `SOURCE_DATE_EPOCH` when set, for reproducible
    reports), `gslbench` (its version) and `commit` (the git commit of the gslbench source, with
    `+ local changes` when its checkout has uncommitted changes; `unknown` outside a checkout or
    without git)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch and epoch.isdigit() else datetime.now(UTC)
    return {"date": when.strftime("%Y-%m-%d"), "gslbench": package_versions()["gslbench"],
            "commit": _source_commit() or "unknown"}


def generator_text(made: dict[str, str]) -> str:
    """`Generated on 2026-12-03 by gslbench 0.9.0 (commit 0123abcd4567).`"""
    return f"Generated on {made['date']} by gslbench {made['gslbench']} (commit {made['commit']})."


def made_text(made: dict[str, str], data: Evaluated, grid_cells: int | None = None) -> str:
    """What made a report and from what: `generator_text`, then `From 437 evaluations of 110
    runs (dataset: ...).`; with `grid_cells` (the number of cells of the grids it reports on,
    `report --grid`), whether every cell has a run, or how many have none: a partial grid is said
    where the report's figures start, not only in a warning."""
    text = (f"{generator_text(made)} From {len(data.results)} evaluations of "
            f"{len(data.configs)} runs ({axes_summary(data.results)}).")
    if grid_cells is None:
        return text
    missing = grid_cells - len(data.configs)
    if missing <= 0:
        return f"{text} Every one of the grid's {grid_cells} cells has a run."
    return (f"{text} A partial grid: {missing} of the grid's {grid_cells} cells have no run "
            "yet; their figures are missing from every table and comparison.")


def _source_commit() -> str | None:
    """The commit of the git checkout that holds this gslbench package, or None (never fails)."""
    package = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True,
                                  text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != package.parent:  # installed, or in another repository
        return None
    commit = git("rev-parse", "--short=12", "HEAD")
    if commit is None:
        return None
    changes = git("status", "--porcelain", "--untracked-files=no", "--", str(package))
    return f"{commit} + local changes" if changes else commit

