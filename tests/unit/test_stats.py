"""The statistics of a comparison against hand-computed cases and against scipy."""

import math

import numpy as np
import pytest
from scipy import stats

from ggufbench.report import _stats
from ggufbench.report._stats import bootstrap_ci, clustered_se, holm, mcnemar, paired_t_p


def pairs(baseline_only: int, variant_only: int, both: int, neither: int):
    """Two 0/1 score arrays with the given 2x2 table."""
    b = [1] * baseline_only + [0] * variant_only + [1] * both + [0] * neither
    x = [0] * baseline_only + [1] * variant_only + [1] * both + [0] * neither
    return np.array(x, dtype=float), np.array(b, dtype=float)


def test_mcnemar_on_a_known_table():
    x, b = pairs(baseline_only=10, variant_only=2, both=30, neither=8)
    flips = mcnemar(x, b)
    assert (flips.baseline_only, flips.variant_only) == (10, 2)
    # two-sided exact binomial on 12 discordant pairs: 2 * P(X <= 2) = 2 * (1 + 12 + 66) / 4096
    assert math.isclose(flips.p, 158 / 4096, rel_tol=1e-12)
    assert math.isclose(flips.p, stats.binomtest(2, 12, 0.5).pvalue, rel_tol=1e-12)


def test_mcnemar_without_discordant_pairs_finds_no_difference():
    x, b = pairs(0, 0, both=5, neither=5)
    assert mcnemar(x, b).p == 1.0


def test_mcnemar_is_symmetric_and_ignores_concordant_pairs():
    a = mcnemar(*pairs(7, 1, both=100, neither=0))
    c = mcnemar(*pairs(1, 7, both=0, neither=3))
    assert math.isclose(a.p, c.p) and math.isclose(a.p, 2 * 9 / 256)


def test_holm_on_a_known_list():
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_clustered_se_on_a_hand_computed_case():
    # mean 0.4; residual sums: cluster a 0.6 - 0.4 + 0.6 = 0.8, cluster b -0.8
    se = clustered_se(np.array([1, 0, 1, 0, 0.0]), ["a", "a", "a", "b", "b"])
    assert math.isclose(se, math.sqrt(0.8**2 + 0.8**2) / 5)


def test_clustered_se_with_one_item_per_cluster_is_the_plain_error():
    v = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0])
    se = clustered_se(v, list(range(6)))
    assert math.isclose(se, math.sqrt(v.var() / v.size))  # variance over n


def test_paired_t_p_is_scipys_and_defined_without_spread():
    x = np.array([5, 4, 3, 5, 2, 4.0])
    b = np.array([4, 4, 2, 3, 2, 5.0])
    assert math.isclose(paired_t_p(x, b), stats.ttest_rel(x, b).pvalue)
    assert paired_t_p(b, b) == 1.0
    assert paired_t_p(b + 1, b) == 0.0


def test_bootstrap_is_reproducible():
    d = np.random.default_rng(1).normal(size=500)
    assert bootstrap_ci(d) == bootstrap_ci(d)


def test_bootstrap_by_counts_matches_bootstrap_by_indices(monkeypatch):
    rng = np.random.default_rng(7)
    d = rng.choice([-1.0, 0.0, 1.0], size=2000, p=[0.2, 0.65, 0.15])
    by_counts = bootstrap_ci(d)
    monkeypatch.setattr(_stats, "_FEW_VALUES", 0)
    by_indices = bootstrap_ci(d)
    assert by_counts == pytest.approx(by_indices, abs=0.004)
    # and both match the normal interval that this many items make nearly exact
    se = d.std(ddof=1) / math.sqrt(d.size)
    assert by_counts == pytest.approx((d.mean() - 1.96 * se, d.mean() + 1.96 * se), abs=0.004)


def coverage(make, true_delta: float, seeds: int = 200) -> float:
    hits = 0
    for seed in range(seeds):
        d = make(np.random.default_rng(seed))
        lo, hi = bootstrap_ci(d, resamples=2000)
        hits += lo <= true_delta <= hi
    return hits / seeds


def test_bootstrap_interval_covers_the_true_difference_of_paired_0_1_scores():
    def make(rng):
        base = rng.random(300) < 0.6
        lose = rng.random(300) < 0.15  # right -> wrong
        gain = rng.random(300) < 0.10  # wrong -> right
        variant = np.where(base, ~lose, gain)
        return variant.astype(float) - base.astype(float)

    # E[d] = 0.4 * 0.10 - 0.6 * 0.15
    assert 0.90 <= coverage(make, 0.4 * 0.10 - 0.6 * 0.15) <= 0.99


def test_bootstrap_interval_covers_the_true_difference_of_continuous_scores():
    def make(rng):
        difficulty = rng.normal(size=200)  # shared by both models: cancels in the pairs
        base = difficulty + rng.normal(size=200)
        variant = difficulty + 0.1 + rng.exponential(1.0, size=200) - 1.0
        return variant - base

    assert 0.90 <= coverage(make, 0.1) <= 0.99
