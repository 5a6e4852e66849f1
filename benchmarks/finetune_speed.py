"""Seconds per epoch of fine-tuning the last N blocks of EfficientNet-Lite0 on Fashion-MNIST's
5,000 training images, and the cost of caching the frozen trunk's activations (not a test).

For each N: the trunk (all blocks but the last N) over the 5,000 training images, as
`gslbench.data.activations` computes the cache (the whole cache is this for all 70,000 images);
then epochs of the library's own training loop (`gslbench.methods.loop.train`, method `float`:
training steps only) on those activations; then one pass of the trained network over them (what
a quantized method adds per epoch for its log and refits, and what encode does 13 times over
for the 65,000 database and query images). N = 0 (the MLP head on frozen features) is the
baseline. Wall-clock and CPU seconds (all threads of the process).

    gslbench download fashion-mnist && gslbench features fashion-mnist
    python benchmarks/finetune_speed.py [--data-dir datasets] [--blocks 0,1,2,3] [--epochs 3]
        [--threads 2] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# isort: off
import gslbench  # noqa: F401  first, as in the CLI: it sets OMP_WAIT_POLICY before OpenMP loads
# isort: on
import numpy as np
import torch

from gslbench import layout
from gslbench.config import RunConfig
from gslbench.data import backbones, finetuning, get_dataset
from gslbench.data.featurefile import FeatureSet, read_feature_file
from gslbench.devices import resolve_device
from gslbench.methods.loop import train
from gslbench.methods.model import embed

ALL_IMAGES = 70_000
ENCODED_IMAGES = 65_000  # database and queries


@contextmanager
def clocks(into: dict[str, float]) -> Iterator[None]:
    """Wall-clock and CPU seconds of the block, into `into["wall"]` and `into["cpu"]`."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield
    into.update(wall=time.perf_counter() - wall, cpu=time.process_time() - cpu)


def trunk_activations(images: np.ndarray, blocks: int, image_size: int,
                      device: torch.device) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, C, H, W) float32, as the activation cache computes them."""
    trunk, _ = finetuning.split_network("efficientnet-lite0", image_size, blocks)
    trunk.to(device)
    spec = backbones.get_backbone("efficientnet-lite0")
    parts = []
    with torch.no_grad():
        for _, inputs in backbones.network_inputs(images, spec, image_size, 256, 255.0, device,
                                                  f"trunk N={blocks}"):
            parts.append(trunk(inputs).contiguous().cpu().numpy())
    return np.concatenate(parts)


def measure(blocks: int, features: FeatureSet, images: np.ndarray, image_size: int, epochs: int,
            device: torch.device) -> dict[str, float]:
    """Seconds of the cache (training images), of an epoch and of one embedding pass."""
    seconds: dict[str, float] = {}
    cache: dict[str, float] = {"wall": 0.0, "cpu": 0.0}
    inputs, top = None, None
    if blocks:
        with clocks(cache):
            inputs = trunk_activations(images, blocks, image_size, device)
        _, top = finetuning.split_network("efficientnet-lite0", image_size, blocks)
    config = RunConfig(dataset="fashion-mnist", feature=features.feature, method="float",
                       epochs=epochs, train_blocks=blocks)
    run: dict[str, float] = {}
    with clocks(run):
        result = train(config, features, show_progress=False, top=top, inputs=inputs, device=device)
    one_pass: dict[str, float] = {}
    with clocks(one_pass):
        embed(result.model, features.train.features if inputs is None else inputs)
    seconds.update(cache_wall=cache["wall"], cache_cpu=cache["cpu"],
                   epoch_wall=run["wall"] / epochs, epoch_cpu=run["cpu"] / epochs,
                   pass_wall=one_pass["wall"], pass_cpu=one_pass["cpu"])
    return seconds


def projection(s: dict[str, float], n_train: int, runs_sharing_cache: int) -> float:
    """Wall seconds of a 40-epoch quantized run: 40 epochs, 40 passes for its log and refits,
    the encode passes, and its share of the whole cache when `runs_sharing_cache` runs share it."""
    encode = s["pass_wall"] * ENCODED_IMAGES / n_train
    cache_share = s["cache_wall"] * ALL_IMAGES / n_train / runs_sharing_cache
    return 40 * (s["epoch_wall"] + s["pass_wall"]) + encode + cache_share


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("--blocks", default="0,1,2,3", help="comma-separated N")
    parser.add_argument("--epochs", type=int, default=3, help="epochs timed per N")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--share", type=int, default=21,
                        help="runs that share one cache in the projection (default: the 21 "
                             "fine-tuning runs of docs/finetune.md's grid)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    features = read_feature_file(layout.feature_path(args.data_dir, "fashion-mnist",
                                                     "efficientnet-lite0"))
    raw = get_dataset("fashion-mnist").load_raw(layout.raw_dir(args.data_dir, "fashion-mnist"))
    images = raw.images[features.train.indices]
    image_size = int(features.extra_attrs["image_size"])
    print(f"Fashion-MNIST, {len(images):,} training images at {image_size} px, device "
          f"{device.type}, {torch.get_num_threads()} torch threads, {args.epochs} epochs timed")
    print("| N | cache, 5,000 images (s) | epoch (s) | epoch CPU (s) | pass over 5,000 (s) "
          "| 40-epoch quantized run, projected (s) |")
    print("|---|---|---|---|---|---|")
    for blocks in (int(b) for b in args.blocks.split(",")):
        s = measure(blocks, features, images, image_size, args.epochs, device)
        print(f"| {blocks} | {s['cache_wall']:.1f} (CPU {s['cache_cpu']:.1f}) "
              f"| {s['epoch_wall']:.2f} | {s['epoch_cpu']:.2f} | {s['pass_wall']:.2f} (CPU "
              f"{s['pass_cpu']:.2f}) | {projection(s, len(images), args.share):.0f} |", flush=True)


if __name__ == "__main__":
    main()
