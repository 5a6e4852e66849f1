"""Check freshly built feature files against the committed expected checksums, or record them.

docs/features.sha256.json maps "DATASET/FEATURE" to the record of the feature file the
published results were made from (`gslbench.data.checksums.feature_record`): its identity,
features_digest (features, labels and split; not the attributes or the HDF5 layout), and what
explains a difference (the raw files' sha256, the extraction's precision, threads, torch version
and kernel instruction set, the file's own sha256). After

    gslbench download fashion-mnist && gslbench features fashion-mnist

on a fresh clone,

    python benchmarks/feature_checksums.py [--data-dir datasets] [DATASET/FEATURE ...]

prints for each listed file (default: every one the expected file lists) `same` or what differs,
and exits 1 when one differs or is missing. After a change that changes the features or their
split on purpose (a new format or split), record the new files with

    python benchmarks/feature_checksums.py --write fashion-mnist/efficientnet-lite0 digits/pixels
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gslbench import layout
from gslbench.data.checksums import differences, feature_record
from gslbench.errors import GslbenchError
from gslbench.storage import read_json, write_json

EXPECTED = Path(__file__).resolve().parents[1] / "docs" / "features.sha256.json"


def check(expected: dict, keys: list[str], data_dir: Path) -> int:
    """Print, for each key, `same` or the differences; the number of files that differ or are
    missing."""
    failed = 0
    for key in keys:
        path = _feature_file(data_dir, key)
        if key not in expected:
            print(f"{key}: not in the expected checksums")
            failed += 1
        elif not path.is_file():
            print(f"{key}: {path} missing; run `gslbench download {key.split('/')[0]}` and "
                  f"`gslbench features {key.split('/')[0]}`")
            failed += 1
        else:
            found = feature_record(path)
            lines = differences(expected[key], found)
            bytes_note = ("" if found["file_sha256"] == expected[key].get("file_sha256")
                          else " (the file's bytes differ: attributes or HDF5 layout)")
            print(f"{key}: " + ("same features, digest " + found["features_digest"] + bytes_note
                                if not lines else "DIFFERENT\n  " + "\n  ".join(lines)))
            failed += bool(lines)
    return failed


def _feature_file(data_dir: Path, key: str) -> Path:
    dataset, _, feature = key.partition("/")
    return layout.feature_path(data_dir, dataset, feature)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("keys", nargs="*", metavar="DATASET/FEATURE",
                        help="the feature files (default: every one the expected file lists)")
    parser.add_argument("--data-dir", type=Path, default=Path("datasets"))
    parser.add_argument("--expected", type=Path, default=EXPECTED)
    parser.add_argument("--write", action="store_true",
                        help="record the listed files (default: the listed ones) as expected")
    args = parser.parse_args(argv)
    try:
        expected = read_json(args.expected) if args.expected.is_file() else {}
        keys = args.keys or sorted(expected)
        if not args.write:
            return 1 if check(expected, keys, args.data_dir) else 0
        for key in keys:
            expected[key] = feature_record(_feature_file(args.data_dir, key))
        write_json(args.expected, expected)
    except GslbenchError as exc:
        print(f"feature_checksums: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({key: expected[key]["features_digest"] for key in keys}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
