"""One training loop for every method: `float`, `two-step`, `qloss` and `gsl` (DESIGN.md section 4).

The network is an MLP head on frozen features whose output is L2-normalised, so that squared L2
distances between representations rank like their cosines. Each method is a small unit that says
how the representation reaches the similarity loss and what is added to it:

- `float`: nothing; never quantized (the ceiling).
- `two-step`: similarity loss only; the quantizer is fitted once, after training.
- `qloss`: similarity loss + lambda * mean ||z - q(z)||^2 against the current codebooks.
- `gsl`: similarity loss through the Gradient Snapping Layer (gslbench.gsl).

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
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from gslbench.config import RunConfig
from gslbench.featurefile import FeatureSet
from gslbench.gsl import GradientSnappingLayer
from gslbench.losses import LOSSES
from gslbench.quantizers import Quantizer, make_quantizer


class EmbeddingNet(nn.Module):
    """Standardise (b, dim_in) features, MLP with one hidden layer, L2-normalise: (b, dim_out)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim_in))
        self.register_buffer("scale", torch.ones(dim_in))
        self.layers = nn.Sequential(
            nn.Linear(dim_in, hidden), nn.ReLU(), nn.Linear(hidden, dim_out)
        )

    def set_standardisation(self, features: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(features.mean(0)))
        self.scale.copy_(torch.from_numpy(features.std(0) + 1e-6))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers((x - self.mean) / self.scale), dim=1)


def build_model(config: RunConfig, dim_in: int) -> EmbeddingNet:
    return EmbeddingNet(dim_in, config.hidden, config.dim_out)


@torch.no_grad()
def embed(model: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """(n, dim_in) float32 features -> (n, dim_out) float32 representations, in batches."""
    model.eval()
    blocks = [
        model(torch.from_numpy(features[start : start + batch_size])).numpy()
        for start in range(0, len(features), batch_size)
    ]
    return np.concatenate(blocks).astype(np.float32, copy=False)


class Method:
    """A training strategy: how z reaches the loss, what is added, whether codebooks are in use."""

    quantized = True
    trains_against_codebooks = True

    def __init__(self, config: RunConfig, quantizer: Quantizer | None) -> None:
        self.config, self.quantizer = config, quantizer

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        return z.new_zeros(())


class FloatMethod(Method):
    quantized = False
    trains_against_codebooks = False


class TwoStepMethod(Method):
    trains_against_codebooks = False


class QLossMethod(Method):
    def penalty(self, z: torch.Tensor) -> torch.Tensor:
        if not self.quantizer.is_fitted:
            return z.new_zeros(())
        reconstruction = self.quantizer.assign(z.detach(), 1).reconstruction
        return self.config.qloss_lambda * ((z - reconstruction) ** 2).sum(1).mean()


class GSLMethod(Method):
    def __init__(self, config: RunConfig, quantizer: Quantizer | None) -> None:
        super().__init__(config, quantizer)
        self.layer = GradientSnappingLayer(quantizer, k=config.gsl_k, alpha=config.gsl_alpha)

    def representation(self, z: torch.Tensor) -> torch.Tensor:
        return self.layer(z)


METHODS: dict[str, type[Method]] = {
    "float": FloatMethod,
    "two-step": TwoStepMethod,
    "qloss": QLossMethod,
    "gsl": GSLMethod,
}


@dataclass
class TrainResult:
    """A trained model, its fitted quantizer (None for float), the per-epoch log and the time."""

    model: EmbeddingNet
    quantizer: Quantizer | None
    log: list[dict]
    seconds: float


def train(config: RunConfig, features: FeatureSet, show_progress: bool = True) -> TrainResult:
    """Train `config.method` on `features.train`; deterministic for a given config and seed."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(features.train.features)
    labels = torch.from_numpy(features.train.labels)
    model = build_model(config, features.dim)
    model.set_standardisation(features.train.features)
    loss_fn = LOSSES[config.loss](features.n_classes, config.dim_out, config.margin)
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss_fn.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    quantizer = _new_quantizer(config) if config.quantized else None
    monitor = _new_quantizer(config) if config.quantized else None
    method = METHODS[config.method](config, quantizer)
    log, total_seconds = [], 0.0
    for epoch in tqdm(range(config.epochs), desc=f"train {config.method}", leave=False,
                      disable=not show_progress):
        start = time.perf_counter()
        if method.trains_against_codebooks and _refit_due(config, epoch):
            _refit(quantizer, embed(model, features.train.features))
        model.train()
        sim_loss = _train_epoch(model, method, loss_fn, optimizer, x, labels, config, generator)
        seconds = time.perf_counter() - start
        total_seconds += seconds
        log.append(_log_row(epoch, config, sim_loss, seconds, model, features, quantizer, monitor))
    if quantizer is not None:
        start = time.perf_counter()
        _refit(quantizer, embed(model, features.train.features))
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


def _train_epoch(model, method, loss_fn, optimizer, x, labels, config, generator) -> float:  # noqa: ANN001
    order = torch.randperm(len(x), generator=generator)
    losses = []
    for start in range(0, len(x), config.batch_size):
        batch = order[start : start + config.batch_size]
        if len(batch) < 2:
            continue
        z = model(x[batch])
        sim_loss = loss_fn(method.representation(z), labels[batch])
        loss = sim_loss + method.penalty(z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(sim_loss.item())
    return float(np.mean(losses))


def _log_row(epoch, config, sim_loss, seconds, model, features, quantizer, monitor) -> dict:  # noqa: ANN001
    row = {"epoch": epoch + 1, "sim_loss": sim_loss, "quant_mse": float("nan"),
           "quant_mse_refit": float("nan"), "seconds": seconds}
    if quantizer is None:
        return row
    representations = embed(model, features.train.features)
    if quantizer.is_fitted:
        row["quant_mse"] = quantizer.quantization_error(representations)
    if _monitor_due(config, epoch):
        _refit(monitor, representations)
        row["quant_mse_refit"] = monitor.quantization_error(representations)
    return row
