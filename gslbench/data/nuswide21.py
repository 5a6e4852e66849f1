"""`nuswide21`: NUS-WIDE's official label and low-level feature files, placed by hand (the official
host is gone), restricted to the 21 most frequent of its 81 concepts (multi-label). Protocol: 100
queries and 500 training items per concept, the training items drawn from the database
(193,734 items); mAP@5000."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gslbench.data import fetch
from gslbench.data.base import Dataset, Protocol, RawData
from gslbench.data.fetch import Source
from gslbench.errors import GslbenchError

MANUAL = (
    "the official NUS-WIDE host is gone, so nothing can be downloaded: from a copy of the official "
    "release, put Groundtruth/AllLabels/Labels_*.txt (81 files), Low_Level_Features/*.dat "
    "(BoW_int.dat or BoW_Train_int.dat + BoW_Test_int.dat, Normalized_CM55.dat, ...) and "
    "ImageList/{Imagelist,TrainImagelist,TestImagelist}.txt under one folder DIR, keeping those "
    "sub-folders, then run `gslbench download nuswide21 --from DIR`"
)
SOURCE = Source(name="nuswide21", manual=MANUAL)
NUSWIDE_CONCEPTS = 81
NUSWIDE_KEEP = 21
NUSWIDE_LAYOUT = (("Groundtruth/AllLabels", "Labels_*.txt"), ("Low_Level_Features", "*.dat"),
                  ("ImageList", "*.txt"))
# Official low-level features: name -> dimension. File names vary: Normalized_CM55.dat (all
# images, Imagelist.txt order), Train_Normalized_CM55.dat + Test_..., BoW_int.dat,
# BoW_Train_int.dat + BoW_Test_int.dat; the split files follow {Train,Test}Imagelist.txt.
NUSWIDE_FEATURES = {"bow": 500, "cm55": 225, "ch": 64, "corr": 144, "edh": 73, "wt": 128}


def _download_nuswide(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    if url is not None:
        raise GslbenchError(f"nuswide21: no URL serves NUS-WIDE any more; {MANUAL}")
    if from_dir is None:
        raise GslbenchError(f"nuswide21: {MANUAL} (they are copied into {raw_dir})")
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


NUSWIDE21 = Dataset(
    name="nuswide21",
    protocol=Protocol(query_per_class=100, train_per_class=500, map_top=5000),
    default_feature="bow",
    download=_download_nuswide,
    load_raw=_load_nuswide,
    features=tuple(NUSWIDE_FEATURES),
)
