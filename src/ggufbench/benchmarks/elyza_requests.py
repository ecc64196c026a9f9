"""Requests of the ELYZA job: time limits from measured speed, retries, concurrency.

Every request goes through the run's ledger cache. A request that is not
cached is computed with a time limit that follows the speed measured so far
(:class:`Pace`); when it fails it is tried again with twice the limit, and after
its attempts it ends as a :class:`BackendError` *in its place*: one slow answer
fails one sample, never the benchmark.

Two ways to compute, one result:

- In-process backends compute on the calling thread through the cache wrapper
  (:class:`~ggufbench.cached.CachedBackend`), which publishes a deadline that
  the orchestrator enforces should the process hang. The deadline is set from
  the same limit (:class:`RequestDeadlines`), with room to spare, so the
  backend's own limit always fires first.
- Backends that serve requests in parallel (HTTP, ``concurrency`` > 1) keep up
  to that many requests in flight on worker threads. The ledger is only touched
  from the calling thread, which hands each answer to a cache wrapper the
  moment it arrives, so it is committed before the next one is waited for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from typing import Any, cast

from ggufbench import retries
from ggufbench.backends._base import Backend, GenRequest, GenResult, NotSupported
from ggufbench.cache_key import cache_key
from ggufbench.cached import CachedBackend, Timing
from ggufbench.errors import BackendError

__all__ = [
    "Outcome",
    "Pace",
    "RequestDeadlines",
    "RequestRunner",
    "RequestStats",
    "apply_time_limit",
    "base_backend",
]

Outcome = GenResult | BackendError
"""A request's answer, or why it has none after all its attempts."""

DEADLINE_MARGIN = 1.5
DEADLINE_GRACE_S = 30.0


@dataclass
class Pace:
    """Per-request time limits that follow the speed measured so far.

    Speed is measured in units per second: generated tokens for a model
    (``per_request`` False, the limit scales with ``max_tokens``), whole
    requests for a judge (``per_request`` True, its time is mostly the prompt).
    The limit is ``factor`` times the expected time, at least ``floor_s``;
    before anything was measured it is ``first_s_per_unit`` per unit. Each retry
    doubles it. ``fixed_s`` (the suite's ``request_timeout_s``) replaces all that.
    """

    floor_s: float
    first_s_per_unit: float
    per_request: bool = False
    factor: float = 4.0
    fixed_s: float | None = None
    units_done: float = 0.0
    seconds_spent: float = 0.0

    @classmethod
    def for_generation(cls, fixed_s: float | None = None) -> Pace:
        """A model answering: at least 60 s, 2 tokens/s assumed until measured."""
        return cls(floor_s=60.0, first_s_per_unit=0.5, fixed_s=fixed_s)

    @classmethod
    def for_judge(cls, fixed_s: float | None = None) -> Pace:
        """A judge grading: at least 60 s, 300 s per request until measured."""
        return cls(floor_s=60.0, first_s_per_unit=300.0, per_request=True, fixed_s=fixed_s)

    def limit_s(self, request: GenRequest, attempt: int = 0) -> float:
        """Seconds ``request`` may take on its ``attempt``-th try (from 0)."""
        if self.fixed_s is not None:
            return self.fixed_s
        units = 1.0 if self.per_request else float(max(1, request.max_tokens))
        if self.units_done > 0 and self.seconds_spent > 0:
            expected = units * self.seconds_spent / self.units_done
            base = max(self.floor_s, self.factor * expected)
        else:
            base = max(self.floor_s, units * self.first_s_per_unit)
        return base * 2**attempt

    def observe(self, result: GenResult, seconds: float) -> None:
        """Count one computed answer (answers from the cache say nothing about speed)."""
        units = 1.0 if self.per_request else float(_tokens_of(result))
        if units > 0 and seconds > 0:
            self.units_done += units
            self.seconds_spent += seconds


def _tokens_of(result: GenResult) -> int:
    """Generated tokens, estimated from characters when the server did not say."""
    if result.n_tokens > 0:
        return result.n_tokens
    chars = len(result.text) + int((result.thinking or {}).get("length") or 0)
    return max(1, chars // 4)


class RequestDeadlines(Timing):
    """The deadline the cache wrapper publishes: the current limit with room to spare."""

    def __init__(self) -> None:
        super().__init__()
        self.limit_s = 0.0

    def deadline(self, kind: str, units: float, n_requests: int) -> float:
        per_request = self.limit_s * DEADLINE_MARGIN + DEADLINE_GRACE_S
        return time.time() + per_request * max(1, n_requests)

    def observe(self, kind: str, units: float, seconds: float) -> None:
        """Speed is measured by :class:`Pace`, in generated tokens."""


def base_backend(backend: Any) -> Any:
    """The backend under its wrappers (the thinking wrapper, the choice judge)."""
    while (inner := getattr(backend, "inner", None)) is not None:
        backend = inner
    return backend


def apply_time_limit(backend: Any, seconds: float) -> None:
    """Give the backend under ``backend`` a limit of ``seconds`` per request.

    The in-process backend stops a generation past ``time_limit_s``; the HTTP
    backend gives up on a request whose answer takes longer than its timeout.
    Both raise :class:`~ggufbench.errors.BackendTimeout`.
    """
    raw = base_backend(backend)
    if hasattr(raw, "time_limit_s"):
        raw.time_limit_s = seconds
    from ggufbench.backends.openai_http import OpenAIBackend

    if isinstance(raw, OpenAIBackend):
        import httpx

        raw.timeout_s = seconds
        raw._client.timeout = httpx.Timeout(seconds, connect=min(seconds, 30.0))


@dataclass
class RequestStats:
    """What happened to the requests: total = computed + from_cache + failed."""

    total: int = 0
    computed: int = 0
    from_cache: int = 0
    failed: int = 0
    retried: int = 0  # attempts after a first one that failed
    gen_tokens: int = 0
    compute_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["compute_s"] = round(self.compute_s, 3)
        return data


class _Handoff:
    """Answers computed on worker threads, handed to a cache wrapper to commit."""

    def __init__(self, backend: Backend) -> None:
        self.info = backend.info
        self._ready: dict[GenRequest, GenResult] = {}

    def put(self, request: GenRequest, result: GenResult) -> None:
        self._ready[request] = result

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return [self._ready.pop(r) for r in requests]


class RequestRunner:
    """Runs generation requests through ``cached`` with limits, retries and concurrency.

    ``attempts`` tries per request; ``concurrency`` requests in flight (1: on
    the calling thread). ``on_outcome(index, outcome)`` is called on the calling
    thread as each request ends, after its answer was committed.
    """

    def __init__(
        self, cached: CachedBackend, pace: Pace, *, attempts: int = 3, concurrency: int = 1
    ) -> None:
        self.cached = cached
        self.pace = pace
        self.attempts = max(1, attempts)
        self.concurrency = max(1, concurrency)
        self.stats = RequestStats()
        self.deadlines = RequestDeadlines()
        cached.timing = self.deadlines
        self._done = 0
        self._total = 0

    @property
    def backend(self) -> Backend:
        return self.cached.backend

    def run(
        self,
        requests: Sequence[GenRequest],
        on_outcome: Callable[[int, Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Every request's outcome, in request order."""
        outcomes: list[Outcome | None] = [None] * len(requests)
        self._done, self._total = 0, len(requests)
        self.stats.total += len(requests)

        def finish(index: int, outcome: Outcome) -> None:
            outcomes[index] = outcome
            self._done += 1
            self._progress()
            if on_outcome is not None:
                on_outcome(index, outcome)

        if self.concurrency == 1:
            for index, request in enumerate(requests):
                finish(index, self._inline(request))
        else:
            self._parallel(requests, finish)
        return [o for o in outcomes if o is not None]

    # -- on the calling thread ---------------------------------------------------

    def _inline(self, request: GenRequest) -> Outcome:
        error = BackendError("no attempt was made")
        for attempt in range(self.attempts):
            if attempt:
                self.stats.retried += 1
            limit = self.pace.limit_s(request, attempt)
            apply_time_limit(self.backend, limit)
            self.deadlines.limit_s = limit
            computed_before = self.cached.counts.computed
            start = time.monotonic()
            try:
                (result,) = self.cached.generate([request])
            except NotSupported:
                raise
            except BackendError as exc:
                error = exc
                continue
            if self.cached.counts.computed > computed_before:
                self._computed(result, time.monotonic() - start)
            else:
                self.stats.from_cache += 1
            return result
        self.stats.failed += 1
        return error

    # -- on worker threads -------------------------------------------------------

    def _parallel(
        self, requests: Sequence[GenRequest], finish: Callable[[int, Outcome], None]
    ) -> None:
        info = self.backend.info
        keys = [cache_key(info, "generate", asdict(r)) for r in requests]
        hits = self.cached.ledger.cache_get(list(dict.fromkeys(keys)))
        first: dict[str, int] = {}  # one computation per distinct request
        copies: dict[int, list[int]] = {}
        for index, key in enumerate(keys):
            if key in hits:
                (result,) = self.cached.generate([requests[index]])
                self.stats.from_cache += 1
                finish(index, result)
            elif key in first:
                copies[first[key]].append(index)
            else:
                first[key] = index
                copies[index] = []
        handoff = _Handoff(self.backend)
        committer = CachedBackend(
            cast(Backend, handoff),
            self.cached.ledger,
            self.cached.owner,
            self.cached.job_id,
            self.deadlines,
        )
        queue = list(first.values())
        attempt = dict.fromkeys(queue, 0)
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="request")
        running: dict[Future[tuple[GenResult, float]], int] = {}
        try:
            while queue or running:
                while queue and len(running) < self.concurrency:
                    index = queue.pop(0)
                    limit = self.pace.limit_s(requests[index], attempt[index])
                    apply_time_limit(self.backend, limit)
                    running[pool.submit(self._compute, requests[index])] = index
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    index = running.pop(future)
                    try:
                        result, seconds = future.result()
                    except NotSupported:
                        raise
                    except BackendError as exc:
                        attempt[index] += 1
                        if attempt[index] < self.attempts:
                            self.stats.retried += 1
                            queue.insert(0, index)
                            continue
                        self.stats.failed += 1 + len(copies[index])
                        outcome: Outcome = exc
                    else:
                        handoff.put(requests[index], result)
                        (outcome,) = committer.generate([requests[index]])
                        self._computed(outcome, seconds)
                        self.stats.from_cache += len(copies[index])
                    for member in (index, *copies[index]):
                        finish(member, outcome)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def _compute(self, request: GenRequest) -> tuple[GenResult, float]:
        """One answer, computed on a worker thread (retried as the cache wrapper would)."""
        start = time.monotonic()
        (result,) = retries.call(lambda: self.backend.generate([request]), self.cached.retry)
        return result, time.monotonic() - start

    # -- bookkeeping --------------------------------------------------------------

    def _computed(self, result: GenResult, seconds: float) -> None:
        self.stats.computed += 1
        self.stats.gen_tokens += result.n_tokens
        self.stats.compute_s += seconds
        self.pace.observe(result, seconds)

    def _progress(self) -> None:
        self.cached.ledger.progress(
            self.cached.owner, self.cached.job_id, self._done, self._total, None
        )
