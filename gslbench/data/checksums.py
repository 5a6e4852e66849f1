"""Expected feature checksums: what a freshly built feature file must hold, and why it may not.

The record of a feature file (`feature_record`) is its identity, `features_digest` (the sha256
of its features, labels and split, recomputed from the file's arrays: `features.features_digest`),
with what explains a difference: `source_sha256` and `source_files` (the raw files), `extraction`
(precision, threads, torch, the instruction set of its kernels) and `file_sha256` (the bytes,
which attributes such as the thread count and the HDF5 library change without changing a value).
An expected-checksums file (JSON, e.g. docs/features.sha256.json) maps "DATASET/FEATURE" to such
records; `differences` compares one with a fresh file's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gslbench.data.featurefile import read_feature_file
from gslbench.data.features import features_digest
from gslbench.storage import sha256_file

IDENTITY = ("features_digest", "source_sha256")  # must be equal; the rest explains a difference


def feature_record(path: str | Path) -> dict[str, Any]:
    """The record of the feature file at `path`: features_digest (recomputed from its arrays),
    source_sha256, source_files {name: sha256}, extraction (None for features without a CNN)
    and file_sha256."""
    features = read_feature_file(path)
    extra = features.extra_attrs
    return {
        "features_digest": features_digest(features),
        "source_sha256": features.source_sha256,
        "source_files": json.loads(str(extra.get("source_files", "{}"))),
        "extraction": json.loads(str(extra.get("extraction", "null"))),
        "file_sha256": sha256_file(path),
    }


def differences(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    """What differs between an expected record and a found one, one line each: first the
    identity (`IDENTITY`), then, where the features differ, the raw files and the extraction
    settings that differ (the likely reasons). [] when the identity is the same, whatever the
    file's bytes."""
    lines = [f"{key}: expected {expected.get(key)}, found {found.get(key)}"
             for key in IDENTITY if expected.get(key) != found.get(key)]
    if not lines:
        return []
    for key in ("source_files", "extraction"):
        before, after = expected.get(key) or {}, found.get(key) or {}
        lines += [f"{key} {name}: expected {before.get(name)}, found {after.get(name)}"
                  for name in sorted(set(before) | set(after)) if before.get(name) != after.get(name)]
    return lines
