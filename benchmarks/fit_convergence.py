"""Measure how many iterations and restarts each quantizer's final fit needs (not a test; prints
tables): the training MSE against the fit's iterations, then against its cold restarts.

The data are realistic representations: a `float` network (the library's own training loop and
MLP head, 64-d L2-normalised output) trained for a few epochs on 5,000 Fashion-MNIST images
(raw pixels, from Debian's dataset-fashion-mnist or gzipped idx files in --fashion), then the
representations of those 5,000 training items (the training-set fit) and of 50,000 other
training-pool images (the database fit, --database). Everything is seeded.

For each quantizer and regime, each knob of its fit is doubled from the training refits' default,
the others at their final-fit values (`final_options`), one cold fit each (PQ: kmeans_iters, and
kmeans_redo, faiss's k-means restarts per sub-space; OPQ: opq_iters, its k-means refinement at the
PQ's settings; RQ: kmeans_iters and kmeans_redo; LSQ: train_iters and train_ils_iters); then with
the final-fit settings, `--restarts` cold fits with `restart_seed`'s seeds, and the lowest MSE
among the first r of them for r = 1, 2, 4, ... Each line gives the MSE and its relative drop from
the line before; a setting is converged when the next doubling lowers the MSE by less than 0.5%
(each quantizer's `final_options` and `FINAL_RESTARTS` are set from this output).

    python benchmarks/fit_convergence.py [--quantizers pq,opq,rq,lsq] [--database]
        [--restarts 8] [--regimes 32/4,64/8] [--iterations opq_iters=50,100,200]
        [--fashion /usr/share/datasets/fashion-mnist]
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
import numpy as np

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet, Split, multi_hot
from gslbench.methods.loop import train
from gslbench.methods.model import embed
from gslbench.quantizers import QUANTIZERS, make_quantizer
from gslbench.quantizers.base import restart_seed

# the regimes per quantizer of issue 25's campaign, whose fits docs/guide/quantizers.md's settings
# come from (its grid was retired with campaign 2): (bits, sub_bits)
REGIMES = {"pq": ((32, 4), (32, 8), (64, 8)), "opq": ((32, 4), (32, 8), (64, 8)),
           "rq": ((16, 4), (32, 8)), "lsq": ((16, 4), (32, 8))}
# the knob each quantizer's fit iterates, from the training refits' default, doubling
ITERATIONS = {"pq": (("kmeans_iters", (25, 50, 100)), ("kmeans_redo", (1, 2, 4, 8, 16, 32))),
              "opq": (("opq_iters", (50, 100, 200)),),
              "rq": (("kmeans_iters", (10, 20, 40, 80)), ("kmeans_redo", (1, 2, 4, 8, 16))),
              "lsq": (("train_iters", (25, 50, 100)), ("train_ils_iters", (8, 16, 32)))}
N_TRAIN, N_DATABASE, SEED = 5000, 50000, 0


def fashion_pixels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST's 60,000 training images as (n, 784) float32 in [0, 1] and (n,) labels."""
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images.astype(np.float32) / 255, labels.astype(np.int64)


def representations(folder: Path, epochs: int) -> tuple[np.ndarray, np.ndarray]:
    """The (5000, 64) training and (50000, 64) database representations of a float network
    trained `epochs` epochs on the 5,000 training images (seeded)."""
    pixels, labels = fashion_pixels(folder)
    order = np.random.default_rng(SEED).permutation(len(pixels))
    train_rows, database_rows = order[:N_TRAIN], order[N_TRAIN:N_TRAIN + N_DATABASE]
    split = Split(pixels[train_rows], multi_hot(labels[train_rows], 10), train_rows)
    features = FeatureSet("fashion-mnist", "pixels", split, split, split,
                          [str(label) for label in range(10)], SEED, "")
    config = RunConfig(dataset="fashion-mnist", feature="pixels", method="float", epochs=epochs,
                       seed=SEED)
    model = train(config, features, show_progress=False).model
    return embed(model, pixels[train_rows]), embed(model, pixels[database_rows])


def fit_error(name: str, x: np.ndarray, bits: int, sub_bits: int, seed: int,
              **options: int) -> tuple[float, float]:
    """One cold fit of quantizer `name` on x: its training MSE and seconds."""
    start = time.perf_counter()
    quantizer = make_quantizer(name, x.shape[1], bits, sub_bits, seed, **options).fit(x)
    return quantizer.quantization_error(x), time.perf_counter() - start


def line(label: str, error: float, previous: float | None, seconds: float) -> str:
    drop = "" if previous is None else f"  drop {100 * (previous - error) / previous:6.2f}%"
    return f"    {label:<22} mse {error:.6f}{drop}  ({seconds:.1f} s)"


def measure(name: str, x: np.ndarray, bits: int, sub_bits: int, restarts: int,
            iterations: tuple) -> None:
    """Print the MSE against each knob of `iterations` ((knob, values) pairs), then against
    the restarts."""
    quantizer = make_quantizer(name, x.shape[1], bits, sub_bits)
    final = {**quantizer.options, **quantizer.final_options()}
    print(f"  {name} bits {bits} sub_bits {sub_bits} (K = {2 ** sub_bits}), final options "
          f"{quantizer.final_options()}")
    for knob, values in iterations:
        previous = None
        for value in values:
            error, seconds = fit_error(name, x, bits, sub_bits, SEED, **{**final, knob: value})
            print(line(f"{knob} {value}", error, previous, seconds), flush=True)
            previous = error
    errors, previous, start = [], None, time.perf_counter()
    for restart in range(restarts):
        errors.append(fit_error(name, x, bits, sub_bits, restart_seed(SEED, restart), **final)[0])
        if restart + 1 & restart == 0:  # r = 1, 2, 4, ...
            print(line(f"restarts {restart + 1}", min(errors), previous,
                       time.perf_counter() - start), flush=True)
            previous = min(errors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quantizers", default="pq,opq,rq,lsq")
    parser.add_argument("--database", action="store_true", help="the database fit (50,000)")
    parser.add_argument("--restarts", type=int, default=8)
    parser.add_argument("--regimes", help="bits/sub_bits,... (default: the campaign's)")
    parser.add_argument("--iterations", help="knob=v1,v2,... (default: ITERATIONS)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--fashion", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    args = parser.parse_args()
    train_x, database_x = representations(args.fashion, args.epochs)
    x = database_x if args.database else train_x
    print(f"{'database' if args.database else 'training-set'} fit: {x.shape[0]} x {x.shape[1]} "
          f"representations of a float network ({args.epochs} epochs, Fashion-MNIST pixels)")
    for name in args.quantizers.split(","):
        print(f"{name}: FINAL_RESTARTS {QUANTIZERS[name].FINAL_RESTARTS}")
        regimes = (REGIMES[name] if args.regimes is None else
                   [tuple(map(int, regime.split("/"))) for regime in args.regimes.split(",")])
        iterations = ITERATIONS[name]
        if args.iterations is not None:
            knob, values = args.iterations.split("=")
            iterations = ((knob, tuple(map(int, values.split(",")))),)
        for bits, sub_bits in regimes:
            measure(name, x, bits, sub_bits, args.restarts, iterations)


if __name__ == "__main__":
    main()
