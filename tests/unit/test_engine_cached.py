"""The cache wrapper: streamed and chunked computing, commits, resume, wrappers, and the
input tokens of computed answers (no model)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult, LoglikRequest, LoglikResult
from ggufbench.cache_key import cache_key
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger, NotOwner

JOB = "m/demo"


def answer(r: LoglikRequest) -> LoglikResult:
    """A pure function of the request, as the engine's answers are."""
    return LoglikResult(
        -float(len(r.context) * 7 + len(r.continuation)) / 3, len(r.context) % 2 == 0
    )


class Streaming:
    """A backend with the engine's streaming methods; can fail after some answers."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.info = BackendInfo("fake", "model-a", {"v": 1})
        self.fail_after = fail_after
        self.calls: list[list[LoglikRequest]] = []
        self.generation_width = 3

    def loglikelihood_iter(
        self, requests: Sequence[LoglikRequest]
    ) -> Iterator[tuple[int, LoglikResult]]:
        self.calls.append(list(requests))
        for n, i in enumerate(reversed(range(len(requests)))):  # its own order
            if self.fail_after is not None and n == self.fail_after:
                raise KeyboardInterrupt
            yield i, answer(requests[i])

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        raise AssertionError("the streaming method must be used")

    def generate_iter(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        for i, r in enumerate(requests):
            yield i, GenResult(r.prompt.upper(), "stop", 1, 2)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        raise AssertionError("the streaming method must be used")


class Chunked:
    """A backend without streaming: gets chunks."""

    def __init__(self) -> None:
        self.info = BackendInfo("fake", "model-b", {"v": 1})
        self.calls: list[list[str]] = []

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        self.calls.append([r.context for r in requests])
        return [answer(r) for r in requests]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        self.calls.append([r.prompt for r in requests])
        return [GenResult(r.prompt.upper(), "stop", 1, 2) for r in requests]


class Forwarding:
    """A wrapper that rewrites answers and forwards other attributes, like the thinking one."""

    def __init__(self, inner: Streaming) -> None:
        self.inner = inner
        self.info = inner.info

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return [GenResult("wrapped", "stop", 0, 1) for _ in requests]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow(JOB, "m", "demo", "lm_eval", {})])
    yield ledger
    ledger.close()


def wrap(backend: object, ledger: Ledger) -> CachedBackend:
    return CachedBackend(backend, ledger, ledger.owner() or ledger.claim(), JOB)  # type: ignore[arg-type]


def requests() -> list[LoglikRequest]:
    out = []
    for q in range(6):
        for choice in (" A", " B", " C"):
            out.append(LoglikRequest(f"shots\n\nquestion {q}?", choice))
    return out + [LoglikRequest("shots\n\nquestion 0?", " A")]  # a duplicate


def test_streaming_backend_gets_all_missing_requests_once_sorted(ledger: Ledger) -> None:
    backend = Streaming()
    reqs = requests()
    got = wrap(backend, ledger).loglikelihood(reqs)
    assert got == [answer(r) for r in reqs]
    (call,) = backend.calls
    assert len(call) == 18  # the duplicate computed once
    assert call == sorted(call, key=lambda r: (r.context, r.continuation))
    again = wrap(backend, ledger)
    assert again.loglikelihood(reqs) == got and len(backend.calls) == 1
    assert again.counts.from_cache == 19 and again.counts.computed == 0


def test_interrupted_stream_keeps_what_finished_and_resume_is_identical(ledger: Ledger) -> None:
    reqs = requests()
    reference = [answer(r) for r in reqs]
    first = wrap(Streaming(fail_after=7), ledger)
    with pytest.raises(KeyboardInterrupt):
        first.loglikelihood(reqs)
    assert first.counts.computed == 7  # committed although the call failed
    shuffled = list(reqs)
    random.Random(3).shuffle(shuffled)
    resumed_backend = Streaming()
    resumed = wrap(resumed_backend, ledger)
    got = resumed.loglikelihood(shuffled)
    assert got == [answer(r) for r in shuffled]
    assert dict(zip(shuffled, got, strict=True)) == dict(zip(reqs, reference, strict=True))
    assert len(resumed_backend.calls[0]) == 18 - 7
    assert resumed.counts.from_cache + resumed.counts.computed == len(reqs)


def test_chunked_backend_gets_whole_context_groups(ledger: Ledger) -> None:
    backend = Chunked()
    reqs = requests()
    assert wrap(backend, ledger).loglikelihood(reqs) == [answer(r) for r in reqs]
    seen = [c for call in backend.calls for c in call]
    assert len(seen) == 18
    for call in backend.calls:  # a context never split over two calls
        for context in set(call):
            assert sum(c == context for c in seen) == call.count(context)


def test_generation_streams_through_the_engine_and_chunks_elsewhere(ledger: Ledger) -> None:
    prompts = [GenRequest(prompt=p, max_tokens=8) for p in ("b", "a", "c", "a")]
    streamed = wrap(Streaming(), ledger).generate(prompts)
    assert [r.text for r in streamed] == ["B", "A", "C", "A"]
    chunked_backend = Chunked()
    chunked = wrap(chunked_backend, ledger)
    chunked.backend.info = BackendInfo("fake", "model-c", {})  # type: ignore[misc]
    assert [r.text for r in chunked.generate(prompts)] == ["B", "A", "C", "A"]
    assert chunked_backend.calls == [["a"], ["b"], ["c"]]  # width 1: one prompt per call


def test_a_forwarding_wrapper_is_never_bypassed(ledger: Ledger) -> None:
    inner = Streaming()
    inner.info = BackendInfo("fake", "model-d", {})
    out = wrap(Forwarding(inner), ledger).generate([GenRequest(prompt="x"), GenRequest(prompt="y")])
    assert [r.text for r in out] == ["wrapped", "wrapped"]


def committing() -> bool:
    return any(t.name == "ledger-commits" for t in threading.enumerate())


class TakenOver(Streaming):
    """Another driver claims the run while this backend computes its batch."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__()
        self.ledger = ledger
        self.answered = 0

    def generate_iter(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        self.ledger.claim()
        for i, r in enumerate(requests):
            self.answered += 1
            yield i, GenResult(r.prompt.upper(), "stop", 1, 2)
            give_up = time.monotonic() + 30  # the commit of answer 0 meets the new owner
            while i == 0 and committing() and time.monotonic() < give_up:
                time.sleep(0.01)


def test_a_run_taken_over_while_computing_stops_the_call_at_its_next_answer(
    ledger: Ledger,
) -> None:
    backend = TakenOver(ledger)
    with pytest.raises(NotOwner):
        wrap(backend, ledger).generate([GenRequest(prompt=p) for p in "abcd"])
    assert backend.answered == 2  # not the whole batch
    assert ledger.cache_count() == 0
    assert not committing()


class FakeReader:
    """A fake of the in-process engine's streaming methods that say what each answer read:
    one token per character of its request."""

    def __init__(self) -> None:
        self.info = BackendInfo("fake", "model-a", {"v": 1})
        self.scored: list[str] = []

    def loglikelihood_iter(
        self, requests: Sequence[LoglikRequest]
    ) -> Iterator[tuple[int, LoglikResult]]:
        for i, r in enumerate(requests):
            self.scored.append(r.context + r.continuation)
            n = len(r.context + r.continuation)
            yield i, LoglikResult(-float(n), True, len(r.continuation), n)

    def loglikelihood_rolling_iter(
        self, texts: Sequence[str]
    ) -> Iterator[tuple[int, LoglikResult]]:
        for i, text in enumerate(texts):
            self.scored.append(text)
            yield i, LoglikResult(-float(len(text)), False, len(text), len(text) + 1)


def test_only_computed_loglikelihood_answers_count(ledger: Ledger) -> None:
    first = wrap(FakeReader(), ledger)
    old = [LoglikRequest("ctx one", " a"), LoglikRequest("ctx two", " bb")]
    first.loglikelihood(old)
    assert first.counts.input_tokens == 9 + 10
    reader = FakeReader()
    second = wrap(reader, ledger)
    got = second.loglikelihood([*old, LoglikRequest("ctx three", " c")])
    assert reader.scored == ["ctx three c"]
    assert second.counts.input_tokens == 11  # the two cached answers add nothing
    assert (second.counts.from_cache, second.counts.computed) == (2, 1)
    assert [r.n_input_tokens for r in got] == [9, 10, 11]


def test_an_answer_cached_before_input_tokens_were_recorded_still_reads(ledger: Ledger) -> None:
    reader = FakeReader()
    request = LoglikRequest("ctx", " old")
    payload = {"context": "ctx", "continuation": " old"}
    key = cache_key(reader.info, "loglikelihood", payload)
    older = {"logprob": -2.5, "is_greedy": True, "n_tokens": 1}  # no n_input_tokens
    ledger.cache_put(ledger.claim(), [(key, "loglikelihood", "model-a", payload, older)])
    cached = wrap(reader, ledger)
    assert cached.loglikelihood([request]) == [LoglikResult(-2.5, True, 1, 0)]
    assert reader.scored == [] and cached.counts.input_tokens == 0


def test_rolling_counts_computed_texts_and_caches_the_logprob_alone(ledger: Ledger) -> None:
    first = wrap(FakeReader(), ledger)
    assert first.loglikelihood_rolling(["abc", "defgh"]) == [-3.0, -5.0]
    assert first.counts.input_tokens == 4 + 6
    key = cache_key(first.backend.info, "loglikelihood_rolling", {"text": "abc"})
    assert ledger.cache_get([key]) == {key: {"logprob": -3.0}}
    second = wrap(FakeReader(), ledger)
    assert second.loglikelihood_rolling(["abc", "xy"]) == [-3.0, -2.0]
    assert second.counts.input_tokens == 3
