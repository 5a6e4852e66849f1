"""Data sets, one module each (source, checksums, reader, protocol), registered in `DATASETS`;
`fetch` (resumable checked downloads), `featurefile` (the feature file), `backbones` (feature
extractors) and `features` (the features step) beside them."""

from __future__ import annotations

from pathlib import Path

from gslbench import layout
from gslbench.data.base import Dataset, Protocol, RawData, split_indices
from gslbench.data.cifar10 import CIFAR10
from gslbench.data.digits import DIGITS
from gslbench.data.fashion_mnist import FASHION_MNIST
from gslbench.data.nuswide21 import NUSWIDE21
from gslbench.errors import lookup

DATASETS: dict[str, Dataset] = {
    dataset.name: dataset for dataset in (DIGITS, FASHION_MNIST, CIFAR10, NUSWIDE21)
}


def get_dataset(name: str) -> Dataset:
    """The registered data set called `name`; an unknown name is a user error listing the known."""
    return lookup(DATASETS, name, "data set")


def feature_path(data_dir: str | Path, name: str, feature: str | None = None) -> Path:
    """Where the feature file of data set `name` with feature `feature` (default: its own) lives."""
    return layout.feature_path(data_dir, name, feature or get_dataset(name).default_feature)


def download(
    name: str, data_dir: str | Path, url: str | None = None, from_dir: str | Path | None = None
) -> Path:
    """Fetch data set `name`'s raw files under DATA_DIR/NAME/raw, verified; return the main path.

    `url` overrides the registered source (a folder URL ending in "/" for multi-file sources);
    `from_dir` imports files placed by hand (verified the same way). Returns the raw file
    (digits.npz), the unpacked folder (cifar10) or the raw folder (fashion-mnist, nuswide21).
    """
    dataset = get_dataset(name)
    directory = layout.raw_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    return dataset.download(directory, url, Path(from_dir) if from_dir is not None else None)


__all__ = ["DATASETS", "Dataset", "Protocol", "RawData", "download", "feature_path", "get_dataset",
           "split_indices"]
