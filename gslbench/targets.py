"""Where a command may write a file the user names: export's --faiss and --ann-benchmarks,
report's --doc (and the CSV beside it), tune's --out and --doc.

Never into a run directory (or RESULTS/runs), never into the data folder, never onto a storage
(an SQLite database, such as tune's Optuna studies), never two outputs to one path, and never
onto an existing file that the command did not write unless `force`: `ours(path)` says whether
an existing file is one the command wrote (a results document, a tuned file), which it may
replace as it does on every run. Everything is checked before the command reads or writes
anything.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gslbench import layout
from gslbench.errors import GslbenchError

SQLITE_MAGIC = b"SQLite format 3\x00"


def check_targets(paths: list[Path], results_dir: str | Path, force: bool,
                  data_dir: str | Path | None = None, options: tuple[str, ...] = (),
                  ours: Callable[[Path], bool] | None = None,
                  storage: Path | None = None) -> None:
    """Refuse (one line naming the path, and its option from `options`, one per path, where
    given) any of `paths` the command may not write: see the module docstring. `ours`: whether an
    existing file is the command's own output (default: none is); `storage`: the SQLite file of
    the command's storage, refused even before it exists."""
    resolved = [path.resolve() for path in paths]
    runs = layout.runs_dir(results_dir).resolve()
    data = Path(data_dir).resolve() if data_dir is not None else None
    for index, (given, path) in enumerate(zip(paths, resolved, strict=True)):
        name = f"{options[index]} {given}" if options else str(given)
        if path in resolved[:index]:
            both = f" ({options[resolved.index(path)]} and {options[index]})" if options else ""
            raise GslbenchError(f"{name}: given for two outputs{both}; give each its own file")
        for folder in path.parents:
            if folder == runs or _is_run_dir(layout.RunDir(folder)):
                raise GslbenchError(f"{name}: inside {folder}, where gslbench keeps its runs; "
                                    "write outside it")
            if folder == data:
                raise GslbenchError(f"{name}: inside the data folder {data}; write outside it")
        if path.is_dir():
            raise GslbenchError(f"{name}: is a folder, cannot write a file there")
        if storage is not None and path == storage.resolve():
            raise GslbenchError(f"{name}: is the storage of the studies; write elsewhere")
        if _is_sqlite(path):
            raise GslbenchError(f"{name}: is an SQLite database (a storage); write elsewhere")
        if path.exists() and not force and not (ours is not None and ours(path)):
            raise GslbenchError(f"{name}: exists; choose a new file, or give --force to "
                                "replace it")


def check_tune_outputs(out: Path, doc: Path, results_dir: str | Path, data_dir: str | Path,
                       storage: str | None, force: bool) -> None:
    """tune's --out and --doc go where a command may write: each a new file, an earlier tuned
    file or tuning document, or replaced with `force`; never the storage's SQLite file."""
    from gslbench.bench.studies import default_storage
    from gslbench.bench.tuned import Tuned

    def ours(path: Path) -> bool:
        if first_line(path) == "# gslbench tuning":
            return True
        try:
            Tuned.read(path)
        except GslbenchError:
            return False
        return True

    url = storage or default_storage(results_dir)
    database = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    check_targets([out, doc], results_dir, force, data_dir, options=("--out", "--doc"),
                  ours=ours, storage=database)


def check_report_doc(doc: Path, results_dir: str | Path, data_dir: str | Path | None,
                     force: bool) -> None:
    """report's --doc and the CSV beside it go where a command may write: each a new file, an
    earlier results document or its CSV, or replaced with `force`."""
    from gslbench.report.doc_csv import CSV_COLUMNS

    def ours(path: Path) -> bool:
        line = first_line(path)
        return line == "# gslbench results" or bool(line) and set(line.split(",")) <= set(
            CSV_COLUMNS)

    check_targets([doc, doc.with_suffix(".csv")], results_dir, force, data_dir,
                  options=("--doc", "--doc's CSV"), ours=ours)


def first_line(path: Path) -> str:
    """The first line of a text file, without its end ("" when it cannot be read as text)."""
    try:
        with path.open(encoding="utf-8") as handle:
            return handle.readline(4096).rstrip("\n")
    except (OSError, UnicodeDecodeError):
        return ""


def _is_run_dir(folder: layout.RunDir) -> bool:
    """Whether a folder is a run directory: it holds a run's config.json and model.pt."""
    return folder.config.is_file() and folder.model.is_file()


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    except OSError:
        return False
