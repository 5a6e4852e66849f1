"""Paired comparisons of methods over seeds (the design page, docs/design.md, section 6).

A seed fixes a run's initialisation, batch order and k-means seeds for every method alike, so two
methods' runs of one seed are paired. A comparison of method A against method B in one regime
(data set, feature, loss, quantizer, sub_bits, code bits) uses the seeds both ran:

    d_s = value_A(s) - value_B(s)
    mean difference  m = mean_s d_s
    95% t-interval   m ± t(0.975, n - 1) · sd(d) / sqrt(n)      (sd with ddof 1; n paired seeds)

and counts the seeds with d_s > 0. The verdict is `win` when the interval lies above 0, `loss`
when it lies below, `tie` when it holds 0, and `n/a` with fewer than 2 paired seeds.

Which comparisons: every method against two-step and against qloss, and GSL against every other
method (each unordered pair once; float, the unquantized ceiling, is not compared).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from gslbench.report.frames import TABLE_KEYS, ordered_variants

CONFIDENCE = 0.95
REGIME_KEYS = [*TABLE_KEYS, "code_bits"]
BASELINES = ("two-step", "qloss")  # every method is compared against these
CHALLENGER = "gsl"  # and this one against every method


@dataclass(frozen=True)
class PairedDifference:
    """The mean paired difference A - B over n seeds, its t-interval [low, high] and the number
    of seeds where A is above B."""

    mean: float
    low: float
    high: float
    n: int
    positive: int

    @property
    def verdict(self) -> str:
        """`win` (interval above 0), `loss` (below), `tie` (holds 0), `n/a` (under 2 seeds)."""
        if self.n < 2:
            return "n/a"
        return "win" if self.low > 0 else "loss" if self.high < 0 else "tie"


def paired_difference(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE) -> PairedDifference:
    """(n,) values of method A and (n,) of method B, paired by position (the same seed).

    With n < 2 the interval is (nan, nan); with identical differences it is the point itself."""
    differences = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    n = len(differences)
    mean = float(differences.mean()) if n else math.nan
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n, int((differences > 0).sum()))
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * differences.std(ddof=1) / math.sqrt(n)
    return PairedDifference(mean, mean - half, mean + half, n, int((differences > 0).sum()))


def comparison_pairs(variants: list[str]) -> list[tuple[str, str]]:
    """The (method, against) pairs among these method variants: each against every two-step
    and qloss variant, then each GSL variant against every other; each unordered pair once, in
    that order (so `qloss` is compared against `two-step`, and `gsl` against `qloss`)."""
    ordered = [v for v in ordered_variants(variants) if _method(v) != "float"]
    candidates = [(a, b) for baseline in BASELINES for b in ordered if _method(b) == baseline
                  for a in ordered]
    candidates += [(a, b) for a in ordered if _method(a) == CHALLENGER for b in ordered]
    pairs, seen = [], set()
    for a, b in candidates:
        if a != b and frozenset((a, b)) not in seen:
            seen.add(frozenset((a, b)))
            pairs.append((a, b))
    return pairs


def comparisons(results: pd.DataFrame, value: str = "map") -> pd.DataFrame:
    """Every comparison of `comparison_pairs` in every regime of the results frame (a row per
    run, `gslbench.report.frames`): the regime's keys, method, against, mean, low, high, n
    (paired seeds), positive (seeds where method > against), verdict."""
    rows = []
    quantized = results[results.method != "float"]
    for regime, cell in quantized.groupby(REGIME_KEYS):
        by_seed = cell.pivot_table(index="seed", columns="variant", values=value, aggfunc="first")
        for method, against in comparison_pairs(list(by_seed.columns)):
            both = by_seed[[method, against]].dropna()
            paired = paired_difference(both[method].to_numpy(), both[against].to_numpy())
            rows.append({**dict(zip(REGIME_KEYS, regime, strict=True)), "method": method,
                         "against": against, "mean": paired.mean, "low": paired.low,
                         "high": paired.high, "n": paired.n, "positive": paired.positive,
                         "verdict": paired.verdict})
    columns = [*REGIME_KEYS, "method", "against", "mean", "low", "high", "n", "positive", "verdict"]
    return pd.DataFrame(rows, columns=columns)


def _method(variant: str) -> str:
    return variant.split()[0]
