"""Test fakes for the report: run directories with hand-made config.json, metrics.json and
train_log.csv, in the formats the pipeline writes.

`MAPS` holds the mAP of every (method, bits) per seed; float (bits 0) is the ceiling. At 16 bits
qloss and gsl tie on mean (0.80), at 32 bits qloss is best; float beats every quantized method.
A quantized run's encode errors are (1 - mAP) / 10 (database) and (1 - mAP) / 5 (queries).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from gslbench.config import RunConfig
from gslbench.evaluation.record import sealed
from gslbench.layout import RunDir
from gslbench.storage import sha256_file

MAPS = {  # (method, bits) -> mAP per seed
    ("float", 0): [0.90, 0.92, 0.91],
    ("two-step", 16): [0.70, 0.71, 0.69],
    ("qloss", 16): [0.80, 0.78, 0.82],
    ("gsl", 16): [0.81, 0.79, 0.80],
    ("two-step", 32): [0.75, 0.76, 0.74],
    ("qloss", 32): [0.85, 0.86, 0.84],
    ("gsl", 32): [0.75, 0.74, 0.76],
}


FEATURES_SHA256 = "f0" * 32  # the feature file every fake run was trained on


def make_run(root: Path, config: RunConfig, value: float, evaluated: bool = True,
             features_sha256: str = FEATURES_SHA256) -> RunDir:
    """One run directory whose metrics are simple functions of `value` (its mAP)."""
    run = RunDir(root / config.run_id)
    run.path.mkdir(parents=True)
    quantized = config.method != "float"
    pd.DataFrame({"epoch": [1, 2, 3], "sim_loss": [1.0, 0.6, 1 - value],
                  "quant_mse": [np.nan, 0.2, value / 10] if quantized else [np.nan] * 3,
                  "quant_mse_refit": [np.nan, 0.3, value / 5] if quantized else [np.nan] * 3,
                  "seconds": [0.1] * 3}).to_csv(run.train_log, index=False)
    run.config.write_text(json.dumps({"run": config.run_id, "config": config.to_dict(),
                                      "label": config.label, "train_seconds": 1.0,
                                      "train_log_sha256": sha256_file(run.train_log)}))
    if evaluated:
        metrics = {"run": config.run_id, "config": config.to_dict(), "label": config.label,
                   "map": value,
                   "map_top": None, "map_at": {"100": value},
                   "precision_at": {"10": value, "100": value * 0.9},
                   "recall_at": {"1": value / 10, "10": value / 2, "100": value},
                   "pr_curve": [[r, value * (1 - r / 2)] for r in np.linspace(0, 1, 11)],
                   "train_s": 1.0, "encode_s": 0.1, "eval_s": 0.2,
                   "features_sha256": features_sha256,
                   "versions": {"python": "3.11.2", "torch": "2.3.0", "numpy": "1.26.4"},
                   "threads": {"torch": 2, "faiss": 2}, "devices": {"type": "cpu"},
                   "quant_mse": {"database": (1 - value) / 10 if quantized else 0.0,
                                 "query": (1 - value) / 5 if quantized else 0.0}}
        if config.protocol == "unseen":
            metrics["conditions"] = fake_conditions(metrics)
        run.metrics.write_text(json.dumps(sealed(metrics)))
    return run


# the unseen protocol's conditions of a fake run: its mAP (the primary's) plus these
CONDITION_OFFSETS = {"seen@seen": 0.06, "seen@all": 0.04, "unseen@unseen": 0.0, "unseen@all": -0.1}


def fake_conditions(metrics: dict) -> dict:
    """A fake metrics record's `conditions`: each condition's scores are the record's shifted
    by `CONDITION_OFFSETS` (clipped to [0, 1]); unseen@unseen's are the record's own."""
    def shifted(value: float, offset: float) -> float:
        return min(1.0, max(0.0, value + offset))

    return {name: {"map": shifted(metrics["map"], offset),
                   **{group: {k: shifted(v, offset) for k, v in metrics[group].items()}
                      for group in ("map_at", "precision_at", "recall_at")},
                   "pr_curve": [[r, shifted(p, offset)] for r, p in metrics["pr_curve"]],
                   "n_query": 10, "n_db": 100 if name.endswith("@all") else 40,
                   "n_query_no_relevant": 0}
            for name, offset in CONDITION_OFFSETS.items()}


def make_runs(root: Path, dataset: str = "digits") -> list[RunDir]:
    """Every run of `MAPS` (21) on `dataset`, PQ, pairwise loss."""
    return [make_run(root, RunConfig(dataset=dataset, method=method, bits=bits or 32, seed=seed),
                     value)
            for (method, bits), maps in MAPS.items() for seed, value in enumerate(maps)]
