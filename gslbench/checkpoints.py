"""Training states that other runs start from: RESULTS/checkpoints/ID.ckpt.

A run's training is *plain* while its loss is the similarity loss alone and it draws no random
numbers of its own: float's for every epoch, two-step's too (it trains float's network and fits its
codebooks afterwards) and GSL's at α = 0 (nothing snaps), every other built-in method's for its
warm-up (its loss changes at the first codebook fit). Two runs whose plain training shares
everything that determines it reach the same state after the same number of plain epochs, bit for
bit, so the later one starts from the state the earlier one saved (`gslbench.methods.loop`) instead
of computing it again.

A checkpoint is keyed by everything that determines that state (`Checkpoints.key`): the run
settings that are neither the method, its knobs, the quantizer's nor the epoch count (data set,
feature, split, network, loss, optimizer, batch size, seed, and any setting added later), the
feature file's sha256 (and the activation cache's when fine-tuning), the device, the instruction
set of torch's CPU kernels (AVX2, AVX512, ...: another kind of CPU trains to other bits, so a
results folder moved to one, or Ray on mixed nodes, trains its warm-ups again rather than start
from another CPU's), the torch and faiss thread counts and torch's version (results are
reproducible at fixed threads, device and CPU kind, `gslbench.threads`), and the epochs done. Its
file name is the hash of that key, so a run finds it without a directory listing, and bench workers
and Ray tasks share it through the results folder.

The file is one JSON line (the record: format, version, the checkpoint id, the key, the epochs
and the payload's size and sha256), then the payload, `torch.save` of plain tensors and numbers
(read back with `weights_only`, so no pickled code runs) that also holds the checkpoint id: the
state says which training it is of, so another training's payload (another seed's, say) under a
valid record is refused. It is written atomically (temporary
name, then rename). On read the record must be bound to the key asked for and the payload must
have its size and sha256: a damaged, truncated, forged or foreign checkpoint (made from another
feature file, say) is never used; a warning says why, and the run trains those epochs itself
and writes the checkpoint again. Deleting RESULTS/checkpoints/ loses nothing but time.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gslbench.config import DEFAULTS, QUANTIZER_FIELDS, SETTINGS, RunConfig
from gslbench.errors import GslbenchError
from gslbench.layout import checkpoints_dir
from gslbench.storage import os_reason, write_bytes

FORMAT = "gslbench.checkpoint"
VERSION = 2  # 2: the payload holds its checkpoint id
SUFFIX = ".ckpt"
ID_HEX = 16  # hex digits of a checkpoint id
# Run settings that do not shape plain training: the method and the quantizer's (they act from
# the first codebook fit on) and the epoch count (there is no learning-rate schedule)
NOT_PLAIN = ("method", "epochs", *QUANTIZER_FIELDS)
# What a saved state holds (`gslbench.methods.loop` fills it): the network's, the optimizer's
# and the loss module's state_dicts, the batch generator's and torch's global RNG states
# (uint8 tensors; `cuda_rng` too on a CUDA device) and the plain epochs' log rows
# [[epoch, sim_loss, seconds], ...]
STATE_KEYS = ("model", "optimizer", "loss", "generator", "rng", "log")

log = logging.getLogger(__name__)


def plain_settings(config: RunConfig) -> dict[str, Any]:
    """The settings of `config` (resolved) that determine its plain training: every shared
    setting but `NOT_PLAIN`. Two runs with the same ones train the same plain epochs."""
    resolved = config.resolved()
    return {setting.name: getattr(resolved, setting.name) for setting in SETTINGS
            if setting.name not in NOT_PLAIN}


def plain_epochs(config: RunConfig) -> int:
    """The epochs of `config`'s training that are float's (its plain epochs): all of them
    where its method's `plain` holds for its knobs (float, two-step, GSL at α = 0), the
    warm-up for one whose `plain_warmup` holds, else none."""
    spec = config.method_spec
    if spec.plain(vars(config.resolved())):
        return config.epochs
    return config.warmup_epochs if spec.plain_warmup and config.quantized else 0


def checkpoint_epochs(config: RunConfig) -> list[int]:
    """The epoch counts at which `config`'s run looks for, and saves, its plain training state,
    in increasing order: the common warm-up (the default `warmup_epochs`), its own warm-up and
    its last epoch, those within its plain epochs."""
    plain = plain_epochs(config)
    wanted = {DEFAULTS["warmup_epochs"], config.epochs,
              config.warmup_epochs if config.quantized else 0}
    return sorted(epochs for epochs in wanted if 0 < epochs <= plain)


@dataclass(frozen=True)
class Checkpoints:
    """The checkpoints of one plain training: where they live and what determines them (the
    key, without the epochs)."""

    folder: Path
    key: Mapping[str, Any]

    @classmethod
    def for_run(cls, results_dir: str | Path, config: RunConfig, features_sha256: str,
                device: Mapping[str, str], threads: Mapping[str, int],
                activations_sha256: str | None = None) -> Checkpoints:
        """The checkpoints of `config`'s plain training on the feature file of sha256
        `features_sha256` (and the activation cache of `activations_sha256` when fine-tuning),
        on `device` (`gslbench.devices.describe_device`) with `threads` torch/faiss threads
        (`gslbench.threads.thread_counts`)."""
        torch = _torch()
        key = {"settings": plain_settings(config), "features_sha256": features_sha256,
               "activations_sha256": activations_sha256, "device": dict(device),
               "kernels": torch.backends.cpu.get_cpu_capability(), "threads": dict(threads),
               "torch": torch.__version__}
        return cls(checkpoints_dir(results_dir), key)

    def record(self, epochs: int) -> dict[str, Any]:
        """The whole key of the state after `epochs` plain epochs."""
        return {**self.key, "epochs": epochs}

    def checkpoint_id(self, epochs: int) -> str:
        """16 hex digits of the sha256 of `record(epochs)`'s canonical JSON."""
        text = json.dumps(self.record(epochs), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:ID_HEX]

    def path(self, epochs: int) -> Path:
        """RESULTS/checkpoints/ID.ckpt."""
        return self.folder / f"{self.checkpoint_id(epochs)}{SUFFIX}"

    def load(self, epochs: int) -> dict[str, Any] | None:
        """The state saved after `epochs` plain epochs (`STATE_KEYS`), or None when there is
        none or it cannot be used (logged as a warning: it is computed again)."""
        path = self.path(epochs)
        if not path.is_file():
            return None
        try:
            return self._read(path, epochs)
        except GslbenchError as exc:
            log.warning("%s; training those %d epochs again", exc, epochs)
            return None

    def _read(self, path: Path, epochs: int) -> dict[str, Any]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise GslbenchError(f"{path}: cannot read the checkpoint ({os_reason(exc)})") from None
        line, _, payload = data.partition(b"\n")
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise GslbenchError(f"{path}: not a gslbench checkpoint (no {FORMAT} record)")
        if record.get("version") != VERSION:
            raise GslbenchError(f"{path}: unsupported checkpoint version {record.get('version')!r}")
        if record.get("key") != self.record(epochs) or record.get("checkpoint") != path.stem:
            raise GslbenchError(f"{path}: made for another training than the one asked for "
                                f"({_difference(record.get('key'), self.record(epochs))})")
        if (len(payload) != record.get("size")
                or hashlib.sha256(payload).hexdigest() != record.get("sha256")):
            raise GslbenchError(f"{path}: its content does not match the size and sha256 it "
                                "records (truncated or damaged)")
        try:
            state = _torch().load(io.BytesIO(payload), map_location="cpu", weights_only=True)
        except Exception as exc:  # any refused or unreadable payload: not ours
            raise GslbenchError(f"{path}: not a readable checkpoint ({type(exc).__name__})") from None
        if not isinstance(state, dict) or not set(STATE_KEYS) <= set(state):
            raise GslbenchError(f"{path}: incomplete checkpoint (no {', '.join(STATE_KEYS)})")
        if state.get("checkpoint") != path.stem:
            raise GslbenchError(f"{path}: holds the state of another training (checkpoint "
                                f"{state.get('checkpoint')!r}) under this one's record")
        return state

    def save(self, epochs: int, state: Mapping[str, Any]) -> None:
        """Write the state after `epochs` plain epochs (`STATE_KEYS`), atomically. A checkpoint
        that cannot be written is a warning, not an error: the run's result does not need it."""
        path = self.path(epochs)
        buffer = io.BytesIO()
        _torch().save({**state, "checkpoint": path.stem}, buffer)
        payload = buffer.getvalue()
        record = {"format": FORMAT, "version": VERSION, "checkpoint": path.stem,
                  "key": self.record(epochs), "size": len(payload),
                  "sha256": hashlib.sha256(payload).hexdigest()}
        try:
            write_bytes(path, json.dumps(record, sort_keys=True).encode() + b"\n" + payload)
        except GslbenchError as exc:
            log.warning("%s; the run goes on without saving this checkpoint", exc)


def _torch() -> Any:
    """torch, imported when a checkpoint is made, read or written (not by bench's planning)."""
    import torch

    return torch


def _difference(found: Any, wanted: Mapping[str, Any]) -> str:
    """What differs between a checkpoint's recorded key and the one wanted: `features_sha256`."""
    if not isinstance(found, dict):
        return "no key recorded"
    names = sorted(name for name in {*found, *wanted} if found.get(name) != wanted.get(name))
    return "differs in " + ", ".join(names)
