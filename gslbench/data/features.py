"""The features step: split a data set by its protocol (test and validation parts), extract its
features, write the feature file (`gslbench features DATASET`)."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.data import backbones, feature_path, fetch, get_dataset
from gslbench.data.base import Dataset, Protocol, RawData, Validation, split_indices
from gslbench.data.featurefile import FeatureSet, Split, read_any_version, write_feature_file
from gslbench.data.neighbours import with_neighbours
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
    """Raise a user error unless `feature` is a backbone (or official feature) of `dataset`; for
    a data set related by neighbours, also one with other K (`layout.neighbours_feature`)."""
    if dataset.protocol.neighbours:
        feature = layout.neighbours_base(feature)[0]
    parts = feature.split("+") if dataset.name == "nuswide21" else [feature]
    if len(set(parts)) != len(parts) or not all(part in dataset.features for part in parts):
        combos = " (or several joined by '+')" if dataset.name == "nuswide21" else ""
        raise GslbenchError(
            f"{dataset.name} has no feature {feature!r}; known: {', '.join(dataset.features)}{combos}"
        )


@backbones.capped_cpu_kernels()  # before torch runs anything in this process
def build_features(
    name: str,
    data_dir: str | Path,
    backbone: str | None = None,
    image_size: int = 64,
    batch_size: int = 256,
    split_seed: int = 0,
    device: torch.device | str = "cpu",
    validation: Validation | None = None,
    neighbours: int | None = None,
) -> Path:
    """Split data set `name` by its protocol, compute its features and write the feature file.

    `backbone`: "pixels", "efficientnet-lite0" (images resized to `image_size`), or for nuswide21
    its official low-level features ("bow", "cm55", ..., or e.g. "bow+cm55"); default: the data
    set's own. The CNN runs on `device`. Writes DATA_DIR/NAME/FEATURE.h5 (FEATURE =
    `feature_name(backbone, image_size)`) with attrs backbone, image_size, weights_sha256,
    protocol, source_sha256 and the provenance of `provenance_attrs` (the raw files' sha256, how
    the features were computed, `features_digest`); returns its path. When that file exists with
    the same source and extractor (any format version or split seed), its features are reused
    and only the split is written anew: no CNN runs again.

    `neighbours`: for a data set related by neighbours, the k true neighbours stored per item
    (default: its protocol's); another k than the protocol's is the feature FEATURE-kK
    (`layout.neighbours_feature`, its own file), and the protocol the file records says k.
    """
    dataset = get_dataset(name, data_dir)
    backbone = backbone or dataset.default_feature
    check_feature(dataset, backbone)
    protocol = neighbours_protocol(dataset, neighbours)
    raw = dataset.load_raw(layout.raw_dir(data_dir, name))
    # a data set without labels is split as one class
    by_class = np.ones((len(raw.labels), 1), np.uint8) if protocol.neighbours else raw.labels
    validation = (validation or Validation()).resolved(len(by_class), by_class.shape[1],
                                                       protocol.query_per_class)
    indices = split_indices(by_class, protocol, split_seed, validation)
    spec = backbones.BACKBONES.get(backbone)
    cnn = raw.images is not None and spec is not None and spec.dim is not None
    feature = feature_name(backbone, image_size) if raw.images is not None else backbone
    attrs = {
        "backbone": backbone,
        "image_size": image_size if cnn else _native_size(raw),
        "weights_sha256": spec.weights_sha256 if spec is not None else "",
        "protocol": json.dumps(asdict(protocol)),
        "validation": json.dumps(asdict(validation)),
    }
    if cnn:
        attrs["extraction"] = json.dumps(backbones.extraction_record(), sort_keys=True)
    if protocol.neighbours != dataset.protocol.neighbours:
        feature = layout.neighbours_feature(feature, protocol.neighbours)
    path = feature_path(data_dir, name, feature)
    known, extraction = _existing_features(path, raw, attrs) or (None, None)
    if extraction is not None:
        attrs["extraction"] = extraction  # how the reused features were computed
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
    if protocol.neighbours:
        splits = with_neighbours(splits, protocol.neighbours)
    feature_set = FeatureSet(dataset=name, feature=feature, **splits, label_names=raw.label_names,
                             split_seed=split_seed, source_sha256=raw.source_sha256,
                             extra_attrs=attrs)
    feature_set.extra_attrs.update(provenance_attrs(feature_set, layout.raw_dir(data_dir, name)))
    write_feature_file(path, feature_set)
    return path


def neighbours_protocol(dataset: Dataset, k: int | None) -> Protocol:
    """`dataset`'s protocol with `k` true neighbours per item (None: its own); a user error for
    a data set with labels, or k < 1."""
    if k is None:
        return dataset.protocol
    if not dataset.protocol.neighbours:
        raise GslbenchError(f"--neighbours: {dataset.name} has labels; only a data set related "
                            "by neighbours (e.g. glove-6b-50d) takes k")
    if k < 1:
        raise GslbenchError(f"--neighbours: k={k}, expected an integer >= 1")
    return replace(dataset.protocol, neighbours=k)


def provenance_attrs(feature_set: FeatureSet, raw_dir: Path) -> dict[str, str]:
    """What a feature file records of where its values come from, beside the extractor's attrs:
    `source_files`, the sha256 of each raw file as verified at download (JSON {name: sha256}; {}
    for raw files older than download records); `features_digest`, the file's identity."""
    recorded = (raw_dir / fetch.MANIFEST).is_file()
    files = fetch.read_manifest(raw_dir, feature_set.dataset)["files"] if recorded else {}
    return {"source_files": json.dumps(files, sort_keys=True),
            "features_digest": features_digest(feature_set)}


def features_digest(feature_set: FeatureSet) -> str:
    """sha256 of what a feature file holds, apart from its attributes and its HDF5 layout: for
    each part (`FeatureSet.parts`, by name) its name, source indices (int64), features (float32)
    and labels (uint8), and its neighbours (int64) when it has them, little-endian. Equal
    digests mean the same features, labels and split, whichever h5py wrote the file and
    whatever provenance it records (threads, versions), which
    change the file's own sha256."""
    digest = hashlib.sha256()
    for name, part in sorted(feature_set.parts().items()):
        digest.update(f"{name}\0".encode())
        for array, dtype in ((part.indices, "<i8"), (part.features, "<f4"), (part.labels, "u1")):
            digest.update(np.ascontiguousarray(array, dtype=dtype).tobytes())
        if part.neighbours is not None:
            digest.update(np.ascontiguousarray(part.neighbours, dtype="<i8").tobytes())
    return digest.hexdigest()


def _existing_features(path: Path, raw: RawData, attrs: dict
                       ) -> tuple[np.ndarray, str | None] | None:
    """The features of every item of `raw`, (n, d) float32 in source order, and the record of
    their extraction (attr `extraction`, None without one), from an existing feature file made
    from the same source by the same extractor (`backbones.EXTRACTOR_VERSION` for a CNN); None
    when there is none."""
    if not path.is_file():
        return None
    try:
        old = read_any_version(path)
    except GslbenchError:
        return None  # unreadable or of another format: extract again
    extraction = old.extra_attrs.get("extraction")
    if old.source_sha256 != raw.source_sha256 or any(
            str(old.extra_attrs.get(key)) != str(attrs[key])
            for key in ("backbone", "image_size", "weights_sha256")):
        return None
    if "extraction" in attrs and _extractor(extraction) != backbones.EXTRACTOR_VERSION:
        return None  # computed around the CNN another way: extract again
    parts = list(old.parts().values())
    indices, first = np.unique(np.concatenate([part.indices for part in parts]), return_index=True)
    if not np.array_equal(indices, np.arange(len(raw.labels))):
        return None  # not every item of the source: extract again
    log.debug("%s: reusing its features (same source and extractor); writing the split anew", path)
    return np.concatenate([part.features for part in parts])[first], (
        None if extraction is None else str(extraction))


def _extractor(extraction: object) -> int | None:
    """The extractor version of an `extraction` attr; None when it has none."""
    try:
        return json.loads(str(extraction)).get("extractor")
    except (json.JSONDecodeError, AttributeError):
        return None


def _native_size(raw: RawData) -> int:
    """Side of the images as stored (pixels feature); 0 for data sets without images."""
    return int(raw.images.shape[-1]) if raw.images is not None else 0
