"""The per-seed rows beside a results document (results.csv beside results.md: `CSV_COLUMNS`, with
each run's validation mAP where the report was given tuned.toml), read back as the frame they were
written from, and the document's tables and comparisons made again from them alone (and the
declaration of comparisons and margin the document names), so that anyone can check a published
document (`rebuild_tables`), or rewrite a committed one after a change of layout or statistics
(`refresh_document`).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from gslbench.declared import DEFAULT, Declared
from gslbench.errors import GslbenchError
from gslbench.report.answer import DECLARED, declared_in
from gslbench.report.document import FOUND_TITLE, document_tables
from gslbench.report.frames import RUN_COLUMNS, with_key_defaults
from gslbench.report.neighbours import NEIGHBOUR_COLUMNS, neighbour_columns
from gslbench.report.stats import MARGIN

CSV_COLUMNS = list(dict.fromkeys([*RUN_COLUMNS, "draw", "map", "map_all", "quant_mse_database",
                                  "quant_mse_query", "validation_map", *NEIGHBOUR_COLUMNS,
                                  "primary_metric", "features_sha256", "run"]))
TEXT_COLUMNS = ["dataset", "feature", "protocol", "method", "variant", "quantizer", "loss",
                "codebooks", "search", "metric", "settings", "condition", "features_sha256", "run"]


def results_csv(results: pd.DataFrame) -> pd.DataFrame:
    """The per-seed rows the document's tables are made from (`CSV_COLUMNS`, and the neighbour
    track's k-recall@k for any k)."""
    columns = [column for column in CSV_COLUMNS if column in results]
    return results[list(dict.fromkeys([*columns, *neighbour_columns(results)]))]


def read_results_csv(path: Path) -> pd.DataFrame:
    """A results CSV (`results_csv`, the CSV beside a results document) as the results frame it was written
    from: text columns as text (empty settings stay empty)."""
    try:
        frame = pd.read_csv(path, dtype={column: str for column in TEXT_COLUMNS},
                            keep_default_na=False, na_values={"map": ["", "NaN"],
                                                              "quant_mse_database": [""],
                                                              "quant_mse_query": [""],
                                                              "validation_map": [""]})
    except (OSError, ValueError) as exc:
        raise GslbenchError(f"{path}: cannot read the results CSV ({exc})") from None
    missing = [column for column in ("dataset", "method", "variant", "code_bits", "seed", "map")
               if column not in frame]
    if missing:
        raise GslbenchError(f"{path}: not a gslbench results CSV (no {', '.join(missing)})")
    if "settings" not in frame:  # written before conditions: its `condition` is the settings
        frame = with_key_defaults(frame.rename(columns={"condition": "settings"}))
    return frame


def rebuild_tables(path: Path, margin: float | None = None,
                   declared: Declared | None = None) -> tuple[str, str]:
    """`document_tables` made again from a results CSV alone (the one beside the document), with
    the declaration of comparisons and the margin the document beside it names
    (`answer.declared_in`; the defaults without one), unless given."""
    named_declared, named_margin = DEFAULT, MARGIN
    document = path.with_suffix(".md")
    if document.is_file():
        named_declared, named_margin = declared_in(read_document(document), str(document))
    return document_tables(read_results_csv(path), named_margin if margin is None else margin,
                           named_declared if declared is None else declared)


def read_document(path: Path) -> str:
    """A results document's text; an unreadable one is a one-line user error."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise GslbenchError(f"{path}: cannot read the results document ({exc})") from None


def refresh_document(path: Path, margin: float | None = None,
                     declared: Declared | None = None) -> str:
    """The text of a committed results document (docs/results.md) with the parts
    `rebuild_tables` makes from the CSV beside it written again: the answer, and what it found
    through the paired comparisons; the intro, provenance, settings, errors and cost (made from
    the runs, which a clone does not have) are kept as they are. For a change of layout or
    statistics without running the campaign again; the declaration and margin are the
    document's own (`rebuild_tables`) unless given."""
    text = read_document(path)
    lines = text.splitlines()
    headings = [i for i, line in enumerate(lines) if line.startswith("## ")]
    try:
        answer = lines.index("## The answer")
        named = [i for i in range(answer, len(lines)) if lines[i].startswith(DECLARED[0])]
        if named:  # the answer ends with its declaration
            intro = named[0] + 1
        else:  # written before it: with the first table
            table = next(i for i in range(answer, len(lines))
                         if lines[i].startswith(("|", "<!--")))
            intro = next(i for i in range(table, len(lines)) if not lines[i].strip())
        found = lines.index(f"## {FOUND_TITLE}")
        compared = lines.index("## Paired comparisons")
    except (ValueError, StopIteration):
        raise GslbenchError(f"{path}: not a results document (no answer, {FOUND_TITLE!r} or "
                            "paired comparisons)") from None
    end = next((i for i in headings if i > compared), len(lines))
    new_answer, new_tables = rebuild_tables(path.with_suffix(".csv"), margin, declared)
    return "\n".join([*lines[:answer], new_answer.rstrip("\n"), *lines[intro:found],
                      new_tables.rstrip("\n"), "", *lines[end:]]).rstrip("\n") + "\n"
