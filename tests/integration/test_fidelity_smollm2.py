"""Fidelity on the real SmolLM2 pair: the compact record against the full vocabulary.

The baseline is SmolLM2-135M Q4_1; the variant is derived from it with llama.cpp's
quantizer (Q4_K_M). The reference is computed here from the full logit rows of both
models at the scored positions, in float64 over the whole vocabulary.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from ggufbench import fidelity
from ggufbench.engine import Runtime, default_threads
from ggufbench.fidelity._chunks import _scored_blocks
from ggufbench.testmodels import derived_path, gemma_path, smollm2_path

N_CTX = 512
CHUNKS = 2


def runtime(path: Path) -> Runtime:
    return Runtime(path, n_ctx=N_CTX, n_batch=N_CTX, n_threads=default_threads(), n_gpu_layers=0)


@pytest.fixture(scope="module")
def base() -> Iterator[Runtime]:
    rt = runtime(smollm2_path())
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def variant() -> Iterator[Runtime]:
    rt = runtime(derived_path(smollm2_path(), "Q4_K_M"))
    yield rt
    rt.close()


@pytest.fixture(scope="module")
def windows(base: Runtime) -> list[fidelity.Window]:
    text = fidelity.read_text(fidelity.bundled_corpus())
    return fidelity.windows(fidelity.tokenize(base, text), N_CTX, CHUNKS, bos=fidelity.bos_of(base))


@pytest.fixture(scope="module")
def records(base: Runtime, windows: list[fidelity.Window]) -> dict[int, bytes]:
    return {w.index: fidelity.baseline_chunk(base, w) for w in windows}


def full_log_probs(rt: Runtime, window: fidelity.Window) -> np.ndarray:
    rows = np.concatenate([np.array(block) for _, block in _scored_blocks(rt, window.tokens)])
    x = rows.astype(np.float64)
    peak = x.max(axis=1, keepdims=True)
    return x - peak - np.log(np.exp(x - peak).sum(axis=1, keepdims=True))


def test_compact_record_figures_equal_the_full_vocabulary_ones(base, variant, windows, records):
    stats = [fidelity.variant_chunk(variant, w, records[w.index]) for w in windows]
    f = fidelity.combine(fidelity.ChunkStats.from_bytes(s) for s in stats)

    kld, nll, nll_base, same = [], [], [], []
    for w in windows:
        lp, lq = full_log_probs(base, w), full_log_probs(variant, w)
        rows = np.arange(len(w.targets))
        kld.append((np.exp(lp) * (lp - lq)).sum(axis=1))
        nll.append(-lq[rows, w.targets])
        nll_base.append(-lp[rows, w.targets])
        same.append(lp.argmax(axis=1) == lq.argmax(axis=1))
    exact = np.concatenate(kld)
    n = len(exact)
    assert f["n_tokens"] == n == CHUNKS * (N_CTX - 1 - N_CTX // 2)

    # KLD: within the stated bound, four standard errors of the tail draws
    bound = 4 * f["kld_sampling_stderr"]
    assert abs(f["kld"]["value"] - exact.mean()) <= bound + 1e-7
    assert bound < 0.01 * exact.mean()
    # everything else is exact
    assert f["ppl"]["value"] == pytest.approx(math.exp(np.concatenate(nll).mean()), rel=1e-6)
    assert f["ppl_base"]["value"] == pytest.approx(
        math.exp(np.concatenate(nll_base).mean()), rel=1e-6
    )
    assert f["same_top_p"]["value"] == pytest.approx(np.concatenate(same).mean(), abs=1e-12)
    p_diff = np.exp(-np.concatenate(nll)) - np.exp(-np.concatenate(nll_base))
    assert f["rms_delta_p"]["value"] == pytest.approx(math.sqrt(np.mean(p_diff**2)), rel=1e-5)
    assert f["kld_percentiles"]["max"] == pytest.approx(exact.max(), rel=0.05)


def test_chunks_in_another_order_and_again_give_the_same_bytes(base, variant, windows, records):
    first = records
    again = {w.index: fidelity.baseline_chunk(base, w) for w in reversed(windows)}
    assert first == again
    # a variant's pass needs only the records: they hold their chunks' tokens
    assert [fidelity.window_of(first[w.index]).tokens.tolist() for w in windows] == [
        w.tokens.tolist() for w in windows
    ]
    forward = [fidelity.variant_chunk(variant, w, first[w.index]) for w in windows]
    backward = [fidelity.variant_chunk(variant, w, again[w.index]) for w in reversed(windows)]
    assert forward == backward[::-1]

    def figures(stats: list[bytes]) -> str:
        return json.dumps(fidelity.combine(fidelity.ChunkStats.from_bytes(s) for s in stats))

    assert figures(forward) == figures(backward)


def test_a_model_with_another_tokenizer_is_skipped(base, variant):
    base_vocab = fidelity.vocab_identity(base)
    assert fidelity.vocab_identity(variant) == base_vocab
    other = runtime(gemma_path())
    try:
        reason = fidelity.skip_reason(
            "gemma", "smollm2", fidelity.vocab_identity(other), base_vocab
        )
    finally:
        other.close()
    assert reason is not None and "tokenizer" in reason
