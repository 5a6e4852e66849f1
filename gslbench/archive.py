"""Finished runs kept as their records alone, to move a grid's results to another machine or into a
repository (docs/design.md, section 9).

A finished run directory holds records (config.json, train_log.csv, metrics*.json, search*.json:
kilobytes) and artifacts (model.pt, quantizer.h5, codes*.h5: a Fashion-MNIST run's codes file is
14 MB, for the database representations it keeps). `archive_runs` copies the records of every
finished run under RESULTS/runs into OUT/runs/RUN/, with RUN/archived.json naming each artifact
left behind and its sha256. Copied back under a results folder (`cp -rn OUT/runs RESULTS/`), an
archived run is a finished one to bench (`check_archived`: done, never trained again) and to
report and tune, which read records only; what needs an artifact (encode, evaluate,
search-bench, export) finds it missing and says so, and bench trains an archived run again
only when its records do not check out (a fit missing, another feature file).

archived.json: {"format": "gslbench.archived", "version": 1, "run": RUN, "artifacts": {NAME:
sha256}}. The chain of sha256 stays whole: config.json records the model's, quantizer's and
training log's, and archived.json must record the same; every metrics and search-bench record
names the sha256 of the codes file it was made from, and archived.json must record that codes
file with it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from gslbench import layout
from gslbench.codes import check_encoded, fits
from gslbench.config import RunConfig
from gslbench.errors import GslbenchError
from gslbench.evaluation.record import (
    ARCHIVED_FORMAT,
    ARCHIVED_VERSION,
    archived_artifacts,
    check_result,
)
from gslbench.storage import check_sha256, sha256_file, write_json
from gslbench.train import FeatureFile, check_trained, check_trained_on, load_config

# each artifact the training wrote (a `layout.RunDir` file) and config.json's record of its sha256
TRAINED = {"model": "model_sha256", "quantizer": "quantizer_sha256"}


def archive_runs(results_dir: str | Path, out_dir: str | Path
                 ) -> tuple[list[str], list[tuple[str, str]]]:
    """Archive every finished run under RESULTS/runs into OUT/runs (`archive_run`); archived runs,
    and runs already in OUT with every record they hold now, are left as they are (an archive
    grows, session by session); a run in OUT that has gained a record since (a fit evaluated
    while the last archive was made, a search-bench) is archived again. Returns the run ids
    archived now and, for each run left out (unfinished, or not checking out), its id and why
    (one line)."""
    archived, left_out = [], []
    for run in layout.list_runs(results_dir):
        if is_archived(run) or _copied_whole(run, layout.run_dir(out_dir, run.run_id)):
            continue
        try:
            archive_run(run, out_dir)
        except GslbenchError as exc:
            left_out.append((run.run_id, str(exc)))
            continue
        archived.append(run.run_id)
    return archived, left_out


def _copied_whole(run: layout.RunDir, copy: layout.RunDir) -> bool:
    """`copy` (a run in an archive) holds every metrics and search-bench record `run` holds."""
    return copy.path.is_dir() and {path.name for path in run.evaluations() + run.search_benches()
                                   } <= {path.name for path in copy.path.iterdir()}


def is_archived(run: layout.RunDir) -> bool:
    """The run directory holds an archived run: archived.json, and no model (a run trained
    again in its place is a full run whatever archived.json is left there)."""
    return run.archived.is_file() and not run.model.is_file()


def archive_run(run: layout.RunDir, out_dir: str | Path) -> layout.RunDir:
    """Copy a finished run's records into OUT/runs/RUN with its archived.json, after checking the
    run: trained and bound (`check_trained`), each codes file bound to it (`check_encoded`), each
    metrics and search-bench record valid and made from its fit's codes file, at least one
    metrics file among them. The copy is built under a temporary name and renamed whole (over an
    older copy of the run). A run that does not check out is a user error naming what does
    not."""
    config, record = check_trained(run)
    if not run.evaluations():
        raise GslbenchError(f"{run.metrics}: no such file, nor another metrics file; the run is "
                            "not evaluated")
    artifacts = {getattr(run, name).name: record[key] for name, key in TRAINED.items()
                 if record.get(key)}
    kept = [run.config, run.train_log]
    for fit in fits(config.quantized, layout.CODEBOOKS):
        codes, results = run.codes_file(fit), run.results_of(fit)
        if codes.is_file():
            check_encoded(run, fit)
            artifacts[codes.name] = sha256_file(codes)
        for path in results:
            _check_result(path, run)
        kept += results
    target = layout.run_dir(out_dir, run.run_id)
    staging = target.path.with_name(f"{layout.staging_prefix(run.run_id)}archiving")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for path in kept:
        shutil.copy2(path, staging / path.name)
    write_json(staging / target.archived.name, {"format": ARCHIVED_FORMAT,
                                                "version": ARCHIVED_VERSION,
                                                "run": run.run_id, "artifacts": artifacts})
    if target.path.is_dir():  # an older copy, with fewer records
        old = target.path.with_name(f"{layout.staging_prefix(run.run_id)}replaced")
        shutil.rmtree(old, ignore_errors=True)
        target.path.rename(old)
        shutil.rmtree(old)
    staging.rename(target.path)
    return target


def _check_result(path: Path, run: layout.RunDir) -> dict:
    """A metrics or search-bench file of `run` (`check_result`), made from a codes file that is
    there or archived. Returns the record."""
    record = check_result(path, run)
    codes = run.codes_file(record.get("codebooks", "train"))
    if not (codes.is_file() or run.archived.is_file()):
        raise GslbenchError(f"{codes}: no such file, but {path.name} was made from it")
    return record


def check_archived(run: layout.RunDir, features: FeatureFile | None,
                   codebooks: Iterable[str] = layout.CODEBOOKS) -> RunConfig:
    """An archived run's config, after checking that its records make a finished run of the fits
    `codebooks` (`gslbench.codes.fits`): archived.json is bound to the run and records the
    artifacts config.json does; the training log has its recorded sha256; given `features`, the
    run was trained on that feature file; each fit's metrics.json is a valid record of that fit
    made from the codes file archived.json records (`check_codes_binding`). Anything else is a
    user error naming the file and what does not match."""
    config, record = load_config(run)
    artifacts = archived_artifacts(run)
    for name, key in TRAINED.items():
        artifact = getattr(run, name).name
        if artifacts.get(artifact) != record.get(key):
            raise GslbenchError(f"{run.archived}: records another sha256 of {artifact} than "
                                f"{run.config.name} does")
    check_sha256(run.train_log, record.get("train_log_sha256"), run.config)
    check_trained_on(record, features)
    for fit in fits(config.quantized, codebooks):
        path = run.metrics_file(codebooks=fit)
        if _check_result(path, run).get("codebooks", "train") != fit:
            raise GslbenchError(f"{path}: not a result of the {fit} fit its name says")
    return config
