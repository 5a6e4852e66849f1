"""Evaluated runs as data frames: one row per evaluation, per curve point, per training epoch
and per search-bench index.

The report reads each run directory once (its metrics files, train_log.csv, search-bench's
search*.json); its tables, figures and page are built from these frames only. Every frame carries
the same run columns (`RUN_COLUMNS`), so one function (`with_float_ceiling`) places the float
ceiling beside any of them. A run evaluated in several modes (`gslbench evaluate --search sdc
--metric ip`) has a row per mode: `search` and `metric` are run columns and part of the table key,
and titles name a mode other than ADC / L2, so runs evaluated differently never share a table and
a report of adc/l2 runs only looks as it always did.

A run of the unseen-class protocol is scored under four conditions (`seen@seen`, `seen@all`,
`unseen@unseen`, `unseen@all`: `gslbench.evaluation.scoring.CONDITIONS`), a standard run under
one, `standard`: every frame has a row per condition (`condition`, a table key, named in titles
but `standard`), so a table never mixes conditions. `draw` (the unseen protocol's class draw, 0
for standard runs) is a run column but no table key: a cell averages its draws and seeds. The
shared settings that differ among the runs of a scope are their `settings` (`epochs=10`,
`gslbench.report.conditions`), a table key too. `gslbench.report.rows` makes the rows of each
record.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd

from gslbench.config import SETTINGS
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import PRIMARY_CONDITION
from gslbench.layout import RunDir
from gslbench.report import conditions
from gslbench.report.rows import (
    DEFAULT_MODE,
    KEY_DEFAULTS,
    STANDARD,
    curve_rows,
    provenance_row,
    result_rows,
    run_columns,
    search_rows,
    training_log,
)
from gslbench.storage import read_json

log = logging.getLogger(__name__)
BASELINE_ORDER = ("float", "two-step", "qloss")  # shown first, then the other methods by name
# one paper table (and figure set) per key; sub_bits: 16-word and 256-word codebooks apart;
# search and metric: each evaluation mode apart
# protocol, codebooks: each protocol and codebook fit apart; settings: runs of other settings;
# condition: each condition of the unseen-class protocol
TABLE_KEYS = ["dataset", "feature", "protocol", "loss", "quantizer", "sub_bits", "codebooks",
              "search", "metric", "settings", "condition"]
RUN_COLUMNS = ["dataset", "feature", "protocol", "method", "variant", "quantizer", "code_bits",
               "sub_bits", "loss", "codebooks", "seed", "draw", "search", "metric", "settings",
               "condition"]
PRIMARY = (STANDARD, PRIMARY_CONDITION)  # a run's headline condition (search-bench's rows')


@dataclass(frozen=True)
class Evaluated:
    """What the report reads of the evaluated runs.

    results: one row per run, evaluation and condition (`RUN_COLUMNS`, mAP, mAP@K, precision@K, recall@R,
        for data without labels 1-recall@R and k-recall@k (`one_recall_at_R`, `k_recall_at_k`,
        `gslbench.evaluation.neighbours`; NaN for labelled runs),
        the database's and the queries' quantization MSE (`quant_mse_database`,
        `quant_mse_query`), the codebook usage (`usage_*`, `gslbench.evaluation.usage`),
        seconds, the feature file's sha256 (`features_sha256`), run id);
    curves: one row per curve point (`RUN_COLUMNS`, curve, x, y): curve `recall_at` (x = R),
        `precision_at` (x = K) or `pr_curve` (x = recall, y = interpolated precision);
    logs: one row per run and training epoch (`RUN_COLUMNS` of the run's first evaluation, run id,
        the columns of train_log.csv);
    configs: one row per run, its whole configuration;
    searches: one row per search-bench index of a run (`RUN_COLUMNS`, `role` "codes" or "float",
        the index, bytes_per_vector, index_bytes, qps_batch1, qps_batched, recall_at_R,
        nn_recall_at_R, run id); empty when no run has been through search-bench;
    provenance: one row per run: run, dataset, feature, features_sha256, the versions its first
        evaluation recorded (`version_python`, `version_torch`, ...), its thread counts
        (`threads_torch`, `threads_faiss`) and device.
    """

    results: pd.DataFrame
    curves: pd.DataFrame
    logs: pd.DataFrame
    configs: pd.DataFrame
    searches: pd.DataFrame
    provenance: pd.DataFrame


def read_runs(runs: Iterable[RunDir]) -> Evaluated:
    """Read the runs that have metrics files (metrics.json, metrics-SEARCH-METRIC.json, the
    database fit's); the others are named in a warning and skipped. Runs of the test and the
    validation split together, runs of one data set trained on different feature files, and runs
    of one table cell that differ in more than the seed and draw (beyond their settings, see the
    module docstring) are user errors."""
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
                rows += result_rows(record)
                points += curve_rows(record)
            if run_dir.train_log.is_file():
                reading = run_dir.train_log
                logs.append(training_log(run_dir, records[0]))
            for path in run_dir.search_benches():
                reading = path
                searches += search_rows(read_json(path))
        except (KeyError, TypeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
            step = "search-bench" if reading.name.startswith("search") else "evaluate"
            raise GslbenchError(f"{run_dir.path}: {reading.name} is not what gslbench writes "
                                f"({type(exc).__name__}: {exc}); run `gslbench {step} RUN "
                                "--force`") from None
    firsts = [records[0] for _, records in evaluated]
    settings = run_conditions(firsts)
    curves = pd.DataFrame(points, columns=[*RUN_COLUMNS, "curve", "x", "y", "run"])
    return Evaluated(
        results=_with_settings(pd.DataFrame(rows), settings).sort_values(
            ["dataset", "quantizer", "code_bits", "variant", "seed", "draw", "codebooks",
             "search", "metric", "condition"]),
        curves=_with_settings(curves, settings).drop(columns="run"),
        logs=_with_settings(pd.concat(logs, ignore_index=True) if logs
                            else pd.DataFrame(columns=[*RUN_COLUMNS, "run", "epoch"]), settings),
        configs=_with_omitted_defaults(pd.DataFrame([record["config"] for record in firsts])),
        searches=_with_settings(pd.DataFrame(searches, columns=None if searches
                                             else [*RUN_COLUMNS, "role", "run"]), settings),
        provenance=pd.DataFrame([provenance_row(record) for record in firsts]),
    )


def _with_omitted_defaults(configs: pd.DataFrame) -> pd.DataFrame:
    """`configs` with the shared settings config.json leaves out at their default (the protocol
    of a standard run) filled in, so each row says what its run used."""
    omitted = {setting.name: setting.default for setting in SETTINGS
               if not setting.recorded_at_default}
    return configs.assign(**{name: configs[name].fillna(default) if name in configs else default
                             for name, default in omitted.items()}) if len(configs) else configs


def run_conditions(records: Sequence[dict]) -> dict[str, str]:
    """Each run's settings (`gslbench.report.conditions`): run id -> `name=value, ...` of the
    shared settings that differ among the runs of its scope, "" where they agree.

    records: one metrics record per run (its `config`, `label`, `features_sha256`)."""
    runs = pd.DataFrame([{**record["config"], "run": record["run"], "label": record["label"],
                          "features_sha256": record.get("features_sha256"),
                          **_scope(record["config"])} for record in records])
    return conditions.run_conditions(runs)


def _scope(config: dict) -> dict:
    """The scope columns of a run's config (the feature as `rows.run_columns` names it)."""
    columns = run_columns({"config": config, "label": ""})
    return {name: columns[name] for name in conditions.SCOPE_KEYS}


def _with_settings(frame: pd.DataFrame, settings: dict[str, str]) -> pd.DataFrame:
    """`frame` (with a `run` column) with each run's settings (`run_conditions`)."""
    return frame.assign(settings=frame.run.map(settings).fillna("") if len(frame) else "")


def with_key_defaults(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with the key columns a frame built before protocols, codebook fits, settings and
    conditions lacks, set to what they then were (`KEY_DEFAULTS`)."""
    missing = {name: value for name, value in KEY_DEFAULTS.items() if name not in frame}
    return frame.assign(**missing) if missing else frame


def _split_of(record: object) -> str:
    """The split a metrics record's run was scored on (`test` when it does not say)."""
    config = record.get("config") if isinstance(record, dict) else None
    return str(config.get("split", "test")) if isinstance(config, dict) else "test"


def tuned_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, dict[tuple, str]]:
    """The results with one variant per method where a tuned grid chose its knobs per code
    length: within a table key, a method's variants that each ran at some but not all of its code
    lengths, never two at one, become one row named by the method, and the key's note (`Knobs
    per code length: qloss λ=1 (8, 16 bits), λ=10 (32 bits).`) says which knobs each code length
    used. A variant at every code length of its method (a control such as GSL at α = 0 beside the
    tuned GSL, or a grid comparing knob values) stays a row of its own, and so do variants that
    meet at a code length."""
    results = with_key_defaults(results).reset_index(drop=True)
    notes = {}
    for key, group in results.groupby(TABLE_KEYS):
        parts = []
        for method, runs in group.groupby("method"):
            spans = runs.groupby("variant").code_bits.agg(frozenset)
            tuned = spans[spans != frozenset(runs.code_bits)]
            if len(tuned) < 2 or sum(map(len, tuned)) > len(frozenset().union(*tuned)):
                continue  # nothing chosen per code length, or variants that meet
            runs = runs[runs.variant.isin(tuned.index)]
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
    """`digits (pixels), PQ, 256-word codebooks, pairwise loss` for a table key (`TABLE_KEYS`
    values), followed by what is not the default (`key_extras`)."""
    names = dict(zip(TABLE_KEYS, key, strict=True))
    parts = [f"{names['dataset']} ({names['feature']})", names["quantizer"].upper(),
             f"{2 ** int(names['sub_bits'])}-word codebooks", f"{names['loss']} loss"]
    return ", ".join([*parts, *key_extras(names)])


def key_extras(names: dict) -> list[str]:
    """What a title adds for the key values `names` that are not the default: `unseen classes`
    (the unseen-classes protocol), `codebooks fitted on the database`, `SDC, inner product` (an
    evaluation mode other than ADC / L2), the settings (`epochs=10`) and the condition of the
    unseen protocol (`unseen queries, unseen classes' database (unseen@unseen)`)."""
    names = {**KEY_DEFAULTS, **names}
    parts = [f"{names['protocol']} classes" if names["protocol"] != KEY_DEFAULTS["protocol"]
             else "",
             f"codebooks fitted on the {names['codebooks']}"
             if names["codebooks"] != KEY_DEFAULTS["codebooks"] else "",
             mode_title(names["search"], names["metric"]), names["settings"],
             condition_title(names["condition"])]
    return list(filter(None, parts))


def condition_title(condition: str) -> str:
    """`unseen queries, unseen classes' database (unseen@unseen)` for a condition of the unseen
    protocol, `seen queries, whole database (seen@all)`; empty for `standard`."""
    if condition in ("", STANDARD):  # "": a frame from before conditions
        return ""
    queries, database = condition.split("@")
    where = "whole database" if database == "all" else f"{database} classes' database"
    return f"{queries} queries, {where} ({condition})"


def key_slug(key: Sequence) -> str:
    """A file-name and label friendly name of a table key: `digits-pixels-pairwise-pq-256w`, then
    what is not the default: `-unseen`, `-database-fit`, `-sdc-ip`, the settings (`-epochs-10`),
    the condition (`-unseen-at-all`)."""
    names = dict(zip(TABLE_KEYS, key, strict=True))
    parts = [names["dataset"], names["feature"], names["loss"], names["quantizer"],
             f"{2 ** int(names['sub_bits'])}w"]
    if names["protocol"] != KEY_DEFAULTS["protocol"]:
        parts.append(names["protocol"])
    if names["codebooks"] != KEY_DEFAULTS["codebooks"]:
        parts.append(f"{names['codebooks']}-fit")
    if (names["search"], names["metric"]) != DEFAULT_MODE:
        parts += [names["search"], names["metric"]]
    parts.append(names["settings"])
    if names["condition"] != STANDARD:
        parts.append(names["condition"].replace("@", "-at-"))
    return re.sub(r"[^A-Za-z0-9.]+", "-", "-".join(filter(None, parts))).strip("-")


def axes_summary(results: pd.DataFrame) -> str:
    """`dataset: digits, method: float, gsl, ...`: every value each grid axis takes (draw,
    protocol, codebooks, search, metric, settings and condition only when some run is not the
    default)."""
    columns = ["dataset", "method", "quantizer", "code_bits", "seed"]
    results = with_key_defaults(results)
    if "draw" in results and set(results.draw) - {0}:
        columns.append("draw")
    for column in ("protocol", "codebooks", "settings", "condition"):
        if not results.empty and set(results[column]) != {KEY_DEFAULTS[column]}:
            columns.append(column)
    if not results.empty and set(zip(results.search, results.metric, strict=True)) != {DEFAULT_MODE}:
        columns += ["search", "metric"]  # named only when some run was evaluated otherwise
    return ", ".join(f"{column}: {', '.join(map(str, sorted(results[column].unique())))}"
                     for column in columns)


def with_float_ceiling(frame: pd.DataFrame) -> pd.DataFrame:
    """Repeat each data set's float rows under every (quantizer, sub_bits, codebook fit,
    code_bits) it was compared at: the float ceiling of the same data, protocol, loss, evaluation
    mode, settings and condition.

    Works on any frame with the run columns (results, curves, training logs)."""
    frame = with_key_defaults(frame)
    floats = frame[frame.method == "float"]
    quantized = frame[frame.method != "float"]
    cells = quantized[[*TABLE_KEYS, "code_bits"]].drop_duplicates()
    keys = [key for key in TABLE_KEYS if key not in ("quantizer", "sub_bits", "codebooks")]
    ceiling = floats.drop(columns=["quantizer", "code_bits", "sub_bits", "codebooks"]).merge(
        cells, on=keys)
    return pd.concat([quantized, ceiling], ignore_index=True)
