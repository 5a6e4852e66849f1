"""The nearest-neighbour track's table in a results document (issue 31): for the runs of data
sets related by neighbours instead of labels (`gslbench.data.neighbours`), per regime and method,
the track's metrics, mean ± std over seeds (n): 1-recall@1, @10 and @100, k-recall@k, the
protocol's mAP@K (mAP@100 for glove-6b-50d) and the database's quantization MSE. Made from the
results frame's (or the results CSV's) columns alone, as the other tables."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from gslbench.evaluation.neighbours import ONE_RECALL_AT
from gslbench.evaluation.primary import NEIGHBOURS, TITLES
from gslbench.report.frames import ordered_variants, with_float_ceiling
from gslbench.report.tables import MISSING, frame_markdown

ONE_RECALL_COLUMNS = [f"one_recall_at_{r}" for r in ONE_RECALL_AT]
NEIGHBOUR_COLUMNS = [*ONE_RECALL_COLUMNS, "k_recall_at_10"]  # the results CSV's (k = 10)
# the regime columns of the table's rows: data set, feature, protocol, quantizer, codebook size,
# codebook fit, evaluation mode, code length
REGIME = ["dataset", "feature", "protocol", "quantizer", "sub_bits", "codebooks", "search",
          "metric", "code_bits"]


def metric_text(names: Iterable[str]) -> str:
    """What verdicts compare, from the `primary_metric` names of their rows: `mAP`, or e.g.
    `mAP or 1-recall@10 (each data set's primary metric)`."""
    titles = [TITLES.get(name, name) for name in dict.fromkeys(names)]
    return "mAP" if titles in ([], ["mAP"]) else (f"{' or '.join(titles)} (each data set's "
                                                  "primary metric)")


def neighbour_columns(results: pd.DataFrame) -> list[str]:
    """The results columns of the track present in `results`: 1-recall@R, then k-recall@k."""
    return [c for c in ONE_RECALL_COLUMNS if c in results] + sorted(
        c for c in results if c.startswith("k_recall_at_"))


def neighbour_table(results: pd.DataFrame) -> pd.DataFrame:
    """One row per regime (`REGIME`) and method variant of the runs with 1-recall@10, float's
    under each regime of its data (`frames.with_float_ceiling`): each metric's `mean ± std (n)`
    over seeds (std with ddof 1; `mean (1)` for one seed, `—` where none has the value, as
    float's MSE)."""
    if NEIGHBOURS not in results:
        return pd.DataFrame()
    track = with_float_ceiling(results[results[NEIGHBOURS].notna()])
    if track.empty:
        return pd.DataFrame()
    titles = {c: (f"1-recall@{c.rsplit('_', 1)[1]}" if c.startswith("one_") else
                  f"{c.rsplit('_', 1)[1]}-recall@{c.rsplit('_', 1)[1]}")
              for c in neighbour_columns(track)}
    titles.update({"map": "mAP@top", "quant_mse_database": "database MSE"})
    rows = []
    for regime, group in track.groupby(REGIME, sort=True):
        for variant in ordered_variants(group.variant):
            runs = group[group.variant == variant]
            rows.append({**dict(zip(REGIME, regime, strict=True)), "method": variant,
                         **{title: _cell(runs[column], 5 if "mse" in column else 4)
                            for column, title in titles.items()}})
    frame = pd.DataFrame(rows)
    return frame.assign(words=2 ** frame.sub_bits)[
        ["dataset", "quantizer", "words", "code_bits", "method", *titles.values()]]


def _cell(values: pd.Series, digits: int) -> str:
    known = values.dropna()
    if known.empty:
        return MISSING
    spread = "" if len(known) < 2 else f" ± {known.std(ddof=1):.{digits}f}"
    return f"{known.mean():.{digits}f}{spread} ({len(known)})"


def neighbour_section(results: pd.DataFrame) -> list[str]:
    """`## The nearest-neighbour track`: its table (`neighbour_table`) and what it means; nothing
    when no run is of the track."""
    table = neighbour_table(results)
    if table.empty:
        return []
    return ["## The nearest-neighbour track", "",
            "The data sets whose items are related by their k true nearest neighbours instead of "
            "labels, per code length and method: mean ± std over seeds (n). 1-recall@R (faiss, "
            "QINCo): the share of queries whose true nearest neighbour is among the first R; "
            "k-recall@k (ann-benchmarks' recall): the share of the k true neighbours among the "
            "first k; mAP@top: mAP over the first K of the ranking, the protocol's K (100 for "
            "glove-6b-50d), relevance by the k neighbours; database MSE: encode's quantization "
            "error of the database (float: 0, unquantized). The verdicts of these data sets compare "
            "1-recall@10, their primary metric (`gslbench.evaluation.primary`).", "",
            frame_markdown(table), ""]
