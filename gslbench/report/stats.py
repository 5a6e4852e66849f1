"""Paired comparisons of methods over seeds, with verdicts corrected for multiplicity (the design
page, docs/design.md).

A seed fixes a run's initialisation, batch order and k-means seeds for every method alike, so two
methods' runs of one seed are paired. A comparison of method A against method B in one regime
(data set, feature, protocol, loss, quantizer, sub_bits, codebook fit, evaluation mode, code bits)
uses the seeds both ran:

    d_s = value_A(s) - value_B(s)
    mean difference  m = mean_s d_s
    95% t-interval   m ± t(0.975, n - 1) · sd(d) / sqrt(n)      (sd with ddof 1; n paired seeds)
    p                two-sided paired t-test of m = 0 (scipy.stats.ttest_rel)
    p_equivalence    two one-sided paired t-tests (TOST) of -margin < m < margin
                     (statsmodels.stats.weightstats.ttost_paired)

and counts the seeds with d_s > 0.

The family. A method pair is compared in every regime of a table set (one data set, feature,
protocol, loss, codebook fit, evaluation mode and run settings: all its quantizers, codebook sizes
and code lengths); that pair's comparisons over those regimes are one family, and both p-values
are adjusted over it with Holm's step-down method (statsmodels' `multipletests(method="holm")`).
The verdict, at level `ALPHA`:

- `better` / `worse`: the Holm-adjusted p is below ALPHA, and the mean difference is above / below 0;
- `equivalent`: otherwise, when the Holm-adjusted equivalence p is below ALPHA (the difference lies
  within ±margin, default `MARGIN` mAP, `gslbench report --margin`);
- `inconclusive`: otherwise, and always with fewer than 2 paired seeds.

The raw interval is reported unadjusted beside the adjusted p and the verdict.

Which comparisons: `comparison_pairs` (every method against two-step and qloss, GSL against every
other; float, the unquantized ceiling, is never compared), or every pair of quantized methods.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from gslbench.report.frames import TABLE_KEYS, ordered_variants, tuned_rows, with_key_defaults

CONFIDENCE = 0.95
ALPHA = 0.05
MARGIN = 0.005  # mAP: differences within ±MARGIN count as equivalent
REGIME_KEYS = [*TABLE_KEYS, "code_bits"]
# a family: one method pair over the regimes of a table set (every quantizer and code length)
FAMILY_KEYS = [key for key in TABLE_KEYS if key not in ("quantizer", "sub_bits")]
BASELINES = ("two-step", "qloss")  # every method is compared against these
CHALLENGER = "gsl"  # and this one against every method
VERDICTS = ("better", "equivalent", "worse", "inconclusive")


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference A - B over n seeds, its t-interval [low, high], the number of
    seeds where A is above B, the paired t-test's p (m = 0) and the equivalence test's p
    (|m| < margin); interval and p-values are NaN with fewer than 2 seeds."""

    mean: float
    low: float
    high: float
    n: int
    positive: int
    p: float
    p_equivalence: float


def paired_difference(a: np.ndarray, b: np.ndarray, margin: float = MARGIN,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """(n,) values of method A and (n,) of method B, paired by position (the same seed).

    With identical differences (no spread) the interval is the point itself, p is 0 (1 when the
    differences are 0) and p_equivalence 0 when |m| < margin, else 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    differences = a - b
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    positive = int((differences > 0).sum())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, positive, math.nan, math.nan)
    spread = differences.std(ddof=1)
    if spread == 0:  # the tests divide by the spread
        return PairedDifference(mean, mean, mean, n, positive, float(mean == 0),
                                float(abs(mean) >= margin))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * spread / math.sqrt(n)
    with warnings.catch_warnings():  # nearly identical seeds: scipy warns, the result stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    p_equivalence = float(ttost_paired(a, b, -margin, margin)[0])
    return PairedDifference(mean, mean - half, mean + half, n, positive, p, p_equivalence)


def holm(p_values: np.ndarray) -> np.ndarray:
    """(m,) p-values of one family -> (m,) Holm-adjusted p-values; NaN entries (comparisons
    without a test) stay NaN and do not count in the family."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    if tested.any():
        adjusted[tested] = multipletests(p_values[tested], method="holm")[1]
    return adjusted


def verdict(mean: float, p_holm: float, p_equivalence_holm: float, alpha: float = ALPHA) -> str:
    """`better`, `worse`, `equivalent` or `inconclusive` (see the module docstring)."""
    if p_holm < alpha:
        return "better" if mean > 0 else "worse"
    if p_equivalence_holm < alpha:
        return "equivalent"
    return "inconclusive"


def comparison_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """The (method, against) pairs among these method variants: each against every two-step
    and qloss variant, then each GSL variant against every other; each unordered pair once, in
    that order (so `qloss` is compared against `two-step`, and `gsl` against `qloss`)."""
    ordered = [v for v in ordered_variants(variants) if _method(v) != "float"]
    candidates = [(a, b) for baseline in BASELINES for b in ordered if _method(b) == baseline
                  for a in ordered]
    candidates += [(a, b) for a in ordered if _method(a) == CHALLENGER for b in ordered]
    return _unique_pairs(candidates)


def every_pair(variants: list[str]) -> list[tuple[str, str]]:
    """`comparison_pairs` first, then every other pair of quantized variants (report order)."""
    ordered = [v for v in ordered_variants(variants) if _method(v) != "float"]
    return _unique_pairs([*comparison_pairs(variants), *combinations(ordered, 2)])


def comparisons(results: pd.DataFrame, value: str = "map", margin: float = MARGIN,
                pairs: str = "declared") -> pd.DataFrame:
    """Paired comparisons in every regime of the results frame (a row per run and evaluation,
    `gslbench.report.frames`), a method tuned per code length as one row (`tuned_rows`).

    pairs: `declared` (`comparison_pairs`) or `all` (`every_pair`). Returns a row per comparison:
    the regime's keys, method, against, mean, low, high, n (paired seeds), positive (seeds where
    method > against), p, p_holm, p_equivalence, p_equivalence_holm (Holm over the family:
    `FAMILY_KEYS`, method, against), family_size (comparisons with a test in the family) and
    verdict."""
    choose = {"declared": comparison_pairs, "all": every_pair}[pairs]
    merged, _ = tuned_rows(with_key_defaults(results))
    rows = []
    for regime, cell in merged[merged.method != "float"].groupby(REGIME_KEYS):
        by_seed = cell.pivot_table(index="seed", columns="variant", values=value, aggfunc="first")
        for method, against in choose(list(by_seed.columns)):
            both = by_seed[[method, against]].dropna()
            paired = paired_difference(both[method].to_numpy(), both[against].to_numpy(), margin)
            rows.append({**dict(zip(REGIME_KEYS, regime, strict=True)), "method": method,
                         "against": against, "mean": paired.mean, "low": paired.low,
                         "high": paired.high, "n": paired.n, "positive": paired.positive,
                         "p": paired.p, "p_equivalence": paired.p_equivalence})
    columns = [*REGIME_KEYS, "method", "against", "mean", "low", "high", "n", "positive", "p",
               "p_holm", "p_equivalence", "p_equivalence_holm", "family_size", "verdict"]
    table = pd.DataFrame(rows, columns=[c for c in columns if c not in
                                        ("p_holm", "p_equivalence_holm", "family_size", "verdict")])
    if table.empty:
        return pd.DataFrame(columns=columns)
    family = table.groupby([*FAMILY_KEYS, "method", "against"], sort=False)
    table["p_holm"] = family.p.transform(holm)
    table["p_equivalence_holm"] = family.p_equivalence.transform(holm)
    table["family_size"] = family.p.transform(lambda p: int(p.notna().sum())).astype(int)
    table["verdict"] = [verdict(*row) for row in
                        zip(table["mean"], table.p_holm, table.p_equivalence_holm, strict=True)]
    return table[columns]


def _unique_pairs(candidates: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs, seen = [], set()
    for a, b in candidates:
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append((a, b))
    return pairs


def _method(variant: str) -> str:
    return variant.split()[0]
