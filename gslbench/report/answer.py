"""The answer a results document opens with: a short table of the verdicts alone (between
`SHORT`; README.md shows it, benchmarks/sample_outputs.py copies it), then the full table of the
declared comparisons (`gslbench.report.stats.comparisons`) between `MARKERS`: a row per data set,
protocol, condition, quantizer, codebook size and variant of a pair's first method, a column per
declared pair and codebook fit. The line after it (`declared_line`) names the declaration and the
margin its verdicts used, so that the document's tables can be made again from its CSV alone
(`declared_in`)."""

from __future__ import annotations

import json
import math

import pandas as pd

from gslbench.declared import BEST_OTHER, DEFAULT, Declared
from gslbench.errors import GslbenchError
from gslbench.report.frames import KEY_DEFAULTS
from gslbench.report.neighbours import metric_text
from gslbench.report.stats import MARGIN, MAX_MARGIN, REGIME_KEYS, units_text
from gslbench.report.summary import detectable_text
from gslbench.report.tables import MISSING, frame_markdown

FLIPPED = {"better": "worse", "worse": "better"}  # a verdict read the other way round


FITS = {"train": "training-set fit", "database": "database fit"}  # a codebook fit's column name
MARKERS = ("<!-- answer -->", "<!-- /answer -->")  # around the full table
SHORT = ("<!-- short answer -->", "<!-- /short answer -->")  # the verdicts alone: README's copy
DECLARED = ("<!-- declared: ", " -->")  # around the JSON of `declared_line`
ROW_KEYS = tuple(k for k in REGIME_KEYS if k not in ("code_bits", "codebooks"))  # a row's regime
NUMBER = r"(?<=: )[+-]\d+\.\d+ "  # a cell's difference (`8: +0.0123 better`), not in SHORT


def declared_line(declared: Declared, margin: float) -> str:
    """`<!-- declared: {"comparisons": {"pairs": [["gsl", "two-step"]]}, "margin": 0.005} -->`:
    the declaration (its `[comparisons]` table) and the equivalence margin of a document's
    verdicts, unseen in the rendered page."""
    found = {"comparisons": declared.table(), "margin": margin}
    return DECLARED[0] + json.dumps(found, ensure_ascii=False) + DECLARED[1]


def declared_in(text: str, source: str) -> tuple[Declared, float]:
    """The declaration and margin a results document's `declared_line` names (`text`: the
    document; `source`: its name in errors); a document without the line (written before it)
    was made with `DEFAULT` and `MARGIN`. A malformed line is a one-line user error."""
    lines = [line for line in text.splitlines()
             if line.startswith(DECLARED[0]) and line.endswith(DECLARED[1])]
    if not lines:
        return DEFAULT, MARGIN
    try:
        found = json.loads(lines[0][len(DECLARED[0]):-len(DECLARED[1])])
        margin = float(found["margin"])
        table = found["comparisons"]
    except (ValueError, TypeError, KeyError):
        raise GslbenchError(f"{source}: its {DECLARED[0].strip()} line is not the JSON of a "
                            "declaration and a margin") from None
    if not (math.isfinite(margin) and 0 < margin <= MAX_MARGIN):
        raise GslbenchError(f"{source}: its declared margin {margin} is not in (0, {MAX_MARGIN}]")
    return Declared.parse(table, f"{source}: {DECLARED[0].strip()}"), margin


def answer_section(compared: pd.DataFrame, declared: Declared = DEFAULT,
                   note: str = "", margin: float = MARGIN,
                   tuned: frozenset[str] = frozenset()) -> list[str]:
    """`## The answer`: the short table (`SHORT`: the verdicts alone, for the tuned variants
    `tuned`, or every variant of a regime with none of them: `_short_rows`), then the full one
    between `MARKERS`, of the declared comparisons (`compared`: `stats.comparisons`): a row per data
    set, protocol, condition, quantizer, codebook size and variant of a pair's first method (the
    tuned GSL and any control), a column per declared pair and codebook fit: its difference and
    verdict at each code length, one per line (`—` where the other method has no runs), then the
    paired units (fewest) and the detectable difference (largest) of the row. A pair no run could
    make has no column; the text names it. `note`: why a comparison is left out
    (`stats.validation_note`); `margin`: the verdicts' equivalence margin, which `declared_line`
    records after the table with the declaration."""
    if compared.empty:
        return ["## The answer", "", note, declared_line(declared, margin), ""] if note else []
    frame, made, absent = _answer_frame(compared, declared)
    shown = [k for k in ("dataset", "feature", "settings", "protocol", "condition", "loss",
                         "search", "metric") if frame[k].nunique() > 1 or k == "protocol"]
    where = f" on {frame.dataset.iloc[0]}" if "dataset" not in shown else ""
    short = _short_rows(frame, tuned)
    if len(short) == len(frame):
        whose, rest = "every variant's", "the differences and the units"
    else:
        untuned = "" if short.subject.isin(tuned).all() else \
            " (every variant's where a regime has none tuned)"
        whose, rest = f"the tuned variants'{untuned}", "the differences, the controls and the units"
    return ["## The answer", "",
            f"In short: {whose} verdicts in the comparisons declared before the runs{where} "
            f"({rest} are in the full table below).",
            "", SHORT[0],
            frame_markdown(short[[*shown, "quantizer", "words", "subject", *made]].rename(
                columns={"subject": "method"}).replace(NUMBER, "", regex=True)),
            SHORT[1], "",
            f"In full: the comparisons declared before the runs ({declared.text()}){where}, per "
            "data set, protocol, condition, quantizer and codebook size, and per codebook fit: "
            "each cell gives, per code length, the paired difference in "
            f"{metric_text(compared.primary_metric)} (the row's method minus the other; the "
            "best other method, chosen by its validation score, in brackets) and the verdict; `—` "
            "where the other method has no runs"
            + (f" (no column for {' or '.join(absent)}: no such comparison could be made)"
               if absent else "")
            + ". Units: the fewest paired (draw, seed) units of the row; detectable: the "
            "largest of its smallest differences detectable at 80% power after the correction. "
            f"All of the document's comparisons are one Holm family of "
            f"{int(compared.family_size.iloc[0])} tests; the verdicts as in \"What it found\".",
            *([note] if note else []),
            "", MARKERS[0],
            frame_markdown(frame[[*shown, "quantizer", "words", "subject", *made, "units",
                                  "detectable"]].rename(columns={"subject": "method"})),
            MARKERS[1], declared_line(declared, margin), ""]


def _short_rows(frame: pd.DataFrame, tuned: frozenset[str]) -> pd.DataFrame:
    """The short answer's rows of `frame` (`_answer_frame`'s): per regime (its `ROW_KEYS`), the
    tuned variants' rows, or all of its rows where it has no tuned variant (a fine-tuned grid
    with pinned knobs, a grid at its start knobs)."""
    is_tuned = frame.subject.isin(tuned)
    regime_has = is_tuned.groupby([frame[k] for k in ROW_KEYS], dropna=False,
                                  sort=False).transform("any")
    return frame[is_tuned | ~regime_has]


def _answer_frame(compared: pd.DataFrame, declared: Declared
                  ) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The full answer's rows (regime keys, words, subject, a column per declared pair and fit
    that some run made, units, detectable), those columns' names, and the comparators no run
    could be compared with."""
    keys = list(ROW_KEYS)  # groupby's keys: a list
    fits = sorted(set(compared.codebooks), key=lambda fit: (fit != KEY_DEFAULTS["codebooks"], fit))
    labels = {(against, fit): (f"vs {against}" if against != BEST_OTHER else "vs the best other")
              + (f", {FITS.get(fit, fit + ' fit')}" if len(fits) > 1 else "")
              for _, against in declared.pairs for fit in fits}
    rows = []
    for key, regime in compared.groupby(keys, sort=False):
        subjects = dict.fromkeys(v for name, _ in declared.pairs
                                 for v in [*regime.method, *regime.against]
                                 if v == name or v.split()[0] == name)
        for subject in subjects:
            found = {label: _answer_cell(regime[regime.codebooks == fit], subject, against)
                     for (against, fit), label in labels.items()}
            mine = regime[(regime.method == subject) | (regime.against == subject)]
            rows.append({**dict(zip(keys, key, strict=True)), "subject": subject, **found,
                         "units": units_text(int(mine.n.min())),
                         "detectable": detectable_text(mine.detectable.max())})
    frame = pd.DataFrame(rows)
    frame = frame.assign(words=2 ** frame.sub_bits).sort_values(
        ["dataset", "protocol", "condition", "quantizer", "words"], kind="stable")
    made = [label for label in labels.values() if (frame[label] != MISSING).any()]
    absent = sorted({"the best other" if against == BEST_OTHER else against
                     for (against, _), label in labels.items() if label not in made})
    return frame, made, absent


def _answer_cell(regime: pd.DataFrame, subject: str, against: str) -> str:
    """`8: +0.0123 better<br>16: +0.0040 not powered` of `subject` against a declared
    comparator over the code lengths of one regime and codebook fit (rows of
    `stats.comparisons`), `—` for none."""
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
        parts.append(f"{row.code_bits}: {sign * row['mean'] + 0.0:+.4f} {shown}{other}")
    return "<br>".join(parts) or MISSING
