"""The engine on real models: answers are a pure function of the request.

Order, company, splitting over calls and an interruption with resume must not
change a single bit; scores agree with a straightforward evaluation; BOS is
handled per model; batched generation equals generating each prompt alone.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from ggufbench.backends._base import GenRequest, LoglikRequest, LoglikResult
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.cached import CachedBackend
from ggufbench.engine import segment_ends, segments
from ggufbench.ledger import JobRow, Ledger
from ggufbench.testmodels import gemma_path, smollm2_path

SHOTS = (
    "The following are multiple choice questions (with answers) about kitchen science.\n\n"
    "Why does bread go stale?\nA. heat\nB. water moves out of the starch\nC. light\n"
    "D. salt\nAnswer: B\n\n"
)
QUESTIONS = [
    "Why do onions make eyes water?\nA. heat\nB. a sulfur gas\nC. salt\nD. sugar\nAnswer:",
    "Why is a copper pan fast to heat?\nA. it is heavy\nB. it conducts heat well\nC. it is "
    "red\nD. it is thin\nAnswer:",
]
STORIES = [
    (
        "A man is standing on a ladder against a roof. He",
        [" climbs up and removes shingles.", " sings to the neighbours."],
    ),
    (
        "A woman pours batter into a hot pan. She",
        [" flips the pancake when bubbles form.", " reads the newspaper."],
    ),
]


def loglik_requests() -> list[LoglikRequest]:
    out = [LoglikRequest(SHOTS + q, f" {c}") for q in QUESTIONS for c in "ABCD"]
    out += [LoglikRequest(ctx, e) for ctx, endings in STORIES for e in endings]
    out.append(LoglikRequest("", "An empty context is scored after the prefix token."))
    return out


@pytest.fixture(scope="module", params=["smollm2", "gemma"])
def backend(request: pytest.FixtureRequest) -> Iterator[LlamaCppBackend]:
    path = smollm2_path() if request.param == "smollm2" else gemma_path()
    model = LlamaCppBackend(path, n_ctx=1024, n_batch=512)
    yield model
    model.close()


def test_loglikelihood_is_independent_of_order_company_and_calls(backend) -> None:
    reqs = loglik_requests()
    full = dict(zip(reqs, backend.loglikelihood(reqs), strict=True))
    shuffled = list(reqs)
    random.Random(7).shuffle(shuffled)
    assert dict(zip(shuffled, backend.loglikelihood(shuffled), strict=True)) == full
    half = len(reqs) // 2
    split = backend.loglikelihood(shuffled[:half]) + backend.loglikelihood(shuffled[half:])
    assert dict(zip(shuffled, split, strict=True)) == full
    for r in (reqs[5], reqs[-2]):
        assert backend.loglikelihood([r]) == [full[r]]


class Interrupting:
    """The real backend, stopped after some answers as a kill would stop it."""

    def __init__(self, inner: LlamaCppBackend, after: int) -> None:
        self.inner, self.info, self.after = inner, inner.info, after

    def loglikelihood_iter(
        self, requests: Sequence[LoglikRequest]
    ) -> Iterator[tuple[int, LoglikResult]]:
        for n, item in enumerate(self.inner.loglikelihood_iter(requests)):
            if n == self.after:
                raise KeyboardInterrupt
            yield item


def test_interrupted_and_resumed_through_the_ledger_is_bit_identical(
    backend, tmp_path: Path
) -> None:
    reqs = loglik_requests()
    reference = backend.loglikelihood(reqs)
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {})])
    owner = ledger.claim()
    try:
        with pytest.raises(KeyboardInterrupt):
            CachedBackend(Interrupting(backend, 5), ledger, owner, "m/t").loglikelihood(reqs)  # type: ignore[arg-type]
        shuffled = list(reqs)
        random.Random(1).shuffle(shuffled)
        resumed = CachedBackend(backend, ledger, owner, "m/t")
        got = resumed.loglikelihood(shuffled)
        assert resumed.counts.from_cache >= 5
        assert dict(zip(shuffled, got, strict=True)) == dict(zip(reqs, reference, strict=True))
    finally:
        ledger.close()


def scratch(
    backend: LlamaCppBackend, request: LoglikRequest, by_segments: bool
) -> tuple[float, bool]:
    """Decode context + continuation from position 0, plainly; log-softmax in f64.

    ``by_segments``: one micro-batch per segment of the chunking rule, else one for all.
    """
    ctx, cont = backend._encode_pair(request.context, request.continuation)
    seq = ctx + cont
    rt = backend.rt
    rt.use(1, rt.n_ctx)
    n = len(seq) - 1
    ends = segment_ends(seq[:-1], grid=512, marks=(len(ctx),), shape=backend._shape)
    rows: list[np.ndarray] = []
    for lo, hi in segments(ends if by_segments else [n]):
        want = [p - lo for p in range(max(lo, len(ctx) - 1), hi)]
        rows += list(rt.decode(seq[lo:hi], range(lo, hi), [0] * (hi - lo), want).astype(float))
    lp = np.array(rows)
    lp -= lp.max(axis=1, keepdims=True)
    lp -= np.log(np.exp(lp).sum(axis=1, keepdims=True))
    total = sum(lp[i, t] for i, t in enumerate(cont))
    return float(total), all(int(lp[i].argmax()) == t for i, t in enumerate(cont))


def test_scores_are_the_plain_computation_of_the_chunking_rule(backend) -> None:
    reqs = loglik_requests()[:4] + loglik_requests()[8:10]
    got = backend.loglikelihood(reqs)
    for g, r in zip(got, reqs, strict=True):
        lp, greedy = scratch(backend, r, by_segments=True)
        assert abs(g.logprob - lp) < 1e-6 and g.is_greedy == greedy
    # One micro-batch for the whole request: other shapes, other rounding, so close but
    # not equal; which choice wins a near tie is the CPU kernels' call, so it is not checked.
    ref = [scratch(backend, r, by_segments=False) for r in reqs]
    per_token = [abs(g.logprob - lp) / g.n_tokens for g, (lp, _) in zip(got, ref, strict=True)]
    assert max(per_token) < 0.2


def test_bos_and_every_continuation_token_is_scored(backend) -> None:
    ctx, cont = backend._encode_pair("A man is standing on a ladder.", " He climbs up.")
    assert (ctx[0] == backend.rt.bos) == backend.add_bos
    assert ("gemma" in backend.path.name) == backend.add_bos
    (result,) = backend.loglikelihood([LoglikRequest("A man is standing on a ladder.", " He")])
    assert result.n_tokens == 1 and result.logprob < 0
    (longer,) = backend.loglikelihood(
        [LoglikRequest("A man is standing on a ladder.", " He climbs up.")]
    )
    assert longer.n_tokens == len(cont) and longer.logprob < result.logprob


def test_batched_generation_equals_each_prompt_alone(backend) -> None:
    prompts = [GenRequest(prompt=SHOTS + q, max_tokens=8, stop=("\n\n",)) for q in QUESTIONS] + [
        GenRequest(prompt="Q: What is 2 + 3?\nA:", max_tokens=6, stop=("Q:",))
    ]
    together = backend.generate(prompts)
    assert backend.generation_width >= 1
    for request, result in zip(prompts, together, strict=True):
        assert backend.generate([request]) == [result]
        assert result.n_tokens <= request.max_tokens
        assert "\n\n" not in result.text
        assert result.finish_reason in ("stop", "length")
    reordered = backend.generate(prompts[::-1])
    assert reordered[::-1] == together


def test_streams_freed_out_of_order_keep_every_generation_unchanged(
    backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # More prompts than streams, ending at scattered steps: streams free out of order,
    # take waiting prompts, then the last ones are moved together (_generate._compact).
    prompts = [
        GenRequest(prompt=f"Count slowly from {i} to {i + 20}:", max_tokens=2 + (i * 7) % 11)
        for i in range(12)
    ]
    moves: list[tuple[int, int]] = []
    move = backend.rt.move
    monkeypatch.setattr(
        backend.rt, "move", lambda src, dst: (moves.append((src, dst)), move(src, dst))
    )
    together = backend.generate(prompts)
    # Unless the model ends a text early (its own choice), every prompt runs to its
    # max_tokens, and with 4 or more streams these lengths free streams out of order.
    if backend.generation_width >= 4 and all(r.finish_reason == "length" for r in together):
        assert moves and all(dst < src for src, dst in moves)
    assert all(r.n_tokens <= p.max_tokens for p, r in zip(prompts, together, strict=True))
    for request, result in zip(prompts, together, strict=True):
        assert backend.generate([request]) == [result]


def test_rolling_loglikelihood_is_per_text(backend) -> None:
    texts = ["One two three four. " * 20, "A short page."]
    both = backend.loglikelihood_rolling(texts)
    assert [backend.loglikelihood_rolling([t])[0] for t in texts] == both
    assert all(x < 0 for x in both)
