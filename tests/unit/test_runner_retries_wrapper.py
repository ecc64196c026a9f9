"""The cache wrapper is the one layer that retries: a backend's ``Retryable`` failure is
tried again there, with only the requests that have no answer yet, and every answer is
committed once (no model; HTTP through httpx.MockTransport, no sleeping)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult, Retryable, RetryPolicy
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger

JOB = "m/demo"


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow(JOB, "m", "demo", "lm_eval", {})])
    yield ledger
    ledger.close()


class Flaky:
    """A streaming backend whose connection drops once, after two answers."""

    def __init__(self, waits: list[float]) -> None:
        self.info = BackendInfo("fake-http", "model-a", {"v": 1})
        self.retry = RetryPolicy(retries=1, backoff_s=0.25, sleep=waits.append)
        self.asked: list[list[str]] = []

    def generate_iter(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        self.asked.append([r.prompt for r in requests])
        for k, request in enumerate(requests):
            if len(self.asked) == 1 and k == 2:
                raise Retryable("the connection to http://x failed (ReadError)")
            yield k, GenResult(request.prompt.upper(), "stop", 1, 1)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        raise AssertionError("the streaming method must be used")


def test_a_dropped_stream_is_resumed_with_the_unanswered_requests(ledger: Ledger) -> None:
    waits: list[float] = []
    backend = Flaky(waits)
    cached = CachedBackend(backend, ledger, ledger.claim(), JOB)  # type: ignore[arg-type]
    prompts = [f"p{i}" for i in range(5)]
    results = cached.generate([GenRequest(prompt=p) for p in prompts])
    assert [r.text for r in results] == [p.upper() for p in prompts]
    assert backend.asked == [prompts, prompts[2:]] and waits == [0.25]
    assert cached.counts.computed == 5


def test_an_http_backends_503_is_retried_by_the_wrapper(ledger: Ledger) -> None:
    script = [httpx.Response(503, headers={"Retry-After": "3"})]
    script.append(httpx.Response(200, json={"choices": [{"text": " 2"}]}))
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return script.pop(0)

    waits: list[float] = []
    backend = OpenAIBackend(
        "http://judge.test/v1", "m", transport=httpx.MockTransport(handler), sleep=waits.append
    )
    cached = CachedBackend(backend, ledger, ledger.claim(), JOB)
    (result,) = cached.generate([GenRequest(prompt="1 + 1 =")])
    assert result.text == " 2" and waits == [3.0] and len(seen) == 2
    assert json.loads(seen[1].content)["prompt"] == "1 + 1 ="
