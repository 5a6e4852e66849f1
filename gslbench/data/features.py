"""The features step: split a data set by its protocol (test and validation parts), extract its
features, write the feature file (`gslbench features DATASET`)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.data import backbones, feature_path, get_dataset
from gslbench.data.base import Dataset, RawData, Validation, split_indices
from gslbench.data.featurefile import FeatureSet, Split, read_any_version, write_feature_file
from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import

torch = lazy_import("torch")

log = logging.getLogger(__name__)


def feature_name(backbone: str, image_size: int = backbones.DEFAULT_IMAGE_SIZE) -> str:
    """The feature's name (and file stem): the backbone, suffixed with a non-default CNN input size.

    efficientnet-lite0 at 64 px -> "efficientnet-lite0"; at 224 px -> "efficientnet-lite0-224".
    """
    spec = backbones.BACKBONES.get(backbone)
    if spec is None or spec.dim is None or image_size == backbones.DEFAULT_IMAGE_SIZE:
        return backbone
    return f"{backbone}-{image_size}"


def check_feature(dataset: Dataset, feature: str) -> None:
    """Raise a user error unless `feature` is a backbone (or official feature) of `dataset`."""
    parts = feature.split("+") if dataset.name == "nuswide21" else [feature]
    if len(set(parts)) != len(parts) or not all(part in dataset.features for part in parts):
        combos = " (or several joined by '+')" if dataset.name == "nuswide21" else ""
        raise GslbenchError(
            f"{dataset.name} has no feature {feature!r}; known: {', '.join(dataset.features)}{combos}"
        )


def build_features(
    name: str,
    data_dir: str | Path,
    backbone: str | None = None,
    image_size: int = 64,
    batch_size: int = 256,
    split_seed: int = 0,
    device: torch.device | str = "cpu",
    validation: Validation | None = None,
) -> Path:
    """Split data set `name` by its protocol, compute its features and write the feature file.

    `backbone`: "pixels", "efficientnet-lite0" (images resized to `image_size`), or for nuswide21
    its official low-level features ("bow", "cm55", ..., or e.g. "bow+cm55"); default: the data
    set's own. The CNN runs on `device`. Writes DATA_DIR/NAME/FEATURE.h5 (FEATURE =
    `feature_name(backbone, image_size)`) with attrs backbone, image_size, weights_sha256,
    protocol and source_sha256; returns its path. When that file exists with the same source and
    extractor (any format version or split seed), its features are reused and only the split is
    written anew: no CNN runs again.
    """
    dataset = get_dataset(name, data_dir)
    backbone = backbone or dataset.default_feature
    check_feature(dataset, backbone)
    raw = dataset.load_raw(layout.raw_dir(data_dir, name))
    protocol = dataset.protocol
    validation = (validation or Validation()).resolved(len(raw.labels), raw.labels.shape[1],
                                                       protocol.query_per_class)
    indices = split_indices(raw.labels, protocol, split_seed, validation)
    spec = backbones.BACKBONES.get(backbone)
    cnn = raw.images is not None and spec is not None and spec.dim is not None
    feature = feature_name(backbone, image_size) if raw.images is not None else backbone
    attrs = {
        "backbone": backbone,
        "image_size": image_size if cnn else _native_size(raw),
        "weights_sha256": spec.weights_sha256 if spec is not None else "",
        "protocol": json.dumps(asdict(dataset.protocol)),
        "validation": json.dumps(asdict(validation)),
    }
    path = feature_path(data_dir, name, feature)
    known = _existing_features(path, raw, attrs)
    model = backbones.load_model(backbone, image_size) if cnn and known is None else None
    vectors = raw.vectors(backbone) if raw.vectors is not None else None
    splits = {}
    for part, idx in indices.items():
        if known is not None:
            features = known[idx]
        elif vectors is not None:
            features = vectors[idx]
        else:
            features = backbones.extract_features(
                raw.images[idx], backbone, image_size=image_size, batch_size=batch_size,
                pixel_max=raw.pixel_max, desc=f"{name} {part}", model=model, device=device,
            )
        splits[part] = Split(features, raw.labels[idx], idx)
    feature_set = FeatureSet(dataset=name, feature=feature, **splits, label_names=raw.label_names,
                             split_seed=split_seed, source_sha256=raw.source_sha256,
                             extra_attrs=attrs)
    write_feature_file(path, feature_set)
    return path


def _existing_features(path: Path, raw: RawData, attrs: dict) -> np.ndarray | None:
    """The features of every item of `raw`, (n, d) float32 in source order, from an existing
    feature file made from the same source by the same extractor; None when there is none."""
    if not path.is_file():
        return None
    try:
        old = read_any_version(path)
    except GslbenchError:
        return None  # unreadable or of another format: extract again
    if old.source_sha256 != raw.source_sha256 or any(
            str(old.extra_attrs.get(key)) != str(attrs[key])
            for key in ("backbone", "image_size", "weights_sha256")):
        return None
    parts = list(old.parts().values())
    indices, first = np.unique(np.concatenate([part.indices for part in parts]), return_index=True)
    if not np.array_equal(indices, np.arange(len(raw.labels))):
        return None  # not every item of the source: extract again
    log.debug("%s: reusing its features (same source and extractor); writing the split anew", path)
    return np.concatenate([part.features for part in parts])[first]


def _native_size(raw: RawData) -> int:
    """Side of the images as stored (pixels feature); 0 for data sets without images."""
    return int(raw.images.shape[-1]) if raw.images is not None else 0
