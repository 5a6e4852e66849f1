"""Results table, per-quantizer tables (mean ± std over seeds) and the mAP-vs-bits plot."""

from __future__ import annotations

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
    return pd.DataFrame(rows).sort_values(["dataset", "quantizer", "code_bits", "method", "seed"])


def _result_row(metrics: dict) -> dict:
    config = metrics["config"]
    top = metrics.get("map_top")
    row = {
        "dataset": config["dataset"], "feature": config["feature"], "method": config["method"],
        "quantizer": config["quantizer"], "code_bits": config["bits"], "loss": config["loss"],
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
    keys = ["dataset", "feature", "loss"]
    ceiling = floats.drop(columns=["quantizer", "code_bits"]).merge(cells, on=keys)
    return pd.concat([quantized, ceiling], ignore_index=True)


def mean_std_table(results: pd.DataFrame, value: str = "map") -> dict[tuple, pd.DataFrame]:
    """{(dataset, feature, quantizer): DataFrame rows=method, columns=code bits, 'mean ± std (n)'}."""
    tables = {}
    for key, group in with_float_ceiling(results).groupby(["dataset", "feature", "quantizer"]):
        stats = group.groupby(["method", "code_bits"])[value].agg(["mean", "std", "count"])
        cells = stats.apply(_format_cell, axis=1).unstack("code_bits")
        order = [m for m in METHOD_ORDER if m in cells.index]
        cells = cells.loc[order]
        cells.columns = [f"{bits} bits" for bits in cells.columns]
        tables[key] = cells
    return tables


def _format_cell(stats: pd.Series) -> str:
    std = 0.0 if pd.isna(stats["std"]) else stats["std"]
    return f"{stats['mean']:.4f} ± {std:.4f} ({int(stats['count'])})"


def tables_markdown(tables: dict[tuple, pd.DataFrame]) -> str:
    """The tables as Markdown, one section per data set and quantizer."""
    parts = []
    for (dataset, feature, quantizer), table in tables.items():
        parts.append(f"## {dataset} ({feature}), {quantizer.upper()}: mAP, mean ± std over seeds (n)\n")
        parts.append(table.to_markdown() if _has_tabulate() else _plain_markdown(table))
        parts.append("")
    return "\n".join(parts) + "\n"


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def _plain_markdown(table: pd.DataFrame) -> str:
    header = "| method | " + " | ".join(table.columns) + " |"
    rule = "|---" * (len(table.columns) + 1) + "|"
    rows = [f"| {method} | " + " | ".join(row) + " |" for method, row in table.iterrows()]
    return "\n".join([header, rule, *rows])


def plot_map_vs_bits(results: pd.DataFrame, path: Path) -> None:
    """One panel per (data set, quantizer): mAP against code bits, a line per method, std bars."""
    data = with_float_ceiling(results)
    panels = list(data.groupby(["dataset", "quantizer"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, ((dataset, quantizer), group) in zip(axes[0], panels, strict=True):
        for method in [m for m in METHOD_ORDER if m in set(group.method)]:
            stats = group[group.method == method].groupby("code_bits")["map"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), marker="o",
                        capsize=3, label=method, linestyle="--" if method == "float" else "-")
        ax.set(title=f"{dataset}, {quantizer.upper()}", xlabel="code length (bits)", ylabel="mAP")
        ax.set_xscale("log", base=2)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(runs: list[Path], out_dir: Path) -> tuple[pd.DataFrame, str]:
    """Write results.csv, tables.md and map_vs_bits.png into `out_dir`; return results and tables."""
    results = collect_results(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "results.csv") as tmp:
        results.to_csv(tmp, index=False)
    markdown = tables_markdown(mean_std_table(results))
    with atomic_path(out_dir / "tables.md") as tmp:
        tmp.write_text(markdown)
    plot_map_vs_bits(results, out_dir / "map_vs_bits.png")
    return results, markdown
