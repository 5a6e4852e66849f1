"""A run's records as the rows of the report's frames (`gslbench.report.frames`): its run
columns, a row per condition of each metrics record (the unseen protocol's four, or `standard`),
its curve points, its training log, its search-bench indexes and its provenance."""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from gslbench.evaluation.neighbours import NEIGHBOUR_AT
from gslbench.evaluation.primary import primary_metric
from gslbench.evaluation.scoring import PRIMARY_CONDITION
from gslbench.evaluation.usage import usage_columns
from gslbench.layout import RunDir

DEFAULT_MODE = ("adc", "l2")
STANDARD = "standard"  # the condition of a standard-protocol run
# what a record that does not say means (runs made before protocols, codebook fits and
# conditions)
KEY_DEFAULTS = {"protocol": "standard", "codebooks": "train", "settings": "",
                "condition": STANDARD}


def feature_label(feature: str, blocks: int) -> str:
    """The feature column of a run: `FEATURE`, or `FEATURE, last N blocks trained` for a run that
    fine-tuned the CNN's last N blocks (so that it gets tables of its own)."""
    return f"{feature}, last {blocks} block{'s' if blocks > 1 else ''} trained" if blocks else feature


def feature_settings(label: str) -> dict[str, Any]:
    """`feature_label`'s inverse: {"feature": FEATURE, "train_blocks": N} (N 0 for a frozen
    one), as a results CSV's row gives back its run's config."""
    match = re.fullmatch(r"(.+), last (\d+) blocks? trained", label)
    return ({"feature": match[1], "train_blocks": int(match[2])} if match
            else {"feature": label, "train_blocks": 0})


def run_columns(metrics: dict) -> dict:
    """The run columns of a metrics.json record but its settings (`frames.run_conditions`) and
    condition (`_conditions`); `variant` is the method's label it records; `feature` its
    `feature_label`."""
    config = metrics["config"]
    feature = feature_label(config["feature"], config.get("train_blocks", 0))
    return {"dataset": config["dataset"], "feature": feature,
            "protocol": config.get("protocol", KEY_DEFAULTS["protocol"]),
            "method": config["method"], "variant": metrics["label"],
            "quantizer": config["quantizer"], "code_bits": config["bits"],
            "sub_bits": config["sub_bits"], "loss": config["loss"],
            "codebooks": metrics.get("codebooks", KEY_DEFAULTS["codebooks"]),
            "seed": config["seed"], "draw": config.get("draw", 0),
            "search": metrics.get("search", DEFAULT_MODE[0]),
            "metric": metrics.get("metric", DEFAULT_MODE[1])}


def _conditions(metrics: dict) -> dict[str, dict]:
    """A metrics record's scores per condition: its `conditions` (the unseen protocol's), or
    the record itself as the condition `standard`."""
    return metrics.get("conditions") or {STANDARD: metrics}


def result_rows(metrics: dict) -> list[dict]:
    """A metrics record's rows, one per condition (`_conditions`)."""
    return [_result_row(metrics, condition, scores)
            for condition, scores in _conditions(metrics).items()]


def _result_row(metrics: dict, condition: str, scores: dict) -> dict:
    top = metrics.get("map_top")
    row = {**run_columns(metrics), "condition": condition}
    row.update({"map": scores["map_at"][str(top)] if top else scores["map"],
                "map_all": scores["map"]})
    for group in ("map_at", "precision_at", "recall_at", *NEIGHBOUR_AT):
        row.update({f"{group}_{k}": v for k, v in (scores.get(group) or {}).items()})
    errors = metrics.get("quant_mse") or {}  # encode's; absent from older metrics.json
    for part in ("database", "query"):
        value = errors.get(part)
        row[f"quant_mse_{part}"] = float("nan") if value is None else float(value)
    row.update(usage_columns(metrics.get("usage")))  # absent from older metrics.json: NaN
    row.update({name: metrics[name] for name in ("train_s", "encode_s", "eval_s")})
    row["primary_metric"] = primary_metric(scores)  # the column the verdicts compare
    row["features_sha256"] = metrics.get("features_sha256")
    row["run"] = metrics["run"]
    return row


def curve_rows(metrics: dict) -> list[dict]:
    """A metrics record's curve points, per condition (`_conditions`)."""
    rows = []
    for condition, scores in _conditions(metrics).items():
        run = {**run_columns(metrics), "condition": condition, "run": metrics["run"]}
        points = [(curve, float(k), v) for curve in ("recall_at", "precision_at")
                  for k, v in (scores.get(curve) or {}).items()]
        points += [("pr_curve", recall, precision)
                   for recall, precision in scores.get("pr_curve") or []]
        rows += [{**run, "curve": curve, "x": x, "y": y} for curve, x, y in points]
    return rows


def training_log(run: RunDir, metrics: dict) -> pd.DataFrame:
    """The run's train_log.csv, repeated under each of its conditions (the training of every
    condition's table set)."""
    log = pd.read_csv(run.train_log)
    return pd.concat([log.assign(**run_columns(metrics), condition=condition, run=metrics["run"])
                      for condition in _conditions(metrics)], ignore_index=True)


def search_rows(record: dict) -> list[dict]:
    """One row per index of a search-bench record (search.json): the codes' and the float
    reference's, under the run's primary condition (`frames.PRIMARY`: search speed and recall of the
    float neighbours do not depend on a condition)."""
    protocol = record["config"].get("protocol", KEY_DEFAULTS["protocol"])
    condition = STANDARD if protocol == KEY_DEFAULTS["protocol"] else PRIMARY_CONDITION
    run = {**run_columns(record), "condition": condition, "run": record["run"]}
    rows = []
    for role, measured in record["indexes"].items():
        row = {**run, "role": role}
        row.update({name: measured[name] for name in ("index", "bytes_per_vector", "index_bytes",
                                                      "qps_batch1", "qps_batched")})
        for group in ("recall_at", "nn_recall_at", *NEIGHBOUR_AT):  # the track's: its runs only
            row.update({f"{group}_{r}": value for r, value in (measured.get(group) or {}).items()})
        rows.append(row)
    return rows


def provenance_row(record: dict) -> dict:
    """A run's provenance row (`frames.Evaluated.provenance`) from its first metrics record."""
    columns = run_columns(record)
    versions = record.get("versions") or {}
    threads = record.get("threads") or {}
    device = record.get("devices") or {}  # evaluate's copy of the steps' devices
    return {"run": record["run"], "dataset": columns["dataset"], "feature": columns["feature"],
            "protocol": columns["protocol"], "features_sha256": record.get("features_sha256"),
            **{f"version_{name}": value for name, value in versions.items()},
            **{f"threads_{name}": value for name, value in threads.items()},
            "device": _device_text(device)}


def _device_text(devices: object) -> str:
    """`type=cpu`, or `encode: cpu, train: cuda NVIDIA H100` for a record's devices per step."""
    if not isinstance(devices, dict):
        return str(devices)
    return ", ".join(f"{step}: {' '.join(map(str, value.values()))}" if isinstance(value, dict)
                     else f"{step}={value}" for step, value in sorted(devices.items()))
