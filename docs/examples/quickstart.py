"""Train, encode and evaluate a few digits runs with the Python API, then read the results.

Run it from anywhere: `python docs/examples/quickstart.py [RESULTS_DIR]` (default: a temporary
folder). It downloads nothing: digits ships with scikit-learn. About 10 s on one core.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import pandas as pd

import gslbench


def quickstart(root: Path) -> pd.DataFrame:
    """Two-step and GSL with PQ at 16 bits on digits (5 epochs, seed 0), the float ceiling beside
    them; returns one row per run and codebook fit (`train`: the codebooks the run fitted on its
    training representations; `database`: fitted again on the database, as an indexer would)
    with its mAP and gap to float."""
    data_dir, results_dir = root / "datasets", root / "results"
    # one run, step by step: train -> encode -> evaluate
    config = gslbench.RunConfig(dataset="digits", method="gsl", quantizer="pq", bits=16,
                                epochs=5, warmup_epochs=1, epochs_per_refit=2, seed=0)
    run = gslbench.train(config, data_dir=data_dir, results_dir=results_dir)
    gslbench.encode(run, data_dir=data_dir, results_dir=results_dir)
    metrics = gslbench.evaluate(run, results_dir=results_dir)
    print(f"{run.name} {metrics['label']}: mAP {metrics['map']:.4f}")
    # a small grid: the float ceiling and two-step beside it (the gsl run above is reused); bench
    # encodes and evaluates each quantized run with both codebook fits
    grid = {"dataset": "digits", "method": ["float", "two-step", "gsl"], "quantizer": "pq",
            "bits": 16, "epochs": 5, "warmup_epochs": 1, "epochs_per_refit": 2, "seed": 0}
    gslbench.bench(grid, data_dir=data_dir, results_dir=results_dir)
    results = gslbench.load_results(results_dir)
    ceiling = results.loc[results.method == "float", "map"].iloc[0]
    table = results[["method", "variant", "quantizer", "code_bits", "codebooks", "seed",
                     "map"]].assign(
        gap_to_float=ceiling - results["map"])
    return table.sort_values("map", ascending=False, ignore_index=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        print(quickstart(Path(sys.argv[1])).to_string(index=False))
    else:
        with tempfile.TemporaryDirectory() as folder:
            print(quickstart(Path(folder)).to_string(index=False))
