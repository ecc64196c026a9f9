"""Input tokens on the real SmolLM2: what the in-process backend says it read for each
loglikelihood request and rolling text, against the tokenizer's own count."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufbench.backends._base import LoglikRequest
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger
from ggufbench.testmodels import smollm2_path

N_CTX = 64
STORY = "A woman pours batter into a hot pan. When bubbles form on top, she"
REQUESTS = [
    LoglikRequest(STORY, " flips the pancake."),
    LoglikRequest(STORY + " ", "reads the newspaper."),  # the space moves to the continuation
    LoglikRequest("Question: 2 + 2 =\nAnswer:", " 4"),
    LoglikRequest(" ".join([STORY] * 6), " flips it."),  # longer than n_ctx: truncated
]
TEXT = " ".join(f"Paragraph {n} of a plain text that is read in windows." for n in range(20))


@pytest.fixture(scope="module")
def backend() -> Iterator[LlamaCppBackend]:
    model = LlamaCppBackend(smollm2_path(), n_ctx=N_CTX, n_batch=N_CTX)
    yield model
    model.close()


def read_tokens(backend: LlamaCppBackend, r: LoglikRequest) -> int:
    """The tokens of context + continuation, at most n_ctx + 1 (lm-eval's truncation)."""
    return min(len(backend.tokenize(r.context + r.continuation)), N_CTX + 1)


def rolling_tokens(backend: LlamaCppBackend, text: str) -> int:
    """A text of at least n_ctx tokens is scored n_ctx tokens a window, and each window
    reads n_ctx + 1 tokens: the first from the prefix token, each later one from the
    tokens before it (lm-eval's rolling windows, made disjoint)."""
    n = len(backend.tokenize(text, add_bos=False))
    assert n >= N_CTX
    return math.ceil(n / N_CTX) * (N_CTX + 1)


def test_loglikelihood_input_tokens_are_context_and_continuation(backend) -> None:
    results = backend.loglikelihood(REQUESTS)
    assert [r.n_input_tokens for r in results] == [read_tokens(backend, r) for r in REQUESTS]
    assert results[-1].n_input_tokens == N_CTX + 1  # the long one was cut


def test_rolling_input_tokens_are_what_its_windows_read(backend) -> None:
    n = len(backend.tokenize(TEXT, add_bos=False))
    assert n > 2 * N_CTX and n % N_CTX  # several windows, the last one part full
    ((_, result),) = backend.loglikelihood_rolling_iter([TEXT])
    assert result.n_tokens == n
    assert result.n_input_tokens == rolling_tokens(backend, TEXT)
    assert backend.loglikelihood_rolling([TEXT]) == [result.logprob]


def test_a_job_counts_the_tokens_of_computed_requests_only(backend, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow("m/demo", "m", "demo", "lm_eval", {})])
    owner = ledger.claim()
    first = CachedBackend(backend, ledger, owner, "m/demo")
    first.loglikelihood(REQUESTS[:2])
    first.loglikelihood_rolling([TEXT])
    computed = sum(read_tokens(backend, r) for r in REQUESTS[:2])
    assert first.counts.input_tokens == computed + rolling_tokens(backend, TEXT)
    again = CachedBackend(backend, ledger, owner, "m/demo")
    again.loglikelihood(REQUESTS)
    again.loglikelihood_rolling([TEXT])
    assert again.counts.input_tokens == sum(read_tokens(backend, r) for r in REQUESTS[2:])
    ledger.close()
