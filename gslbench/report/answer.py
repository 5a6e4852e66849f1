"""The answer a results document opens with: one compact table of the declared comparisons
(`gslbench.report.stats.comparisons`), a row per data set, protocol, condition, codebook fit,
quantizer, codebook size and variant of a pair's first method, a column per declared pair."""

from __future__ import annotations

import pandas as pd

from gslbench.declared import BEST_OTHER, DEFAULT, Declared
from gslbench.report.frames import KEY_DEFAULTS
from gslbench.report.neighbours import metric_text
from gslbench.report.stats import REGIME_KEYS, units_text
from gslbench.report.summary import detectable_text
from gslbench.report.tables import MISSING, frame_markdown

FLIPPED = {"better": "worse", "worse": "better"}  # a verdict read the other way round


def answer_section(compared: pd.DataFrame, declared: Declared = DEFAULT,
                   note: str = "") -> list[str]:
    """`## The answer`: one compact table of the declared comparisons (`compared`:
    `stats.comparisons`), a row per data set, protocol, condition, codebook fit, quantizer,
    codebook size and variant of a pair's first method (the tuned GSL and any control), a column
    per declared pair: its verdict and difference at each code length (`—` where the other
    method has no runs), the paired units (fewest) and the detectable difference (largest).
    `note`: why a comparison is left out (`stats.validation_note`)."""
    if compared.empty:
        return ["## The answer", "", note, ""] if note else []
    keys = [k for k in REGIME_KEYS if k != "code_bits"]
    labels = [f"vs {against}" if against != BEST_OTHER else "vs the best other"
              for _, against in declared.pairs]
    rows = []
    for key, regime in compared.groupby(keys, sort=False):
        subjects = dict.fromkeys(v for name, _ in declared.pairs
                                 for v in [*regime.method, *regime.against]
                                 if v == name or v.split()[0] == name)
        for subject in subjects:
            found = [_answer_cell(regime, subject, against) for _, against in declared.pairs]
            mine = regime[(regime.method == subject) | (regime.against == subject)]
            rows.append({**dict(zip(keys, key, strict=True)), "subject": subject,
                         **dict(zip(labels, found, strict=True)),
                         "units": units_text(int(mine.n.min())),
                         "detectable": detectable_text(mine.detectable.max())})
    frame = pd.DataFrame(rows)
    frame = frame.assign(words=2 ** frame.sub_bits, fit=frame.codebooks != KEY_DEFAULTS[
        "codebooks"]).sort_values(["dataset", "protocol", "condition", "fit", "quantizer",
                                   "words"], kind="stable")
    shown = [k for k in ("dataset", "feature", "protocol", "condition", "codebooks", "loss",
                         "search", "metric")
             if frame[k].nunique() > 1 or k in ("dataset", "protocol", "codebooks")]
    frame = frame[[*shown, "quantizer", "words", "subject", *labels, "units", "detectable"]]
    return ["## The answer", "",
            f"The comparisons declared before the runs ({declared.text()}), per data set, "
            "protocol, condition, codebook fit, quantizer and codebook size: each cell gives, "
            "per code length, the verdict and the paired difference in "
            f"{metric_text(compared.primary_metric)} (the row's method minus the other; the best "
            "other method, chosen by validation mAP, in brackets); "
            "`—` where the other method has no runs. Units: the fewest paired (draw, seed) "
            "units of the row; detectable: the largest of its smallest differences detectable "
            "at 80% power after the correction. All of the document's comparisons are one Holm "
            f"family of {int(compared.family_size.iloc[0])} tests; the verdicts as in "
            "\"What it found\".", *([note] if note else []),
            "", frame_markdown(frame.rename(columns={"subject": "method"})), ""]


def _answer_cell(regime: pd.DataFrame, subject: str, against: str) -> str:
    """`8: better +0.0123; 16: not powered +0.0040` of `subject` against a declared comparator
    over the code lengths of one regime (rows of `stats.comparisons`), `—` for none."""
    if against == BEST_OTHER:
        mine = regime[regime.best_other & ((regime.method == subject) | (regime.against == subject))]
    else:
        def named(column: pd.Series) -> pd.Series:
            return (column == against) | (column.str.split().str[0] == against)
        mine = regime[((regime.method == subject) & named(regime.against))
                      | ((regime.against == subject) & named(regime.method))]
    mine = mine.sort_values("code_bits", kind="stable")
    several = mine.code_bits.duplicated(keep=False)  # name the other where it is not one
    parts = []
    for (_, row), named_other in zip(mine.iterrows(), several | (against == BEST_OTHER),
                                     strict=True):
        sign = 1 if row.method == subject else -1
        shown = row.verdict if sign > 0 else FLIPPED.get(row.verdict, row.verdict)
        other = f" ({row.against if sign > 0 else row.method})" if named_other else ""
        parts.append(f"{row.code_bits}: {shown} {sign * row['mean'] + 0.0:+.4f}{other}")
    return "; ".join(parts) or MISSING
