"""The encode step and the codes file `RUN/codes.h5`: everything `evaluate` reads.

Format `gslbench.codes`, version 2 (DESIGN.md section 3):

    /codes                    (n_db, code_bytes) uint8   packed codes of the database
    /labels                   (n_db, C) uint8            database labels (multi-hot)
    /query/representations    (n_query, d) float32       the queries through the run's network
    /query/labels             (n_query, C) uint8
    /quantizer/...            the quantizer (`gslbench.quantizers.io`)
    attrs: run, method, label, quantizer, M, nbits, code_bits, dim, config (JSON), map_at (JSON
           list of the protocol's K), map_top (0: mAP over the whole database), train_seconds,
           encode_seconds, features_sha256, model_sha256, devices (JSON: {"train", "encode"},
           each as config.json's "device"); a fine-tuned run also activations_sha256

Version 1 files (database codes only) are refused with the advice to encode again.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from gslbench import layout
from gslbench.config import RunConfig
from gslbench.data import get_dataset
from gslbench.data.activations import open_activations
from gslbench.data.featurefile import read_feature_file
from gslbench.devices import describe_device, resolve_device
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import MAP_AT
from gslbench.methods.model import embed
from gslbench.quantizers import Identity, Quantizer, load_quantizer, save_quantizer
from gslbench.storage import atomic_path, open_h5, set_format_attrs, sha256_file
from gslbench.train import load_config, load_model, load_run_quantizer

FORMAT = "gslbench.codes"
FORMAT_VERSION = 2


@dataclass(frozen=True)
class Codes:
    """A codes file's content: database codes (n, code_bytes) uint8 and labels (n, C) uint8,
    query representations (nq, d) float32 and labels (nq, C) uint8, the quantizer, the attrs."""

    codes: np.ndarray
    labels: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray
    quantizer: Quantizer | Identity
    attrs: dict


def encode_run(run: str | Path, data_dir: str | Path, results_dir: str | Path,
               force: bool = False, device: str = "auto") -> Path:
    """Encode the database and embed the queries through the run's network, on `device`, into
    RUN/codes.h5. A fine-tuned run embeds the trunk's cached activations through its top."""
    run_dir = layout.resolve_run(results_dir, run)
    if run_dir.codes.is_file() and not force:
        return run_dir.codes
    config, record = load_config(run_dir)
    torch_device = resolve_device(device)
    model = load_model(run_dir, config).to(torch_device)
    quantizer = load_run_quantizer(run_dir) if config.quantized else Identity(config.dim_out)
    path = layout.feature_path(data_dir, config.dataset, config.feature)
    features = read_feature_file(_checked_input(path, record["features_sha256"], config))
    start = time.perf_counter()
    if config.train_blocks:
        path = layout.activations_path(data_dir, config.dataset, config.feature, config.train_blocks)
        _checked_input(path, record["activations_sha256"], config)
        with open_activations(path, features, config.train_blocks) as parts:
            database, queries = embed(model, parts["database"]), embed(model, parts["query"])
    else:
        database = embed(model, features.database.features)
        queries = embed(model, features.query.features)
    codes = quantizer.encode(database)
    seconds = time.perf_counter() - start
    map_top = get_dataset(config.dataset, data_dir).protocol.map_top
    with atomic_path(run_dir.codes) as tmp, h5py.File(tmp, "w") as handle:
        set_format_attrs(handle, FORMAT, FORMAT_VERSION)
        handle.create_dataset("codes", data=codes)
        handle.create_dataset("labels", data=features.database.labels)
        handle.create_dataset("query/representations", data=queries)
        handle.create_dataset("query/labels", data=features.query.labels)
        save_quantizer(quantizer, handle.create_group("quantizer"))
        handle.attrs.update({
            "run": config.run_id, "method": config.method, "label": config.label,
            "quantizer": quantizer.name, "M": quantizer.n_codebooks, "nbits": quantizer.sub_bits,
            "code_bits": quantizer.bits, "dim": quantizer.dim,
            "config": json.dumps(config.to_dict()),
            "map_at": json.dumps(list((map_top,) if map_top else MAP_AT)), "map_top": map_top or 0,
            "train_seconds": record["train_seconds"], "encode_seconds": seconds,
            "features_sha256": record["features_sha256"], "model_sha256": sha256_file(run_dir.model),
            "devices": json.dumps({"train": record.get("device"),
                                   "encode": describe_device(torch_device)}),
            **({"activations_sha256": record["activations_sha256"]} if config.train_blocks else {}),
        })
    return run_dir.codes


def _checked_input(path: Path, sha256: str, config: RunConfig) -> Path:
    """The run's feature file or activation cache, checked to be the one it was trained on."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; the run {config.run_id} was trained on it")
    if sha256_file(path) != sha256:
        raise GslbenchError(f"{path}: changed since run {config.run_id} was trained "
                            "(sha256 differs); re-train with --force")
    return path


def read_codes(path: Path) -> Codes:
    """Read and check a codes file (shapes, dtypes, row counts)."""
    with open_h5(path, FORMAT, FORMAT_VERSION) as handle:
        if int(handle.attrs["format_version"]) < FORMAT_VERSION:
            raise GslbenchError(f"{path}: written by an older gslbench (format_version "
                                f"{int(handle.attrs['format_version'])}, without the queries); "
                                "run `gslbench encode RUN --force`")
        codes = Codes(handle["codes"][()], handle["labels"][()],
                      handle["query/representations"][()], handle["query/labels"][()],
                      load_quantizer(handle["quantizer"]), dict(handle.attrs))
    if codes.codes.ndim != 2 or codes.codes.dtype != np.uint8 \
            or codes.codes.shape[1] != codes.quantizer.code_bytes:
        raise GslbenchError(f"{path}: /codes is {codes.codes.dtype} {codes.codes.shape}, the "
                            f"quantizer needs uint8 (n, {codes.quantizer.code_bytes})")
    if len(codes.labels) != len(codes.codes):
        raise GslbenchError(f"{path}: {len(codes.labels)} labels for {len(codes.codes)} codes")
    if codes.queries.ndim != 2 or codes.queries.shape[1] != codes.quantizer.dim \
            or len(codes.queries) != len(codes.query_labels):
        raise GslbenchError(f"{path}: /query has representations {codes.queries.shape} and labels "
                            f"{codes.query_labels.shape}, expected (n, {codes.quantizer.dim})")
    return codes
