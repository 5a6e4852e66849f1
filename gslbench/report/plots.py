"""The report's figures, each written as PNG and SVG: one figure per table set (table key), in
the tables' order (search-bench's is `search_plot`'s, made with the helpers here).

A table set's figure holds, in this order: mAP against code length (std over seeds as error
bars), the database codes' perplexity against mAP where the codes' usage was measured, the
retrieval curves of metrics.json (recall@R, precision@K, precision-recall) and the training
curves of train_log.csv (similarity loss, quantization MSE under the codebooks in use and
refitted), the curves a panel per code length. With several code lengths each quantity is a row
of panels (a column per code length, at most `MAX_COLUMNS`); with one, the panels flow
`MAX_COLUMNS` to a row. Its title is the table key (wrapped to the figure's width); the page
gives the full description beside it (`Figure.caption`).

The sizes follow the content: a panel is `PANEL_SIZE` inches at `DPI`, so a figure of
`MAX_COLUMNS` columns is as wide as the page at 1280 pixels and is shown at its own size there;
the legend below it takes a row per `LEGEND_COLUMNS` methods. Every figure colours a method
variant the same way (`method_colours`, decided once over all the runs reported); float, the
unquantized ceiling, is a dashed black line. Curves are means over seeds.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
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
from gslbench.report.tables import key_order  # noqa: E402
from gslbench.storage import atomic_path  # noqa: E402

FORMATS = ("png", "svg")
DPI = 100
PANEL_SIZE = (3.9, 2.9)  # inches per panel: three columns fill a 1280-pixel window at DPI
MAX_COLUMNS = 3
LEGEND_COLUMNS = 4
LEGEND_HANDLE = 0.7  # inches a legend entry takes besides its text
LEGEND_ROW = 0.3  # inches per legend row
TITLE_ROOM = 0.45  # inches per line of the figure's title
CHARS_PER_INCH = {"axes": 11, "figure": 10, "legend": 11}  # text at the STYLE sizes
Y_TICKS = 5  # at most: enough for a small panel (each tick costs drawing time)
ROBUST_QUANTILE = 0.1  # training panels: each method's 10%-90% range stays in view
STYLE = {"axes.titlesize": 10, "axes.labelsize": 9, "xtick.labelsize": 8.5, "ytick.labelsize": 8.5,
         "legend.fontsize": 9.5, "figure.titlesize": 11.5,
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
TRAINING = {  # train_log.csv column -> (panel title, y label)
    "sim_loss": ("similarity loss", "loss"),
    "quant_mse": ("MSE, codebooks in use", "quantization MSE"),
    "quant_mse_refit": ("MSE, codebooks refitted", "quantization MSE"),
}
CAPTIONS = {"sim_loss": "the similarity loss at each epoch",
            "quant_mse": "the training representations' quantization MSE under the codebooks in "
                         "use (those of the previous refit)",
            "quant_mse_refit": "and under codebooks refitted on them"}
USAGE_TITLE = "codebook usage against mAP"


@dataclass(frozen=True)
class Figure:
    """A written figure: `stem`.png and `stem`.svg, `size` (width, height) pixels of the PNG;
    `key` is its table key, None for search-bench's; `title` names it in full, `caption` says
    what its panels show (for the page, whose heading gives the key)."""

    key: tuple[str, ...] | None
    title: str
    stem: Path
    caption: str
    size: tuple[int, int]


@dataclass(frozen=True)
class Panel:
    """One panel of a figure: its title and how to draw it (`draw(ax)`); `group` names the row
    of panels it belongs to."""

    group: str
    title: str
    draw: Callable[[plt.Axes], None]


def method_colours(variants: Iterable[str]) -> dict[str, str]:
    """One colour per method variant (tab10 in method order), black for float."""
    palette = plt.get_cmap("tab10").colors
    quantized = [v for v in ordered_variants(variants) if v != "float"]
    return {"float": "#000000",
            **{name: to_hex(palette[i % len(palette)]) for i, name in enumerate(quantized)}}


@plt.rc_context(STYLE)
def write_figures(data: Evaluated, out_dir: Path) -> list[Figure]:
    """Write one figure per table set into `out_dir`, named by its key (`key_slug`), in the
    tables' order (`tables.key_order`); return them. A method tuned per code length is one line
    (`tuned_figures_data`)."""
    data = tuned_figures_data(data)
    colours = method_colours(data.results.variant)
    results = dict(list(with_float_ceiling(data.results).groupby(TABLE_KEYS)))
    curves = dict(list(with_float_ceiling(data.curves).groupby(TABLE_KEYS)))
    logs = dict(list(with_float_ceiling(data.logs).groupby(TABLE_KEYS)))
    figures = []
    for key in sorted(results, key=key_order):
        panels = table_set_panels(results[key], curves.get(key), logs.get(key), colours)
        fig = panels_figure(panels, key_title(key))
        figures.append(save_figure(fig, key_title(key), out_dir / key_slug(key), key,
                                   _caption(panels)))
    return figures


def table_set_panels(results: pd.DataFrame, curves: pd.DataFrame | None,
                     logs: pd.DataFrame | None, colours: dict[str, str]) -> list[Panel]:
    """The panels of one table set's figure, in order: mAP against code length, usage against
    mAP (when measured), each curve of metrics.json and each training quantity, a panel per
    code length. The frames: that key's rows, the float ceiling repeated (`with_float_ceiling`)."""
    panels = [Panel("summary", "mAP against code length",
                    partial(draw_map_vs_bits, results=results, colours=colours))]
    measured = results[results.method != "float"]
    if "usage_database_perplexity" in measured and measured.usage_database_perplexity.notna().any():
        panels.append(Panel("summary", USAGE_TITLE,
                            partial(draw_usage_vs_map, results=measured, colours=colours)))
    for curve, spec in CURVES.items():
        points = curves[curves.curve == curve] if curves is not None else pd.DataFrame()
        panels += [Panel(curve, f"{spec.title}, {bits} bits",
                         partial(draw_curve, points=points[points.code_bits == bits], spec=spec,
                                 colours=colours))
                   for bits in _code_bits(points)]
    for quantity, (title, label) in TRAINING.items():
        logged = (logs[logs[quantity].notna()] if logs is not None and quantity in logs
                  else pd.DataFrame())
        panels += [Panel(quantity, f"{title}, {bits} bits",
                         partial(draw_training, logs=logged[logged.code_bits == bits],
                                 quantity=quantity, label=label, colours=colours))
                   for bits in _code_bits(logged)]
    return panels


def _code_bits(frame: pd.DataFrame) -> list[int]:
    return sorted(frame.code_bits.unique()) if len(frame) else []


def draw_map_vs_bits(ax: plt.Axes, results: pd.DataFrame, colours: dict[str, str]) -> None:
    """mAP against code bits, a line per method, std over seeds as bars."""
    for name in ordered_variants(results.variant):
        stats = results[results.variant == name].groupby("code_bits")["map"].agg(["mean", "std"])
        ax.errorbar(stats.index, stats["mean"], yerr=stats["std"].fillna(0), capsize=3,
                    marker="o", **_style(name, colours))
    ax.set(xlabel="code length (bits)", ylabel="mAP")
    _bits_axis(ax, sorted(results.code_bits.unique()))


def draw_usage_vs_map(ax: plt.Axes, results: pd.DataFrame, colours: dict[str, str]) -> None:
    """A point per quantized run and code length: the database codes' perplexity (mean over
    codebooks) against mAP; a dotted line at the codebook size K, the most it can be."""
    measured = results[results.usage_database_perplexity.notna()]
    for name in ordered_variants(measured.variant):
        runs = measured[measured.variant == name]
        ax.scatter(runs.usage_database_perplexity, runs["map"], s=18, color=colours[name],
                   label=name)
    width = 2 ** int(measured.sub_bits.iloc[0])
    ax.axvline(width, color="#999999", linewidth=0.8, linestyle=":")
    ax.set(xlabel=f"database codes' perplexity (K = {width})", ylabel="mAP")


def draw_curve(ax: plt.Axes, points: pd.DataFrame, spec: CurveSpec, colours: dict[str, str]) -> None:
    """One curve of metrics.json at one code length, a line per method (mean over seeds at each
    point). points: rows of the curves frame (curve, x, y)."""
    for name in ordered_variants(points.variant):
        mean = points[points.variant == name].groupby("x")["y"].mean()
        ax.plot(mean.index, mean.to_numpy(), marker="o" if spec.log_x else None, markersize=3,
                **_style(name, colours))
    ax.set(xlabel=spec.xlabel, ylabel=spec.ylabel, ylim=(0, 1.02))
    if spec.log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())  # decades only: minor ticks cost a quarter
    else:
        ax.set_xlim(0, 1)


def draw_training(ax: plt.Axes, logs: pd.DataFrame, quantity: str, label: str,
                  colours: dict[str, str]) -> None:
    """One quantity of train_log.csv at one code length, a line per method (mean over seeds at
    each epoch). The y-range keeps every method's curve in view (`robust_limits`): one method's
    spike is cut at the panel's edge rather than flattening the others."""
    means = logs.groupby(["variant", "epoch"])[quantity].mean()
    drawn = []
    for name in ordered_variants(logs.variant):
        series = means.xs(name)
        ax.plot(series.index, series.to_numpy(), marker="o", markersize=2.5,
                **_style(name, colours))
        drawn.append(series.to_numpy())
    limits = robust_limits(drawn)
    if limits is not None:
        ax.set_ylim(*limits)
    ax.set(xlabel="epoch", ylabel=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def panels_figure(panels: list[Panel], title: str) -> plt.Figure:
    """A figure of `panels` (`_spots`), each titled (wrapped to its width), the method legend
    below and `title` above (wrapped to the figure's width); its size follows the panels, the
    title's lines and the legend's rows."""
    spots = _spots(panels)
    rows, columns = spots[-1][0] + 1, max(column for _, column in spots) + 1
    fig = plt.figure(layout="constrained", figsize=(PANEL_SIZE[0] * columns, PANEL_SIZE[1] * rows))
    grid = fig.add_gridspec(rows, columns)
    for panel, (row, column) in zip(panels, spots, strict=True):
        ax = fig.add_subplot(grid[row, column])
        panel.draw(ax)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=Y_TICKS))
        ax.set_title(_wrap(panel.title, PANEL_SIZE[0], "axes"))
        ax.grid(alpha=0.3)
    title_and_legend(fig, title)
    return fig


def _spots(panels: list[Panel]) -> list[tuple[int, int]]:
    """(row, column) of each panel: when some curve has several code lengths, each group of
    panels starts a row (a column per code length, wrapping at `MAX_COLUMNS`); else the panels
    flow `MAX_COLUMNS` to a row."""
    groups = [panel.group for panel in panels]
    rows_of_groups = any(groups.count(group) > 1 for group in set(groups) - {"summary"})
    spots, row, column = [], 0, 0
    for index, group in enumerate(groups):
        if column == MAX_COLUMNS or (rows_of_groups and column and group != groups[index - 1]):
            row, column = row + 1, 0
        spots.append((row, column))
        column += 1
    return spots


def _caption(panels: list[Panel]) -> str:
    """What a table set's figure shows, for the page: its panels and how they are averaged."""
    groups = {panel.group for panel in panels}
    parts = ["mAP against code length (mean ± std over seeds)"]
    if any(panel.title == USAGE_TITLE for panel in panels):
        parts.append("the database codes' perplexity against mAP (a point per run; dotted: the "
                     "codebook size K, the most it can be)")
    curves = [spec.title for curve, spec in CURVES.items() if curve in groups]
    training = [CAPTIONS[quantity] for quantity in TRAINING if quantity in groups]
    if curves or training:
        parts.append("then a panel per code length, a line per method, means over seeds: "
                     + ", ".join(curves + training))
    if training:
        parts.append("a training panel's y-range is cut where one method's spike would flatten "
                     "the others")
    return "Panels: " + "; ".join(parts) + "."


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


def _style(variant: str, colours: dict[str, str]) -> dict:
    ceiling = variant == "float"  # dashed, drawn over the methods it may coincide with
    return {"color": colours[variant], "label": variant, "linestyle": "--" if ceiling else "-",
            "zorder": 3 if ceiling else 2}


def _bits_axis(ax: plt.Axes, bits: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(bits))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())


def _wrap(text: str, width: float, kind: str) -> str:
    """`text` wrapped to `width` inches of a title of `kind` (`CHARS_PER_INCH`)."""
    return textwrap.fill(text, width=int(width * CHARS_PER_INCH[kind]), break_on_hyphens=False)


def title_and_legend(fig: plt.Figure, title: str) -> None:
    """Give the figure its wrapped title and one legend below (a method each, `LEGEND_COLUMNS`
    to a row), and make it taller by the room they take."""
    labelled = {}
    for ax in fig.axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    names = ordered_variants(labelled)
    entry = LEGEND_HANDLE + max(map(len, names), default=0) / CHARS_PER_INCH["legend"]
    columns = max(1, min(len(names), LEGEND_COLUMNS, int(fig.get_figwidth() // entry)))
    fig.legend([labelled[name] for name in names], names, loc="outside lower center",
               ncols=columns, frameon=False)
    wrapped = _wrap(title, fig.get_figwidth(), "figure")
    fig.suptitle(wrapped)
    width, height = fig.get_size_inches()
    fig.set_size_inches(width, height + TITLE_ROOM * (wrapped.count("\n") + 1)
                        + LEGEND_ROW * math.ceil(len(names) / columns))


def save_figure(fig: plt.Figure, title: str, stem: Path, key: tuple[str, ...] | None,
                caption: str) -> Figure:
    """Write the figure as PNG and SVG, close it. The figure is laid out once, as the first
    format is drawn (constrained layout takes a third of the time), and the second format is
    drawn at that layout."""
    for fmt in FORMATS:
        with atomic_path(stem.with_name(f"{stem.name}.{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata={"Date": None} if fmt == "svg" else None)
        fig.set_layout_engine("none")
    size = tuple(round(inches * DPI) for inches in fig.get_size_inches())
    plt.close(fig)
    return Figure(key, title, stem, caption, size)
