"""Test fakes for the data sets: tiny files in the real formats and a local HTTP file server.

- `FileServer`: http.server on 127.0.0.1 in a thread, serving in-memory files with Range support
  and scripted faults (early close, wrong body, HTTP errors, Range ignored).
- `cifar_tarball`, `fashion_files`, `nuswide_tree`: CIFAR-10 python batches in a .tar.gz with
  the real layout, Fashion-MNIST gzipped idx files, NUS-WIDE text files; tiny.
- `remote_for`, `cifar_source`, `fashion_source`: registry entries (gslbench.fetch.Source)
  pointing at the fakes, with their real checksums.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import re
import socket
import struct
import tarfile
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

from gslbench.data.fetch import RemoteFile, Source

# --- a local HTTP server -----------------------------------------------------------------------


@dataclass
class Fault:
    """How the server misbehaves for a file, for the next `times` requests of it."""

    times: int = 1_000_000
    drop_after: int | None = None  # announce the full length, send this many bytes, then close
    status: int | None = None  # answer with this HTTP error instead
    body: bytes | None = None  # serve these bytes instead (with their own, honest length)
    ignore_range: bool = False  # answer Range requests with the whole file (200)


class FileServer:
    """Serves `files` (name -> bytes) at http://127.0.0.1:PORT/NAME; records every request."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.requests: list[tuple[str, str | None]] = []
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def add(self, name: str, data: bytes, fault: Fault | None = None) -> str:
        self.files[name] = data
        if fault is not None:
            self.faults[name] = fault
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/{name}"

    def requests_for(self, name: str) -> list[str | None]:
        """The Range header of each request of `name` (None: no Range)."""
        return [rng for path, rng in self.requests if path == name]


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep pytest's output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        owner: FileServer = self.server.owner
        name = self.path.lstrip("/")
        rng = self.headers.get("Range")
        owner.requests.append((name, rng))
        if name not in owner.files:
            self.send_error(404)
            return
        fault = owner.faults.get(name)
        active = fault is not None and fault.times > 0
        if active:
            fault.times -= 1
        if active and fault.status:
            self.send_error(fault.status)
            return
        body = fault.body if active and fault.body is not None else owner.files[name]
        match = re.fullmatch(r"bytes=(\d+)-", rng or "")
        if match and not (active and fault.ignore_range):
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            payload = body[start:]
        else:
            self.send_response(200)
            payload = body
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if active and fault.drop_after is not None:
            payload = payload[:fault.drop_after]
        self.wfile.write(payload)
        self.wfile.flush()


def closed_port_url(name: str = "file.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


# --- registry entries for fakes ----------------------------------------------------------------

def remote_for(name: str, data: bytes, urls: tuple[str, ...], gunzip: bool = False) -> RemoteFile:
    """A RemoteFile whose size and checksums are those of `data` (gunzipped when `gunzip`)."""
    content = gzip.decompress(data) if gunzip else data
    return RemoteFile(name, urls, size=len(content), md5=hashlib.md5(content).hexdigest(),
                      sha256=hashlib.sha256(content).hexdigest(), gunzip=gunzip)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# --- CIFAR-10 ----------------------------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]
CIFAR_BATCHES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")


def cifar_tarball(per_class_per_batch: int = 2, seed: int = 0) -> tuple[bytes, dict[str, bytes]]:
    """A cifar-10-python.tar.gz in the real layout, tiny; returns (tarball, member -> bytes).

    Each batch is a pickled dict with the real bytes keys (data: (n, 3072) uint8, labels: list,
    filenames, batch_label); batches.meta holds label_names. Images of class c are brighter with c.
    """
    rng = np.random.default_rng(seed)
    members = {}
    for index, batch in enumerate(CIFAR_BATCHES):
        labels = np.repeat(np.arange(10), per_class_per_batch)
        rng.shuffle(labels)
        data = (rng.integers(0, 40, (len(labels), 3072)) + 20 * labels[:, None]).astype(np.uint8)
        content = {
            b"batch_label": f"fake batch {index + 1} of 6".encode(),
            b"labels": labels.tolist(),
            b"data": data,
            b"filenames": [f"img_{index}_{i}.png".encode() for i in range(len(labels))],
        }
        members[f"cifar-10-batches-py/{batch}"] = pickle.dumps(content, protocol=2)
    meta = {b"num_cases_per_batch": 10 * per_class_per_batch, b"num_vis": 3072,
            b"label_names": [name.encode() for name in CIFAR_NAMES]}
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(meta, protocol=2)
    members["cifar-10-batches-py/readme.html"] = b"<html>fake</html>"
    return make_tar(members), members


def make_tar(members: dict[str, bytes], extra: list[tarfile.TarInfo] | None = None) -> bytes:
    """A .tar.gz holding `members` (name -> bytes) and any extra raw TarInfo entries."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    return buffer.getvalue()


def cifar_source(tarball: bytes, members: dict[str, bytes], urls: tuple[str, ...]) -> Source:
    """A registry entry for a fake CIFAR-10 tarball served at `urls`."""
    expected = tuple((name, md5(data)) for name, data in members.items()
                     if not name.endswith("readme.html"))
    return Source("cifar10", (remote_for("cifar-10-python.tar.gz", tarball, urls),),
                  archive="tar", extracted=expected)


# --- Fashion-MNIST -----------------------------------------------------------------------------

FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray) -> bytes:
    """An uint8 array in the idx format (magic 0x0000 08 NDIM, big-endian dims, data)."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def fashion_files(train_per_class: int = 6, test_per_class: int = 2, seed: int = 0
                  ) -> dict[str, bytes]:
    """The four gzipped idx files of a tiny Fashion-MNIST: name -> .gz bytes."""
    rng = np.random.default_rng(seed)
    files = {}
    for prefix, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = (rng.integers(0, 50, (len(labels), 28, 28)) + 20 * labels[:, None, None])
        files[f"{prefix}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(images), mtime=0)
        files[f"{prefix}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels), mtime=0)
    return files


def fashion_source(files: dict[str, bytes], base_urls: tuple[str, ...]) -> Source:
    """A registry entry for fake Fashion-MNIST files under each of `base_urls` (ending in '/')."""
    return Source("fashion-mnist", tuple(
        remote_for(name, files[name], tuple(base + name for base in base_urls), gunzip=True)
        for name in FASHION_FILES
    ))


# --- NUS-WIDE ----------------------------------------------------------------------------------

@dataclass
class FakeNuswide:
    """What `nuswide_tree` wrote, for the tests to compare against."""

    root: Path
    labels: np.ndarray  # (n, 81) uint8, in Imagelist order
    concepts: list[str]  # the 81 names, sorted
    features: dict[str, np.ndarray]  # name -> (n, d) as written


def nuswide_tree(root: Path, n_images: int = 500, seed: int = 0) -> FakeNuswide:
    """NUS-WIDE's official files, tiny, under `root` in the real layout and text formats.

    Groundtruth/AllLabels/Labels_<concept>.txt (81 files, one 0/1 per line, CRLF like the
    originals), ImageList/{Imagelist,TrainImagelist,TestImagelist}.txt (Windows paths),
    Low_Level_Features/Normalized_CM55.dat (trailing space on each line), Normalized_CH.dat (an
    extra constant trailing column) and BoW split into BoW_Train_int.dat / BoW_Test_int.dat.
    Concept frequencies fall with the concept number, and some images have no top-21 concept.
    """
    rng = np.random.default_rng(seed)
    concepts = sorted(f"concept{c:02d}" for c in range(81))
    frequency = 0.25 * 0.9 ** rng.permutation(81)
    labels = (rng.random((n_images, 81)) < frequency).astype(np.uint8)
    truth = root / "Groundtruth" / "AllLabels"
    truth.mkdir(parents=True)
    for c, concept in enumerate(concepts):
        (truth / f"Labels_{concept}.txt").write_bytes(
            b"".join(b"%d\r\n" % v for v in labels[:, c]))
    names = [f"concept{i % 7}\\{i:04d}_{rng.integers(1e9)}.jpg" for i in range(n_images)]
    image_list = root / "ImageList"
    image_list.mkdir()
    (image_list / "Imagelist.txt").write_text(
        "".join(f"C:\\ImageData\\Flickr\\{name}\n" for name in names))
    train = np.sort(rng.choice(n_images, n_images * 3 // 5, replace=False))
    test = np.setdiff1d(np.arange(n_images), train)
    rng.shuffle(test)  # the halves need not follow Imagelist order
    (image_list / "TrainImagelist.txt").write_text("".join(f"{names[i]}\n" for i in train))
    (image_list / "TestImagelist.txt").write_text("".join(f"{names[i]}\n" for i in test))
    features = {
        "cm55": rng.normal(size=(n_images, 225)).round(6).astype(np.float32),
        "ch": rng.random((n_images, 64)).round(6).astype(np.float32),
        "bow": rng.integers(0, 5, (n_images, 500)).astype(np.float32),
    }
    low = root / "Low_Level_Features"
    low.mkdir()
    _write_matrix(low / "Normalized_CM55.dat", features["cm55"], "%.6f", trailing=" ")
    constant = np.hstack([features["ch"], np.ones((n_images, 1), np.float32)])
    _write_matrix(low / "Normalized_CH.dat", constant, "%.6f")
    _write_matrix(low / "BoW_Train_int.dat", features["bow"][train], "%d", trailing=" ")
    _write_matrix(low / "BoW_Test_int.dat", features["bow"][test], "%d", trailing=" ")
    return FakeNuswide(root, labels, concepts, features)


def _write_matrix(path: Path, matrix: np.ndarray, fmt: str, trailing: str = "") -> None:
    lines = (" ".join(fmt % v for v in row) + trailing + "\n" for row in matrix)
    path.write_text("".join(lines))
