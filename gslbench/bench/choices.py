"""What `gslbench tune`'s trials give: the first trials of each study as a frame (pruned by the
same rule for every trial), each study's choice, the tuned grid's test runs (for
validation against test) and the files tune writes (the tuned TOML file, the CSV file of every
trial beside it, and the tuning document).
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
import pandas as pd
from optuna.trial import TrialState

from gslbench import layout
from gslbench.bench.grid import Grid
from gslbench.bench.studies import (
    CELL_FIELDS,
    REDUCTION_FACTOR,
    Study,
    pruned_step,
    startup_trials,
    survivors,
)
from gslbench.bench.tuned import Tuned
from gslbench.config import RunConfig
from gslbench.evaluation.primary import primary_score
from gslbench.methods import METHODS
from gslbench.report.tuning import tuning_document
from gslbench.settings import Setting
from gslbench.storage import atomic_path, read_json
from gslbench.train import load_config

if TYPE_CHECKING:
    from gslbench.bench.tuning_plan import Plan

TEST_COLUMNS = ["cell", "method", "variant", "seed", "map"]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
TRIAL_COLUMNS = ["study", "cell", "method", "trial", "knobs", "variant", "state", "value",
                 "seed_maps", "epochs_trained", "epochs_planned", "pruned_at"]
# tuned.trials.csv: one row per trial a choice was made from (docs/guide/tuning.md, "Outputs")
CSV_COLUMNS = ["study", "cell", "method", "trial", "knobs", "state", "validation_map",
               "seed_maps", "epochs_trained", "epochs_planned", "pruned_seed", "pruned_epoch",
               "features_sha256"]


def first_trials(study: Study, store: optuna.storages.BaseStorage, prune: bool,
                 trials: int) -> list[optuna.trial.FrozenTrial]:
    """The study's first `trials` finished (complete or pruned) trials by number (one for a
    method without knobs), whatever more the storage holds: every method is chosen from as many
    trials. None when the study is not in the storage."""
    try:
        optuna_study = optuna.load_study(study_name=study.name(prune), storage=store)
    except KeyError:
        return []
    finished = sorted(optuna_study.get_trials(deepcopy=False, states=FINISHED),
                      key=lambda trial: trial.number)
    return finished[:study.trials(trials)]


def trial_frame(tuning: Plan, store: optuna.storages.BaseStorage, prune: bool) -> pd.DataFrame:
    """The first `tuning.trials` complete or pruned trials of each of the plan's studies
    (`first_trials`): study (the Optuna study's name), cell (JSON of `CELL_FIELDS`), method,
    trial (number), knobs (dict), variant (the method's label), state (`complete` or `pruned`),
    value (mean validation mAP; for a pruned trial its mAP score where it was pruned),
    seed_maps (list), epochs_trained, epochs_planned (tune records a trial's epochs a seed
    times its seeds; a method that trains nothing, `pca`, none: `Method.epochs`), pruned_at ({"seed",
    "epoch"} where the rule pruned it, or None). With pruning, `studies.pruned_step` is applied
    to every complete trial against all of them: a complete trial the rule prunes (trial 0, run
    before any other) is `pruned`, unless the rule would prune every trial of the study (it
    then ranks none)."""
    rows = []
    for study in tuning.studies:
        chosen_from = first_trials(study, store, prune, tuning.trials)
        after = _pruned_after(study, chosen_from, tuning.trials) if prune else {}
        method = METHODS[study.method]  # a study stored before tune counted pca's epochs as 0
        for trial in chosen_from:
            knobs = {**study.default, **trial.params}
            step = after.get(trial.number, trial.last_step)
            pruned = trial.state is TrialState.PRUNED or trial.number in after
            rows.append({
                "study": study.name(prune),
                "cell": json.dumps(study.cell, sort_keys=True), "method": study.method,
                "trial": trial.number, "knobs": knobs,
                "variant": METHODS[study.method].label({**vars(study.base), **knobs}),
                "state": "pruned" if pruned else "complete",
                "value": trial.intermediate_values.get(step, float("nan")) if pruned
                else trial.value,
                "seed_maps": trial.user_attrs.get("seed_maps", []),
                "epochs_trained": method.epochs(trial.user_attrs.get("epochs_trained", 0)),
                "epochs_planned": method.epochs(trial.user_attrs.get("epochs_planned", 0)),
                "pruned_at": study.position(step) if pruned and step else None,
            })
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def _pruned_after(study: Study, trials: list[optuna.trial.FrozenTrial],
                  budget: int) -> dict[int, int]:
    """{trial number: step} of the complete trials that `pruned_step` prunes against all of
    `trials`; empty when it would prune every complete one."""
    curves = {trial.number: trial.intermediate_values for trial in trials}
    complete = [trial.number for trial in trials if trial.state is TrialState.COMPLETE]
    steps = {number: pruned_step(curves, number, survivors(budget), study.final_step)
             for number in complete}
    after = {number: step for number, step in steps.items() if step is not None}
    return {} if len(after) == len(complete) else after


def choose(trials: pd.DataFrame) -> pd.DataFrame:
    """Per (cell, method): the complete trial of highest mean validation mAP (ties: the lowest
    trial number). Columns: cell, method, trial, variant, knobs, validation_map."""
    complete = trials[trials.state == "complete"].sort_values(["value", "trial"],
                                                              ascending=[False, True])
    best = complete.drop_duplicates(["cell", "method"]).sort_values(["cell", "method"])
    return pd.DataFrame({"cell": best.cell, "method": best.method, "trial": best.trial,
                         "variant": best.variant, "knobs": best.knobs,
                         "validation_map": best.value.astype(float)}).reset_index(drop=True)


def summary(tuning: Plan, grid_file: str | Path, prune: bool) -> str:
    """What was tuned and how, in a few lines (the tuned file's header, the document's preamble)."""
    spaces = "; ".join(
        f"`{name}`: " + ", ".join(f"{knob.symbol or knob.name} {_space_text(knob)}"
                                  for knob in METHODS[name].knobs if knob.space)
        for name in dict.fromkeys(study.method for study in tuning.studies)
        if METHODS[name].knobs)
    return (f"Generated by `gslbench tune {grid_file} --trials {tuning.trials}"
            f"{'' if prune else ' --no-prune'}`: one Optuna study per cell and method, "
            f"{tuning.trials} trials for every method with knobs (one for a method without), "
            "each chosen from the first trials of its study: the start knobs the grid pins "
            f"first, then a TPE sampler seeded per study ({startup_trials(tuning.trials)} "
            f"trials before it models the others) draws from the knobs' search spaces "
            f"({spaces}). Each trial trained at seeds "
            f"{', '.join(map(str, tuning.seeds))} on the training items of a test run (in the "
            "unseen-class protocol, less validation classes of its own), scored by the mAP of "
            "the validation queries against the validation database, both drawn from items no "
            "run trains on (no item is scored that was trained on, no test query or database "
            "item is used); "
            + ("a trial was pruned where, from its second codebook refit on, 1/"
               f"{REDUCTION_FACTOR} of the trials beat the mean of its validation mAPs so far, "
               "the same rule for every trial: applied again to every trial against all of "
               "them, it prunes trial 0 (and others that ran to the end) by hindsight. " if prune
               else "no trial was pruned. ")
            + "The choice of a cell: the complete trial of highest mean validation mAP.")


def _space_text(knob: Setting) -> str:
    kind, *bounds = knob.space
    if kind == "choice":
        return "in {" + ", ".join(map(str, bounds[0])) + "}"
    low, high = (f"{bound:g}" for bound in bounds)
    return f"in [{low}, {high}]" + (" (log)" if kind == "log" else "")


def test_results(tuned: Tuned, grid: Grid, results_dir: str | Path,
                 data_dir: str | Path | None = None) -> pd.DataFrame:
    """The evaluated test runs under RESULTS/runs of the tuned grid's settings at any seed and,
    in the unseen-class protocol, any class draw (a test grid has units of its own, e.g. `bench
    --seeds 0,1,2`; the tuning grid has draw 0 alone): cell (JSON), method, variant, seed, map
    (the primary score: ADC / L2, codebooks fitted on the training representations, the unseen
    protocol's primary condition). data_dir: where imported data sets are."""
    wanted = {_unitless(config): config for config in tuned.cells(grid, data_dir).cells()}
    rows = []
    for run in layout.list_runs(results_dir):
        if not run.metrics.is_file():
            continue
        found, _ = load_config(run)
        config = wanted.get(_unitless(found))
        if config is None:
            continue
        cell = {name: getattr(config, name) for name in CELL_FIELDS}
        rows.append({"cell": json.dumps(cell, sort_keys=True), "method": config.method,
                     "variant": config.label, "seed": found.seed,
                     "map": primary_score(read_json(run.metrics))})
    return pd.DataFrame(rows, columns=TEST_COLUMNS)


def _unitless(config: RunConfig) -> str:
    """The run id of `config` at seed 0 and class draw 0: its cell and knobs, not its unit."""
    return dataclasses.replace(config, seed=0, draw=0).run_id


def write_outputs(tuning: Plan, trials: pd.DataFrame, chosen: pd.DataFrame, tests: pd.DataFrame,
                  grid_file: str | Path, out: str | Path, doc: str | Path, prune: bool,
                  intro: str = "", other: tuple[pd.DataFrame, pd.DataFrame, bool] | None = None
                  ) -> None:
    """Write the tuned file `out` (`Tuned`), every trial beside it (`write_trials_csv`) and the
    tuning document `doc` (`report.tuning`; `other`: its studies tuned the other way, see
    `tuning_document`)."""
    text = summary(tuning, grid_file, prune)
    Tuned.from_choices(tuning, chosen).write(out, header=textwrap.fill(text, 98))
    write_trials_csv(tuning, trials, layout.trials_csv_path(out))
    Path(doc).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(doc) as tmp:
        tmp.write_text(tuning_document(trials, chosen, tests, textwrap.fill(text, 98), intro,
                                       other), encoding="utf-8")



def write_trials_csv(tuning: Plan, trials: pd.DataFrame, path: str | Path) -> None:
    """Every trial the choices were made from (`tune.trial_frame`), one row each, sorted by
    study and trial number, written atomically (columns: `CSV_COLUMNS`; knobs and cell as JSON,
    seed_maps a JSON list, pruned_seed and pruned_epoch empty for a complete trial)."""
    shas = {study.name(tuning.prune): study.features_sha256 for study in tuning.studies}
    pruned = [at or {} for at in trials.pruned_at]
    frame = pd.DataFrame({
        "study": trials.study, "cell": trials.cell, "method": trials.method,
        "trial": trials.trial, "knobs": [json.dumps(k, sort_keys=True) for k in trials.knobs],
        "state": trials.state, "validation_map": trials.value,
        "seed_maps": [json.dumps(list(maps)) for maps in trials.seed_maps],
        "epochs_trained": trials.epochs_trained, "epochs_planned": trials.epochs_planned,
        "pruned_seed": pd.array([at.get("seed") for at in pruned], dtype="Int64"),
        "pruned_epoch": pd.array([at.get("epoch") for at in pruned], dtype="Int64"),
        "features_sha256": [shas.get(name, "") for name in trials.study]},
        columns=CSV_COLUMNS).sort_values(["study", "trial"])
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6f")
