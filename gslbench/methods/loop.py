"""One training loop for every method of `gslbench.methods.METHODS` (DESIGN.md section 4).

The network (`gslbench.methods.model`) is an MLP head on frozen features whose output is
L2-normalised, or, when fine-tuning, the CNN's top on cached trunk activations under that head;
it trains on the run's device (`gslbench.devices`; faiss fits the codebooks on the CPU). Each
method says how the representation reaches the similarity loss and what is added to it
(`Method.representation`, `Method.penalty`); everything else is shared here.

Quantized methods share one schedule: `warmup_epochs` of plain similarity training, then the
codebooks are (re)fitted on the training representations after every `epochs_per_refit` epochs
(warm-started after the first fit) and after the last epoch, so the final codebooks are fitted on
the final representations. `two-step` trains against no codebooks: for it the refits only serve
the log, and the last one is its one fit on the trained network, from scratch. At each refit the log row of
that epoch holds the mean squared quantization error of the training representations under the
codebooks of the previous refit (`quant_mse`: those qloss and gsl trained against; empty before
the first fit) and under the codebooks just refitted on them (`quant_mse_refit`: the error they
would have if quantized now, comparable across methods); rows between refits leave both empty
(computing them would cost a pass over the training set each epoch). Every row holds the epoch's
similarity loss and the seconds of training work.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from gslbench.config import RunConfig
from gslbench.data.featurefile import FeatureSet
from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.methods import Method
from gslbench.quantizers import Quantizer, make_quantizer

if TYPE_CHECKING:
    from gslbench.methods.model import EmbeddingNet, FineTunedNet

torch = lazy_import("torch")
nn = lazy_import("torch.nn")
# the network and the losses subclass torch's nn.Module: loaded when a run trains
networks = lazy_import("gslbench.methods.model")
losses = lazy_import("gslbench.methods.losses")
log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A trained model, its fitted quantizer (None for float), the per-epoch log and the time."""

    model: EmbeddingNet | FineTunedNet
    quantizer: Quantizer | None
    log: list[dict]
    seconds: float


def train(config: RunConfig, features: FeatureSet, show_progress: bool = True,
          top: nn.Module | None = None, inputs: np.ndarray | None = None,
          device: torch.device | str = "cpu",
          on_refit: Callable[[int, nn.Module, Quantizer], None] | None = None) -> TrainResult:
    """Train `config.method` on `features.train` on `device`; deterministic for a given config,
    seed and device.

    Fine-tuning: `top` is the CNN's trainable top and `inputs` the training items' (n, C, H, W)
    float32 trunk activations, row for row with `features.train`.
    on_refit: called as `on_refit(epoch, model, quantizer)` after each codebook refit of a
    quantized run (tuning reports its validation mAP there; an exception it raises stops the
    run)."""
    inputs = features.train.features if inputs is None else inputs
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(inputs).to(device)
    labels = torch.from_numpy(features.train.labels).to(device)
    model = networks.build_model(config, features.dim, top)
    model.set_standardisation(features.train.features)
    model.to(device)
    loss_fn = losses.LOSSES[config.loss](features.n_classes, config.dim_out, config.margin).to(device)
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss_fn.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    quantizer = _new_quantizer(config) if config.quantized else None
    method = config.method_spec(config, quantizer)
    start = time.perf_counter()
    if quantizer is not None and _refit_due(config, 0):  # no warm-up: fit the untrained network
        quantizer.fit(networks.embed(model, inputs))
    rows, total_seconds = [], time.perf_counter() - start
    for epoch in tqdm(range(1, config.epochs + 1), desc=f"train {config.method}", leave=False,
                      disable=not show_progress):
        start = time.perf_counter()
        model.train()
        sim_loss = _train_epoch(model, method, loss_fn, optimizer, x, labels, config, generator)
        _check_finite(model, sim_loss, epoch)
        row = {"epoch": epoch, "sim_loss": sim_loss, "quant_mse": float("nan"),
               "quant_mse_refit": float("nan")}
        if quantizer is not None and _refit_due(config, epoch):
            warm = method.trains_against_codebooks or epoch < config.epochs
            row.update(_refit_and_measure(quantizer, networks.embed(model, inputs), warm))
            if on_refit is not None:
                on_refit(epoch, model, quantizer)
        row["seconds"] = time.perf_counter() - start
        total_seconds += row["seconds"]
        rows.append(row)
        if _refit_due(config, epoch):  # the run's progress as a log line (-v; train off a TTY)
            log.debug("train %s: epoch %d/%d, sim loss %.4f, quant mse %.4g", config.label, epoch,
                      config.epochs, sim_loss, row["quant_mse_refit"])
    return TrainResult(model, quantizer, rows, total_seconds)


def _check_finite(model: EmbeddingNet, sim_loss: float, epoch: int) -> None:
    """Stop a run whose loss or weights became NaN or inf: nothing it would save is a result."""
    if not math.isfinite(sim_loss) or not all(torch.isfinite(p).all() for p in model.parameters()):
        raise GslbenchError(f"training diverged at epoch {epoch}: the loss or the weights became "
                            "NaN or inf (try a smaller --lr); no model was saved")


def _new_quantizer(config: RunConfig) -> Quantizer:
    return make_quantizer(
        config.quantizer, config.dim_out, config.bits, sub_bits=config.sub_bits, seed=config.seed
    )


def _refit_due(config: RunConfig, epochs_done: int) -> bool:
    """Whether the codebooks are (re)fitted once `epochs_done` epochs are trained: at the end of
    warm-up, every `epochs_per_refit` epochs after it, and at the end."""
    since_warmup = epochs_done - config.warmup_epochs
    return epochs_done == config.epochs or (since_warmup >= 0
                                            and since_warmup % config.epochs_per_refit == 0)


def _refit_and_measure(quantizer: Quantizer, representations: np.ndarray,
                       warm: bool) -> dict[str, float]:
    """Refit on (n, d) float32 representations (warm-started from the current codebooks if
    `warm` and fitted); their quantization error under the codebooks before (`quant_mse`, NaN
    before the first fit) and after (`quant_mse_refit`)."""
    before = quantizer.quantization_error(representations) if quantizer.is_fitted else float("nan")
    quantizer.fit(representations, warm_start=warm)
    return {"quant_mse": before, "quant_mse_refit": quantizer.quantization_error(representations)}


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
