"""Which runs a report may put in one table: a run's *settings*, and the mixes it refuses.

A report never averages different experiments. Within a scope (`SCOPE_KEYS`: data set, feature,
protocol, loss) the shared settings that differ between runs (epochs, lr, hidden width...) give
each run its settings, `epochs=10`, a table key of its own (the frames' `settings`), so runs of
other settings are shown apart and never compared. Method knobs, seeds and the unseen protocol's
class draws are not settings: a tuned grid chooses knobs per cell (the table's note gives them),
and seeds and draws are what a cell averages. (The conditions of the unseen protocol, `seen@all`
and the others, are not a run's: each run has a row per condition, and the frames' `condition`,
a table key, keeps them apart: `gslbench.report.frames`.) Runs of one scope
trained on different feature files (another split), and runs of one cell that differ in a setting
no condition names (a quantizer schedule), are refused with one line saying how to select runs.
"""

from __future__ import annotations

import pandas as pd

from gslbench.config import QUANTIZER_FIELDS, SETTINGS
from gslbench.errors import GslbenchError
from gslbench.methods import METHODS

# a run's scope: its runs share every setting, or get a condition each
SCOPE_KEYS = ["dataset", "feature", "protocol", "loss"]
# settings that are table keys or a cell's own (never a condition)
KEYED_SETTINGS = ("dataset", "feature", "train_blocks", "protocol", "loss", "method", "quantizer",
                  "bits", "sub_bits", "seed", "draw", "split")
AVERAGED = ("seed", "draw")  # what the runs of one table cell differ in


def run_conditions(runs: pd.DataFrame) -> dict[str, str]:
    """Each run's settings: run id -> `name=value, ...` of the shared settings that differ among
    the runs of its scope (`SCOPE_KEYS`), "" where they agree.

    runs: one row per run: its config's settings, `run`, `label`, `features_sha256` and the
    `SCOPE_KEYS` columns. Raises a user error for runs of one data set, feature and protocol
    trained on different feature files, and for runs of one cell that differ in a setting their
    settings do not name (beyond the seed and the draw)."""
    _check_feature_files(runs)
    compared = [s.name for s in SETTINGS if s.name not in (*KEYED_SETTINGS, *QUANTIZER_FIELDS)
                and s.name in runs]
    conditions = {}
    for _, scope in runs.groupby(SCOPE_KEYS, sort=False):
        uses = scope.method.map(_used_settings)
        differing = [name for name in compared
                     if scope[name][uses.map(lambda used, n=name: n in used)].nunique(dropna=False) > 1]
        for values, used in zip(scope.to_dict("records"), uses, strict=True):
            conditions[values["run"]] = ", ".join(f"{name}={shown_value(values[name])}"
                                                  for name in differing if name in used)
    runs["settings"] = runs.run.map(conditions)
    cells = [*SCOPE_KEYS, "settings", "label", "quantizer", "bits", "sub_bits"]
    for cell, group in runs.groupby(cells, sort=False):
        others = [name for name in group.columns
                  if name not in (*cells, "run", *AVERAGED) and group[name].nunique(dropna=False) > 1]
        if others:
            raise GslbenchError(
                f"runs of one table cell differ in more than the seed and draw ({_cell_text(cell)}: "
                + "; ".join(f"{name} {'/'.join(sorted(map(shown_value, group[name].unique())))}"
                            for name in others)
                + "); a report never averages different experiments: report them apart, "
                "selecting runs with --runs PATTERN or -d DATASET")
    return conditions


def _used_settings(method: str) -> frozenset[str]:
    """The shared settings a run of `method` uses: all but its `Method.unused_settings` (pca
    trains nothing, so the training settings, reset to their defaults in its config, never set
    its runs apart from the trained methods' of the same grid). An unknown method (a plugin not
    installed here) uses all."""
    spec = METHODS.get(method)
    unused = set(spec.unused_settings) if spec is not None else set()
    return frozenset(s.name for s in SETTINGS if s.name not in unused)


def _check_feature_files(runs: pd.DataFrame) -> None:
    """Runs of one data set, feature and protocol must have been trained on one feature file."""
    known = runs.dropna(subset=["features_sha256"])
    for (dataset, feature, protocol), group in known.groupby(["dataset", "feature", "protocol"]):
        files = group.groupby("features_sha256").run.agg(list).sort_values(key=lambda r: -r.str.len())
        if len(files) > 1:
            found = "; ".join(f"sha256 {sha[:12]} in {len(ids)} run(s) ({', '.join(ids[:3])}"
                              f"{', ...' if len(ids) > 3 else ''})" for sha, ids in files.items())
            raise GslbenchError(
                f"runs of {dataset} ({feature}, {protocol} protocol) were trained on "
                f"{len(files)} different feature files ({found}): their queries and database "
                "differ, so a report never pools them; report them apart, selecting runs with "
                "--runs PATTERN or -d DATASET (or train the stale runs again)")


def _cell_text(cell: tuple) -> str:
    names = dict(zip([*SCOPE_KEYS, "settings", "label", "quantizer", "bits", "sub_bits"], cell,
                     strict=True))
    where = f"{names['dataset']} ({names['feature']}), {names['label']}"
    if names["quantizer"] != "none":
        where += f", {names['quantizer'].upper()} {names['bits']} bits"
    return where + (f", {names['settings']}" if names["settings"] else "")


def shown_value(value: object) -> str:
    """A setting's value as conditions, messages and settings tables print it: a whole float as
    an integer (a knob column holds its integers as floats beside other methods' NaN)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
