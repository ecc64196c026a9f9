"""The per-row reductions against a float64 numpy reference on synthetic logits."""

from __future__ import annotations

import numpy as np
import pytest

from ggufbench.fidelity._rows import _tail_sample, baseline_rows, top_k, variant_rows


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def exact_kld(base: np.ndarray, variant: np.ndarray) -> np.ndarray:
    lp, lq = log_softmax(base), log_softmax(variant)
    return (np.exp(lp) * (lp - lq)).sum(axis=-1)


def pair(rows: int, vocab: int, noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Base logits with a heavy tail, and a variant: the base plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    base = (rng.standard_normal((rows, vocab)) * 2.5).astype(np.float32)
    variant = (base + rng.standard_normal((rows, vocab)) * noise).astype(np.float32)
    return base, variant


def test_top_k_is_a_full_sort_with_lower_ids_first_among_equals():
    rng = np.random.default_rng(1)
    row = rng.integers(0, 40, 3000).astype(np.float32)  # many equal values
    expected = np.lexsort((np.arange(len(row)), -row))
    for k in (1, 7, 64, 500, 3000):
        for span in (0.5, 4.0, 16.0, 1e9):
            assert top_k(row, k, span).tolist() == expected[:k].tolist()


def test_top_k_with_minus_infinity_logits():
    row = np.array([-np.inf, 1.0, -np.inf, 0.5], dtype=np.float32)
    assert top_k(row, 4).tolist() == [1, 3, 0, 2]


def test_baseline_record_holds_the_exact_log_probabilities():
    base, _ = pair(5, 300, 0.1)
    targets = np.array([3, 17, 0, 299, 150], dtype=np.int32)
    rec = baseline_rows(base, targets, k=20, m=8, seed=b"s")
    ref = log_softmax(base)
    rows = np.arange(5)[:, None]
    np.testing.assert_allclose(rec.top_logp, ref[rows, rec.top_ids], rtol=0, atol=2e-6)
    np.testing.assert_allclose(rec.target, ref[np.arange(5), targets], rtol=0, atol=1e-6)
    assert rec.argmax.tolist() == base.argmax(axis=1).tolist()
    outside = np.ones_like(ref, dtype=bool)
    outside[rows, rec.top_ids] = False
    tail = np.log(np.where(outside, np.exp(ref), 0).sum(axis=1))
    np.testing.assert_allclose(rec.tail, tail, rtol=1e-6)
    assert not any(np.isin(rec.tail_ids[i], rec.top_ids[i]).any() for i in range(5))
    np.testing.assert_allclose(rec.tail_logp, ref[rows, rec.tail_ids], rtol=0, atol=2e-6)


def test_tail_draws_are_proportional_to_probability_and_never_in_the_top_k():
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(50) * 0.5).astype(np.float32)
    head = np.array([0, 5, 9])
    probs[head] = 0
    blocks = np.zeros((1, 64), dtype=np.float32)
    buf = blocks.reshape(-1)[:50]
    buf[:] = probs
    grid = 4000
    counts = np.zeros(50)
    for u in (np.arange(grid) + 0.5) / grid:
        np.add.at(counts, _tail_sample(buf, blocks, 4, float(u)), 1)
    assert counts[head].sum() == 0
    share = probs / probs.sum()
    # systematic draws over a fine grid of offsets: exact up to the grid's resolution
    np.testing.assert_allclose(counts / counts.sum(), share, atol=2.0 / grid)


def test_with_every_token_kept_the_kld_is_the_exact_full_vocabulary_kld():
    base, variant = pair(6, 200, 0.3)
    targets = np.zeros(6, dtype=np.int32)
    rec = baseline_rows(base, targets, k=200, m=4)
    values = variant_rows(variant, rec)
    # the record keeps log-probabilities as float32: about 1e-7 absolute per token
    np.testing.assert_allclose(values.kld, exact_kld(base, variant), rtol=0, atol=5e-7)
    assert (values.tail_mass == 0).all()


def test_the_estimate_is_unbiased_and_its_coarse_part_is_a_lower_bound():
    """Averaged over the tail draws the estimate is the exact KLD; without them it is below."""
    base, variant = pair(4, 400, 0.4, seed=3)
    targets = np.arange(4, dtype=np.int32)
    exact = exact_kld(base, variant)
    estimates = []
    for seed in range(300):
        rec = baseline_rows(base, targets, k=16, m=8, seed=seed.to_bytes(2, "little"))
        estimates.append(variant_rows(variant, rec).kld)
    mean = np.mean(estimates, axis=0)
    spread = np.std(estimates, axis=0) / np.sqrt(len(estimates))
    assert (np.abs(mean - exact) < 4 * spread + 1e-9).all()
    # the coarse part alone (no draw-based correction): P_T log(P_T / Q_T) <= the tail's sum
    rec = baseline_rows(base, targets, k=16, m=1, seed=b"x")
    values = variant_rows(variant, rec)
    lp, lq = log_softmax(base), log_softmax(variant)
    head = np.take_along_axis(np.exp(lp) * (lp - lq), rec.top_ids.astype(np.int64), axis=1).sum(1)
    pt = np.exp(rec.tail)
    qt = 1 - np.take_along_axis(np.exp(lq), rec.top_ids.astype(np.int64), axis=1).sum(1)
    coarse = head + pt * np.log(pt / qt)
    assert (coarse <= exact + 1e-12).all()
    assert (values.kld >= coarse - 1e-9).all()  # the correction is never negative


def test_variant_values_per_token():
    base, variant = pair(5, 120, 0.2, seed=4)
    targets = np.array([1, 2, 3, 4, 5], dtype=np.int32)
    rec = baseline_rows(base, targets, k=10, m=10)
    values = variant_rows(variant, rec)
    lp, lq = log_softmax(base), log_softmax(variant)
    rows = np.arange(5)
    np.testing.assert_allclose(values.nll, -lq[rows, targets], rtol=1e-6)
    np.testing.assert_allclose(values.nll_base, -lp[rows, targets], rtol=1e-6)
    assert values.same_top.tolist() == (base.argmax(1) == variant.argmax(1)).tolist()
    p_diff = np.exp(lq[rows, targets]) - np.exp(lp[rows, targets])
    np.testing.assert_allclose(values.p_diff, p_diff, atol=1e-7)


def test_a_record_block_offset_selects_the_matching_rows():
    base, variant = pair(6, 100, 0.2, seed=5)
    targets = np.arange(6, dtype=np.int32)
    rec = baseline_rows(base, targets, k=100, m=2)
    whole = variant_rows(variant, rec).kld
    part = variant_rows(variant[2:5], rec, offset=2).kld
    np.testing.assert_array_equal(part, whole[2:5])


def test_a_variant_with_another_vocabulary_size_is_refused():
    base, _ = pair(2, 50, 0.1)
    rec = baseline_rows(base, np.zeros(2, dtype=np.int32), k=5, m=2)
    with pytest.raises(ValueError, match="vocabulary"):
        variant_rows(np.zeros((2, 51), dtype=np.float32), rec)
