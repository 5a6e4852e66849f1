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

Both read only the run's codes file of the fit asked (`gslbench.codes`: RUN/codes.h5, or
RUN/codes-database.h5 for `--codebooks database`), checked like evaluate's, and write atomically,
built in memory first (faiss and HDF5 never write to the disk themselves, so a full disk or a
read-only folder is one line and leaves no temporary file). `export_run` writes only where it
may (`gslbench.targets`): never into a run directory, never onto an existing file unless
`force`, never two outputs to one path.
"""

from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np

from gslbench import layout
from gslbench.codes import Codes, check_codes_use, check_encoded
from gslbench.errors import GslbenchError
from gslbench.evaluation.speed import exact_neighbours
from gslbench.lazy import lazy_import
from gslbench.quantizers.search import check_mode, faiss_index
from gslbench.storage import package_versions, write_bytes
from gslbench.targets import check_targets

faiss = lazy_import("faiss")

ANN_DISTANCES = {"l2": "euclidean", "ip": "angular"}
UNIT_NORM_TOLERANCE = 1e-3
NEIGHBOURS = 100  # ann-benchmarks' count


def export_run(run: str | Path, results_dir: str | Path, faiss_path: str | Path | None = None,
               ann_path: str | Path | None = None, metric: str = "l2", codebooks: str = "train",
               force: bool = False) -> list[Path]:
    """Write the run's faiss index (`faiss_path`) and ann-benchmarks file (`ann_path`), those
    given; return their paths. Every target is checked before anything is read or written
    (`check_targets`)."""
    check_mode("adc", metric)
    given = [(option, Path(path)) for option, path in (("--faiss", faiss_path),
                                                        ("--ann-benchmarks", ann_path))
             if path is not None]
    check_targets([path for _, path in given], results_dir, force,
                  options=tuple(option for option, _ in given))
    run_dir = layout.resolve_run(results_dir, run)
    codes = check_encoded(run_dir, codebooks)
    codes_sha256 = check_codes_use(run_dir, codes, codebooks)
    written = []
    if faiss_path is not None:
        written.append(export_faiss(codes, faiss_path, metric))
    if ann_path is not None:
        written.append(export_ann_benchmarks(codes, ann_path, metric,
                                             source=run_dir.codes_file(codebooks),
                                             codes_sha256=codes_sha256))
    return written


def export_faiss(codes: Codes, path: str | Path, metric: str = "l2") -> Path:
    """Write the database codes as a faiss index file at `path`; return it."""
    index = faiss_index(codes.quantizer, codes.codes, metric)
    path = Path(path)
    write_bytes(path, faiss.serialize_index(index).data)
    return path


def export_ann_benchmarks(codes: Codes, path: str | Path, metric: str = "l2",
                          k: int = NEIGHBOURS, *, source: Path, codes_sha256: str) -> Path:
    """Write the run's representations and their exact neighbours as an ann-benchmarks HDF5 file
    at `path` (module docstring); return it. `source` is the codes file, with its sha256."""
    if k < 1:
        raise GslbenchError(f"--k {k}: must be a positive integer")
    train = codes.database
    test = np.ascontiguousarray(codes.queries, dtype=np.float32)
    if metric == "ip":
        norms = np.linalg.norm(np.concatenate([train, test]), axis=1)
        if np.max(np.abs(norms - 1)) > UNIT_NORM_TOLERANCE:
            raise GslbenchError(f"{source}: --metric ip exports as ann-benchmarks' "
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
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as handle:
        handle.create_dataset("train", data=train)
        handle.create_dataset("test", data=test)
        handle.create_dataset("neighbors", data=neighbours.astype(np.int32))
        handle.create_dataset("distances", data=distances.astype(np.float32))
        handle.attrs.update({
            "distance": ANN_DISTANCES[metric], "dimension": train.shape[1], "point_type": "float",
            "type": "dense", "run": str(codes.attrs["run"]), "codebooks": codes.codebooks,
            "codes_sha256": codes_sha256,
            "created_by": f"gslbench {package_versions()['gslbench']}",
        })
    path = Path(path)
    write_bytes(path, buffer.getbuffer())
    return path
