"""One chunk on llama.cpp: the baseline's pass keeps a record, a variant's pass measures.

A chunk is decoded from an empty KV cache in micro-batches of the runtime's
``n_batch``, all ``n_ctx`` tokens as llama-perplexity decodes them (the last one
is only a target, but llama.cpp's kernels give other numbers for some micro-batch
sizes, docs/engine.md), with logits only at the scored positions (``n_ctx // 2``
to ``n_ctx - 2``). Each micro-batch's rows are reduced at once (llama.cpp's logits
buffer is reused by the next decode), so memory stays at llama.cpp's buffer of at
most ``min(n_batch, n_ctx / 2)`` rows of the vocabulary plus one scratch row.

A chunk's result depends only on the model, the context settings and the chunk's
tokens: chunks may be computed in any order, in any process, and again.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import numpy.typing as npt

from ggufbench.engine import Runtime
from ggufbench.fidelity._corpus import Window, first_scored
from ggufbench.fidelity._record import BaselineRecord, ChunkStats
from ggufbench.fidelity._rows import TokenValues, baseline_rows, variant_rows

__all__ = [
    "DEFAULT_TAIL_SAMPLES",
    "DEFAULT_TOP_K",
    "baseline_chunk",
    "chunk_stats",
    "variant_chunk",
    "window_of",
]

# Per scored token the baseline keeps its DEFAULT_TOP_K most likely tokens and
# DEFAULT_TAIL_SAMPLES draws from the rest: 8 * (256 + 256) + 24 = 4120 bytes.
# docs/fidelity.md gives the measured error of the mean KLD for other choices.
DEFAULT_TOP_K = 256
DEFAULT_TAIL_SAMPLES = 256


def _scored_blocks(rt: Runtime, tokens: npt.NDArray[np.int32]) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a window; yield (first scored row, logits) for each micro-batch with outputs."""
    n = len(tokens)
    first, last = first_scored(n), n - 2  # positions whose logits are read
    # Whole-window micro-batches run fastest on every thread: no single-thread trials.
    rt.use(1, n, threads=rt.n_threads)
    for start in range(0, n, rt.n_batch):
        end = min(n, start + rt.n_batch)
        lo, hi = max(start, first), min(end, last + 1)
        outputs = range(lo - start, hi - start) if lo < hi else range(0)
        logits = rt.decode(
            tokens[start:end].tolist(), range(start, end), [0] * (end - start), outputs
        )
        if lo < hi:
            yield lo - first, logits


def baseline_chunk(
    rt: Runtime,
    window: Window,
    top_k: int = DEFAULT_TOP_K,
    tail_samples: int = DEFAULT_TAIL_SAMPLES,
) -> bytes:
    """The baseline's compact record of one chunk.

    ``8 (top_k + tail_samples) + 24`` bytes per scored token.

    The tail draws are seeded by the chunk's tokens, so a chunk computed again gives
    the same bytes.
    """
    targets = window.targets
    seed = hashlib.sha256(window.tokens.astype("<i4").tobytes()).digest()
    parts = [
        baseline_rows(
            logits, targets[row : row + len(logits)], top_k, tail_samples, seed=seed, offset=row
        )
        for row, logits in _scored_blocks(rt, window.tokens)
    ]
    record = BaselineRecord.concat(parts)
    return replace(record, chunk=window.index, window=window.tokens.copy()).to_bytes()


def window_of(baseline_record: bytes) -> Window:
    """The chunk a baseline record was made of: what a variant's pass decodes."""
    record = BaselineRecord.from_bytes(baseline_record)
    return Window(record.chunk, record.window)


def variant_chunk(rt: Runtime, window: Window, baseline_record: bytes) -> bytes:
    """A variant's statistics of one chunk against the baseline's record (bytes)."""
    base = BaselineRecord.from_bytes(baseline_record)
    if base.chunk != window.index or not np.array_equal(base.window, window.tokens):
        raise ValueError(f"the baseline record of chunk {base.chunk} is of other tokens")
    parts = [variant_rows(logits, base, row) for row, logits in _scored_blocks(rt, window.tokens)]
    return chunk_stats(window.index, TokenValues.concat(parts)).to_bytes()


def _fsum(values: npt.NDArray[np.float64]) -> float:
    # Exactly rounded, so a sum never depends on numpy's summation order.
    return math.fsum(values.tolist())


def chunk_stats(chunk: int, v: TokenValues) -> ChunkStats:
    """The sums of perplexity.cpp's ``kl_divergence_result`` over one chunk's tokens."""
    p_diff = v.p_diff
    p_diff2 = p_diff * p_diff
    sums = {
        "sum_nll": _fsum(v.nll),
        "sum_nll2": _fsum(v.nll * v.nll),
        "sum_nll_base": _fsum(v.nll_base),
        "sum_nll_base2": _fsum(v.nll_base * v.nll_base),
        "sum_nll_nll_base": _fsum(v.nll * v.nll_base),
        "sum_kld": _fsum(v.kld),
        "sum_kld2": _fsum(v.kld * v.kld),
        "sum_p_diff": _fsum(p_diff),
        "sum_p_diff2": _fsum(p_diff2),
        "sum_p_diff4": _fsum(p_diff2 * p_diff2),
        "sum_tail_mass": _fsum(v.tail_mass),
        "sum_tail_var": _fsum(v.tail_var),
    }
    return ChunkStats(
        chunk=chunk,
        count=len(v.nll),
        n_same_top=int(v.same_top.sum()),
        sums=sums,
        kld=v.kld.astype(np.float32),
        p_diff=p_diff.astype(np.float32),
    )
