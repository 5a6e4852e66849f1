"""The paper's tables: rows = methods, columns = code lengths, one table per table key (data set,
feature, protocol, loss, quantizer, sub_bits, codebook fit, evaluation mode, settings, condition:
see `gslbench.report.frames`); built once (`paper_tables`) and written as Markdown, CSV and LaTeX
here, as HTML by `gslbench.report.page`.

Three kinds of table:

- `map`: mean ± std of mAP over seeds (std with ddof 1), with the float ceiling as the first row;
- `gap`: what quantization costs, float's mean mAP minus the method's, ± the standard error of
  that difference of means, sqrt(s_float^2 / n_float + s^2 / n): positive when the method is
  below float, so smaller is better;
- `qerr`: the database's mean squared quantization error (encode's, `quant_mse_database`), mean ±
  std over seeds, quantized methods only.

A cell with a single seed (on either side, for a gap) has no spread and shows `mean (1)`.

In each, the best quantized method of each code length is marked (bold): the highest mAP, the
smallest gap or error, compared by mean at the printed precision (`DIGITS` decimals), so that equal
printed numbers are all marked. float, the unquantized ceiling, does not compete.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gslbench.report.frames import (
    DEFAULT_MODE,
    KEY_DEFAULTS,
    PRIMARY,
    TABLE_KEYS,
    key_slug,
    key_title,
    ordered_variants,
    tuned_rows,
    with_float_ceiling,
)

DIGITS = 4
MISSING = "—"
NOT_A_NUMBER = "NaN"
BEST_NOTE = ("Bold: the best quantized method per code length (by mean); "
             "float, the unquantized ceiling, does not compete.")
GAP_NOTE = ("Sign: float's mAP minus the method's, so a positive gap is what quantization costs "
            "(smaller is better) and a negative one a method above float. " + BEST_NOTE)


@dataclass(frozen=True)
class TableKind:
    """How one kind of table reads: its title, the names of its numbers, which way is better, and
    the note under its title (what bold means)."""

    title: str
    value: str
    spread: str
    higher_is_better: bool
    signed: bool
    note: str = BEST_NOTE


KINDS = {
    "map": TableKind("mAP, mean ± std over seeds (n)", "mean", "std", True, False),
    "gap": TableKind("gap to float (float mAP − mAP), difference of means ± its standard error (n)",
                     "gap", "se", False, True, GAP_NOTE),
    "qerr": TableKind("database quantization MSE, mean ± std over seeds (n)", "mean", "std", False,
                      False),
    "tuning": TableKind("validation mAP of every setting tried, mean ± std over seeds (n)", "mean",
                        "std", True, False, "Bold: each method's choice per code length (the "
                        "highest mean; ties: the first tried)."),
}
ERROR_COLUMN = "quant_mse_database"  # the results column of the `qerr` tables


@dataclass(frozen=True)
class PaperTable:
    """One table: frames indexed by method variant, columns the code lengths (int bits)."""

    key: tuple  # `TABLE_KEYS` values
    kind: str  # a key of KINDS
    value: pd.DataFrame  # mean mAP, or gap to float
    spread: pd.DataFrame  # std over seeds, or standard error of the gap
    count: pd.DataFrame  # seeds per cell
    best: pd.DataFrame  # bool: the marked cells
    knobs: str = ""  # which knobs a row of several variants used where (`tuned_rows`)

    @property
    def title(self) -> str:
        return f"{key_title(self.key)}: {KINDS[self.kind].title}"

    @property
    def caption(self) -> str:
        """The table's name without its key (where a heading already gives the key)."""
        return KINDS[self.kind].title[0].upper() + KINDS[self.kind].title[1:]

    @property
    def slug(self) -> str:
        return f"{key_slug(self.key)}-{self.kind}"

    @property
    def note(self) -> str:
        """What bold means in this kind of table, then the knobs note, if any."""
        return " ".join(filter(None, [KINDS[self.kind].note, self.knobs]))

    def cells(self) -> pd.DataFrame:
        """The cells as text: `0.9100 ± 0.0100 (3)`, `0.9100 (1)` for a single seed, `—` where a
        method lacks a code length."""
        signed = KINDS[self.kind].signed
        text = [[_cell_text(self.value.at[m, b], self.spread.at[m, b], self.count.at[m, b], signed)
                 for b in self.value.columns] for m in self.value.index]
        return pd.DataFrame(text, index=self.value.index, columns=self.value.columns)

    @property
    def headers(self) -> list[str]:
        """The column headers: `16 bits`, `32 bits`, ..."""
        return [f"{bits} bits" for bits in self.value.columns]


def seed_stats(results: pd.DataFrame, value: str = "map") -> pd.DataFrame:
    """mean, std (ddof 1; NaN for one seed) and count of `value` over seeds, indexed by
    (dataset, feature, loss, quantizer, variant, code_bits), the float ceiling under every cell."""
    return (with_float_ceiling(results).groupby([*TABLE_KEYS, "variant", "code_bits"])[value]
            .agg(["mean", "std", "count"]))


def mean_difference(mean_a: Any, std_a: Any, n_a: Any, mean_b: Any, std_b: Any,
                    n_b: Any) -> tuple[Any, Any]:
    """Difference of means a - b and its standard error sqrt(s_a^2 / n_a + s_b^2 / n_b);
    scalars or aligned pandas objects."""
    return mean_a - mean_b, (std_a**2 / n_a + std_b**2 / n_b) ** 0.5


def paper_tables(results: pd.DataFrame) -> list[PaperTable]:
    """Per table key, its `map` table, (when float runs exist for it) its `gap` table and (when
    its runs recorded encode's quantization error) its `qerr` table; the codebooks fitted on the
    training set first, then the default mode (ADC, L2), among the keys of the same data set,
    protocol, loss, quantizer and codebook size. A method tuned per code length is one row
    (`tuned_rows`)."""
    results, notes = tuned_rows(results)
    tables = []
    quantized = results[(results.method != "float") & results[ERROR_COLUMN].notna()]
    errors = dict(list(seed_stats(quantized, ERROR_COLUMN).groupby(level=TABLE_KEYS)))
    groups = sorted(seed_stats(results).groupby(level=TABLE_KEYS),
                    key=lambda group: key_order(group[0]))
    for key, stats in groups:
        mean, std, count = wide_stats(stats)
        knobs = notes.get(key, "")
        tables.append(_table(key, "map", mean, std, count, knobs))
        if "float" in mean.index and len(mean) > 1:
            others = mean.index[1:]
            gap, se = mean_difference(mean.loc["float"], std.loc["float"], count.loc["float"],
                                      mean.loc[others], std.loc[others], count.loc[others])
            tables.append(_table(key, "gap", gap, se, count.loc[others], knobs))
        if key in errors:
            tables.append(_table(key, "qerr", *wide_stats(errors[key]), knobs))
    return tables


def key_order(key: tuple) -> tuple:
    """Sort key of a table key: data set, feature, protocol, loss, quantizer, codebook size, then
    the training set's codebook fit and the default mode (ADC, L2) before the others."""
    names = dict(zip(TABLE_KEYS, key, strict=True))
    return (*(names[k] for k in ("dataset", "feature", "protocol", "loss", "quantizer",
                                 "sub_bits")),
            names["codebooks"] != KEY_DEFAULTS["codebooks"], names["codebooks"],
            (names["search"], names["metric"]) != DEFAULT_MODE, key)


def wide_stats(stats: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One key's `seed_stats` rows -> mean, std and count frames (method variants in report order
    x code bits)."""
    stats = stats.droplevel(TABLE_KEYS)
    mean, std, count = (stats[name].unstack("code_bits") for name in ("mean", "std", "count"))
    order = ordered_variants(mean.index)
    return mean.loc[order], std.loc[order], count.loc[order]


def _table(key: tuple, kind: str, value: pd.DataFrame, spread: pd.DataFrame,
           count: pd.DataFrame, knobs: str = "") -> PaperTable:
    """The table with its best quantized cell per column marked (at the printed precision)."""
    shown = value.round(DIGITS).drop(index="float", errors="ignore")
    target = shown.max() if KINDS[kind].higher_is_better else shown.min()
    best = (shown == target).reindex(value.index, fill_value=False)
    return PaperTable(key, kind, value, spread, count, best, knobs)


def _cell_text(value: float, spread: float, count: float, signed: bool) -> str:
    if pd.isna(count):  # no run of this method at this code length
        return MISSING
    if pd.isna(value):  # runs whose mAP is not a number: not to be mistaken for a missing cell
        return NOT_A_NUMBER
    number = f"{value:+.{DIGITS}f}".replace("-", "−") if signed else f"{value:.{DIGITS}f}"
    spread_text = "" if pd.isna(spread) else f" ± {spread:.{DIGITS}f}"
    return f"{number}{spread_text} ({int(count)})"


def tables_markdown(tables: list[PaperTable]) -> str:
    """The tables as Markdown: a section each, its note, the best cells in bold."""
    parts = []
    for table in tables:
        cells = table.cells()
        cells = cells.mask(table.best, "**" + cells + "**")
        frame = cells.set_axis(table.headers, axis=1).rename_axis(index="method").reset_index()
        parts += [f"## {table.title}\n", table.note + "\n", frame_markdown(frame), ""]
    return "\n".join(parts) + "\n"


def frame_markdown(frame: pd.DataFrame) -> str:
    """A data frame as a Markdown table (its columns as the header, no index)."""
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * len(frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def tables_frame(tables: list[PaperTable], kind: str) -> pd.DataFrame:
    """The tables of one kind as one numeric frame in the paper's layout: a row per (table key,
    method), per code length the columns `{bits}_{value}`, `{bits}_{spread}`, `{bits}_n` and
    `{bits}_best` (e.g. `16_mean`, `16_std`, `16_n`, `16_best`)."""
    names = KINDS[kind]
    chosen = [table for table in tables if table.kind == kind]
    frames = []
    for table in chosen:
        parts = {names.value: table.value, names.spread: table.spread,
                 "n": table.count.astype("Int64"), "best": table.best}
        wide = pd.concat(parts, axis=1).swaplevel(axis=1)
        wide.columns = [f"{bits}_{name}" for bits, name in wide.columns]
        frames.append(wide.rename_axis(index="method").reset_index()
                      .assign(**dict(zip(TABLE_KEYS, table.key, strict=True))))
    bits = sorted({int(b) for table in chosen for b in table.value.columns})
    columns = [*TABLE_KEYS, "method",
               *(f"{b}_{name}" for b in bits for name in (names.value, names.spread, "n", "best"))]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                 "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
                 "^": r"\textasciicircum{}", "±": r"$\pm$", "α": r"$\alpha$", "λ": r"$\lambda$",
                 "β": r"$\beta$", "τ": r"$\tau$", "σ": r"$\sigma$", "ν": r"$\nu$",
                 "η": r"$\eta$",
                 "−": r"$-$", "—": "---"}


def latex_escape(text: str) -> str:
    """Text for LaTeX: its special characters escaped, ± α λ β τ σ ν η − as math, — as an em dash."""
    return "".join(LATEX_ESCAPES.get(char, char) for char in str(text))


def tables_latex(tables: list[PaperTable]) -> str:
    """The tables as LaTeX `table` floats with booktabs rules (needs `\\usepackage{booktabs}`)."""
    parts = ["% gslbench report tables; needs \\usepackage{booktabs}", ""]
    for table in tables:
        cells = table.cells().map(latex_escape)
        cells = cells.mask(table.best, r"\textbf{" + cells + "}")
        rows = [" & ".join([latex_escape(method), *cells.loc[method]]) + r" \\"
                for method in cells.index]
        if table.kind == "map" and cells.index[0] == "float" and len(rows) > 1:
            rows.insert(1, r"\midrule")  # the ceiling apart from the methods that compete
        parts += [
            r"\begin{table}[t]",
            r"\centering",
            rf"\caption{{{latex_escape(table.title)}. {latex_escape(table.note)}}}",
            rf"\label{{tab:{table.slug}}}",
            rf"\begin{{tabular}}{{l{'c' * len(table.value.columns)}}}",
            r"\toprule",
            " & ".join(["Method", *table.headers]) + r" \\",
            r"\midrule",
            *rows,
            r"\bottomrule",
            r"\end{tabular}",
            r"\end{table}",
            "",
        ]
    return "\n".join(parts)


SEARCH_GROUP = ["dataset", "feature", "metric", "variant", "quantizer", "code_bits", "index"]
REFERENCE = "exact search (reference)"


def search_table(searches: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """search-bench's measures, a row per (data set, feature, metric, method variant, quantizer,
    code bits) with their means over seeds (`n`), then per data set, feature and metric the exact
    float search every quantized run measured beside its codes (mean over those runs), with
    each run's mAP by ADC and that metric (from evaluate, its primary condition's, `PRIMARY`;
    blank when not evaluated so).

    Columns: SEARCH_GROUP, bytes_per_vector, qps_batch1, qps_batched, speedup_batch1,
    speedup_batched (the codes' QPS over the exact search's, measured back to back in the same
    search-bench: steadier than QPS on a shared machine; blank for float runs), recall_at_R...,
    nn_recall_at_R..., map, n. A float run's codes are float32: quantizer `none`, code bits 32 x
    dim. Empty when no run went through search-bench."""
    if searches.empty:
        return pd.DataFrame()
    maps = results[(results.search == "adc") & results.condition.isin(PRIMARY)][
        ["run", "metric", "map"]]
    frame = searches.merge(maps, on=["run", "metric"], how="left")
    reference = (searches[searches.role == "float"].set_index(["run", "metric"])
                 [["qps_batch1", "qps_batched"]])
    for column in ("qps_batch1", "qps_batched"):  # measured back to back in one search-bench
        exact = reference[column].reindex(pd.MultiIndex.from_frame(frame[["run", "metric"]]))
        frame[f"speedup_{column[4:]}"] = np.where(frame.role == "float", np.nan,
                                                  frame[column].to_numpy() / exact.to_numpy())
    exact = (frame.role == "float") | (frame.method == "float")
    frame.loc[exact, "quantizer"] = "none"
    frame.loc[exact, "code_bits"] = 8 * frame.loc[exact, "bytes_per_vector"]
    frame.loc[frame.role == "float", ["variant", "map"]] = [REFERENCE, float("nan")]
    measures = [column for prefix in ("qps_", "speedup_", "recall_at_", "nn_recall_at_")
                for column in frame.columns if column.startswith(prefix)]
    grouped = frame.groupby(SEARCH_GROUP, sort=False)
    table = grouped[["bytes_per_vector", *measures, "map"]].mean()
    table["n"] = grouped.size()
    table = table.reset_index()
    order = {name: i for i, name in enumerate(ordered_variants(table.variant))}
    table["order"] = table.variant.map(order)
    table["reference"] = table.variant == REFERENCE  # last in its data set and metric
    return (table.sort_values(["dataset", "feature", "metric", "reference", "quantizer",
                               "code_bits", "order"])
            .drop(columns=["order", "reference"]).reset_index(drop=True))


def search_markdown(table: pd.DataFrame) -> str:
    """The search table as Markdown (`search_cells`); empty without search-bench results."""
    return frame_markdown(search_cells(table)) + "\n" if not table.empty else ""


def search_cells(table: pd.DataFrame) -> pd.DataFrame:
    """The search table as text: QPS as whole numbers, recalls to 3 decimals, mAP to 4 (`—`
    where the run was not evaluated with that metric), `method` for the variant."""
    shown = table.copy()
    for column in shown.columns:
        if column.startswith("qps_"):
            shown[column] = shown[column].map("{:,.0f}".format)
        elif column.startswith("speedup_"):
            shown[column] = shown[column].map(lambda value: MISSING if pd.isna(value)
                                              else f"{value:.1f}x")
        elif column.startswith(("recall_at_", "nn_recall_at_")):
            shown[column] = shown[column].map("{:.3f}".format)
    shown["map"] = shown["map"].map(lambda value: MISSING if pd.isna(value) else f"{value:.4f}")
    shown["bytes_per_vector"] = shown["bytes_per_vector"].map("{:.0f}".format)
    shown["code_bits"] = shown["code_bits"].map("{:.0f}".format)
    return shown.rename(columns={"variant": "method"}).astype(str)
