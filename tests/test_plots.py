"""The report's figures: one per table set, in the tables' order, panels in the tables' order,
and no two texts of a figure overlapping (measured with matplotlib's renderer)."""

from __future__ import annotations

import itertools
import json
import re

import matplotlib.pyplot as plt
import pytest
from runfakes import make_run, make_runs

from gslbench.config import RunConfig
from gslbench.evaluation.record import sealed
from gslbench.report import write_report
from gslbench.report.frames import TABLE_KEYS, key_slug, key_title, read_runs, with_float_ceiling
from gslbench.report.plots import (
    DPI,
    MAX_COLUMNS,
    STYLE,
    method_colours,
    panels_figure,
    table_set_panels,
)
from gslbench.report.tables import paper_tables

GSL = "gsl α=1 k=8 select=aligned"
LONG_VARIANT = "gsl α=0.25 k=16 select=aligned"  # a long legend entry


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The fake runs (16 and 32 bits) of the standard protocol, their codebooks also fitted on
    the database (a second evaluation), and unseen-protocol runs at 16 bits (four conditions)."""
    root = tmp_path_factory.mktemp("runs")
    runs = make_runs(root)
    for run in runs[3:]:  # every quantized standard run: a database fit too
        record = json.loads(run.metrics.read_text())
        record.update(codebooks="database", map=record["map"] + 0.01)
        run.metrics_file("sdc", "l2").write_text(json.dumps(sealed(record)))
    runs += [make_run(root, RunConfig(method=method, bits=16, seed=seed, protocol="unseen",
                                      **knobs), 0.6 + seed / 100)
             for method, knobs in [("float", {}), ("two-step", {}),
                                   ("gsl", {"gsl_alpha": 0.25, "gsl_k": 16})]
             for seed in (0, 1)]
    return runs


@pytest.fixture(scope="module")
def report(runs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("report") / "report"
    results, _ = write_report(runs, folder)
    return folder, results


def table_keys(results):
    return list(dict.fromkeys(table.key for table in paper_tables(results)))


def key_panels(data, key):
    """The panels of table set `key`'s figure."""
    frames = [with_float_ceiling(frame).groupby(TABLE_KEYS) for frame in
              (data.results, data.curves, data.logs)]
    return table_set_panels(*(frame.get_group(key) if key in frame.groups else None
                              for frame in frames), method_colours(data.results.variant))


def test_one_figure_per_table_set_in_the_tables_order(report):
    folder, results = report
    keys = table_keys(results)
    assert len(keys) == 2 + 4  # standard: two codebook fits; unseen: four conditions
    pngs = sorted(path.stem for path in folder.glob("*.png"))
    assert pngs == sorted(key_slug(key) for key in keys)  # one figure per table set, no other
    assert sorted(path.stem for path in folder.glob("*.svg")) == pngs
    page = (folder / "index.html").read_text()
    shown = re.findall(r'<figure><img src="data:image/png;base64,[^"]+" width="\d+" '
                       r'height="\d+" alt="([^"]+)">', page)
    assert shown == [key_title(key).replace("'", "&#x27;") for key in keys]
    # each figure follows its own tables, before the next table set's
    order = [page.index(f'id="{key_slug(key)}-map"') for key in keys]
    figures = [page.index(f"<code>{key_slug(key)}.png</code>") for key in keys]
    assert order == sorted(order)
    assert all(a < f < b for a, f, b in zip(order, figures, [*order[1:], len(page)], strict=True))


def test_panels_follow_the_tables_columns(runs):
    data = read_runs(runs)
    key = next(key for key in table_keys(data.results) if key[2] == "standard" and key[6] == "train")
    panels = key_panels(data, key)
    table = next(table for table in paper_tables(data.results) if table.key == key)
    bits = list(table.value.columns)
    assert bits == [16, 32]
    assert [panel.title for panel in panels] == [
        "mAP against code length",
        *(f"{name}, {b} bits" for name in ("recall@R", "precision@K", "precision-recall",
                                            "similarity loss",
                                            "MSE, codebooks in use", "MSE, codebooks refitted")
          for b in bits)]


def texts(fig):
    """Every drawn text of `fig` with its bounding box (display pixels): the title, each axes'
    titles, axis labels and the tick labels in view, the legend's entries."""
    renderer = fig.canvas.get_renderer()
    found = [fig._suptitle] if fig._suptitle else []
    for ax in fig.axes:
        found += [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
        for axis, (low, high) in ((ax.xaxis, sorted(ax.get_xlim())),
                                  (ax.yaxis, sorted(ax.get_ylim()))):
            found += [tick.label1 for tick in axis.get_major_ticks()
                      if low - 1e-9 * abs(low) <= tick.get_loc() <= high + 1e-9 * abs(high)]
    for legend in fig.legends:
        found += legend.get_texts()
    return [(text, text.get_window_extent(renderer)) for text in found
            if text.get_visible() and text.get_text().strip()]


def overlaps(fig):
    """The pairs of texts of `fig` whose boxes overlap, and the texts reaching outside it."""
    fig.canvas.draw()
    boxes = texts(fig)
    clashes = [(a.get_text(), b.get_text()) for (a, box_a), (b, box_b)
               in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]
    page = fig.bbox
    outside = [text.get_text() for text, box in boxes
               if box.x0 < page.x0 - 1 or box.x1 > page.x1 + 1 or box.y0 < page.y0 - 1
               or box.y1 > page.y1 + 1]
    return clashes, outside


@pytest.mark.parametrize("pick", ["standard", "database", "unseen@unseen"])
def test_no_two_texts_of_a_figure_overlap(runs, pick):
    data = read_runs(runs)
    key = next(key for key in table_keys(data.results)
               if pick in (key[2], key[6], key[10]) and (pick != "standard" or key[6] == "train"))
    panels = key_panels(data, key)
    with plt.rc_context(STYLE):
        fig = panels_figure(panels, key_title(key))
    try:
        clashes, outside = overlaps(fig)
        assert clashes == [] and outside == []
        assert len(texts(fig)) > 10 * len(panels)  # titles, labels and ticks were all checked
        assert len(fig.axes) == len(panels)
        # readable at 1280 pixels: at most MAX_COLUMNS panels wide, shown at its own size
        assert fig.get_figwidth() * DPI <= 1200
        columns = {round(ax.get_position().x0, 2) for ax in fig.axes}
        assert len(columns) == min(MAX_COLUMNS, len(panels) if pick == "unseen@unseen" else 2)
        legend = [text.get_text() for text in fig.legends[0].get_texts()]
        assert legend[0] == "float" and (LONG_VARIANT in legend) == (pick == "unseen@unseen")
    finally:
        plt.close(fig)


def test_the_overlap_check_finds_colliding_titles():
    """Negative control: the old overview's layout, panels side by side titled with whole table
    keys, and a title wider than its figure."""
    title = key_title(("digits", "pixels", "unseen", "pairwise", "pq", 4, "database", "adc", "l2",
                       "", "unseen@unseen"))
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, 4, figsize=(17.6, 3.4), layout="constrained")
    try:
        for ax in axes:
            ax.set_title(title)
        clashes, outside = overlaps(fig)
        assert len(clashes) >= 3 and title in clashes[0]
        assert title in outside
    finally:
        plt.close(fig)
