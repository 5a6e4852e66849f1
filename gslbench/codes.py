"""The codes file: what `encode` writes and `evaluate`, `search-bench` and `export` read.

A run has one codes file per codebook fit (`layout.CODEBOOKS`): RUN/codes.h5 holds the codes of
the final codebooks fitted on the training representations (as trained), RUN/codes-database.h5
those of codebooks fitted on the database representations (as an indexer would).

Format `gslbench.codes`, version 3 (the design page, docs/design.md):

    /codes                    (n_db, code_bytes) uint8   packed codes of the database
    /labels                   (n_db, C) uint8            database labels (multi-hot)
    /database/representations (n_db, d) float32          the database through the run's network
                                                         (search-bench's true neighbours, export,
                                                         the check of the codes)
    /query/representations    (n_query, d) float32       the queries through the run's network
    /query/labels             (n_query, C) uint8
    /query/neighbours         (n_query, k) int64         for data without labels (C = 0): the
                                                         database positions of each query's k
                                                         true neighbours (its relevance)
    /quantizer/...            the quantizer (`gslbench.quantizers.io`)
    attrs: run, method, label, quantizer, M, nbits, code_bits, dim, codebooks ("train" or
           "database"; absent in files written before it existed: "train"), config (JSON), map_at
           (JSON list of the protocol's K), map_top (0: mAP over the whole database),
           train_seconds, encode_seconds (embedding, the database fit if any, encoding), and the
           sha256 of the inputs it was made from: config_sha256 (the run's config.json),
           features_sha256, model_sha256, quantizer_sha256 ("" for float); database_quant_mse and
           query_quant_mse (mean squared quantization error of the database and of the query
           representations), items (JSON: count and sha256 of the source indices of the queries
           and the database); unseen_classes (JSON list: the classes the run's unseen-class
           protocol held out of training, sorted, [] for the standard protocol; evaluate scores
           the four conditions of `gslbench.evaluation.scoring` by it); content_sha256
           (`gslbench.storage`, required): a digest of everything above; devices (JSON:
           {"train", "encode"}, each as config.json's "device"); a fine-tuned run also
           activations_sha256

The chain of files: config.json records the sha256 of model.pt and quantizer.h5, a codes file
records config.json's, and every result made from the codes (metrics*.json, search*.json)
records the codes file's; each reader checks the sha256 its file records. A codes file edited
and re-sealed (its content_sha256 recomputed) is still refused once a result was made from it
(`check_results`), and its codes are compared with its own representations before any result is
made from them (`check_assigned`).

`read_codes` checks the content (shapes, finite representations and codebooks, codes in range,
0/1 labels, the unseen classes: in range, sorted, unique, none for a standard run and some for an
unseen-protocol run, whose queries and database items each hold items of seen and of unseen
classes, never both in one item); `check_encoded` also checks that the file is bound to its run
directory and fit. Files of older versions, or without unseen_classes, are refused with the advice
to encode again. This module imports no step (the steps import it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gslbench import layout
from gslbench.data.featurefile import (
    check_labels,
    feature_file_sha256,
    items_record,
    read_feature_file,
)
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import unseen_members
from gslbench.quantizers import Identity, Quantizer, load_quantizer, save_quantizer
from gslbench.storage import DIGEST_ATTR, config_id, open_h5, read_json, sha256_file, write_h5

FORMAT = "gslbench.codes"
FORMAT_VERSION = 3
# the attrs evaluate and bench rely on, with their types
ATTRS = {"run": str, "label": str, "config": str, "map_at": str, "map_top": int,
         "train_seconds": float, "encode_seconds": float, "config_sha256": str,
         "features_sha256": str, "model_sha256": str, "quantizer_sha256": str,
         "unseen_classes": str}
# Items whose codes `check_assigned` compares with the quantizer's assignment: all of them up to
# this many, else a sample of this many seeded by the file's content_sha256.
CHECKED_ITEMS = 20_000
# A code that differs from the quantizer's own passes when its squared error exceeds that of the
# quantizer's code by at most this share of (1 + ||x||^2): a tie broken by float rounding.
TIE_TOLERANCE = 1e-5


@dataclass(frozen=True)
class Codes:
    """A codes file's content: database codes (n, code_bytes) uint8 and labels (n, C) uint8,
    query representations (nq, d) float32 and labels (nq, C) uint8, the quantizer, the attrs,
    and the database representations (n, d) float32; for data without labels the queries' k
    true neighbours, (nq, k) int64 database positions (`gslbench.data.neighbours`), else None."""

    codes: np.ndarray
    labels: np.ndarray
    queries: np.ndarray
    query_labels: np.ndarray
    quantizer: Quantizer | Identity
    attrs: dict
    database: np.ndarray
    query_neighbours: np.ndarray | None = None

    @property
    def map_at(self) -> tuple[int, ...]:
        """The K of mAP@K the data set's protocol asks for."""
        return tuple(json.loads(self.attrs["map_at"]))

    @property
    def unseen_classes(self) -> tuple[int, ...]:
        """The classes the run's unseen-class protocol held out of training (() if standard)."""
        return tuple(json.loads(self.attrs["unseen_classes"]))

    @property
    def codebooks(self) -> str:
        """Where the codebooks were fitted: "train" or "database"."""
        return str(self.attrs.get("codebooks", "train"))


def fits(quantized: bool, codebooks: Iterable[str]) -> tuple[str, ...]:
    """The codebook fits a run has: those asked for (checked) for a quantized run; a float run
    has no codebooks to fit, only its "train" codes (its representations as they are)."""
    asked = tuple(layout.check_codebooks(fit) for fit in codebooks)
    return asked if quantized else ("train",)


def encode_command(run: layout.RunDir, codebooks: str) -> str:
    """The command that writes a run's codes of one fit, for error messages."""
    option = "" if codebooks == "train" else f" --codebooks {codebooks}"
    return f"gslbench encode {run.path}{option}"


def write_codes(path: Path, codes: Codes) -> None:
    """Write `codes` (datasets and attrs, the module docstring's layout) to `path`, atomically,
    sealed with its content_sha256. The unseen classes are checked first (`read_codes`)."""
    _check_unseen(codes, path)
    with write_h5(path, FORMAT, FORMAT_VERSION) as handle:
        handle.create_dataset("codes", data=codes.codes)
        handle.create_dataset("labels", data=codes.labels)
        handle.create_dataset("database/representations", data=codes.database)
        handle.create_dataset("query/representations", data=codes.queries)
        handle.create_dataset("query/labels", data=codes.query_labels)
        if codes.query_neighbours is not None:
            handle.create_dataset("query/neighbours", data=codes.query_neighbours)
        save_quantizer(codes.quantizer, handle.create_group("quantizer"))
        handle.attrs.update(codes.attrs)


def check_encoded(run: layout.RunDir, codebooks: str = "train") -> Codes:
    """The run's codes file of the fit `codebooks` (`read_codes`), after checking that it is
    bound to the run and the fit: it records the run id of its directory, a config that hashes
    to it, the sha256 of the run's current config.json (so it was made from this run's model and
    quantizer, which config.json binds) and its fit."""
    path = run.codes_file(codebooks)
    if not path.is_file():
        raise GslbenchError(f"{path}: no such file; run `{encode_command(run, codebooks)}` first")
    codes = read_codes(path)
    attrs = codes.attrs
    found = config_id(json.loads(attrs["config"]))
    if attrs["run"] != run.run_id or found != run.run_id:
        raise GslbenchError(f"{path}: made for run {attrs['run']} (config hash {found}), not "
                            f"for run {run.run_id} of its directory (copied from another run?)")
    if not run.config.is_file() or sha256_file(run.config) != attrs["config_sha256"]:
        raise GslbenchError(f"{path}: made from another {run.config.name} than the run's "
                            "(sha256 differs: the run was trained again or edited since)")
    if codes.codebooks != codebooks:
        raise GslbenchError(f"{path}: holds the codes of codebooks fitted on the "
                            f"{codes.codebooks} representations, not on the {codebooks} ones "
                            "(renamed or copied?)")
    return codes


def check_codes_use(run: layout.RunDir, codes: Codes, codebooks: str = "train") -> str:
    """What is checked before a result is made from a run's codes (`check_encoded`'s): the codes
    are the quantizer's (`check_assigned`) and no earlier result of this fit was made from
    another codes file (`check_results`). Returns the codes file's sha256."""
    path = run.codes_file(codebooks)
    check_assigned(codes, path)
    check_labels_of_features(run, codes, path)
    return check_results(run, codebooks)


def check_labels_of_features(run: layout.RunDir, codes: Codes, path: Path) -> None:
    """The codes file's query and database labels must be the feature file's at the items it
    records (`items`), when the run's feature file (config.json's `features_file`) is at hand
    with the sha256 the codes record: labels edited (e.g. permuted) and the file re-sealed are
    refused. Without that feature file (results moved to another machine) nothing is compared."""
    record = read_json(run.config)
    features_path = Path(str(record.get("features_file", "")))
    if not features_path.is_file() or feature_file_sha256(features_path) != codes.attrs[
            "features_sha256"]:
        return
    config = json.loads(codes.attrs["config"])
    features = read_feature_file(features_path, config.get("split", "test"),
                                 config.get("protocol", "standard"))
    items = json.loads(codes.attrs.get("items", "{}"))
    for part, labels, split in (("database", codes.labels, features.database),
                                ("query", codes.query_labels, features.query)):
        if items.get(part) != items_record(split) or not np.array_equal(labels, split.labels) \
                or part == "query" and not _same(codes.query_neighbours, split.neighbours):
            raise GslbenchError(f"{path}: its {part} labels are not those of {features_path} at "
                                "the items it records (edited and re-sealed?); run "
                                f"`{encode_command(run, codes.codebooks)} --force`")


def _same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    """Both None, or equal arrays."""
    return a is None and b is None or a is not None and b is not None and np.array_equal(a, b)


def check_results(run: layout.RunDir, codebooks: str = "train") -> str:
    """The sha256 of the run's codes file of this fit, checked against every result made from
    it (metrics*.json, search*.json of the fit) that records one: encode removes a fit's results
    before it writes new codes, so a result recording another sha256 means the codes file was
    replaced, or edited and re-sealed, since: not the file this run made."""
    path = run.codes_file(codebooks)
    digest = sha256_file(path)
    for result in run.results_of(codebooks):
        try:
            record = read_json(result)
        except GslbenchError:
            continue  # an unreadable result is made again; it binds nothing
        recorded = record.get("codes_sha256") if isinstance(record, dict) else None
        if isinstance(recorded, str) and recorded != digest:
            raise GslbenchError(f"{path}: not the file this run made ({result.name} was made "
                                "from codes with another sha256: replaced, or edited and "
                                f"re-sealed since); run `{encode_command(run, codebooks)} "
                                "--force` to encode it again")
    return digest


def check_assigned(codes: Codes, path: Path) -> None:
    """Each checked item's code must be what the stored quantizer assigns to its stored database
    representation (`CHECKED_ITEMS` of them; a float run's codes: every item, bit for bit).

    A quantizer whose codes depend on the batch (`codes_depend_on_batch`, LSQ) encodes the whole
    database again, as encode did. Where a code differs from the quantizer's own, its squared
    error may exceed the quantizer code's by `TIE_TOLERANCE` (a tie broken by float rounding).
    """
    quantizer, n = codes.quantizer, len(codes.codes)
    if isinstance(quantizer, Identity):
        rows = np.arange(n)
        differ = ~np.all(codes.codes == quantizer.encode(codes.database), axis=1)
        bad = rows[differ]
    else:
        if quantizer.codes_depend_on_batch or n <= CHECKED_ITEMS:
            rows = np.arange(n)
        else:
            seed = int(codes.attrs[DIGEST_ATTR][:16], 16)
            rows = np.sort(np.random.default_rng(seed).choice(n, CHECKED_ITEMS, replace=False))
        assigned = quantizer.encode(codes.database if len(rows) == n else codes.database[rows])
        stored = codes.codes[rows]
        differ = ~np.all(stored == assigned, axis=1)
        x = codes.database[rows[differ]].astype(np.float64)
        stored_error = np.sum((x - quantizer.decode(stored[differ])) ** 2, axis=1)
        own_error = np.sum((x - quantizer.decode(assigned[differ])) ** 2, axis=1)
        worse = stored_error > own_error + TIE_TOLERANCE * (1 + np.sum(x**2, axis=1))
        bad = rows[differ][worse]
    if len(bad):
        raise GslbenchError(f"{path}: /codes are not what its quantizer assigns to "
                            f"/database/representations ({len(bad)} of {len(rows)} items "
                            f"checked, the first item {bad[0]}: edited, or encoded by another "
                            "quantizer)")


def read_codes(path: Path) -> Codes:
    """Read and check a codes file: its attrs, shapes, finite representations and codebooks,
    codes in range for their codebooks, 0/1 labels with one or more per item."""
    with open_h5(path, FORMAT, FORMAT_VERSION, min_version=FORMAT_VERSION,
                 rewrite="run `gslbench encode RUN --force`") as handle:
        attrs = {key: _plain(value) for key, value in handle.attrs.items()}
        if "unseen_classes" not in attrs:
            raise GslbenchError(f"{path}: no attribute 'unseen_classes' (written before it "
                                "existed); run `gslbench encode RUN --force`")
        for name, kind in ATTRS.items():
            allowed = (int, float) if kind is float else (kind,)
            if isinstance(attrs.get(name), bool) or not isinstance(attrs.get(name), allowed):
                raise GslbenchError(f"{path}: attribute {name!r} is {attrs.get(name)!r}, expected "
                                    f"a {kind.__name__}")
        if attrs.get("codebooks", "train") not in layout.CODEBOOKS:
            raise GslbenchError(f"{path}: attribute 'codebooks' is {attrs['codebooks']!r}, "
                                f"expected one of {', '.join(layout.CODEBOOKS)}")
        codes = Codes(handle["codes"][()], handle["labels"][()],
                      handle["query/representations"][()], handle["query/labels"][()],
                      load_quantizer(handle["quantizer"]), attrs,
                      handle["database/representations"][()],
                      handle["query/neighbours"][()] if "query/neighbours" in handle else None)
        json.loads(attrs["config"]), json.loads(attrs["map_at"])  # JSON errors: a corrupt file
    _check_shapes(codes, path)
    for name, values in (("query", codes.queries), ("database", codes.database)):
        if not np.isfinite(values).all():
            raise GslbenchError(f"{path}: /{name}/representations hold non-finite values "
                                "(NaN or inf)")
    _check_codes_in_range(codes, path)
    check_labels(codes.labels, f"{path}: /labels")
    check_labels(codes.query_labels, f"{path}: /query/labels")
    _check_unseen(codes, path)
    return codes


def _plain(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value


def _check_shapes(codes: Codes, path: Path) -> None:
    if codes.codes.ndim != 2 or codes.codes.dtype != np.uint8 \
            or codes.codes.shape[1] != codes.quantizer.code_bytes:
        raise GslbenchError(f"{path}: /codes is {codes.codes.dtype} {codes.codes.shape}, the "
                            f"quantizer needs uint8 (n, {codes.quantizer.code_bytes})")
    if codes.labels.ndim != 2 or len(codes.labels) != len(codes.codes):
        raise GslbenchError(f"{path}: labels {codes.labels.shape} for {len(codes.codes)} codes")
    if codes.queries.ndim != 2 or codes.queries.shape[1] != codes.quantizer.dim \
            or codes.query_labels.ndim != 2 or len(codes.queries) != len(codes.query_labels):
        raise GslbenchError(f"{path}: /query has representations {codes.queries.shape} and labels "
                            f"{codes.query_labels.shape}, expected (n, {codes.quantizer.dim})")
    if codes.database.shape != (len(codes.codes), codes.quantizer.dim) \
            or codes.database.dtype != np.float32:
        raise GslbenchError(f"{path}: /database/representations is {codes.database.dtype} "
                            f"{codes.database.shape}, expected float32 ({len(codes.codes)}, "
                            f"{codes.quantizer.dim})")
    if codes.query_labels.shape[1] != codes.labels.shape[1]:
        raise GslbenchError(f"{path}: query labels have {codes.query_labels.shape[1]} classes, "
                            f"database labels {codes.labels.shape[1]}")
    found = codes.query_neighbours
    if (found is None) != bool(codes.labels.shape[1]) or found is not None and (
            found.dtype.kind not in "iu" or found.ndim != 2 or len(found) != len(codes.queries)
            or found.size and not 0 <= found.min() <= found.max() < len(codes.codes)):
        raise GslbenchError(f"{path}: /query/neighbours must be (n_query, k) database positions "
                            "exactly when the labels have no columns")


def _check_unseen(codes: Codes, path: Path) -> None:
    """The attr unseen_classes: a JSON list of class indices of the labels, sorted and unique;
    empty for a standard-protocol run, not for an unseen-protocol one, whose queries and database
    each hold items of the seen and of the unseen classes, never both in one item
    (`scoring.unseen_members`)."""
    try:
        classes = json.loads(codes.attrs["unseen_classes"])
    except (TypeError, ValueError):
        classes = None
    n_classes = codes.labels.shape[1]
    if not isinstance(classes, list) or not all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c < n_classes for c in classes) \
            or classes != sorted(set(classes)):
        raise GslbenchError(f"{path}: attribute 'unseen_classes' is "
                            f"{codes.attrs['unseen_classes']!r}, expected a JSON list of sorted, "
                            f"distinct classes in [0, {n_classes})")
    protocol = json.loads(codes.attrs["config"]).get("protocol", "standard")
    if (protocol == "standard") != (not classes):
        raise GslbenchError(f"{path}: attribute 'unseen_classes' is {classes} for a run of the "
                            f"{protocol} protocol (the unseen protocol holds classes out, the "
                            "standard one none)")
    if classes:
        try:
            for part, labels in (("query", codes.query_labels), ("database", codes.labels)):
                unseen_members(labels, classes, part)
        except GslbenchError as exc:
            raise GslbenchError(f"{path}: {exc}") from None


def _check_codes_in_range(codes: Codes, path: Path) -> None:
    """Each code must be one the quantizer can produce: the padding bits of the last byte are 0
    (bits not a multiple of 8), and float codes (`Identity`) are finite floats."""
    quantizer = codes.quantizer
    if isinstance(quantizer, Identity):
        if not np.isfinite(quantizer.decode(codes.codes)).all():
            raise GslbenchError(f"{path}: /codes hold non-finite database vectors (NaN or inf)")
        return
    spare = 8 * quantizer.code_bytes - quantizer.bits
    if spare and (codes.codes[:, -1] >> (8 - spare)).any():
        raise GslbenchError(f"{path}: /codes are out of range for {quantizer.n_codebooks} "
                            f"codebooks of {quantizer.codebook_size} codewords")
