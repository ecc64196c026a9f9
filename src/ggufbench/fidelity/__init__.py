"""Quantization fidelity: how far a variant's next-token distribution is from the baseline's.

llama-perplexity's KL-divergence figures (docs/fidelity.md), without its
full-vocabulary logit file: the baseline's pass keeps a compact record per chunk,
each variant's pass measures against it, and :func:`combine` makes the figures::

    tokens = fidelity.tokenize(base_rt, text)
    windows = fidelity.windows(tokens, 512, bos=fidelity.bos_of(base_rt))
    records = {w.index: fidelity.baseline_chunk(base_rt, w) for w in windows}
    stats = [fidelity.variant_chunk(rt, fidelity.window_of(r), r) for r in records.values()]
    figures = fidelity.combine(fidelity.ChunkStats.from_bytes(s) for s in stats)
"""

from __future__ import annotations

from pathlib import Path

from ggufbench.fidelity._chunks import (
    DEFAULT_TAIL_SAMPLES,
    DEFAULT_TOP_K,
    baseline_chunk,
    chunk_stats,
    variant_chunk,
    window_of,
)
from ggufbench.fidelity._corpus import (
    Window,
    bos_of,
    first_scored,
    read_text,
    skip_reason,
    text_sha256,
    tokenize,
    vocab_identity,
    windows,
)
from ggufbench.fidelity._keys import (
    BASELINE_KIND,
    FORMAT,
    INDEX_KIND,
    VARIANT_KIND,
    baseline_request,
    index_key,
    variant_request,
)
from ggufbench.fidelity._record import BaselineRecord, ChunkStats
from ggufbench.fidelity._stats import baseline_figures, combine, format_figures, percentile

__all__ = [
    "BASELINE_KIND",
    "DEFAULT_TAIL_SAMPLES",
    "DEFAULT_TOP_K",
    "FORMAT",
    "INDEX_KIND",
    "VARIANT_KIND",
    "BaselineRecord",
    "ChunkStats",
    "Window",
    "baseline_chunk",
    "baseline_figures",
    "baseline_request",
    "bos_of",
    "bundled_corpus",
    "chunk_stats",
    "combine",
    "first_scored",
    "format_figures",
    "index_key",
    "percentile",
    "read_text",
    "skip_reason",
    "text_sha256",
    "tokenize",
    "variant_chunk",
    "variant_request",
    "vocab_identity",
    "window_of",
    "windows",
]


def bundled_corpus() -> Path:
    """The small original corpus bundled for the demo and the tests (about 43 KB)."""
    return Path(__file__).resolve().parent.parent / "data" / "fidelity" / "corpus.txt"
