"""`gslbench tune GRID`: each method's knobs chosen on the validation split by an Optuna search
that treats every method alike (the design page, docs/design.md, sections 2 and 6).

A *cell* is every setting of the grid but the method, the knobs, the seed and the split (data set,
protocol, quantizer, code length, sub-bits, ...). Each (cell, method) is one Optuna *study* of
`trials` trials, the same number for every method (a method without knobs has one setting: one
trial). Trial 0 is the method's own default; the others are drawn from the knobs' search spaces
(`Setting.space`) by a TPE sampler seeded by the study's cell and method (`Study.sampler_seed`)
and by the trial's number, so studies never share draws and two processes never draw alike.

A trial trains its setting at every seed of the grid (at least 2) as runs of split `validation`:
trained on the training pool minus the validation queries and the validation database, scored by
the mAP of the validation queries against the validation database (`FeatureSet.for_split`), so
no item a choice is scored on was trained on and no test query or database item is seen. Its
value is the mean validation mAP over the seeds. The runs are ordinary run directories under
RESULTS/tuning/runs (resumable; `split` is part of their run id, so they are never taken for test
runs). With pruning, each run reports its validation mAP after every codebook refit (step: the
seed's position x epochs + the epoch) and a successive-halving pruner stops the weak trials; a
pruned run writes no run directory, and the epochs it did not train are what pruning saved.

The studies live in one Optuna storage (default: the SQLite file RESULTS/tuning/studies.db):
several `tune` processes, on one machine or many, share its trials and never run one twice; a
killed tune resumes: finished trials are kept, and a trial whose process died (no heartbeat for
`grace` seconds) is failed and run again with the same knobs (its finished seed runs are reused).

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
import json
import logging
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from gslbench import layout
from gslbench.bench import _prepare_features
from gslbench.bench.choices import TEST_COLUMNS, choose, test_results, write_outputs
from gslbench.bench.executors import LocalExecutor
from gslbench.bench.grid import Grid
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
from gslbench.config import FIELDS, KNOBS, RunConfig
from gslbench.data import feature_path
from gslbench.data.featurefile import (
    FORMAT_VERSION,
    FeatureSet,
    has_validation_split,
    read_feature_file,
)
from gslbench.encode import encode_run
from gslbench.errors import GslbenchError
from gslbench.evaluation.scoring import evaluate
from gslbench.evaluation.step import evaluate_run
from gslbench.methods import METHODS
from gslbench.methods.model import embed
from gslbench.quantizers import make_search
from gslbench.storage import read_json
from gslbench.threads import cpu_count, limit_threads
from gslbench.train import train_run

log = logging.getLogger(__name__)

# the axes a tuning grid may have: what names a cell in the tuning document, then method and seed
TUNED_AXES = ("dataset", "feature", "protocol", "loss", "quantizer", "bits", "sub_bits",
              "method", "seed")
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


@dataclass(frozen=True)
class Plan:
    """What tune runs: `trials` per study, the studies, the seeds, and the control cells left out."""

    trials: int
    studies: tuple[Study, ...]
    seeds: tuple[int, ...]
    controls: tuple[RunConfig, ...] = ()


def plan(grid: Grid, trials: int) -> Plan:
    """The studies of a grid (see the module docstring); a grid that sets the split, has an axis
    tune cannot name a cell by, fewer than 2 seeds or no method with knobs to tune is a user
    error."""
    source = grid.source or "grid"
    if "split" in grid.fields():
        raise GslbenchError(f"{source}: split is chosen by tune, not by the grid (it tunes on the "
                            "validation split)")
    knob_names = {knob.name for knob in KNOBS}
    other = sorted(set(grid.axes()) - set(TUNED_AXES) - knob_names)
    if other:
        raise GslbenchError(f"{source}: {other[0]} is an axis; tune's cells are those of "
                            f"{', '.join(TUNED_AXES[:-2])} (the other settings are fixed)")
    cells, controls = _tuned_and_controls(grid)
    if not any(METHODS[config.method].knobs for config in cells):
        raise GslbenchError(f"{source}: no method of the grid has knobs to tune")
    seeds = tuple(sorted({config.seed for config in cells}))
    if len(seeds) < 2:
        raise GslbenchError(f"{source}: tune needs at least 2 seeds, the grid has {len(seeds)}")
    studies = {}
    for config in cells:
        base = dataclasses.replace(config, seed=seeds[0], split="validation").resolved()
        study = Study(base, seeds)
        studies.setdefault(study.key, study)
    return Plan(trials, tuple(studies.values()), seeds, tuple(controls))


def _tuned_and_controls(grid: Grid) -> tuple[list[RunConfig], list[RunConfig]]:
    """The grid's cells split into those tune tunes and the controls: cells of a part that sets
    a knob of the cell's method."""
    tuned, controls = {}, {}
    for part in grid.parts:
        set_knobs = {name for name, _ in part if FIELDS[name] in KNOBS}
        for config in Grid((part,), grid.source).cells():
            control = set_knobs & {knob.name for knob in config.method_spec.knobs}
            (controls if control else tuned).setdefault(config.run_id, config)
    return list(tuned.values()), list(controls.values())


class Surplus(Exception):
    """A trial asked for when the study already had its trials (two processes asked at once)."""


class RefitScore:
    """`on_refit` of a tuning run: its validation mAP after each codebook refit, reported to the
    trial at step `offset` + epoch; a trial the pruner stops raises `optuna.TrialPruned` (the run
    then writes nothing). Embeds and encodes only: neither torch's global RNG nor the run's
    generator is touched."""

    def __init__(self, trial: optuna.Trial, features: FeatureSet, offset: int, prune: bool) -> None:
        self.trial, self.features, self.offset, self.prune = trial, features, offset, prune
        self.epoch = 0

    def __call__(self, epoch: int, model: Any, quantizer: Any) -> None:
        self.epoch = epoch
        queries = embed(model, self.features.query.features)
        database = embed(model, self.features.database.features)
        search = make_search(quantizer, quantizer.encode(database))
        value = evaluate(search, queries, self.features.query.labels,
                         self.features.database.labels, pr_points=0)["map"]
        self.trial.report(value, self.offset + epoch)
        if self.prune and self.trial.should_prune():
            raise optuna.TrialPruned(f"validation mAP {value:.4f} at epoch {epoch}")


def run_trial(study: Study, trial: optuna.Trial, data_dir: Path, results_dir: Path,
              trials: int, prune: bool, reuse: bool, device: str) -> float:
    """One trial: its knobs (sampled, or the default for trial 0), trained at every seed as
    validation runs under RESULTS/tuning; returns the mean validation mAP. User attrs: the
    per-seed mAPs, the epochs trained and planned."""
    earlier = [t for t in trial.study.get_trials(deepcopy=False)
               if t.number < trial.number and t.state in (*FINISHED, TrialState.RUNNING,
                                                          TrialState.WAITING)]
    if len(earlier) >= study.trials(trials):
        trial.set_user_attr("surplus", True)
        raise Surplus(f"trial {trial.number}: the study has its {trials} trials")
    knobs = suggest_knobs(study, trial)
    epochs = study.base.epochs
    trial.set_user_attr("epochs_planned", epochs * len(study.seeds))
    tuning = layout.tuning_dir(results_dir)
    maps, trained = [], 0
    for position, seed in enumerate(study.seeds):
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
            trial.set_user_attr("pruned_at", {"seed": seed, "epoch": score.epoch})
            raise
        trained += epochs
        encode_run(run.path, data_dir, tuning, device=device)
        evaluate_run(run.path, tuning)
        maps.append(float(read_json(run.metrics)["map"]))
        trial.set_user_attr("seed_maps", maps)
        trial.set_user_attr("epochs_trained", trained)
        if score is None or score.epoch == 0:  # no refit reported (float, or a finished run)
            trial.report(maps[-1], (position + 1) * epochs)
    return float(np.mean(maps))


def tune(grid: Grid, data_dir: str | Path, results_dir: str | Path, trials: int,
         storage: str | None = None, prune: bool = True, reuse: bool = True,
         device: str = "auto", heartbeat: float = HEARTBEAT_SECONDS,
         grace: float = GRACE_SECONDS, jobs: int = 1, threads: int | None = None,
         show_progress: bool = False) -> tuple[Plan, pd.DataFrame]:
    """Run every study of `grid` to `trials` finished trials (complete or pruned) in `storage`
    (default `default_storage`), sharing them with any other process on it; returns the plan
    and `trial_frame`. A feature file older than format version 3 is a user error.

    jobs: trials at once, this process and `jobs - 1` helper processes on the same storage, each
    starting at another study; threads: torch/faiss threads of each (default: the CPUs // jobs
    when jobs > 1, else torch's and faiss's own); show_progress: a bar of the finished trials
    (`TrialProgress`), else a log line per trial."""
    tuning = plan(grid, trials)
    data_dir, results_dir = Path(data_dir).resolve(), Path(results_dir).resolve()
    _check_features(tuning, data_dir, device)
    url = storage or default_storage(results_dir)
    store = open_storage(url, heartbeat, grace)
    if jobs > 1 and threads is None:
        threads = max(1, cpu_count() // jobs)
    work = dict(data_dir=data_dir, results_dir=results_dir, prune=prune, reuse=reuse,
                device=device, heartbeat=heartbeat, bar=show_progress)
    with LocalExecutor(jobs - 1) if jobs > 1 else contextlib.nullcontext() as pool:
        helpers = [pool.submit(_helper, tuning, url, grace, threads, work,
                               len(tuning.studies) * job // jobs,
                               logging.WARNING if show_progress else logging.getLogger().level)
                   for job in range(1, jobs)]
        _work(tuning, store, threads, work, first=0)
        for helper in helpers:
            if helper.exception():  # its trials were failed when it went silent, and run here
                log.warning("tune: a helper process failed: %s", helper.exception())
    return tuning, trial_frame(tuning, store, prune)


def _check_features(tuning: Plan, data_dir: Path, device: str) -> None:
    """Extract the missing feature files; refuse one older than the current format version and the unseen
    protocol on multi-label data, before anything trains."""
    configs = [study.base for study in tuning.studies]
    _prepare_features(configs, data_dir, device)
    for dataset, feature in sorted({(c.dataset, c.feature) for c in configs}):
        path = feature_path(data_dir, dataset, feature)
        if not has_validation_split(path):
            raise GslbenchError(f"{path}: older than format_version {FORMAT_VERSION} (no held-out "
                                f"validation split); run `gslbench features {dataset}` again to "
                                "rewrite its split (the features are kept)")
    for config in configs:
        read_feature_file(feature_path(data_dir, config.dataset, config.feature), "validation",
                          config.protocol, config.unseen, config.draw)


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
    at `level` (the tune process's, or warnings only under its progress bar)."""
    logging.basicConfig(level=level, format="gslbench: %(message)s", stream=sys.stderr)
    if level > logging.DEBUG:  # as the CLI: how faiss loaded only with -v
        logging.getLogger("faiss").setLevel(logging.WARNING)
    _work(tuning, open_storage(url, work["heartbeat"], grace), threads, work, first)


def _run_study(study: Study, store: optuna.storages.BaseStorage, trials: int, prune: bool,
               heartbeat: float, objective: Callable[[Study, optuna.Trial], float],
               done: Callable[[str], None] = log.info) -> None:
    """Run trials of `study` until it has `trials` finished ones; wait for those other processes
    run (or for them to go stale, when they are failed and enqueued again). A study whose trials
    fail `trials` times (each logged) is left without a choice. `done` is told each trial this
    process ran: `gsl digits ... prune: trial 3 pruned`."""
    first_refit = study.base.warmup_epochs or study.base.epochs_per_refit
    optuna_study = load_study(study, store, prune, first_refit)
    failures, ran = 0, []

    def record(_: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        ran.append(trial)

    while True:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(optuna_study)
        states = [t.state for t in optuna_study.get_trials(deepcopy=False)]
        finished = sum(state in FINISHED for state in states)
        running = states.count(TrialState.RUNNING)
        if finished >= study.trials(trials) or failures >= trials:
            return
        if finished + running >= study.trials(trials) and TrialState.WAITING not in states:
            time.sleep(heartbeat)  # the last trials run elsewhere
            continue
        ran.clear()
        optuna_study.optimize(lambda trial: objective(study, trial), n_trials=1,
                              catch=(Surplus, GslbenchError), callbacks=[record])
        for trial in ran:
            if trial.user_attrs.get("surplus"):  # asked for when another process took the last
                continue
            failures += trial.state is TrialState.FAIL
            done(f"{study.name(prune)}: trial {trial.number} {trial.state.name.lower()}")


def trial_frame(tuning: Plan, store: optuna.storages.BaseStorage, prune: bool) -> pd.DataFrame:
    """Every complete or pruned trial of the plan's studies: cell (JSON of `CELL_FIELDS`),
    method, trial (number), knobs (dict), variant (the method's label), state (`complete` or
    `pruned`), value (mean validation mAP; for a pruned trial its last reported mAP), seed_maps
    (list), epochs_trained, epochs_planned, pruned_at ({"seed", "epoch"} of the run the pruner
    stopped, or None)."""
    rows = []
    for study in tuning.studies:
        try:
            optuna_study = optuna.load_study(study_name=study.name(prune), storage=store)
        except KeyError:
            continue
        for trial in optuna_study.get_trials(deepcopy=False, states=FINISHED):
            knobs = {**study.default, **trial.params}
            last_step = trial.last_step
            rows.append({
                "cell": json.dumps(study.cell, sort_keys=True), "method": study.method,
                "trial": trial.number, "knobs": knobs,
                "variant": METHODS[study.method].label({**vars(study.base), **knobs}),
                "state": trial.state.name.lower(),
                "value": trial.value if trial.state is TrialState.COMPLETE
                else trial.intermediate_values.get(last_step, float("nan")),
                "seed_maps": trial.user_attrs.get("seed_maps", []),
                "epochs_trained": trial.user_attrs.get("epochs_trained", 0),
                "epochs_planned": trial.user_attrs.get("epochs_planned", 0),
                "pruned_at": trial.user_attrs.get("pruned_at"),
            })
    return pd.DataFrame(rows, columns=["cell", "method", "trial", "knobs", "variant", "state",
                                       "value", "seed_maps", "epochs_trained", "epochs_planned",
                                       "pruned_at"])


def tune_and_write(grid: Grid, data_dir: str | Path, results_dir: str | Path, trials: int,
                   out: str | Path | None = None, doc: str | Path | None = None,
                   intro: str = "", **options: Any) -> pd.DataFrame:
    """`tune` the grid, then write the choices to `out` (default RESULTS/tuning/tuned.toml) and
    every trial to the tuning document `doc` (default RESULTS/tuning/tuning.md), with the tuned
    grid's test runs when every study has its choice, and the choices of its studies the storage
    also holds tuned the other way (with or without pruning). Returns `choose`'s frame.
    options: `tune`'s (storage, prune, reuse, device, jobs, show_progress). A study left without
    a complete trial is a user error, raised after the others' choices are written."""
    prune = options.get("prune", True)
    tuning, trial_rows = tune(grid, data_dir, results_dir, trials, **options)
    chosen = choose(trial_rows)
    missing = len(tuning.studies) - len(chosen)
    if not chosen.empty:
        tuned = Tuned.from_choices(tuning, chosen)
        tests = test_results(tuned, grid, results_dir) if not missing \
            else pd.DataFrame(columns=TEST_COLUMNS)
        store = open_storage(options.get("storage") or default_storage(results_dir))
        other = trial_frame(tuning, store, not prune)  # studies also tuned the other way
        write_outputs(tuning, trial_rows, chosen, tests, grid.source or "grid",
                      out or layout.tuned_path(results_dir),
                      doc or layout.tuning_table_path(results_dir), prune, intro,
                      (other, choose(other), prune))
    if missing:
        raise GslbenchError(f"{missing} stud(ies) have no complete trial (their failures are "
                            "logged above): run the same tune again to retry them")
    return chosen
