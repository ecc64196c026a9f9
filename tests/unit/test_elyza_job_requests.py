"""Requests of the ELYZA job: time limits, retries, concurrency and the cache."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult
from ggufbench.benchmarks.elyza_requests import (
    DEADLINE_GRACE_S,
    Pace,
    RequestRunner,
    apply_time_limit,
    base_backend,
)
from ggufbench.cached import CachedBackend
from ggufbench.errors import BackendError, BackendTimeout
from ggufbench.ledger import JobRow, Ledger

JOB = "m/elyza_tasks_100"
Script = Callable[[GenRequest, int], str | Exception]


class ScriptedModel:
    """A fake backend: ``script(request, call_number)`` gives its text or an exception."""

    def __init__(
        self,
        script: Script,
        *,
        concurrency: int | None = None,
        delay_s: float = 0.0,
        ledger: Ledger | None = None,
    ) -> None:
        self.info = BackendInfo("fake", "scripted-model", {"v": 1})
        self.script = script
        self.delay_s = delay_s
        self.ledger = ledger
        if concurrency is not None:
            self.concurrency = concurrency
        self.time_limit_s: float | None = None
        self.calls: list[tuple[str, float | None, float | None]] = []  # prompt, limit, deadline
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        (request,) = requests
        deadline = self.ledger.job(JOB).deadline if self.ledger is not None else None
        with self._lock:
            number = sum(1 for c in self.calls if c[0] == request.prompt)
            self.calls.append((request.prompt, self.time_limit_s, deadline))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay_s)
            out = self.script(request, number)
        finally:
            with self._lock:
                self.in_flight -= 1
        if isinstance(out, Exception):
            raise out
        return [GenResult(out, "stop", 3, 10)]

    def close(self) -> None:
        pass


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow(JOB, "m", "elyza_tasks_100", "elyza_tasks_100", {})])
    yield ledger
    ledger.close()


def cached(backend: ScriptedModel, ledger: Ledger) -> CachedBackend:
    return CachedBackend(backend, ledger, ledger.owner() or ledger.claim(), JOB)  # type: ignore[arg-type]


def test_pace_limits_follow_max_tokens_measured_speed_and_attempts() -> None:
    pace = Pace.for_generation()
    long, short = GenRequest(max_tokens=1024), GenRequest(max_tokens=16)
    assert pace.limit_s(long) == 512.0  # 2 tokens/s until measured
    assert pace.limit_s(short) == 60.0  # the floor
    assert pace.limit_s(long, attempt=2) == 2048.0  # doubled per retry
    pace.observe(GenResult("x", "stop", n_tokens=100), 2.0)  # 50 tokens/s
    assert pace.limit_s(long) == pytest.approx(4 * 1024 / 50)
    pace.observe(GenResult("", "stop", n_tokens=0, thinking={"length": 400}), 1.0)
    assert pace.units_done == 200  # usage unknown: about 4 characters a token
    assert Pace.for_generation(fixed_s=30).limit_s(long, attempt=2) == 30.0
    judge = Pace.for_judge()
    assert judge.limit_s(short) == 300.0
    judge.observe(GenResult("4", "stop"), 40.0)
    assert judge.limit_s(long) == 160.0  # per request, whatever max_tokens says


def test_a_timeout_is_retried_with_more_time_then_only_that_sample_fails(
    ledger: Ledger,
) -> None:
    def script(request: GenRequest, call: int) -> str | Exception:
        if request.prompt == "slow" or (request.prompt == "flaky" and call == 0):
            return BackendTimeout(f"{request.prompt} took too long")
        return f"answer to {request.prompt}"

    model = ScriptedModel(script, ledger=ledger)
    runner = RequestRunner(cached(model, ledger), Pace.for_generation(), attempts=3)
    seen: list[int] = []
    requests = [GenRequest(p, max_tokens=200) for p in ("fast", "slow", "flaky")]
    fast, slow, flaky = runner.run(requests, on_outcome=lambda i, _: seen.append(i))
    assert isinstance(fast, GenResult) and fast.text == "answer to fast"
    assert isinstance(slow, BackendTimeout) and "slow took too long" in str(slow)
    assert isinstance(flaky, GenResult) and flaky.text == "answer to flaky"
    assert seen == [0, 1, 2]
    limits = [limit for prompt, limit, _ in model.calls if prompt == "slow"]
    assert len(limits) == 3 and limits[1] == 2 * limits[0] and limits[2] == 4 * limits[0]
    # the deadline the orchestrator enforces leaves the backend's own limit room to fire
    for _, limit, deadline in model.calls:
        assert limit is not None and deadline is not None
        assert deadline - time.time() > limit + DEADLINE_GRACE_S / 2
    stats = runner.stats
    assert (stats.total, stats.computed, stats.from_cache, stats.failed) == (3, 2, 0, 1)
    assert stats.retried == 3 and stats.gen_tokens == 20
    assert ledger.job(JOB).deadline is None  # cleared once the requests ended
    assert (ledger.job(JOB).done, ledger.job(JOB).total) == (3, 3)

    again = ScriptedModel(lambda r, c: "recomputed", ledger=ledger)
    rerun = RequestRunner(cached(again, ledger), Pace.for_generation(), attempts=1)
    outcomes = rerun.run(requests)
    assert [o.text for o in outcomes if isinstance(o, GenResult)] == [
        "answer to fast",
        "recomputed",
        "answer to flaky",
    ]
    assert [c[0] for c in again.calls] == ["slow"]  # only what had failed
    assert (rerun.stats.from_cache, rerun.stats.computed) == (2, 1)


def test_parallel_requests_are_committed_as_they_arrive_and_failures_stay_in_place(
    ledger: Ledger,
) -> None:
    def script(request: GenRequest, call: int) -> str | Exception:
        if request.prompt == "broken":
            return BackendError("the server answered HTTP 400")
        return request.prompt.upper()

    model = ScriptedModel(script, concurrency=3, delay_s=0.05)
    runner = RequestRunner(cached(model, ledger), Pace.for_judge(), attempts=2, concurrency=3)
    prompts = ["a", "b", "broken", "c", "a", "d", "e", "f"]
    outcomes = runner.run([GenRequest(p) for p in prompts])
    texts = [o.text if isinstance(o, GenResult) else None for o in outcomes]
    assert texts == ["A", "B", None, "C", "A", "D", "E", "F"]
    assert 2 <= model.most_in_flight <= 3
    assert sorted(c[0] for c in model.calls).count("a") == 1  # the same request computed once
    assert sorted(c[0] for c in model.calls).count("broken") == 2  # tried twice
    assert ledger.cache_count() == 6
    stats = runner.stats
    assert (stats.total, stats.computed, stats.from_cache, stats.failed) == (8, 6, 1, 1)

    rerun_model = ScriptedModel(script, concurrency=3)
    rerun = RequestRunner(cached(rerun_model, ledger), Pace.for_judge(), concurrency=3)
    assert [o.text for o in rerun.run([GenRequest(p) for p in "abcdef"])] == list("ABCDEF")
    assert rerun_model.calls == [] and rerun.stats.from_cache == 6


def test_time_limits_reach_the_backend_under_its_wrappers() -> None:
    class Wrapper:
        def __init__(self, inner: object) -> None:
            self.inner = inner

    model = ScriptedModel(lambda r, c: "")
    apply_time_limit(Wrapper(Wrapper(model)), 42.0)
    assert model.time_limit_s == 42.0 and base_backend(Wrapper(model)) is model

    from ggufbench.backends.openai_http import OpenAIBackend

    with OpenAIBackend("http://127.0.0.1:9/v1", "m") as http:
        apply_time_limit(http, 7.5)
        assert http.timeout_s == 7.5 and http._client.timeout.read == 7.5
