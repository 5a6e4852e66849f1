"""search-bench's figure: recall of the true neighbours against queries per second, batched and
at batch 1 (`plot_recall_qps`), drawn with the report's figure style and legend (`plots`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from gslbench.report.plots import PANEL_SIZE, STYLE, Figure, plt, save_figure, title_and_legend

QUANTIZER_MARKERS = {"pq": "o", "opq": "s", "rq": "^", "lsq": "D", "none": "*"}
QUANTIZER_SYMBOLS = {"pq": "●", "opq": "■", "rq": "▲", "lsq": "◆"}  # the markers, in a title
QUANTIZER_LINES = {"pq": "-", "opq": "--", "rq": ":", "lsq": "-."}
SEARCH_AXES = {"qps_batched": "queries per second, batched", "qps_batch1": "queries per second, batch 1"}


@plt.rc_context(STYLE)
def plot_recall_qps(table: pd.DataFrame, colours: dict[str, str], stem: Path) -> Figure:
    """search-bench's trade-off: recall@R of the true neighbours (R = 10, or the smallest R
    measured) against queries per second, batched (top row) and at batch 1 (bottom row), a
    column per (data set, feature, metric); a curve per method variant and quantizer (its colour
    the variant's, its marker and line the quantizer's) through its code lengths, each point
    labelled with its code bits, and the exact float searches as black stars.

    table: `tables.search_table`'s frame (means over seeds)."""
    recalls = sorted(int(c.rsplit("_", 1)[1]) for c in table.columns if c.startswith("recall_at_"))
    recall = f"recall_at_{10 if 10 in recalls else recalls[0]}"
    panels = list(table.groupby(["dataset", "feature", "metric"], sort=True))
    fig, grid = _grid(len(SEARCH_AXES), len(panels))
    for column, ((dataset, feature, metric), panel) in enumerate(panels):
        for row, (speed, label) in enumerate(SEARCH_AXES.items()):
            ax = grid[row, column]
            _search_curves(ax, panel, speed, recall, colours)
            ax.set_xscale("log")
            ax.set(xlabel=label, ylabel=f"{recall.replace('_at_', '@')} of the true neighbours",
                   ylim=(0, 1.05), title=f"{dataset} ({feature}), {metric}" if row == 0 else "")
            ax.grid(alpha=0.3)
    quantizers = ", ".join(f"{QUANTIZER_SYMBOLS[q]}\u00a0{q}" for q in
                           dict.fromkeys(table.quantizer) if q in QUANTIZER_SYMBOLS)
    title = ("search-bench: recall against queries per second (stars: exact float search; "
             f"{quantizers}; labels: code bits)")
    title_and_legend(fig, title)
    return save_figure(fig, title, stem, key=None, caption=f"{title}.")


def _search_curves(ax: plt.Axes, panel: pd.DataFrame, speed: str, recall: str,
                   colours: dict[str, str]) -> None:
    """One panel of `plot_recall_qps`: a curve per (variant, quantizer) in order of code bits,
    its points labelled with their bits; rows of a variant without a colour (the exact search)
    as black stars labelled float."""
    for (variant, quantizer), series in panel.groupby(["variant", "quantizer"], sort=False):
        series = series.sort_values("code_bits")
        x, y = series[speed].to_numpy(), series[recall].to_numpy()
        if variant not in colours:  # the exact float search
            ax.scatter(x, y, marker=QUANTIZER_MARKERS["none"], color="#000000", s=60, zorder=3)
            texts = ["float"] * len(series)
        else:
            ax.plot(x, y, color=colours[variant], label=variant, zorder=3,
                    marker=QUANTIZER_MARKERS.get(quantizer, "o"), markersize=5,
                    linestyle=QUANTIZER_LINES.get(quantizer, "-"), linewidth=1)
            texts = [f"{bits:.0f}" for bits in series.code_bits]
        for text, point in zip(texts, zip(x, y, strict=True), strict=True):
            ax.annotate(text, point, fontsize=6, xytext=(3, 3), textcoords="offset points")


def _grid(rows: int, columns: int) -> tuple[plt.Figure, np.ndarray]:
    """A figure of rows x columns panels (at least two panels wide: room for the legend)."""
    size = (PANEL_SIZE[0] * max(columns, 2), PANEL_SIZE[1] * rows)
    return plt.subplots(rows, columns, squeeze=False, layout="constrained", figsize=size)


