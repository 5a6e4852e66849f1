"""index.html: one self-contained page with the report's tables and figures.

The page references nothing outside itself: figures are embedded as base64 PNG data URIs and the
style sheet is inline, so it opens offline and can be archived or mailed alone. It opens with what
made it (date, gslbench version and commit), what it found (a verdict block per table set) and
the runs' settings; then a section per table set (table key) in the tables' order with its
tables, captioned by their own names (the section heading gives the key), and its figure, shown
at its own size (at most the window's width) and captioned with what its panels show; and, when
some run went through search-bench, a section with its recall-against-QPS figure and table.
Tables sit side by side where they fit the window.
"""

from __future__ import annotations

import base64
import html

import pandas as pd

from gslbench.report.frames import Evaluated, key_slug, key_title
from gslbench.report.plots import Figure
from gslbench.report.stats import VERDICTS
from gslbench.report.summary import (
    block_note,
    found_blocks,
    settings_tables,
)
from gslbench.report.tables import PaperTable, search_cells

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #222; }
.row { display: flex; flex-wrap: wrap; gap: 0 2.5em; align-items: flex-start; }
.row > * { min-width: 0; max-width: 100%; }
table.paper { border-collapse: collapse; margin: 1em 0 2em; font-variant-numeric: tabular-nums; }
table.paper caption { caption-side: top; text-align: left; padding-bottom: 0.4em; max-width: 40em; }
table.paper th, table.paper td { padding: 0.25em 0.8em; text-align: right; }
table.paper th[scope=row] { text-align: left; font-weight: normal; }
table.paper thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
table.paper tbody tr:last-child > * { border-bottom: 2px solid #222; }
table.verdict th, table.verdict td, table.settings th, table.settings td { text-align: left; }
table.settings td { overflow-wrap: anywhere; }
section.found { border: 1px solid #bbb; border-radius: 6px; padding: 0.2em 1.2em 0.8em;
                background: #fafafa; }
td.better { color: #1a7f37; font-weight: 600; }
td.worse { color: #b42318; font-weight: 600; }
td.equivalent { color: #1f4e9c; }
td.inconclusive { color: #666; }
p.note { color: #555; font-size: 0.9em; max-width: 70em; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: 0.9em; max-width: 70em; }
"""


def table_html(table: PaperTable) -> str:
    """One table as an HTML `<table class="paper">` with its caption; the best cells `<strong>`."""
    cells = table.cells().map(html.escape)
    cells = cells.mask(table.best, "<strong>" + cells + "</strong>")
    head = "".join(f"<th>{html.escape(text)}</th>" for text in ["method", *table.headers])
    body = "".join(
        f'<tr><th scope="row">{html.escape(method)}</th>'
        + "".join(f"<td>{cell}</td>" for cell in cells.loc[method]) + "</tr>"
        for method in cells.index
    )
    return (f'<table class="paper" id="{table.slug}" data-kind="{table.kind}">'
            f"<caption>{html.escape(table.caption)}. {html.escape(table.note)}</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def figure_html(figure: Figure) -> str:
    """A figure's PNG embedded as a data URI at its own size (narrowed to the window where it
    is wider), captioned with what its panels show (the section's heading gives its table
    set) and its file names."""
    png = figure.stem.with_name(f"{figure.stem.name}.png")
    data = base64.b64encode(png.read_bytes()).decode("ascii")
    width, height = figure.size
    return (f'<figure><img src="data:image/png;base64,{data}" width="{width}" height="{height}" '
            f'alt="{html.escape(figure.title)}"><figcaption>{html.escape(figure.caption)} Files '
            f"<code>{html.escape(figure.stem.name)}.png</code> and <code>.svg</code>.</figcaption>"
            "</figure>")


def frame_html(frame: pd.DataFrame, kind: str, caption: str = "") -> str:
    """A small text frame (verdict block, settings) as a `<table class="paper KIND">`; a verdict
    cell gets its verdict as class."""
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in frame.columns)
    body = "".join(
        "<tr>" + "".join(f'<td class="{html.escape(str(cell))}">{html.escape(str(cell))}</td>'
                         if str(cell) in VERDICTS else f"<td>{html.escape(str(cell))}</td>"
                         for cell in row) + "</tr>"
        for row in frame.itertuples(index=False))
    caption = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return (f'<table class="paper {kind}">{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def found_html(tables: list[PaperTable], compared: pd.DataFrame, margin: float) -> str:
    """The verdict block of every table set (`summary.found_blocks`), in one framed section."""
    parts = ['<section class="found" id="found"><h2>What it found</h2>']
    for key, sentence, block in found_blocks(tables, compared):
        parts += [f'<h3><a href="#{key_slug(key)}">{html.escape(key_title(key))}</a></h3>',
                  f"<p>{html.escape(sentence)}</p>"]
        if not block.empty:
            parts.append(frame_html(block, "verdict"))
    parts += [f'<p class="note">{html.escape(block_note(margin, compared))}</p>', "</section>"]
    return "\n".join(parts)


def settings_html(data: Evaluated) -> str:
    """The settings every run shares and those that differ, side by side."""
    same, differ = settings_tables(data.configs, data.provenance)
    tables = [frame_html(same, "settings", "The same for every run (runs: how many have the "
                         "setting; a method's knob only its method's runs)")]
    if not differ.empty:
        tables.append(frame_html(differ, "settings", "Different among the runs (each value "
                                 "with its number of runs)"))
    return ('<section id="settings"><h2>Settings of the runs</h2><div class="row">'
            + "".join(tables) + "</div></section>")


def search_html(table: pd.DataFrame, figure: Figure) -> str:
    """search-bench's section: its figure and its table (`tables.search_cells`)."""
    cells = search_cells(table).map(html.escape)
    head = "".join(f"<th>{html.escape(name)}</th>" for name in cells.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>"
                   for row in cells.itertuples(index=False))
    return ('<section id="search"><h2>Search speed and memory (search-bench)</h2>'
            + figure_html(figure)
            + '<table class="paper" id="search-table"><caption>Queries per second, bytes per '
            "database vector and recall@R of the true float neighbours of each run's faiss "
            "index (means over seeds, n); mAP by ADC with the same metric.</caption>"
            f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>")


def report_html(data: Evaluated, tables: list[PaperTable], figures: list[Figure],
                compared: pd.DataFrame, made: str, margin: float,
                search: tuple[pd.DataFrame, Figure] | None = None, usage: str = "") -> str:
    """The whole page: what made it (`made`: `summary.made_text`), what it found (the verdict
    blocks, from `compared`: `stats.comparisons`), the runs' settings, a section per table key
    in the tables' order (its tables side by side, then its figure: `figures` has one per key),
    then the codebook usage section `usage` (HTML) when given, then search-bench's section when
    `search` (its table and figure) is given."""
    keys = list(dict.fromkeys(t.key for t in tables))
    nav = "".join(f'<li><a href="#{key_slug(key)}">{html.escape(key_title(key))}</a></li>'
                  for key in keys)
    sections = []
    for key in keys:
        sections += [f'<section id="{key_slug(key)}"><h2>{html.escape(key_title(key))}</h2>',
                     '<div class="row">', *(table_html(t) for t in tables if t.key == key),
                     "</div>", *(figure_html(f) for f in figures if f.key == key), "</section>"]
    if usage:  # the codebook usage section (`report.usage.usage_html`)
        sections.append(usage)
    if search is not None:
        sections.append(search_html(*search))
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>gslbench report</title><style>{STYLE}</style></head><body>",
        "<h1>gslbench report</h1>",
        f'<p id="generated">{html.escape(made)}</p>',
        found_html(tables, compared, margin),
        settings_html(data),
        f"<nav><h2>Table sets</h2><ul>{nav}</ul></nav>",
        *sections,
        "</body></html>",
        "",
    ])

