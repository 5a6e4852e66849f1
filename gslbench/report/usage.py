"""The report's codebook usage (`gslbench.evaluation.usage`): a table per table set (each table
set's figure plots the usage against mAP: `gslbench.report.plots`).

Each table has a row per quantized method variant and code length: the perplexity of the code
histogram and the share of codewords never used, for the training items' codes and the
database's, and the database codes' entropy against its maximum, each averaged over the codebooks
(results.csv's `usage_*` columns), then mean ± std over seeds; and the mAP beside them. Runs
evaluated before usage was measured (NaN) and float runs (no codebooks) have no row.
"""

from __future__ import annotations

import html

import numpy as np
import pandas as pd

from gslbench.report.frames import TABLE_KEYS, key_slug, key_title, ordered_variants, with_key_defaults
from gslbench.report.page import frame_html
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


def usage_html(tables: list[tuple[tuple, pd.DataFrame]]) -> str:
    """index.html's usage section: a table per table set."""
    if not tables:
        return ""
    parts = ['<section id="usage"><h2>Codebook usage</h2>',
             f'<p class="note">{html.escape(NOTE)}</p>']
    parts += ['<div class="row">',
              *(frame_html(usage_text(table), f"usage {key_slug(key)}",
                           f"{key_title(key)}: codebook usage") for key, table in tables),
              "</div></section>"]
    return "\n".join(parts)
