"""What a report found, said at its top: the verdict block per table set, the settings of the
runs, and what made the report (date, gslbench version and commit).

The verdict block of a table set (a table key, `gslbench.report.frames.TABLE_KEYS`) has a row per
code length: the best quantized method by mean mAP, its paired difference against the runner-up
and against two-step (mean, raw 95% t-interval, Holm-adjusted p) and the verdicts of
`gslbench.report.stats` (Holm over the method pair's family, equivalence within ±margin).
"""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from gslbench.report.conditions import shown_value
from gslbench.report.frames import TABLE_KEYS
from gslbench.report.stats import ALPHA, VERDICTS
from gslbench.report.tables import MISSING, PaperTable
from gslbench.storage import package_versions

BLOCK_COLUMNS = ["bits", "best (mAP)", "runner-up (mAP)", "best − runner-up", "verdict",
                 "best − two-step", "verdict vs two-step"]
FLIPPED = {"better": "worse", "worse": "better"}


def found_blocks(tables: list[PaperTable], compared: pd.DataFrame) -> list[tuple[tuple, str,
                                                                                 pd.DataFrame]]:
    """(table key, `verdict_sentence`, `verdict_block`) of every `map` table among `tables`
    (`tables.paper_tables`); compared: `stats.comparisons(..., pairs="all")`."""
    blocks = []
    for table in tables:
        if table.kind == "map":
            block = verdict_block(table, compared)
            blocks.append((table.key, verdict_sentence(block), block))
    return blocks


def verdict_block(table: PaperTable, compared: pd.DataFrame) -> pd.DataFrame:
    """The verdict block of one `map` table, a row per code length (`BLOCK_COLUMNS`, as text).

    compared: `stats.comparisons(..., pairs="all")`, which holds every pair of the table's rows
    in either order."""
    means = table.value.drop(index="float", errors="ignore")
    lookup = _comparison_lookup(compared, table.key)
    rows = []
    for bits in means.columns:
        ranked = means[bits].dropna().sort_values(ascending=False, kind="stable")
        if ranked.empty:
            continue
        best = ranked.index[0]
        runner_up = ranked.index[1] if len(ranked) > 1 else None
        against_runner_up = _against(lookup, bits, best, runner_up)
        two_step = "two-step" if "two-step" in ranked.index and best != "two-step" else None
        against_two_step = _against(lookup, bits, best, two_step)
        rows.append([f"{bits}", f"{best} ({ranked.iloc[0]:.4f})",
                     MISSING if runner_up is None else f"{runner_up} ({ranked.iloc[1]:.4f})",
                     *against_runner_up, *against_two_step])
    return pd.DataFrame(rows, columns=BLOCK_COLUMNS)


def verdict_sentence(block: pd.DataFrame) -> str:
    """`Best: gsl at 16, 32 bits; qloss at 64 bits. Against the runner-up: 1 better, 2
    inconclusive. Against two-step: 2 better, 1 equivalent.` for a verdict block."""
    if block.empty:
        return "No quantized method ran."
    best = block["best (mAP)"].str.rsplit(" (", n=1).str[0]
    parts = [f"{name} at {', '.join(block.bits[best == name])} bits"
             for name in dict.fromkeys(best)]
    sentence = f"Best by mean mAP: {'; '.join(parts)}."
    for column, against in (("verdict", "the runner-up"), ("verdict vs two-step", "two-step")):
        counts = block[column][block[column] != MISSING].value_counts()
        if not counts.empty:
            sentence += (f" Against {against}: "
                         + ", ".join(f"{counts[v]} {v}" for v in VERDICTS if v in counts) + ".")
    return sentence


def block_note(margin: float) -> str:
    """What the verdict block's numbers and words mean."""
    return (f"Differences are paired by seed (best minus the other, mean over seeds) with their "
            f"raw 95% t-interval and the Holm-adjusted p of the paired t-test; the verdict is "
            f"better or worse when that p is below {ALPHA}, equivalent when the two one-sided "
            f"tests put the difference within ±{margin:g} mAP (Holm-adjusted p below {ALPHA}), "
            "inconclusive otherwise. Holm's family: one method pair over every quantizer, codebook "
            "size and code length of a data set, protocol, loss, codebook fit and evaluation mode.")


def _comparison_lookup(compared: pd.DataFrame, key: tuple) -> dict[tuple, pd.Series]:
    """(code_bits, method, against) -> comparison row, for one table key's regimes."""
    names = dict(zip(TABLE_KEYS, key, strict=True))
    mine = compared
    for name, value in names.items():
        mine = mine[mine[name] == value]
    return {(row.code_bits, row.method, row.against): row for _, row in mine.iterrows()}


def _signed(value: float) -> str:
    """`+0.0123`; a zero difference is `+0.0000` whichever way it was taken (never `-0.0000`)."""
    return f"{value + 0.0:+.4f}"


def _against(lookup: dict[tuple, pd.Series], bits: int, best: str,
             other: str | None) -> list[str]:
    """[difference text, verdict] of `best` against `other` at `bits` (either order in
    `lookup`); dashes where there is no other method or no comparison."""
    if other is None:
        return [MISSING, MISSING]
    row, sign = lookup.get((bits, best, other)), 1
    if row is None:
        row, sign = lookup.get((bits, other, best)), -1
    if row is None:
        return [MISSING, MISSING]
    if row.n < 2:
        return [f"{_signed(sign * row['mean'])} ({row.n} seed)", row.verdict]
    low, high = sorted((sign * row.low, sign * row.high))
    text = (f"{_signed(sign * row['mean'])} [{_signed(low)}, {_signed(high)}], "
            f"p={row.p_holm:.3g} ({row.n} seeds)")
    return [text, FLIPPED.get(row.verdict, row.verdict) if sign < 0 else row.verdict]


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

