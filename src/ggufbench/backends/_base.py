"""The backend contract: what every way of running a model must offer.

A backend answers three kinds of requests. ``generate`` is required; the two
loglikelihood kinds are optional (HTTP chat APIs cannot give prompt logprobs)
and raise :class:`NotSupported` where the backend cannot answer them exactly.

Backends are plain: no retries, no caching, no ledger writes. Those live in the
wrapper that calls them (the cache wrapper, :mod:`ggufbench.cached`), so every
backend gets them the same way. A backend raises :class:`Retryable` at once for a
failure that another attempt may not meet, and says with ``retry`` (a
:class:`RetryPolicy`) how often and how patiently its requests are worth trying
again; :mod:`ggufbench.retries` does the trying.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from ggufbench.errors import BackendError
from ggufbench.thinking import ThinkingFormat


class NotSupported(BackendError):
    """This backend cannot answer this kind of request."""


class Retryable(BackendError):
    """A failure that another attempt of the same request may not meet: a server that
    answered 429 or 5xx, or a connection lost before the answer began. ``wait_s``: how
    long the server asked to wait (``Retry-After``), if it said."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


@dataclass(frozen=True)
class RetryPolicy:
    """How a backend's :class:`Retryable` failures are tried again: up to ``retries``
    more times, waiting ``backoff_s`` doubled at each attempt (at most ``max_backoff_s``),
    or what the server asked (at most ``max_wait_s``). ``sleep`` is for tests."""

    retries: int = 2
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    max_wait_s: float = 300.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def wait_s(self, attempt: int, error: Retryable) -> float:
        """Seconds to wait before attempt ``attempt + 1`` (0-based) after ``error``."""
        if error.wait_s is not None:
            return min(error.wait_s, self.max_wait_s)
        return min(self.backoff_s * 2**attempt, self.max_backoff_s)


NO_RETRY = RetryPolicy(retries=0)


@dataclass(frozen=True)
class LoglikRequest:
    """log P(continuation | context), tokenized as lm-eval's HF model does."""

    context: str
    continuation: str


@dataclass(frozen=True)
class LoglikResult:
    """A loglikelihood answer. ``n_tokens``: the continuation's tokens;
    ``n_input_tokens``: the tokens the model read for it (context and continuation
    after truncation), 0 where the backend does not say (and in answers cached before
    it was recorded)."""

    logprob: float
    is_greedy: bool
    n_tokens: int = 0
    n_input_tokens: int = 0


@dataclass(frozen=True)
class GenRequest:
    """Greedy (temperature 0) or sampled generation from a raw prompt.

    ``messages`` (chat form) is used by backends that template themselves
    (HTTP chat APIs); in-process backends render it with the model's template.
    ``stop`` strings end the generation, and the text is cut before the first
    (lm-eval's ``until``); for a thinking model see :class:`AnswerStopBackend`.
    """

    prompt: str = ""
    messages: tuple[tuple[str, str], ...] = ()
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    grammar: str | None = None


@dataclass(frozen=True)
class GenResult:
    """A generation. For thinking models ``text`` is the final answer only ("" when
    there is none) and ``thinking`` holds its sha256, length and sections, never text."""

    text: str
    finish_reason: Literal["stop", "length"]
    n_prompt_tokens: int = 0
    n_tokens: int = 0
    thinking: dict[str, Any] | None = None


@dataclass(frozen=True)
class BackendInfo:
    """Who answers: goes into cache keys and reports."""

    runner: str
    identity: str  # model file sha256, or "URL model" for HTTP backends
    settings: dict[str, Any] = field(default_factory=dict)  # everything that changes answers


@runtime_checkable
class Backend(Protocol):
    info: BackendInfo

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]: ...

    def stream(self, request: GenRequest) -> Iterator[str]: ...

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]: ...

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str: ...

    def close(self) -> None: ...


class AnswerStopBackend(Backend, Protocol):
    """A backend that ends a thinking model's generation at a stop string in its answer.

    ``generate(requests, thinking=fmt)``: the model thinks in ``fmt``, so a
    request's stop strings end the generation only where they lie in the
    answer (:class:`ggufbench.thinking.AnswerCut`; in the in-process engine
    and by closing an HTTP stream), and the text comes back whole, thinking
    and stop string included, for the caller to parse by the same rule.
    Without ``thinking`` it is the plain ``generate``.
    """

    def generate(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> list[GenResult]: ...
