"""The tuning table (`gslbench tune --doc`, docs/tuning.md): every setting tune tried with its
validation mAP (mean ± std over seeds), a table per (data set, feature, loss, quantizer,
sub_bits) with the settings as rows and the code lengths as columns, each method's choice bold;
then the choices."""

from __future__ import annotations

import json

import pandas as pd

from gslbench.report.frames import TABLE_KEYS
from gslbench.report.tables import PaperTable, frame_markdown, seed_stats, tables_markdown, wide_stats


def tuning_tables(results: pd.DataFrame, chosen: pd.DataFrame) -> list[PaperTable]:
    """One `tuning` table per table key of the tuning runs' results frame (`frames.read_runs`
    plus `cell`); bold: the variants of `chosen` (`bench.tune.choose`) in their cells."""
    picked = set(zip(chosen.cell, chosen.variant, strict=True))
    cell_of = results.groupby([*TABLE_KEYS, "code_bits"])["cell"].first()
    tables = []
    for key, stats in seed_stats(results).groupby(level=TABLE_KEYS):
        mean, std, count = wide_stats(stats)
        best = pd.DataFrame({bits: [(cell_of.get((*key, bits)), variant) in picked
                                    for variant in mean.index] for bits in mean.columns},
                            index=mean.index)
        tables.append(PaperTable(key, "tuning", mean, std, count, best))
    return tables


def choices_markdown(chosen: pd.DataFrame) -> str:
    """The choices as a Markdown table: data set, quantizer, words per codebook, bits, method,
    the chosen setting and its mean validation mAP."""
    cells = [json.loads(cell) for cell in chosen.cell]
    frame = pd.DataFrame({
        "dataset": [cell["dataset"] for cell in cells],
        "quantizer": [cell["quantizer"] for cell in cells],
        "words": [2 ** cell["sub_bits"] for cell in cells],
        "bits": [cell["bits"] for cell in cells],
        "method": chosen.method, "choice": chosen.variant,
        "validation mAP": chosen.validation_map.map("{:.4f}".format),
    })
    return frame_markdown(frame)


def tuning_document(results: pd.DataFrame, chosen: pd.DataFrame, summary: str,
                    intro: str = "") -> str:
    """docs/tuning.md: the title, `intro`, `summary` (what was tuned, how), the tables of every
    setting tried and the choices."""
    return "\n".join([
        "# gslbench tuning",
        "",
        *([intro.strip(), ""] if intro.strip() else []),
        summary.strip(),
        "",
        tables_markdown(tuning_tables(results, chosen)),
        "## The choices",
        "",
        choices_markdown(chosen),
        "",
    ])
