"""`fashion-mnist`: Zalando's Fashion-MNIST (70,000 28x28 grayscale images, 10 classes) as gzipped
idx files, from Debian's `dataset-fashion-mnist` when installed, else the official mirrors.
Protocol: 100 queries and 500 training items per class; the database is the rest (64,000), the
training items kept out of it; mAP over the whole database."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from gslbench.data import fetch
from gslbench.data.base import HELD_OUT_PROTOCOL, Dataset, RawData, class_images
from gslbench.data.fetch import RemoteFile, Source
from gslbench.errors import GslbenchError
from gslbench.storage import digest_file

_FASHION_DEBIAN = "/usr/share/datasets/fashion-mnist"
_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)


def _fashion_file(name: str, size: int, md5: str, sha256: str) -> RemoteFile:
    urls = (Path(_FASHION_DEBIAN, name).as_uri(), *(base + name for base in _FASHION_MIRRORS))
    return RemoteFile(name, urls, size=size, md5=md5, sha256=sha256, gunzip=True)


# Debian's dataset-fashion-mnist first (it recompresses the .gz files, so the checksums are of
# the decompressed idx files: md5 as published by Zalando, sha256 computed from that content).
SOURCE = Source(
    name="fashion-mnist",
    files=(
        _fashion_file("train-images-idx3-ubyte.gz", 47_040_016,
                      "f4a8712d7a061bf5bd6d2ca38dc4d50a",
                      "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        _fashion_file("train-labels-idx1-ubyte.gz", 60_008,
                      "9018921c3c673c538a1fc5bad174d6f9",
                      "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        _fashion_file("t10k-images-idx3-ubyte.gz", 7_840_016,
                      "8181f5470baa50b63fa0f6fddb340f0a",
                      "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        _fashion_file("t10k-labels-idx1-ubyte.gz", 10_008,
                      "15d484375f8d13e6eb1aabb0c3f46965",
                      "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    ),
)

FASHION_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                  "Sneaker", "Bag", "Ankle boot"]
FASHION_PARTS = (("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
                 ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))


def _download_fashion(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    fetch.fetch_source(SOURCE, raw_dir, url=url, from_dir=from_dir)
    return raw_dir


def read_idx(path: Path, md5: str | None = None) -> np.ndarray:
    """A gzipped idx file (uint8 data) -> its array, e.g. (n, 28, 28) images or (n,) labels.

    Checks the md5 of the decompressed bytes when given, the magic number and the size.
    """
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download fashion-mnist` first")
    try:
        if md5 is not None and digest_file(path, gunzip=True).md5 != md5:
            raise GslbenchError(f"{path}: md5 checksum mismatch of the decompressed idx data")
        with gzip.open(path, "rb") as handle:
            data = handle.read()
    except (OSError, EOFError) as exc:
        raise GslbenchError(f"{path}: not a readable gzip file ({exc})") from None
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
    md5 = {remote.name: remote.md5 for remote in SOURCE.files}
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
    return class_images(images, targets, FASHION_LABELS,
                        fetch.source_sha256(raw_dir, "fashion-mnist"))


FASHION_MNIST = Dataset(name="fashion-mnist", protocol=HELD_OUT_PROTOCOL,
                        default_feature="efficientnet-lite0", download=_download_fashion,
                        load_raw=_load_fashion)
