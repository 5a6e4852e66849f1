"""metrics.json: what evaluate writes, and the check that evaluate (before writing), bench (before
counting a cell as done) and the report (before reading) apply to it.

A metrics.json is accepted when it is bound to its run (its `run` is the directory's name and the
hash of the `config` it records) and every value the report reads has its type and range: mAP,
mAP@K, precision@K, recall@R and the PR curve are fractions in [0, 1], seconds are finite and
non-negative, `codebooks` (where the codes' codebooks were fitted, `layout.CODEBOOKS`; absent in
records written before it existed, which are of the train fit) is "train" or "database", and its
`content_sha256` is the digest of the rest (`metrics_digest`), so an edited value is caught. A
run of the unseen-class protocol records `conditions` (`gslbench.evaluation.scoring.CONDITIONS`),
each checked alike with its counts, and its top-level mAP and mAP@K are the primary condition's
(`unseen@unseen`); a standard run records none. A search-bench record (search.json) is bound to
its run the same way (`check_search_record`), and both to the codes file they were made from
(`check_codes_binding`), or, where the run is archived (`gslbench.archive`) and the codes file
was left behind, to the sha256 its archived.json records of it (`archived_artifacts`). This module
imports neither torch nor faiss (the report uses it).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from gslbench.errors import GslbenchError
from gslbench.evaluation.neighbours import NEIGHBOUR_AT
from gslbench.evaluation.scoring import CONDITIONS, PRIMARY_CONDITION
from gslbench.layout import CODEBOOKS, RunDir
from gslbench.storage import check_sha256, config_id, read_json

SECONDS = ("train_s", "encode_s", "eval_s")
AT_K = ("map_at", "precision_at", "recall_at")  # {str(K): fraction}
DIGEST = "content_sha256"
ARCHIVED_FORMAT = "gslbench.archived"  # archived.json (gslbench.archive)
ARCHIVED_VERSION = 1


def check_metrics_record(record: Any, path: Path, run_id: str) -> None:
    """Raise a one-line user error naming `path` unless `record` is a metrics.json bound to the
    run `run_id` with every value of the right type and range, and the digest of its content
    (see the module docstring)."""
    _check_bound(record, path, run_id, "metrics")
    _check_scores(record, path)
    for name in SECONDS:
        value = record.get(name)
        if not _is_number(value) or value < 0:
            raise GslbenchError(f"{path}: {name!r} is {value!r}, expected seconds >= 0")
    top = record.get("map_top")
    if top is not None and (not _is_int(top) or str(top) not in record["map_at"]):
        raise GslbenchError(f"{path}: 'map_top' is {top!r}, expected null or one of the K of "
                            "'map_at'")
    _check_conditions(record, path)
    if record.get(DIGEST) != metrics_digest(record):
        raise GslbenchError(f"{path}: its content is not what its {DIGEST} records (edited or "
                            "damaged since, or written by an older gslbench); run `gslbench "
                            "evaluate RUN --force`")


def _check_scores(scores: dict, path: Path, where: str = "") -> None:
    """mAP, mAP@K, precision@K, recall@R (each absent only in a condition) and the PR curve
    (null: not computed) of `scores` (a record, or its condition `where`) are fractions."""
    if not (scores.get("map") is None and "one_recall_at" in scores):  # neighbours: top only
        _fraction(scores.get("map"), path, f"{where}map")
    for name in AT_K + tuple(key for key in NEIGHBOUR_AT if key in scores):
        values = scores.get(name)
        if values is None and where and name == "recall_at":
            continue
        if not isinstance(values, dict) or not all(key.isdigit() and int(key) > 0 for key in values):
            raise GslbenchError(f"{path}: {where}{name!r} is {values!r}, expected {{K: value}}")
        for key, value in values.items():
            _fraction(value, path, f"{where}{name}[{key}]")
    curve = scores.get("pr_curve")
    if curve is not None:
        if not isinstance(curve, list) or not all(isinstance(p, list) and len(p) == 2 for p in curve):
            raise GslbenchError(f"{path}: {where}'pr_curve' is not a list of [recall, precision] "
                                "pairs")
        for recall, precision in curve:
            _fraction(recall, path, f"{where}pr_curve recall")
            _fraction(precision, path, f"{where}pr_curve precision")


def _check_conditions(record: dict, path: Path) -> None:
    """A run of the unseen protocol has `conditions` = {name: scores} for exactly the four
    `CONDITIONS`, each with its counts, and its top-level scores are the primary condition's; a
    run of the standard protocol has none."""
    protocol = record["config"].get("protocol", "standard")
    conditions = record.get("conditions")
    if protocol == "standard":
        if conditions is not None:
            raise GslbenchError(f"{path}: holds 'conditions' for a run of the standard protocol "
                                "(only the unseen protocol has conditions)")
        return
    if not isinstance(conditions, dict) or sorted(conditions) != sorted(CONDITIONS):
        found = sorted(conditions) if isinstance(conditions, dict) else conditions
        raise GslbenchError(f"{path}: 'conditions' is {found!r}, expected the {protocol} "
                            f"protocol's {', '.join(CONDITIONS)} (evaluated before conditions "
                            "existed? run `gslbench evaluate RUN --force`)")
    for name, scores in conditions.items():
        where = f"conditions[{name}] "
        if not isinstance(scores, dict):
            raise GslbenchError(f"{path}: {where}is {scores!r}, expected its scores")
        _check_scores(scores, path, where)
        counts = [scores.get(key) for key in ("n_query", "n_db", "n_query_no_relevant")]
        if not all(_is_int(count) for count in counts) or min(counts[:2]) < 1 \
                or not 0 <= counts[2] <= counts[0]:
            raise GslbenchError(f"{path}: {where}counts n_query, n_db, n_query_no_relevant are "
                                f"{counts}, expected >= 1, >= 1 and 0 to n_query")
    primary = conditions[PRIMARY_CONDITION]
    if (record["map"], record["map_at"]) != (primary["map"], primary["map_at"]):
        raise GslbenchError(f"{path}: the top-level map and map_at are not those of "
                            f"conditions[{PRIMARY_CONDITION}] (edited?)")


def metrics_digest(record: dict[str, Any]) -> str:
    """The sha256 of a metrics record's content: its JSON with sorted keys, without `DIGEST`."""
    content = {key: value for key, value in record.items() if key != DIGEST}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def sealed(record: dict[str, Any]) -> dict[str, Any]:
    """The metrics record with the digest of its content (`DIGEST`), as evaluate writes it."""
    return {**record, DIGEST: metrics_digest(record)}


def check_search_record(record: Any, path: Path, run_id: str) -> None:
    """Raise a one-line user error naming `path` unless `record` is a search-bench record
    (search.json) bound to the run `run_id`."""
    _check_bound(record, path, run_id, "search-bench")
    if not isinstance(record.get("indexes"), dict):
        raise GslbenchError(f"{path}: 'indexes' is {record.get('indexes')!r}, expected a dict")


def check_result(path: Path, run: RunDir) -> dict[str, Any]:
    """A metrics or search-bench file of `run`, read and checked: a valid record bound to the run
    (`check_metrics_record`, `check_search_record`) and to the codes file of its fit
    (`check_codes_binding`). Returns the record."""
    record = read_json(path)
    if path in run.search_benches():
        check_search_record(record, path, run.run_id)
    else:
        check_metrics_record(record, path, run.run_id)
    check_codes_binding(record, path, run)
    return record


def check_codes_binding(record: dict[str, Any], path: Path, run: RunDir) -> None:
    """A metrics or search-bench record of `run` was made from the codes file of its codebook
    fit as it is now: its `codes_sha256` is that file's (when the file is there) or, when the
    run is archived without it, the one its archived.json records."""
    codes = run.codes_file(record.get("codebooks", "train"))
    if codes.is_file():
        check_sha256(codes, record.get("codes_sha256"), path)
    elif run.archived.is_file():
        archived = archived_artifacts(run).get(codes.name)
        if archived is None or record.get("codes_sha256") != archived:
            raise GslbenchError(f"{path}: made from another {codes.name} than {run.archived} "
                                "records" if archived else
                                f"{path}: made from {codes.name}, which {run.archived} does "
                                "not record")


def archived_artifacts(run: RunDir) -> dict[str, str]:
    """The artifacts an archived run left behind, {file name: sha256}, from its archived.json:
    {"format": ARCHIVED_FORMAT, "version": ARCHIVED_VERSION, "run": RUN, "artifacts": {...}},
    checked to be of this format and bound to the run."""
    record = read_json(run.archived)
    artifacts = record.get("artifacts") if isinstance(record, dict) else None
    if not (isinstance(artifacts, dict) and record.get("format") == ARCHIVED_FORMAT
            and record.get("version") == ARCHIVED_VERSION
            and all(isinstance(value, str) for value in artifacts.values())):
        raise GslbenchError(f"{run.archived}: not a gslbench archive record (format "
                            f"{ARCHIVED_FORMAT}, version {ARCHIVED_VERSION})")
    if record.get("run") != run.run_id:
        raise GslbenchError(f"{run.archived}: records run {record.get('run')}, not run "
                            f"{run.run_id} of its directory (copied from another run?)")
    return artifacts


def _check_bound(record: Any, path: Path, run_id: str, kind: str) -> None:
    """A record of `kind` naming the run `run_id` of its directory, whose config hashes to it,
    of a known codebook fit."""
    if not isinstance(record, dict):
        raise GslbenchError(f"{path}: not a gslbench {kind} record (a {type(record).__name__})")
    for name, expected in (("run", str), ("label", str), ("config", dict)):
        if not isinstance(record.get(name), expected):
            raise GslbenchError(f"{path}: {name!r} is {record.get(name)!r}, expected a "
                                f"{expected.__name__}")
    found = config_id(record["config"])
    if record["run"] != run_id or found != run_id:
        raise GslbenchError(f"{path}: records run {record['run']} (config hash {found}), not run "
                            f"{run_id} of its directory (copied from another run, or edited)")
    if record.get("codebooks", "train") not in CODEBOOKS:
        raise GslbenchError(f"{path}: 'codebooks' is {record['codebooks']!r}, expected one of "
                            f"{', '.join(CODEBOOKS)}")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _fraction(value: Any, path: Path, name: str) -> None:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise GslbenchError(f"{path}: {name!r} is {value!r}, expected a number in [0, 1]")
