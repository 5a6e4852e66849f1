"""`gslbench report`: the evaluated runs as results.csv, paper tables (Markdown, CSV, LaTeX),
figures (PNG, SVG), one self-contained index.html, and optionally the results document with
GSL's wins, ties and losses against each baseline.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

import pandas as pd

from gslbench.errors import GslbenchError
from gslbench.html_report import report_html
from gslbench.pipeline import resolve_run, runs_dir
from gslbench.plots import write_figures
from gslbench.results import TABLE_KEYS, Evaluated, axes_summary, ordered_variants, read_runs
from gslbench.storage import atomic_path, read_json
from gslbench.tables import (
    frame_markdown,
    mean_difference,
    paper_tables,
    seed_stats,
    tables_frame,
    tables_latex,
    tables_markdown,
)


def select_runs(results_dir: Path, runs: Sequence[str] = (), patterns: Sequence[str] = (),
                datasets: Sequence[str] = ()) -> list[Path]:
    """The run directories to report on.

    runs: run ids or directories (default: every run under RESULTS/runs); patterns: keep the runs
    whose id matches any of these globs (`fnmatch`, case-sensitive); datasets: keep the runs of
    these data sets (read from config.json). An empty runs folder, or filters that leave nothing,
    are user errors.
    """
    if runs:
        run_dirs = [resolve_run(results_dir, run) for run in runs]
    else:
        root = runs_dir(results_dir)
        run_dirs = sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith("."))
        if not run_dirs:
            raise GslbenchError(f"no evaluated runs to report: {root} holds no runs "
                                "(run `gslbench bench`, or train, encode and evaluate first)")
    if patterns:
        matched = [p for p in run_dirs if any(fnmatchcase(p.name, pattern) for pattern in patterns)]
        if not matched:
            raise GslbenchError(f"no run id matches --runs {' '.join(patterns)} "
                                f"(among {len(run_dirs)} runs)")
        run_dirs = matched
    if datasets:
        found = {p: _run_dataset(p) for p in run_dirs}
        matched = [p for p, dataset in found.items() if dataset in datasets]
        if not matched:
            present = sorted({d for d in found.values() if d is not None})
            raise GslbenchError(f"no run of data set {', '.join(datasets)} "
                                f"(the runs hold: {', '.join(present) or 'none'})")
        run_dirs = matched
    return run_dirs


def _run_dataset(run_dir: Path) -> str | None:
    path = run_dir / "config.json"
    return read_json(path)["config"]["dataset"] if path.is_file() else None


def write_report(runs: list[Path], out_dir: Path, doc: Path | None = None,
                 doc_intro: str = "") -> tuple[pd.DataFrame, str]:
    """Report on the runs that have metrics.json (the others are named and skipped).

    Writes into `out_dir`: results.csv (a row per run), tables.md, tables.tex, tables_map.csv,
    tables_gap.csv, the figures (`plots.write_figures`, PNG and SVG) and index.html; and the
    results document to `doc` if given. Returns the results and the tables' Markdown.
    """
    data = read_runs(runs)
    results = data.results
    out_dir.mkdir(parents=True, exist_ok=True)
    tables = paper_tables(results)
    markdown = tables_markdown(tables)
    _write_csv(results, out_dir / "results.csv")
    _write_text(markdown, out_dir / "tables.md")
    _write_text(tables_latex(tables), out_dir / "tables.tex")
    for kind in ("map", "gap"):
        _write_csv(tables_frame(tables, kind), out_dir / f"tables_{kind}.csv")
    figures = write_figures(data, out_dir)
    _write_text(report_html(results, tables, figures), out_dir / "index.html")
    if doc is not None:
        _write_text(results_document(data, doc_intro), doc)
    return results, markdown


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


BASELINES = ("qloss", "two-step")


def gsl_verdicts(results: pd.DataFrame, value: str = "map") -> pd.DataFrame:
    """GSL against each baseline per (data set, quantizer, code bits): mean difference and verdict.

    Verdict: `win` / `loss` when the difference of means exceeds twice its standard error
    sqrt(s1^2/n1 + s2^2/n2) over seeds, `tie` otherwise; `n/a` with fewer than 2 seeds a side.
    """
    rows = []
    stats = seed_stats(results[results.method != "float"], value)
    for (dataset, _, loss, quantizer, bits), cell in stats.groupby(level=[*TABLE_KEYS, "code_bits"]):
        cell = cell.droplevel([*TABLE_KEYS, "code_bits"])
        variants = ordered_variants(cell.index)
        gsl_variants = [v for v in variants if v.startswith("gsl")]
        baselines = [v for v in variants if v.split()[0] in BASELINES]
        for gsl_variant, baseline in itertools.product(gsl_variants, baselines):
            gsl, other = cell.loc[gsl_variant], cell.loc[baseline]
            diff, se = mean_difference(*gsl[["mean", "std", "count"]], *other[["mean", "std", "count"]])
            verdict = "n/a" if min(gsl["count"], other["count"]) < 2 else (
                "win" if diff > 2 * se else "loss" if diff < -2 * se else "tie")
            rows.append({"dataset": dataset, "loss": loss, "quantizer": quantizer,
                         "code_bits": bits, "gsl_variant": gsl_variant, "baseline": baseline,
                         "gsl": gsl["mean"], "baseline_map": other["mean"],
                         "difference": diff, "std_error": se, "verdict": verdict})
    return pd.DataFrame(rows)


def final_training_state(logs: pd.DataFrame) -> pd.DataFrame:
    """The last logged epoch of each run (training-log frame of `results.read_runs`), with its
    data set, quantizer, code bits and method variant."""
    if logs.empty:
        return pd.DataFrame()
    last = logs.sort_values("epoch").groupby("run").tail(1)
    return last.drop(columns="method").rename(columns={"variant": "method", "epoch": "epochs"})[
        ["dataset", "quantizer", "code_bits", "method", "epochs", "sim_loss", "quant_mse_refit"]]


def shared_settings(configs: pd.DataFrame) -> str:
    """The run settings, each with every value it takes across the evaluated runs."""
    return ", ".join(f"{column}={'/'.join(map(str, sorted(configs[column].unique())))}"
                     for column in configs.columns)


def results_document(data: Evaluated, intro: str = "") -> str:
    """docs/results.md: mAP and gap-to-float tables, GSL's verdicts against each baseline, the
    final training state.

    `intro` (Markdown: protocol, tuning budget) goes right after the title."""
    results = data.results
    verdicts = gsl_verdicts(results)
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
        "## Where GSL wins, ties or loses",
        "",
        "Difference = mean mAP of gsl minus the baseline's. A win or loss needs the difference to",
        "exceed twice its standard error over seeds; anything closer is a tie.",
        "",
    ]
    if not verdicts.empty:
        counts = verdicts.groupby(["gsl_variant", "baseline", "verdict"]).size().unstack(fill_value=0)
        lines += [frame_markdown(counts.reset_index()), ""]
        shown = verdicts.assign(**{c: verdicts[c].map("{:+.4f}".format) for c in ("difference",)},
                                **{c: verdicts[c].map("{:.4f}".format)
                                   for c in ("gsl", "baseline_map", "std_error")})
        lines += [frame_markdown(shown), ""]
    state = final_training_state(data.logs)
    if not state.empty:
        summary = (state.groupby(["dataset", "quantizer", "code_bits", "method"])
                   [["sim_loss", "quant_mse_refit"]].mean().reset_index())
        lines += [
            "## The training logs at the last epoch",
            "",
            "Mean over seeds of the similarity loss and of `quant_mse_refit`, the mean squared",
            "quantization error of the training representations under codebooks refitted on them",
            "that epoch (comparable across methods; see gslbench/training.py).",
            "",
            frame_markdown(summary.assign(sim_loss=summary.sim_loss.map("{:.4f}".format),
                                          quant_mse_refit=summary.quant_mse_refit.map("{:.5f}".format))),
            "",
        ]
    return "\n".join(lines) + "\n"
