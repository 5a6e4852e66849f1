"""The order of bench's cells: those others start from first (`gslbench.checkpoints`).

A cell whose first epochs are another cell's starts from the training state that cell saves in
RESULTS/checkpoints/: two-step from float's trained network, every other method from the
warm-up. `reuse_plan` names each such cell's producer (float first, then two-step, then one cell
per other warm-up); bench dispatches producers first (`producers_first`) and a dependent once it
is `ready`: its checkpoint is on disk, or its producer has finished (done or failed). Order is
only about cost: a cell that finds no checkpoint trains those epochs itself and saves them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gslbench.bench.executors import ExecutorConfig
from gslbench.checkpoints import Checkpoints, checkpoint_epochs, plain_epochs, plain_settings
from gslbench.config import RunConfig
from gslbench.devices import describe_device, resolve_device
from gslbench.storage import config_id
from gslbench.train import FeatureFile


@dataclass(frozen=True)
class Dependency:
    """A cell starts from the checkpoint that the cell `producer` (a run id) saves after `epochs`
    plain epochs, at `path` (None where bench cannot name it: fine-tuning cells, whose key holds
    the activation cache's sha256)."""

    producer: str
    epochs: int
    path: Path | None = None


def reuse_plan(cells: list[RunConfig]) -> dict[str, tuple[str, int]]:
    """For each cell of `cells` that starts from a checkpoint another of them saves: its run id ->
    (the producer's run id, the checkpoint's epochs).

    Cells are taken float first (plain to the end, unquantized), then two-step (plain to the end),
    then the others, each in the given order; each starts from the latest of its
    `checkpoint_epochs` that an earlier cell of the same plain settings saves, and becomes the
    producer of the later ones it saves itself."""
    writers: dict[tuple[str, int], str] = {}
    plan = {}
    for config in sorted(cells, key=producer_rank):
        settings, marks, start = config_id(plain_settings(config)), checkpoint_epochs(config), 0
        for epochs in reversed(marks):
            if (settings, epochs) in writers:
                plan[config.run_id], start = (writers[settings, epochs], epochs), epochs
                break
        for epochs in marks:
            if epochs > start:
                writers.setdefault((settings, epochs), config.run_id)
    return plan


def producer_rank(config: RunConfig) -> int:
    """0: float-like (plain to the end, no quantizer), 1: two-step-like, 2: the others."""
    return 2 if plain_epochs(config) < config.epochs else int(config.quantized)


def dependencies(todo: list[RunConfig], features: dict[tuple[str, str], FeatureFile | None],
                 results_dir: Path, executor: ExecutorConfig) -> dict[str, Dependency]:
    """`reuse_plan` of the cells to run, with the path of each checkpoint as a cell's worker will
    name it (its device and thread counts)."""
    configs = {config.run_id: config for config in todo}
    device = describe_device(resolve_device(executor.device))
    threads = {"torch": executor.threads, "faiss": executor.threads}
    found = {}
    for run_id, (producer, epochs) in reuse_plan(todo).items():
        config, path = configs[run_id], None
        if not config.train_blocks:
            path = Checkpoints.for_run(results_dir, config,
                                       features[config.dataset, config.feature].sha256, device,
                                       threads).path(epochs)
        found[run_id] = Dependency(producer, epochs, path)
    return found


def producers_first(todo: list[RunConfig], plan: dict[str, Dependency]) -> list[RunConfig]:
    """The cells in dispatch order: those others start from first (float, then two-step, then
    the others: `reuse_plan`'s order), then the rest in grid order."""
    producers = {dependency.producer for dependency in plan.values()}
    ranked = sorted((config for config in todo if config.run_id in producers), key=producer_rank)
    return ranked + [config for config in todo if config.run_id not in producers]


def ready(config: RunConfig, plan: dict[str, Dependency], finished: set[str]) -> bool:
    """Whether a cell may start: it starts from no other cell's checkpoint, or that checkpoint is
    on disk, or its producer has finished (done or failed: then the cell trains from scratch)."""
    dependency = plan.get(config.run_id)
    return (dependency is None or dependency.producer in finished
            or (dependency.path is not None and dependency.path.is_file()))
