"""The train, encode and evaluate steps on run directories (DESIGN.md sections 1 and 3).

A run directory `RESULTS/runs/RUN_ID/` holds, step by step:
`config.json`, `model.pt`, `quantizer.h5`, `train_log.csv` (train, written as a whole: the
directory is built under a temporary name and renamed), `codes.h5` (encode) and `metrics.json`
(evaluate, written last). Every file is written to a temporary name and renamed, so a killed step
leaves nothing that looks complete.
"""

from __future__ import annotations

import csv
import json
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from gslbench import evaluation
from gslbench.config import RunConfig
from gslbench.datasets import feature_path, get_dataset
from gslbench.errors import GslbenchError
from gslbench.featurefile import read_feature_file
from gslbench.quantizers import Identity, Quantizer, load_quantizer
from gslbench.storage import (
    atomic_path,
    open_h5,
    package_versions,
    read_json,
    set_format_attrs,
    sha256_file,
    write_json,
)
from gslbench.threads import thread_counts
from gslbench.training import build_model, embed, train

CODES_FORMAT = "gslbench.codes"
CODES_FORMAT_VERSION = 1
QUANTIZER_FORMAT = "gslbench.quantizer"


def runs_dir(results_dir: str | Path) -> Path:
    return Path(results_dir) / "runs"


def resolve_run(results_dir: str | Path, run: str | Path) -> Path:
    """A run given as a directory path or as a run id under RESULTS/runs; must hold config.json."""
    candidates = [Path(run), runs_dir(results_dir) / str(run)]
    for path in candidates:
        if (path / "config.json").is_file():
            return path
    raise GslbenchError(f"{run}: no such run directory (looked for config.json in "
                        f"{' and '.join(str(p) for p in candidates)})")


def load_config(run_dir: Path) -> tuple[RunConfig, dict]:
    """The run's RunConfig and the whole config.json record."""
    record = read_json(run_dir / "config.json")
    try:
        return RunConfig.from_dict(record["config"]), record
    except (KeyError, TypeError) as exc:
        raise GslbenchError(f"{run_dir / 'config.json'}: not a gslbench run config ({exc})") from None


def train_run(config: RunConfig, data_dir: str | Path, results_dir: str | Path,
              force: bool = False, show_progress: bool = True) -> Path:
    """Train one run and write its directory; an existing complete run is kept unless `force`."""
    get_dataset(config.dataset)
    run_dir = runs_dir(results_dir) / config.run_id
    if (run_dir / "config.json").is_file() and not force:
        return run_dir
    features_file = feature_path(data_dir, config.dataset, config.feature)
    if not features_file.is_file():
        raise GslbenchError(f"{features_file}: no such file; run `gslbench download {config.dataset}` "
                            f"and `gslbench features {config.dataset}` first")
    features = read_feature_file(features_file)
    result = train(config.resolved(), features, show_progress=show_progress)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{config.run_id}.", dir=run_dir.parent))
    retired = None
    try:
        torch.save({"state_dict": result.model.state_dict(), "dim_in": features.dim},
                   staging / "model.pt")
        if result.quantizer is not None:
            with h5py.File(staging / "quantizer.h5", "w") as handle:
                set_format_attrs(handle, QUANTIZER_FORMAT, 1)
                result.quantizer.save(handle.create_group("quantizer"))
        _write_log(staging / "train_log.csv", result.log)
        write_json(staging / "config.json", {
            "run": config.run_id,
            "config": config.to_dict(),
            "seed": config.seed,
            "features_file": str(features_file),
            "features_sha256": sha256_file(features_file),
            "source_sha256": features.source_sha256,
            "versions": package_versions(),
            "train_seconds": result.seconds,
            "threads": thread_counts(),
        })
        staging.chmod(0o755)  # mkdtemp creates 0700
        if run_dir.exists():  # --force: move the old run aside in one rename, never half-deleted
            retired = Path(tempfile.mkdtemp(prefix=f".{config.run_id}.", dir=run_dir.parent))
            run_dir.rename(retired / run_dir.name)
        staging.rename(run_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return run_dir


def _write_log(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _load_model(run_dir: Path, config: RunConfig):  # noqa: ANN202
    path = run_dir / "model.pt"
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; the run's training did not complete")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(config, int(saved["dim_in"]))
        model.load_state_dict(saved["state_dict"])
    except (RuntimeError, KeyError, EOFError, OSError) as exc:
        raise GslbenchError(f"{path}: corrupt or incompatible model file ({exc})") from None
    return model


def _load_run_quantizer(run_dir: Path, config: RunConfig) -> Quantizer | Identity:
    if not config.quantized:
        return Identity(config.dim_out)
    with open_h5(run_dir / "quantizer.h5", QUANTIZER_FORMAT, 1) as handle:
        return load_quantizer(handle["quantizer"])


def _run_features(run_dir: Path, config: RunConfig, record: dict, data_dir: str | Path):  # noqa: ANN202
    path = feature_path(data_dir, config.dataset, config.feature)
    if path.is_file() and sha256_file(path) != record["features_sha256"]:
        raise GslbenchError(f"{path}: feature file changed since run {config.run_id} was trained "
                            "(sha256 differs); re-train with --force")
    return path, read_feature_file(path)


def encode_run(run: str | Path, data_dir: str | Path, results_dir: str | Path,
               force: bool = False) -> Path:
    """Encode the database through the run's network and quantizer into RUN/codes.h5."""
    run_dir = resolve_run(results_dir, run)
    codes_path = run_dir / "codes.h5"
    if codes_path.is_file() and not force:
        return codes_path
    config, record = load_config(run_dir)
    model = _load_model(run_dir, config)
    quantizer = _load_run_quantizer(run_dir, config)
    features_file, features = _run_features(run_dir, config, record, data_dir)
    start = time.perf_counter()
    codes = quantizer.encode(embed(model, features.database.features))
    seconds = time.perf_counter() - start
    with atomic_path(codes_path) as tmp, h5py.File(tmp, "w") as handle:
        set_format_attrs(handle, CODES_FORMAT, CODES_FORMAT_VERSION)
        handle.create_dataset("codes", data=codes)
        handle.create_dataset("labels", data=features.database.labels)
        quantizer.save(handle.create_group("quantizer"))
        handle.attrs.update({
            "run": config.run_id, "method": config.method, "quantizer": quantizer.name,
            "M": quantizer.n_codebooks, "nbits": quantizer.sub_bits, "code_bits": quantizer.bits,
            "dim": quantizer.dim, "config": json.dumps(config.to_dict()),
            "features_sha256": record["features_sha256"], "encode_seconds": seconds,
        })
    return codes_path


def read_codes(path: Path) -> tuple[np.ndarray, np.ndarray, Quantizer, dict]:
    """Codes (n, code_bytes) uint8, labels (n, C) uint8, the quantizer and the attrs of codes.h5."""
    with open_h5(path, CODES_FORMAT, CODES_FORMAT_VERSION) as handle:
        codes, labels = handle["codes"][()], handle["labels"][()]
        quantizer = load_quantizer(handle["quantizer"])
        attrs = dict(handle.attrs)
    if codes.ndim != 2 or codes.dtype != np.uint8 or codes.shape[1] != quantizer.code_bytes:
        raise GslbenchError(f"{path}: /codes is {codes.dtype} {codes.shape}, the quantizer needs "
                            f"uint8 (n, {quantizer.code_bytes})")
    if labels.shape[0] != codes.shape[0]:
        raise GslbenchError(f"{path}: {labels.shape[0]} labels for {codes.shape[0]} codes")
    return codes, labels, quantizer, attrs


def evaluate_run(run: str | Path, data_dir: str | Path, results_dir: str | Path,
                 force: bool = False, map_at: tuple[int, ...] | None = None) -> Path:
    """Search the database codes by ADC with the run's queries; write RUN/metrics.json last."""
    run_dir = resolve_run(results_dir, run)
    metrics_path = run_dir / "metrics.json"
    if metrics_path.is_file() and not force:
        return metrics_path
    config, record = load_config(run_dir)
    codes_path = run_dir / "codes.h5"
    if not codes_path.is_file():
        raise GslbenchError(f"{codes_path}: no such file; run `gslbench encode {run_dir}` first")
    codes, database_labels, quantizer, attrs = read_codes(codes_path)
    model = _load_model(run_dir, config)
    _, features = _run_features(run_dir, config, record, data_dir)
    queries = embed(model, features.query.features)
    map_top = get_dataset(config.dataset).protocol.map_top
    metrics = evaluation.evaluate(
        quantizer, queries, features.query.labels, codes, database_labels,
        map_at=map_at or ((map_top,) if map_top else (100, 1000)),
    )
    metrics.update({
        "run": config.run_id, "search": "adc", "config": config.to_dict(),
        "map_top": map_top, "train_s": record["train_seconds"],
        "encode_s": float(attrs["encode_seconds"]), "eval_s": metrics["timings_s"]["total"],
        "versions": package_versions(), "features_sha256": record["features_sha256"],
        "codes_sha256": sha256_file(codes_path), "threads": thread_counts(),
    })
    write_json(metrics_path, metrics)
    return metrics_path
