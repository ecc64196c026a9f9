"""Trying requests again: the one place a failed request is retried.

A backend raises :class:`~ggufbench.backends._base.Retryable` at once when a request
met a failure that another attempt may not meet (HTTP 429 or 5xx, a connection lost
before the answer began), and declares with its ``retry`` attribute (a
:class:`~ggufbench.backends._base.RetryPolicy`) how often its requests are worth trying
again. The cache wrapper calls its backend through :func:`call` (a batch) or
:func:`each` (answers as they complete), so every runner is retried the same way.
Other errors, timeouts included, are not retried here: the caller decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from ggufbench.backends._base import NO_RETRY, Retryable, RetryPolicy

__all__ = ["call", "each", "policy_of"]

T = TypeVar("T")
P = TypeVar("P")
A = TypeVar("A")


def policy_of(backend: Any) -> RetryPolicy:
    """The backend's retry policy (wrappers forward it); none for an in-process model."""
    policy = getattr(backend, "retry", None)
    return policy if isinstance(policy, RetryPolicy) else NO_RETRY


def call(compute: Callable[[], T], policy: RetryPolicy) -> T:
    """``compute()``, tried again after each :class:`Retryable` up to ``policy.retries``
    times; the last failure is raised."""
    attempt = 0
    while True:
        try:
            return compute()
        except Retryable as error:
            _pause(policy, attempt, error)
            attempt += 1


def each(
    compute: Callable[[list[P]], Iterable[tuple[int, A]]],
    items: Sequence[P],
    policy: RetryPolicy,
) -> Iterator[tuple[int, A]]:
    """``(index, answer)`` for every item, as ``compute`` yields them (its indices are into
    the list it was given). After a :class:`Retryable`, ``compute`` gets the items it had
    not answered yet; an attempt that answered some starts the count of retries anew."""
    left = list(range(len(items)))
    attempt = 0
    while left:
        answered: set[int] = set()
        try:
            for k, answer in compute([items[i] for i in left]):
                answered.add(left[k])
                yield left[k], answer
            return
        except Retryable as error:
            attempt = 0 if answered else attempt
            _pause(policy, attempt, error)
            attempt += 1
            left = [i for i in left if i not in answered]


def _pause(policy: RetryPolicy, attempt: int, error: Retryable) -> None:
    """Wait before the next attempt, or raise ``error`` when no attempt is left."""
    if attempt >= policy.retries:
        raise error
    wait = policy.wait_s(attempt, error)
    if wait > 0:
        policy.sleep(wait)
