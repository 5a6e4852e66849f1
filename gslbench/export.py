"""`gslbench export`: a run's codes and representations in other tools' formats.

- `export_faiss` writes the database codes as a faiss index (`faiss.write_index`), built by
  `gslbench.quantizers.search.faiss_index`: `faiss.read_index` gives back the same codes and
  searches with the same distances as gslbench's ADC (l2), or the inner products (ip).
- `export_ann_benchmarks` writes the run's float representations in ann-benchmarks' HDF5 layout:
  `train` (n_db, d) float32 = the database, `test` (nq, d) float32 = the queries, `neighbors`
  (nq, k) int32 and `distances` (nq, k) float32 = the exact k nearest database vectors of each
  query, nearest first, ties by database index; attrs `distance`, `dimension`, `point_type`
  ("float"), `type` ("dense"), plus gslbench's provenance (run, codes_sha256, created_by).
  `distance` follows ann-benchmarks: "euclidean" for l2 (distances = ||q - x||, not squared),
  "angular" for ip (neighbours and distances by 1 - cos(q, x), its cosine distance); ip needs
  unit-norm vectors (gslbench's networks end with an L2 normalisation, checked to 1e-3), so that
  the angular order is the inner product's.

Both read only RUN/codes.h5 and write atomically.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from gslbench import layout
from gslbench.encode import Codes, check_encoded
from gslbench.errors import GslbenchError
from gslbench.evaluation.speed import exact_neighbours
from gslbench.lazy import lazy_import
from gslbench.quantizers.search import check_mode, faiss_index
from gslbench.storage import atomic_path, package_versions, sha256_file

faiss = lazy_import("faiss")

ANN_DISTANCES = {"l2": "euclidean", "ip": "angular"}
UNIT_NORM_TOLERANCE = 1e-3
NEIGHBOURS = 100  # ann-benchmarks' count


def _read(run: str | Path, results_dir: str | Path) -> tuple[layout.RunDir, Codes]:
    run_dir = layout.resolve_run(results_dir, run)
    if not run_dir.codes.is_file():
        raise GslbenchError(f"{run_dir.codes}: no such file; run `gslbench encode {run_dir.path}` first")
    return run_dir, check_encoded(run_dir)


def export_faiss(run: str | Path, results_dir: str | Path, path: str | Path,
                 metric: str = "l2") -> Path:
    """Write the run's database codes as a faiss index file at `path`; return it."""
    check_mode("adc", metric)
    _, codes = _read(run, results_dir)
    index = faiss_index(codes.quantizer, codes.codes, metric)
    path = Path(path)
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
    return path


def export_ann_benchmarks(run: str | Path, results_dir: str | Path, path: str | Path,
                          metric: str = "l2", k: int = NEIGHBOURS) -> Path:
    """Write the run's representations and their exact neighbours as an ann-benchmarks HDF5 file
    at `path` (module docstring); return it."""
    check_mode("adc", metric)
    if k < 1:
        raise GslbenchError(f"--k {k}: must be a positive integer")
    run_dir, codes = _read(run, results_dir)
    train = codes.database
    test = np.ascontiguousarray(codes.queries, dtype=np.float32)
    if metric == "ip":
        norms = np.linalg.norm(np.concatenate([train, test]), axis=1)
        if np.max(np.abs(norms - 1)) > UNIT_NORM_TOLERANCE:
            raise GslbenchError(f"{run_dir.codes}: --metric ip exports as ann-benchmarks' "
                                "angular distance, which ranks like the inner product only for "
                                f"unit-norm vectors (norms here from {norms.min():.4g} to "
                                f"{norms.max():.4g}); export with --metric l2")
        unit_train = train / np.linalg.norm(train, axis=1, keepdims=True)
        unit_test = test / np.linalg.norm(test, axis=1, keepdims=True)
        neighbours, distances = exact_neighbours(unit_test, unit_train, "ip", k)
        distances = 1 + distances  # 1 - cos(q, x)
    else:
        neighbours, distances = exact_neighbours(test, train, "l2", k)
        distances = np.sqrt(np.maximum(distances, 0))
    path = Path(path)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.create_dataset("train", data=train)
        handle.create_dataset("test", data=test)
        handle.create_dataset("neighbors", data=neighbours.astype(np.int32))
        handle.create_dataset("distances", data=distances.astype(np.float32))
        handle.attrs.update({
            "distance": ANN_DISTANCES[metric], "dimension": train.shape[1], "point_type": "float",
            "type": "dense", "run": str(codes.attrs["run"]),
            "codes_sha256": sha256_file(run_dir.codes),
            "created_by": f"gslbench {package_versions()['gslbench']}",
        })
    return path
