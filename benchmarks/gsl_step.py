"""Time one training step of `gsl` against one of `qloss` (not a test; prints the ratio).

Both steps use the same network, batch, loss and fitted quantizer; only the strategy differs, as in
`gslbench.training`. Issue target: the GSL step costs at most 1.3x the qloss step.

    python benchmarks/gsl_step.py [--quantizer pq] [--bits 32] [--batch 256] [--repeats 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from gslbench.config import RunConfig
from gslbench.featurefile import FeatureSet, Split, multi_hot
from gslbench.losses import LOSSES
from gslbench.quantizers import make_quantizer
from gslbench.training import METHODS, build_model, embed


def synthetic_features(n: int, dim: int, n_classes: int, seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    class_ids = rng.integers(0, n_classes, n)
    centres = rng.normal(size=(n_classes, dim)).astype(np.float32)
    x = centres[class_ids] + rng.normal(size=(n, dim)).astype(np.float32)
    split = Split(x, multi_hot(class_ids, n_classes), np.arange(n))
    return FeatureSet("synthetic", "gaussian", split, split, split, [str(c) for c in range(n_classes)],
                      seed, "")


def time_steps(method_name: str, config: RunConfig, features: FeatureSet, repeats: int) -> float:
    """Median seconds of one optimizer step of `method_name` (after a warm-up)."""
    torch.manual_seed(0)
    model = build_model(config, features.dim)
    model.set_standardisation(features.train.features)
    quantizer = make_quantizer(config.quantizer, config.dim_out, config.bits, seed=0)
    quantizer.fit(embed(model, features.train.features))
    method = METHODS[method_name](config, quantizer)
    loss_fn = LOSSES[config.loss](features.n_classes, config.dim_out, config.margin)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    x = torch.from_numpy(features.train.features[: config.batch_size])
    labels = torch.from_numpy(features.train.labels[: config.batch_size])
    model.train()
    seconds = []
    for step in range(repeats + 10):
        start = time.perf_counter()
        z = model(x)
        loss = loss_fn(method.representation(z), labels) + method.penalty(z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 10:
            seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizer", default="pq")
    parser.add_argument("--bits", type=int, default=32)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--dim-in", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    config = RunConfig(quantizer=args.quantizer, bits=args.bits, batch_size=args.batch)
    features = synthetic_features(4096, args.dim_in, 10, seed=0)
    qloss = time_steps("qloss", config, features, args.repeats)
    gsl = time_steps("gsl", config, features, args.repeats)
    print(f"{args.quantizer} {args.bits} bits, batch {args.batch}, dim_in {args.dim_in}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"qloss step {qloss * 1e3:.3f} ms, gsl step {gsl * 1e3:.3f} ms, gsl/qloss = {gsl / qloss:.2f}x "
          f"(target <= 1.30x)")


if __name__ == "__main__":
    main()
