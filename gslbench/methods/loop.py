"""One training loop for every method of `gslbench.methods.METHODS` (docs/design.md, section 4).

The network (`gslbench.methods.model`) is an MLP head on frozen features whose output is
L2-normalised, or, when fine-tuning, the CNN's top on cached trunk activations under that head;
it trains on the run's device (`gslbench.devices`; faiss fits the codebooks on the CPU). Each
method says how the representation reaches the similarity loss and what is added to it
(`Method.representation`, `Method.penalty`); everything else is shared here.

Quantized methods share one schedule: `warmup_epochs` of plain similarity training, then the
codebooks are refitted on the training representations after every `epochs_per_refit` epochs
(warm-started after the first fit; these refits are part of training) and after the last epoch
by the final fit (`Quantizer.fit_final`: cold restarts run to convergence, the same procedure
for every method and for encode's database fit), so the saved codebooks depend on the final
network and the seed only, never on the refits before. `two-step` trains against no codebooks:
for it the refits only serve the log. At each refit the log row of
that epoch holds the mean squared quantization error of the training representations under the
codebooks of the previous refit (`quant_mse`: those qloss and gsl trained against; empty before
the first fit) and under the codebooks just refitted on them (`quant_mse_refit`: after the last
epoch the final fit's, comparable across methods); rows between refits leave both empty
(computing them would cost a pass over the training set each epoch). Every row holds the epoch's
similarity loss and the seconds of training work. A method that trains nothing (`Method.trains`
False: `pca`) has its fixed network and the final fit, logged as one row, epoch 0.

Reuse (`gslbench.checkpoints`): a run's first `plain_epochs` are float's (the warm-up of every
built-in method; the whole training of float, two-step and GSL at α = 0, whose refits before the
last only serve the log), so given its checkpoints a run starts from the latest plain state another
run saved (network, optimizer, loss module, batch generator and torch's global RNG) and saves those
it passes through (`checkpoint_epochs`). Nothing a method does before its first codebook fit draws
random numbers or changes the loss (qloss's and ste's penalty is 0, ste, soft, gumbel and gsl pass
z through while the quantizer is unfitted; gumbel's noise has its own generator, used only after
the fit) and the refits read the network without changing it, so a run started from a checkpoint is
bit-identical to one trained from scratch, at the same device and thread counts. Two-step (or GSL
at α = 0) started from float's trained network only fits its codebooks: the final fit starts from
scratch (`Quantizer.fit_final` builds fresh faiss objects), so the earlier, skipped refits cannot
change it.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from gslbench.checkpoints import Checkpoints, checkpoint_epochs
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
logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """A trained model, its fitted quantizer (None for float), the per-epoch log and the time.

    seconds: the training time of the whole result, the epochs taken from a checkpoint at the
    time their producer measured (their log rows keep it). epochs_trained: the epochs this call
    trained. started_from: None, or {"checkpoint": id, "epoch": n} when the first n epochs came
    from a checkpoint (`gslbench.checkpoints`). refits_not_computed: epochs whose refit only
    serves the log (two-step's before its last) and fell among those n: their log rows hold no
    quantization errors."""

    model: EmbeddingNet | FineTunedNet
    quantizer: Quantizer | None
    log: list[dict]
    seconds: float
    epochs_trained: int
    started_from: dict | None = None
    refits_not_computed: list[int] = field(default_factory=list)


@dataclass
class _Training:
    """What plain training changes: the network, the loss module (softmax's classifier), the
    optimizer and the batch order's generator (and torch's global RNG, which the network's
    initialisation draws from)."""

    model: EmbeddingNet | FineTunedNet
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator


def train(config: RunConfig, features: FeatureSet, show_progress: bool = True,
          top: nn.Module | None = None, inputs: np.ndarray | None = None,
          device: torch.device | str = "cpu",
          on_refit: Callable[[int, nn.Module, Quantizer], None] | None = None,
          checkpoints: Checkpoints | None = None) -> TrainResult:
    """Train `config.method` on `features.train` on `device`; deterministic for a given config,
    seed, device and thread count.

    Fine-tuning: `top` is the CNN's trainable top and `inputs` the training items' (n, C, H, W)
    float32 trunk activations, row for row with `features.train`.
    on_refit: called as `on_refit(epoch, model, quantizer)` after each codebook refit of a
    quantized run (tuning reports its validation mAP there; an exception it raises stops the
    run).
    checkpoints: the run's plain training states (`gslbench.checkpoints`; None: no reuse). The
    run starts from the latest of `checkpoint_epochs` saved there, and saves those it trains
    through that are missing: the result is bit-identical to training from scratch."""
    inputs = features.train.features if inputs is None else inputs
    device = torch.device(device)
    if not config.method_spec.trains:
        return _untrained(config, inputs, device, on_refit)
    x = torch.from_numpy(inputs).to(device)
    labels = torch.from_numpy(losses.loss_targets(features.train)).to(device)
    marks = checkpoint_epochs(config) if checkpoints is not None else []
    training, done, log, started_from, rejected = _resume(config, features, top, device,
                                                          checkpoints, marks)
    quantizer = _new_quantizer(config) if config.quantized else None
    method = _build_method(config, quantizer)
    model = training.model
    total_seconds = sum(row["seconds"] for row in log)
    start = time.perf_counter()
    if quantizer is not None and _refit_due(config, done):
        if done == 0:  # no warm-up: fit the untrained network
            quantizer.fit(networks.embed(model, inputs))
        else:  # the refit of the checkpoint's last epoch
            log[-1].update(_refit(config, quantizer, model, inputs, done, on_refit))
            log[-1]["seconds"] += time.perf_counter() - start
    total_seconds += time.perf_counter() - start
    for epoch in tqdm(range(done + 1, config.epochs + 1), desc=f"train {config.method}",
                      leave=False, disable=not show_progress):
        start = time.perf_counter()
        model.train()
        sim_loss = _train_epoch(model, method, training.loss_fn, training.optimizer, x, labels,
                                config, training.generator)
        _check_finite(model, sim_loss, epoch)
        row = {"epoch": epoch, "sim_loss": sim_loss, "quant_mse": float("nan"),
               "quant_mse_refit": float("nan"), "seconds": time.perf_counter() - start}
        if epoch in marks and (epoch in rejected or not checkpoints.path(epoch).is_file()):
            checkpoints.save(epoch, _state(training, [*log, row], device))
        if quantizer is not None and _refit_due(config, epoch):
            row.update(_refit(config, quantizer, model, inputs, epoch, on_refit))
            # the run's progress as a log line (-v; train off a TTY)
            logger.debug("train %s: epoch %d/%d, sim loss %.4f, quant mse %.4g", config.label,
                         epoch, config.epochs, sim_loss, row["quant_mse_refit"])
        row["seconds"] = time.perf_counter() - start
        total_seconds += row["seconds"]
        log.append(row)
    skipped = [epoch for epoch in range(1, done) if quantizer is not None
               and _refit_due(config, epoch)]
    return TrainResult(model, quantizer, log, total_seconds, config.epochs - done, started_from,
                       skipped)


def _untrained(config: RunConfig, inputs: np.ndarray, device: torch.device,
               on_refit: Callable[[int, nn.Module, Quantizer], None] | None) -> TrainResult:
    """A method that trains nothing (`Method.trains` False, `pca`): its fixed network on the
    (n, d) float32 training features, then the final fit of their representations; the log is
    one row, epoch 0, with the final fit's error as `quant_mse_refit` and its seconds."""
    start = time.perf_counter()
    model = config.method_spec.network(config, inputs).to(device)
    quantizer = _new_quantizer(config)
    row = {"epoch": 0, "sim_loss": float("nan"), "quant_mse": float("nan"),
           **_refit(config, quantizer, model, inputs, config.epochs, on_refit)}
    row["seconds"] = time.perf_counter() - start
    return TrainResult(model, quantizer, [row], row["seconds"], 0)


def _resume(config: RunConfig, features: FeatureSet, top: nn.Module | None,
            device: torch.device, checkpoints: Checkpoints | None, marks: list[int]
            ) -> tuple[_Training, int, list[dict], dict | None, set[int]]:
    """The run's initial state (`_start`), or the latest plain state among `marks` saved in
    `checkpoints` that can be used. Returns the state, the epochs it holds, their log rows, the
    `started_from` record and the epochs whose checkpoint exists but was not used (so that the
    run writes them again). A checkpoint that fails half-way is a warning; the CNN's `top`, the
    caller's module, is put back as it came."""
    training = _start(config, features, top, device)
    pristine_top = None if top is None or not marks else copy.deepcopy(top.state_dict())
    rejected = set()
    for epochs in reversed(marks):
        state = checkpoints.load(epochs)
        if state is None:
            if checkpoints.path(epochs).is_file():
                rejected.add(epochs)
            continue
        try:
            log = _restore(training, state, epochs, device)
        except (GslbenchError, RuntimeError, ValueError, KeyError, TypeError) as exc:
            logger.warning("%s: does not fit this run (%s); training those %d epochs again",
                           checkpoints.path(epochs), exc, epochs)
            rejected.add(epochs)
            if pristine_top is not None:
                top.load_state_dict(pristine_top)
            training = _start(config, features, top, device)
            continue
        return training, epochs, log, {"checkpoint": checkpoints.checkpoint_id(epochs),
                                       "epoch": epochs}, rejected
    return training, 0, [], None, rejected


def _start(config: RunConfig, features: FeatureSet, top: nn.Module | None,
           device: torch.device) -> _Training:
    """The initial state: torch's global RNG seeded with the run's seed, then the network
    (standardised by the training features), the loss module and Adam, all on `device`."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    model = networks.build_model(config, features.dim, top)
    model.set_standardisation(features.train.features)
    model.to(device)
    loss_fn = losses.LOSSES[config.loss](features.n_classes, config.dim_out, config.margin).to(device)
    optimizer = torch.optim.Adam(
        [*model.parameters(), *loss_fn.parameters()], lr=config.lr, weight_decay=config.weight_decay
    )
    return _Training(model, loss_fn, optimizer, generator)


def _state(training: _Training, rows: list[dict], device: torch.device) -> dict:
    """The checkpoint of `training` after the epochs of `rows` (`gslbench.checkpoints.STATE_KEYS`)."""
    state = {"model": training.model.state_dict(), "optimizer": training.optimizer.state_dict(),
             "loss": training.loss_fn.state_dict(), "generator": training.generator.get_state(),
             "rng": torch.get_rng_state(),
             "log": [[row["epoch"], row["sim_loss"], row["seconds"]] for row in rows]}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def _restore(training: _Training, state: dict, epochs: int, device: torch.device) -> list[dict]:
    """Put a checkpoint's state after `epochs` epochs into `training`; returns its log rows. The
    network's and the loss module's tensors are checked to fit before anything is changed."""
    rows = state["log"]
    if [row[0] for row in rows] != list(range(1, epochs + 1)):
        raise GslbenchError(f"its log does not hold epochs 1 to {epochs}")
    for name, module in (("model", training.model), ("loss", training.loss_fn)):
        mine, saved = module.state_dict(), state[name]
        if set(mine) != set(saved) or any(
                saved[key].shape != value.shape or saved[key].dtype != value.dtype
                for key, value in mine.items()):
            raise GslbenchError(f"its {name} tensors are not this run's")
    training.model.load_state_dict(state["model"])
    training.loss_fn.load_state_dict(state["loss"])
    training.optimizer.load_state_dict(state["optimizer"])
    training.generator.set_state(state["generator"])
    torch.set_rng_state(state["rng"])
    if device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return [{"epoch": int(epoch), "sim_loss": float(loss), "quant_mse": float("nan"),
             "quant_mse_refit": float("nan"), "seconds": float(seconds)}
            for epoch, loss, seconds in rows]


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


def _refit(config: RunConfig, quantizer: Quantizer, model: nn.Module,
           inputs: np.ndarray, epoch: int,
           on_refit: Callable[[int, nn.Module, Quantizer], None] | None) -> dict[str, float]:
    """Refit the codebooks once `epoch` epochs are trained, on the (n, d) float32 training
    representations, then call `on_refit`: after the last epoch by the final fit
    (`Quantizer.fit_final`, cold and to convergence, alike for every method), before it
    warm-started from the current codebooks. Returns the representations' quantization error under the
    codebooks before (`quant_mse`, NaN before the first fit) and after (`quant_mse_refit`)."""
    representations = networks.embed(model, inputs)
    before = quantizer.quantization_error(representations) if quantizer.is_fitted else float("nan")
    if epoch == config.epochs:
        quantizer.fit_final(representations)
    else:
        quantizer.fit(representations, warm_start=True)
    measured = {"quant_mse": before,
                "quant_mse_refit": quantizer.quantization_error(representations)}
    if on_refit is not None:
        on_refit(epoch, model, quantizer)
    return measured


def _build_method(config: RunConfig, quantizer: Quantizer | None) -> Method:
    """The run's method built on its quantizer; whatever its constructor raises (a plugin's
    bug) is one line naming the method."""
    try:
        return config.method_spec(config, quantizer)
    except GslbenchError:
        raise
    except Exception as exc:  # any error of the method's own code
        raise GslbenchError(f"--method {config.method}: the method cannot be built: "
                            f"{type(exc).__name__}: {' '.join(str(exc).split())}") from exc


def _method_terms(method: Method, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The method's `representation(z)` and `penalty(z)` of a (b, d) float32 batch, held to the
    contract every method (a plugin's too) must keep: a (b, d) float32 tensor and a scalar
    tensor; otherwise one line naming the method."""
    representation, penalty = method.representation(z), method.penalty(z)
    problem = (
        "its representation is not a tensor" if not isinstance(representation, torch.Tensor)
        else f"its representation of a {tuple(z.shape)} batch has shape "
             f"{tuple(representation.shape)}" if representation.shape != z.shape
        else f"its representation is {representation.dtype}, not {z.dtype}"
        if representation.dtype != z.dtype
        else "its penalty is not a tensor" if not isinstance(penalty, torch.Tensor)
        else f"its penalty has shape {tuple(penalty.shape)}, not a scalar's ()"
        if penalty.ndim != 0 else None)
    if problem:
        raise GslbenchError(f"--method {method.name}: {problem} (gslbench.methods.base.Method)")
    return representation, penalty


def train_step(model: EmbeddingNet, method: Method, loss_fn: nn.Module,
               optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor) -> float:
    """One optimizer step on a batch: x (b, dim_in) float32, labels (b, ...) its loss targets
    (`losses.loss_targets`: (b, C) uint8 multi-hot or (b, 1 + k) int64 neighbour rows).

    The similarity loss sees `method.representation(z)` and the method's penalty is added.
    Returns the similarity loss (float)."""
    z = model(x)
    representation, penalty = _method_terms(method, z)
    sim_loss = loss_fn(representation, labels)
    loss = sim_loss + penalty
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return sim_loss.item()


def _train_epoch(model: EmbeddingNet, method: Method, loss_fn: nn.Module,
                 optimizer: torch.optim.Optimizer, x: torch.Tensor, labels: torch.Tensor,
                 config: RunConfig, generator: torch.Generator) -> float:
    """One epoch of shuffled batches (`losses.batches`: with a neighbour of each item for data
    without labels); the mean similarity loss. A last batch of one item is skipped (pairwise
    losses need two)."""
    order = torch.randperm(len(x), generator=generator)
    batches = losses.batches(order, labels, config.batch_size, generator)
    values = [train_step(model, method, loss_fn, optimizer, x[batch], labels[batch])
              for batch in batches if len(batch) >= 2]
    return float(np.mean(values))
