"""Evaluated runs as data frames: one row per run, per curve point and per training epoch.

The report reads each run directory once (metrics.json, train_log.csv); its tables, figures and
page are built from these frames only. Every frame carries the same run columns (`RUN_COLUMNS`),
so one function (`with_float_ceiling`) places the float ceiling beside any of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from gslbench.errors import GslbenchError
from gslbench.layout import RunDir
from gslbench.storage import read_json

log = logging.getLogger(__name__)
BASELINE_ORDER = ("float", "two-step", "qloss")  # shown first, then the other methods by name
TABLE_KEYS = ["dataset", "feature", "loss", "quantizer"]  # one paper table (and figure set) per key
RUN_COLUMNS = ["dataset", "feature", "method", "variant", "quantizer", "code_bits", "loss", "seed"]


@dataclass(frozen=True)
class Evaluated:
    """What the report reads of the evaluated runs.

    results: one row per run (`RUN_COLUMNS`, mAP, mAP@K, precision@K, recall@R, seconds, run id);
    curves: one row per curve point (`RUN_COLUMNS`, curve, x, y): curve `recall_at` (x = R),
        `precision_at` (x = K) or `pr_curve` (x = recall, y = interpolated precision);
    logs: one row per run and training epoch (`RUN_COLUMNS`, run id, the columns of train_log.csv);
    configs: one row per run, its whole configuration.
    """

    results: pd.DataFrame
    curves: pd.DataFrame
    logs: pd.DataFrame
    configs: pd.DataFrame


def read_runs(runs: Iterable[RunDir]) -> Evaluated:
    """Read the runs that have metrics.json; the others are named in a warning and skipped."""
    metrics, missing = [], []
    for run_dir in runs:
        if run_dir.metrics.is_file():
            metrics.append((run_dir, read_json(run_dir.metrics)))
        else:
            missing.append(run_dir.run_id)
    if missing:
        log.warning("skipping %d run(s) without metrics.json: %s", len(missing), ", ".join(missing))
    if not metrics:
        raise GslbenchError(f"no evaluated runs to report (none of the {len(missing)} run(s) given "
                            "has metrics.json; run `gslbench evaluate RUN`)")
    rows, points, logs = [], [], []
    for run_dir, record in metrics:
        try:
            rows.append(_result_row(record))
            points += _curve_rows(record)
            if run_dir.train_log.is_file():
                logs.append(_training_log(run_dir, record))
        except (KeyError, TypeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            raise GslbenchError(f"{run_dir.path}: metrics.json or train_log.csv is not what "
                                f"gslbench writes ({type(exc).__name__}: {exc}); run `gslbench "
                                "evaluate RUN --force`") from None
    return Evaluated(
        results=pd.DataFrame(rows).sort_values(["dataset", "quantizer", "code_bits", "variant", "seed"]),
        curves=pd.DataFrame(points, columns=[*RUN_COLUMNS, "curve", "x", "y"]),
        logs=(pd.concat(logs, ignore_index=True) if logs
              else pd.DataFrame(columns=[*RUN_COLUMNS, "run", "epoch"])),
        configs=pd.DataFrame([record["config"] for _, record in metrics]),
    )


def ordered_variants(variants: Iterable[str]) -> list[str]:
    """Distinct method variants (labels such as `gsl α=1 k=8`): float, two-step, qloss, then the other
    methods by name."""
    def key(label: str) -> tuple:
        method = label.split()[0]
        return (BASELINE_ORDER.index(method) if method in BASELINE_ORDER else len(BASELINE_ORDER),
                label)
    return sorted(set(variants), key=key)


def key_title(key: Sequence[str]) -> str:
    """`digits (pixels), PQ, pairwise loss` for a (dataset, feature, loss, quantizer) key."""
    dataset, feature, loss, quantizer = key
    return f"{dataset} ({feature}), {quantizer.upper()}, {loss} loss"


def key_slug(key: Sequence[str]) -> str:
    """A file-name and label friendly name of a table key: `digits-pixels-pairwise-pq`."""
    return re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(key)).strip("-")


def axes_summary(results: pd.DataFrame) -> str:
    """`dataset: digits, method: float, gsl, ...`: every value each grid axis takes."""
    return ", ".join(f"{column}: {', '.join(map(str, sorted(results[column].unique())))}"
                     for column in ("dataset", "method", "quantizer", "code_bits", "seed"))


def with_float_ceiling(frame: pd.DataFrame) -> pd.DataFrame:
    """Repeat each data set's float rows under every (quantizer, code_bits) it was compared at.

    Works on any frame with the run columns (results, curves, training logs)."""
    floats = frame[frame.method == "float"]
    quantized = frame[frame.method != "float"]
    cells = quantized[[*TABLE_KEYS, "code_bits"]].drop_duplicates()
    keys = ["dataset", "feature", "loss"]  # the float ceiling of the same data and loss
    ceiling = floats.drop(columns=["quantizer", "code_bits"]).merge(cells, on=keys)
    return pd.concat([quantized, ceiling], ignore_index=True)


def _run_columns(metrics: dict) -> dict:
    """The run columns of a metrics.json record; `variant` is the method's label it records. A
    run that fine-tuned the CNN's last N blocks has the feature `FEATURE, last N blocks trained`,
    so that it gets tables of its own."""
    config = metrics["config"]
    blocks = config.get("train_blocks", 0)
    trained = f"last {blocks} block{'s' if blocks > 1 else ''} trained"
    feature = f"{config['feature']}, {trained}" if blocks else config["feature"]
    return {"dataset": config["dataset"], "feature": feature, "method": config["method"],
            "variant": metrics["label"], "quantizer": config["quantizer"],
            "code_bits": config["bits"], "loss": config["loss"], "seed": config["seed"]}


def _result_row(metrics: dict) -> dict:
    top = metrics.get("map_top")
    row = _run_columns(metrics)
    row.update({"map": metrics["map_at"][str(top)] if top else metrics["map"], "map_all": metrics["map"]})
    for group in ("map_at", "precision_at", "recall_at"):
        row.update({f"{group}_{k}": v for k, v in metrics[group].items()})
    row.update({name: metrics[name] for name in ("train_s", "encode_s", "eval_s")})
    row["run"] = metrics["run"]
    return row


def _curve_rows(metrics: dict) -> list[dict]:
    run = _run_columns(metrics)
    points = [(curve, float(k), v) for curve in ("recall_at", "precision_at")
              for k, v in metrics[curve].items()]
    points += [("pr_curve", recall, precision) for recall, precision in metrics.get("pr_curve") or []]
    return [{**run, "curve": curve, "x": x, "y": y} for curve, x, y in points]


def _training_log(run: RunDir, metrics: dict) -> pd.DataFrame:
    return pd.read_csv(run.train_log).assign(**_run_columns(metrics), run=metrics["run"])
