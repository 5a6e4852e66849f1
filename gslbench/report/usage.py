"""The report's codebook usage (`gslbench.evaluation.usage`): a table per table set and a figure
of usage against mAP.

Each table has a row per quantized method variant and code length: the perplexity of the code
histogram and the share of codewords never used, for the training items' codes and the
database's, and the database codes' entropy against its maximum, each averaged over the codebooks
(results.csv's `usage_*` columns), then mean ± std over seeds; and the mAP beside them. Runs
evaluated before usage was measured (NaN) and float runs (no codebooks) have no row.
"""

from __future__ import annotations

import html
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from gslbench.report.frames import TABLE_KEYS, key_slug, key_title, ordered_variants, with_key_defaults
from gslbench.report.page import figure_html, frame_html
from gslbench.report.plots import STYLE, Figure, _panels, _save, _style
from gslbench.report.tables import frame_markdown, key_order

# results column -> header, and the number of decimals shown
MEASURES = {
    "usage_train_perplexity": ("train perplexity", 2),
    "usage_train_unused": ("train unused", 3),
    "usage_database_perplexity": ("database perplexity", 2),
    "usage_database_unused": ("database unused", 3),
    "usage_database_entropy_bits": ("database entropy (bits)", 3),
    "map": ("mAP", 4),
}
PANEL_TITLE_CHARS = 50  # a panel's title wraps at its width
NOTE = ("Per codebook (PQ/OPQ sub-quantizer, RQ/LSQ stage), then averaged over the codebooks: "
        "perplexity 2^H of the code histogram (1 to K words), the share of the K words no item "
        "uses, the entropy H in bits (at most log2 K); mean ± std over seeds (n).")


def usage_tables(results: pd.DataFrame) -> list[tuple[tuple, pd.DataFrame]]:
    """(table key, table) per table set with usage: a row per variant and code length, columns
    `method`, `bits`, `K`, `n` (seeds) and per results column of `MEASURES` its `_mean` and
    `_std` over seeds (std with ddof 1, NaN for one seed)."""
    results = with_key_defaults(results)
    measured = results[results.usage_database_perplexity.notna()] if len(results) else results
    tables = []
    for key, group in sorted(measured.groupby(TABLE_KEYS), key=lambda pair: key_order(pair[0])):
        width = 2 ** int(dict(zip(TABLE_KEYS, key, strict=True))["sub_bits"])
        stats = group.groupby(["variant", "code_bits"])[list(MEASURES)].agg(["mean", "std"])
        stats.columns = [f"{column}_{stat}" for column, stat in stats.columns]
        stats = stats.assign(n=group.groupby(["variant", "code_bits"]).size(), K=width)
        order = {variant: i for i, variant in enumerate(ordered_variants(group.variant))}
        table = (stats.rename_axis(["method", "bits"]).reset_index()
                 .sort_values(["method", "bits"], key=lambda c: c.map(order) if c.name == "method"
                              else c, ignore_index=True))
        tables.append((key, table[["method", "bits", "K", "n", *stats.columns[:-2]]]))
    return tables


def usage_text(table: pd.DataFrame) -> pd.DataFrame:
    """A `usage_tables` table as text: `method`, `bits`, `K`, a `mean ± std` column per measure
    (named by `MEASURES`), `n`."""
    cells = {header: [_cell(mean, std, digits) for mean, std in
                      zip(table[f"{column}_mean"], table[f"{column}_std"], strict=True)]
             for column, (header, digits) in MEASURES.items()}
    return pd.DataFrame({"method": table.method, "bits": table.bits, "K": table.K, **cells,
                         "n": table.n})


def _cell(mean: float, std: float, digits: int) -> str:
    return f"{mean:.{digits}f}" + ("" if np.isnan(std) else f" ± {std:.{digits}f}")


def usage_markdown(tables: list[tuple[tuple, pd.DataFrame]]) -> str:
    """tables.md's usage section: a table per table set, after the note."""
    if not tables:
        return ""
    parts = ["## Codebook usage\n", NOTE + "\n"]
    for key, table in tables:
        parts += [f"### {key_title(key)}: codebook usage\n", frame_markdown(usage_text(table)), ""]
    return "\n".join(parts) + "\n"


def usage_frame(tables: list[tuple[tuple, pd.DataFrame]]) -> pd.DataFrame:
    """The tables as one numeric frame (usage.csv): the table key's columns, then the table's."""
    frames = [table.assign(**dict(zip(TABLE_KEYS, key, strict=True)))[[*TABLE_KEYS, *table.columns]]
              for key, table in tables]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


@plt.rc_context(STYLE)
def plot_usage_vs_map(results: pd.DataFrame, colours: dict[str, str], stem: Path) -> Figure:
    """A panel per table key with usage: a point per run and code length, the database codes'
    perplexity (mean over codebooks) against mAP, coloured by method variant."""
    results = with_key_defaults(results)
    measured = results[results.usage_database_perplexity.notna()]
    panels = sorted(measured.groupby(TABLE_KEYS), key=lambda pair: key_order(pair[0]))
    fig, axes = _panels(len(panels))
    for ax, (key, group) in zip(axes, panels, strict=False):
        for name in ordered_variants(group.variant):
            runs = group[group.variant == name]
            ax.scatter(runs.usage_database_perplexity, runs["map"], s=18,
                       color=_style(name, colours)["color"], label=name)
        width = 2 ** int(dict(zip(TABLE_KEYS, key, strict=True))["sub_bits"])
        ax.axvline(width, color="#999999", linewidth=0.8, linestyle=":")
        ax.set(title=textwrap.fill(key_title(key), PANEL_TITLE_CHARS), ylabel="mAP",
               xlabel=f"database codes' perplexity (at most {width})")
    title = "Codebook usage against mAP (a point per run)"
    return _save(fig, title, stem, key=None, caption=title)


def usage_html(tables: list[tuple[tuple, pd.DataFrame]], figure: Figure | None) -> str:
    """index.html's usage section: the figure, then a table per table set."""
    if not tables:
        return ""
    parts = ['<section id="usage"><h2>Codebook usage</h2>',
             f'<p class="note">{html.escape(NOTE)}</p>']
    if figure is not None:
        parts.append(figure_html(figure, overview=True))
    parts += ['<div class="row">',
              *(frame_html(usage_text(table), f"usage {key_slug(key)}",
                           f"{key_title(key)}: codebook usage") for key, table in tables),
              "</div></section>"]
    return "\n".join(parts)
