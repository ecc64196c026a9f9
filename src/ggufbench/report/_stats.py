"""The statistics of a comparison: exact McNemar, paired bootstrap, clustered errors, Holm.

Every function here is pure numerics on arrays; which of them a report uses for
which metric is decided in :mod:`ggufbench.report._paired`. See docs/report.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "BOOTSTRAP_SEED",
    "Flips",
    "bootstrap_ci",
    "clustered_se",
    "holm",
    "mcnemar",
    "normal_ci",
    "normal_p",
    "paired_t_p",
]

BOOTSTRAP_SEED = 20240911  # every comparison starts from this seed: reports are reproducible
BOOTSTRAP_RESAMPLES = 10_000
Z95 = float(stats.norm.ppf(0.975))
# Resample indices in blocks of at most this many numbers (int32): 1 M is 4 MB, where
# 10,000 resamples of 10,000 items at once would be 400 MB (800 MB as int64).
_BLOCK_NUMBERS = 1_000_000
# A difference with at most this many distinct values (0/1 metrics: -1, 0, 1; a 1-5 score:
# -4..4) is resampled through the counts of its values, which is the same bootstrap.
_FEW_VALUES = 64


@dataclass(frozen=True)
class Flips:
    """McNemar's exact test on paired 0/1 scores."""

    p: float
    baseline_only: int  # items the baseline got right and the variant wrong
    variant_only: int  # items the variant got right and the baseline wrong


def mcnemar(variant: np.ndarray, baseline: np.ndarray) -> Flips:
    """Exact McNemar: a two-sided binomial test (p = 1/2) on the discordant pairs."""
    baseline_only = int(np.sum((baseline == 1) & (variant == 0)))
    variant_only = int(np.sum((baseline == 0) & (variant == 1)))
    discordant = baseline_only + variant_only
    p = 1.0 if discordant == 0 else float(stats.binomtest(variant_only, discordant).pvalue)
    return Flips(p, baseline_only, variant_only)


def bootstrap_ci(
    diffs: np.ndarray,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile interval of the mean of ``diffs`` over resamples of the items.

    Each resample draws n items with replacement. A difference with few distinct
    values is resampled through multinomial counts of those values (the same
    distribution as drawing indices, without n numbers per resample); otherwise
    the indices are drawn in blocks that bound the memory.
    """
    d = np.asarray(diffs, dtype=np.float64)
    n = d.size
    rng = np.random.default_rng(seed)
    values, counts = np.unique(d, return_counts=True)
    if values.size <= _FEW_VALUES:
        draws = rng.multinomial(n, counts / n, size=resamples)
        means = draws @ values / n
    else:
        means = np.empty(resamples)
        block = max(1, _BLOCK_NUMBERS // n)
        for start in range(0, resamples, block):
            size = min(block, resamples - start)
            idx = rng.integers(0, n, size=(size, n), dtype=np.int32)
            means[start : start + size] = d[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def clustered_se(values: np.ndarray, clusters: Sequence[object]) -> float:
    """Standard error of the mean of ``values`` with items correlated within clusters.

    Miller (2024), "Adding Error Bars to Evals": the CLT error plus the
    cross terms of items that share a cluster; with the CLT variance taken over n,
    that is sqrt(sum over clusters of (sum of the cluster's residuals)^2) / n.
    """
    v = np.asarray(values, dtype=np.float64)
    residual = v - v.mean()
    _, which = np.unique(np.asarray([str(c) for c in clusters]), return_inverse=True)
    sums = np.bincount(which, weights=residual)
    return float(math.sqrt(float(np.sum(sums**2))) / v.size)


def normal_ci(delta: float, se: float) -> tuple[float, float]:
    return delta - Z95 * se, delta + Z95 * se


def normal_p(delta: float, se: float | None) -> float | None:
    """Two-sided p of a z-test of ``delta`` against 0."""
    if se is None:
        return None
    if se == 0:
        return 1.0 if delta == 0 else 0.0
    return float(2 * stats.norm.sf(abs(delta) / se))


def paired_t_p(variant: np.ndarray, baseline: np.ndarray) -> float:
    """Two-sided p of the paired t-test (scipy.stats.ttest_rel)."""
    d = variant - baseline
    if np.all(d == d[0]):  # no spread: the t statistic is undefined
        return 1.0 if d[0] == 0 else 0.0
    return float(stats.ttest_rel(variant, baseline).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the order given.

    Written out because scipy.stats has none (its false_discovery_control is
    Benjamini-Hochberg, which bounds the false discovery rate, not the chance of
    any false positive) and statsmodels is not a dependency: the k-th smallest p
    is multiplied by (m - k + 1), then made monotone.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted
