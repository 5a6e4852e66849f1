"""The train step: train one run and write its directory (config.json, model.pt, quantizer.h5,
train_log.csv), as a whole: the directory is built under a temporary name and renamed into place,
so a killed step leaves nothing that looks complete (docs/design.md, sections 1 and 3).

config.json binds the run: its `run` is the hash of the config it holds and the directory's
name, and it records the sha256 of the feature file the run was trained on and of model.pt,
quantizer.h5 and train_log.csv. `check_trained` verifies all of it before a run is used or kept.
A run that fine-tunes the CNN's last N blocks reads the trunk's cached activations, computed
here first when missing (`gslbench.data.activations`), and config.json records their sha256.
It also records what the run computed: `epochs_trained` (the epochs trained here), `started_from`
(null, or {"checkpoint": id, "epoch": n}: the first n epochs came from a checkpoint another run
saved, `gslbench.checkpoints`) and `refits_not_computed` (two-step's log-only refits among those
n epochs, whose train_log.csv rows hold no quantization errors); `train_seconds` is the training
time of the whole result, the reused epochs at the time their producer measured.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gslbench import layout
from gslbench.checkpoints import Checkpoints
from gslbench.config import RunConfig
from gslbench.data import feature_path, get_dataset
from gslbench.data.activations import ensure_activations, open_activations
from gslbench.data.featurefile import FeatureSet, feature_file_sha256, items_record, read_feature_file
from gslbench.devices import describe_cpu, describe_device, resolve_device
from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.methods.loop import TrainResult, train
from gslbench.quantizers import Quantizer, load_quantizer, save_quantizer
from gslbench.storage import (
    check_sha256,
    config_id,
    open_h5,
    os_reason,
    package_versions,
    read_json,
    sha256_file,
    write_bytes,
    write_h5,
    write_json,
    write_text,
)
from gslbench.threads import thread_counts

if TYPE_CHECKING:
    from torch import nn

    from gslbench.data.finetuning import Top
    from gslbench.methods.model import EmbeddingNet, FineTunedNet

torch = lazy_import("torch")
# modules whose classes subclass torch's: loaded when a run trains or is read
finetuning = lazy_import("gslbench.data.finetuning")
networks = lazy_import("gslbench.methods.model")

QUANTIZER_FORMAT = "gslbench.quantizer"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureFile:
    """A feature file and the sha256 of its bytes (what config.json records)."""

    path: Path
    sha256: str

    @classmethod
    def of(cls, path: Path) -> FeatureFile:
        if not path.is_file():
            raise GslbenchError(f"{path}: no such file; run `gslbench download {path.parent.name}` "
                                f"and `gslbench features {path.parent.name}` first")
        return cls(path, feature_file_sha256(path))


def run_features(config: RunConfig, data_dir: str | Path) -> FeatureFile:
    """The feature file a run of `config` reads, with its sha256."""
    return FeatureFile.of(feature_path(data_dir, config.dataset, config.feature))


def train_run(config: RunConfig, data_dir: str | Path, results_dir: str | Path,
              force: bool = False, show_progress: bool = True, device: str = "auto",
              reuse: bool = True,
              on_refit: Callable[[int, nn.Module, Quantizer], None] | None = None
              ) -> layout.RunDir:
    """Train one run on `device` (`gslbench.devices`) and write its directory.

    An existing run is kept (unless `force`) when `check_trained` passes: bound to its config and
    made from the current feature file; a damaged or stale one is trained again, with a warning.
    reuse: start from the plain training state another run saved under RESULTS/checkpoints/ and
    save those this run passes through (`gslbench.checkpoints`; bit-identical results);
    config.json records `epochs_trained` and `started_from`. on_refit: as
    `gslbench.methods.loop.train`'s (tuning's pruning; an exception it raises stops the run,
    which writes nothing).
    """
    config = config.resolved()  # the settings the run uses (pca: no training settings)
    get_dataset(config.dataset, data_dir)
    torch_device = resolve_device(device)
    run = layout.run_dir(results_dir, config.run_id)
    features_file = run_features(config, data_dir)
    restore_run(run)  # also before --force: its restore removes the older hidden copy
    if not force:
        if run.path.exists():
            try:
                check_trained(run, features_file)
                return run
            except GslbenchError as exc:
                log.warning("%s; training run %s again", exc, run.run_id)
    features = read_feature_file(features_file.path, config.split, config.protocol,
                                 config.unseen, config.draw)
    if (features.dataset, features.feature) != (config.dataset, config.feature):
        raise GslbenchError(f"{features_file.path}: holds {features.dataset}/{features.feature}, "
                            f"not {config.dataset}/{config.feature}")
    extra = {"device": describe_device(torch_device), "cpu": describe_cpu(),
             "map_top": get_dataset(config.dataset, data_dir).protocol.map_top}
    saved = {"dim_in": features.dim}
    top, inputs = None, None
    if config.train_blocks:
        activations, top, inputs = _fine_tuning_inputs(config, data_dir, features, torch_device)
        extra.update(activations_file=str(activations), activations_sha256=sha256_file(activations))
        saved.update(backbone=str(features.extra_attrs["backbone"]),
                     image_size=int(features.extra_attrs["image_size"]))
    checkpoints = Checkpoints.for_run(
        results_dir, config, features_file.sha256, extra["device"], thread_counts(),
        extra.get("activations_sha256")) if reuse else None
    result = train(config, features, show_progress=show_progress, top=top,
                   inputs=inputs, device=torch_device, on_refit=on_refit, checkpoints=checkpoints)
    try:
        _write_run(run, config, result, features, features_file, saved, extra)
    except OSError as exc:
        raise GslbenchError(f"{run.path}: cannot write the run ({os_reason(exc)})") from None
    return run


def _write_run(run: layout.RunDir, config: RunConfig, result: TrainResult, features: FeatureSet,
               features_file: FeatureFile, saved: dict, extra: dict) -> None:
    """Write the run under a temporary name (config.json last, with the sha256 of the other
    files and `extra`), then rename it into place, moving an older run aside first (`--force`).
    saved: what model.pt holds beside the weights (dim_in; backbone and image size when
    fine-tuned)."""
    run.path.parent.mkdir(parents=True, exist_ok=True)
    staging = layout.RunDir(Path(tempfile.mkdtemp(prefix=layout.staging_prefix(config.run_id),
                                                  dir=run.path.parent)))
    retired = None
    try:
        buffer = io.BytesIO()
        state = {name: tensor.cpu() for name, tensor in result.model.state_dict().items()}
        torch.save({"state_dict": state, **saved}, buffer)
        write_bytes(staging.model, buffer.getbuffer())
        if result.quantizer is not None:
            with write_h5(staging.quantizer, QUANTIZER_FORMAT, 1) as handle:
                save_quantizer(result.quantizer, handle.create_group("quantizer"))
        write_text(staging.train_log, _log_text(result.log))
        write_json(staging.config, {
            "run": config.run_id,
            "config": config.to_dict(),
            "label": config.label,
            "seed": config.seed,
            "features_file": str(features_file.path),
            "features_sha256": features_file.sha256,
            "source_sha256": features.source_sha256,
            "train_items": items_record(features.train),
            "model_sha256": sha256_file(staging.model),
            "quantizer_sha256": sha256_file(staging.quantizer) if result.quantizer else None,
            "train_log_sha256": sha256_file(staging.train_log),
            **extra,
            "versions": package_versions(),
            "train_seconds": result.seconds,
            "epochs_trained": result.epochs_trained,
            "started_from": result.started_from,
            "refits_not_computed": result.refits_not_computed,
            "threads": thread_counts(),
        })
        staging.path.chmod(0o755)  # mkdtemp creates 0700
        if run.path.exists():  # --force: move the old run aside in one rename, never half-deleted
            retired = Path(tempfile.mkdtemp(prefix=layout.staging_prefix(config.run_id),
                                            dir=run.path.parent))
            run.path.rename(retired / run.run_id)
        # killed here, the run is under temporary names only: `restore_run` puts it back
        staging.path.rename(run.path)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)


def _fine_tuning_inputs(config: RunConfig, data_dir: str | Path, features: FeatureSet,
                        device: torch.device) -> tuple[Path, Top, np.ndarray]:
    """The activation cache (computed if missing), the CNN's trainable top, and the training
    items' (n_train, C, H, W) float32 activations."""
    path = ensure_activations(data_dir, config.dataset, config.feature, config.train_blocks, device)
    with open_activations(path, features, config.train_blocks) as parts:
        inputs = parts["train"][()]
    _, top = finetuning.split_network(str(features.extra_attrs["backbone"]),
                           int(features.extra_attrs["image_size"]), config.train_blocks)
    return path, top, inputs


def _log_text(rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def restore_run(run: layout.RunDir) -> None:
    """Put a run back in place when its directory is missing but a `train --force` killed between
    its two renames left a complete copy under a temporary name (the new run `.RUN.*`, or the old
    one moved aside to `.RUN.*/RUN`): the newest copy that passes `check_trained` is renamed back
    and the other complete copies (the run the killed --force replaced) are removed with their
    temporary directories, so that none stays hidden. Called by train (also with --force) and by
    bench (under its lock) before leftovers are removed."""
    if run.path.exists():
        return
    copies = []
    for leftover in run.path.parent.glob(f"{layout.staging_prefix(run.run_id)}*"):
        for candidate in (layout.RunDir(leftover), layout.RunDir(leftover / run.run_id)):
            try:
                check_trained(candidate, run_id=run.run_id)
            except GslbenchError:
                continue
            copies.append((candidate, leftover))
    if copies:
        newest = max(copies, key=lambda copy: copy[0].config.stat().st_mtime_ns)[0]
        newest.path.rename(run.path)
        log.warning("%s: restored from %s, left there by a killed train --force", run.path,
                    newest.path)
        for _, leftover in copies:
            shutil.rmtree(leftover, ignore_errors=True)  # the restored copy's is gone or empty


def load_config(run: layout.RunDir, run_id: str | None = None) -> tuple[RunConfig, dict]:
    """The run's RunConfig and the whole config.json record, checked to be bound to the run: the
    config is valid and canonical, and its hash is the recorded run id and the directory's name
    (`run_id`, when the directory is a temporary copy)."""
    run_id = run_id or run.run_id
    record = read_json(run.config)
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise GslbenchError(f"{run.config}: not a gslbench run config (no 'config' record)")
    try:
        config = RunConfig.from_dict(record["config"])
    except GslbenchError as exc:
        raise GslbenchError(f"{run.config}: {exc}") from None
    found = config_id(record["config"])
    if found != run_id or config.run_id != run_id or config.to_dict() != record["config"]:
        raise GslbenchError(f"{run.config}: its config hashes to run id {found}, not to {run_id}, "
                            "its directory's (edited by hand, or copied from another run)")
    if record.get("run") != run_id:
        raise GslbenchError(f"{run.config}: records run {record.get('run')!r}, but its config and "
                            f"directory are run {run_id}")
    for name, kind in (("features_sha256", str), ("train_seconds", float)):
        _check_field(record, name, kind, run.config)
    return config, record


def _check_field(record: dict, name: str, kind: type, path: Path) -> None:
    value = record.get(name)
    ok = (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
          and value >= 0) if kind is float else isinstance(value, kind)
    if not ok:
        raise GslbenchError(f"{path}: {name!r} is {value!r}, expected a {kind.__name__}")


def check_trained(run: layout.RunDir, features: FeatureFile | None = None,
                  run_id: str | None = None) -> tuple[RunConfig, dict]:
    """The run's config and config.json record, after checking that the run is complete and bound:
    `load_config`, then model.pt, quantizer.h5 (quantized runs) and train_log.csv have the sha256
    config.json records and, given `features`, the run was trained on that very feature file.
    Anything else is a user error naming the file and what does not match."""
    config, record = load_config(run, run_id)
    files = [("model_sha256", run.model), ("train_log_sha256", run.train_log)]
    if config.quantized:
        files.append(("quantizer_sha256", run.quantizer))
    for key, path in files:
        check_sha256(path, record.get(key), run.config)
    check_trained_on(record, features)
    return config, record


def check_trained_on(record: dict, features: FeatureFile | None) -> None:
    """Given `features`, the run whose config.json record is `record` was trained on that very
    feature file (a user error otherwise: the run is stale)."""
    if features is not None and record["features_sha256"] != features.sha256:
        raise GslbenchError(f"{features.path}: changed since run {record['run']} was trained on "
                            f"it (sha256 {features.sha256[:12]}, the run records "
                            f"{record['features_sha256'][:12]}): the run is stale")


def load_model(run: layout.RunDir, config: RunConfig, dim_in: int) -> EmbeddingNet | FineTunedNet:
    """The run's trained network from model.pt, for (n, dim_in) features; for a fine-tuned run,
    the CNN's top rebuilt for its backbone and image size under the head. Only plain weights are
    read (no pickled code is executed); anything else, weights that do not fit the run's network
    and non-finite weights are user errors."""
    if not run.model.is_file():
        raise GslbenchError(f"{run.model}: no such file; the run's training did not complete")
    try:
        saved: Any = torch.load(run.model, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable or refused content: never say how to force it
        raise GslbenchError(f"{run.model}: not a gslbench model (not plain saved weights: "
                            f"{type(exc).__name__})") from None
    if not (isinstance(saved, dict) and isinstance(saved.get("state_dict"), dict)
            and isinstance(saved.get("dim_in"), int)):
        raise GslbenchError(f"{run.model}: not a gslbench model (no state_dict and dim_in)")
    if saved["dim_in"] != dim_in:
        raise GslbenchError(f"{run.model}: takes {saved['dim_in']}-d features, the feature file "
                            f"has {dim_in}-d ones")
    top = None
    if config.train_blocks:
        if not (isinstance(saved.get("backbone"), str) and isinstance(saved.get("image_size"), int)):
            raise GslbenchError(f"{run.model}: not a fine-tuned gslbench model (no backbone and "
                                "image_size)")
        top = finetuning.split_network(saved["backbone"], saved["image_size"], config.train_blocks)[1]
    model = networks.build_model(config, dim_in, top)
    try:
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, TypeError, ValueError, KeyError, AttributeError):
        raise GslbenchError(f"{run.model}: its weights do not fit the run's network (hidden "
                            f"{config.hidden}, dim_out {config.dim_out})") from None
    if not all(torch.isfinite(value).all() for value in model.state_dict().values()):
        raise GslbenchError(f"{run.model}: holds non-finite weights (NaN or inf)")
    return model


def load_run_quantizer(run: layout.RunDir) -> Quantizer:
    """The run's fitted quantizer from quantizer.h5 (codebooks checked finite)."""
    with open_h5(run.quantizer, QUANTIZER_FORMAT, 1) as handle:
        if "quantizer" not in handle:
            raise GslbenchError(f"{run.quantizer}: no /quantizer group")
        return load_quantizer(handle["quantizer"])
