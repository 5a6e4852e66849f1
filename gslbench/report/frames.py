"""Evaluated runs as data frames: one row per evaluation, per curve point, per training epoch
and per search-bench index.

The report reads each run directory once (its metrics files, train_log.csv, search-bench's
search*.json); its tables, figures and page are built from these frames only. Every frame carries
the same run columns (`RUN_COLUMNS`), so one function (`with_float_ceiling`) places the float
ceiling beside any of them. A run evaluated in several modes (`gslbench evaluate --search sdc
--metric ip`) has a row per mode: `search` and `metric` are run columns and part of the table key,
and titles name a mode other than ADC / L2, so runs evaluated differently never share a table and
a report of adc/l2 runs only looks as it always did.
"""

from __future__ import annotations

import dataclasses
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
# one paper table (and figure set) per key; sub_bits: 16-word and 256-word codebooks apart;
# search and metric: each evaluation mode apart
TABLE_KEYS = ["dataset", "feature", "loss", "quantizer", "sub_bits", "search", "metric"]
RUN_COLUMNS = ["dataset", "feature", "method", "variant", "quantizer", "code_bits", "sub_bits",
               "loss", "seed", "search", "metric"]
DEFAULT_MODE = ("adc", "l2")


@dataclass(frozen=True)
class Evaluated:
    """What the report reads of the evaluated runs.

    results: one row per run and evaluation mode (`RUN_COLUMNS`, mAP, mAP@K, precision@K,
        recall@R, the database's and the queries' quantization MSE (`quant_mse_database`,
        `quant_mse_query`), seconds, run id);
    curves: one row per curve point (`RUN_COLUMNS`, curve, x, y): curve `recall_at` (x = R),
        `precision_at` (x = K) or `pr_curve` (x = recall, y = interpolated precision);
    logs: one row per run and training epoch (`RUN_COLUMNS` of the run's first evaluation, run id,
        the columns of train_log.csv);
    configs: one row per run, its whole configuration;
    searches: one row per search-bench index of a run (`RUN_COLUMNS`, `role` "codes" or "float",
        the index, bytes_per_vector, index_bytes, qps_batch1, qps_batched, recall_at_R,
        nn_recall_at_R, run id); empty when no run has been through search-bench.
    """

    results: pd.DataFrame
    curves: pd.DataFrame
    logs: pd.DataFrame
    configs: pd.DataFrame
    searches: pd.DataFrame


def read_runs(runs: Iterable[RunDir]) -> Evaluated:
    """Read the runs that have metrics files (metrics.json or metrics-SEARCH-METRIC.json); the
    others are named in a warning and skipped. Runs of the test and the validation split together
    are a user error (their mAPs are not comparable)."""
    evaluated, missing = [], []
    for run_dir in runs:
        files = run_dir.evaluations()
        if files:
            evaluated.append((run_dir, [read_json(path) for path in files]))
        else:
            missing.append(run_dir.run_id)
    if missing:
        log.warning("skipping %d run(s) without metrics.json: %s", len(missing), ", ".join(missing))
    if not evaluated:
        raise GslbenchError(f"no evaluated runs to report (none of the {len(missing)} run(s) given "
                            "has metrics.json; run `gslbench evaluate RUN`)")
    splits = {_split_of(records[0]) for _, records in evaluated}
    if len(splits) > 1:  # validation-split (tuning) runs are scored on other items
        raise GslbenchError("the runs mix the test and validation splits (tuning runs); report "
                            "them apart (tune's runs are under RESULTS/tuning)")
    rows, points, logs, searches = [], [], [], []
    for run_dir, records in evaluated:
        reading = run_dir.evaluations()[0]
        try:
            for path, record in zip(run_dir.evaluations(), records, strict=True):
                reading = path
                rows.append(_result_row(record))
                points += _curve_rows(record)
            if run_dir.train_log.is_file():
                reading = run_dir.train_log
                logs.append(_training_log(run_dir, records[0]))
            for path in run_dir.search_benches():
                reading = path
                searches += _search_rows(read_json(path))
        except (KeyError, TypeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            step = "search-bench" if reading.name.startswith("search") else "evaluate"
            raise GslbenchError(f"{run_dir.path}: {reading.name} is not what gslbench writes "
                                f"({type(exc).__name__}: {exc}); run `gslbench {step} RUN "
                                "--force`") from None
    return Evaluated(
        results=pd.DataFrame(rows).sort_values(["dataset", "quantizer", "code_bits", "variant", "seed",
                                                "search", "metric"]),
        curves=pd.DataFrame(points, columns=[*RUN_COLUMNS, "curve", "x", "y"]),
        logs=(pd.concat(logs, ignore_index=True) if logs
              else pd.DataFrame(columns=[*RUN_COLUMNS, "run", "epoch"])),
        configs=pd.DataFrame([records[0]["config"] for _, records in evaluated]),
        searches=pd.DataFrame(searches, columns=None if searches else [*RUN_COLUMNS, "role", "run"]),
    )


def _split_of(record: object) -> str:
    """The split a metrics record's run was scored on (`test` when it does not say)."""
    config = record.get("config") if isinstance(record, dict) else None
    return str(config.get("split", "test")) if isinstance(config, dict) else "test"


def tuned_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """The results with one variant per method where a tuned grid chose its knobs per code
    length: within a table key, a method whose variants are several but never two at one code
    length becomes one row named by the method, and the key's note (`Knobs per code length: qloss
    λ=1 (8, 16 bits), λ=10 (32 bits).`) says which knobs each code length used. Variants that
    meet at a code length (a grid comparing knob values) stay apart."""
    results = results.reset_index(drop=True)
    notes = {}
    for key, group in results.groupby(TABLE_KEYS):
        parts = []
        for method, runs in group.groupby("method"):
            if runs.variant.nunique() < 2 or (runs.groupby("code_bits").variant.nunique() > 1).any():
                continue
            results.loc[runs.index, "variant"] = method
            used = runs.groupby("variant").code_bits.unique()
            parts.append(f"{method} " + ", ".join(
                f"{variant.split(' ', 1)[1]} ({', '.join(map(str, sorted(bits)))} bits)"
                for variant, bits in sorted(used.items(), key=lambda item: min(item[1]))))
        if parts:
            notes[key] = f"Knobs per code length: {'; '.join(parts)}."
    return results, notes


def tuned_figures_data(data: Evaluated) -> Evaluated:
    """`data` with the variants of `tuned_rows` in its results, curves and logs (the figures
    draw a method tuned per code length as one line)."""
    merged, _ = tuned_rows(data.results)
    keys = [*TABLE_KEYS, "variant"]
    rows = (data.results.reset_index(drop=True)[keys].assign(row=merged.variant)
            .drop_duplicates(keys))

    def relabel(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        joined = frame.merge(rows, on=keys, how="left")
        return joined.assign(variant=joined.row.fillna(joined.variant)).drop(columns="row")

    return dataclasses.replace(data, results=relabel(data.results), curves=relabel(data.curves),
                               logs=relabel(data.logs))


def ordered_variants(variants: Iterable[str]) -> list[str]:
    """Distinct method variants (labels such as `gsl α=1 k=8`): float, two-step, qloss, then the other
    methods by name."""
    def key(label: str) -> tuple:
        method = label.split()[0]
        return (BASELINE_ORDER.index(method) if method in BASELINE_ORDER else len(BASELINE_ORDER),
                label)
    return sorted(set(variants), key=key)


def mode_title(search: str, metric: str) -> str:
    """`SDC, inner product` for an evaluation mode; empty for the default, ADC / L2."""
    if (search, metric) == DEFAULT_MODE:
        return ""
    return f"{search.upper()}, {'inner product' if metric == 'ip' else 'L2'}"


def key_title(key: Sequence) -> str:
    """`digits (pixels), PQ, 256-word codebooks, pairwise loss` for a (dataset, feature, loss,
    quantizer, sub_bits, search, metric) key, with `, SDC, inner product` after it for a mode other
    than ADC / L2."""
    dataset, feature, loss, quantizer, sub_bits, search, metric = key
    mode = mode_title(search, metric)
    return (f"{dataset} ({feature}), {quantizer.upper()}, {2 ** int(sub_bits)}-word codebooks, "
            f"{loss} loss" + (f", {mode}" if mode else ""))


def key_slug(key: Sequence) -> str:
    """A file-name and label friendly name of a table key: `digits-pixels-pairwise-pq-256w`, and
    `digits-pixels-pairwise-pq-256w-sdc-ip` for a mode other than ADC / L2."""
    *names, sub_bits, search, metric = key
    parts = [*names, f"{2 ** int(sub_bits)}w"]
    if (search, metric) != DEFAULT_MODE:
        parts += [search, metric]
    return re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(parts)).strip("-")


def axes_summary(results: pd.DataFrame) -> str:
    """`dataset: digits, method: float, gsl, ...`: every value each grid axis takes."""
    columns = ["dataset", "method", "quantizer", "code_bits", "seed"]
    if not results.empty and set(zip(results.search, results.metric, strict=True)) != {DEFAULT_MODE}:
        columns += ["search", "metric"]  # named only when some run was evaluated otherwise
    return ", ".join(f"{column}: {', '.join(map(str, sorted(results[column].unique())))}"
                     for column in columns)


def with_float_ceiling(frame: pd.DataFrame) -> pd.DataFrame:
    """Repeat each data set's float rows under every (quantizer, sub_bits, code_bits) it was
    compared at.

    Works on any frame with the run columns (results, curves, training logs)."""
    floats = frame[frame.method == "float"]
    quantized = frame[frame.method != "float"]
    cells = quantized[[*TABLE_KEYS, "code_bits"]].drop_duplicates()
    keys = ["dataset", "feature", "loss", "search", "metric"]  # the float ceiling of the same
    # data, loss and evaluation mode
    ceiling = floats.drop(columns=["quantizer", "code_bits", "sub_bits"]).merge(cells, on=keys)
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
            "code_bits": config["bits"], "sub_bits": config["sub_bits"], "loss": config["loss"],
            "seed": config["seed"], "search": metrics.get("search", DEFAULT_MODE[0]),
            "metric": metrics.get("metric", DEFAULT_MODE[1])}


def _result_row(metrics: dict) -> dict:
    top = metrics.get("map_top")
    row = _run_columns(metrics)
    row.update({"map": metrics["map_at"][str(top)] if top else metrics["map"], "map_all": metrics["map"]})
    for group in ("map_at", "precision_at", "recall_at"):
        row.update({f"{group}_{k}": v for k, v in metrics[group].items()})
    errors = metrics.get("quant_mse") or {}  # encode's; absent from older metrics.json
    for part in ("database", "query"):
        value = errors.get(part)
        row[f"quant_mse_{part}"] = float("nan") if value is None else float(value)
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


def _search_rows(record: dict) -> list[dict]:
    """One row per index of a search-bench record (search.json): the codes' and the float
    reference's."""
    run = {**_run_columns(record), "run": record["run"]}
    rows = []
    for role, measured in record["indexes"].items():
        row = {**run, "role": role}
        row.update({name: measured[name] for name in ("index", "bytes_per_vector", "index_bytes",
                                                      "qps_batch1", "qps_batched")})
        for group in ("recall_at", "nn_recall_at"):
            row.update({f"{group}_{r}": value for r, value in measured[group].items()})
        rows.append(row)
    return rows
