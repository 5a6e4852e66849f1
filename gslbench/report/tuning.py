"""The tuning document (`gslbench tune --doc`, docs/tuning.md): what pruning saved, the choices,
how well validation ranked the methods as test did (once the tuned grid has test runs), and every
trial of every study with its knobs, validation mAP and whether it was pruned.

Validation against test, per cell: the Spearman rank correlation between the methods' validation
mAPs (each method's chosen trial, mean over the tuning seeds) and their test mAPs (mean over the
test seeds, codebooks fitted on the training representations), and the share of the methods
whose difference to two-step has the same sign on validation as on test.

The most frequent choices (`frequent_choices`), per tuned knob over every study of its method:
for a choice or integer knob its most frequent value (ties: the first in the search space's
order, or the smallest); for a real knob the most frequent bin (a decade on a log scale, a tenth
of the range on a linear one; ties: the lower bin), represented by the median of the values chosen
in it to two significant digits (a real knob's draws never repeat, so its exact most frequent
value would be whatever trial 0 tried). Each method's default knobs follow them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from gslbench.methods import METHODS
from gslbench.report.tables import frame_markdown
from gslbench.settings import Setting

REFERENCE = "two-step"  # the method the paired differences are taken against
LINEAR_BINS = 10  # a linear knob's range is cut into this many equal bins
FREQUENT_COLUMNS = ["method", "knob", "value", "count", "studies", "values"]


def cell_title(cell: str) -> str:
    """`digits (pixels), standard protocol, PQ, 16 bits, 16-word codebooks, pairwise loss` for a
    cell's JSON (`digits (pixels), standard protocol, unquantized, pairwise loss` for float's)."""
    values = json.loads(cell)
    quantizer = "unquantized" if values["quantizer"] == "none" else (
        f"{values['quantizer'].upper()}, {values['bits']} bits, {2 ** values['sub_bits']}-word "
        "codebooks")
    return (f"{values['dataset']} ({values['feature']}), {values['protocol']} protocol, "
            f"{quantizer}, {values['loss']} loss")


def pruning_markdown(trials: pd.DataFrame) -> str:
    """Per method: trials, pruned trials, epochs run through (trained, or started from a shared
    checkpoint's) and planned, and the share pruning saved."""
    rows = []
    for method, group in trials.groupby("method", sort=False):
        planned, trained = int(group.epochs_planned.sum()), int(group.epochs_trained.sum())
        rows.append({"method": method, "trials": len(group),
                     "pruned": int((group.state == "pruned").sum()), "epochs run": trained,
                     "epochs planned": planned,
                     "saved": f"{planned - trained} ({(planned - trained) / planned:.0%})"
                     if planned else "0"})
    frame = pd.DataFrame(rows, columns=["method", "trials", "pruned", "epochs run",
                                        "epochs planned", "saved"])
    planned, trained = int(trials.epochs_planned.sum()), int(trials.epochs_trained.sum())
    total = (f"Pruning saved {planned - trained} of {planned} planned training epochs "
             f"({(planned - trained) / planned:.0%}); {int((trials.state == 'pruned').sum())} of "
             f"{len(trials)} trials were pruned. The trials ran through the other {trained}: "
             "those of a warm-up that a trial started from a shared checkpoint "
             "(`gslbench.checkpoints`) are counted there, though not trained again."
             if planned else "No trial was trained.")
    return "\n".join([total, "", frame_markdown(frame)])


def choices_markdown(chosen: pd.DataFrame) -> str:
    """The choices: cell, method, the chosen setting, its trial and mean validation mAP."""
    frame = pd.DataFrame({
        "cell": chosen.cell.map(cell_title), "method": chosen.method, "choice": chosen.variant,
        "trial": chosen.trial, "validation mAP": chosen.validation_map.map("{:.4f}".format),
    })
    return frame_markdown(frame)


def frequent_choices(chosen: pd.DataFrame) -> pd.DataFrame:
    """Each tuned knob's most frequent choice over the studies in `chosen`
    (`bench.choices.choose`'s frame; the rule is in the module docstring). Columns: method,
    knob (its name), value, count (studies whose choice has that value or lies in that bin),
    studies (of the method), values (the chosen values counted, sorted)."""
    rows, tuned = [], set(chosen.method)
    for method in (name for name in METHODS if name in tuned):
        group = chosen[chosen.method == method]
        for knob in (knob for knob in METHODS[method].knobs if knob.space):
            values = [knobs[knob.name] for knobs in group.knobs if knob.name in knobs]
            if values:
                value, counted = _most_frequent(knob, values)
                rows.append({"method": method, "knob": knob.name, "value": value,
                             "count": len(counted), "studies": len(values),
                             "values": sorted(counted)})
    return pd.DataFrame(rows, columns=FREQUENT_COLUMNS)


def _most_frequent(knob: Setting, values: list[Any]) -> tuple[Any, list[Any]]:
    """(the most frequent choice, the values counted for it)."""
    kind, *bounds = knob.space
    if kind in ("choice", "int"):
        order = list(bounds[0]) if kind == "choice" else sorted(set(values))
        counts = Counter(values)
        value = max(order, key=lambda v: (counts[v], -order.index(v)))
        return value, [v for v in values if v == value]
    if kind == "log":
        bins = [math.floor(math.log10(v)) for v in values]
    else:
        low, high = bounds
        bins = [min(int((v - low) / (high - low) * LINEAR_BINS), LINEAR_BINS - 1) for v in values]
    counts = Counter(bins)
    modal = min(counts, key=lambda b: (-counts[b], b))
    counted = [v for v, b in zip(values, bins, strict=True) if b == modal]
    return float(f"{float(np.median(counted)):.2g}"), counted


def frequent_markdown(frequent: pd.DataFrame) -> str:
    """The most frequent choices beside each knob's default in this version of gslbench."""
    settings = {knob.name: knob for method in METHODS.values() for knob in method.knobs}

    def show(value: Any) -> str:
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    frame = pd.DataFrame({
        "method": frequent.method,
        "knob": [settings[name].symbol or name for name in frequent.knob],
        "most frequent choice": frequent.value.map(show),
        "studies": [f"{c} of {n}" for c, n in zip(frequent["count"], frequent.studies,
                                                   strict=True)],
        "values counted": [f"{show(v[0])} to {show(v[-1])}" if v[0] != v[-1] else show(v[0])
                           for v in frequent["values"]],
        "default": [show(settings[name].default) for name in frequent.knob],
    })
    differ = [f"{method} {knob}" for method, knob, chosen, default in zip(
        frame.method, frame.knob, frame["most frequent choice"], frame.default, strict=True)
        if chosen != default]
    return "\n".join([
        "Per knob over every study of its method: a choice or integer knob's most frequent "
        "value; a real knob's most frequent decade (log scale) or tenth of its range (linear), "
        "as the median of the values chosen in it. "
        + (f"The defaults of this version of gslbench differ in {', '.join(differ)}."
           if differ else "Every default of this version of gslbench is its knob's most "
           "frequent choice."), "", frame_markdown(frame)])


def agreement(chosen: pd.DataFrame, tests: pd.DataFrame) -> pd.DataFrame:
    """Per cell with test runs of the chosen settings of 2 methods or more: methods (how many
    are in both), spearman (rank correlation of validation and test mAP over them; NaN when one
    side is constant), agree and pairs (methods whose difference to two-step has the same sign
    on validation as on test, of those compared)."""
    chosen_tests = tests.merge(chosen[["cell", "method", "variant"]], on=["cell", "method",
                                                                         "variant"])
    test_means = chosen_tests.groupby(["cell", "method"])["map"].mean()
    rows = []
    for cell, group in chosen.groupby("cell", sort=False):
        validation = group.set_index("method").validation_map
        test = test_means[cell] if cell in test_means.index.get_level_values(0) \
            else pd.Series(dtype=float)
        both = [method for method in validation.index if method in test.index]
        if len(both) < 2:  # nothing to rank (float is a cell of its own)
            continue
        v, t = validation[both].to_numpy(), test[both].to_numpy()
        rho = float(spearmanr(v, t).statistic) if len(both) > 1 and np.ptp(v) and np.ptp(t) \
            else float("nan")
        others = [m for m in both if m != REFERENCE] if REFERENCE in both else []
        agree = sum(np.sign(validation[m] - validation[REFERENCE])
                    == np.sign(test[m] - test[REFERENCE]) for m in others)
        rows.append({"cell": cell, "methods": len(both), "spearman": rho, "agree": int(agree),
                     "pairs": len(others)})
    return pd.DataFrame(rows, columns=["cell", "methods", "spearman", "agree", "pairs"])


def agreement_markdown(table: pd.DataFrame) -> str:
    """The agreement table with a sentence on what it finds."""
    pairs, agree = int(table.pairs.sum()), int(table.agree.sum())
    rhos = table.spearman.dropna()
    finding = (f"Over {len(table)} cell(s): mean Spearman ρ {rhos.mean():+.2f}" if len(rhos)
               else f"Over {len(table)} cell(s): no rank correlation (constant mAPs)")
    finding += (f"; {agree} of {pairs} differences to {REFERENCE} have the same sign on "
                f"validation as on test ({agree / pairs:.0%})." if pairs else ".")
    if pairs and agree / pairs < 0.75 or len(rhos) and rhos.mean() < 0.5:
        finding += (" Validation does not predict test well here: read the choices as "
                    "settings that scored well on held-out items, not as test rankings.")
    frame = pd.DataFrame({
        "cell": table.cell.map(cell_title), "methods": table.methods,
        "Spearman ρ": table.spearman.map(lambda rho: "—" if np.isnan(rho) else f"{rho:+.2f}"),
        f"sign vs {REFERENCE} agrees": [f"{a} of {p}" if p else "—"
                                        for a, p in zip(table.agree, table.pairs, strict=True)],
    })
    return "\n".join([finding, "", frame_markdown(frame)])


def trials_markdown(trials: pd.DataFrame, chosen: pd.DataFrame) -> str:
    """A table per study (cell and method): every finished trial with its knobs, state, mean
    validation mAP (a pruned trial: its last reported one), per-seed mAPs and epochs trained;
    the choice in bold."""
    picked = set(zip(chosen.cell, chosen.method, chosen.trial, strict=True))
    parts = []
    for (cell, method), group in trials.groupby(["cell", "method"], sort=False):
        rows = []
        for _, trial in group.sort_values("trial").iterrows():
            bold = "**" if (cell, method, trial.trial) in picked else ""
            where = trial.pruned_at or {}
            state = trial.state if trial.state == "complete" else \
                f"pruned (seed {where.get('seed')}, epoch {where.get('epoch')})"
            rows.append({"trial": trial.trial, "setting": f"{bold}{trial.variant}{bold}",
                         "state": state, "validation mAP": f"{trial.value:.4f}",
                         "per seed": ", ".join(f"{value:.4f}" for value in trial.seed_maps),
                         "epochs": f"{trial.epochs_trained} of {trial.epochs_planned}"})
        parts += [f"### {cell_title(cell)}: {method}", "", frame_markdown(pd.DataFrame(rows)), ""]
    return "\n".join(parts)


def both_ways_markdown(trials: pd.DataFrame, chosen: pd.DataFrame, other: pd.DataFrame,
                       other_chosen: pd.DataFrame, pruned: bool) -> str:
    """The (cell, method) studies tuned both with and without pruning: each way's choice and its
    validation mAP, whether the choice is the same, and the epochs each way trained. `trials`
    and `chosen` are this tune's (with pruning when `pruned`), `other` and `other_chosen` the
    other way's (`bench.tune.trial_frame` and `bench.choices.choose` frames)."""
    keys = ["cell", "method"]
    both = chosen.merge(other_chosen, on=keys, suffixes=("", "_other"))
    epochs = trials.groupby(keys).epochs_trained.sum().rename("epochs")
    other_epochs = other.groupby(keys).epochs_trained.sum().rename("epochs_other")
    both = both.join(epochs, on=keys).join(other_epochs, on=keys)
    if pruned:
        with_, without = "", "_other"
    else:
        with_, without = "_other", ""
    same = both.variant == both.variant_other
    frame = pd.DataFrame({
        "cell": both.cell.map(cell_title), "method": both.method,
        "with pruning": both["variant" + with_] + " (" + both["validation_map" + with_].map(
            "{:.4f}".format) + ")",
        "without pruning": both["variant" + without] + " (" + both[
            "validation_map" + without].map("{:.4f}".format) + ")",
        "same choice": same.map({True: "yes", False: "no"}),
        "epochs with / without": both["epochs" + with_].astype(str) + " / "
        + both["epochs" + without].astype(str)})
    trained, full = int(both["epochs" + with_].sum()), int(both["epochs" + without].sum())
    return "\n".join([
        f"{len(both)} stud(ies) were tuned both ways: pruning kept the choice in {int(same.sum())}"
        f" and trained {trained} of the {full} epochs the search without it trained"
        + (f" ({(full - trained) / full:.0%} fewer)." if full else "."), "",
        frame_markdown(frame)])


def tuning_document(trials: pd.DataFrame, chosen: pd.DataFrame, tests: pd.DataFrame,
                    summary: str, intro: str = "",
                    other: tuple[pd.DataFrame, pd.DataFrame, bool] | None = None) -> str:
    """docs/tuning.md from tune's trial frame (`bench.tune.trial_frame`), its choices
    (`bench.choices.choose`) and the test runs of the tuned grid (`bench.choices.test_results`,
    empty before bench ran them): the title, `intro`, `summary`, what pruning saved (and, with
    `other` = (the other way's trials, its choices, whether this tune pruned) for studies also
    tuned the other way, `both_ways_markdown`), the choices, how validation agrees with test,
    every trial."""
    table = agreement(chosen, tests)
    both_ways = []
    if other is not None and not other[1].empty:
        both_ways = ["### Tuned with and without pruning", "",
                     both_ways_markdown(trials, chosen, *other), ""]
    return "\n".join([
        "# gslbench tuning", "",
        *([intro.strip(), ""] if intro.strip() else []),
        summary.strip(), "",
        "## What pruning saved", "", pruning_markdown(trials), "", *both_ways,
        "## The choices", "", choices_markdown(chosen), "",
        "## The most frequent choices", "", frequent_markdown(frequent_choices(chosen)), "",
        "## Validation against test", "",
        agreement_markdown(table) if not table.empty else
        "No test runs of the tuned grid yet: run `gslbench bench GRID --tuned FILE`, then this "
        "tune again (it reruns nothing) to compare.", "",
        "## Every trial", "", trials_markdown(trials, chosen),
    ])
