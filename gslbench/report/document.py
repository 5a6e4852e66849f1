"""The results document (`gslbench report --doc`): the answer first (one compact table of the
declared comparisons: GSL against two-step, qloss, pca and the best other method), then where its
numbers come from (the feature files' sha256, the machine, versions and thread counts), the runs'
settings, what it found (the verdict blocks), the tables, the paired comparisons
(`gslbench.report.stats`) with one sentence per regime and the verdict counts, and the
quantization error of the training set (the training log's last epoch) beside those of the
database and the queries, per protocol.

Its per-seed rows are written beside it as a CSV of the same stem (`gslbench.report.doc_csv`,
which makes the document's tables and comparisons again from that CSV alone).
"""

from __future__ import annotations

import pandas as pd

from gslbench.declared import DEFAULT, Declared
from gslbench.devices import cpu_model
from gslbench.evaluation.primary import TITLES
from gslbench.report.answer import answer_section
from gslbench.report.cost import cost_section
from gslbench.report.frames import (
    DEFAULT_MODE,
    KEY_DEFAULTS,
    TABLE_KEYS,
    Evaluated,
    key_extras,
    key_title,
    tuned_rows,
    with_key_defaults,
)
from gslbench.report.neighbours import (
    metric_text,
    neighbour_section,
)
from gslbench.report.stats import (
    CONFIDENCE,
    MARGIN,
    REGIME_KEYS,
    VERDICTS,
    comparisons,
    units_text,
    validation_note,
    with_primary,
    with_unit_defaults,
)
from gslbench.report.summary import (
    block_note,
    detectable_text,
    found_blocks,
    generator,
    made_text,
    settings_tables,
)
from gslbench.report.tables import (
    PaperTable,
    frame_markdown,
    paper_tables,
    seed_stats,
    tables_markdown,
)

PHRASES = {"better": "beats", "worse": "loses to", "equivalent": "is equivalent to",
           "inconclusive": "is inconclusive against", "not powered": "is not powered against"}


def regime_title(regime: dict) -> str:
    """`fashion-mnist (efficientnet-lite0), PQ, 8 bits = 2 × 16 words, pairwise loss`, then what
    is not the default (protocol, codebook fit, evaluation mode, settings, condition:
    `key_extras`)."""
    bits, sub_bits = int(regime["code_bits"]), int(regime["sub_bits"])
    return ", ".join([
        f"{regime['dataset']} ({regime['feature']}), {regime['quantizer'].upper()}, {bits} bits"
        f" = {bits // sub_bits} × {2 ** sub_bits} words, {regime['loss']} loss",
        *key_extras(regime)])


def interval_text(row: pd.Series) -> str:
    """`+0.0140, 95% CI [+0.0100, +0.0180], 5/5 units above, Holm p=0.012, detectable 0.0090`
    (a comparisons row)."""
    if row["n"] < 2:
        return f"{row['mean']:+.4f}, {row['n']} unit"
    return (f"{row['mean']:+.4f}, {CONFIDENCE:.0%} CI [{row['low']:+.4f}, {row['high']:+.4f}], "
            f"{row['positive']}/{row['n']} units above, Holm p={row['p_holm']:.3g}, "
            f"detectable {detectable_text(row['detectable'])}")


def regime_sentence(regime: dict, rows: pd.DataFrame, float_gap: float | None) -> str:
    """One sentence on a regime: how far two-step falls below float (the pressure), then each
    declared comparison's verdict.

    rows: the regime's rows of `stats.comparisons`."""
    parts = []
    for method, group in rows.groupby("method", sort=False):
        clauses = [f"{PHRASES[row.verdict]} {row.against}"
                   f"{' (the best other)' if row.best_other else ''} ({interval_text(row)})"
                   for _, row in group.iterrows()]
        parts.append(f"{method} " + "; ".join(clauses))
    title = TITLES.get(rows.primary_metric.iloc[0], "mAP")
    pressure = "" if float_gap is None else f"two-step is {float_gap:.4f} {title} below float; "
    return f"**{regime_title(regime)}**: {pressure}{'; '.join(parts) or 'no comparison'}."


def float_gaps(results: pd.DataFrame) -> dict[tuple, float]:
    """Per regime (`REGIME_KEYS` values), float's mean primary metric (`stats.with_primary`: mAP,
    or 1-recall@10 on the neighbour track) minus two-step's, where both ran."""
    stats = seed_stats(with_primary(results), "primary")["mean"].unstack("variant")
    if "float" not in stats or "two-step" not in stats:
        return {}
    return (stats["float"] - stats["two-step"]).dropna().to_dict()


def comparison_section(results: pd.DataFrame, compared: pd.DataFrame,
                       margin: float = MARGIN) -> list[str]:
    """The paired comparisons (`compared`: `stats.comparisons` of `results`): a sentence per
    regime, the verdict counts, every comparison."""
    table = compared
    if table.empty:
        return []
    gaps = float_gaps(results)
    sentences = [f"- {regime_sentence(dict(zip(REGIME_KEYS, regime, strict=True)), rows, gaps.get(regime))}"
                 for regime, rows in table.groupby(REGIME_KEYS, sort=False)]
    names = table.assign(method=table.method.str.split().str[0],
                         against=table.against.str.split().str[0])
    counts = (names.groupby(["method", "against", "verdict"]).size().unstack(fill_value=0)
              .reindex(columns=list(VERDICTS), fill_value=0).reset_index())
    extras = [column for column in ("protocol", "codebooks", "settings", "condition")
              if set(table[column]) != {KEY_DEFAULTS[column]}]
    if table.feature.nunique() > 1:  # e.g. frozen and fine-tuned runs of one data set
        extras.insert(0, "feature")
    if set(zip(table.search, table.metric, strict=True)) != {DEFAULT_MODE}:
        extras += ["search", "metric"]
    if table.best_other.any():
        extras.append("best_other")
    shown = table.assign(
        words=2 ** table.sub_bits,
        difference=[f"{mean:+.4f} [{low:+.4f}, {high:+.4f}]"
                    for mean, low, high in zip(table["mean"], table.low, table.high, strict=True)],
        units=[f"{units_text(n)}, {p} above" for p, n in zip(table.positive, table.n, strict=True)],
        p=table.p.map("{:.3g}".format), p_holm=table.p_holm.map("{:.3g}".format),
        p_equivalence_holm=table.p_equivalence_holm.map("{:.3g}".format),
        detectable=table.detectable.map(detectable_text),
        best_other=table.best_other.map({True: "yes", False: ""}),
    ).rename(columns={"difference": "difference [95% CI]", "code_bits": "bits"})[
        ["dataset", "quantizer", "words", "bits", *extras, "method", "against",
         "difference [95% CI]", "units", "p", "p_holm", "p_equivalence_holm", "detectable",
         "verdict"]]
    return [
        "## Paired comparisons",
        "",
        "Each declared comparison in each regime: the mean over paired units (draw, seed: same",
        "classes held out, same initialisation and batches) of the difference in "
        f"{metric_text(table.primary_metric)} (method minus",
        f"the other) with its raw {CONFIDENCE:.0%} t-interval, the units and how many of them "
        "are above zero, the "
        "paired t-test's p, both p-values Holm-adjusted over the one family of "
        f"{int(table.family_size.iloc[0])} tests, and the smallest difference detectable.",
        block_note(margin, compared),
        "",
        *sentences,
        "",
        "Verdicts over the regimes, by method (the headline counts):",
        "",
        frame_markdown(counts),
        "",
        frame_markdown(shown),
        "",
    ]


FOUND_TITLE = "What it found"  # the heading `gslbench report` prints the section of


def found_section(tables: list[PaperTable], compared: pd.DataFrame, margin: float = MARGIN,
                  level: int = 2) -> list[str]:
    """`## What it found`: per table set, its verdict sentence and block (`summary.found_blocks`
    of the `tables.paper_tables` and `stats.comparisons`)."""
    lines = ["#" * level + f" {FOUND_TITLE}", "", block_note(margin, compared), ""]
    for key, sentence, block in found_blocks(tables, compared):
        lines += ["#" * (level + 1) + f" {key_title(key)}", "", sentence, ""]
        if not block.empty:
            lines += [frame_markdown(block), ""]
    return lines


def settings_section(data: Evaluated, level: int = 2) -> list[str]:
    """`## Settings`: the settings every run shares, then those that differ."""
    same, differ = settings_tables(data.configs, data.provenance)
    lines = ["#" * level + " Settings", "", "The same for every run (runs: how many have the "
             "setting; a method's knob only its method's runs):", "", frame_markdown(same), ""]
    if not differ.empty:
        lines += ["Different among the runs (each value with its number of runs):", "",
                  frame_markdown(differ), ""]
    return lines


def group_title(key: tuple) -> str:
    """`fashion-mnist (efficientnet-lite0), pairwise loss, standard protocol` for a table key
    (`TABLE_KEYS` values): what its table set shares with the others of its section, then what
    is not the default but the codebook fit (`key_extras`)."""
    names = dict(zip(TABLE_KEYS, key, strict=True))
    extras = key_extras({**names, "protocol": KEY_DEFAULTS["protocol"],
                         "codebooks": KEY_DEFAULTS["codebooks"]})
    return ", ".join([f"{names['dataset']} ({names['feature']})", f"{names['loss']} loss",
                      f"{names['protocol']} protocol", *extras])


def grouped(keys: list[tuple]) -> dict[str, list[int]]:
    """The positions of `keys` (table keys, in report order) per `group_title`, in order of
    first appearance: one section of the document each."""
    groups: dict[str, list[int]] = {}
    for position, key in enumerate(keys):
        groups.setdefault(group_title(key), []).append(position)
    return groups


def document_found(tables: list[PaperTable], compared: pd.DataFrame,
                   margin: float = MARGIN) -> list[str]:
    """`## What it found` for the document: a section per `group_title`, in it per table set
    its title in bold, its verdict sentence and block (`summary.found_blocks`), so that the
    page's table of contents stays short."""
    blocks = found_blocks(tables, compared)
    lines = [f"## {FOUND_TITLE}", "", block_note(margin, compared), ""]
    for title, positions in grouped([key for key, _, _ in blocks]).items():
        lines += [f"### {title}", ""]
        for key, sentence, block in (blocks[i] for i in positions):
            lines += [f"**{key_title(key)}.** {sentence}", ""]
            if not block.empty:
                lines += [frame_markdown(block), ""]
    return lines


def document_table_section(tables: list[PaperTable]) -> list[str]:
    """`## Tables`: a section per `group_title`, in it each table (`tables.tables_markdown`)
    under its title in bold instead of a heading of its own."""
    lines = ["## Tables", ""]
    for title, positions in grouped([table.key for table in tables]).items():
        lines += [f"### {title}", ""]
        for table in (tables[i] for i in positions):
            markdown = tables_markdown([table]).strip()
            lines += [f"**{table.title}.**", markdown.split("\n", 1)[1].strip(), ""]
    return lines


def document_tables(results: pd.DataFrame, margin: float = MARGIN,
                    declared: Declared = DEFAULT) -> tuple[str, str]:
    """The parts of the document made from the per-seed rows alone: the answer (the compact table
    of the declared comparisons), then what it found (the verdict blocks), the tables and the
    paired comparisons (`rebuild_tables` makes both again from the document's CSV)."""
    results = with_unit_defaults(results)
    tables = paper_tables(results)
    compared = comparisons(results, declared, margin=margin)
    answer = answer_section(compared, declared, validation_note(results, declared), margin,
                            tuned_variants(results))
    return "\n".join(answer), "\n".join([*document_found(tables, compared, margin),
                                          *document_table_section(tables),
                                          *neighbour_section(results),
                                          *comparison_section(results, compared, margin)])


def tuned_variants(results: pd.DataFrame) -> frozenset[str]:
    """The variants (as the comparisons name them: `frames.tuned_rows`) whose runs are tuned
    choices, those with a validation score (`validation_map`); none without it."""
    if "validation_map" not in results:
        return frozenset()
    merged, _ = tuned_rows(with_key_defaults(results))
    return frozenset(merged.variant[merged.validation_map.notna()])


def final_training_state(logs: pd.DataFrame) -> pd.DataFrame:
    """The last logged epoch of each run (training-log frame of `frames.read_runs`): run, data
    set, feature, protocol, quantizer, sub_bits, code bits, method variant, epochs, sim_loss,
    quant_mse_refit."""
    if logs.empty:
        return pd.DataFrame()
    last = with_key_defaults(logs).sort_values("epoch").groupby("run").tail(1)
    return last.drop(columns="method").rename(columns={"variant": "method", "epoch": "epochs"})[
        ["run", "dataset", "feature", "protocol", "quantizer", "sub_bits", "code_bits", "method",
         "epochs", "sim_loss", "quant_mse_refit"]]


def error_section(data: Evaluated) -> list[str]:
    """The similarity loss and the training set's quantization error at the last epoch, beside
    encode's errors of the database and the queries (codebooks fitted on the training set);
    means over seeds, per protocol (an unseen-class run's database and queries hold other
    classes than a standard run's: they are never pooled)."""
    state = final_training_state(data.logs)
    if state.empty:
        return []
    train_fit = data.results[data.results.codebooks == KEY_DEFAULTS["codebooks"]]
    errors = train_fit[["run", "quant_mse_database", "quant_mse_query"]].drop_duplicates("run")
    columns = ["sim_loss", "quant_mse_refit", "quant_mse_database", "quant_mse_query"]
    summary = (state.merge(errors, on="run", how="left")
               .groupby(["dataset", "feature", "protocol", "quantizer", "sub_bits", "code_bits",
                         "method"])[columns]
               .mean().reset_index())
    words = (2 ** summary.sub_bits).astype(str).where(summary.quantizer != "none", "—")
    shown = summary.assign(words=words, sim_loss=summary.sim_loss.map("{:.4f}".format),
                           **{c: summary[c].map("{:.5f}".format) for c in columns[1:]})
    return [
        "## Quantization error: training set, database, queries",
        "",
        "Means over seeds, per protocol. `sim_loss` and `quant_mse_refit` are the training log's",
        "last epoch: the mean squared quantization error of the training representations under",
        "codebooks refitted on them (see gslbench/methods/loop.py). `quant_mse_database` and",
        "`quant_mse_query` are encode's: the error of the database and of the queries under the",
        "run's final codebooks.",
        "",
        frame_markdown(shown[["dataset", "feature", "protocol", "quantizer", "words", "code_bits",
                              "method", *columns]]),
        "",
    ]


def provenance_section(data: Evaluated, csv_name: str | None = None) -> list[str]:
    """`## Provenance`: the feature files' sha256 (with their runs), the versions, thread counts
    and devices the runs recorded (each with its number of runs), and the CPU of the machine
    that made the document."""
    runs = data.provenance
    files = (runs.fillna({"features_sha256": "not recorded"})
             .groupby(["dataset", "feature", "protocol", "features_sha256"]).size()
             .rename("runs").reset_index())
    recorded = [column for column in runs.columns
                if column.startswith(("version_", "threads_")) or column == "device"]
    environment = pd.DataFrame(
        [[column.removeprefix("version_").replace("threads_", "threads: "),
          ", ".join(f"{value} ({count})" for value, count in
                    runs[column].dropna().astype(str).value_counts().sort_index().items())]
         for column in recorded], columns=["recorded by the runs", "values (runs)"])
    lines = ["## Provenance", "",
             "The feature file each run was trained on (sha256 of its bytes):", "",
             frame_markdown(files), "",
             "What the runs' evaluations recorded (each value with its number of runs):", "",
             frame_markdown(environment), "",
             f"This document was made on a machine with CPU `{cpu_model()}`."]
    if csv_name:
        lines.append(f"Its per-seed rows are in `{csv_name}` beside it; "
                     "`gslbench.report.doc_csv.rebuild_tables` makes the tables and comparisons "
                     "below again from that file alone.")
    return [*lines, ""]


def results_document(data: Evaluated, intro: str = "", margin: float = MARGIN,
                     csv_name: str | None = None, cost: pd.DataFrame | None = None,
                     declared: Declared = DEFAULT, made: str | None = None) -> str:
    """docs/results.md: the answer (the compact table of the declared comparisons), provenance,
    settings, what it found, the mAP, gap-to-float and quantization-error tables, the paired
    comparisons, the quantization errors of the training set, database and queries, and what the
    runs cost (`cost.read_cost`'s frame).

    `intro` (Markdown: protocol, tuning budget) goes right after the answer; `csv_name` is the
    per-seed CSV written beside the document (named in its provenance); `made`: what made it
    (`summary.made_text`; by default this gslbench, now, with no grid)."""
    results = data.results
    answer, tables = document_tables(results, margin, declared)
    lines = [
        "# gslbench results",
        "",
        answer,
        *([intro.strip(), ""] if intro.strip() else []),
        made or made_text(generator(), data),
        "Cells: mean ± std of mAP over seeds (number of seeds); `float` is the unquantized ceiling.",
        "",
        *provenance_section(data, csv_name),
        *settings_section(data),
        tables,
        *error_section(data),
        *(cost_section(cost) if cost is not None else []),
    ]
    return "\n".join(lines) + "\n"
