"""The encode step: a run's database encoded and its queries embedded, into a codes file
(`gslbench.codes`: its format, reader and checks).

`--codebooks train` (the default) encodes with the final codebooks the run fitted on its training
representations (RUN/codes.h5). `--codebooks database` fits the codebooks again on the database
representations, from scratch with the run's seed and quantizer settings, by the final fit every
method's training-set codebooks come from (`Quantizer.fit_final`: cold restarts, to convergence),
so every method is treated alike, as an indexer fitting its index on the items it holds would; it writes
RUN/codes-database.h5 beside the other (`layout.RunDir.codes_file`). A float run has no
codebooks, only train codes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.codes import Codes, check_encoded, fits, write_codes
from gslbench.config import RunConfig
from gslbench.data import get_dataset
from gslbench.data.activations import open_activations
from gslbench.data.featurefile import FeatureSet, items_record, read_feature_file
from gslbench.devices import describe_device, resolve_device
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import MAP_AT
from gslbench.evaluation.usage import usage_record
from gslbench.lazy import lazy_import
from gslbench.quantizers import Identity, Quantizer
from gslbench.quantizers.base import squared_error
from gslbench.storage import check_sha256, os_reason, sha256_file
from gslbench.train import check_trained, load_config, load_model, load_run_quantizer, run_features

torch = lazy_import("torch")
networks = lazy_import("gslbench.methods.model")  # its classes subclass torch's: loaded to embed
log = logging.getLogger(__name__)


def encode_run(run: str | Path, data_dir: str | Path, results_dir: str | Path,
               force: bool = False, device: str = "auto", codebooks: str = "train") -> Path:
    """Encode the database and embed the queries through the run's network, on `device`, into
    the codes file of the fit `codebooks` (RUN/codes.h5 for train, RUN/codes-database.h5: the
    module docstring). A fine-tuned run embeds the trunk's cached activations through its top.

    The run must pass `check_trained` against the current feature file. An existing codes file
    is kept (unless `force`) when `check_encoded` passes; a damaged or unbound one is written
    again, with a warning. The fit's results made from the codes file it replaces (metrics,
    search-bench) are removed first."""
    run_dir = layout.resolve_run(results_dir, run)
    features_file = run_features(load_config(run_dir)[0], data_dir)
    config, record = check_trained(run_dir, features_file)
    if fits(config.quantized, [codebooks]) != (codebooks,):
        raise GslbenchError(f"--codebooks {codebooks}: run {run_dir.run_id} is a float run, it has "
                            "no codebooks to fit (only train codes)")
    path = run_dir.codes_file(codebooks)
    if path.is_file() and not force:
        try:
            check_encoded(run_dir, codebooks)
            return path
        except GslbenchError as exc:
            log.warning("%s; encoding run %s again", exc, run_dir.run_id)
    features = read_feature_file(features_file.path, config.split, config.protocol,
                                 config.unseen, config.draw)
    torch_device = resolve_device(device)
    model = load_model(run_dir, config, features.dim).to(torch_device)
    quantizer = load_run_quantizer(run_dir) if config.quantized else Identity(config.dim_out)
    start = time.perf_counter()
    database, queries = _embed_parts(run_dir, config, record, model, features, data_dir)
    if codebooks == "database":
        # the final fit, as of the training representations
        quantizer.fit_final(database, what="database vectors")
    codes = quantizer.encode(database)
    seconds = time.perf_counter() - start
    usage = _usage(run_dir, config, record, model, features, data_dir, quantizer, codes)
    map_top = get_dataset(config.dataset, data_dir).protocol.map_top
    attrs = {
        "run": config.run_id, "method": config.method, "label": config.label,
        "quantizer": quantizer.name, "M": quantizer.n_codebooks, "nbits": quantizer.sub_bits,
        "code_bits": quantizer.bits, "dim": quantizer.dim, "codebooks": codebooks,
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
        "unseen_classes": json.dumps(_unseen_classes(config, features)),
        "devices": json.dumps({"train": record.get("device"),
                               "encode": describe_device(torch_device)}),
        **({"activations_sha256": record["activations_sha256"]} if config.train_blocks else {}),
        **({"usage": json.dumps(usage)} if usage else {}),
    }
    _remove_results(run_dir, codebooks)
    write_codes(path, Codes(codes, features.database.labels, queries, features.query.labels,
                            quantizer, attrs, database, features.query.neighbours))
    return path


def _unseen_classes(config: RunConfig, features: FeatureSet) -> list[int]:
    """The classes the run's protocol held out of training, sorted: those of the feature set the
    run used for the unseen protocol, none for the standard one."""
    if config.protocol == "standard":
        return []
    return sorted(int(c) for c in features.unseen_classes or ())


def _remove_results(run: layout.RunDir, codebooks: str) -> None:
    """Remove the fit's results (metrics, search-bench): they were made from the codes file that
    is about to be replaced, and would no longer be bound to it."""
    for path in run.results_of(codebooks):
        try:
            path.unlink()
        except OSError as exc:
            raise GslbenchError(f"{path}: cannot remove ({os_reason(exc)}), a result of the codes "
                                "about to be replaced") from None


def _usage(run: layout.RunDir, config: RunConfig, record: dict, model: torch.nn.Module,
           features: FeatureSet, data_dir: str | Path, quantizer: Quantizer | Identity,
           codes: np.ndarray) -> dict | None:
    """The codebook usage (`gslbench.evaluation.usage`) of the training items' codes under the
    fit's codebooks and of the database's `codes`; None for a float run."""
    if isinstance(quantizer, Identity):
        return None
    (train,) = _embed_parts(run, config, record, model, features, data_dir, ("train",))
    return usage_record(quantizer, {"train": quantizer.encode(train), "database": codes})


def _embed_parts(run: layout.RunDir, config: RunConfig, record: dict, model: torch.nn.Module,
                 features: FeatureSet, data_dir: str | Path,
                 names: tuple[str, ...] = ("database", "query")) -> tuple[np.ndarray, ...]:
    """The (n, d) representations of the parts `names` (default: the database and the queries),
    checked finite: through the network from the features, or for a fine-tuned run from the
    trunk's cached activations (checked to be the cache the run was trained on)."""
    if not config.train_blocks:
        parts = {name: split.features for name, split in features.splits().items()}
        return tuple(_finite(networks.embed(model, parts[name]), run, name) for name in names)
    path = layout.activations_path(data_dir, config.dataset, config.feature, config.train_blocks)
    check_sha256(path, record.get("activations_sha256"), run.config)
    with open_activations(path, features, config.train_blocks) as parts:
        return tuple(_finite(networks.embed(model, parts[name]), run, name) for name in names)


def _finite(representations: np.ndarray, run: layout.RunDir, split: str) -> np.ndarray:
    """The (n, d) representations, checked finite."""
    if not np.isfinite(representations).all():
        raise GslbenchError(f"{run.model}: the network gives non-finite {split} representations "
                            "(NaN or inf)")
    return representations
