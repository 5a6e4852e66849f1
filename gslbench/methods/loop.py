"""One training loop for every method of `gslbench.methods.METHODS` (DESIGN.md section 4).

The network (`gslbench.methods.model`) is an MLP head on frozen features whose output is
L2-normalised, or, when fine-tuning, the CNN's top on cached trunk activations under that head;
it trains on the run's device (`gslbench.devices`; faiss fits the codebooks on the CPU). Each
method says how the representation reaches the similarity loss and what is added to it
(`Method.representation`, `Method.penalty`); everything else is shared here.

Quantized methods share one schedule: `warmup_epochs` of plain similarity training, then the
codebooks are (re)fitted on the training representations every `epochs_per_refit` epochs
(warm-started after the first fit) and once more at the end. `two-step` trains against no codebooks,
so for it the refits only serve the log. Every epoch's log row holds the similarity loss, the mean
squared quantization error of the training representations under the codebooks in use
(`quant_mse`), under a monitor quantizer refitted on them (`quant_mse_refit`: the error they would
have if quantized now, comparable across methods; at the end of warm-up, every `epochs_per_refit`
epochs and at the last epoch, empty in between), and the seconds of training work.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet
from gslbench.methods import Method
from gslbench.methods.losses import LOSSES
from gslbench.methods.model import EmbeddingNet, FineTunedNet, build_model, embed
from gslbench.quantizers import Quantizer, make_quantizer


@dataclass
class TrainResult:
    """A trained model, its fitted quantizer (None for float), the per-epoch log and the time."""

    model: EmbeddingNet | FineTunedNet
    quantizer: Quantizer | None
    log: list[dict]
    seconds: float


def train(config: RunConfig, features: FeatureSet, show_progress: bool = True,
          top: nn.Module | None = None, inputs: np.ndarray | None = None,
          device: torch.device | str = "cpu") -> TrainResult:
    """Train `config.method` on `features.train` on `device`; deterministic for a given config,
    seed and device.

    Fine-tuning: `top` is the CNN's trainable top and `inputs` the training items' (n, C, H, W)
    float32 trunk activations, row for row with `features.train`."""
    inputs = features.train.features if inputs is None else inputs
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(inputs).to(device)
    labels = torch.from_numpy(features.train.labels).to(device)
    model = build_model(config, features.dim, top)
    model.set_standardisation(features.train.features)
    model.to(device)
    loss_fn = LOSSES[config.loss](features.n_classes, config.dim_out, config.margin).to(device)
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss_fn.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    quantizer = _new_quantizer(config) if config.quantized else None
    monitor = _new_quantizer(config) if config.quantized else None
    method = config.method_spec(config, quantizer)
    log, total_seconds = [], 0.0
    for epoch in tqdm(range(config.epochs), desc=f"train {config.method}", leave=False,
                      disable=not show_progress):
        start = time.perf_counter()
        if method.trains_against_codebooks and _refit_due(config, epoch):
            _refit(quantizer, embed(model, inputs))
        model.train()
        sim_loss = _train_epoch(model, method, loss_fn, optimizer, x, labels, config, generator)
        seconds = time.perf_counter() - start
        total_seconds += seconds
        log.append(_log_row(epoch, config, sim_loss, seconds, model, inputs, quantizer, monitor))
    if quantizer is not None:
        start = time.perf_counter()
        _refit(quantizer, embed(model, inputs))
        total_seconds += time.perf_counter() - start
    return TrainResult(model, quantizer, log, total_seconds)


def _new_quantizer(config: RunConfig) -> Quantizer:
    return make_quantizer(
        config.quantizer, config.dim_out, config.bits, sub_bits=config.sub_bits, seed=config.seed
    )


def _refit_due(config: RunConfig, epoch: int) -> bool:
    since_warmup = epoch - config.warmup_epochs
    return since_warmup >= 0 and since_warmup % config.epochs_per_refit == 0


def _monitor_due(config: RunConfig, epoch: int) -> bool:
    """The monitor refits after every epoch that a codebook refit follows, and after the last."""
    return epoch + 1 == config.epochs or _refit_due(config, epoch + 1)


def _refit(quantizer: Quantizer, representations: np.ndarray) -> None:
    quantizer.fit(representations, warm_start=quantizer.is_fitted)


def train_step(model: EmbeddingNet, method: Method, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor) -> float:
    """One optimizer step on a batch: x (b, dim_in) float32, labels (b, C) uint8 multi-hot.

    The similarity loss sees `method.representation(z)` and the method's penalty is added.
    Returns the similarity loss (float)."""
    z = model(x)
    sim_loss = loss_fn(method.representation(z), labels)
    loss = sim_loss + method.penalty(z)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return sim_loss.item()


def _train_epoch(model: EmbeddingNet, method: Method, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor,
                 config: RunConfig, generator: torch.Generator) -> float:
    """One epoch of shuffled batches; the mean similarity loss. A last batch of one item is
    skipped (pairwise losses need two)."""
    order = torch.randperm(len(x), generator=generator).to(x.device)
    losses = [train_step(model, method, loss_fn, optimizer, x[batch], labels[batch])
              for batch in order.split(config.batch_size) if len(batch) >= 2]
    return float(np.mean(losses))


def _log_row(epoch: int, config: RunConfig, sim_loss: float, seconds: float, model: nn.Module,
             inputs: np.ndarray, quantizer: Quantizer | None, monitor: Quantizer | None) -> dict:
    row = {"epoch": epoch + 1, "sim_loss": sim_loss, "quant_mse": float("nan"),
           "quant_mse_refit": float("nan"), "seconds": seconds}
    if quantizer is None:
        return row
    representations = embed(model, inputs)
    if quantizer.is_fitted:
        row["quant_mse"] = quantizer.quantization_error(representations)
    if _monitor_due(config, epoch):
        _refit(monitor, representations)
        row["quant_mse_refit"] = monitor.quantization_error(representations)
    return row
