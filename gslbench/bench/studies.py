"""The Optuna side of `gslbench tune` (`gslbench.bench.tune`): a *study* per (cell, method) and
feature file, its search space (each tuned knob's `Setting.space` as an Optuna distribution), its
sampler (the grid's pinned start knobs first, then TPE draws seeded per study and trial, so no two
studies or processes draw alike, after `startup_trials` random ones), its pruner (`PeerPruner`:
one rule for every trial, trial 0 included, at every refit of every seed) and the shared storage
(SQLite by default, any URL Optuna's RDB storage takes) with heartbeats, through which a killed
trial is run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gslbench import layout
from gslbench.config import FIELDS, KNOBS, RunConfig
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS
from gslbench.quantizers import make_quantizer
from gslbench.settings import Setting
from gslbench.storage import config_id

# The settings that name a tuning cell: every field but the method, the knobs, the seed, the split
# and the unseen protocol's class draw (a tuning grid tunes at one draw, whose validation holds
# classes of its own out; its choice serves every draw, as it serves every seed)
CELL_FIELDS = tuple(name for name, setting in FIELDS.items()
                    if name not in ("method", "seed", "split", "draw") and setting not in KNOBS)
HEARTBEAT_SECONDS = 10.0  # how often a running trial says it is alive
GRACE_SECONDS = 60.0  # a RUNNING trial silent this long is failed (its process died) and re-run
REDUCTION_FACTOR = 3  # pruning: a trial that a third of the budget beats is stopped
SQLITE_TIMEOUT_SECONDS = 120  # how long a process waits for another's write to the SQLite file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """One (cell, method) on one feature file: `base` is the cell's config at the method's
    default knobs, split validation, at the first seed; `seeds` the seeds every trial trains;
    `features_sha256` the sha256 of the feature file it is scored on (another file, e.g. another
    `--split-seed`, is another study); `start` the knobs of trial 0 the grid pins ((name, value)
    pairs; unpinned knobs take the registry's default)."""

    base: RunConfig
    seeds: tuple[int, ...]
    features_sha256: str = ""
    start: tuple[tuple[str, Any], ...] = ()

    @property
    def method(self) -> str:
        return self.base.method

    @property
    def cell(self) -> dict[str, Any]:
        """The cell's `CELL_FIELDS` values."""
        return {name: getattr(self.base, name) for name in CELL_FIELDS}

    @property
    def key(self) -> str:
        """12 hex digits of the hash of the cell, the method, the seeds, the start knobs and the
        feature file's sha256."""
        return config_id({"cell": self.cell, "method": self.method, "seeds": list(self.seeds),
                          "start": self.default, "features_sha256": self.features_sha256})

    def name(self, prune: bool) -> str:
        """The Optuna study's name: `gsl digits pq 16 bits sub_bits 4 standard 1a2b3c4d5e6f
        prune` (a study tuned without pruning is another study, with the same draws)."""
        base = self.base
        text = f"{base.method} {base.dataset} {base.quantizer} {base.bits} bits"
        return (f"{text} sub_bits {base.sub_bits} {base.protocol} {self.key} "
                f"{'prune' if prune else 'no-prune'}")

    @property
    def sampler_seed(self) -> int:
        """The sampler's seed, from the cell, the method and the seeds (never shared by two
        studies; the same for another feature file, so its draws are comparable)."""
        draws = config_id({"cell": self.cell, "method": self.method, "seeds": list(self.seeds)})
        return int(draws, 16) % 2**31

    @property
    def knobs(self) -> tuple[Setting, ...]:
        """The method's knobs that have a search space."""
        return tuple(knob for knob in METHODS[self.method].knobs if knob.space)

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """Each tuned knob's Optuna distribution; the knob that counts candidates
        (`Method.candidates`) is capped at the codebook size."""
        candidates = METHODS[self.method].candidates(vars(self.base))
        cap = make_quantizer(self.base.quantizer, self.base.dim_out, self.base.bits,
                             self.base.sub_bits).codebook_size if candidates else None
        return {knob.name: _distribution(knob, cap if candidates and knob.name == candidates[0]
                                         else None) for knob in self.knobs}

    def config(self, knobs: dict[str, Any], seed: int) -> RunConfig:
        """The validation run of this study at `knobs` and `seed`."""
        return dataclasses.replace(self.base, seed=seed, **knobs)

    def trials(self, trials: int) -> int:
        """The study's number of trials: `trials`, or 1 for a method without knobs to tune."""
        return trials if self.knobs else 1

    @property
    def default(self) -> dict[str, Any]:
        """Trial 0's knobs: the pinned start, else the registry's defaults."""
        pinned = dict(self.start)
        return {knob.name: pinned.get(knob.name, knob.default) for knob in self.knobs}

    @property
    def final_step(self) -> int:
        """The step of a trial's last report (the last epoch of the last seed)."""
        return self.base.epochs * len(self.seeds)

    def position(self, step: int) -> dict[str, int]:
        """The seed and epoch of a report step (`seed position x epochs + epoch`)."""
        index = (step - 1) // self.base.epochs
        return {"seed": self.seeds[index], "epoch": step - index * self.base.epochs}


def check_start(method: str, knobs: dict[str, Any], source: str) -> tuple[tuple[str, Any], ...]:
    """A method's pinned trial-0 knobs (`[start.METHOD]` of a tuning grid) as (name, value)
    pairs: each a tuned knob of the method, of its type, inside its search space; else a user
    error naming the grid."""
    where = f"{source}: [start.{method}]"
    if method not in METHODS:
        raise GslbenchError(f"{where}: unknown method {method!r}")
    spaces = {knob.name: knob for knob in METHODS[method].knobs if knob.space}
    for name, value in knobs.items():
        knob = spaces.get(name)
        if knob is None:
            raise GslbenchError(f"{where}: {name} is not a tuned knob of {method}; its knobs: "
                                f"{', '.join(spaces) or 'none'}")
        try:
            knob.check(value)
        except GslbenchError as exc:
            raise GslbenchError(f"{where}: {exc}") from None
        kind, *bounds = knob.space
        if not (value in bounds[0] if kind == "choice" else bounds[0] <= value <= bounds[1]):
            raise GslbenchError(f"{where}: {name} = {value!r} is outside its search space "
                                f"{knob.space}")
    return tuple((name, knobs[name]) for name in spaces if name in knobs)


def _distribution(knob: Setting, cap: int | None) -> optuna.distributions.BaseDistribution:
    kind, *bounds = knob.space
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution(tuple(bounds[0]))
    if kind == "int":
        return optuna.distributions.IntDistribution(bounds[0], min(bounds[1], cap or bounds[1]))
    return optuna.distributions.FloatDistribution(bounds[0], bounds[1], log=kind == "log")


def startup_trials(trials: int) -> int:
    """Trials before TPE models the others: trial 0 (the start) and a third of the budget drawn at
    random, at least one (TPE's own default, 10, would make a budget of 8 all random draws)."""
    return max(2, trials // 3)


class StudySampler(optuna.samplers.BaseSampler):
    """TPE seeded per study and trial: trial 0 takes the start knobs (`first`); trial n draws
    with a TPE sampler seeded by (study seed, n), so two processes drawing at once never draw
    alike, random for the first `startup` trials and modelled on the finished ones after.
    Enqueued trials (a killed or interrupted trial run again) keep their knobs (Optuna's fixed
    params)."""

    def __init__(self, seed: int, first: dict[str, Any], startup: int) -> None:
        self.seed, self.first, self.startup = seed, first, startup
        self._tpe = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._tpe = optuna.samplers.TPESampler(seed=(self.seed + 7919 * trial.number) % 2**32,
                                               n_startup_trials=self.startup)
        self._tpe.before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study,
                                    trial: optuna.trial.FrozenTrial) -> dict:
        return {}

    def sample_relative(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                        search_space: dict) -> dict:
        return {}

    def sample_independent(self, study: optuna.Study, trial: optuna.trial.FrozenTrial, name: str,
                           distribution: optuna.distributions.BaseDistribution) -> Any:
        if trial.number == 0:
            return self.first[name]
        return self._tpe.sample_independent(study, trial, name, distribution)

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial,
                    state: TrialState, values: list[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)


def survivors(trials: int) -> int:
    """How many trials may beat a trial at a point before the pruner stops it: a third of the
    budget (`REDUCTION_FACTOR`), at least 1."""
    return max(1, -(-trials // REDUCTION_FACTOR))


def pruned_step(curves: dict[int, dict[int, float]], number: int, keep: int,
                final_step: int) -> int | None:
    """The rule that prunes a trial, the same for every trial of a study: at each step it
    reported before `final_step`, from its second report on, a trial's score is the mean of its
    reports so far (so no single refit decides); it is pruned at the first step where at least
    `keep` other trials that reported at that step scored higher there. curves: each trial's
    {step: validation mAP}. Returns that step, or None. Adding trials never saves a trial, so a
    trial pruned against the trials finished so far is pruned against all of them."""
    mine = sorted(step for step in curves[number] if step < final_step)
    for count, step in enumerate(mine, 1):
        if count < 2:
            continue
        score = _score(curves[number], step)
        beaten = sum(_score(curve, step) > score for other, curve in curves.items()
                     if other != number and step in curve)
        if beaten >= keep:
            return step
    return None


def _score(curve: dict[int, float], step: int) -> float:
    """The mean of a trial's reports up to `step`."""
    values = [value for at, value in curve.items() if at <= step]
    return sum(values) / len(values)


class PeerPruner(optuna.pruners.BasePruner):
    """`pruned_step` against the study's finished (complete or pruned) trials, checked at every
    report of a running trial; `choices.choose` applies it again against every trial of the
    study, so trial 0, which runs before any peer, is judged by the same rule."""

    def __init__(self, keep: int, final_step: int) -> None:
        self.keep, self.final_step = keep, final_step

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        curves = {t.number: t.intermediate_values for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))}
        curves[trial.number] = trial.intermediate_values
        return pruned_step(curves, trial.number, self.keep, self.final_step) is not None


def suggest_knobs(study: Study, trial: optuna.Trial) -> dict[str, Any]:
    """The trial's value of each of the study's tuned knobs (`StudySampler`)."""
    return {name: _suggest(trial, name, distribution)
            for name, distribution in study.distributions().items()}


def _suggest(trial: optuna.Trial, name: str,
             distribution: optuna.distributions.BaseDistribution) -> Any:
    """A knob's value for the trial, drawn from `distribution`."""
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high)
    if isinstance(distribution, optuna.distributions.FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_categorical(name, distribution.choices)


def open_storage(url: str, heartbeat: float = HEARTBEAT_SECONDS,
                 grace: float = GRACE_SECONDS) -> optuna.storages.RDBStorage:
    """The Optuna storage at `url` (any URL Optuna's RDB storage takes; SQLite waits up to
    SQLITE_TIMEOUT_SECONDS for another process's write) with heartbeats: a RUNNING trial silent
    for `grace` seconds is failed and enqueued again with its knobs. A bad URL is a user error
    (`check_storage`)."""
    check_storage(url)
    engine = {"connect_args": {"timeout": SQLITE_TIMEOUT_SECONDS}} if url.startswith("sqlite") \
        else {}
    for attempt in range(3):  # two processes creating the tables at once: the loser retries
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, engine_kwargs=engine, heartbeat_interval=max(1, round(heartbeat)),
                    grace_period=max(2, round(grace)),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=None))
        except Exception as exc:  # SQLAlchemy's and Optuna's errors for a URL they cannot open
            error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            time.sleep(1.0 + attempt)
    raise GslbenchError(f"--storage {url}: cannot open it ({error})")


def check_storage(url: str) -> None:
    """Refuse, with one line, an empty URL, an in-memory SQLite database (neither kept nor shared
    by tune's processes) and a SQLite file this process cannot write (a read-only file or
    folder)."""
    if not url.strip():
        raise GslbenchError("--storage: empty; leave it out for the default "
                            "(sqlite:///RESULTS/tuning/studies.db)")
    if not url.startswith("sqlite"):
        return
    path = url.partition(":///")[2].partition("?")[0]
    if path in ("", ":memory:") or "mode=memory" in url:
        raise GslbenchError(f"--storage {url}: an in-memory database is neither kept nor shared "
                            "by tune's processes; give a file, sqlite:///PATH")
    file = Path(path)
    folder = file.parent if file.parent.is_dir() else None
    if (file.exists() and not os.access(file, os.W_OK)) or (
            folder is not None and not os.access(folder, os.W_OK | os.X_OK)):
        raise GslbenchError(f"--storage {url}: {file if file.exists() else folder} is read-only "
                            "(SQLite writes the file and a journal beside it)")


def default_storage(results_dir: str | Path) -> str:
    """sqlite:///RESULTS/tuning/studies.db (the folder is created)."""
    path = layout.tuning_dir(results_dir).resolve() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def load_study(study: Study, storage: optuna.storages.BaseStorage, prune: bool,
               trials: int) -> optuna.Study:
    """The Optuna study of `study` (created if missing), with its sampler and pruner for a
    budget of `trials`."""
    pruner = PeerPruner(survivors(trials), study.final_step) if prune \
        else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=study.name(prune), direction="maximize",
                               sampler=StudySampler(study.sampler_seed, study.default,
                                                    startup_trials(trials)),
                               pruner=pruner, load_if_exists=True)


class TrialProgress:
    """Finished trials of a plan's studies (every process's on the storage) against those
    planned, and one INFO line per trial this process finished, `[12/80] gsl digits ... prune:
    trial 3 pruned`; on a terminal the lines go above a tqdm bar of the finished trials."""

    def __init__(self, studies: list[tuple[str, int]], store: optuna.storages.BaseStorage,
                 bar: bool) -> None:
        """studies: (Optuna study name, trials it plans) of each study."""
        self.names, self.store = [name for name, _ in studies], store
        self.planned = sum(planned for _, planned in studies)
        self.bar = tqdm(total=self.planned, initial=self.finished(), desc="tune", unit="trial",
                        dynamic_ncols=True, bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| "
                        "{elapsed}<{remaining}") if bar else None
        self._redirect = logging_redirect_tqdm() if bar else contextlib.nullcontext()

    def __enter__(self) -> TrialProgress:
        self._redirect.__enter__()  # log lines go above the bar, never over it
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.bar is not None:
            self.bar.n = self.finished()  # with the trials others finished meanwhile
            self.bar.close()
        self._redirect.__exit__(*exc_info)

    def finished(self) -> int:
        """Complete or pruned trials of the studies, in the storage."""
        count = 0
        for name in self.names:
            try:
                study_id = self.store.get_study_id_from_name(name)
            except KeyError:  # not created yet
                continue
            count += len(self.store.get_all_trials(study_id, deepcopy=False, states=(
                TrialState.COMPLETE, TrialState.PRUNED)))
        return count

    def trial_done(self, text: str) -> None:
        finished = self.finished()
        if self.bar is not None:
            self.bar.n = finished
            self.bar.refresh()
        log.info("[%d/%d] %s", finished, self.planned, text)
