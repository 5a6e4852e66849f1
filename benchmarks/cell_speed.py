"""Time one bench cell phase by phase (not a test; prints seconds and the mAP).

A cell is what `gslbench bench` runs per grid point: train, encode, evaluate (`run_cell`), here in
a fresh results folder, in this process, at `--threads` torch/faiss threads (the seeds one after
the other, as a bench worker runs its cells: the first reads the feature file). Printed per seed:
wall-clock and CPU seconds of each step and, inside them, of reading the feature file, hashing
it, the training steps, the codebook fits and the per-epoch log; then the run's mAP and encode's
database quantization error. Target (issue 15): a Fashion-MNIST OPQ 16-bit cell under 10 s at
2 threads, the same mAP within seed noise.

    python benchmarks/cell_speed.py --data-dir datasets [--dataset fashion-mnist] [--method gsl]
        [--quantizer opq] [--bits 16] [--sub-bits 8] [--seeds 0] [--threads 2] [--epochs 40]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
from gslbench import bench, encode, train
from gslbench.bench import run_cell
from gslbench.config import RunConfig
from gslbench.data import featurefile, get_dataset
from gslbench.methods import loop
from gslbench.quantizers import Quantizer

# (owner, function name, phase): each function's calls are timed as that phase; an indented
# phase is part of the step above it (the codebook fits: of train's; the quantization errors: of
# train's log and encode's)
PROBES = [
    (bench, "train_run", "train"),
    (bench, "encode_run", "encode"),
    (bench, "evaluate_run", "evaluate"),
    (train, "read_feature_file", "  read features (train)"),
    (encode, "read_feature_file", "  read features (encode)"),
    (train, "sha256_file", "  hash files (train)"),  # before issue 15
    (featurefile, "sha256_file", "  hash the feature file"),
    (encode, "sha256_file", "  hash files (encode)"),
    (loop, "_train_epoch", "  training steps"),
    (Quantizer, "fit", "  codebook fits"),
    (loop, "embed", "  embed the training set"),
    (Quantizer, "quantization_error", "  quantization errors"),
]


class Clock:
    """Wall-clock and CPU seconds (all threads of the process) per phase, summed over calls."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)

    def wrap(self, function: Callable, phase: str) -> Callable:
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.wall[phase] += time.perf_counter() - wall
                self.cpu[phase] += time.process_time() - cpu
        return timed


@contextlib.contextmanager
def probed(clock: Clock) -> Iterator[None]:
    """Time the `PROBES` functions while the block runs, then restore them (those a version of
    gslbench lacks are skipped, so that the script also times older trees)."""
    probes = [probe for probe in PROBES if hasattr(probe[0], probe[1])]
    saved = [(module, name, getattr(module, name)) for module, name, _ in probes]
    for module, name, phase in probes:
        setattr(module, name, clock.wrap(getattr(module, name), phase))
    try:
        yield
    finally:
        for module, name, function in saved:
            setattr(module, name, function)


def time_cell(config: RunConfig, data_dir: Path, threads: int) -> tuple[Clock, dict]:
    """Run one cell in a fresh results folder; its clock and metrics.json."""
    clock = Clock()
    with tempfile.TemporaryDirectory() as results, probed(clock):
        wall, cpu = time.perf_counter(), time.process_time()
        run = run_cell(config, data_dir, Path(results), threads)
        clock.wall["total"] = time.perf_counter() - wall
        clock.cpu["total"] = time.process_time() - cpu
        metrics = json.loads(run.metrics.read_text())
    return clock, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--method", default="gsl")
    parser.add_argument("--quantizer", default="opq")
    parser.add_argument("--bits", type=int, default=16)
    parser.add_argument("--sub-bits", type=int, default=8)
    parser.add_argument("--seeds", default="0", help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=40)
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        config = RunConfig(dataset=args.dataset, feature=get_dataset(args.dataset).default_feature,
                           method=args.method, quantizer=args.quantizer, bits=args.bits,
                           sub_bits=args.sub_bits, seed=seed, epochs=args.epochs)
        clock, metrics = time_cell(config, args.data_dir, args.threads)
        print(f"{config.dataset} {config.label} {config.quantizer} {config.bits} bits "
              f"({2 ** config.sub_bits} words) seed {seed}, {args.threads} threads, feature file "
              f"format {featurefile.FORMAT_VERSION}")
        print(f"  {'phase':<26}{'wall s':>8}{'CPU s':>8}")
        for phase in ["total", *(phase for _, _, phase in PROBES)]:
            if phase in clock.wall:
                print(f"  {phase:<26}{clock.wall[phase]:8.2f}{clock.cpu[phase]:8.2f}")
        errors = metrics.get("quant_mse", {})  # not recorded before issue 15
        print(f"  mAP {metrics['map']:.4f}, database quantization MSE "
              f"{errors.get('database', float('nan')):.5f}")


if __name__ == "__main__":
    main()
