"""The records and chunk results as bytes: exact round trips, the same bytes every time."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from ggufbench.fidelity import BaselineRecord, ChunkStats, chunk_stats, window_of
from ggufbench.fidelity._rows import TokenValues, baseline_rows


def record(seed: int = 0) -> BaselineRecord:
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((9, 500)) * 3).astype(np.float32)
    return baseline_rows(logits, rng.integers(0, 500, 9).astype(np.int32), k=12, m=5, seed=b"a")


def test_baseline_record_round_trips_exactly():
    rec = record()
    data = rec.to_bytes()
    back = BaselineRecord.from_bytes(data)
    assert back.to_bytes() == data
    assert (back.n_vocab, back.k, back.m, len(back)) == (500, 12, 5, 9)
    for name in BaselineRecord._ARRAYS:
        np.testing.assert_array_equal(getattr(back, name), getattr(rec, name))
    # 8 (k + m) + 24 bytes per scored token, plus a short header
    assert len(data) - 9 * (8 * (12 + 5) + 24) < 100


def test_the_record_carries_its_chunk_and_tokens():
    rec = replace(record(), chunk=3, window=np.arange(18, dtype=np.int32))
    back = BaselineRecord.from_bytes(rec.to_bytes())
    assert back.chunk == 3 and back.window.tolist() == list(range(18))
    window = window_of(rec.to_bytes())
    assert window.index == 3 and window.tokens.tolist() == list(range(18))
    assert window.targets.tolist() == list(range(10, 18))


def test_the_same_rows_and_seed_give_the_same_bytes():
    assert record(1).to_bytes() == record(1).to_bytes()


def test_concatenated_blocks_equal_one_block():
    rng = np.random.default_rng(2)
    logits = (rng.standard_normal((10, 300)) * 3).astype(np.float32)
    targets = rng.integers(0, 300, 10).astype(np.int32)
    whole = baseline_rows(logits, targets, 8, 4, seed=b"s")
    parts = [
        baseline_rows(logits[a:b], targets[a:b], 8, 4, seed=b"s", offset=a)
        for a, b in ((0, 3), (3, 10))
    ]
    assert BaselineRecord.concat(parts).to_bytes() == whole.to_bytes()


def test_chunk_stats_round_trip_exactly():
    rng = np.random.default_rng(3)
    n = 40
    v = TokenValues(
        rng.random(n), rng.random(n), rng.random(n) * 1e-3, rng.random(n) < 0.5,
        rng.random(n), rng.random(n) * 1e-9,
    )  # fmt: skip
    stats = chunk_stats(7, v)
    data = stats.to_bytes()
    back = ChunkStats.from_bytes(data)
    assert back.to_bytes() == data
    assert (back.chunk, back.count, back.n_same_top) == (7, n, int(v.same_top.sum()))
    assert back.sums == stats.sums
    np.testing.assert_array_equal(back.kld, v.kld.astype(np.float32))


def test_bytes_of_the_other_kind_or_cut_short_are_refused():
    rec = record().to_bytes()
    with pytest.raises(ValueError, match="magic"):
        ChunkStats.from_bytes(rec)
    with pytest.raises(ValueError):
        BaselineRecord.from_bytes(rec[:-4])
    with pytest.raises(ValueError, match="trailing"):
        BaselineRecord.from_bytes(rec + b"\0\0\0\0")
