"""What a grid's runs cost to train: epochs planned and trained, training seconds, per method
(and per grid file, where a report covers several: a campaign's stages); and the CPU each run
trained on, which its bits follow (training is reproducible bit for bit on one kind of CPU only:
docs/guide/grids.md).

A run started from a shared checkpoint (`gslbench.checkpoints`: two-step and GSL at α = 0 from
float's trained network, the other quantized methods from the warm-up) trains fewer epochs than
its config asks for; its config.json records `epochs_trained` and `started_from`. A method that
trains nothing (`Method.trains` False: `pca`) plans no epoch, whatever its config's `epochs`. The
report reads them from each run's config.json, checked to be the run's (its config hashes to the
run id it records and its directory's name) and in range, with the CPU config.json records
(`gslbench.devices.cpu_text`; "not recorded" for a run trained before it was). This module
imports neither torch nor faiss.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from gslbench.devices import cpu_text
from gslbench.errors import GslbenchError
from gslbench.layout import RunDir
from gslbench.methods import METHODS
from gslbench.report.tables import frame_markdown
from gslbench.storage import config_id, read_json

COST_COLUMNS = ["run", "grid", "method", "epochs_planned", "epochs_trained", "reused",
                "train_s", "cpu"]


def read_cost(runs: Iterable[RunDir], grids: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row per run (`COST_COLUMNS`): the grid file it is a cell of (`grids`: run id -> its
    name; "" without), its method, the epochs its config asks for (none for a method that trains
    nothing), those it trained (all of them for a run made before reuse existed), whether it
    started from a checkpoint, its training seconds, and the CPU it trained on
    (`gslbench.devices.cpu_text`). A config.json that is not the run's, or whose values are out of
    range, is a user error naming it."""
    grids = grids or {}
    return pd.DataFrame([{**_cost_row(run), "grid": grids.get(run.run_id, "")} for run in runs],
                        columns=COST_COLUMNS)


def _cost_row(run: RunDir) -> dict:
    record = read_json(run.config)
    config = record.get("config") if isinstance(record, dict) else None
    if not isinstance(config, dict) or record.get("run") != run.run_id \
            or config_id(config) != run.run_id:
        raise GslbenchError(f"{run.config}: not the config.json of run {run.run_id} (its config "
                            "does not hash to the run id it records and its directory's name)")
    method = METHODS.get(config.get("method"))
    planned = config.get("epochs") if method is None else method.epochs(config.get("epochs"))
    trained = record.get("epochs_trained", planned)
    seconds = record.get("train_seconds")
    if not (_is_int(planned) and _is_int(trained) and 0 <= trained <= planned):
        raise GslbenchError(f"{run.config}: 'epochs_trained' is {trained!r}, expected an integer "
                            f"in [0, {planned!r}]")
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
            or not math.isfinite(seconds) or seconds < 0:
        raise GslbenchError(f"{run.config}: 'train_seconds' is {seconds!r}, expected seconds >= 0")
    return {"run": run.run_id, "method": config.get("method"), "epochs_planned": planned,
            "epochs_trained": trained, "reused": bool(record.get("started_from")),
            "train_s": float(seconds), "cpu": cpu_text(record.get("cpu"))}


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def cost_section(cost: pd.DataFrame, level: int = 2) -> list[str]:
    """`## What the runs cost`: per grid file where the runs are of several (a campaign's stages)
    and per method, its runs, those started from a checkpoint, the epochs planned and trained,
    and the training time; then the total and what reuse saved; then the CPUs the runs trained
    on, with their runs."""
    if cost.empty:
        return []
    planned, trained = int(cost.epochs_planned.sum()), int(cost.epochs_trained.sum())
    saved = f"{planned - trained} ({(planned - trained) / planned:.0%})" if planned else "0"
    return ["#" * level + " What the runs cost", "",
            f"The runs trained {trained} of the {planned} epochs their configs ask for: reuse of "
            "shared checkpoints (float's trained network for the runs that train as float to the "
            "end, such as two-step and GSL at α = 0; the warm-up for the other quantized methods) "
            f"saved {saved}. Training took {_duration(cost.train_s.sum())} "
            "in all (the sum over runs, not wall time).", "",
            *([_per(cost, "grid"), ""] if cost.grid.nunique() > 1 else []),
            _per(cost, "method"), "",
            "The CPU each run trained on, as its config.json records it (training is reproducible "
            "bit for bit on one kind of CPU only: the grids guide):", "",
            frame_markdown(cost.groupby("cpu", sort=False).size().rename("runs").reset_index()
                           .rename(columns={"cpu": "CPU (model; torch kernels; faiss build)"})),
            ""]


def _per(cost: pd.DataFrame, column: str) -> str:
    """The Markdown table of `cost` summed per value of `column` ("grid" or "method")."""
    per = cost.groupby(column, sort=False).agg(
        runs=("run", "size"), from_a_checkpoint=("reused", "sum"),
        epochs_planned=("epochs_planned", "sum"), epochs_trained=("epochs_trained", "sum"),
        train_s=("train_s", "sum")).reset_index()
    shown = per.assign(training_time=per.train_s.map(_duration)).drop(
        columns="train_s").rename(columns=lambda name: name.replace("_", " "))
    return frame_markdown(shown)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min {secs:02d} s" if hours else f"{minutes} min {secs:02d} s"
