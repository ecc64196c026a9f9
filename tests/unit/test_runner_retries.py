"""The one retry layer (ggufbench.retries): backends raise ``Retryable`` at once and
declare a ``retry`` policy; the layer tries again, waiting as the policy says, with only
the requests that have no answer yet. No sleeping: the policy's sleep is recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from ggufbench import retries
from ggufbench.backends._base import (
    NO_RETRY,
    BackendInfo,
    GenRequest,
    GenResult,
    Retryable,
    RetryPolicy,
)
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.errors import BackendError, BackendTimeout
from ggufbench.thinking import thinking_format


def policy(n: int, waits: list[float]) -> RetryPolicy:
    return RetryPolicy(retries=n, backoff_s=0.5, max_backoff_s=1.5, sleep=waits.append)


def failing(times: int, error: BackendError) -> tuple[list[int], Callable[[], str]]:
    """A computation that fails ``times`` times with ``error``, then answers "ok"."""
    calls: list[int] = []

    def compute() -> str:
        calls.append(1)
        if len(calls) <= times:
            raise error
        return "ok"

    return calls, compute


def test_a_retryable_failure_is_tried_again_with_doubling_waits() -> None:
    waits: list[float] = []
    calls, compute = failing(3, Retryable("busy"))
    assert retries.call(compute, policy(3, waits)) == "ok"
    assert len(calls) == 4 and waits == [0.5, 1.0, 1.5]  # capped at max_backoff_s


def test_the_servers_wait_is_honoured_up_to_its_cap() -> None:
    waits: list[float] = []
    _, compute = failing(2, Retryable("rate limited", wait_s=7.0))
    retries.call(compute, RetryPolicy(retries=2, max_wait_s=5.0, sleep=waits.append))
    assert waits == [5.0, 5.0]


def test_the_last_failure_is_raised_when_no_attempt_is_left() -> None:
    waits: list[float] = []
    calls, compute = failing(5, Retryable("http://x answered HTTP 503"))
    with pytest.raises(Retryable, match="503"):
        retries.call(compute, policy(2, waits))
    assert len(calls) == 3 and len(waits) == 2


@pytest.mark.parametrize("error", [BackendError("bad request"), BackendTimeout("too slow")])
def test_other_failures_are_not_retried(error: BackendError) -> None:
    waits: list[float] = []
    calls, compute = failing(1, error)
    with pytest.raises(type(error)):
        retries.call(compute, policy(3, waits))
    assert len(calls) == 1 and waits == []


def test_streamed_answers_are_not_asked_again_after_a_failure() -> None:
    asked: list[list[str]] = []
    fail_after = [2, 1]  # the first call fails after 2 answers, the second after 1

    def compute(items: list[str]) -> Iterator[tuple[int, str]]:
        asked.append(list(items))
        limit = fail_after.pop(0) if fail_after else len(items)
        for k, item in enumerate(items):
            if k == limit:
                raise Retryable("connection lost")
            yield k, item.upper()

    waits: list[float] = []
    items = ["a", "b", "c", "d", "e"]
    out = dict(retries.each(compute, items, policy(1, waits)))
    assert out == {i: s.upper() for i, s in enumerate(items)}
    assert asked == [items, ["c", "d", "e"], ["d", "e"]]
    assert waits == [0.5, 0.5]  # each attempt that answered some starts the count anew


def test_a_stream_that_answers_nothing_gives_up_after_its_retries() -> None:
    def compute(items: list[str]) -> Iterator[tuple[int, str]]:
        raise Retryable("down")
        yield  # pragma: no cover

    waits: list[float] = []
    with pytest.raises(Retryable, match="down"):
        list(retries.each(compute, ["a"], policy(2, waits)))
    assert waits == [0.5, 1.0]


def test_the_policy_is_read_through_wrappers_and_none_for_in_process() -> None:
    class Http:
        retry = RetryPolicy(retries=5)
        info = BackendInfo("openai", "http://x/v1 m")

        def generate(self, requests: list[GenRequest], thinking: object = None) -> list[GenResult]:
            return []

    wrapped = ThinkingBackend(Http(), thinking_format("think"))  # type: ignore[arg-type]
    assert retries.policy_of(wrapped).retries == 5
    assert retries.policy_of(object()) is NO_RETRY
