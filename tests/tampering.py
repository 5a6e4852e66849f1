"""Test helpers that damage or forge gslbench's files the way a user or a faulty disk would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import h5py

from gslbench.storage import DIGEST_ATTR, content_sha256


@contextlib.contextmanager
def forged_h5(path: Path) -> Iterator[h5py.File]:
    """Edit an HDF5 file in place, then stamp it with the digest of its new content, as a
    deliberate forger would: what is left to catch it are the checks of the values themselves."""
    with h5py.File(path, "r+") as handle:
        yield handle
        handle.attrs[DIGEST_ATTR] = content_sha256(handle)
