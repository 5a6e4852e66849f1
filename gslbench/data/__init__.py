"""Data sets, one module each (source, checksums, reader, protocol), registered in `DATASETS`,
and the data sets a user imported (`imported`: a record under DATA/NAME that `get_dataset`
reads); `fetch` (resumable checked downloads), `featurefile` (the feature file), `backbones`
(feature extractors and the CNN's trunk and top), `activations` (the trunk's cached activations
for fine-tuning) and `features` (the features step) beside them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gslbench import layout
from gslbench.data.annbenchmarks import AnnBenchmarksSource, import_ann_benchmarks
from gslbench.data.base import Dataset, Protocol, RawData, Validation, split_indices
from gslbench.data.cifar10 import CIFAR10
from gslbench.data.digits import DIGITS
from gslbench.data.fashion_mnist import FASHION_MNIST
from gslbench.data.glove import GLOVE
from gslbench.data.imagelist import ImageListSource, import_image_list
from gslbench.data.imported import ImportProtocol, ImportSource, imported_dataset
from gslbench.data.imported import import_features as _import_features
from gslbench.data.nuswide21 import NUSWIDE21
from gslbench.errors import GslbenchError, did_you_mean

BUILTIN_DATASETS: dict[str, Dataset] = {
    dataset.name: dataset for dataset in (DIGITS, FASHION_MNIST, CIFAR10, NUSWIDE21, GLOVE)
}


def plugin_problem(name: str, loaded: Any) -> str | None:
    """What is wrong with `loaded` as the plugin data set `name`: a plugin data set is a
    `Dataset` whose name is the entry point's."""
    if not isinstance(loaded, Dataset):
        return "it is not a gslbench.data.Dataset"
    return None if loaded.name == name else f"its name is {loaded.name!r}, not {name!r}"


# the built-ins, then the plugins (`gslbench.plugins.register_plugins`, run by gslbench.config)
DATASETS: dict[str, Dataset] = dict(BUILTIN_DATASETS)


def get_dataset(name: str, data_dir: str | Path | None = None) -> Dataset:
    """The registered data set called `name` (built-in or plugin), else the one imported under
    DATA_DIR/NAME (when `data_dir` is given); an unknown name is a user error listing the known
    ones (and the closest, when one is close)."""
    if name in DATASETS:
        return DATASETS[name]
    if data_dir is not None and layout.imported_path(data_dir, name).is_file():
        return imported_dataset(data_dir, name)
    where = f" or imported under {data_dir}" if data_dir is not None else ""
    raise GslbenchError(f"unknown data set {name!r}{did_you_mean(name, DATASETS)}; known: "
                        f"{', '.join(sorted(DATASETS))}{where} "
                        "(`gslbench features import NAME --from FILE` imports your own)")


def feature_path(data_dir: str | Path, name: str, feature: str | None = None) -> Path:
    """Where the feature file of data set `name` with feature `feature` (default: its own) lives."""
    return layout.feature_path(data_dir, name,
                               feature or get_dataset(name, data_dir).default_feature)


IMPORTERS = {ImportSource: _import_features, AnnBenchmarksSource: import_ann_benchmarks,
             ImageListSource: import_image_list}


def import_features(name: str, source: ImportSource | AnnBenchmarksSource | ImageListSource,
                    data_dir: str | Path, **options: Any) -> Path:
    """Import data set `name` from `source`: a user's features (`gslbench.data.imported`), an
    ann-benchmarks file (`gslbench.data.annbenchmarks`) or image lists
    (`gslbench.data.imagelist`), whose importer takes the `options`; a built-in name is refused.
    Returns the feature file's path."""
    if name in DATASETS:
        raise GslbenchError(f"{name} is a built-in data set; import under another name")
    return IMPORTERS[type(source)](name, source, data_dir, **options)


def download(
    name: str, data_dir: str | Path, url: str | None = None, from_dir: str | Path | None = None
) -> Path:
    """Fetch data set `name`'s raw files under DATA_DIR/NAME/raw, verified; return the main path.

    `url` overrides the registered source (a folder URL ending in "/" for multi-file sources);
    `from_dir` imports files placed by hand (verified the same way). Returns the raw file
    (digits.npz), the unpacked folder (cifar10) or the raw folder (fashion-mnist, nuswide21).
    """
    dataset = get_dataset(name, data_dir)
    directory = layout.raw_dir(data_dir, name)
    directory.mkdir(parents=True, exist_ok=True)
    return dataset.download(directory, url, Path(from_dir) if from_dir is not None else None)


__all__ = ["DATASETS", "AnnBenchmarksSource", "Dataset", "ImageListSource", "ImportProtocol",
           "ImportSource", "Protocol", "RawData", "Validation", "download", "feature_path",
           "get_dataset", "import_features", "split_indices"]
