"""Paired comparisons of methods, declared before the data, with verdicts corrected for
multiplicity as one family and the smallest difference each could detect (docs/design.md,
section 6).

The pairing unit is (draw, seed): a seed fixes a run's initialisation, batch order and k-means
seeds for every method alike, and a draw the classes the unseen-class protocol holds out, so two
methods' runs of one draw and seed are paired (a frame without a `draw` column is draw 0). A
comparison of method A against method B in one regime (`REGIME_KEYS`: data set, feature,
protocol, condition, loss, quantizer, sub_bits, codebook fit, evaluation mode, code bits; a frame
without a `condition` column is `standard`) uses the n units both ran:

    d_u = value_A(u) - value_B(u)
    mean difference  m = mean_u d_u,  paired sd s = sd(d) (ddof 1)
    95% t-interval   m ± t(0.975, n - 1) · s / sqrt(n)
    p                two-sided paired t-test of m = 0 (scipy.stats.ttest_rel)
    p_equivalence    two one-sided paired t-tests (TOST) of -margin < m < margin
                     (statsmodels.stats.weightstats.ttost_paired)
    detectable       the smallest |m| the paired t-test at level ALPHA / F detects with 80%
                     power (`detectable_difference`: the noncentral t, exactly)

and counts the units with d_u > 0.

Which comparisons: those the grid declares (`gslbench.declared`: method pairs, regimes;
`best-other` is the method of highest *validation* mAP in the regime, from the frame's
`validation_map` column, left out without it). The family: every comparison made, over all
regimes, pairs and conditions, is one family of F tests; both p-values are adjusted over it with
Holm's step-down method (statsmodels' `multipletests(method="holm")`), and the power figure uses
ALPHA / F, Holm's threshold for the smallest p (its worst case). The verdict, at level `ALPHA`:

- `better` / `worse`: the Holm-adjusted p is below ALPHA, and the mean difference is above / below 0;
- `equivalent`: otherwise, when the Holm-adjusted equivalence p is below ALPHA (the difference lies
  within ±margin, default `MARGIN` mAP, `gslbench report --margin`);
- `not powered`: otherwise, when the detectable difference exceeds the margin (or there are fewer
  than 2 units): too few units to tell a difference of the margin from none;
- `inconclusive`: otherwise.

The raw interval is reported unadjusted beside the adjusted p and the verdict; a comparison of
fewer than `MIN_UNITS` units is marked in every table that shows it.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import integrate, optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from gslbench.declared import BEST_OTHER, DEFAULT, Declared
from gslbench.report.frames import TABLE_KEYS, ordered_variants, tuned_rows, with_key_defaults

CONFIDENCE = 0.95
ALPHA = 0.05
POWER = 0.8  # the power of the detectable difference
MARGIN = 0.005  # mAP: differences within ±MARGIN count as equivalent
MAX_MARGIN = 0.5  # mAP: the widest equivalence margin report takes (half the whole scale)
MIN_UNITS = 10  # fewer paired units than this are marked in the tables
REGIME_KEYS = [*TABLE_KEYS, "code_bits"]
UNIT_KEYS = ["draw", "seed"]  # the pairing unit
# what a frame without these columns means: the standard condition, draw 0
UNIT_DEFAULTS = {"condition": "standard", "draw": 0}
VERDICTS = ("better", "equivalent", "worse", "inconclusive", "not powered")
COLUMNS = [*REGIME_KEYS, "method", "against", "best_other", "mean", "low", "high", "sd", "n",
           "positive", "p", "p_holm", "p_equivalence", "p_equivalence_holm", "family_size",
           "detectable", "verdict", "primary_metric"]


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference A - B over n units, its t-interval [low, high], the paired
    standard deviation sd, the number of units where A is above B, the paired t-test's p (m = 0)
    and the equivalence test's p (|m| < margin); interval, sd and p-values are NaN with fewer
    than 2 units."""

    mean: float
    low: float
    high: float
    sd: float
    n: int
    positive: int
    p: float
    p_equivalence: float


def paired_difference(a: np.ndarray, b: np.ndarray, margin: float = MARGIN,
                      confidence: float = CONFIDENCE) -> PairedDifference:
    """(n,) values of method A and (n,) of method B, paired by position (the same unit).

    With identical differences (no spread) the interval is the point itself, p is 0 (1 when the
    differences are 0) and p_equivalence 0 when |m| < margin, else 1."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    differences = a - b
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    positive = int((differences > 0).sum())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, math.nan, n, positive, math.nan,
                                math.nan)
    spread = float(differences.std(ddof=1))
    if spread == 0:  # the tests divide by the spread
        return PairedDifference(mean, mean, mean, 0.0, n, positive, float(mean == 0),
                                float(abs(mean) >= margin))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * spread / math.sqrt(n)
    with warnings.catch_warnings():  # nearly identical units: scipy warns, the result stands
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_rel(a, b).pvalue)
    p_equivalence = float(ttost_paired(a, b, -margin, margin)[0])
    return PairedDifference(mean, mean - half, mean + half, spread, n, positive, p, p_equivalence)


def detectable_difference(sd: float, n: int, alpha: float, power: float = POWER) -> float:
    """The smallest mean difference |m| that a two-sided paired t-test at level `alpha` over n
    units of paired standard deviation `sd` detects with probability `power`: sd times the
    effect size d at which the noncentral t (n - 1 degrees of freedom, noncentrality d·sqrt(n))
    falls beyond ±t(1 - alpha/2, n - 1) with that probability (`t_test_power`). NaN for fewer
    than 2 units."""
    if n < 2 or not sd >= 0:
        return math.nan
    return sd * _effect_size(int(n), alpha, power)


def t_test_power(d: float, n: int, alpha: float) -> float:
    """The power of the two-sided one-sample (paired) t-test at level `alpha` over n units when
    the true mean is d standard deviations: P(|Z + d·sqrt(n)| > c·S), c = t(1 - alpha/2, n - 1),
    Z standard normal and S² = chi²(n - 1)/(n - 1), integrated over the chi² quantiles (exact,
    and stable where scipy's noncentral t is not: few units and a small alpha)."""
    df = n - 1
    critical, shift = stats.t.ppf(1 - alpha / 2, df), d * math.sqrt(n)

    def beyond(u: float) -> float:  # given S at the chi² quantile u
        scale = critical * math.sqrt(stats.chi2.ppf(u, df) / df)
        return stats.norm.cdf(shift - scale) + stats.norm.cdf(-shift - scale)

    return float(integrate.quad(beyond, 0.0, 1.0, epsabs=1e-11, limit=200)[0])


@functools.lru_cache(maxsize=1024)
def _effect_size(n: int, alpha: float, power: float) -> float:
    high = 1.0
    while t_test_power(high, n, alpha) < power:  # the power grows with d: bracket the root
        high *= 2
    return float(optimize.brentq(lambda d: t_test_power(d, n, alpha) - power, 0.0, high,
                                 xtol=1e-10, rtol=1e-10))


def holm(p_values: np.ndarray) -> np.ndarray:
    """(m,) p-values of one family -> (m,) Holm-adjusted p-values; NaN entries (comparisons
    without a test) stay NaN and do not count in the family."""
    p_values = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p_values, np.nan)
    tested = ~np.isnan(p_values)
    if tested.any():
        adjusted[tested] = multipletests(p_values[tested], method="holm")[1]
    return adjusted


def verdict(mean: float, p_holm: float, p_equivalence_holm: float, detectable: float,
            margin: float = MARGIN, alpha: float = ALPHA) -> str:
    """`better`, `worse`, `equivalent`, `not powered` or `inconclusive` (see the module
    docstring; a NaN detectable difference, fewer than 2 units, is not powered)."""
    if p_holm < alpha:
        return "better" if mean > 0 else "worse"
    if p_equivalence_holm < alpha:
        return "equivalent"
    if not detectable <= margin:
        return "not powered"
    return "inconclusive"


def with_primary(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with `primary`, each row's value of the column its `primary_metric` names (the
    data set's primary metric, `gslbench.evaluation.primary`; rows without one: `map`)."""
    names = results.get("primary_metric", pd.Series("map", index=results.index)).fillna("map")
    values = pd.Series(float("nan"), index=results.index)
    for name in names.unique():
        values[names == name] = results.loc[names == name, name]
    return results.assign(primary_metric=names, primary=values)


def with_unit_defaults(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with the key columns it lacks at their defaults (`UNIT_DEFAULTS`, then
    `frames.KEY_DEFAULTS`)."""
    missing = {name: value for name, value in UNIT_DEFAULTS.items() if name not in results}
    return with_key_defaults(results.assign(**missing) if missing else results)


def declared_pairs(variants: list[str], validation: pd.Series,
                   declared: Declared = DEFAULT) -> list[tuple[str, str, bool]]:
    """The (method, against, best_other) comparisons a declaration makes among the method
    variants of one regime (float is never compared): a pair's names match a variant by label
    or by method; `best-other` is, per method variant, the variant of another method (not float)
    of highest validation mAP (`validation`: variant -> mAP, NaN unknown; ties: report order),
    none without validation. Each unordered pair once, in declaration order; best_other marks
    the comparison with the best other (which may also be a declared pair)."""
    ordered = [v for v in ordered_variants(variants) if _method(v) != "float"]
    known = validation.reindex(ordered).dropna()
    found: dict[frozenset, list] = {}
    for name, other in declared.pairs:
        for method in _matching(ordered, name):
            if other == BEST_OTHER:
                rivals = known[[_method(v) != _method(method) for v in known.index]]
                if len(rivals):
                    best = rivals.idxmax()
                    found.setdefault(frozenset((method, best)), [method, best, False])[2] = True
                continue
            for against in _matching(ordered, other):
                if against != method:
                    found.setdefault(frozenset((method, against)), [method, against, False])
    return [tuple(pair) for pair in found.values()]


def comparisons(results: pd.DataFrame, declared: Declared = DEFAULT, value: str = "primary",
                margin: float = MARGIN) -> pd.DataFrame:
    """The declared paired comparisons in every declared regime of the results frame (a row per
    run and evaluation, `gslbench.report.frames`), a method tuned per code length as one row
    (`tuned_rows`); `validation_map` (optional column: the validation mAP of a run's tuned choice)
    picks the best other method.

    Returns a row per comparison (`COLUMNS`): the regime's keys, method, against, best_other
    (whether `against` is the method's best other), mean, low, high, sd, n (paired units),
    positive (units where method > against), p, p_holm, p_equivalence, p_equivalence_holm (Holm
    over every row: one family), family_size (the rows with a test), detectable (the smallest
    difference detectable at 80% power at ALPHA / family_size), verdict and primary_metric (the
    results column `value` was taken from, by default each data set's primary metric:
    `with_primary`)."""
    merged, _ = tuned_rows(with_primary(with_unit_defaults(results)))
    if "validation_map" not in merged:
        merged = merged.assign(validation_map=math.nan)
    rows = []
    for regime, cell in merged[merged.method != "float"].groupby(REGIME_KEYS):
        keys = dict(zip(REGIME_KEYS, regime, strict=True))
        compared = cell.primary_metric.iloc[0] if value == "primary" else value
        if not declared.covers(keys):
            continue
        by_unit = cell.pivot_table(index=UNIT_KEYS, columns="variant", values=value,
                                   aggfunc="first")
        validation = cell.groupby("variant").validation_map.mean()
        for method, against, best in declared_pairs(list(by_unit.columns), validation, declared):
            both = by_unit[[method, against]].dropna()
            paired = paired_difference(both[method].to_numpy(), both[against].to_numpy(), margin)
            rows.append({**keys, "method": method, "against": against, "best_other": best,
                         **{name: getattr(paired, name) for name in
                            ("mean", "low", "high", "sd", "n", "positive", "p",
                             "p_equivalence")}, "primary_metric": compared})
    table = pd.DataFrame(rows, columns=[c for c in COLUMNS if c not in (
        "p_holm", "p_equivalence_holm", "family_size", "detectable", "verdict")])
    if table.empty:
        return pd.DataFrame(columns=COLUMNS)
    size = int(table.p.notna().sum())
    table["p_holm"] = holm(table.p.to_numpy())
    table["p_equivalence_holm"] = holm(table.p_equivalence.to_numpy())
    table["family_size"] = size
    table["detectable"] = [detectable_difference(sd, n, ALPHA / max(size, 1))
                           for sd, n in zip(table.sd, table.n, strict=True)]
    table["verdict"] = [verdict(*row, margin) for row in zip(
        table["mean"], table.p_holm, table.p_equivalence_holm, table.detectable, strict=True)]
    return table[COLUMNS]


def validation_note(results: pd.DataFrame, declared: Declared = DEFAULT) -> str:
    """Why the best-other comparisons are left out (no validation score for the runs), or ""."""
    if not any(other == BEST_OTHER for _, other in declared.pairs):
        return ""
    if "validation_map" in results and results.validation_map.notna().any():
        return ""
    return ("The best other method is chosen by its validation score (the primary metric on the "
            "validation split: tuned.toml's `validation_map`, `gslbench report --grid GRID.toml "
            "--tuned TUNED.toml`), never by a test score; these runs have no validation score, so "
            "the comparisons against the best other method are left out.")


def units_text(n: int) -> str:
    """`10`, or `3 (< 10)` for a comparison of fewer than `MIN_UNITS` paired units."""
    return f"{n}" if n >= MIN_UNITS else f"{n} (< {MIN_UNITS})"


def _matching(variants: list[str], name: str) -> list[str]:
    """The variants a declared name stands for: its label, or every variant of its method."""
    return [v for v in variants if v == name or _method(v) == name]


def _method(variant: str) -> str:
    return variant.split()[0]
