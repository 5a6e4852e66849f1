"""Paired comparisons: the t-interval, the paired t-test, the equivalence test (TOST) and Holm's
adjustment against scipy and hand computations, the pairs compared, the families and the
verdicts on a made-up results table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gslbench.report.stats import (
    FAMILY_KEYS,
    comparison_pairs,
    comparisons,
    every_pair,
    holm,
    paired_difference,
    verdict,
)

GSL, QLOSS = "gsl α=1 k=8", "qloss λ=1"


def test_the_interval_and_p_are_scipys_paired_t_test():
    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 12):
        a, b = rng.normal(0.7, 0.02, n), rng.normal(0.69, 0.02, n)
        paired = paired_difference(a, b)
        reference = stats.ttest_rel(a, b)
        interval = reference.confidence_interval(0.95)
        assert paired.mean == pytest.approx(np.mean(a - b), abs=1e-15)
        assert (paired.low, paired.high) == pytest.approx((interval.low, interval.high), rel=1e-12)
        assert paired.p == pytest.approx(reference.pvalue, rel=1e-12)
        assert paired.n == n and paired.positive == int(np.sum(a > b))


def test_the_interval_against_a_hand_computation():
    # differences 0.02, 0.01, 0.03, 0.00, 0.04: mean 0.02, sd sqrt(0.001 / 4) = 0.0158114,
    # t(0.975, 4) = 2.776 (a t table): half-width 2.776 * 0.0158114 / sqrt(5) = 0.019630
    a = np.array([0.72, 0.71, 0.73, 0.70, 0.74])
    b = np.full(5, 0.70)
    paired = paired_difference(a, b)
    assert paired.mean == pytest.approx(0.02)
    assert paired.high - paired.mean == pytest.approx(0.019630, abs=2e-5)
    assert paired.positive == 4 and paired.low > 0  # 0.0004: excludes 0
    # t = 0.02 / (0.0158114 / sqrt(5)) = 2.8284; two-sided p with 4 degrees of freedom: 0.0474
    assert paired.p == pytest.approx(0.0474, abs=1e-4)


def test_equivalence_is_two_one_sided_t_tests_within_the_margin():
    rng = np.random.default_rng(1)
    for margin in (0.005, 0.02):
        a, b = rng.normal(0.7, 0.003, 6), rng.normal(0.7, 0.003, 6)
        d = a - b  # TOST: d > -margin and d < margin, each one-sided; p the larger of the two
        above = stats.ttest_1samp(d + margin, 0, alternative="greater").pvalue
        below = stats.ttest_1samp(d - margin, 0, alternative="less").pvalue
        assert paired_difference(a, b, margin).p_equivalence == pytest.approx(max(above, below),
                                                                                rel=1e-10)
    # by hand: differences 0.001, -0.001, 0.002, 0.000: mean 0.0005, sd 0.0012910, se 0.00064550;
    # t = (0.0005 + 0.005) / se = 8.5206 and (0.0005 - 0.005) / se = -6.9714, 3 degrees of
    # freedom: p = max(0.00170, 0.00304) = 0.00304 (a t table)
    a = np.array([0.701, 0.699, 0.702, 0.700])
    paired = paired_difference(a, np.full(4, 0.700), 0.005)
    assert paired.p_equivalence == pytest.approx(0.00304, abs=2e-5)


def test_holm_against_a_hand_computation_and_statsmodels():
    # sorted p 0.01, 0.03, 0.04, 0.2 (m = 4): 4 * 0.01 = 0.04, 3 * 0.03 = 0.09, 2 * 0.04 = 0.08
    # -> 0.09 (monotone), 1 * 0.2 = 0.2; returned in the input order
    assert holm(np.array([0.04, 0.2, 0.01, 0.03])) == pytest.approx([0.09, 0.2, 0.04, 0.09])
    assert holm(np.array([0.5, 0.9])) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm(np.array([0.01, np.nan, 0.02]))  # NaN: no test, not in the family
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])
    assert adjusted[2] == pytest.approx(0.02)


def test_verdicts():
    assert verdict(0.01, 0.01, 0.9) == "better" and verdict(-0.01, 0.049, 0.0) == "worse"
    assert verdict(0.001, 0.3, 0.01) == "equivalent"
    assert verdict(0.001, 0.3, 0.2) == "inconclusive"
    assert verdict(0.1, math.nan, math.nan) == "inconclusive"  # a single seed


def test_single_seeds_and_constant_differences():
    one = paired_difference([0.8], [0.7])
    assert math.isnan(one.low) and math.isnan(one.p) and one.mean == pytest.approx(0.1)
    constant = paired_difference(np.array([0.8, 0.9]), np.array([0.8, 0.9]) - 0.25)
    assert constant.low == pytest.approx(0.25) and constant.p == 0 and constant.p_equivalence == 1
    equal = paired_difference([0.8, 0.9], [0.8, 0.9])
    assert equal.p == 1 and equal.p_equivalence == 0


def test_each_method_against_two_step_and_qloss_and_gsl_against_every_other():
    variants = ["float", "gsl α=1 k=8", "ste β=1", "two-step", "qloss λ=1", "gsl α=0.25 k=8"]
    pairs = comparison_pairs(variants)
    assert pairs == [
        ("qloss λ=1", "two-step"), ("gsl α=0.25 k=8", "two-step"), ("gsl α=1 k=8", "two-step"),
        ("ste β=1", "two-step"),
        ("gsl α=0.25 k=8", "qloss λ=1"), ("gsl α=1 k=8", "qloss λ=1"), ("ste β=1", "qloss λ=1"),
        ("gsl α=0.25 k=8", "gsl α=1 k=8"), ("gsl α=0.25 k=8", "ste β=1"), ("gsl α=1 k=8", "ste β=1"),
    ]
    more = [*variants, "soft τ=1"]  # every pair: the declared ones, then soft against ste
    assert every_pair(more) == [*comparison_pairs(more), ("soft τ=1", "ste β=1")]


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
    reference = stats.ttest_rel([0.64, 0.66, 0.63], [0.60, 0.62, 0.61])
    interval = reference.confidence_interval()
    assert row["mean"] == pytest.approx(0.10 / 3) and row.positive == 3 and row.n == 3
    assert (row.low, row.high) == pytest.approx((interval.low, interval.high))
    assert row.p == pytest.approx(reference.pvalue)
    missing = table.loc[(8, GSL, QLOSS)]  # seed 2 of qloss is missing: seeds 0 and 1 only
    assert missing.n == 2 and missing["mean"] == pytest.approx(-0.015)
    assert table.loc[(8, GSL, "two-step")]["mean"] == pytest.approx(-0.01)  # at every seed


def family_table() -> pd.DataFrame:
    """gsl against two-step at 8, 16, 32 and 64 bits (one family: PQ and OPQ, 5 seeds), and one
    regime on another data set (a family of its own)."""
    rng = np.random.default_rng(3)
    base = {"feature": "f", "loss": "pairwise", "sub_bits": 4, "search": "adc", "metric": "l2"}
    shifts = {("toy", "pq", 8): 0.02, ("toy", "pq", 16): 0.004, ("toy", "opq", 32): 0.0003,
              ("toy", "opq", 64): -0.03, ("other", "pq", 8): 0.02}
    rows = []
    for (dataset, quantizer, bits), shift in shifts.items():
        two_step = rng.normal(0.7, 0.01, 5)
        noise = rng.normal(0, 0.0015, 5)
        for variant, values in (("two-step", two_step), ("gsl", two_step + shift + noise)):
            rows += [{**base, "dataset": dataset, "quantizer": quantizer, "code_bits": bits,
                      "method": variant, "variant": variant, "seed": seed, "map": value}
                     for seed, value in enumerate(values)]
    return pd.DataFrame(rows)


def test_holm_runs_over_a_method_pair_in_every_regime_of_a_table_set():
    table = comparisons(family_table(), margin=0.005)
    assert set(FAMILY_KEYS) & {"quantizer", "sub_bits", "code_bits"} == set()
    toy = table[table.dataset == "toy"]
    assert len(toy) == 4 and (toy.family_size == 4).all()
    assert toy.p_holm.tolist() == pytest.approx(holm(toy.p.to_numpy()).tolist())
    assert toy.p_equivalence_holm.tolist() == pytest.approx(holm(toy.p_equivalence.to_numpy()).tolist())
    assert (toy.p_holm >= toy.p).all()
    other = table[table.dataset == "other"].iloc[0]  # alone in its family: unadjusted
    assert other.family_size == 1 and other.p_holm == pytest.approx(other.p)
    verdicts = dict(zip(zip(toy.quantizer, toy.code_bits, strict=True), toy.verdict, strict=True))
    assert verdicts == {("pq", 8): "better", ("pq", 16): "better", ("opq", 32): "equivalent",
                        ("opq", 64): "worse"}
    # a margin of 0 makes nothing equivalent
    assert "equivalent" not in set(comparisons(family_table(), margin=1e-9).verdict)
