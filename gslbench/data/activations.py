"""The frozen trunk's activations, cached for fine-tuning the top of the CNN (`train_blocks = N`).

`DATA/NAME/FEATURE.train-blocks-N.h5`, format `gslbench.activations`, version 1:

    /train/activations      float32 (n_train, C, H, W)  the trunk's output for each image
    /query/activations      float32 (n_query, C, H, W)
    /database/activations   float32 (n_db, C, H, W)
    /split/{train,query,database}  int64: the feature file's split indices (row i of a part is
                            the image split[part][i] of the data set's raw images)
    attrs: dataset, feature, backbone, image_size, train_blocks, weights_sha256, source_sha256,
           features_sha256 (the feature file whose split and images it follows), computed_from
           ("images", or the deeper cache it was computed from)

The trunk is the CNN below its last N blocks (`gslbench.data.finetuning.split_network`): computed
once per (data set, feature = backbone and image size, N), every run that fine-tunes those
blocks reads it. For EfficientNet-Lite0 at 64 px and N = 1 to 4 a row is 192 x 2 x 2 floats (3 KB;
215 MB for Fashion-MNIST's 70,000 images). It is computed batch by batch into
`DATA/NAME/.FILE.partial`, which records after each batch how many rows of each part are done,
so a killed build resumes where it stopped; the finished file is renamed into place. It follows
one feature file: when that file changes (its sha256 differs), the cache is computed again. When
a cache for a larger N of the same feature file exists, the smaller N's is computed from it (a
few blocks over the cached rows instead of the whole trunk over the images).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import h5py
import numpy as np

from gslbench import layout
from gslbench.data import backbones, get_dataset
from gslbench.data.featurefile import SPLITS, FeatureSet, read_feature_file
from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.storage import open_h5, set_format_attrs, sha256_file

torch = lazy_import("torch")
# the trunk subclasses torch's nn.Module: loaded when activations are computed
finetuning = lazy_import("gslbench.data.finetuning")

log = logging.getLogger(__name__)
FORMAT = "gslbench.activations"
FORMAT_VERSION = 1
Batches = Callable[[str, int], Iterator[tuple[int, "torch.Tensor"]]]  # (part, first row) -> batches


def ensure_activations(data_dir: str | Path, dataset: str, feature: str, train_blocks: int,
                       device: torch.device | str = "cpu", batch_size: int = 256) -> Path:
    """The activation cache of (dataset, feature, N): computed, or resumed, unless it exists and
    follows the current feature file. Computed from a deeper cache of the same feature file
    (N' > N: only blocks N' to N+1 from the top run) when there is one, else from the images.
    Returns its path."""
    features_file = layout.feature_path(data_dir, dataset, feature)
    if not features_file.is_file():
        raise GslbenchError(f"{features_file}: no such file; run `gslbench features {dataset}` "
                            "first")
    path = layout.activations_path(data_dir, dataset, feature, train_blocks)
    features_sha256 = sha256_file(features_file)
    if path.is_file() and _stored_attrs(path).get("features_sha256") == features_sha256:
        return path
    features = read_feature_file(features_file)
    attrs = _binding(features, features_sha256, train_blocks)
    partial = layout.partial_path(path)
    with contextlib.ExitStack() as stack:
        trunk, batches, source = _source(stack, data_dir, features, attrs, device, batch_size)
        trunk.to(device)
        log.info("caching the trunk's activations below the last %d block(s) of %s in %s, "
                 "from %s", train_blocks, attrs["backbone"], path, source)
        with _partial_file(partial, attrs) as handle:
            handle.attrs["computed_from"] = source
            for part in SPLITS:
                _fill_part(handle, part, features.splits()[part].indices, trunk, batches)
    os.replace(partial, path)
    return path


def _source(stack: contextlib.ExitStack, data_dir: str | Path, features: FeatureSet, attrs: dict,
            device: torch.device | str, batch_size: int) -> tuple[finetuning.Trunk, Batches, str]:
    """What computes the cache: the trunk, its input batches and their source ("images", or the
    name of the deeper cache of the same feature file nearest below N, opened on `stack`)."""
    name, size, blocks = attrs["backbone"], attrs["image_size"], attrs["train_blocks"]
    deeper = _deeper_cache(data_dir, attrs)
    if deeper is None:
        trunk, _ = finetuning.split_network(name, size, blocks)
        return trunk, _image_batches(data_dir, features, attrs, device, batch_size), "images"
    path, deeper_blocks = deeper
    rows = stack.enter_context(open_activations(path, features, deeper_blocks))
    trunk, _ = finetuning.split_network(name, size, blocks, trunk_from=backbones.get_backbone(
        name).blocks - deeper_blocks)
    return trunk, _row_batches(rows, device, batch_size), path.name


def _image_batches(data_dir: str | Path, features: FeatureSet, attrs: dict,
                   device: torch.device | str, batch_size: int) -> Batches:
    """(part, first row) -> the batches of that part's images from that row on, as network input."""
    dataset = features.dataset
    raw = get_dataset(dataset, data_dir).load_raw(layout.raw_dir(data_dir, dataset))
    if raw.images is None:
        raise GslbenchError(f"--train-blocks {attrs['train_blocks']}: {dataset} has no images to "
                            "fine-tune on")
    if raw.source_sha256 != features.source_sha256:
        raise GslbenchError(f"{features.dataset}/{features.feature}: extracted from other raw "
                            f"files than {layout.raw_dir(data_dir, dataset)} holds now; run "
                            f"`gslbench features {dataset}` again")
    spec = backbones.get_backbone(attrs["backbone"])

    def batches(part: str, start: int) -> Iterator[tuple[int, torch.Tensor]]:
        images = raw.images[features.splits()[part].indices]
        return backbones.network_inputs(images, spec, attrs["image_size"], batch_size,
                                        raw.pixel_max, device, f"trunk {part}", start=start)
    return batches


def _row_batches(rows: dict[str, h5py.Dataset], device: torch.device | str,
                 batch_size: int) -> Batches:
    """(part, first row) -> the batches of that part's rows of a deeper cache from that row on."""
    def batches(part: str, start: int) -> Iterator[tuple[int, torch.Tensor]]:
        for first in range(start, len(rows[part]), batch_size):
            yield first, torch.from_numpy(rows[part][first:first + batch_size]).to(device)
    return batches


def _deeper_cache(data_dir: str | Path, attrs: dict) -> tuple[Path, int] | None:
    """The finished cache of the same feature file nearest below N (N' > N), if any."""
    blocks = backbones.get_backbone(attrs["backbone"]).blocks
    for deeper in range(attrs["train_blocks"] + 1, blocks + 1):
        path = layout.activations_path(data_dir, attrs["dataset"], attrs["feature"], deeper)
        stored = _stored_attrs(path)
        if stored and all(_same(stored.get(k), v) for k, v in attrs.items() if k != "train_blocks"):
            return path, deeper
    return None


def _binding(features: FeatureSet, features_sha256: str, train_blocks: int) -> dict:
    """The attrs that tie the cache to its feature file, backbone and N."""
    backbone = str(features.extra_attrs.get("backbone", ""))
    spec = backbones.check_fine_tunable(backbone, train_blocks, features.feature, features.dataset)
    return {"dataset": features.dataset, "feature": features.feature, "backbone": backbone,
            "image_size": int(features.extra_attrs["image_size"]), "train_blocks": train_blocks,
            "weights_sha256": spec.weights_sha256, "source_sha256": features.source_sha256,
            "features_sha256": features_sha256}


def _stored_attrs(path: Path) -> dict:
    """The attrs of a finished cache, {} when it is not readable as one (it is then rebuilt)."""
    try:
        with open_h5(path, FORMAT, FORMAT_VERSION, sealed_since=None) as handle:
            return dict(handle.attrs)
    except GslbenchError:
        return {}


@contextlib.contextmanager
def _partial_file(partial: Path, attrs: dict) -> Iterator[h5py.File]:
    """The partial cache, opened to resume when it was started with the same binding, else
    started afresh (also when a kill left it unreadable)."""
    handle = _open_partial(partial, "a") if partial.is_file() else None
    if handle is not None and not all(_same(handle.attrs.get(k), v) for k, v in attrs.items()):
        handle.close()
        handle = None
    if handle is None:
        partial.unlink(missing_ok=True)
        handle = _open_partial(partial, "w")
        set_format_attrs(handle, FORMAT, FORMAT_VERSION)
        handle.attrs.update(attrs)
    with handle:
        yield handle


def _open_partial(partial: Path, mode: str) -> h5py.File | None:
    """The partial cache opened in `mode`; None when a kill left it unreadable. HDF5's file lock
    keeps a second process off it: a one-line error."""
    try:
        return h5py.File(partial, mode)
    except OSError as exc:
        if "lock" in str(exc).lower():
            raise GslbenchError(f"{partial}: another gslbench process is computing this cache; "
                                "wait for it to finish") from None
        if mode == "w":
            raise GslbenchError(f"{partial}: cannot write ({exc})") from None
        log.info("%s is unreadable (%s): starting it afresh", partial, exc)
        return None


def _same(stored: object, wanted: object) -> bool:
    return stored is not None and (stored.item() if hasattr(stored, "item") else stored) == wanted


def _fill_part(handle: h5py.File, part: str, indices: np.ndarray, trunk: finetuning.Trunk,
               batches: Batches) -> None:
    """Compute the rows of `part` not done yet, flushing and recording progress after each batch."""
    if f"split/{part}" not in handle:
        handle.create_dataset(f"split/{part}", data=indices.astype(np.int64))
    done_key = f"{part}_rows_done"
    start = int(handle.attrs.get(done_key, 0))
    if start:
        log.info("%s: resuming %s at row %d of %d", handle.filename, part, start, len(indices))
    with torch.no_grad():
        for first, inputs in batches(part, start):
            out = trunk(inputs).contiguous().cpu().numpy()
            if not np.isfinite(out).all():
                raise GslbenchError(f"{handle.filename}: the trunk gave non-finite activations "
                                    f"for {part} rows {first} to {first + len(out) - 1}")
            if f"{part}/activations" not in handle:
                handle.create_dataset(f"{part}/activations", shape=(len(indices), *out.shape[1:]),
                                      dtype=np.float32, chunks=(min(256, len(indices)), *out.shape[1:]))
            handle[f"{part}/activations"][first:first + len(out)] = out
            handle.flush()
            handle.attrs[done_key] = first + len(out)
            handle.flush()


@contextlib.contextmanager
def open_activations(path: str | Path, features: FeatureSet, train_blocks: int
                     ) -> Iterator[dict[str, h5py.Dataset]]:
    """The cache's activations by part, (n, C, H, W) float32 h5py datasets read in slices, after
    checking that it fine-tunes `train_blocks` blocks and follows `features`' split row by row."""
    with open_h5(path, FORMAT, FORMAT_VERSION, sealed_since=None) as handle:
        if int(handle.attrs["train_blocks"]) != train_blocks:
            raise GslbenchError(f"{path}: cached for --train-blocks "
                                f"{int(handle.attrs['train_blocks'])}, not {train_blocks}")
        parts = {}
        for part, split in features.splits().items():
            rows = handle[f"{part}/activations"]
            if rows.ndim != 4 or rows.dtype != np.float32 or len(rows) != len(split.indices):
                raise GslbenchError(f"{path}: /{part}/activations is {rows.dtype} {rows.shape}, "
                                    f"expected float32 ({len(split.indices)}, C, H, W)")
            if not np.array_equal(handle[f"split/{part}"][()], split.indices):
                raise GslbenchError(f"{path}: its {part} rows are not the feature file's "
                                    f"{features.feature} split; delete it to compute it again")
            parts[part] = rows
        yield parts
