"""Time one training step of `gsl` against one of `qloss` (not a test; prints the ratio).

Both steps use the same network, batch, loss and fitted quantizer; only the strategy differs: each
is the library's own `gslbench.methods.loop.train_step`. Target: a GSL step costs at most 1.3x a
qloss step.

    python benchmarks/gsl_step.py [--quantizer pq] [--bits 32] [--batch 256] [--repeats 200]
        [--threads N]
"""

from __future__ import annotations

import argparse
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
from gslbench.quantizers import make_quantizer


def synthetic_features(n: int, dim: int, n_classes: int, seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[class_ids] + rng.normal(size=(n, dim)).astype(np.float32)
    split = Split(x, multi_hot(class_ids, n_classes), np.arange(n))
    return FeatureSet("synthetic", "gaussian", split, split, split, [str(c) for c in range(n_classes)],
                      seed, "")


class StepRunner:
    """One method's model, optimizer and fixed batch, ready to take optimizer steps."""

    def __init__(self, method_name: str, config: RunConfig, features: FeatureSet) -> None:
        torch.manual_seed(0)
        self.model = build_model(config, features.dim)
        self.model.set_standardisation(features.train.features)
        quantizer = make_quantizer(config.quantizer, config.dim_out, config.bits, seed=0)
        quantizer.fit(embed(self.model, features.train.features))
        self.method = METHODS[method_name](config, quantizer)
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
    """Median (wall, CPU) seconds of each runner's step, steps interleaved so that both see the
    same machine. CPU time counts the work done, so it is less disturbed by other processes."""
    seconds: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    for repeat in range(repeats + 10):
        for name, runner in runners.items():
            elapsed = runner.step()
            if repeat >= 10:
                seconds[name].append(elapsed)
    return {name: np.median(values, axis=0) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizer", default="pq")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim-in", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = RunConfig(quantizer=args.quantizer, bits=args.bits, batch_size=args.batch)
    features = synthetic_features(4096, args.dim_in, 10, seed=0)
    runners = {name: StepRunner(name, config, features) for name in ("qloss", "gsl")}
    times = median_step_seconds(runners, args.repeats)
    print(f"{args.quantizer} {args.bits} bits, batch {args.batch}, dim_in {args.dim_in}, "
          f"torch threads {torch.get_num_threads()}")
    for clock, qloss, gsl in zip(("wall", "cpu"), times["qloss"], times["gsl"], strict=True):
        print(f"{clock:>4}: qloss step {qloss * 1e3:.3f} ms, gsl step {gsl * 1e3:.3f} ms, "
              f"gsl/qloss = {gsl / qloss:.2f}x (target <= 1.30x)")


if __name__ == "__main__":
    main()
