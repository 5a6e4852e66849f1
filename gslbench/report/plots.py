"""The report's figures, each written as PNG and SVG: mAP against code length, the retrieval
curves of metrics.json (recall@R, precision@K, precision-recall), the training curves of
train_log.csv, and search-bench's recall against queries per second.

Every figure colours a method variant the same way (`method_colours`, decided once over all the
runs reported); float, the unquantized ceiling, is a dashed black line. Curves are means over
seeds; the mAP points carry the std over seeds as error bars. Per table key (data set, feature,
loss, quantizer) there is one figure per curve, with a panel per code length, so a grid makes
3 + 1 figures per key and one mAP figure in all.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FixedLocator,
    MaxNLocator,
    NullLocator,
    ScalarFormatter,
)

from gslbench.report.frames import (  # noqa: E402
    TABLE_KEYS,
    Evaluated,
    key_slug,
    key_title,
    ordered_variants,
    tuned_figures_data,
    with_float_ceiling,
)
from gslbench.storage import atomic_path  # noqa: E402

FORMATS = ("png", "svg")
DPI = 110
PANEL_SIZE = (4.4, 3.4)  # inches per panel
MIN_WIDTH = 7.0  # inches: room for the title and the legend below a single panel
MAX_COLUMNS = 4
TITLE_CHARS_PER_INCH = 11  # a figure's title wraps at its width (figure.titlesize 11 points)
ROBUST_QUANTILE = 0.1  # training panels: each method's 10%-90% range stays in view
STYLE = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8, "ytick.labelsize": 8,
         "legend.fontsize": 9, "figure.titlesize": 11,
         "svg.hashsalt": "gslbench"}  # the same SVG ids every time


@dataclass(frozen=True)
class CurveSpec:
    """How one curve of metrics.json is drawn."""

    title: str
    xlabel: str
    ylabel: str
    log_x: bool


CURVES = {
    "recall_at": CurveSpec("recall@R", "R (database items retrieved)", "recall@R", True),
    "precision_at": CurveSpec("precision@K", "K (database items retrieved)", "precision@K", True),
    "pr_curve": CurveSpec("precision-recall", "recall", "interpolated precision", False),
}
TRAINING = {  # train_log.csv column -> y label
    "sim_loss": "similarity loss",
    "quant_mse": "quantization MSE\n(codebooks in use)",
    "quant_mse_refit": "quantization MSE\n(codebooks refitted)",
}


@dataclass(frozen=True)
class Figure:
    """A written figure: `stem`.png and `stem`.svg; `key` is its table key, None for all keys;
    `title` names it in full (drawn on it), `caption` without its key (for a page whose heading
    gives the key)."""

    key: tuple[str, ...] | None
    title: str
    stem: Path
    caption: str


def method_colours(variants: Iterable[str]) -> dict[str, str]:
    """One colour per method variant (tab10 in method order), black for float."""
    palette = plt.get_cmap("tab10").colors
    quantized = [v for v in ordered_variants(variants) if v != "float"]
    return {"float": "#000000",
            **{name: to_hex(palette[i % len(palette)]) for i, name in enumerate(quantized)}}


def write_figures(data: Evaluated, out_dir: Path) -> list[Figure]:
    """Write every figure of the report into `out_dir`; return them, the mAP figure first. A
    method tuned per code length is one line (`tuned_figures_data`)."""
    data = tuned_figures_data(data)
    colours = method_colours(data.results.variant)
    results = with_float_ceiling(data.results)
    if results.empty:
        return []
    figures = [plot_map_vs_bits(results, colours, out_dir / "map_vs_bits")]
    curves = dict(list(with_float_ceiling(data.curves).groupby([*TABLE_KEYS, "curve"])))
    logs = dict(list(with_float_ceiling(data.logs).groupby(TABLE_KEYS)))
    for key in sorted(results.groupby(TABLE_KEYS).groups):
        figures += [plot_curve(curves[(*key, curve)], curve, key, colours,
                               out_dir / f"{key_slug(key)}-{curve}")
                    for curve in CURVES if (*key, curve) in curves]
        if key in logs:
            figures.append(plot_training(logs[key], key, colours, out_dir / f"{key_slug(key)}-training"))
    return figures


@plt.rc_context(STYLE)
def plot_map_vs_bits(results: pd.DataFrame, colours: dict[str, str], stem: Path) -> Figure:
    """A panel per table key: mAP against code bits, a line per method, std over seeds as bars.

    results: the results frame with the float ceiling repeated (`with_float_ceiling`)."""
    panels = list(results.groupby(TABLE_KEYS))
    fig, axes = _panels(len(panels))
    for ax, (key, group) in zip(axes, panels, strict=False):
        for name in ordered_variants(group.variant):
            stats = group[group.variant == name].groupby("code_bits")["map"].agg(["mean", "std"])
            ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), capsize=3,
                        marker="o", **_style(name, colours))
        ax.set(title=key_title(key), xlabel="code length (bits)", ylabel="mAP")
        _bits_axis(ax, sorted(group.code_bits.unique()))
    title = "mAP against code length (mean ± std over seeds)"
    return _save(fig, title, stem, key=None, caption=title)


@plt.rc_context(STYLE)
def plot_curve(points: pd.DataFrame, curve: str, key: tuple[str, ...], colours: dict[str, str],
               stem: Path) -> Figure:
    """One curve of metrics.json for one table key: a panel per code length, a line per method
    (mean over seeds at each point). points: rows of the curves frame (curve, x, y)."""
    spec = CURVES[curve]
    panels = sorted(points.code_bits.unique())
    fig, axes = _panels(len(panels))
    for ax, bits in zip(axes, panels, strict=False):
        panel = points[points.code_bits == bits]
        for name in ordered_variants(panel.variant):
            mean = panel[panel.variant == name].groupby("x")["y"].mean()
            ax.plot(mean.index, mean.to_numpy(), marker="o" if spec.log_x else None, markersize=3,
                    **_style(name, colours))
        ax.set(title=f"{bits} bits", xlabel=spec.xlabel, ylabel=spec.ylabel, ylim=(0, 1.02))
        if spec.log_x:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, 1)
    return _save(fig, f"{spec.title}: {key_title(key)} (mean over seeds)", stem, key,
                 f"{spec.title} (mean over seeds)")


@plt.rc_context(STYLE)
def plot_training(logs: pd.DataFrame, key: tuple[str, ...], colours: dict[str, str],
                  stem: Path) -> Figure:
    """The training curves of one table key: a row per logged quantity (similarity loss,
    quantization MSE under the codebooks in use and refitted), a column per code length, a line
    per method (mean over seeds at each epoch; quantities a method does not log are left out).

    Each panel's y-range keeps every method's curve in view (`robust_limits`): one method's spike
    is cut at the panel's edge rather than flattening the others."""
    bits_list = sorted(logs.code_bits.unique())
    fig, grid = _grid(len(TRAINING), len(bits_list), sharex=True)
    clipped = False
    for column, bits in enumerate(bits_list):
        panel = logs[logs.code_bits == bits]
        means = panel.groupby(["variant", "epoch"])[list(TRAINING)].mean()
        for row, (quantity, label) in enumerate(TRAINING.items()):
            ax = grid[row, column]
            drawn = []
            for name in ordered_variants(panel.variant):
                series = means.xs(name)[quantity].dropna()
                if not series.empty:
                    ax.plot(series.index, series.to_numpy(), marker="o", markersize=2.5,
                            **_style(name, colours))
                    drawn.append(series.to_numpy())
            limits = robust_limits(drawn)
            if limits is not None:
                ax.set_ylim(*limits)
                clipped = True
            ax.set(ylabel=label, title=f"{bits} bits" if row == 0 else "")
            ax.grid(alpha=0.3)
        grid[-1, column].set_xlabel("epoch")
        grid[-1, column].xaxis.set_major_locator(MaxNLocator(integer=True))
    note = "; y-ranges cut to keep every method in view" if clipped else ""
    return _save(fig, f"training: {key_title(key)} (mean over seeds{note})", stem, key,
                 f"training curves (mean over seeds{note})")


def robust_limits(curves: list[np.ndarray], quantile: float = ROBUST_QUANTILE,
                  pad: float = 0.1, spread: float = 3.0) -> tuple[float, float] | None:
    """A y-range in which every curve stays visible, or None where the default range is right.

    The robust range runs from the lowest to the highest of the curves' own `quantile` and
    1 - `quantile` quantiles; when all the points span more than `spread` times that, a few
    points (one method's spike, the first epochs) would squeeze every curve into a line, so the
    range is the robust one padded by `pad` of its span, and those points are cut at its edge.

    curves: (n_i,) float arrays, one per method."""
    if not curves:
        return None
    low = min(float(np.quantile(curve, quantile)) for curve in curves)
    high = max(float(np.quantile(curve, 1 - quantile)) for curve in curves)
    everything = np.concatenate(curves)
    if everything.max() - everything.min() <= spread * (high - low):
        return None
    span = (high - low) or abs(high) or 1.0
    return low - pad * span, high + pad * span


QUANTIZER_MARKERS = {"pq": "o", "opq": "s", "rq": "^", "lsq": "D", "none": "*"}
SEARCH_AXES = {"qps_batched": "queries per second, batched", "qps_batch1": "queries per second, batch 1"}


@plt.rc_context(STYLE)
def plot_recall_qps(table: pd.DataFrame, colours: dict[str, str], stem: Path) -> Figure:
    """search-bench's trade-off: recall@R of the true neighbours (R = 10, or the smallest R
    measured) against queries per second, batched (top row) and at batch 1 (bottom row), a
    column per (data set, feature, metric); a point per method variant, quantizer (marker) and
    code length (labelled), the exact float search as black stars.

    table: `tables.search_table`'s frame (means over seeds)."""
    recalls = sorted(int(c.rsplit("_", 1)[1]) for c in table.columns if c.startswith("recall_at_"))
    recall = 10 if 10 in recalls else recalls[0]
    panels = list(table.groupby(["dataset", "feature", "metric"], sort=True))
    fig, grid = _grid(len(SEARCH_AXES), len(panels))
    for column, ((dataset, feature, metric), panel) in enumerate(panels):
        for row, (speed, label) in enumerate(SEARCH_AXES.items()):
            ax = grid[row, column]
            for point in panel.itertuples():
                reference = point.variant not in colours
                ax.scatter(getattr(point, speed), getattr(point, f"recall_at_{recall}"),
                           marker=QUANTIZER_MARKERS.get(point.quantizer, "o"),
                           color="#000000" if reference else colours[point.variant],
                           label=None if reference else point.variant, s=60 if reference else 30,
                           zorder=3)
                text = "float" if point.quantizer == "none" else f"{point.quantizer} {point.code_bits:.0f}"
                ax.annotate(text, (getattr(point, speed),
                            getattr(point, f"recall_at_{recall}")), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set(xlabel=label, ylabel=f"recall@{recall} of the true neighbours", ylim=(0, 1.05),
                   title=f"{dataset} ({feature}), {metric}" if row == 0 else "")
            ax.grid(alpha=0.3)
    title = "search-bench: recall against queries per second (stars: exact float search)"
    return _save(fig, title, stem, key=None, caption=title)


def _grid(rows: int, columns: int, **options) -> tuple[plt.Figure, np.ndarray]:
    size = (max(MIN_WIDTH, PANEL_SIZE[0] * columns), PANEL_SIZE[1] * rows + 0.8)
    return plt.subplots(rows, columns, squeeze=False, layout="constrained", figsize=size, **options)


def _panels(count: int) -> tuple[plt.Figure, list[plt.Axes]]:
    columns = min(count, MAX_COLUMNS)
    fig, grid = _grid(math.ceil(count / columns), columns)
    axes = list(grid.flat)
    for ax in axes[count:]:
        ax.set_visible(False)
    for ax in axes[:count]:
        ax.grid(alpha=0.3)
    return fig, axes[:count]


def _style(variant: str, colours: dict[str, str]) -> dict:
    ceiling = variant == "float"  # dashed, drawn over the methods it may coincide with
    return {"color": colours[variant], "label": variant, "linestyle": "--" if ceiling else "-",
            "zorder": 3 if ceiling else 2}


def _bits_axis(ax: plt.Axes, bits: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(bits))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def _save(fig: plt.Figure, title: str, stem: Path, key: tuple[str, ...] | None,
          caption: str) -> Figure:
    """Give the figure its title and one legend (a method each), write PNG and SVG, close it."""
    labelled = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    names = ordered_variants(labelled)
    fig.legend([labelled[name] for name in names], names, loc="outside lower center",
               ncols=min(len(names), 4), frameon=False)
    fig.suptitle(textwrap.fill(title, width=int(fig.get_figwidth() * TITLE_CHARS_PER_INCH)))
    for fmt in FORMATS:
        with atomic_path(stem.with_name(f"{stem.name}.{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
    plt.close(fig)
    return Figure(key, title, stem, caption)
