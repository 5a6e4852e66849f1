"""Data sets and their protocols (DESIGN.md section 2): download, split, write the feature file.

| name            | raw data                                  | default feature    | protocol            |
|-----------------|-------------------------------------------|--------------------|---------------------|
| `digits`        | scikit-learn's bundled copy, 1,797 8x8    | pixels (64-d)      | 10/50 per class     |
| `fashion-mnist` | 70,000 28x28 grayscale (train + t10k)     | efficientnet-lite0 | 100/500 per class   |
| `cifar10`       | 60,000 32x32 RGB (data_batch_1..5 + test) | efficientnet-lite0 | 100/500 per class   |
| `nuswide21`     | NUS-WIDE's official files, 21 concepts    | bow (500-d BoW)    | 100/500 per concept |

Images stay in memory as uint8 (n, H, W) or (n, 3, H, W) arrays; `gslbench.backbones` turns them
into features. NUS-WIDE comes with its own low-level features instead of images.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import pickle
import struct
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gslbench import backbones
from gslbench import download as fetch
from gslbench.errors import GslbenchError
from gslbench.featurefile import FeatureSet, Split, multi_hot, write_feature_file
from gslbench.storage import atomic_path, sha256_file


@dataclass(frozen=True)
class Protocol:
    """How a data set is split and scored: per-class query/train counts and the mAP cut-off.

    `train_in_database`: training items are drawn from the database (digits, NUS-WIDE) or kept out
    of it (CIFAR-10, Fashion-MNIST: database = everything but the queries and the training set).
    """

    query_per_class: int
    train_per_class: int
    map_top: int | None  # None: mAP over the whole database
    train_in_database: bool = True


@dataclass(frozen=True)
class RawData:
    """A data set as loaded from its raw files, before any feature extraction.

    `labels` (n, C) uint8 multi-hot. Either `images` ((n, H, W) or (n, 3, H, W), values in
    [0, pixel_max]) or `vectors`, a function giving the provided features named by its argument
    as (n, d) float32 (NUS-WIDE). `source_sha256` is the checksum of the raw files.
    """

    labels: np.ndarray
    label_names: list[str]
    source_sha256: str
    images: np.ndarray | None = None
    pixel_max: float = 255.0
    vectors: Callable[[str], np.ndarray] | None = None


@dataclass(frozen=True)
class Dataset:
    """A registered data set: its protocol, features and how to fetch and load its raw files.

    `download(raw_dir, url, from_dir)` fetches into DATA_DIR/NAME/raw and returns the main path;
    `features` lists the feature names `build_features` accepts (NUS-WIDE also takes `+`-joined
    combinations of its own).
    """

    name: str
    protocol: Protocol
    default_feature: str
    download: Callable[[Path, str | None, Path | None], Path]
    load_raw: Callable[[Path], RawData]
    features: tuple[str, ...] = tuple(backbones.BACKBONES)


def split_indices(labels: np.ndarray, protocol: Protocol, seed: int) -> dict[str, np.ndarray]:
    """(n, C) multi-hot labels -> sorted int64 indices for query, train and database.

    Per class: draw `query_per_class` queries among the items not drawn yet; then draw
    `train_per_class` training items per class among the non-queries. The database is every item
    that is not a query, minus the training items when `protocol.train_in_database` is false.
    """
    rng = np.random.default_rng(seed)
    query = _draw_per_class(labels, np.ones(len(labels), bool), protocol.query_per_class, rng)
    in_database = np.ones(len(labels), bool)
    in_database[query] = False
    train = _draw_per_class(labels, in_database, protocol.train_per_class, rng)
    if not protocol.train_in_database:
        in_database[train] = False
    return {"query": query, "train": train, "database": np.flatnonzero(in_database)}


def _draw_per_class(
    labels: np.ndarray, available: np.ndarray, per_class: int, rng: np.random.Generator
) -> np.ndarray:
    drawn = np.zeros(len(labels), bool)
    for c in range(labels.shape[1]):
        pool = np.flatnonzero(available & ~drawn & (labels[:, c] > 0))
        if len(pool) < per_class:
            raise GslbenchError(f"class {c} has {len(pool)} items left, the protocol needs {per_class}")
        drawn[rng.choice(pool, per_class, replace=False)] = True
    return np.flatnonzero(drawn)


# --- digits: scikit-learn's bundled copy, nothing to fetch -------------------------------------

def _download_digits(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    if url is not None or from_dir is not None:
        raise GslbenchError("digits ships with scikit-learn: --url and --from do not apply")
    from sklearn.datasets import load_digits

    digits = load_digits()
    path = raw_dir / "digits.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, images=digits.data.astype(np.float32), target=digits.target)
    fetch.write_manifest(raw_dir, "digits", {path.name: sha256_file(path)})
    return path


def _load_digits(raw_dir: Path) -> RawData:
    path = raw_dir / "digits.npz"
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download digits` first")
    with np.load(path) as raw:
        images, target = raw["images"].reshape(-1, 8, 8), raw["target"]
    return RawData(labels=multi_hot(target, 10), label_names=[str(i) for i in range(10)],
                   source_sha256=_source_sha256(raw_dir, "digits", path),
                   images=images, pixel_max=16.0)


def _source_sha256(raw_dir: Path, name: str, single_file: Path | None = None) -> str:
    """The download record's checksum; for a single raw file written before records, its sha256."""
    if not (raw_dir / fetch.MANIFEST).is_file() and single_file is not None:
        return sha256_file(single_file)
    return fetch.source_sha256(raw_dir, name)


# --- CIFAR-10: the official python tarball -----------------------------------------------------

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")


def _download_cifar10(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    fetch.fetch_source(fetch.get_source("cifar10"), raw_dir, url=url, from_dir=from_dir)
    return raw_dir / CIFAR_DIR


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):  # noqa: ANN201
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 name, without the deprecation warning
        return super().find_class(module, name)


def _unpickle_verified(path: Path, md5: str) -> dict:
    """Load a CIFAR batch, only after its md5 matched; keys decoded to str."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download cifar10` first")
    if fetch.md5_file(path) != md5:
        raise GslbenchError(f"{path}: md5 checksum mismatch; run `gslbench download cifar10` again")
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise GslbenchError(f"{path}: not a CIFAR-10 batch ({exc})") from None
    if not isinstance(batch, dict):
        raise GslbenchError(f"{path}: not a CIFAR-10 batch (a {type(batch).__name__})")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _load_cifar10(raw_dir: Path) -> RawData:
    source = fetch.get_source("cifar10")
    md5 = dict(source.extracted)
    images, targets = [], []
    for name in CIFAR_BATCHES:
        path = raw_dir / CIFAR_DIR / name
        batch = _unpickle_verified(path, md5[f"{CIFAR_DIR}/{name}"])
        data, labels = np.asarray(batch.get("data")), np.asarray(batch.get("labels"))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise GslbenchError(f"{path}: data is {data.dtype} {data.shape}, expected uint8 (n, 3072)")
        if labels.shape != (len(data),) or not np.isin(labels, np.arange(10)).all():
            raise GslbenchError(f"{path}: labels must be {len(data)} class ids in 0..9")
        images.append(data.reshape(-1, 3, 32, 32))
        targets.append(labels)
    meta = _unpickle_verified(raw_dir / CIFAR_DIR / "batches.meta", md5[f"{CIFAR_DIR}/batches.meta"])
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    if len(names) != 10:
        raise GslbenchError(f"{raw_dir / CIFAR_DIR / 'batches.meta'}: expected 10 label names")
    return RawData(labels=multi_hot(np.concatenate(targets), 10), label_names=names,
                   source_sha256=fetch.source_sha256(raw_dir, "cifar10"),
                   images=np.concatenate(images))


# --- Fashion-MNIST: idx files, gzipped ---------------------------------------------------------

FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]
FASHION_PARTS = (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


def _download_fashion(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    fetch.fetch_source(fetch.get_source("fashion-mnist"), raw_dir, url=url, from_dir=from_dir)
    return raw_dir


def read_idx(path: Path, md5: str | None = None) -> np.ndarray:
    """A gzipped idx file (uint8 data) -> its array, e.g. (n, 28, 28) images or (n,) labels.

    Checks the md5 of the decompressed bytes when given, the magic number and the size.
    """
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download fashion-mnist` first")
    try:
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise GslbenchError(f"{path}: not a readable gzip file ({exc})") from None
    if md5 is not None and hashlib.md5(data).hexdigest() != md5:
        raise GslbenchError(f"{path}: md5 checksum mismatch of the decompressed idx data")
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise GslbenchError(f"{path}: not an idx file of unsigned bytes (magic {data[:4].hex()})")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise GslbenchError(f"{path}: idx header cut short")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) != header + int(np.prod(shape)):
        raise GslbenchError(
            f"{path}: idx header says {shape} = {int(np.prod(shape)):,} bytes, "
            f"file has {len(data) - header:,}"
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _load_fashion(raw_dir: Path) -> RawData:
    md5 = {remote.name: remote.md5 for remote in fetch.get_source("fashion-mnist").files}
    images, targets = [], []
    for images_name, labels_name in FASHION_PARTS:
        part_images = read_idx(raw_dir / images_name, md5.get(images_name))
        part_labels = read_idx(raw_dir / labels_name, md5.get(labels_name))
        if part_images.ndim != 3 or part_labels.shape != (len(part_images),):
            raise GslbenchError(
                f"{raw_dir / images_name}: {part_images.shape} images do not match "
                f"{part_labels.shape} labels in {labels_name}"
            )
        if part_labels.max(initial=0) >= 10:
            raise GslbenchError(f"{raw_dir / labels_name}: class ids must be in 0..9")
        images.append(part_images)
        targets.append(part_labels)
    return RawData(labels=multi_hot(np.concatenate(targets), 10), label_names=FASHION_LABELS,
                   source_sha256=fetch.source_sha256(raw_dir, "fashion-mnist"),
                   images=np.concatenate(images))


# --- NUS-WIDE: the official label and low-level feature files, imported by hand ----------------

NUSWIDE_CONCEPTS = 81
NUSWIDE_KEEP = 21
NUSWIDE_LAYOUT = (("Groundtruth/AllLabels", "Labels_*.txt"), ("Low_Level_Features", "*.dat"),
                  ("ImageList", "*.txt"))
# Official low-level features: name -> dimension. File names vary: Normalized_CM55.dat (all
# images, Imagelist.txt order), Train_Normalized_CM55.dat + Test_..., BoW_int.dat,
# BoW_Train_int.dat + BoW_Test_int.dat; the split files follow {Train,Test}Imagelist.txt.
NUSWIDE_FEATURES = {"bow": 500, "cm55": 225, "ch": 64, "corr": 144, "edh": 73, "wt": 128}


def _download_nuswide(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    source = fetch.get_source("nuswide21")
    if url is not None:
        raise GslbenchError(f"nuswide21: no URL serves NUS-WIDE any more; {source.manual}")
    if from_dir is None:
        raise GslbenchError(f"nuswide21: {source.manual} (they are copied into {raw_dir})")
    root = Path(from_dir)
    labels = sorted((root / "Groundtruth/AllLabels").glob("Labels_*.txt"))
    if len(labels) != NUSWIDE_CONCEPTS:
        raise GslbenchError(
            f"{root / 'Groundtruth/AllLabels'}: found {len(labels)} Labels_*.txt files, "
            f"NUS-WIDE has {NUSWIDE_CONCEPTS}"
        )
    if not any((root / "Low_Level_Features").glob("*.dat")):
        raise GslbenchError(
            f"{root / 'Low_Level_Features'}: no .dat feature files (e.g. BoW_int.dat, "
            "Normalized_CM55.dat)"
        )
    files = fetch.import_files(root, raw_dir, NUSWIDE_LAYOUT)
    fetch.write_manifest(raw_dir, "nuswide21", files)
    return raw_dir


def _read_binary_column(path: Path) -> np.ndarray:
    """A Labels_*.txt file: one 0 or 1 per line -> (n,) uint8."""
    tokens = path.read_bytes().split()
    values = np.array(tokens, dtype="S1") if tokens else np.zeros(0, "S1")
    if any(len(t) != 1 for t in tokens) or not np.isin(values, (b"0", b"1")).all():
        raise GslbenchError(f"{path}: expected one 0 or 1 per line")
    return (values == b"1").astype(np.uint8)


def read_nuswide_labels(raw_dir: Path) -> tuple[np.ndarray, list[str]]:
    """Groundtruth/AllLabels/Labels_*.txt -> ((n, 81) uint8 labels, concept names, sorted)."""
    paths = sorted((raw_dir / "Groundtruth/AllLabels").glob("Labels_*.txt"))
    if len(paths) != NUSWIDE_CONCEPTS:
        raise GslbenchError(
            f"{raw_dir / 'Groundtruth/AllLabels'}: found {len(paths)} Labels_*.txt files, "
            f"NUS-WIDE has {NUSWIDE_CONCEPTS}; run `gslbench download nuswide21 --from DIR`"
        )
    columns = [_read_binary_column(path) for path in paths]
    rows = len(columns[0])
    for path, column in zip(paths, columns, strict=True):
        if len(column) != rows:
            raise GslbenchError(f"{path}: {len(column)} rows, but {paths[0].name} has {rows}")
    names = [path.stem.removeprefix("Labels_") for path in paths]
    return np.stack(columns, axis=1), names


def top_concepts(labels: np.ndarray, names: list[str], keep: int) -> np.ndarray:
    """Column indices of the `keep` most frequent concepts (ties: by name), in name order."""
    counts = labels.sum(axis=0, dtype=np.int64)
    order = sorted(range(len(names)), key=lambda c: (-counts[c], names[c]))
    return np.array(sorted(order[:keep], key=lambda c: names[c]), dtype=np.int64)


def read_text_matrix(path: Path, dim: int, rows: int) -> np.ndarray:
    """A whitespace-separated text matrix -> (rows, dim) float32, validated.

    Tolerates an extra trailing column that is empty (trailing spaces) or constant.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float32, engine="c")
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise GslbenchError(f"{path}: not a numeric text matrix ({exc})".splitlines()[0]) from None
    matrix = frame.to_numpy(dtype=np.float32)
    if matrix.shape[1] == dim + 1 and (
        np.isnan(matrix[:, -1]).all() or (matrix[:, -1] == matrix[0, -1]).all()
    ):
        matrix = matrix[:, :dim]
    if matrix.shape != (rows, dim):
        raise GslbenchError(
            f"{path}: {matrix.shape[0]} rows x {matrix.shape[1]} columns, expected {rows} x {dim} "
            "(one row per line of the label files)"
        )
    if not np.isfinite(matrix).all():
        raise GslbenchError(f"{path}: has missing or non-numeric values")
    return np.ascontiguousarray(matrix)


def _feature_files(directory: Path) -> dict[tuple[str, str], Path]:
    """(feature name, "all" | "train" | "test") -> file, from the official file names."""
    found = {}
    for path in sorted(directory.glob("*.dat")):
        tokens = set(path.stem.lower().split("_"))
        part = "train" if "train" in tokens else "test" if "test" in tokens else "all"
        rest = tokens - {"train", "test", "normalized", "int"}
        if len(rest) == 1 and (name := rest.pop()) in NUSWIDE_FEATURES:
            found.setdefault((name, part), path)
    return found


def _image_keys(path: Path) -> list[str]:
    """An ImageList file -> comparable keys: the last two path parts, lower case."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file (needed to place the Train/Test feature rows)")
    lines = path.read_text(encoding="latin-1").splitlines()
    return ["/".join(line.strip().replace("\\", "/").lower().split("/")[-2:])
            for line in lines if line.strip()]


def read_nuswide_feature(raw_dir: Path, name: str, rows: int) -> np.ndarray:
    """One official low-level feature for all images, in label-file order -> (rows, d) float32."""
    directory = raw_dir / "Low_Level_Features"
    files = _feature_files(directory)
    dim = NUSWIDE_FEATURES[name]
    if (name, "all") in files:
        return read_text_matrix(files[name, "all"], dim, rows)
    if (name, "train") not in files or (name, "test") not in files:
        raise GslbenchError(
            f"{directory}: no file for feature {name!r} (e.g. "
            f"{'BoW_int.dat' if name == 'bow' else f'Normalized_{name.upper()}.dat'}, or its "
            "Train_/Test_ halves); run `gslbench download nuswide21 --from DIR`"
        )
    image_list = raw_dir / "ImageList"
    everything = _image_keys(image_list / "Imagelist.txt")
    if len(everything) != rows:
        raise GslbenchError(f"{image_list / 'Imagelist.txt'}: {len(everything)} images, expected {rows}")
    position = {key: i for i, key in enumerate(everything)}
    out = np.full((rows, dim), np.nan, dtype=np.float32)
    for part, list_name in (("train", "TrainImagelist.txt"), ("test", "TestImagelist.txt")):
        keys = _image_keys(image_list / list_name)
        missing = [key for key in keys if key not in position]
        if missing:
            raise GslbenchError(f"{image_list / list_name}: {missing[0]!r} is not in Imagelist.txt")
        out[[position[key] for key in keys]] = read_text_matrix(files[name, part], dim, len(keys))
    if np.isnan(out).any():
        raise GslbenchError(
            f"{image_list}: TrainImagelist.txt and TestImagelist.txt do not cover all {rows} images"
        )
    return out


def _load_nuswide(raw_dir: Path) -> RawData:
    all_labels, names = read_nuswide_labels(raw_dir)
    concepts = top_concepts(all_labels, names, NUSWIDE_KEEP)
    labels = all_labels[:, concepts]
    kept = np.flatnonzero(labels.any(axis=1))

    def vectors(feature: str) -> np.ndarray:
        parts = [read_nuswide_feature(raw_dir, part, len(all_labels))[kept]
                 for part in feature.split("+")]
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    return RawData(labels=labels[kept], label_names=[names[c] for c in concepts],
                   source_sha256=fetch.source_sha256(raw_dir, "nuswide21"), vectors=vectors)


DATASETS: dict[str, Dataset] = {
    "digits": Dataset(
        name="digits",
        protocol=Protocol(query_per_class=10, train_per_class=50, map_top=None),
        default_feature="pixels",
        download=_download_digits,
        load_raw=_load_digits,
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist",
        protocol=Protocol(query_per_class=100, train_per_class=500, map_top=None,
                          train_in_database=False),
        default_feature="efficientnet-lite0",
        download=_download_fashion,
        load_raw=_load_fashion,
    ),
    "cifar10": Dataset(
        name="cifar10",
        protocol=Protocol(query_per_class=100, train_per_class=500, map_top=None,
                          train_in_database=False),
        default_feature="efficientnet-lite0",
        download=_download_cifar10,
        load_raw=_load_cifar10,
    ),
    "nuswide21": Dataset(
        name="nuswide21",
        protocol=Protocol(query_per_class=100, train_per_class=500, map_top=5000),
        default_feature="bow",
        download=_download_nuswide,
        load_raw=_load_nuswide,
        features=tuple(NUSWIDE_FEATURES),
    ),
}


def get_dataset(name: str) -> Dataset:
    """The registered data set called `name`; an unknown name is a user error listing the known."""
    try:
        return DATASETS[name]
    except KeyError:
        raise GslbenchError(
            f"unknown data set {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


def raw_dir(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / name / "raw"


def feature_path(data_dir: str | Path, name: str, feature: str | None = None) -> Path:
    """Where the feature file of data set `name` with feature `feature` lives."""
    return Path(data_dir) / name / f"{feature or get_dataset(name).default_feature}.h5"


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


def download(
    name: str, data_dir: str | Path, url: str | None = None, from_dir: str | Path | None = None
) -> Path:
    """Fetch data set `name`'s raw files under DATA_DIR/NAME/raw, verified; return the main path.

    `url` overrides the registered source (a folder URL ending in "/" for multi-file sources);
    `from_dir` imports files placed by hand (verified the same way). Returns the raw file
    (digits.npz), the unpacked folder (cifar10) or the raw folder (fashion-mnist, nuswide21).
    """
    dataset = get_dataset(name)
    directory = raw_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    return dataset.download(directory, url, Path(from_dir) if from_dir is not None else None)


def build_features(
    name: str,
    data_dir: str | Path,
    backbone: str | None = None,
    image_size: int = 64,
    batch_size: int = 256,
    split_seed: int = 0,
) -> Path:
    """Split data set `name` by its protocol, compute its features and write the feature file.

    `backbone`: "pixels", "efficientnet-lite0" (images resized to `image_size`), or for nuswide21
    its official low-level features ("bow", "cm55", ..., or e.g. "bow+cm55"); default: the data
    set's own. Writes DATA_DIR/NAME/FEATURE.h5 (FEATURE = `feature_name(backbone, image_size)`)
    with attrs backbone, image_size, weights_sha256, protocol and source_sha256; returns its path.
    """
    dataset = get_dataset(name)
    backbone = backbone or dataset.default_feature
    _check_feature(dataset, backbone)
    raw = dataset.load_raw(raw_dir(data_dir, name))
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
                pixel_max=raw.pixel_max, desc=f"{name} {part}", model=model,
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
