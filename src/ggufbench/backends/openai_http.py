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
  errors are raised at once as ``Retryable``; the cache wrapper tries the
  request again this many times, with exponential backoff (``retry``).

For a thinking model (``generate(..., thinking=fmt)``) the stop strings are not
sent: they may occur in the thinking. The generation is streamed instead and
the stream closed at the first stop string in the answer
(:class:`~ggufbench.thinking.AnswerCut`), so the server stops generating there.

Errors are one sentence that names the URL and never quotes model output or the
server's error body (which may echo the prompt).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
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
    RetryPolicy,
)
from ggufbench.backends._http import (
    Chunk,
    check_status,
    json_body,
    limits,
    read_generation,
    request_headers,
    stream_chunks,
    transport_error,
)
from ggufbench.errors import BackendError, ConfigError
from ggufbench.thinking import ThinkingFormat

__all__ = ["OpenAIBackend"]

RUNNER = "openai"
DEFAULT_CONCURRENCY = 4  # requests at once, unless the suite says otherwise
_GRAMMAR_REJECTED_STATUS = frozenset({400, 422})
_STATUS_HINTS = {
    401: "check the API key in api_key_env",
    403: "check the API key in api_key_env",
    404: "check that base_url ends in /v1 and that the model name is served",
    413: "shorten the prompt",
}
_NOT_JSON = "check that base_url ends in /v1"

Outcome = GenResult | BackendError


class OpenAIBackend:
    """Chat and text generation against an OpenAI-compatible server.

    ``send_grammar`` decides whether a request's GBNF ``grammar`` is sent as the
    ``grammar`` field (understood by llama.cpp and llama-cpp-python servers):
    ``True`` always, ``False`` never, ``None`` (auto) until the server rejects a
    request that carries one with 400/422, then never again. ``identity``: who
    answers, for cache keys (default: the URL and the name; the runner's factory
    adds what ``/v1/models`` reports). ``transport`` and ``sleep`` are for tests.
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
        identity: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_limits(base_url, timeout_s, concurrency, retries)
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.timeout_s = float(timeout_s)
        self.concurrency = concurrency
        self.retry = RetryPolicy(retries=retries, backoff_s=backoff_s, sleep=sleep)
        self._send_grammar = send_grammar
        self._grammar_ok = send_grammar is not False
        self._grammar_lock = threading.Lock()
        self.info = BackendInfo(
            runner=RUNNER,
            identity=identity or f"{self.base_url} {model}",
            settings={"api": "openai-compatible", "send_grammar": send_grammar},
        )
        self._client = httpx.Client(
            headers=request_headers(api_key_env, self.base_url),
            timeout=limits(self.timeout_s),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            transport=transport,
        )

    @classmethod
    def from_model(
        cls, model: Mapping[str, Any], threads: int | None = None, log_path: Path | None = None
    ) -> OpenAIBackend:
        """The backend for a model's settings (plan.model_settings): its identity is the
        URL and the name plus what the server's ``/v1/models`` reports about the model."""
        from ggufbench.backends._server_http import openai_identity

        base_url, name = str(model["base_url"]), str(model["model"])
        api_key_env = model.get("api_key_env")
        return cls(
            base_url,
            name,
            api_key_env=api_key_env,
            concurrency=model.get("concurrency") or DEFAULT_CONCURRENCY,
            identity=openai_identity(base_url, name, api_key_env=api_key_env),
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
        for chunk in self._chunks(url, body, bool(request.messages)):
            if chunk.text:
                yield chunk.text

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
        response = self._send(url, body)
        if response.status_code in _GRAMMAR_REJECTED_STATUS and self._drop_grammar(body):
            response = self._send(url, body)
        check_status(response, url, _STATUS_HINTS)
        return _parse_result(json_body(response, url, _NOT_JSON), bool(request.messages), url)

    def _generate_to_answer_stop(self, request: GenRequest, fmt: ThinkingFormat) -> GenResult:
        """Stream without the stop strings; close the stream at the first one in the answer.

        ``n_tokens`` counts the pieces read (a token each on llama.cpp's servers).
        """
        url, body = self._endpoint(request, send_stop=False)
        body["stream"] = True
        chunks = self._chunks(url, body, bool(request.messages))
        try:
            result = read_generation(chunks, request.stop, fmt)
        finally:
            chunks.close()  # closing the response ends the generation on the server
        return GenResult(result.text, result.finish_reason, 0, result.n_tokens)

    def _send(self, url: str, body: dict[str, Any]) -> httpx.Response:
        if not self._grammar_ok:
            body.pop("grammar", None)
        try:
            return self._client.post(url, json=body)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url, self.timeout_s) from exc

    def _chunks(self, url: str, body: dict[str, Any], chat: bool) -> Generator[Chunk, None, None]:
        """The streamed answer's events as chunks (a generator: close it to end the stream)."""
        deadline = time.monotonic() + self.timeout_s
        parse = _SseEvents(chat, url)
        return stream_chunks(self._open_stream(url, body), url, parse, deadline, self.timeout_s)

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
                check_status(response, url, _STATUS_HINTS)
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


class _SseEvents:
    """Each server-sent event of a completion stream as a chunk (text, one token per
    piece, its finish reason), the stream done at ``[DONE]``; other lines: None."""

    def __init__(self, chat: bool, url: str) -> None:
        self.chat = chat
        self.url = url

    def __call__(self, line: str) -> Chunk | None:
        if not line.startswith("data:"):
            return None
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return Chunk(done=True)
        try:
            data = json.loads(payload)
        except json.JSONDecodeError:
            raise BackendError(f"{self.url} sent a stream event that is not JSON") from None
        if isinstance(data, dict) and "error" in data:
            raise BackendError(f"{self.url} sent an error event in the middle of the stream")
        if not isinstance(data, dict) or not data.get("choices"):
            return None
        choice = _first_choice(data, self.url)
        text = _choice_text(choice, self.chat, delta=True)
        reason = choice.get("finish_reason")
        finish: Literal["stop", "length"] | None = (
            _finish_reason(choice) if isinstance(reason, str) else None
        )
        return Chunk(text, 1 if text else 0, finish)
