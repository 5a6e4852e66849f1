"""Results table, per-quantizer tables (mean ± std over seeds) and the mAP-vs-bits plot."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from gslbench.errors import GslbenchError  # noqa: E402
from gslbench.storage import atomic_path, read_json  # noqa: E402

log = logging.getLogger(__name__)
METHOD_ORDER = ("float", "two-step", "qloss", "gsl")


def collect_results(runs: list[Path]) -> pd.DataFrame:
    """One row per run directory that has metrics.json; runs without it are named and skipped."""
    rows, missing = [], []
    for run_dir in runs:
        if (run_dir / "metrics.json").is_file():
            rows.append(_result_row(read_json(run_dir / "metrics.json")))
        else:
            missing.append(run_dir.name)
    if missing:
        log.warning("skipping %d run(s) without metrics.json: %s", len(missing), ", ".join(missing))
    if not rows:
        raise GslbenchError("no evaluated runs to report (no metrics.json under the runs given)")
    return pd.DataFrame(rows).sort_values(["dataset", "quantizer", "code_bits", "variant", "seed"])


def variant(config: dict) -> str:
    """A method with the settings only it uses: `qloss λ=0.1`, `gsl α=1 k=8`, `float`, `two-step`."""
    if config["method"] == "qloss":
        return f"qloss λ={config['qloss_lambda']:g}"
    if config["method"] == "gsl":
        return f"gsl α={config['gsl_alpha']:g} k={config['gsl_k']}"
    return config["method"]


def ordered_variants(variants) -> list[str]:  # noqa: ANN001
    """Distinct variants, float first, then two-step, qloss and gsl variants."""
    return sorted(set(variants), key=lambda v: (METHOD_ORDER.index(v.split()[0]), v))


def _result_row(metrics: dict) -> dict:
    config = metrics["config"]
    top = metrics.get("map_top")
    row = {
        "dataset": config["dataset"], "feature": config["feature"], "method": config["method"],
        "variant": variant(config), "quantizer": config["quantizer"], "code_bits": config["bits"],
        "loss": config["loss"],
        "seed": config["seed"],
        "map": metrics["map_at"][str(top)] if top else metrics["map"],
        "map_all": metrics["map"],
    }
    for group in ("map_at", "precision_at", "recall_at"):
        row.update({f"{group}_{k}": v for k, v in metrics[group].items()})
    row.update({name: metrics[name] for name in ("train_s", "encode_s", "eval_s")})
    row["run"] = metrics["run"]
    return row


def with_float_ceiling(results: pd.DataFrame) -> pd.DataFrame:
    """Repeat each data set's float runs under every (quantizer, code_bits) it was compared at."""
    floats = results[results.method == "float"]
    quantized = results[results.method != "float"]
    cells = quantized[["dataset", "feature", "loss", "quantizer", "code_bits"]].drop_duplicates()
    keys = ["dataset", "feature", "loss"]  # the float ceiling of the same data and loss
    ceiling = floats.drop(columns=["quantizer", "code_bits"]).merge(cells, on=keys)
    return pd.concat([quantized, ceiling], ignore_index=True)


def mean_std_table(results: pd.DataFrame, value: str = "map") -> dict[tuple, pd.DataFrame]:
    """{(dataset, feature, loss, quantizer): DataFrame rows=variant, columns=code bits,
    'mean ± std (n)'}."""
    tables = {}
    keys = ["dataset", "feature", "loss", "quantizer"]
    for key, group in with_float_ceiling(results).groupby(keys):
        stats = group.groupby(["variant", "code_bits"])[value].agg(["mean", "std", "count"])
        cells = stats.apply(_format_cell, axis=1).unstack("code_bits").fillna("—")
        cells = cells.loc[ordered_variants(cells.index)].rename_axis(index="method")
        cells.columns = [f"{bits} bits" for bits in cells.columns]
        tables[key] = cells
    return tables


def _format_cell(stats: pd.Series) -> str:
    std = 0.0 if pd.isna(stats["std"]) else stats["std"]
    return f"{stats['mean']:.4f} ± {std:.4f} ({int(stats['count'])})"


def tables_markdown(tables: dict[tuple, pd.DataFrame]) -> str:
    """The tables as Markdown, one section per data set and quantizer."""
    parts = []
    for (dataset, feature, loss, quantizer), table in tables.items():
        parts.append(f"## {dataset} ({feature}), {quantizer.upper()}, {loss} loss: "
                     "mAP, mean ± std over seeds (n)\n")
        parts.append(_frame_markdown(table.reset_index()))
        parts.append("")
    return "\n".join(parts) + "\n"


def plot_map_vs_bits(results: pd.DataFrame, path: Path) -> None:
    """One panel per (data set, quantizer): mAP against code bits, a line per method, std bars."""
    data = with_float_ceiling(results)
    panels = list(data.groupby(["dataset", "quantizer"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, ((dataset, quantizer), group) in zip(axes[0], panels, strict=True):
        for name in ordered_variants(group.variant):
            stats = group[group.variant == name].groupby("code_bits")["map"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                        capsize=3, label=name, linestyle="--" if name == "float" else "-")
        ax.set(title=f"{dataset}, {quantizer.upper()}", xlabel="code length (bits)", ylabel="mAP")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(runs: list[Path], out_dir: Path, doc: Path | None = None,
                 doc_intro: str = "") -> tuple[pd.DataFrame, str]:
    """Write results.csv, tables.md, map_vs_bits.png into `out_dir` (and the results document to
    `doc`); return the results and the tables' Markdown."""
    results = collect_results(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    markdown = tables_markdown(mean_std_table(results))
    with atomic_path(out_dir / "tables.md") as tmp:
        tmp.write_text(markdown)
    plot_map_vs_bits(results, out_dir / "map_vs_bits.png")
    if doc is not None:
        doc.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(doc) as tmp:
            tmp.write_text(results_document(results, runs, doc_intro))
    return results, markdown


BASELINES = ("qloss", "two-step")


def gsl_verdicts(results: pd.DataFrame, value: str = "map") -> pd.DataFrame:
    """GSL against each baseline per (data set, quantizer, code bits): mean difference and verdict.

    Verdict: `win` / `loss` when the difference of means exceeds twice its standard error
    sqrt(s1^2/n1 + s2^2/n2) over seeds, `tie` otherwise; `n/a` with fewer than 2 seeds a side.
    """
    rows = []
    quantized = results[results.method != "float"]
    keys = ["dataset", "loss", "quantizer", "code_bits"]
    for (dataset, loss, quantizer, bits), group in quantized.groupby(keys):
        variants = ordered_variants(group.variant)
        gsl_variants = [v for v in variants if v.startswith("gsl")]
        baselines = [v for v in variants if v.split()[0] in BASELINES]
        for gsl_variant, baseline in itertools.product(gsl_variants, baselines):
            gsl = group.loc[group.variant == gsl_variant, value]
            other = group.loc[group.variant == baseline, value]
            diff = gsl.mean() - other.mean()
            se = (gsl.var() / len(gsl) + other.var() / len(other)) ** 0.5
            verdict = "n/a" if min(len(gsl), len(other)) < 2 else (
                "win" if diff > 2 * se else "loss" if diff < -2 * se else "tie")
            rows.append({"dataset": dataset, "loss": loss, "quantizer": quantizer,
                         "code_bits": bits, "gsl_variant": gsl_variant, "baseline": baseline,
                         "gsl": gsl.mean(), "baseline_map": other.mean(),
                         "difference": diff, "std_error": se, "verdict": verdict})
    return pd.DataFrame(rows)


def final_training_state(runs: list[Path]) -> pd.DataFrame:
    """The last epoch of each run's train_log.csv with its method, data set, quantizer and bits."""
    rows = []
    for run_dir in runs:
        log_path, metrics_path = run_dir / "train_log.csv", run_dir / "metrics.json"
        if not (log_path.is_file() and metrics_path.is_file()):
            continue
        config = read_json(metrics_path)["config"]
        last = pd.read_csv(log_path).iloc[-1]
        rows.append({"dataset": config["dataset"], "quantizer": config["quantizer"],
                     "code_bits": config["bits"], "method": variant(config), "epochs": last["epoch"],
                     "sim_loss": last["sim_loss"], "quant_mse_refit": last["quant_mse_refit"]})
    return pd.DataFrame(rows)


def shared_settings(runs: list[Path]) -> str:
    """The run settings, each with every value it takes across the evaluated runs."""
    configs = pd.DataFrame([read_json(run / "metrics.json")["config"] for run in runs
                            if (run / "metrics.json").is_file()])
    return ", ".join(f"{column}={'/'.join(map(str, sorted(configs[column].unique())))}"
                     for column in configs.columns)


def results_document(results: pd.DataFrame, runs: list[Path], intro: str = "") -> str:
    """docs/results.md: mAP tables, GSL's verdicts against each baseline, final training state.

    `intro` (Markdown: protocol, tuning budget) goes right after the title."""
    verdicts = gsl_verdicts(results)
    axes = ", ".join(f"{column}: {', '.join(map(str, sorted(results[column].unique())))}"
                     for column in ("dataset", "method", "quantizer", "code_bits", "seed"))
    lines = [
        "# gslbench results",
        "",
        *([intro.strip(), ""] if intro.strip() else []),
        f"Generated by `gslbench report --doc` from {len(results)} evaluated runs ({axes}).",
        f"Settings of the runs: {shared_settings(runs)}.",
        "Cells: mean ± std of mAP over seeds (number of seeds); `float` is the unquantized ceiling.",
        "",
        tables_markdown(mean_std_table(results)),
        "## Where GSL wins, ties or loses",
        "",
        "Difference = mean mAP of gsl minus the baseline's. A win or loss needs the difference to",
        "exceed twice its standard error over seeds; anything closer is a tie.",
        "",
    ]
    if not verdicts.empty:
        counts = verdicts.groupby(["gsl_variant", "baseline", "verdict"]).size().unstack(fill_value=0)
        lines += [_frame_markdown(counts.reset_index()), ""]
        shown = verdicts.assign(**{c: verdicts[c].map("{:+.4f}".format) for c in ("difference",)},
                                **{c: verdicts[c].map("{:.4f}".format)
                                   for c in ("gsl", "baseline_map", "std_error")})
        lines += [_frame_markdown(shown), ""]
    state = final_training_state(runs)
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
            _frame_markdown(summary.assign(sim_loss=summary.sim_loss.map("{:.4f}".format),
                                           quant_mse_refit=summary.quant_mse_refit.map("{:.5f}".format))),
            "",
        ]
    return "\n".join(lines) + "\n"


def _frame_markdown(frame: pd.DataFrame) -> str:
    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|---" * len(frame.columns) + "|"
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])
