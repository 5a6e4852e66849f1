"""The features step: split a data set by its protocol, extract its features, write the feature
file (`gslbench features DATASET`)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch

from gslbench import layout
from gslbench.data import backbones, feature_path, get_dataset
from gslbench.data.base import Dataset, RawData, split_indices
from gslbench.data.featurefile import FeatureSet, Split, write_feature_file
from gslbench.errors import GslbenchError


def feature_name(backbone: str, image_size: int = backbones.DEFAULT_IMAGE_SIZE) -> str:
    """The feature's name (and file stem): the backbone, suffixed with a non-default CNN input size.

    efficientnet-lite0 at 64 px -> "efficientnet-lite0"; at 224 px -> "efficientnet-lite0-224".
    """
    spec = backbones.BACKBONES.get(backbone)
    if spec is None or spec.dim is None or image_size == backbones.DEFAULT_IMAGE_SIZE:
        return backbone
    return f"{backbone}-{image_size}"


def _check_feature(dataset: Dataset, feature: str) -> None:
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
) -> Path:
    """Split data set `name` by its protocol, compute its features and write the feature file.

    `backbone`: "pixels", "efficientnet-lite0" (images resized to `image_size`), or for nuswide21
    its official low-level features ("bow", "cm55", ..., or e.g. "bow+cm55"); default: the data
    set's own. The CNN runs on `device`. Writes DATA_DIR/NAME/FEATURE.h5 (FEATURE =
    `feature_name(backbone, image_size)`) with attrs backbone, image_size, weights_sha256,
    protocol and source_sha256; returns its path.
    """
    dataset = get_dataset(name, data_dir)
    backbone = backbone or dataset.default_feature
    _check_feature(dataset, backbone)
    raw = dataset.load_raw(layout.raw_dir(data_dir, name))
    indices = split_indices(raw.labels, dataset.protocol, split_seed)
    model = None
    spec = backbones.BACKBONES.get(backbone)
    if raw.images is not None and spec is not None and spec.dim is not None:
        model = backbones.load_model(backbone, image_size)
    vectors = raw.vectors(backbone) if raw.vectors is not None else None
    splits = {}
    for part, idx in indices.items():
        if vectors is not None:
            features = vectors[idx]
        else:
            features = backbones.extract_features(
                raw.images[idx], backbone, image_size=image_size, batch_size=batch_size,
                pixel_max=raw.pixel_max, desc=f"{name} {part}", model=model, device=device,
            )
        splits[part] = Split(features, raw.labels[idx], idx)
    feature = feature_name(backbone, image_size) if raw.images is not None else backbone
    attrs = {
        "backbone": backbone,
        "image_size": image_size if model is not None else _native_size(raw),
        "weights_sha256": spec.weights_sha256 if spec is not None else "",
        "protocol": json.dumps(asdict(dataset.protocol)),
    }
    feature_set = FeatureSet(dataset=name, feature=feature, **splits, label_names=raw.label_names,
                             split_seed=split_seed, source_sha256=raw.source_sha256,
                             extra_attrs=attrs)
    path = feature_path(data_dir, name, feature)
    write_feature_file(path, feature_set)
    return path


def _native_size(raw: RawData) -> int:
    """Side of the images as stored (pixels feature); 0 for data sets without images."""
    return int(raw.images.shape[-1]) if raw.images is not None else 0
