"""The train step: train one run and write its directory (config.json, model.pt, quantizer.h5,
train_log.csv), as a whole: the directory is built under a temporary name and renamed into place,
so a killed step leaves nothing that looks complete (DESIGN.md sections 1 and 3). A run that
fine-tunes the CNN's last N blocks reads the trunk's cached activations, computed here first
when missing (`gslbench.data.activations`)."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import h5py
import numpy as np
import torch

from gslbench import layout
from gslbench.config import RunConfig
from gslbench.data import feature_path, get_dataset
from gslbench.data.activations import ensure_activations, open_activations
from gslbench.data.backbones import Top, split_network
from gslbench.data.featurefile import FeatureSet, read_feature_file
from gslbench.devices import describe_device, resolve_device
from gslbench.errors import GslbenchError
from gslbench.methods.loop import train
from gslbench.methods.model import EmbeddingNet, FineTunedNet, build_model
from gslbench.quantizers import Quantizer, load_quantizer, save_quantizer
from gslbench.storage import open_h5, package_versions, read_json, set_format_attrs, sha256_file, write_json
from gslbench.threads import thread_counts

QUANTIZER_FORMAT = "gslbench.quantizer"


def train_run(config: RunConfig, data_dir: str | Path, results_dir: str | Path,
              force: bool = False, show_progress: bool = True,
              device: str = "auto") -> layout.RunDir:
    """Train one run on `device` (`gslbench.devices`) and write its directory; an existing
    complete run is kept unless `force`."""
    get_dataset(config.dataset, data_dir)
    torch_device = resolve_device(device)
    run = layout.run_dir(results_dir, config.run_id)
    if run.config.is_file() and not force:
        return run
    features_file = feature_path(data_dir, config.dataset, config.feature)
    if not features_file.is_file():
        raise GslbenchError(f"{features_file}: no such file; run `gslbench download {config.dataset}` "
                            f"and `gslbench features {config.dataset}` first")
    features = read_feature_file(features_file)
    fine_tuning, saved = {}, {"dim_in": features.dim}
    top, inputs = None, None
    if config.train_blocks:
        activations, top, inputs = _fine_tuning_inputs(config, data_dir, features, torch_device)
        fine_tuning = {"activations_file": str(activations),
                       "activations_sha256": sha256_file(activations)}
        saved.update(backbone=str(features.extra_attrs["backbone"]),
                     image_size=int(features.extra_attrs["image_size"]))
    result = train(config.resolved(), features, show_progress=show_progress, top=top,
                   inputs=inputs, device=torch_device)
    run.path.parent.mkdir(parents=True, exist_ok=True)
    staging = layout.RunDir(Path(tempfile.mkdtemp(prefix=layout.staging_prefix(config.run_id),
                                                  dir=run.path.parent)))
    retired = None
    try:
        state = {name: tensor.cpu() for name, tensor in result.model.state_dict().items()}
        torch.save({"state_dict": state, **saved}, staging.model)
        if result.quantizer is not None:
            with h5py.File(staging.quantizer, "w") as handle:
                set_format_attrs(handle, QUANTIZER_FORMAT, 1)
                save_quantizer(result.quantizer, handle.create_group("quantizer"))
        _write_log(staging.train_log, result.log)
        write_json(staging.config, {
            "run": config.run_id,
            "config": config.to_dict(),
            "label": config.label,
            "seed": config.seed,
            "features_file": str(features_file),
            "features_sha256": sha256_file(features_file),
            **fine_tuning,
            "source_sha256": features.source_sha256,
            "map_top": get_dataset(config.dataset, data_dir).protocol.map_top,
            "versions": package_versions(),
            "train_seconds": result.seconds,
            "threads": thread_counts(),
            "device": describe_device(torch_device),
        })
        staging.path.chmod(0o755)  # mkdtemp creates 0700
        if run.path.exists():  # --force: move the old run aside in one rename, never half-deleted
            retired = Path(tempfile.mkdtemp(prefix=layout.staging_prefix(config.run_id),
                                            dir=run.path.parent))
            run.path.rename(retired / run.run_id)
        staging.path.rename(run.path)
    finally:
        shutil.rmtree(staging.path, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return run


def _fine_tuning_inputs(config: RunConfig, data_dir: str | Path, features: FeatureSet,
                        device: torch.device) -> tuple[Path, Top, np.ndarray]:
    """The activation cache (computed if missing), the CNN's trainable top, and the training
    items' (n_train, C, H, W) float32 activations."""
    path = ensure_activations(data_dir, config.dataset, config.feature, config.train_blocks, device)
    with open_activations(path, features, config.train_blocks) as parts:
        inputs = parts["train"][()]
    _, top = split_network(str(features.extra_attrs["backbone"]),
                           int(features.extra_attrs["image_size"]), config.train_blocks)
    return path, top, inputs


def _write_log(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def load_config(run: layout.RunDir) -> tuple[RunConfig, dict]:
    """The run's RunConfig and the whole config.json record."""
    record = read_json(run.config)
    try:
        return RunConfig.from_dict(record["config"]), record
    except (KeyError, TypeError) as exc:
        raise GslbenchError(f"{run.config}: not a gslbench run config ({exc})") from None


def load_model(run: layout.RunDir, config: RunConfig) -> EmbeddingNet | FineTunedNet:
    """The run's trained network from model.pt (weights only: no pickled code is executed); for
    a fine-tuned run, the CNN's top rebuilt for its backbone and image size under the head."""
    if not run.model.is_file():
        raise GslbenchError(f"{run.model}: no such file; the run's training did not complete")
    try:
        saved = torch.load(run.model, map_location="cpu", weights_only=True)
        top = (split_network(saved["backbone"], int(saved["image_size"]), config.train_blocks)[1]
               if config.train_blocks else None)
        model = build_model(config, int(saved["dim_in"]), top)
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError, EOFError, OSError) as exc:
        raise GslbenchError(f"{run.model}: corrupt or incompatible model file ({exc})") from None
    return model


def load_run_quantizer(run: layout.RunDir) -> Quantizer:
    """The run's fitted quantizer from quantizer.h5."""
    with open_h5(run.quantizer, QUANTIZER_FORMAT, 1) as handle:
        return load_quantizer(handle["quantizer"])
