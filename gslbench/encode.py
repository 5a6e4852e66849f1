"""The encode step and the codes file `RUN/codes.h5`: everything `evaluate` reads.

Format `gslbench.codes`, version 3 (DESIGN.md section 3):

    /codes                    (n_db, code_bytes) uint8   packed codes of the database
    /labels                   (n_db, C) uint8            database labels (multi-hot)
    /database/representations (n_db, d) float32          the database through the run's network
                                                         (version 3; search-bench's true
                                                         neighbours, export)
    /query/representations    (n_query, d) float32       the queries through the run's network
    /query/labels             (n_query, C) uint8
    /quantizer/...            the quantizer (`gslbench.quantizers.io`)
    attrs: run, method, label, quantizer, M, nbits, code_bits, dim, config (JSON), map_at (JSON
           list of the protocol's K), map_top (0: mAP over the whole database), train_seconds,
           encode_seconds, and the sha256 of the inputs it was made from: config_sha256 (the
           run's config.json), features_sha256, model_sha256, quantizer_sha256 ("" for float);
           database_quant_mse and query_quant_mse (mean squared quantization error of the
           database and of the query representations), items (JSON: count and sha256 of the
           source indices of the queries and the database); content_sha256
           (`gslbench.storage`): a digest of everything above; devices (JSON: {"train", "encode"},
           each as config.json's "device"); a fine-tuned run also activations_sha256

`read_codes` checks the content (shapes, finite representations and codebooks, codes in range,
0/1 labels); `check_encoded` also checks that the file is bound to its run directory. Files of
older versions are refused with the advice to encode again.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gslbench import layout
from gslbench.config import RunConfig
from gslbench.data import get_dataset
from gslbench.data.activations import open_activations
from gslbench.data.featurefile import FeatureSet, check_labels, items_record, read_feature_file
from gslbench.devices import describe_device, resolve_device
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import MAP_AT
from gslbench.methods.model import embed
from gslbench.quantizers import Identity, Quantizer, load_quantizer, save_quantizer
from gslbench.quantizers.base import squared_error
from gslbench.storage import check_sha256, config_id, open_h5, sha256_file, write_h5
from gslbench.train import check_trained, load_config, load_model, load_run_quantizer, run_features

FORMAT = "gslbench.codes"
FORMAT_VERSION = 3
# the attrs evaluate and bench rely on, with their types
ATTRS = {"run": str, "label": str, "config": str, "map_at": str, "map_top": int,
         "train_seconds": float, "encode_seconds": float, "config_sha256": str,
         "features_sha256": str, "model_sha256": str, "quantizer_sha256": str}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Codes:
    """A codes file's content: database codes (n, code_bytes) uint8 and labels (n, C) uint8,
    query representations (nq, d) float32 and labels (nq, C) uint8, the quantizer, the attrs,
    and the database representations (n, d) float32."""

    codes: np.ndarray
    labels: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray
    quantizer: Quantizer | Identity
    attrs: dict
    database: np.ndarray

    @property
    def map_at(self) -> tuple[int, ...]:
        """The K of mAP@K the data set's protocol asks for."""
        return tuple(json.loads(self.attrs["map_at"]))


def encode_run(run: str | Path, data_dir: str | Path, results_dir: str | Path,
               force: bool = False, device: str = "auto") -> Path:
    """Encode the database and embed the queries through the run's network, on `device`, into
    RUN/codes.h5. A fine-tuned run embeds the trunk's cached activations through its top.

    The run must pass `check_trained` against the current feature file. An existing codes.h5 is
    kept (unless `force`) when `check_encoded` passes; a damaged or unbound one is written again,
    with a warning."""
    run_dir = layout.resolve_run(results_dir, run)
    features_file = run_features(load_config(run_dir)[0], data_dir)
    config, record = check_trained(run_dir, features_file)
    if run_dir.codes.is_file() and not force:
        try:
            check_encoded(run_dir)
            return run_dir.codes
        except GslbenchError as exc:
            log.warning("%s; encoding run %s again", exc, run_dir.run_id)
    features = read_feature_file(features_file.path, config.split, config.protocol)
    torch_device = resolve_device(device)
    model = load_model(run_dir, config, features.dim).to(torch_device)
    quantizer = load_run_quantizer(run_dir) if config.quantized else Identity(config.dim_out)
    start = time.perf_counter()
    database, queries = _embed_parts(run_dir, config, record, model, features, data_dir)
    codes = quantizer.encode(database)
    seconds = time.perf_counter() - start
    map_top = get_dataset(config.dataset, data_dir).protocol.map_top
    with write_h5(run_dir.codes, FORMAT, FORMAT_VERSION) as handle:
        handle.create_dataset("codes", data=codes)
        handle.create_dataset("labels", data=features.database.labels)
        handle.create_dataset("database/representations", data=database)
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
            "config_sha256": sha256_file(run_dir.config),
            "features_sha256": features_file.sha256, "model_sha256": record["model_sha256"],
            "quantizer_sha256": record.get("quantizer_sha256") or "",
            "database_quant_mse": squared_error(database, quantizer.decode(codes)),
            "query_quant_mse": quantizer.quantization_error(queries),
            "items": json.dumps({"query": items_record(features.query),
                                 "database": items_record(features.database)}),
            "devices": json.dumps({"train": record.get("device"),
                                   "encode": describe_device(torch_device)}),
            **({"activations_sha256": record["activations_sha256"]} if config.train_blocks else {}),
        })
    return run_dir.codes


def _embed_parts(run: layout.RunDir, config: RunConfig, record: dict, model: torch.nn.Module,
                 features: FeatureSet, data_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """The (n_db, d) database and (n_query, d) query representations, checked finite: through
    the network from the features, or for a fine-tuned run from the trunk's cached activations
    (checked to be the cache the run was trained on)."""
    if not config.train_blocks:
        parts = {"database": features.database.features, "query": features.query.features}
        return tuple(_finite(embed(model, parts[name]), run, name) for name in ("database", "query"))
    path = layout.activations_path(data_dir, config.dataset, config.feature, config.train_blocks)
    check_sha256(path, record.get("activations_sha256"), run.config)
    with open_activations(path, features, config.train_blocks) as parts:
        return tuple(_finite(embed(model, parts[name]), run, name) for name in ("database", "query"))


def _finite(representations: np.ndarray, run: layout.RunDir, split: str) -> np.ndarray:
    """The (n, d) representations, checked finite."""
    if not np.isfinite(representations).all():
        raise GslbenchError(f"{run.model}: the network gives non-finite {split} representations "
                            "(NaN or inf)")
    return representations


def check_encoded(run: layout.RunDir) -> Codes:
    """The run's codes.h5 (`read_codes`), after checking that it is bound to the run: it records
    the run id of its directory, a config that hashes to it, and the sha256 of the run's current
    config.json (so it was made from this run's model and quantizer, which config.json binds)."""
    codes = read_codes(run.codes)
    attrs = codes.attrs
    found = config_id(json.loads(attrs["config"]))
    if attrs["run"] != run.run_id or found != run.run_id:
        raise GslbenchError(f"{run.codes}: made for run {attrs['run']} (config hash {found}), not "
                            f"for run {run.run_id} of its directory (copied from another run?)")
    if not run.config.is_file() or sha256_file(run.config) != attrs["config_sha256"]:
        raise GslbenchError(f"{run.codes}: made from another {run.config.name} than the run's "
                            "(sha256 differs: the run was trained again or edited since)")
    return codes


def read_codes(path: Path) -> Codes:
    """Read and check a codes file: its attrs, shapes, finite query representations and
    codebooks, codes in range for their codebooks, 0/1 labels with one or more per item."""
    with open_h5(path, FORMAT, FORMAT_VERSION, min_version=FORMAT_VERSION,
                 rewrite="run `gslbench encode RUN --force`") as handle:
        attrs = {key: _plain(value) for key, value in handle.attrs.items()}
        for name, kind in ATTRS.items():
            allowed = (int, float) if kind is float else (kind,)
            if isinstance(attrs.get(name), bool) or not isinstance(attrs.get(name), allowed):
                raise GslbenchError(f"{path}: attribute {name!r} is {attrs.get(name)!r}, expected "
                                    f"a {kind.__name__}")
        codes = Codes(handle["codes"][()], handle["labels"][()],
                      handle["query/representations"][()], handle["query/labels"][()],
                      load_quantizer(handle["quantizer"]), attrs,
                      handle["database/representations"][()])
        json.loads(attrs["config"]), json.loads(attrs["map_at"])  # JSON errors: a corrupt file
    _check_shapes(codes, path)
    if not np.isfinite(codes.queries).all():
        raise GslbenchError(f"{path}: /query/representations hold non-finite values (NaN or inf)")
    _check_codes_in_range(codes, path)
    check_labels(codes.labels, f"{path}: /labels")
    check_labels(codes.query_labels, f"{path}: /query/labels")
    return codes


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _check_shapes(codes: Codes, path: Path) -> None:
    if codes.codes.ndim != 2 or codes.codes.dtype != np.uint8 \
            or codes.codes.shape[1] != codes.quantizer.code_bytes:
        raise GslbenchError(f"{path}: /codes is {codes.codes.dtype} {codes.codes.shape}, the "
                            f"quantizer needs uint8 (n, {codes.quantizer.code_bytes})")
    if codes.labels.ndim != 2 or len(codes.labels) != len(codes.codes):
        raise GslbenchError(f"{path}: labels {codes.labels.shape} for {len(codes.codes)} codes")
    if codes.queries.ndim != 2 or codes.queries.shape[1] != codes.quantizer.dim \
            or codes.query_labels.ndim != 2 or len(codes.queries) != len(codes.query_labels):
        raise GslbenchError(f"{path}: /query has representations {codes.queries.shape} and labels "
                            f"{codes.query_labels.shape}, expected (n, {codes.quantizer.dim})")
    if codes.database.shape != (len(codes.codes), codes.quantizer.dim):
        raise GslbenchError(f"{path}: /database/representations is {codes.database.shape}, expected "
                            f"({len(codes.codes)}, {codes.quantizer.dim})")
    if codes.query_labels.shape[1] != codes.labels.shape[1]:
        raise GslbenchError(f"{path}: query labels have {codes.query_labels.shape[1]} classes, "
                            f"database labels {codes.labels.shape[1]}")


def _check_codes_in_range(codes: Codes, path: Path) -> None:
    """Each code must be one the quantizer can produce: the padding bits of the last byte are 0
    (bits not a multiple of 8), and float codes (`Identity`) are finite floats."""
    quantizer = codes.quantizer
    if isinstance(quantizer, Identity):
        if not np.isfinite(quantizer.decode(codes.codes)).all():
            raise GslbenchError(f"{path}: /codes hold non-finite database vectors (NaN or inf)")
        return
    spare = 8 * quantizer.code_bytes - quantizer.bits
    if spare and (codes.codes[:, -1] >> (8 - spare)).any():
        raise GslbenchError(f"{path}: /codes are out of range for {quantizer.n_codebooks} "
                            f"codebooks of {quantizer.codebook_size} codewords")
