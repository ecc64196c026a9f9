"""combine() against perplexity.cpp's definitions, written out here with numpy."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from ggufbench.fidelity import ChunkStats, chunk_stats, combine, percentile
from ggufbench.fidelity._rows import TokenValues


def values(n: int, seed: int) -> TokenValues:
    rng = np.random.default_rng(seed)
    nll_base = rng.gamma(2.0, 1.5, n)
    nll = np.abs(nll_base + rng.normal(0, 0.3, n))
    return TokenValues(
        nll=nll,
        nll_base=nll_base,
        kld=rng.gamma(0.5, 0.05, n),
        same_top=rng.random(n) < 0.9,
        tail_mass=rng.random(n) * 0.1,
        tail_var=rng.random(n) * 1e-8,
    )


def chunks(sizes: list[int]) -> tuple[list[ChunkStats], TokenValues]:
    parts = [values(n, seed) for seed, n in enumerate(sizes)]
    joined = TokenValues.concat(parts)
    return [chunk_stats(i, v) for i, v in enumerate(parts)], joined


def mean_err(x: np.ndarray) -> tuple[float, float]:
    """perplexity.cpp's mean_and_uncertainty: sqrt((E[x^2] - E[x]^2) / (n - 1))."""
    n = len(x)
    return float(x.mean()), math.sqrt((np.mean(x * x) - x.mean() ** 2) / (n - 1))


def test_figures_match_perplexity_cpp_definitions():
    parts, v = chunks([255, 255, 100])
    f = combine(parts)
    n = len(v.nll)
    assert (f["n_tokens"], f["n_chunks"]) == (n, 3)
    m, e = mean_err(v.nll)
    mb, eb = mean_err(v.nll_base)
    cov = (np.mean(v.nll * v.nll_base) - m * mb) / (n - 1)
    close = {"rel": 1e-9}
    assert f["ppl"]["value"] == pytest.approx(math.exp(m), **close)
    assert f["ppl"]["stderr"] == pytest.approx(math.exp(m) * e, **close)
    assert f["ppl_base"]["value"] == pytest.approx(math.exp(mb), **close)
    assert f["ppl_correlation"] == pytest.approx(cov / (e * eb), **close)
    ln_e = math.sqrt(e * e + eb * eb - 2 * cov)
    assert f["ln_ppl_ratio"]["value"] == pytest.approx(m - mb, **close)
    assert f["ln_ppl_ratio"]["stderr"] == pytest.approx(ln_e, **close)
    assert f["ppl_ratio"]["value"] == pytest.approx(math.exp(m - mb), **close)
    assert f["ppl_ratio"]["stderr"] == pytest.approx(math.exp(m - mb) * ln_e, **close)
    u, ub = math.exp(m) * e, math.exp(mb) * eb
    diff_e = math.sqrt(u * u + ub * ub - 2 * math.exp(m) * math.exp(mb) * cov)
    assert f["ppl_diff"]["value"] == pytest.approx(math.exp(m) - math.exp(mb), **close)
    assert f["ppl_diff"]["stderr"] == pytest.approx(diff_e, **close)
    assert (f["kld"]["value"], f["kld"]["stderr"]) == pytest.approx(mean_err(v.kld), **close)
    dp = v.p_diff
    assert (f["delta_p"]["value"], f["delta_p"]["stderr"]) == pytest.approx(mean_err(dp), **close)
    mse, mse_e = mean_err(dp * dp)
    assert f["rms_delta_p"]["value"] == pytest.approx(math.sqrt(mse), **close)
    assert f["rms_delta_p"]["stderr"] == pytest.approx(0.5 / math.sqrt(mse) * mse_e, **close)
    same = v.same_top.mean()
    assert f["same_top_p"]["value"] == pytest.approx(same, **close)
    assert f["same_top_p"]["stderr"] == pytest.approx(math.sqrt(same * (1 - same) / (n - 1)))
    assert f["kld_sampling_stderr"] == pytest.approx(math.sqrt(v.tail_var.sum()) / n, **close)
    kld_sorted = np.sort(v.kld.astype(np.float32))
    assert f["kld_percentiles"]["max"] == float(kld_sorted[-1])
    assert f["kld_percentiles"]["min"] == float(kld_sorted[0])
    assert f["kld_percentiles"]["99.0"] == percentile(kld_sorted, 0.99)
    assert list(f["delta_p_percentiles"]) == [
        "max", "99.9", "99.0", "95.0", "90.0", "75.0", "median",
        "25.0", "10.0", "5.0", "1.0", "0.1", "min",
    ]  # fmt: skip


def test_percentile_indexing_is_perplexity_cpp_float32_arithmetic():
    values = np.arange(11, dtype=np.float32) * 10  # 0, 10, ..., 100
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.0) == 0.0 and percentile(values, 1.0) == 100.0
    # p = 0.999f * 10 = 9.99 (float32): 0.01 * 90 + 0.99 * 100, all in float32
    p = np.float32(0.999) * np.float32(10)
    frac = p - np.float32(9)
    expected = (np.float32(1) - frac) * np.float32(90) + frac * np.float32(100)
    assert percentile(values, 0.999) == float(expected)
    assert percentile(values, 0.999) != pytest.approx(99.9, abs=1e-9)  # float32, not float64
    two = np.array([0.0, 10.0], dtype=np.float32)
    assert percentile(two, 0.9) == float(np.float32(0.9) * np.float32(10))


def test_median_is_the_middle_value_or_the_float32_mean_of_the_two():
    odd = chunk_stats(0, values(11, 1))
    f = combine([odd])
    assert f["kld_percentiles"]["median"] == float(np.sort(odd.kld)[5])
    even = chunk_stats(0, values(12, 2))
    s = np.sort(even.kld)
    assert combine([even])["kld_percentiles"]["median"] == float(np.float32(0.5) * (s[5] + s[6]))


def test_small_counts_have_no_error_as_in_perplexity_cpp():
    f = combine([chunk_stats(0, values(10, 3))])
    assert f["kld"]["stderr"] == 0.0 and f["ppl"]["stderr"] == 0.0
    assert f["ln_ppl_ratio"]["stderr"] == 0.0  # covariance is 0 below 10 tokens too


def test_identical_models_give_zero_differences_without_nan():
    v = values(300, 4)
    same = TokenValues(
        v.nll, v.nll.copy(), np.zeros(300), np.ones(300, bool), v.tail_mass, v.tail_var
    )
    f = combine([chunk_stats(0, same)])
    assert f["ln_ppl_ratio"]["value"] == 0.0 and f["ppl_ratio"]["value"] == 1.0
    assert f["rms_delta_p"] == {"value": 0.0, "stderr": 0.0}
    assert f["same_top_p"] == {"value": 1.0, "stderr": 0.0}
    assert "NaN" not in json.dumps(f)


def test_combine_is_order_independent_to_the_byte():
    parts, _ = chunks([255] * 7 + [31])
    reference = json.dumps(combine(parts), sort_keys=True)
    rng = random.Random(0)
    for _ in range(5):
        shuffled = parts[:]
        rng.shuffle(shuffled)
        again = [ChunkStats.from_bytes(p.to_bytes()) for p in shuffled]
        assert json.dumps(combine(again), sort_keys=True) == reference


def test_a_chunk_given_twice_or_none_is_an_error():
    parts, _ = chunks([20, 20])
    with pytest.raises(ValueError, match="twice"):
        combine([parts[0], parts[1], parts[0]])
    with pytest.raises(ValueError, match="no fidelity chunk"):
        combine([])
