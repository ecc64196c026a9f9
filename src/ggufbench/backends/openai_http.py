"""Runner ``openai``: any OpenAI-compatible HTTP server as a backend.

It speaks ``POST {base_url}/chat/completions`` for chat requests (``messages``)
and ``POST {base_url}/completions`` for text requests (``prompt``), with
``base_url`` given as OpenAI clients take it (ending in ``/v1``). Works with
llama-cpp-python's server, llama.cpp's llama-server, vLLM, LM Studio and
hosted APIs.

Its limits are explicit:

- ``timeout_s``: one request may take at most this long; a request that takes
  longer raises :class:`BackendTimeout` and is not retried here (the caller
  decides, with a timeout derived from what it measured).
- ``concurrency``: ``generate`` over a list keeps at most this many requests in
  flight.
- ``retries``: 5xx answers, 429 (honouring ``Retry-After``) and connection
  errors are retried this many times, with exponential backoff.

For a thinking model (``generate(..., thinking=fmt)``) the stop strings are not
sent: they may occur in the thinking. The generation is streamed instead and
the stream closed at the first stop string in the answer
(:class:`~ggufbench.thinking.AnswerCut`), so the server stops generating there.

Errors are one sentence that names the URL and never quotes model output or the
server's error body (which may echo the prompt).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Literal

import httpx

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
    NotSupported,
)
from ggufbench.errors import BackendError, BackendTimeout, ConfigError
from ggufbench.thinking import AnswerCut, ThinkingFormat

__all__ = ["OpenAIBackend"]

RUNNER = "openai"
DEFAULT_CONCURRENCY = 4  # requests at once, unless the suite says otherwise
_MAX_BACKOFF_S = 60.0
_MAX_RETRY_AFTER_S = 300.0
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_GRAMMAR_REJECTED_STATUS = frozenset({400, 422})

Outcome = GenResult | BackendError


class _Retryable(Exception):
    """One attempt failed in a way that another attempt may fix."""

    def __init__(self, error: BackendError, wait_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait_s = wait_s


class OpenAIBackend:
    """Chat and text generation against an OpenAI-compatible server.

    ``send_grammar`` decides whether a request's GBNF ``grammar`` is sent as the
    ``grammar`` field (understood by llama.cpp and llama-cpp-python servers):
    ``True`` always, ``False`` never, ``None`` (auto) until the server rejects a
    request that carries one with 400/422, then never again. ``transport`` and
    ``sleep`` are for tests.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 600,
        concurrency: int = DEFAULT_CONCURRENCY,
        retries: int = 3,
        backoff_s: float = 1.0,
        send_grammar: bool | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_limits(base_url, timeout_s, concurrency, retries)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.concurrency = concurrency
        self.retries = retries
        self.backoff_s = backoff_s
        self._send_grammar = send_grammar
        self._grammar_ok = send_grammar is not False
        self._grammar_lock = threading.Lock()
        self._sleep = sleep
        self.info = BackendInfo(
            runner=RUNNER,
            identity=f"{self.base_url} {model}",
            settings={"api": "openai-compatible", "send_grammar": send_grammar},
        )
        self._client = httpx.Client(
            headers=_headers(api_key_env, self.base_url),
            timeout=httpx.Timeout(self.timeout_s, connect=min(self.timeout_s, 30.0)),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )

    # -- the backend contract -------------------------------------------------

    def generate(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> list[GenResult]:
        """Answer every request; raise the first failure (in request order).

        ``thinking``: stop strings end a generation only in its answer, and its
        text comes back whole (see ``AnswerStopBackend``).
        """
        results: list[GenResult] = []
        for outcome in self.generate_each(requests, thinking=thinking):
            if isinstance(outcome, BackendError):
                raise outcome
            results.append(outcome)
        return results

    def generate_each(
        self,
        requests: Sequence[GenRequest],
        on_done: Callable[[int, Outcome], None] | None = None,
        thinking: ThinkingFormat | None = None,
    ) -> list[Outcome]:
        """Answer every request, keeping each failure in its place.

        ``on_done(index, outcome)`` is called as each request completes (from
        worker threads), so a caller can commit answers as they arrive.
        """

        def one(index: int) -> Outcome:
            try:
                outcome: Outcome = self._generate_one(requests[index], thinking)
            except BackendError as exc:
                outcome = exc
            if on_done is not None:
                on_done(index, outcome)
            return outcome

        if len(requests) <= 1 or self.concurrency == 1:
            return [one(i) for i in range(len(requests))]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            return list(pool.map(one, range(len(requests))))

    def stream(self, request: GenRequest) -> Iterator[str]:
        """Yield the generated text in pieces as the server sends them."""
        url, body = self._endpoint(request)
        body["stream"] = True
        deadline = time.monotonic() + self.timeout_s
        chat = bool(request.messages)
        for attempt in range(self.retries + 1):
            try:
                for piece, _ in self._stream_attempt(url, body, chat, deadline):
                    if piece:
                        yield piece
                return
            except _Retryable as retry:
                self._wait_before_retry(attempt, retry)

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        raise NotSupported(
            f"the OpenAI-compatible server at {self.base_url} cannot give exact prompt "
            "logprobs; run loglikelihood tasks with the llama-cpp runner"
        )

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        raise NotSupported(
            f"the OpenAI-compatible server at {self.base_url} cannot give exact prompt "
            "logprobs; run perplexity tasks with the llama-cpp runner"
        )

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        raise NotSupported(
            f"the OpenAI-compatible server at {self.base_url} applies its chat template "
            "itself; send chat requests as messages"
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- one request ------------------------------------------------------------

    def _generate_one(self, request: GenRequest, thinking: ThinkingFormat | None) -> GenResult:
        if thinking is not None and thinking.style != "none" and any(request.stop):
            return self._generate_to_answer_stop(request, thinking)
        url, body = self._endpoint(request)
        chat = bool(request.messages)
        for attempt in range(self.retries + 1):
            try:
                return self._post_once(url, body, chat)
            except _Retryable as retry:
                self._wait_before_retry(attempt, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    def _generate_to_answer_stop(self, request: GenRequest, fmt: ThinkingFormat) -> GenResult:
        """Stream without the stop strings; close the stream at the first one in the answer.

        ``n_tokens`` counts the pieces read (a token each on llama.cpp's servers).
        """
        url, body = self._endpoint(request, send_stop=False)
        body["stream"] = True
        deadline = time.monotonic() + self.timeout_s
        for attempt in range(self.retries + 1):
            events = self._stream_attempt(url, body, bool(request.messages), deadline)
            try:
                return _read_to_answer_stop(events, AnswerCut(fmt, request.stop))
            except _Retryable as retry:
                self._wait_before_retry(attempt, retry)
            finally:
                events.close()  # closing the response ends the generation on the server
        raise AssertionError("unreachable")  # pragma: no cover

    def _post_once(self, url: str, body: dict[str, Any], chat: bool) -> GenResult:
        response = self._send(url, body)
        if response.status_code in _GRAMMAR_REJECTED_STATUS and self._drop_grammar(body):
            response = self._send(url, body)
        _check_status(response, url)
        return _parse_result(_json_body(response, url), chat, url)

    def _send(self, url: str, body: dict[str, Any]) -> httpx.Response:
        if not self._grammar_ok:
            body.pop("grammar", None)
        try:
            return self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise _translate_transport_error(exc, url, self.timeout_s) from exc

    def _stream_attempt(
        self, url: str, body: dict[str, Any], chat: bool, deadline: float
    ) -> Generator[tuple[str, str | None], None, None]:
        started = False
        try:
            with self._open_stream(url, body) as response:
                for event in _sse_events(response.iter_lines(), chat, url):
                    if time.monotonic() > deadline:
                        raise _timeout(url, self.timeout_s)
                    started = True
                    yield event
        except httpx.HTTPError as exc:
            error = _translate_transport_error(exc, url, self.timeout_s)
            if started and isinstance(error, _Retryable):
                raise BackendError(
                    f"the stream from {url} broke off after it had started; retry the request"
                ) from exc
            raise error from exc

    @contextmanager
    def _open_stream(self, url: str, body: dict[str, Any]) -> Iterator[httpx.Response]:
        """A streaming response whose status is OK (resent once without a rejected grammar)."""
        while True:
            if not self._grammar_ok:
                body.pop("grammar", None)
            with self._client.stream("POST", url, json=body) as response:
                if response.status_code in _GRAMMAR_REJECTED_STATUS and self._drop_grammar(body):
                    continue
                if response.status_code >= 400:
                    response.read()
                _check_status(response, url)
                yield response
                return

    def _drop_grammar(self, body: dict[str, Any]) -> bool:
        """After a 400/422 on a request with a grammar: stop sending grammars (auto)."""
        if "grammar" not in body or self._send_grammar is not None:
            return False
        with self._grammar_lock:
            self._grammar_ok = False
        del body["grammar"]
        return True

    def _wait_before_retry(self, attempt: int, retry: _Retryable) -> None:
        if attempt >= self.retries:
            raise retry.error
        if retry.wait_s is not None:
            wait = min(retry.wait_s, _MAX_RETRY_AFTER_S)
        else:
            wait = min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S)
        if wait > 0:
            self._sleep(wait)

    def _endpoint(self, request: GenRequest, send_stop: bool = True) -> tuple[str, dict[str, Any]]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "top_p": request.top_p,
            "seed": request.seed,
        }
        if request.stop and send_stop:
            body["stop"] = list(request.stop)
        if request.grammar is not None and self._grammar_ok:
            body["grammar"] = request.grammar
        if request.messages:
            body["messages"] = [{"role": r, "content": c} for r, c in request.messages]
            return f"{self.base_url}/chat/completions", body
        body["prompt"] = request.prompt
        return f"{self.base_url}/completions", body


# -- helpers (pure) -----------------------------------------------------------


def _check_limits(base_url: str, timeout_s: float, concurrency: int, retries: int) -> None:
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"base_url {base_url!r} is not an http(s) URL; give it as OpenAI clients take it, "
            "for example http://127.0.0.1:8000/v1"
        )
    if timeout_s <= 0 or concurrency < 1 or retries < 0:
        raise ConfigError(
            f"the limits for {base_url} are invalid (timeout_s {timeout_s}, concurrency "
            f"{concurrency}, retries {retries}); use timeout_s > 0, concurrency >= 1, retries >= 0"
        )


def _headers(api_key_env: str | None, base_url: str) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if api_key_env is None:
        return headers
    key = os.environ.get(api_key_env, "").strip()
    if not key:
        raise ConfigError(
            f"the environment variable {api_key_env} (api_key_env for {base_url}) is not set; "
            "export it with the API key"
        )
    headers["Authorization"] = f"Bearer {key}"
    return headers


def _timeout(url: str, timeout_s: float) -> BackendTimeout:
    return BackendTimeout(
        f"the request to {url} took longer than {timeout_s:g} s; "
        "raise the timeout or lower max_tokens"
    )


def _translate_transport_error(exc: httpx.HTTPError, url: str, timeout_s: float) -> Exception:
    """An httpx failure as a BackendTimeout, or a retryable connection error."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return _Retryable(
            BackendError(
                f"cannot connect to {url} ({type(exc).__name__}); "
                "start the server or correct base_url"
            )
        )
    if isinstance(exc, httpx.TimeoutException):
        return _timeout(url, timeout_s)
    if isinstance(exc, httpx.TransportError):
        return _Retryable(
            BackendError(
                f"the connection to {url} failed ({type(exc).__name__}); "
                "check that the server is up"
            )
        )
    return BackendError(f"the request to {url} failed ({type(exc).__name__})")


def _retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds from ``retry-after-ms`` or ``Retry-After`` (seconds or HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(float(millis) / 1000.0, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


_STATUS_HINTS = {
    401: "check the API key in api_key_env",
    403: "check the API key in api_key_env",
    404: "check that base_url ends in /v1 and that the model name is served",
    413: "shorten the prompt",
}


def _check_status(response: httpx.Response, url: str) -> None:
    code = response.status_code
    if code < 400:
        return
    if code in _RETRY_STATUS:
        wait = _retry_after_s(response.headers) if code in (429, 503) else None
        raise _Retryable(
            BackendError(f"{url} answered HTTP {code} on every attempt; try again later"), wait
        )
    hint = _STATUS_HINTS.get(code, "check the request settings (max_tokens, stop, model)")
    raise BackendError(f"{url} answered HTTP {code}; {hint}")


def _json_body(response: httpx.Response, url: str) -> dict[str, Any]:
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise BackendError(
            f"{url} did not answer with a JSON object; check that base_url ends in /v1"
        )
    return data


def _first_choice(data: dict[str, Any], url: str) -> dict[str, Any]:
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise BackendError(
            f"{url} answered without choices; check that it is an OpenAI-compatible API"
        )
    return choices[0]


def _choice_text(choice: dict[str, Any], chat: bool, delta: bool = False) -> str:
    if chat:
        message = choice.get("delta" if delta else "message") or {}
        text = message.get("content") if isinstance(message, dict) else None
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


def _finish_reason(choice: dict[str, Any]) -> Literal["stop", "length"]:
    return "length" if choice.get("finish_reason") == "length" else "stop"


def _parse_result(data: dict[str, Any], chat: bool, url: str) -> GenResult:
    choice = _first_choice(data, url)
    usage = data.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    return GenResult(
        text=_choice_text(choice, chat),
        finish_reason=_finish_reason(choice),
        n_prompt_tokens=int(usage.get("prompt_tokens") or 0),
        n_tokens=int(usage.get("completion_tokens") or 0),
    )


def _read_to_answer_stop(events: Iterator[tuple[str, str | None]], cut: AnswerCut) -> GenResult:
    """Read stream events until a stop string in the answer, or the end of the stream."""
    pieces: list[str] = []
    finish: str | None = None
    for piece, reason in events:
        pieces.append(piece)
        finish = reason or finish
        if cut.feed(piece) is not None:
            break
    text, n_tokens = "".join(pieces), sum(1 for p in pieces if p)
    if cut.at is None and finish == "length":
        return GenResult(text, "length", 0, n_tokens)
    return GenResult(text, "stop", 0, n_tokens)


def _sse_events(lines: Iterator[str], chat: bool, url: str) -> Iterator[tuple[str, str | None]]:
    """(text, finish_reason) of each event of a server-sent-events completion stream,
    up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(f"{url} sent a stream event that is not JSON") from None
        if isinstance(data, dict) and "error" in data:
            raise BackendError(f"{url} sent an error event in the middle of the stream")
        if not isinstance(data, dict) or not data.get("choices"):
            continue
        choice = _first_choice(data, url)
        reason = choice.get("finish_reason")
        yield _choice_text(choice, chat, delta=True), reason if isinstance(reason, str) else None
