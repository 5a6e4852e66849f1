"""The nearest-neighbour track at scale (issue 31; not a test): a run of `glove-6b-50d` encoded
and evaluated on its whole test split (10,000 queries, a database of 222,857), each step in a
process of its own, with its wall time and its peak resident memory (`resource.getrusage`'s
ru_maxrss of that process); then the sharded search that a database of 10^7 to 10^9 codes would
need, measured on this one: the database codes cut into `--shards` shards, each searched alone
(ADC distances of every query to the shard's codes, its top R by distance then index:
`gslbench.evaluation.speed.search_top`), the shards' lists merged into the global top R, and
the merge checked equal to the top R of the whole database searched at once.

    python benchmarks/ann_scale.py RUN [--data-dir DATA] [--results-dir RESULTS] [--shards 4]

RUN (a run directory or id) is copied into a scratch results folder first: its own codes and
metrics are left as they are. Prints a Markdown table of the steps, then one of the shards.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.codes import read_codes
from gslbench.evaluation.speed import search_top
from gslbench.quantizers import make_search

R = 100  # the top R each shard returns (1-recall@100's)
STEP = """
import json, resource, sys, time
from gslbench.encode import encode_run
from gslbench.evaluation.step import evaluate_run
start = time.perf_counter()
if sys.argv[1] == "encode":
    encode_run(sys.argv[2], sys.argv[3], sys.argv[4], force=True)
else:
    evaluate_run(sys.argv[2], sys.argv[4], force=True)
print(json.dumps({"wall_s": time.perf_counter() - start,
                  "cpu_s": resource.getrusage(resource.RUSAGE_SELF).ru_utime,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_step(step: str, run: Path, data_dir: str, results_dir: Path) -> dict:
    """One step (encode or evaluate) of `run` in a fresh Python: its wall and CPU seconds and
    peak RSS (MB), as it measured them."""
    out = subprocess.run([sys.executable, "-c", STEP, step, str(run), data_dir, str(results_dir)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def merge(parts: list[tuple[np.ndarray, np.ndarray]], top: int) -> np.ndarray:
    """The global top `top` of shards' (global ids (nq, r), distances (nq, r)) lists: by
    distance, ties by global id (the order of one machine's ranking)."""
    ids = np.concatenate([found for found, _ in parts], axis=1)
    distances = np.concatenate([dist for _, dist in parts], axis=1)
    order = np.lexsort((ids, distances), axis=1)[:, :top]
    return np.take_along_axis(ids, order, axis=1)


def sharded_search(codes_path: Path, shards: int) -> list[dict]:
    """Search the run's database codes as `shards` contiguous shards, time each, merge, and
    check the merge against the whole database searched at once (an AssertionError if not)."""
    codes = read_codes(codes_path)
    bounds = np.linspace(0, len(codes.codes), shards + 1).astype(int)
    rows, parts = [], []
    for low, high in zip(bounds[:-1], bounds[1:], strict=True):
        start = time.perf_counter()
        cpu = time.process_time()
        found, distances = search_top(make_search(codes.quantizer, codes.codes[low:high]),
                                     codes.queries, R)
        rows.append({"shard": len(rows), "codes": int(high - low),
                     "bytes": int(codes.codes[low:high].nbytes),
                     "wall_s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu})
        parts.append((found + low, distances))
    start = time.perf_counter()
    merged = merge(parts, R)
    merge_s = time.perf_counter() - start
    whole, _ = search_top(make_search(codes.quantizer, codes.codes), codes.queries, R)
    assert np.array_equal(merged, whole), "the merged top R differs from the whole search's"
    rows.append({"shard": "merge", "codes": len(codes.codes), "bytes": int(codes.codes.nbytes),
                 "wall_s": merge_s, "cpu_s": float("nan")})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("--data-dir", default="datasets")
    parser.add_argument("--results-dir", default="results")
    parser.add_argument("--shards", type=int, default=4)
    args = parser.parse_args()
    source = layout.resolve_run(args.results_dir, args.run)
    with tempfile.TemporaryDirectory(prefix="ann-scale-") as scratch:
        copy = layout.run_dir(scratch, source.run_id)
        shutil.copytree(source.path, copy.path)
        print("| step | wall s | CPU s (user) | peak RSS MB |\n|---|---|---|---|")
        for step in ("encode", "evaluate"):
            measured = run_step(step, copy.path, args.data_dir, Path(scratch))
            print(f"| {step} | {measured['wall_s']:.1f} | {measured['cpu_s']:.1f} | "
                  f"{measured['peak_rss_mb']:.0f} |", flush=True)
        record = json.loads(copy.metrics.read_text())
        print(f"run {source.run_id} ({record['label']}):", record["n_query"], "queries, database",
              record["n_db"], "; 1-recall@1/10/100:", record["one_recall_at"], "k-recall:",
              record["k_recall_at"])
        rows = sharded_search(copy.codes_file("train"), args.shards)
    print("\n| shard | codes | bytes | wall s | CPU s |\n|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['shard']} | {row['codes']} | {row['bytes']} | {row['wall_s']:.1f} | "
              f"{row['cpu_s']:.1f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nthis process (sharded search, whole search, merge): peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
