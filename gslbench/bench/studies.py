"""The Optuna side of `gslbench tune` (`gslbench.bench.tune`): a *study* per (cell, method), its
search space (each tuned knob's `Setting.space` as an Optuna distribution), its sampler (the
method's default first, then TPE draws seeded per study and trial, so no two studies or
processes draw alike), its pruner (successive halving) and the shared storage (SQLite by default,
any URL Optuna's RDB storage takes) with heartbeats, through which a killed trial is run again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
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

# The settings that name a tuning cell: every field but the method, the knobs, the seed and the split
CELL_FIELDS = tuple(name for name, setting in FIELDS.items()
                    if name not in ("method", "seed", "split") and setting not in KNOBS)
HEARTBEAT_SECONDS = 10.0  # how often a running trial says it is alive
GRACE_SECONDS = 60.0  # a RUNNING trial silent this long is failed (its process died) and re-run
REDUCTION_FACTOR = 3  # successive halving keeps the best third at each rung
SQLITE_TIMEOUT_SECONDS = 120  # how long a process waits for another's write to the SQLite file

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Study:
    """One (cell, method): `base` is the cell's config at the method's default knobs, split
    validation, at the first seed; `seeds` the seeds every trial trains."""

    base: RunConfig
    seeds: tuple[int, ...]

    @property
    def method(self) -> str:
        return self.base.method

    @property
    def cell(self) -> dict[str, Any]:
        """The cell's `CELL_FIELDS` values."""
        return {name: getattr(self.base, name) for name in CELL_FIELDS}

    @property
    def key(self) -> str:
        """12 hex digits of the hash of the cell, the method and the seeds."""
        return config_id({"cell": self.cell, "method": self.method, "seeds": list(self.seeds)})

    def name(self, prune: bool) -> str:
        """The Optuna study's name: `gsl digits pq 16 bits sub_bits 4 standard 1a2b3c4d5e6f
        prune` (a study tuned without pruning is another study, with the same draws)."""
        base = self.base
        text = f"{base.method} {base.dataset} {base.quantizer} {base.bits} bits"
        return (f"{text} sub_bits {base.sub_bits} {base.protocol} {self.key} "
                f"{'prune' if prune else 'no-prune'}")

    @property
    def sampler_seed(self) -> int:
        """The sampler's seed, from the cell and the method (never shared by two studies)."""
        return int(self.key, 16) % 2**31

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
        return {knob.name: knob.default for knob in self.knobs}


def _distribution(knob: Setting, cap: int | None) -> optuna.distributions.BaseDistribution:
    kind, *bounds = knob.space
    if kind == "choice":
        return optuna.distributions.CategoricalDistribution(tuple(bounds[0]))
    if kind == "int":
        return optuna.distributions.IntDistribution(bounds[0], min(bounds[1], cap or bounds[1]))
    return optuna.distributions.FloatDistribution(bounds[0], bounds[1], log=kind == "log")


class StudySampler(optuna.samplers.BaseSampler):
    """TPE seeded per study and trial: trial 0 takes the knobs' defaults (`first`); trial n draws
    with a TPE sampler seeded by (study seed, n), so two processes drawing at once never draw
    alike. Enqueued trials (a killed trial run again) keep their knobs (Optuna's fixed params)."""

    def __init__(self, seed: int, first: dict[str, Any]) -> None:
        self.seed, self.first = seed, first
        self._tpe = optuna.samplers.TPESampler(seed=seed)

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._tpe = optuna.samplers.TPESampler(seed=(self.seed + 7919 * trial.number) % 2**32)
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
    for `grace` seconds is failed and enqueued again with its knobs. A bad URL is a user error."""
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


def default_storage(results_dir: str | Path) -> str:
    """sqlite:///RESULTS/tuning/studies.db (the folder is created)."""
    path = layout.tuning_dir(results_dir).resolve() / "studies.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def load_study(study: Study, storage: optuna.storages.BaseStorage, prune: bool,
               first_refit: int) -> optuna.Study:
    """The Optuna study of `study` (created if missing), with its sampler and pruner."""
    pruner = optuna.pruners.SuccessiveHalvingPruner(
        min_resource=first_refit, reduction_factor=REDUCTION_FACTOR) if prune \
        else optuna.pruners.NopPruner()
    return optuna.create_study(storage=storage, study_name=study.name(prune), direction="maximize",
                               sampler=StudySampler(study.sampler_seed, study.default),
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
