"""The results document (`gslbench report --doc`): the tables, the paired comparisons of the
methods (`gslbench.report.stats`) with one sentence per regime, and the quantization error of the
training set (the training log's last epoch) beside those of the database and the queries."""

from __future__ import annotations

import pandas as pd

from gslbench.report.frames import Evaluated, axes_summary
from gslbench.report.stats import CHALLENGER, CONFIDENCE, REGIME_KEYS, comparisons
from gslbench.report.tables import frame_markdown, paper_tables, seed_stats, tables_markdown

VERDICTS = ("win", "tie", "loss", "n/a")
PHRASES = {"win": "beats", "tie": "ties", "loss": "loses to", "n/a": "has too few seeds against"}


def regime_title(regime: dict) -> str:
    """`fashion-mnist (efficientnet-lite0), PQ, 8 bits = 2 × 16 words, pairwise loss`."""
    bits, sub_bits = int(regime["code_bits"]), int(regime["sub_bits"])
    return (f"{regime['dataset']} ({regime['feature']}), {regime['quantizer'].upper()}, {bits} bits"
            f" = {bits // sub_bits} × {2 ** sub_bits} words, {regime['loss']} loss")


def interval_text(row: pd.Series) -> str:
    """`+0.0140, 95% CI [+0.0100, +0.0180], 5/5 seeds above` (a comparisons row)."""
    if row["n"] < 2:
        return f"{row['mean']:+.4f}, {row['n']} seed"
    return (f"{row['mean']:+.4f}, {CONFIDENCE:.0%} CI [{row['low']:+.4f}, {row['high']:+.4f}], "
            f"{row['positive']}/{row['n']} seeds above")


def regime_sentence(regime: dict, rows: pd.DataFrame, float_gap: float | None) -> str:
    """One sentence on a regime: how far two-step falls below float (the pressure), then GSL's
    verdict against each other method (every method's against two-step where GSL did not run).

    rows: the regime's rows of `stats.comparisons`."""
    gsl = rows[rows.method.str.split().str[0] == CHALLENGER]
    subjects = gsl if not gsl.empty else rows[rows.against.str.split().str[0] == "two-step"]
    parts = []
    for method, group in subjects.groupby("method", sort=False):
        clauses = [f"{PHRASES[row.verdict]} {row.against} ({interval_text(row)})"
                   for _, row in group.iterrows()]
        parts.append(f"{method} " + "; ".join(clauses))
    pressure = "" if float_gap is None else f"two-step is {float_gap:.4f} mAP below float; "
    return f"**{regime_title(regime)}**: {pressure}{'; '.join(parts) or 'no comparison'}."


def float_gaps(results: pd.DataFrame) -> dict[tuple, float]:
    """Per regime (`REGIME_KEYS` values), float's mean mAP minus two-step's, where both ran."""
    stats = seed_stats(results)["mean"].unstack("variant")
    if "float" not in stats or "two-step" not in stats:
        return {}
    return (stats["float"] - stats["two-step"]).dropna().to_dict()


def comparison_section(results: pd.DataFrame) -> list[str]:
    """The paired comparisons: a sentence per regime, the verdict counts, every comparison."""
    table = comparisons(results)
    if table.empty:
        return []
    gaps = float_gaps(results)
    sentences = [f"- {regime_sentence(dict(zip(REGIME_KEYS, regime, strict=True)), rows, gaps.get(regime))}"
                 for regime, rows in table.groupby(REGIME_KEYS, sort=False)]
    names = table.assign(method=table.method.str.split().str[0],
                         against=table.against.str.split().str[0])
    counts = (names.groupby(["method", "against", "verdict"]).size().unstack(fill_value=0)
              .reindex(columns=list(VERDICTS), fill_value=0).reset_index())
    shown = table.assign(
        words=2 ** table.sub_bits, difference=table["mean"].map("{:+.4f}".format),
        interval=[f"[{low:+.4f}, {high:+.4f}]" for low, high in zip(table.low, table.high, strict=True)],
        seeds_above=[f"{p}/{n}" for p, n in zip(table.positive, table.n, strict=True)],
    )[["dataset", "quantizer", "words", "code_bits", "method", "against", "difference", "interval",
       "seeds_above", "verdict"]]
    return [
        "## Paired comparisons",
        "",
        "Every method against two-step and against qloss, and GSL against every other method, in",
        "each regime: the mean over seeds of the paired difference in mAP (method minus the other;",
        f"seeds are paired: same initialisation and batches), its {CONFIDENCE:.0%} t-interval and the",
        "seeds where it is positive. Win or loss: the interval excludes 0; otherwise a tie.",
        "",
        *sentences,
        "",
        "Verdicts over the regimes, by method (with the knobs each regime ran with):",
        "",
        frame_markdown(counts),
        "",
        frame_markdown(shown),
        "",
    ]


def final_training_state(logs: pd.DataFrame) -> pd.DataFrame:
    """The last logged epoch of each run (training-log frame of `frames.read_runs`): run, data
    set, quantizer, sub_bits, code bits, method variant, epochs, sim_loss, quant_mse_refit."""
    if logs.empty:
        return pd.DataFrame()
    last = logs.sort_values("epoch").groupby("run").tail(1)
    return last.drop(columns="method").rename(columns={"variant": "method", "epoch": "epochs"})[
        ["run", "dataset", "feature", "quantizer", "sub_bits", "code_bits", "method", "epochs",
         "sim_loss", "quant_mse_refit"]]


def error_section(data: Evaluated) -> list[str]:
    """The similarity loss and the training set's quantization error at the last epoch, beside
    encode's errors of the database and the queries; means over seeds."""
    state = final_training_state(data.logs)
    if state.empty:
        return []
    errors = data.results[["run", "quant_mse_database", "quant_mse_query"]]
    columns = ["sim_loss", "quant_mse_refit", "quant_mse_database", "quant_mse_query"]
    summary = (state.merge(errors, on="run", how="left")
               .groupby(["dataset", "feature", "quantizer", "sub_bits", "code_bits", "method"])[columns]
               .mean().reset_index())
    words = (2 ** summary.sub_bits).astype(str).where(summary.quantizer != "none", "—")
    shown = summary.assign(words=words, sim_loss=summary.sim_loss.map("{:.4f}".format),
                           **{c: summary[c].map("{:.5f}".format) for c in columns[1:]})
    return [
        "## Quantization error: training set, database, queries",
        "",
        "Means over seeds. `sim_loss` and `quant_mse_refit` are the training log's last epoch: the",
        "mean squared quantization error of the training representations under codebooks refitted",
        "on them (see gslbench/methods/loop.py). `quant_mse_database` and `quant_mse_query` are",
        "encode's: the error of the database and of the queries under the run's final codebooks.",
        "",
        frame_markdown(shown[["dataset", "feature", "quantizer", "words", "code_bits", "method",
                              *columns]]),
        "",
    ]


def shared_settings(configs: pd.DataFrame) -> str:
    """The run settings, each with every value it takes across the evaluated runs (a method's
    knobs over that method's runs). A whole float prints as an integer: a knob column holds its
    integers as floats beside the other methods' NaN."""
    def shown(value: object) -> str:
        return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)

    return ", ".join(f"{column}={'/'.join(map(shown, sorted(configs[column].dropna().unique())))}"
                     for column in configs.columns)


def results_document(data: Evaluated, intro: str = "") -> str:
    """docs/results.md: mAP, gap-to-float and quantization-error tables, the paired comparisons
    and the quantization errors of the training set, database and queries.

    `intro` (Markdown: protocol, tuning budget) goes right after the title."""
    results = data.results
    lines = [
        "# gslbench results",
        "",
        *([intro.strip(), ""] if intro.strip() else []),
        f"Generated by `gslbench report --doc` from {len(results)} evaluated runs "
        f"({axes_summary(results)}).",
        f"Settings of the runs: {shared_settings(data.configs)}.",
        "Cells: mean ± std of mAP over seeds (number of seeds); `float` is the unquantized ceiling.",
        "",
        tables_markdown(paper_tables(results)),
        *comparison_section(results),
        *error_section(data),
    ]
    return "\n".join(lines) + "\n"
