"""Paired comparisons: the t-interval, the paired t-test, the equivalence test (TOST), Holm's
adjustment and the detectable difference against scipy, statsmodels and hand computations; the
declared comparisons (one family), the best other method chosen by validation, the pairing unit
(draw, seed), the conditions and the verdicts on made-up results tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

from gslbench.bench.grid import Grid
from gslbench.config import RunConfig
from gslbench.declared import DEFAULT, Declared, declared_of, validation_maps
from gslbench.errors import GslbenchError
from gslbench.report.answer import MARKERS, SHORT
from gslbench.report.document import document_tables
from gslbench.report.stats import (
    comparisons,
    declared_pairs,
    detectable_difference,
    holm,
    paired_difference,
    t_test_power,
    units_text,
    validation_note,
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
    assert verdict(0.01, 0.01, 0.9, 0.1) == "better"  # significant: powered or not
    assert verdict(-0.01, 0.049, 0.0, 0.001) == "worse"
    assert verdict(0.001, 0.3, 0.01, 0.1) == "equivalent"
    assert verdict(0.001, 0.3, 0.2, 0.004, margin=0.005) == "inconclusive"
    assert verdict(0.001, 0.3, 0.2, 0.006, margin=0.005) == "not powered"
    assert verdict(0.1, math.nan, math.nan, math.nan) == "not powered"  # a single unit


def test_single_seeds_and_constant_differences():
    one = paired_difference([0.8], [0.7])
    assert math.isnan(one.low) and math.isnan(one.p) and one.mean == pytest.approx(0.1)
    constant = paired_difference(np.array([0.8, 0.9]), np.array([0.8, 0.9]) - 0.25)
    assert constant.low == pytest.approx(0.25) and constant.p == 0 and constant.p_equivalence == 1
    equal = paired_difference([0.8, 0.9], [0.8, 0.9])
    assert equal.p == 1 and equal.p_equivalence == 0


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
    declared = Declared((("gsl", "two-step"), ("gsl", "qloss"), ("qloss", "two-step")))
    table = comparisons(made_up_results(), declared).set_index(["sub_bits", "method", "against"])
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



def test_the_detectable_difference_against_closed_forms():
    """The noncentral t, checked three independent ways: the normal approximation at large n,
    scipy's noncentral t where it is stable, and statsmodels' solver where it converges."""
    z = stats.norm.ppf(0.975) + stats.norm.ppf(0.8)  # large n: (z(1 - α/2) + z(0.8)) · sd / √n
    assert detectable_difference(0.02, 400, 0.05) == pytest.approx(z * 0.02 / math.sqrt(400),
                                                                   rel=0.005)
    for n, alpha in ((10, 0.05), (5, 0.01), (3, 0.05)):
        d = detectable_difference(1.0, n, alpha)
        critical = stats.t.ppf(1 - alpha / 2, n - 1)
        power = (stats.nct.sf(critical, n - 1, d * math.sqrt(n))
                 + stats.nct.cdf(-critical, n - 1, d * math.sqrt(n)))
        assert power == pytest.approx(0.8, abs=1e-6)
    assert detectable_difference(1.0, 10, 0.05) == pytest.approx(
        TTestPower().solve_power(nobs=10, alpha=0.05, power=0.8), rel=1e-5)
    assert t_test_power(1.0, 10, 0.05) == pytest.approx(TTestPower().power(1.0, 10, 0.05))
    # linear in the spread; after a correction (alpha / m) larger; no test with one unit
    assert detectable_difference(0.004, 10, 0.05) == pytest.approx(
        2 * detectable_difference(0.002, 10, 0.05))
    assert detectable_difference(0.01, 10, 0.05 / 20) > detectable_difference(0.01, 10, 0.05)
    assert math.isnan(detectable_difference(0.01, 1, 0.05))


def regime_rows(dataset="toy", quantizer="pq", condition=None, seeds=range(3), draws=(0,),
                **methods):
    """Runs of one regime: methods = {variant: (mAP per unit, validation mAP or None)}, the
    units (draw, seed) in order; a `condition` column only when given."""
    base = {"dataset": dataset, "feature": "f", "loss": "pairwise", "quantizer": quantizer,
            "sub_bits": 4, "search": "adc", "metric": "l2", "code_bits": 16}
    units = [(draw, seed) for draw in draws for seed in seeds]
    rows = []
    for variant, (values, validation) in methods.items():
        for (draw, seed), value in zip(units, values, strict=True):
            rows.append({**base, "method": variant.split()[0], "variant": variant, "seed": seed,
                         "draw": draw, "map": value, "validation_map": validation,
                         "quant_mse_database": math.nan,
                         **({"condition": condition} if condition else {})})
    return rows


def test_not_powered_on_three_seeds():
    """3 seeds, differences 0.006, -0.004, 0.001: neither different nor shown equivalent, and
    the smallest difference 3 seeds could detect is far above the 0.005 margin: not powered,
    not inconclusive; units marked (< 10). With 12 seeds and a small spread: powered."""
    frame = pd.DataFrame(regime_rows(**{"two-step": ([0.70, 0.70, 0.70], None),
                                        "gsl": ([0.706, 0.696, 0.701], None)}))
    row = comparisons(frame).iloc[0]
    assert row.n == 3 and row.detectable > 0.005 and row.verdict == "not powered"
    sd = np.std([0.006, -0.004, 0.001], ddof=1)
    assert row.detectable == pytest.approx(detectable_difference(sd, 3, 0.05))  # a family of 1
    assert units_text(row.n) == "3 (< 10)" and units_text(10) == "10"
    rng = np.random.default_rng(4)
    many = pd.DataFrame(regime_rows(seeds=range(12), **{
        "two-step": (np.full(12, 0.7), None),
        "gsl": (0.7 + 0.004 + rng.normal(0, 0.0002, 12), None)}))
    powered = comparisons(many).iloc[0]
    assert powered.detectable < 0.005 and powered.verdict in ("better", "equivalent")


def declared_frame() -> pd.DataFrame:
    """Two data sets, PQ and OPQ, two conditions; gsl, two-step, qloss and ste at 4 seeds (ste
    the best other by validation)."""
    rng = np.random.default_rng(5)
    rows = []
    for dataset in ("toy", "other"):
        for quantizer in ("pq", "opq"):
            for condition in ("seen@seen", "unseen@unseen"):
                base = rng.normal(0.7, 0.01, 4)
                rows += regime_rows(dataset, quantizer, condition, seeds=range(4), **{
                    "two-step": (base, 0.60), "qloss λ=1": (base + rng.normal(0.003, 0.002, 4), 0.62),
                    "ste β=1": (base + rng.normal(0.001, 0.002, 4), 0.625),
                    "gsl": (base + rng.normal(0.008, 0.002, 4), 0.63)})
    return pd.DataFrame(rows)


def test_holm_over_the_declared_family_equals_statsmodels():
    frame = declared_frame()
    declared = Declared((("gsl", "two-step"), ("gsl", "qloss")))
    table = comparisons(frame, declared)
    assert len(table) == 2 * 2 * 2 * 2  # data sets, quantizers, conditions, pairs: one family
    assert (table.family_size == len(table)).all()
    raw = []  # the paired t-tests by hand, in the table's order
    for _, row in table.iterrows():
        cell = frame[(frame.dataset == row.dataset) & (frame.quantizer == row.quantizer)
                     & (frame.condition == row.condition)]
        a, b = (cell[cell.variant == v].sort_values("seed")["map"] for v in (row.method, row.against))
        raw.append(stats.ttest_rel(a, b).pvalue)
    assert table.p.tolist() == pytest.approx(raw)
    assert table.p_holm.tolist() == pytest.approx(multipletests(raw, method="holm")[1].tolist())
    assert table.p_equivalence_holm.tolist() == pytest.approx(
        multipletests(table.p_equivalence, method="holm")[1].tolist())
    # the power figure at Holm's worst case, alpha / m
    first = table.iloc[0]
    assert first.detectable == pytest.approx(detectable_difference(first.sd, 4, 0.05 / 16))
    # regimes restrict the family: only OPQ
    only = comparisons(frame, Declared(declared.pairs, (("quantizer", ("opq",)),)))
    assert set(only.quantizer) == {"opq"} and (only.family_size == 8).all()


def test_the_family_is_every_comparison_the_document_makes():
    frame = declared_frame()
    compared = comparisons(frame)
    answer, tables = document_tables(frame)
    size = len(compared)  # gsl against two-step, qloss and the best other (pca has no runs)
    assert size == 2 * 2 * 2 * 3 and (compared.family_size == size).all()
    assert f"one Holm family of {size} tests" in answer and f"family of {size} tests" in tables
    block_rows = sum(1 for line in tables.split("## Paired comparisons")[0].splitlines()
                     if line.startswith("| 16 | "))
    assert block_rows == size  # every verdict of the verdict blocks is in the family
    assert "vs pca" not in answer and "no column for pca" in answer  # pca has no runs


def test_the_best_other_is_chosen_by_validation_not_by_test():
    """ste has the highest test mAP but qloss the highest validation mAP: qloss is the best other;
    without validation mAP the comparison is left out, with a note saying why."""
    frame = pd.DataFrame(regime_rows(**{
        "two-step": ([0.70, 0.71, 0.72], 0.60), "qloss λ=1": ([0.72, 0.73, 0.74], 0.65),
        "ste β=1": ([0.75, 0.76, 0.77], 0.62), "gsl": ([0.74, 0.75, 0.76], 0.64)}))
    by_test = frame[frame.method != "gsl"].groupby("variant")["map"].mean().idxmax()
    assert by_test == "ste β=1"
    declared = Declared((("gsl", "best-other"),))
    table = comparisons(frame, declared)
    assert table[["method", "against", "best_other"]].values.tolist() == [["gsl", "qloss λ=1", True]]
    both = comparisons(frame, Declared((("gsl", "qloss"), ("gsl", "best-other"))))
    assert len(both) == 1 and both.best_other.all()  # the best other is qloss: one comparison
    blind = frame.drop(columns="validation_map")
    assert comparisons(blind, declared).empty
    assert "left out" in validation_note(blind, declared) and not validation_note(frame, declared)
    answer, _ = document_tables(blind, declared=declared)
    assert answer.startswith("## The answer") and "these runs have no validation score" in answer
    # the comparator per method variant: another method's, never the variant's own method
    validation = pd.Series({"two-step": 0.6, "gsl α=1": 0.9, "gsl α=0": 0.8, "qloss λ=1": 0.7})
    assert declared_pairs(list(validation.index), validation, declared) == [
        ("gsl α=0", "qloss λ=1", True), ("gsl α=1", "qloss λ=1", True)]


def test_the_short_answer_holds_the_tuned_variants_verdicts_and_the_full_one_every_variant():
    """The tuned GSL (a validation score) and its α = 0 control (none) against two-step: the
    short table, which README copies, shows the tuned row's verdict alone; the full table both
    rows with their differences. Without validation scores the short table has every row."""
    frame = pd.DataFrame(regime_rows(seeds=range(4), **{
        "two-step": ([0.70, 0.71, 0.72, 0.73], 0.60),
        "gsl α=1": ([0.72, 0.73, 0.74, 0.7501], 0.64),
        "gsl α=0": ([0.70, 0.71, 0.72, 0.73], None)}))
    declared = Declared((("gsl", "two-step"),))
    answer, _ = document_tables(frame, declared=declared)
    short = answer[answer.index(SHORT[0]):answer.index(SHORT[1])]
    full = answer[answer.index(MARKERS[0]):answer.index(MARKERS[1])]
    assert "| standard | pq | 16 | gsl α=1 | 16: better |" in short
    assert "gsl α=0" not in short and "+0." not in short
    assert "| standard | pq | 16 | gsl α=1 | 16: +0.0200 better | 4 (< 10) |" in full
    assert "| standard | pq | 16 | gsl α=0 | 16: +0.0000 equivalent | 4 (< 10) |" in full
    assert "In short: the tuned variants' verdicts" in answer
    blind, _ = document_tables(frame.assign(validation_map=math.nan), declared=declared)
    short = blind[blind.index(SHORT[0]):blind.index(SHORT[1])]
    assert "| gsl α=0 | 16: equivalent |" in short and "In short: every variant's" in blind


def test_regimes_that_differ_in_their_settings_are_told_apart_in_the_answer():
    """Frozen and fine-tuned runs of one cell (campaign 2's stages 1 and 2) are two rows of the
    answer, each naming its settings; runs that all share their settings get no such column."""
    rows = []
    for settings, shift in (("", 0.0), ("train_blocks=1", 0.03)):
        rows += [{**row, "settings": settings, "map": row["map"] + shift} for row in regime_rows(
            seeds=range(4), **{"two-step": ([0.70, 0.71, 0.72, 0.73], 0.60),
                               "gsl α=1": ([0.72, 0.73, 0.74, 0.7501], 0.64)})]
    declared = Declared((("gsl", "two-step"),))
    answer, _ = document_tables(pd.DataFrame(rows), declared=declared)
    short = answer[answer.index(SHORT[0]):answer.index(SHORT[1])]
    assert "| settings | protocol | quantizer | words | method | vs two-step" in short
    assert "|  | standard | pq | 16 | gsl α=1 | 16: better |" in short
    assert "| train_blocks=1 | standard | pq | 16 | gsl α=1 | 16: better |" in short
    alone, _ = document_tables(pd.DataFrame(rows[:len(rows) // 2]), declared=declared)
    assert "| settings |" not in alone


def test_a_regime_with_no_tuned_variant_shows_every_variant_in_the_short_answer():
    """Campaign 2's fine-tuned runs take knobs pinned from the frozen cell's tuning (no validation
    score): their regime's GSL row is in the short table beside the frozen regime's tuned row,
    and the frozen regime's α = 0 control stays out of it."""
    frozen = regime_rows(seeds=range(4), **{
        "two-step": ([0.70, 0.71, 0.72, 0.73], 0.60), "gsl α=1": ([0.72, 0.73, 0.74, 0.7501], 0.64),
        "gsl α=0": ([0.70, 0.71, 0.72, 0.73], None)})
    tuned_block = regime_rows(seeds=range(4), **{
        "two-step": ([0.74, 0.75, 0.76, 0.77], None), "gsl α=0.9": ([0.70, 0.71, 0.72, 0.7301], None)})
    rows = [{**row, "settings": ""} for row in frozen]
    rows += [{**row, "settings": "train_blocks=1"} for row in tuned_block]
    answer, _ = document_tables(pd.DataFrame(rows), declared=Declared((("gsl", "two-step"),)))
    short = answer[answer.index(SHORT[0]):answer.index(SHORT[1])]
    assert "|  | standard | pq | 16 | gsl α=1 | 16: better |" in short
    assert "| train_blocks=1 | standard | pq | 16 | gsl α=0.9 | 16: worse |" in short
    assert "gsl α=0 " not in short
    assert "In short: the tuned variants' (every variant's where a regime has none tuned)" in answer


def test_conditions_never_mix_and_the_unit_is_draw_and_seed():
    rows = []
    for condition, shift in (("seen@seen", 0.01), ("unseen@unseen", -0.01)):
        rows += regime_rows(condition=condition, seeds=(0, 1), draws=(0, 1), **{
            "two-step": ([0.70, 0.71, 0.72, 0.73], None),
            "gsl": ([0.70 + shift, 0.71 + shift, 0.72 + shift, 0.73 + shift + 0.001], None)})
    table = comparisons(pd.DataFrame(rows)).set_index("condition")
    assert table.n.tolist() == [4, 4]  # (draw, seed): 2 draws x 2 seeds, not 2 seeds
    assert table.loc["seen@seen", "mean"] > 0 > table.loc["unseen@unseen", "mean"]
    # no condition or draw column: the standard condition, draw 0
    plain = pd.DataFrame(regime_rows(**{"two-step": ([0.7, 0.71, 0.72], None),
                                        "gsl": ([0.72, 0.73, 0.75], None)})).drop(columns="draw")
    row = comparisons(plain).iloc[0]
    assert row.condition == "standard" and row.n == 3


def test_a_grid_declares_its_comparisons(tmp_path):
    settings = {"method": ["two-step", "gsl"], "comparisons": {
        "pairs": [["gsl", "two-step"], ["gsl", "best-other"]], "quantizer": ["pq", "opq"],
        "sub_bits": 4}}
    grid = Grid.from_mapping(settings, source="g.toml")
    assert grid.comparisons.pairs == (("gsl", "two-step"), ("gsl", "best-other"))
    assert grid.comparisons.covers({"quantizer": "pq", "sub_bits": 4})
    assert not grid.comparisons.covers({"quantizer": "rq", "sub_bits": 4})
    assert "comparisons" not in grid.fields() and len(grid.cells()) == 2
    assert Grid.from_mapping({"method": "gsl"}).comparisons == DEFAULT == declared_of({})
    for table, message in (([["gsl", "two-step"]], "must be a table"),
                           ({"pairs": [["gsl"]]}, "pairs must be a non-empty list"),
                           ({"pairs": [["gsl", "gsl"]]}, "compares nothing"),
                           ({"pairs": [["best-other", "gsl"]]}, "compares nothing"),
                           ({"quantiser": "pq"}, "unknown key 'quantiser'")):
        with pytest.raises(GslbenchError, match=message) as caught:
            Grid.from_mapping({"method": "gsl", "comparisons": table}, source="g.toml")
        assert str(caught.value).startswith("g.toml: [comparisons]")
        assert "\n" not in str(caught.value)


def test_validation_maps_belong_to_the_tuned_choice_not_to_controls():
    shared = {"dataset": "digits"}
    choices = [{"method": "qloss", "bits": 16, "qloss_lambda": 2.0, "validation_map": 0.61},
               {"method": "gsl", "bits": 16, "gsl_alpha": 1.0, "validation_map": 0.64},
               {"method": "two-step", "bits": 16, "validation_map": 0.58}]
    tuned = [RunConfig(dataset="digits", method="qloss", bits=16, qloss_lambda=2.0, seed=s)
             for s in (0, 1)]
    control = RunConfig(dataset="digits", method="gsl", bits=16, gsl_alpha=0.0, seed=0)
    gsl = RunConfig(dataset="digits", method="gsl", bits=16, gsl_alpha=1.0, seed=0)
    two_step = RunConfig(dataset="digits", method="two-step", bits=16, seed=0)
    other_bits = RunConfig(dataset="digits", method="two-step", bits=32, seed=0)
    found = validation_maps(choices, shared, [*tuned, control, gsl, two_step, other_bits])
    assert found == {tuned[0].run_id: 0.61, tuned[1].run_id: 0.61, gsl.run_id: 0.64,
                     two_step.run_id: 0.58}
