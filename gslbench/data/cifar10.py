"""`cifar10`: the official CIFAR-10 python tarball (60,000 32x32 RGB images, 10 classes).
Protocol: 100 queries and 500 training items per class; the database is the rest (54,000), the
training items kept out of it; mAP over the whole database."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from gslbench.data import fetch
from gslbench.data.base import HELD_OUT_PROTOCOL, Dataset, RawData, class_images
from gslbench.data.fetch import RemoteFile, Source
from gslbench.errors import GslbenchError
from gslbench.storage import md5_file

CIFAR_DIR = "cifar-10-batches-py"
# The archive's sha256 is the one published by Keras / TFDS for this exact file; md5 and size
# are the Toronto page's. The batches' md5 are those torchvision checks.
SOURCE = Source(
    name="cifar10",
    files=(
        RemoteFile(
            "cifar-10-python.tar.gz",
            ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
             "http://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
            size=170_498_071,
            md5="c58f30108f718f92721af3b95e74349a",
            sha256="6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
        ),
    ),
    archive="tar",
    extracted=(
        (f"{CIFAR_DIR}/data_batch_1", "c99cafc152244af753f735de768cd75f"),
        (f"{CIFAR_DIR}/data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
        (f"{CIFAR_DIR}/data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
        (f"{CIFAR_DIR}/data_batch_4", "634d18415352ddfa80567beed471001a"),
        (f"{CIFAR_DIR}/data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
        (f"{CIFAR_DIR}/test_batch", "40351d587109b95175f43aff81a1287e"),
        (f"{CIFAR_DIR}/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
    ),
)

CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")


def _download_cifar10(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    fetch.fetch_source(SOURCE, raw_dir, url=url, from_dir=from_dir)
    return raw_dir / CIFAR_DIR


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only; any other global is refused."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # numpy 2 name, without the deprecation warning
        return super().find_class(module, name)


def _unpickle_verified(path: Path, md5: str) -> dict:
    """Load a CIFAR batch, only after its md5 matched; keys decoded to str."""
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download cifar10` first")
    if md5_file(path) != md5:
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
    md5 = dict(SOURCE.extracted)
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
    return class_images(images, targets, names, fetch.source_sha256(raw_dir, "cifar10"))


CIFAR10 = Dataset(name="cifar10", protocol=HELD_OUT_PROTOCOL, default_feature="efficientnet-lite0",
                  download=_download_cifar10, load_raw=_load_cifar10)
