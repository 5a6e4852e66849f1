"""`gslbench tune GRID`: each method's knobs chosen on the validation split by an Optuna search
that treats every method alike (the design page, docs/design.md, sections 2 and 6).

A *cell* is every setting of the grid but the method, the knobs, the seed and the split (data set,
protocol, quantizer, code length, sub-bits, ...). Each (cell, method) is one Optuna *study* of
`trials` trials, the same number for every method (a method without knobs has one setting: one
trial). Trial 0 is the method's start knobs, pinned by the grid's `[start.METHOD]` tables (else the
registry's defaults); the others are drawn from the knobs' search spaces (`Setting.space`) by a
TPE sampler seeded by the study's cell and method (`Study.sampler_seed`) and by the trial's
number, so studies never share draws and two processes never draw alike; a third of the budget
is random start-up draws (`studies.startup_trials`). A study is keyed by the sha256 of the
feature file it is scored on, as bench's cells are: another split is another study.

A trial trains its setting at every seed of the grid (at least 2) as runs of split `validation`:
trained on the training items of a test run (the unseen protocol: less validation classes of its
own), scored by the mAP of the validation queries against the validation database, both drawn from
items no run trains on (`FeatureSet.for_split`), so no item a choice is scored on was trained on
and no test query or database item is seen. Its value is the mean validation mAP over the seeds.
The runs are ordinary run directories under RESULTS/tuning/runs (resumable; `split` is part of
their run id, so they are never taken for test runs). With pruning, each run reports its validation
mAP after every codebook refit (step: the seed's position x epochs + the epoch) and
`studies.PeerPruner` stops a trial that a third of the budget beats on its mean validation mAP so
far; the same rule is applied again to every trial when the choice is made, so trial 0, which runs
before any other, is pruned alike. A pruned run writes no run directory, and the epochs it did not
train are what pruning saved.

The studies live in one Optuna storage (default: the SQLite file RESULTS/tuning/studies.db):
several `tune` processes, on one machine or many, share its trials and never run one twice; a
killed tune resumes: finished trials are kept, a trial stopped by Ctrl-C or SIGTERM is enqueued
again with its knobs, and a trial whose process died (no heartbeat for `grace` seconds) is failed
and run again with the same knobs (its finished seed runs are reused). SIGTERM and Ctrl-C set a
flag that the trial checks between steps (each refit, each seed, each trial). Every method is chosen from
the first `trials` finished trials of its study, whatever else the storage holds.

The studies' Optuna side (sampler, pruner, storage) is `gslbench.bench.studies`. The choice of a
study is its complete trial of highest value (ties: the first; `gslbench.bench.choices`). The
choices go to a TOML file (`gslbench.bench.tuned.Tuned`), which `gslbench bench GRID --tuned FILE`
applies to its cells, and every trial to the tuning document (`gslbench.report.tuning`).

Controls: a grid part that sets a knob of a method (`gsl_alpha = 0.0`, `gsl_select =
["aligned", "nearest"]`) makes that method's cells of the part controls: tune leaves them out,
and `bench --tuned` keeps the knobs the grid sets and takes the others from the tuned choice of
the same cell (GSL at α = 0 with the tuned k and select), so they are rows of their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import signal
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from gslbench import layout
from gslbench.bench import _prepare_features
from gslbench.bench.choices import (
    FINISHED,
    TEST_COLUMNS,
    choose,
    test_results,
    trial_frame,
    write_outputs,
)
from gslbench.bench.executors import LocalExecutor
from gslbench.bench.grid import Grid
from gslbench.bench.stopping import Interrupted, check_stop, ignored, stop_on
from gslbench.bench.studies import (
    GRACE_SECONDS,
    HEARTBEAT_SECONDS,
    Study,
    TrialProgress,
    default_storage,
    load_study,
    open_storage,
    suggest_knobs,
)
from gslbench.bench.tuned import Tuned
from gslbench.bench.tuning_plan import Plan, plan
from gslbench.data import feature_path
from gslbench.data.featurefile import (
    FORMAT_VERSION,
    FeatureSet,
    feature_file_sha256,
    has_validation_split,
    read_feature_file,
)
from gslbench.devices import resolve_device
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.primary import primary_score
from gslbench.evaluation.scoring import evaluate_primary
from gslbench.evaluation.step import evaluate_run
from gslbench.methods import METHODS
from gslbench.methods.model import embed
from gslbench.quantizers import make_search
from gslbench.storage import read_json
from gslbench.threads import cpu_count, limit_threads
from gslbench.train import train_run

log = logging.getLogger(__name__)

MIN_PRUNED_TRIALS = 6  # below this budget pruning is off: a third of it is 1 trial (see docs)


class Surplus(Exception):
    """A trial asked for when the study already had its trials (two processes asked at once)."""


class RefitScore:
    """`on_refit` of a tuning run: its validation mAP after each codebook refit, reported to the
    trial at step `offset` + epoch; a trial the pruner stops raises `optuna.TrialPruned` (the run
    then writes nothing). Embeds and encodes only: neither torch's global RNG nor the run's
    generator is touched. The stop flag is checked first (`check_stop`)."""

    def __init__(self, trial: optuna.Trial, features: FeatureSet, offset: int, prune: bool) -> None:
        self.trial, self.features, self.offset, self.prune = trial, features, offset, prune
        self.epoch = 0

    def __call__(self, epoch: int, model: Any, quantizer: Any) -> None:
        check_stop()
        self.epoch = epoch
        queries = embed(model, self.features.query.features)
        database = embed(model, self.features.database.features)
        search = make_search(quantizer, quantizer.encode(database))
        value = evaluate_primary(search, queries, self.features.query, self.features.database)
        self.trial.report(value, self.offset + epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"validation score {value:.4f} at epoch {epoch}")


def run_trial(study: Study, trial: optuna.Trial, data_dir: Path, results_dir: Path,
              trials: int, prune: bool, reuse: bool, device: str) -> float:
    """One trial: its knobs (sampled, or the start knobs for trial 0), trained at every seed as
    validation runs under RESULTS/tuning; returns the mean validation mAP. User attrs: the
    per-seed mAPs, the epochs trained and planned. A trial stopped by Ctrl-C or a signal is
    enqueued again with its knobs before the interruption goes on."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False)
               if t.number < trial.number and t.state in (*FINISHED, TrialState.RUNNING,
                                                          TrialState.WAITING)]
    if len(earlier) >= study.trials(trials):
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the study has its {trials} trials")
    knobs = suggest_knobs(study, trial)
    try:
        return _train_trial(study, trial, knobs, data_dir, results_dir, prune, reuse, device)
    except KeyboardInterrupt:
        trial.study.enqueue_trial(knobs, user_attrs={"rerun_of": trial.number})
        raise


def _train_trial(study: Study, trial: optuna.Trial, knobs: dict[str, Any], data_dir: Path,
                 results_dir: Path, prune: bool, reuse: bool, device: str) -> float:
    """`run_trial`'s training: each seed's run, encoded and evaluated."""
    epochs = study.base.epochs  # a seed's: the steps the trial reports at
    planned = METHODS[study.method].epochs(epochs)  # a seed's training: none for pca
    trial.set_user_attr("epochs_planned", planned * len(study.seeds))
    tuning = layout.tuning_dir(results_dir)
    maps, trained = [], 0
    for position, seed in enumerate(study.seeds):
        check_stop()
        config = study.config(knobs, seed)
        run = layout.run_dir(tuning, config.run_id)
        score = None
        if config.quantized and not config.train_blocks:
            features = read_feature_file(feature_path(data_dir, config.dataset, config.feature),
                                         "validation", config.protocol, config.unseen,
                                         config.draw)
            score = RefitScore(trial, features, position * epochs, prune)
        try:
            train_run(config, data_dir, tuning, show_progress=False, device=device,
                      on_refit=score, reuse=reuse)
        except optuna.TrialPruned:
            trial.set_user_attr("epochs_trained", trained + score.epoch)
            raise
        trained += planned
        encode_run(run.path, data_dir, tuning, device=device)
        evaluate_run(run.path, tuning)
        maps.append(primary_score(read_json(run.metrics)))
        trial.set_user_attr("seed_maps", maps)
        trial.set_user_attr("epochs_trained", trained)
        if score is None or score.epoch == 0:  # no refit reported (float, or a finished run)
            trial.report(maps[-1], (position + 1) * epochs)
    return float(np.mean(maps))


def tune(grid: Grid, data_dir: str | Path, results_dir: str | Path, trials: int,
         storage: str | None = None, prune: bool = True, reuse: bool = True,
         device: str = "auto", heartbeat: float = HEARTBEAT_SECONDS,
         grace: float = GRACE_SECONDS, jobs: int = 1, threads: int | None = None,
         show_progress: bool = False, start: dict[str, dict] | None = None
         ) -> tuple[Plan, pd.DataFrame]:
    """Run every study of `grid` to `trials` finished trials (complete or pruned) in `storage`
    (default `default_storage`), sharing them with any other process on it; returns the plan
    and `trial_frame`. The grid, the device, the storage and the feature files are checked before
    any trial (a feature file older than format version 3 is a user error); a trial's user error
    ends the tune as one line naming its study. SIGTERM and Ctrl-C stop it between steps
    (`Interrupted`).

    jobs: trials at once, this process and `jobs - 1` helper processes on the same storage, each
    starting at another study; threads: torch/faiss threads of each (default: the CPUs // jobs
    when jobs > 1, else torch's and faiss's own); show_progress: a bar of the finished trials
    (`TrialProgress`), else a log line per trial; start: the grid's `[start.METHOD]` tables."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise GslbenchError(f"--trials must be a whole number of at least 1, got {trials!r}")
    data_dir, results_dir = Path(data_dir).resolve(), Path(results_dir).resolve()
    tuning = plan(grid, trials, data_dir, start)
    resolve_device(device)
    url = default_storage(results_dir) if storage is None else storage
    store = open_storage(url, heartbeat, grace)
    tuning = plan(grid, trials, data_dir, start, _check_features(tuning, data_dir, device))
    if prune and trials < MIN_PRUNED_TRIALS:
        log.info("tune: pruning is off below %d trials", MIN_PRUNED_TRIALS)
    prune = prune and trials >= MIN_PRUNED_TRIALS
    tuning = dataclasses.replace(tuning, prune=prune)
    if jobs > 1 and threads is None:
        threads = max(1, cpu_count() // jobs)
    work = dict(data_dir=data_dir, results_dir=results_dir, prune=prune, reuse=reuse,
                device=device, heartbeat=heartbeat, bar=show_progress)
    with (stop_on(signal.SIGTERM, signal.SIGINT),
          LocalExecutor(jobs - 1) if jobs > 1 else contextlib.nullcontext() as pool):
        with ignored(signal.SIGINT):  # the helpers start deaf to Ctrl-C: this process stops them
            helpers = [pool.submit(_helper, tuning, url, grace, threads, work,
                                   len(tuning.studies) * job // jobs,
                                   logging.WARNING if show_progress else logging.getLogger().level)
                       for job in range(1, jobs)]
        _work(tuning, store, threads, work, first=0)
        for helper in helpers:
            if helper.exception():  # its trials were failed when it went silent, and run here
                log.warning("tune: a helper process failed: %s", helper.exception())
    return tuning, trial_frame(tuning, store, prune)


def _check_features(tuning: Plan, data_dir: Path, device: str) -> dict[tuple[str, str], str]:
    """Extract the missing feature files; refuse one older than the current format version and
    the unseen protocol on multi-label data, before anything trains. Returns each file's sha256."""
    configs = [study.base for study in tuning.studies]
    _prepare_features(configs, data_dir, device)
    shas = {}
    for dataset, feature in sorted({(c.dataset, c.feature) for c in configs}):
        path = feature_path(data_dir, dataset, feature)
        if not has_validation_split(path):
            raise GslbenchError(f"{path}: older than format_version {FORMAT_VERSION} (no held-out "
                                f"validation split); run `gslbench features {dataset}` again to "
                                "rewrite its split (the features are kept)")
        shas[dataset, feature] = feature_file_sha256(path)
    for config in configs:
        read_feature_file(feature_path(data_dir, config.dataset, config.feature), "validation",
                          config.protocol, config.unseen, config.draw)
    return shas


def _work(tuning: Plan, store: optuna.storages.BaseStorage, threads: int | None,
          work: dict[str, Any], first: int) -> None:
    """Run the plan's studies, from study `first` round to the one before it, at `threads`."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    order = tuning.studies[first:] + tuning.studies[:first]
    data_dir, results_dir = work["data_dir"], work["results_dir"]
    prune, reuse, device = work["prune"], work["reuse"], work["device"]
    planned = [(study.name(prune), study.trials(tuning.trials)) for study in order]
    with (limit_threads(threads) if threads else contextlib.nullcontext(),
          TrialProgress(planned, store, work["bar"] and not first) as progress):
        for study in order:
            _run_study(study, store, tuning.trials, prune, work["heartbeat"],
                       lambda s, t: run_trial(s, t, data_dir, results_dir, tuning.trials, prune,
                                              reuse, device), progress.trial_done)


def _helper(tuning: Plan, url: str, grace: float, threads: int | None, work: dict[str, Any],
            first: int, level: int) -> None:
    """A helper process of `tune(jobs=...)`: the plan's studies on the shared storage, logging
    at `level` (the tune process's, or warnings only under its progress bar). It starts with
    Ctrl-C ignored (`tune` kills it when stopped); SIGTERM sets its stop flag: it enqueues its
    trial again and ends without a traceback."""
    logging.basicConfig(level=level, format="gslbench: %(message)s", stream=sys.stderr)
    if level > logging.DEBUG:  # as the CLI: how faiss loaded only with -v
        logging.getLogger("faiss").setLevel(logging.WARNING)
    with stop_on(signal.SIGTERM), contextlib.suppress(Interrupted):
        _work(tuning, open_storage(url, work["heartbeat"], grace), threads, work, first)


def _run_study(study: Study, store: optuna.storages.BaseStorage, trials: int, prune: bool,
               heartbeat: float, objective: Callable[[Study, optuna.Trial], float],
               done: Callable[[str], None] = log.info) -> None:
    """Run trials of `study` until it has `trials` finished ones; wait for those other processes
    run (or for them to go stale, when they are failed and enqueued again). A trial's user error
    ends the tune, one line naming the study and the trial. `done` is told each trial this
    process ran: `gsl digits ... prune: trial 3 pruned`."""
    optuna_study = load_study(study, store, prune, trials)
    ran: list[optuna.trial.FrozenTrial] = []

    def record(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial)

    while True:
        check_stop()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(optuna_study)
        states = [t.state for t in optuna_study.get_trials(deepcopy=False)]
        finished = sum(state in FINISHED for state in states)
        running = states.count(TrialState.RUNNING)
        if finished >= study.trials(trials):
            return
        if finished + running >= study.trials(trials) and TrialState.WAITING not in states:
            time.sleep(heartbeat)  # the last trials run elsewhere
            continue
        ran.clear()
        try:
            with _quiet_optuna():
                optuna_study.optimize(lambda trial: objective(study, trial), n_trials=1,
                                      catch=(Surplus,), callbacks=[record])
        except GslbenchError as exc:
            number = optuna_study.get_trials(deepcopy=False)[-1].number
            raise GslbenchError(f"{study.name(prune)}: trial {number}: {exc}") from None
        for trial in ran:
            if not trial.user_attrs.get("surplus"):  # asked for when another took the last
                done(f"{study.name(prune)}: trial {trial.number} {trial.state.name.lower()}")


@contextlib.contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna's errors only: a failed or interrupted trial is tune's one line, not Optuna's
    warning with a traceback."""
    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def tune_and_write(grid: Grid, data_dir: str | Path, results_dir: str | Path, trials: int,
                   out: str | Path | None = None, doc: str | Path | None = None,
                   intro: str = "", **options: Any) -> pd.DataFrame:
    """`tune` the grid, then write the choices to `out` (default RESULTS/tuning/tuned.toml),
    every trial to the CSV file beside it (`layout.trials_csv_path`) and to the tuning document
    `doc` (default RESULTS/tuning/tuning.md), with the tuned grid's test runs when every study
    has its choice, and the choices of its studies the storage also holds tuned the other way
    (with or without pruning). Returns `choose`'s frame. options: `tune`'s (storage, prune,
    reuse, device, jobs, show_progress, start). A study left without a complete trial is a user
    error, raised after the others' choices are written."""
    tuning, trial_rows = tune(grid, data_dir, results_dir, trials, **options)
    chosen = choose(trial_rows)
    missing = len(tuning.studies) - len(chosen)
    if not chosen.empty:
        tuned = Tuned.from_choices(tuning, chosen)
        tests = test_results(tuned, grid, results_dir, data_dir) if not missing \
            else pd.DataFrame(columns=TEST_COLUMNS)
        storage = options.get("storage")
        store = open_storage(default_storage(results_dir) if storage is None else storage)
        other = trial_frame(tuning, store, not tuning.prune)  # studies also tuned the other way
        write_outputs(tuning, trial_rows, chosen, tests, grid.source or "grid",
                      out or layout.tuned_path(results_dir),
                      doc or layout.tuning_table_path(results_dir), tuning.prune, intro,
                      (other, choose(other), tuning.prune))
    if missing:
        raise GslbenchError(f"{missing} stud(ies) have no complete trial: run the same tune "
                            "again to give them more")
    return chosen
