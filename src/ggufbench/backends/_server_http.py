"""What the runners that speak a server's native API share: llama-server's
``/completion`` and Ollama's ``/api/generate`` and ``/api/chat``.

- :class:`NativeClient`: JSON requests and streamed answers, with the same
  limits as the ``openai`` runner: a time limit per request, retries of 5xx,
  429 and connection errors before an answer has started, and errors as one
  sentence that names the URL and never quotes the server's body (it may echo
  the prompt). How a transport failure or a status code becomes that sentence
  is :mod:`.openai_http`'s, imported, not repeated.
- :func:`read_generation`: an answer read piece by piece up to the first stop
  string (in the answer only, for a thinking model: :class:`AnswerCut`); the
  stream is then closed, which ends the generation on the server.
- :class:`StreamingBackend`: the backend contract over one request's
  ``_generate_one``, with up to ``concurrency`` requests in flight and answers
  yielded as they complete (``generate_iter``), so the cache wrapper commits
  each at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import httpx

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
    NotSupported,
)
from ggufbench.backends.openai_http import (
    _check_status,
    _headers,
    _json_body,
    _Retryable,
    _timeout,
    _translate_transport_error,
)
from ggufbench.errors import BackendError, ConfigError
from ggufbench.thinking import AnswerCut, ThinkingFormat, thinking_format

__all__ = ["Chunk", "NativeClient", "StreamingBackend", "read_generation"]

_MAX_BACKOFF_S = 30.0
Finish = Literal["stop", "length"]
_B = TypeVar("_B", bound="StreamingBackend")
PLAIN = thinking_format(None)


@dataclass(frozen=True)
class Chunk:
    """One streamed event: text, the tokens it holds, and, on the last, how it ended."""

    text: str = ""
    n_tokens: int = 0
    finish: Finish | None = None
    n_prompt: int | None = None
    done: bool = False


def read_generation(
    chunks: Iterator[Chunk],
    stops: Sequence[str],
    thinking: ThinkingFormat | None,
    n_prompt: int = 0,
) -> GenResult:
    """Read ``chunks`` to the end or to the first stop string that counts.

    Without a thinking format the text is cut before that stop string (the
    in-process engine's rule). With one, stop strings count only in the answer
    and the text comes back whole, for the thinking wrapper to parse.
    """
    fmt = thinking if thinking is not None and thinking.style != "none" else None
    cut = AnswerCut(fmt or PLAIN, stops)
    pieces: list[str] = []
    n_tokens, finish = 0, None
    for chunk in chunks:
        pieces.append(chunk.text)
        n_tokens += chunk.n_tokens
        finish = chunk.finish or finish
        n_prompt = chunk.n_prompt if chunk.n_prompt is not None else n_prompt
        if cut.feed(chunk.text) is not None or chunk.done:
            break
    text = "".join(pieces)
    if cut.at is not None:
        return GenResult(text if fmt else text[: cut.at], "stop", n_prompt, n_tokens)
    return GenResult(text, "length" if finish == "length" else "stop", n_prompt, n_tokens)


class NativeClient:
    """HTTP to one server; ``connections`` requests may be in flight at once."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 600.0,
        retries: int = 2,
        backoff_s: float = 1.0,
        connections: int = 4,
        api_key_env: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {base_url!r} is not an http(s) URL; give it as http://HOST:PORT"
            )
        if timeout_s <= 0 or retries < 0 or connections < 1:
            raise ConfigError(
                f"the limits for {base_url} are invalid (timeout_s {timeout_s}, retries "
                f"{retries}); use timeout_s > 0 and retries >= 0"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep
        self._client = httpx.Client(
            headers=_headers(api_key_env, self.base_url),
            timeout=_limits(self.timeout_s),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            transport=transport,
        )

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> NativeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one JSON request -----------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: Any = None,
        timeout_s: float | None = None,
        ok: Callable[[int], bool] = lambda code: code < 400,
    ) -> httpx.Response:
        """The response once ``ok(status)``; otherwise the error as one sentence.

        Connection errors, 5xx and 429 are retried (not when ``content`` is a
        stream that cannot be sent twice).
        """
        url = self.url(path)
        limit = timeout_s or self.timeout_s
        for attempt in range(self.retries + 1):
            try:
                try:
                    response = self._client.request(
                        method, url, json=body, content=content, timeout=_limits(limit)
                    )
                except httpx.HTTPError as exc:
                    raise _translate_transport_error(exc, url, limit) from exc
                if not ok(response.status_code):
                    _check(response, url)
                return response
            except _Retryable as retry:
                if content is not None and not isinstance(content, bytes):
                    raise retry.error from None
                self.wait_before_retry(attempt, retry)
        raise AssertionError("unreachable")  # pragma: no cover

    def get_json(self, path: str, timeout_s: float | None = None) -> dict[str, Any]:
        response = self.request("GET", path, timeout_s=timeout_s)
        return _json_body(response, self.url(path))

    def post_json(self, path: str, body: Any, timeout_s: float | None = None) -> dict[str, Any]:
        response = self.request("POST", path, body=body, timeout_s=timeout_s)
        return _json_body(response, self.url(path))

    def wait_before_retry(self, attempt: int, retry: _Retryable) -> None:
        if attempt >= self.retries:
            raise retry.error
        wait = retry.wait_s if retry.wait_s is not None else self.backoff_s * 2**attempt
        if wait > 0:
            self._sleep(min(wait, _MAX_BACKOFF_S))

    # -- a streamed answer ------------------------------------------------------------

    def generation(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[str], Chunk | None],
        read: Callable[[Iterator[Chunk]], GenResult],
        timeout_s: float,
    ) -> GenResult:
        """POST ``body``, parse each line of the streamed answer, ``read`` the chunks.

        A failure before the first chunk is retried; the stream is closed when
        ``read`` returns, which stops the generation on the server.
        """
        deadline = time.monotonic() + timeout_s
        for attempt in range(self.retries + 1):
            chunks = self._stream_attempt(path, body, parse, deadline, timeout_s)
            try:
                return read(chunks)
            except _Retryable as retry:
                self.wait_before_retry(attempt, retry)
            finally:
                chunks.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream_attempt(
        self,
        path: str,
        body: dict[str, Any],
        parse: Callable[[str], Chunk | None],
        deadline: float,
        timeout_s: float,
    ) -> Generator[Chunk, None, None]:
        url = self.url(path)
        started = False
        try:
            with self._client.stream("POST", url, json=body, timeout=_limits(timeout_s)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    _check(resp, url)
                for line in resp.iter_lines():
                    if time.monotonic() > deadline:
                        raise _timeout(url, timeout_s)
                    chunk = parse(line)
                    if chunk is not None:
                        started = True
                        yield chunk
        except httpx.HTTPError as exc:
            error = _translate_transport_error(exc, url, timeout_s)
            if started and isinstance(error, _Retryable):
                raise BackendError(
                    f"the stream from {url} broke off after it had started; retry the request"
                ) from exc
            raise error from exc


def _check(response: httpx.Response, url: str) -> None:
    """An error status as one sentence (the openai runner's, but for a native path's 404)."""
    if response.status_code == 404:
        raise BackendError(
            f"{url} answered HTTP 404; check base_url and that the server has the model"
        )
    _check_status(response, url)


def _limits(seconds: float) -> httpx.Timeout:
    return httpx.Timeout(seconds, connect=min(seconds, 30.0))


def json_line(line: str, url: str) -> dict[str, Any] | None:
    """A streamed line's JSON object; None for an empty line."""
    if not line.strip():
        return None
    try:
        data = json.loads(line)
    except json.JSONDecodeError:
        raise BackendError(f"{url} sent a stream line that is not JSON") from None
    if not isinstance(data, dict):
        raise BackendError(f"{url} sent a stream line that is not a JSON object")
    if "error" in data:
        raise BackendError(f"{url} sent an error in the middle of the answer")
    return data


SERVED_FACTS = ("id", "owned_by", "root", "parent", "max_model_len", "meta")
"""What an entry of ``/v1/models`` says that stays the same from one request to the
next (``created`` is the time of the request on several servers, so it is left out)."""


def served_model(client: NativeClient, models_path: str, name: str | None) -> dict[str, Any]:
    """What ``GET models_path`` (an OpenAI ``/v1/models``) reports about ``name``.

    A server that lists one model serves it under any name (llama.cpp's and
    llama-cpp-python's servers), so that entry is taken whatever ``name`` is.
    Empty when the server has no such endpoint.
    """
    url = client.url(models_path)
    response = client.request("GET", models_path, ok=lambda code: code < 400 or code == 404)
    if response.status_code == 404:
        return {}
    data = _json_body(response, url).get("data")
    entries = [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []
    found = [e for e in entries if e.get("id") == name] or (entries if len(entries) == 1 else [])
    if not found:
        listed = ", ".join(repr(e.get("id")) for e in entries[:8]) or "none"
        raise ConfigError(
            f"the server at {client.base_url} does not serve model {name!r} "
            f"(it lists {listed}); correct the model name"
        )
    return {key: found[0][key] for key in SERVED_FACTS if found[0].get(key) is not None}


def openai_identity(
    base_url: str,
    model: str,
    *,
    api_key_env: str | None = None,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """The ``openai`` runner's identity: URL and name, plus what ``/v1/models`` reports.

    ``base_url`` ends in ``/v1`` as OpenAI clients take it. A different file
    served under the same name with the same metadata cannot be told apart.
    """
    with NativeClient(
        base_url, timeout_s=30, retries=1, api_key_env=api_key_env, transport=transport
    ) as client:
        facts = served_model(client, "/models", model)
    reported = json.dumps(facts, sort_keys=True, separators=(",", ":")) if facts else "{}"
    return f"{client.base_url} {model} {reported}"


class StreamingBackend:
    """The backend contract over ``_generate_one``: one request, streamed.

    ``concurrency`` requests are in flight at once (the server's slots);
    ``time_limit_s`` (set by the ELYZA job from measured speed) bounds one
    request, else ``timeout_s``. Loglikelihood raises :class:`NotSupported`
    with ``no_loglik``.
    """

    info: BackendInfo
    concurrency: int = 1
    timeout_s: float = 600.0
    time_limit_s: float | None = None
    no_loglik = "this server cannot score prompts"

    def _generate_one(self, request: GenRequest, thinking: ThinkingFormat | None) -> GenResult:
        raise NotImplementedError

    @property
    def generation_width(self) -> int:
        """Requests the cache wrapper hands over at once when it chunks."""
        return self.concurrency

    def request_timeout_s(self) -> float:
        return self.time_limit_s or self.timeout_s

    def generate_iter(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> Iterator[tuple[int, GenResult]]:
        """Answer every request; yield ``(index, result)`` as each completes."""
        if len(requests) <= 1 or self.concurrency == 1:
            for index, request in enumerate(requests):
                yield index, self._generate_one(request, thinking)
            return
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests)))
        try:
            futures: dict[Future[GenResult], int] = {
                pool.submit(self._generate_one, request, thinking): index
                for index, request in enumerate(requests)
            }
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            pool.shutdown(wait=False, cancel_futures=True)

    def generate(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> list[GenResult]:
        """Every answer in request order; ``thinking``: see ``AnswerStopBackend``."""
        out = dict(self.generate_iter(requests, thinking))
        return [out[i] for i in range(len(requests))]

    def stream(self, request: GenRequest) -> Iterator[str]:
        yield self.generate([request])[0].text

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        raise NotSupported(self.no_loglik)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        raise NotSupported(self.no_loglik)

    def close(self) -> None:
        """Release the connection (and, for a managed server, the server)."""

    def __enter__(self: _B) -> _B:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
