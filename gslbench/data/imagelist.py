"""Split lists of images as a data set: `gslbench features import NAME --image-list DIR`.

The DeepHash-pytorch / thulab format: three lists, `train.txt`, `test.txt` and `database.txt`
(in DIR, or given one by one), each line `relative/path.jpg 0 1 0 ...`: an image's path,
relative to the image folder (default DIR), and its multi-hot label vector (one-hot for a
single-label set), the same length on every line; blank lines are skipped.

The protocol's three sets are kept as given: training = train.txt, queries = test.txt, database
= database.txt. An image is identified by its path: one listed in train.txt and database.txt
(as in the NUS-WIDE lists) is one training item that is also in the database; an image in two
lists must carry the same labels, and a test query may be neither a training item nor a
database item. The validation split is carved (seeded, per class as for every imported set:
`carve_validation`) out of the database items that are not training items, so no run trains on
it; it stays in the test database, which is kept as the lists give it (the feature file's attr
`validation_in_database`). Relevance: sharing at least one label (as for nuswide21).

Images are read with Pillow, converted to RGB and resized to `image_size` x `image_size`
(Pillow's bilinear filter, antialiased when shrinking), then the features come from a backbone
of the registry (`gslbench.data.backbones`: `pixels`, or a CNN), `batch_size` images at a time.
The feature file's `source_sha256` covers the three lists and every image's bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.data import backbones
from gslbench.data.base import Validation
from gslbench.data.featurefile import Split
from gslbench.data.imported import check_names, with_validation, write_import
from gslbench.errors import GslbenchError
from gslbench.lazy import lazy_import
from gslbench.storage import sha256_file

torch = lazy_import("torch")

LISTS = ("train", "test", "database")  # the list files' stems, in the order items are numbered
PARTS = {"train": "train", "test": "query", "database": "database"}  # list -> feature file part
DEFAULT_BACKBONE = "efficientnet-lite0"  # the image data sets' own


@dataclass(frozen=True)
class ImageListSource:
    """The three list files and the folder their paths are relative to; how features are
    computed from the images (`backbone` of `backbones.BACKBONES`, images resized to
    `image_size`, `batch_size` at a time)."""

    train: Path
    test: Path
    database: Path
    image_root: Path
    backbone: str = DEFAULT_BACKBONE
    image_size: int = backbones.DEFAULT_IMAGE_SIZE
    batch_size: int = 256

    @classmethod
    def in_folder(cls, folder: Path, image_root: Path | None = None,
                  **given: Path | str | int | None) -> ImageListSource:
        """The lists DIR/train.txt, DIR/test.txt, DIR/database.txt (any of them replaced by a
        path given as `train`, `test` or `database`), images under `image_root` (default DIR);
        other `given` fields as named (None: the default)."""
        lists = {stem: Path(given.pop(stem, None) or layout.image_list(folder, stem))
                 for stem in LISTS}
        return cls(**lists, image_root=Path(image_root or folder),
                   **{key: value for key, value in given.items() if value is not None})


@dataclass(frozen=True)
class ListedImages:
    """The images of the three lists, each once: paths (n,) as listed, labels (n, C) uint8
    multi-hot, where[i] = (list file, line) of the first line naming image i, and each list's
    items as sorted int64 indices (`LISTS`)."""

    paths: list[str]
    labels: np.ndarray
    where: list[tuple[Path, int]]
    parts: dict[str, np.ndarray]


def read_list(path: Path) -> list[tuple[int, str, tuple[int, ...]]]:
    """The lines of one list file: (line number, image path, labels as 0/1 ints); blank lines
    skipped. An empty list, a line without labels, a label that is not 0 or 1, a label vector
    of another length than the first line's or without a 1 is a one-line error."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such list file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise GslbenchError(f"{path}: not a readable text file ({exc})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path} line {number}"
        if len(tokens) < 2 or any(token not in ("0", "1") for token in tokens[1:]):
            raise GslbenchError(f"{where}: want 'relative/path.jpg 0 1 0 ...' (a path, then "
                                f"labels of 0 or 1), got {line.strip()[:80]!r}")
        labels = tuple(int(token) for token in tokens[1:])
        if entries and len(labels) != len(entries[0][2]):
            raise GslbenchError(f"{where}: {len(labels)} label values, but line {entries[0][0]} "
                                f"has {len(entries[0][2])}")
        if not any(labels):
            raise GslbenchError(f"{where}: no label is 1 (the image would be relevant to nothing)")
        entries.append((number, tokens[0], labels))
    if not entries:
        raise GslbenchError(f"{path}: an empty list (no image)")
    return entries


def read_lists(source: ImageListSource) -> ListedImages:
    """The images of the three lists (`ListedImages`), numbered in order of first appearance in
    train.txt, test.txt, database.txt. One-line errors: those of `read_list`, lists of different
    label lengths, an image listed twice in one list, an image whose labels differ between
    lists, a test query that is also a training or database item."""
    index: dict[str, int] = {}
    paths, labels, where = [], [], []
    parts: dict[str, list[int]] = {}
    for stem in LISTS:
        path = getattr(source, stem)
        lines: dict[int, int] = {}  # item -> its line in this list
        for number, image, vector in read_list(path):
            if labels and len(vector) != len(labels[0]):
                raise GslbenchError(f"{path} line {number}: {len(vector)} label values, but "
                                    f"{where[0][0]} line {where[0][1]} has {len(labels[0])}")
            item = index.setdefault(image, len(paths))
            if item == len(paths):
                paths.append(image)
                labels.append(vector)
                where.append((path, number))
            elif item in lines:
                raise GslbenchError(f"{path} line {number}: {image} is listed already on line "
                                    f"{lines[item]}")
            elif labels[item] != vector:
                raise GslbenchError(f"{path} line {number}: {image} has other labels than on "
                                    f"{where[item][0]} line {where[item][1]}")
            lines[item] = number
        parts[stem] = sorted(lines)
    for stem in ("train", "database"):
        both = sorted(set(parts["test"]) & set(parts[stem]))
        if both:
            raise GslbenchError(f"{source.test}: {len(both)} test queries are also listed in "
                                f"{getattr(source, stem)} (the first: {paths[both[0]]})")
    return ListedImages(paths, np.array(labels, dtype=np.uint8), where,
                        {stem: np.array(items, dtype=np.int64) for stem, items in parts.items()})


def load_images(listed: ListedImages, items: range, root: Path, size: int,
                digests: list[str]) -> np.ndarray:
    """The images `items` of `listed` under `root`, as (b, 3, size, size) uint8 RGB (Pillow's
    bilinear resize); the sha256 of each file's bytes is appended to `digests`. A file that is
    missing or not an image is a one-line error naming its list file and line."""
    from PIL import Image, UnidentifiedImageError

    batch = np.empty((len(items), 3, size, size), np.uint8)
    for row, item in enumerate(items):
        path = root / listed.paths[item]
        list_file, line = listed.where[item]
        try:
            data = path.read_bytes()
            with Image.open(io.BytesIO(data)) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
        except FileNotFoundError:
            raise GslbenchError(f"{list_file} line {line}: {path}: no such image") from None
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError, ValueError) as exc:
            raise GslbenchError(f"{list_file} line {line}: {path}: not a readable image "
                                f"({exc})") from None
        batch[row] = np.asarray(rgb).transpose(2, 0, 1)
        digests.append(hashlib.sha256(data).hexdigest())
    return batch


def _check_images_exist(listed: ListedImages, root: Path) -> None:
    """Every listed image must be a file under `root` (checked before any is read)."""
    for item, image in enumerate(listed.paths):
        if not (root / image).is_file():
            list_file, line = listed.where[item]
            raise GslbenchError(f"{list_file} line {line}: {root / image}: no such image")


@backbones.capped_cpu_kernels()  # before torch runs anything in this process
def import_image_list(name: str, source: ImageListSource, data_dir: str | Path,
                      feature: str | None = None, split_seed: int = 0,
                      map_top: int | None = None, validation: Validation | None = None,
                      device: torch.device | str = "cpu") -> Path:
    """Read the lists of `source`, compute each image's features once (the backbone on
    `device`) and write DATA/NAME/FEATURE.h5 (FEATURE default: the backbone, suffixed with a
    non-default image size) and DATA/NAME/imported.json, the parts as the module docstring says
    (`split_seed` seeds the validation split, `validation` its sizes per class, default the
    protocol's; mAP@`map_top`, None: over the whole database); returns the feature file's path.
    Every problem is a one-line error, raised before anything is written."""
    spec = backbones.get_backbone(source.backbone)
    if feature is None:
        feature = source.backbone + ("" if source.image_size == backbones.DEFAULT_IMAGE_SIZE
                                     else f"-{source.image_size}")
    check_names(name, feature)
    listed = read_lists(source)
    _check_images_exist(listed, source.image_root)
    n, n_classes = listed.labels.shape
    validation = (validation or Validation()).resolved(
        n, n_classes, max(1, round(len(listed.parts["test"]) / n_classes)))
    parts = {PARTS[stem]: items for stem, items in listed.parts.items()}
    parts = with_validation(listed.labels, parts, validation, split_seed, keep_database=True)
    model = (backbones.load_model(source.backbone, source.image_size) if spec.dim is not None
             else None)
    digests = [sha256_file(getattr(source, stem)) for stem in LISTS]
    chunks = []
    for start in range(0, n, source.batch_size):
        images = load_images(listed, range(start, min(n, start + source.batch_size)),
                             source.image_root, source.image_size, digests)
        chunks.append(backbones.extract_features(
            images, source.backbone, image_size=source.image_size, batch_size=source.batch_size,
            desc=f"{name} images {start}..", model=model, device=device))
    features = np.concatenate(chunks)
    record = {"source": "image-list", "query_per_class": 0, "train_per_class": 0,
              "train_in_database": bool(np.isin(parts["train"], parts["database"]).any()),
              "map_top": map_top, "split_seed": split_seed, "given_split": True}
    attrs = {"backbone": source.backbone, "image_size": source.image_size,
             "weights_sha256": spec.weights_sha256, "validation": json.dumps(asdict(validation)),
             "validation_in_database": True, "resize": "Pillow RGB bilinear",
             "imported_from": json.dumps([str(getattr(source, stem)) for stem in LISTS]
                                         + [str(source.image_root)])}
    if spec.dim is not None:
        attrs["extraction"] = json.dumps(backbones.extraction_record(), sort_keys=True)
    split = {part: Split(features[idx], listed.labels[idx], idx) for part, idx in parts.items()}
    return write_import(name, feature, data_dir, split, record,
                        hashlib.sha256(" ".join(digests).encode()).hexdigest(), attrs)
