"""Time one training step of every method that trains against codebooks, as a ratio to a qloss
step (not a test; prints the ratios).

For each quantizer, every method gets the same network (same initialisation), batch, loss and
fitted quantizer; only the strategy differs: each step is the library's own
`gslbench.methods.loop.train_step`. Steps are interleaved across the methods so that all see the
same machine; the medians of wall-clock and CPU time are compared. Target: each method's step
costs at most 1.3x a qloss step.

    python benchmarks/step_cost.py [--quantizers pq,opq,rq,lsq] [--bits 32] [--batch 256]
        [--repeats 200] [--threads N]
"""

from __future__ import annotations

import argparse
import dataclasses
import time

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
import numpy as np
import torch

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet, Split, multi_hot
from gslbench.methods import METHODS
from gslbench.methods.loop import train_step
from gslbench.methods.losses import LOSSES
from gslbench.methods.model import build_model, embed
from gslbench.quantizers import Quantizer, make_quantizer

BASELINE = "qloss"
TARGET = 1.3


def synthetic_features(n: int, dim: int, n_classes: int, seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[class_ids] + rng.normal(size=(n, dim)).astype(np.float32)
    split = Split(x, multi_hot(class_ids, n_classes), np.arange(n))
    return FeatureSet("synthetic", "gaussian", split, split, split, [str(c) for c in range(n_classes)],
                      seed, "")


def variants(base: RunConfig) -> list[RunConfig]:
    """qloss first, then every other method that trains against the codebooks at its defaults,
    and GSL with the nearest-codeword rule."""
    names = [BASELINE, *(name for name, method in METHODS.items()
                         if method.trains_against_codebooks and name != BASELINE)]
    configs = [dataclasses.replace(base, method=name) for name in names]
    return [*configs, dataclasses.replace(base, method="gsl", gsl_select="nearest")]


class StepRunner:
    """One method's model, optimizer and fixed batch, ready to take optimizer steps."""

    def __init__(self, config: RunConfig, features: FeatureSet, quantizer: Quantizer) -> None:
        torch.manual_seed(0)
        self.model = build_model(config, features.dim)
        self.model.set_standardisation(features.train.features)
        self.method = config.method_spec(config, quantizer)
        self.loss_fn = LOSSES[config.loss](features.n_classes, config.dim_out, config.margin)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.x = torch.from_numpy(features.train.features[: config.batch_size])
        self.labels = torch.from_numpy(features.train.labels[: config.batch_size])
        self.model.train()

    def step(self) -> tuple[float, float]:
        """Wall-clock and CPU seconds (all threads of the process) of one optimizer step."""
        wall, cpu = time.perf_counter(), time.process_time()
        train_step(self.model, self.method, self.loss_fn, self.optimizer, self.x, self.labels)
        return time.perf_counter() - wall, time.process_time() - cpu


def median_step_seconds(runners: dict[str, StepRunner], repeats: int) -> dict[str, np.ndarray]:
    """Median (wall, CPU) seconds of each runner's step, steps interleaved so that all see the
    same machine; the first 10 rounds warm up. CPU time counts the work done, so it is less
    disturbed by other processes."""
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for repeat in range(repeats + 10):
        for name, runner in runners.items():
            elapsed = runner.step()
            if repeat >= 10:
                seconds[name].append(elapsed)
    return {name: np.median(values, axis=0) for name, values in seconds.items()}


def quantizer_costs(quantizer_name: str, args: argparse.Namespace, features: FeatureSet) -> None:
    """Print each variant's median step and its ratio to qloss's for one quantizer."""
    base = RunConfig(quantizer=quantizer_name, bits=args.bits, batch_size=args.batch)
    configs = variants(base)
    torch.manual_seed(0)
    quantizer = make_quantizer(quantizer_name, base.dim_out, base.bits, seed=0)
    quantizer.fit(embed(build_model(base, features.dim), features.train.features))
    runners = {config.label: StepRunner(config, features, quantizer) for config in configs}
    times = median_step_seconds(runners, args.repeats)
    baseline = times[configs[0].label]
    print(f"\n{quantizer_name} {args.bits} bits, batch {args.batch}, dim_in {args.dim_in}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'method':<28} {'wall ms':>8} {'cpu ms':>8} {'wall ratio':>11} {'cpu ratio':>10}")
    for label, (wall, cpu) in times.items():
        flag = "" if wall / baseline[0] <= TARGET else f"  (over {TARGET}x)"
        print(f"{label:<28} {wall * 1e3:8.3f} {cpu * 1e3:8.3f} {wall / baseline[0]:10.2f}x "
              f"{cpu / baseline[1]:9.2f}x{flag}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizers", default="pq,opq,rq,lsq")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim-in", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    features = synthetic_features(4096, args.dim_in, 10, seed=0)
    for quantizer_name in args.quantizers.split(","):
        quantizer_costs(quantizer_name, args, features)


if __name__ == "__main__":
    main()
