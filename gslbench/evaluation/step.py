"""The evaluate step: search a run's database codes with its queries and write RUN/metrics.json.

It reads only RUN/codes.h5 (`gslbench.encode`): the codes, the query representations, the labels,
the protocol's K values and the quantizer; metrics.json is written last, atomically.
"""

from __future__ import annotations

import json
from pathlib import Path

from gslbench import layout
from gslbench.encode import read_codes
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import evaluate
from gslbench.quantizers import make_search
from gslbench.storage import package_versions, sha256_file, write_json
from gslbench.threads import thread_counts


def evaluate_run(run: str | Path, results_dir: str | Path, force: bool = False,
                 map_at: tuple[int, ...] | None = None) -> Path:
    """Search the database codes by ADC with the run's queries; write RUN/metrics.json last."""
    run_dir = layout.resolve_run(results_dir, run)
    if run_dir.metrics.is_file() and not force:
        return run_dir.metrics
    if not run_dir.codes.is_file():
        raise GslbenchError(f"{run_dir.codes}: no such file; run `gslbench encode {run_dir.path}` first")
    codes = read_codes(run_dir.codes)
    attrs = codes.attrs
    map_top = int(attrs["map_top"]) or None
    metrics = evaluate(make_search(codes.quantizer, codes.codes), codes.queries,
                       codes.query_labels, codes.labels,
                       map_at=map_at or tuple(json.loads(attrs["map_at"])))
    metrics.update({
        "run": str(attrs["run"]), "search": "adc", "config": json.loads(attrs["config"]),
        "label": str(attrs["label"]), "map_top": map_top,
        "train_s": float(attrs["train_seconds"]), "encode_s": float(attrs["encode_seconds"]),
        "eval_s": metrics["timings_s"]["total"], "versions": package_versions(),
        "features_sha256": str(attrs["features_sha256"]), "codes_sha256": sha256_file(run_dir.codes),
        "threads": thread_counts(), "devices": json.loads(attrs.get("devices", "{}")),
    })
    write_json(run_dir.metrics, metrics)
    return run_dir.metrics
