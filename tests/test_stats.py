"""Paired comparisons: the t-interval against scipy.stats and a hand computation, the pairs
compared, and pairing by seed on a made-up results table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gslbench.report.stats import comparison_pairs, comparisons, paired_difference

GSL, QLOSS = "gsl α=1 k=8", "qloss λ=1"


def test_the_interval_is_scipys_paired_t_interval():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        a, b = rng.normal(0.7, 0.02, n), rng.normal(0.69, 0.02, n)
        paired = paired_difference(a, b)
        reference = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert paired.mean == pytest.approx(np.mean(a - b), abs=1e-15)
        assert (paired.low, paired.high) == pytest.approx((reference.low, reference.high), rel=1e-12)
        assert paired.n == n and paired.positive == int(np.sum(a > b))


def test_the_interval_against_a_hand_computation():
    # differences 0.02, 0.01, 0.03, 0.00, 0.04: mean 0.02, sd sqrt(0.001 / 4) = 0.0158114,
    # t(0.975, 4) = 2.776 (a t table): half-width 2.776 * 0.0158114 / sqrt(5) = 0.019630
    a = np.array([0.72, 0.71, 0.73, 0.70, 0.74])
    b = np.full(5, 0.70)
    paired = paired_difference(a, b)
    assert paired.mean == pytest.approx(0.02)
    assert paired.high - paired.mean == pytest.approx(0.019630, abs=2e-5)
    assert paired.positive == 4 and paired.verdict == "win"  # 0.0004 > 0: excludes 0
    assert paired_difference(b, a).verdict == "loss"


def test_ties_single_seeds_and_constant_differences():
    assert paired_difference([0.71, 0.69, 0.70], [0.70, 0.70, 0.70]).verdict == "tie"
    one = paired_difference([0.8], [0.7])
    assert one.verdict == "n/a" and math.isnan(one.low) and one.mean == pytest.approx(0.1)
    constant = paired_difference([0.8, 0.9], [0.7, 0.8])  # identical differences: the point
    assert constant.low == pytest.approx(0.1) and constant.verdict == "win"


def test_each_method_against_two_step_and_qloss_and_gsl_against_every_other():
    variants = ["float", "gsl α=1 k=8", "ste β=1", "two-step", "qloss λ=1", "gsl α=0.25 k=8"]
    pairs = comparison_pairs(variants)
    assert pairs == [
        ("qloss λ=1", "two-step"), ("gsl α=0.25 k=8", "two-step"), ("gsl α=1 k=8", "two-step"),
        ("ste β=1", "two-step"),
        ("gsl α=0.25 k=8", "qloss λ=1"), ("gsl α=1 k=8", "qloss λ=1"), ("ste β=1", "qloss λ=1"),
        ("gsl α=0.25 k=8", "gsl α=1 k=8"), ("gsl α=0.25 k=8", "ste β=1"), ("gsl α=1 k=8", "ste β=1"),
    ]


def made_up_results() -> pd.DataFrame:
    """Two regimes (16 bits with 16 and with 256 words); rows shuffled; seed 2 of qloss at 256
    words missing."""
    maps = {  # (variant, sub_bits) -> mAP of seeds 0, 1, 2
        ("two-step", 4): [0.60, 0.62, 0.61], (QLOSS, 4): [0.63, 0.64, 0.64], (GSL, 4): [0.64, 0.66, 0.63],
        ("two-step", 8): [0.70, 0.71, 0.72], (QLOSS, 8): [0.70, 0.72, None], (GSL, 8): [0.69, 0.70, 0.71],
    }
    rows = [{"dataset": "toy", "feature": "f", "loss": "pairwise", "quantizer": "pq",
             "sub_bits": sub_bits, "search": "adc", "metric": "l2", "code_bits": 16,
             "method": variant.split()[0],
             "variant": variant, "seed": seed, "map": value}
            for (variant, sub_bits), values in maps.items()
            for seed, value in enumerate(values) if value is not None]
    rows.append({**rows[0], "method": "float", "variant": "float", "map": 0.9})  # never compared
    return pd.DataFrame(rows).sample(frac=1, random_state=0)


def test_comparisons_pair_runs_by_seed_within_each_regime():
    table = comparisons(made_up_results()).set_index(["sub_bits", "method", "against"])
    assert len(table) == 6 and "float" not in set(table.reset_index().method)
    row = table.loc[(4, GSL, "two-step")]  # differences 0.04, 0.04, 0.02
    reference = stats.ttest_rel([0.64, 0.66, 0.63], [0.60, 0.62, 0.61]).confidence_interval()
    assert row["mean"] == pytest.approx(0.10 / 3) and row.positive == 3 and row.n == 3
    assert (row.low, row.high) == pytest.approx((reference.low, reference.high))
    assert row.verdict == "win"
    missing = table.loc[(8, GSL, QLOSS)]  # seed 2 of qloss is missing: seeds 0 and 1 only
    assert missing.n == 2 and missing["mean"] == pytest.approx(-0.015)
    assert table.loc[(8, GSL, "two-step")].verdict == "loss"  # -0.01 at every seed
