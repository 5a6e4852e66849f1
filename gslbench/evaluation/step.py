"""The evaluate step: search a run's database codes with its queries and write RUN/metrics.json.

It reads only the run's codes file (`gslbench.codes`): the codes, the query representations, the
labels, the protocol's K values and the quantizer, checked (`check_encoded`) to be valid and bound
to the run and the codes checked to be the quantizer's (`check_codes_use`); the distances are
checked finite. metrics.json records the sha256 of that codes file and its fit (`codebooks`) and
is written last, atomically. Another search mode or metric (`--search sdc`, `--metric ip`;
`gslbench.quantizers.search`) writes its own file beside it, RUN/metrics-SEARCH-METRIC.json, and
the codes of codebooks fitted on the database (`--codebooks database`) theirs,
RUN/metrics-database[-SEARCH-METRIC].json (`layout.RunDir.metrics_file`), so metrics.json always
holds the default ADC / L2 numbers of the train fit that bench and the paper tables compare.

A run of the unseen-class protocol (its codes file's `unseen_classes`) is scored under the four
conditions of `scoring.evaluate_conditions` in every mode and fit: the file's top-level metrics
are the primary condition's (`unseen@unseen`, what tune optimizes), and `conditions` holds each
condition's.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.codes import Codes, check_codes_use, check_encoded
from gslbench.errors import GslbenchError
from gslbench.evaluation.record import check_metrics_record, sealed
from gslbench.evaluation.scoring import Search, evaluate, evaluate_conditions
from gslbench.quantizers import make_search
from gslbench.quantizers.search import check_mode
from gslbench.storage import check_sha256, package_versions, read_json, write_json
from gslbench.threads import thread_counts

log = logging.getLogger(__name__)


def evaluate_run(run: str | Path, results_dir: str | Path, force: bool = False,
                 map_at: tuple[int, ...] | None = None, search: str = "adc",
                 metric: str = "l2", codebooks: str = "train") -> Path:
    """Search the database codes of the fit `codebooks` with the run's queries (`search` adc or
    sdc, `metric` l2 or ip); write the metrics file of that mode and fit last
    (`layout.RunDir.metrics_file`: RUN/metrics.json for adc/l2/train).

    map_at: the K of mAP@K (default: the protocol's, recorded in the codes file). An existing
    metrics file is kept (unless `force`) when `check_evaluated` passes for these K; otherwise
    (damaged, unbound, other K) the run is evaluated again. A result of the fit made from codes
    with another sha256 is an error (`check_codes_use`): the codes file is not the run's."""
    check_mode(search, metric)
    run_dir = layout.resolve_run(results_dir, run)
    out = run_dir.metrics_file(search, metric, codebooks)
    codes = check_encoded(run_dir, codebooks)
    codes_sha256 = check_codes_use(run_dir, codes, codebooks)
    if out.is_file() and not force:
        try:
            check_evaluated(run_dir, codes, map_at, out)
            return out
        except GslbenchError as exc:
            log.warning("%s; evaluating run %s again", exc, run_dir.run_id)
    codes_path = run_dir.codes_file(codebooks)
    finite = FiniteDistances(make_search(codes.quantizer, codes.codes, search, metric), codes_path)
    # the neighbour track ranks only the top max(K, R) (mAP over the whole ranking: null): its
    # metrics are top-R, and whole rankings of 222,857 items for 10,000 queries take minutes
    neighbours = codes.query_neighbours
    options = {"map_at": map_at or codes.map_at}
    if codes.unseen_classes:
        metrics = evaluate_conditions(finite, codes.queries, codes.query_labels, codes.labels,
                                      codes.unseen_classes, **options)
    else:
        metrics = evaluate(finite, codes.queries, codes.query_labels, codes.labels, **options,
                           query_neighbours=neighbours, whole_ranking=neighbours is None)
    for name, scored in metrics.get("conditions", {"": metrics}).items():
        _check_relevant(scored, codes_path, name)
    attrs = codes.attrs
    metrics.update({
        "run": attrs["run"], "search": search, "metric": metric, "codebooks": codebooks,
        "config": json.loads(attrs["config"]), "label": attrs["label"],
        "map_top": attrs["map_top"] or None,
        "train_s": float(attrs["train_seconds"]), "encode_s": float(attrs["encode_seconds"]),
        "eval_s": metrics["timings_s"]["total"], "versions": package_versions(),
        "features_sha256": attrs["features_sha256"], "codes_sha256": codes_sha256,
        "threads": thread_counts(), "devices": json.loads(attrs.get("devices", "{}")),
        "quant_mse": {part: float(attrs[name]) if name in attrs else None  # None: an older codes.h5
                      for part, name in (("database", "database_quant_mse"),
                                         ("query", "query_quant_mse"))},
        # codebook usage of the training and database codes (`evaluation.usage`); None: float
        "usage": json.loads(attrs["usage"]) if "usage" in attrs else None,
    })
    metrics = sealed(metrics)
    check_metrics_record(metrics, out, run_dir.run_id)
    write_json(out, metrics)
    return out


def check_evaluated(run: layout.RunDir, codes: Codes, map_at: tuple[int, ...] | None = None,
                    path: Path | None = None) -> dict:
    """A metrics file of the run (default: the default mode's of the fit of `codes`), checked: a
    valid record bound to the run (`check_metrics_record`), of the codes' fit, made from the
    codes file as it is now (sha256) and holding mAP@K for the K asked (default: the protocol's,
    `codes.map_at`)."""
    path = path or run.metrics_file(codebooks=codes.codebooks)
    record = read_json(path)
    check_metrics_record(record, path, run.run_id)
    if record.get("codebooks") != codes.codebooks:
        raise GslbenchError(f"{path}: records codebooks {record.get('codebooks')!r}, not the "
                            f"{codes.codebooks!r} fit its name says")
    check_sha256(run.codes_file(codes.codebooks), record.get("codes_sha256"), path)
    wanted = sorted(str(k) for k in (map_at or codes.map_at))
    if sorted(record["map_at"]) != wanted:
        raise GslbenchError(f"{path}: holds mAP@{','.join(sorted(record['map_at']))}, not "
                            f"the mAP@{','.join(wanted)} asked for")
    return record


class FiniteDistances:
    """A search whose distance blocks are checked finite (NaN or inf would rank arbitrarily)."""

    def __init__(self, search: Search, source: Path) -> None:
        self.search, self.source = search, source

    def __len__(self) -> int:
        return len(self.search)

    def prepare(self, queries: np.ndarray) -> np.ndarray:
        """The wrapped search's prepared queries (`Search.prepare`)."""
        return self.search.prepare(queries)

    def distances(self, queries: np.ndarray) -> np.ndarray:
        """A block of prepared queries -> (b, n) float32 distances, all finite."""
        distances = self.search.distances(queries)
        if not np.isfinite(distances).all():
            raise GslbenchError(f"{self.source}: the queries' distances to the database codes are "
                                "not all finite (NaN or inf)")
        return distances


def _check_relevant(metrics: dict, codes_path: Path, condition: str = "") -> None:
    """Warn about queries without a relevant item in the database (AP 0, kept in the mean); with
    none relevant to any query, the labels are wrong and the mAP means nothing. condition: the
    unseen-class condition scored (`scoring.CONDITIONS`), "" for a standard run."""
    missing, total = metrics["n_query_no_relevant"], metrics["n_query"]
    where = f"{codes_path}{f' ({condition})' if condition else ''}"
    if missing == total:
        raise GslbenchError(f"{where}: no query has a relevant item in the database (no "
                            "label in common): the mAP would be 0 and mean nothing")
    if missing:
        log.warning("%s: %d of %d queries have no relevant item in the database (AP 0, kept "
                    "in the mean)", where, missing, total)
