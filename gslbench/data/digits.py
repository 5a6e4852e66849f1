"""`digits`: scikit-learn's bundled copy of the UCI handwritten digits (1,797 8x8 images, 10
classes); nothing to fetch. Protocol: 10 queries and 50 training items per class, the training
items drawn from the database; mAP over the whole database."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gslbench.data import fetch
from gslbench.data.base import Dataset, Protocol, RawData, source_sha256
from gslbench.data.featurefile import multi_hot
from gslbench.errors import GslbenchError
from gslbench.storage import atomic_path, sha256_file


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
                   source_sha256=source_sha256(raw_dir, "digits", path),
                   images=images, pixel_max=16.0)


DIGITS = Dataset(
    name="digits",
    protocol=Protocol(query_per_class=10, train_per_class=50, map_top=None),
    default_feature="pixels",
    download=_download_digits,
    load_raw=_load_digits,
)
