"""What the runners that speak a server's native API share: llama-server's
``/completion`` and Ollama's ``/api/generate`` and ``/api/chat``.

- :class:`NativeClient`: JSON requests and streamed answers, with the same
  limits and errors as the ``openai`` runner (:mod:`._http`): a time limit per
  request, and errors as one sentence that names the URL. Failures another
  attempt may not meet are raised as ``Retryable`` at once; the cache wrapper
  retries them, as its ``retry`` policy says.
- :class:`StreamingBackend`: the backend contract over one request's
  ``_generate_one``, with up to ``concurrency`` requests in flight and answers
  yielded as they complete (``generate_iter``), so the cache wrapper commits
  each at once.
- :func:`openai_identity`: the ``openai`` runner's identity, with what the
  server's ``/v1/models`` reports.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

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
    request_headers,
    stream_chunks,
    transport_error,
)
from ggufbench.errors import ConfigError
from ggufbench.thinking import ThinkingFormat

__all__ = ["NativeClient", "StreamingBackend", "openai_identity", "served_model"]

_B = TypeVar("_B", bound="StreamingBackend")
NATIVE_HINTS = {404: "check base_url and that the server has the model"}
NOT_JSON = "check base_url"


class NativeClient:
    """HTTP to one server; ``connections`` requests may be in flight at once."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 600.0,
        connections: int = 4,
        api_key_env: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"base_url {base_url!r} is not an http(s) URL; give it as http://HOST:PORT"
            )
        if timeout_s <= 0 or connections < 1:
            raise ConfigError(
                f"the limits for {base_url} are invalid (timeout_s {timeout_s}); use timeout_s > 0"
            )
        self.base_url = base_url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self._client = httpx.Client(
            headers=request_headers(api_key_env, self.base_url),
            timeout=limits(self.timeout_s),
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
        """The response once ``ok(status)``; otherwise the error as one sentence."""
        url = self.url(path)
        limit = timeout_s or self.timeout_s
        try:
            response = self._client.request(
                method, url, json=body, content=content, timeout=limits(limit)
            )
        except httpx.HTTPError as exc:
            raise transport_error(exc, url, limit) from exc
        if not ok(response.status_code):
            check_status(response, url, NATIVE_HINTS)
        return response

    def get_json(self, path: str, timeout_s: float | None = None) -> dict[str, Any]:
        response = self.request("GET", path, timeout_s=timeout_s)
        return json_body(response, self.url(path), NOT_JSON)

    def post_json(self, path: str, body: Any, timeout_s: float | None = None) -> dict[str, Any]:
        response = self.request("POST", path, body=body, timeout_s=timeout_s)
        return json_body(response, self.url(path), NOT_JSON)

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

        The stream is closed when ``read`` returns, which stops the generation on
        the server.
        """
        url = self.url(path)
        chunks = stream_chunks(
            self._open(url, body, timeout_s), url, parse, time.monotonic() + timeout_s, timeout_s
        )
        try:
            return read(chunks)
        finally:
            chunks.close()

    @contextmanager
    def _open(self, url: str, body: dict[str, Any], timeout_s: float) -> Iterator[httpx.Response]:
        with self._client.stream("POST", url, json=body, timeout=limits(timeout_s)) as response:
            if response.status_code >= 400:
                response.read()
                check_status(response, url, NATIVE_HINTS)
            yield response


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
    data = json_body(response, url, NOT_JSON).get("data")
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
        base_url, timeout_s=30, api_key_env=api_key_env, transport=transport
    ) as client:
        facts = served_model(client, "/models", model)
    reported = json.dumps(facts, sort_keys=True, separators=(",", ":")) if facts else "{}"
    return f"{client.base_url} {model} {reported}"


class StreamingBackend:
    """The backend contract over ``_generate_one``: one request, streamed.

    ``concurrency`` requests are in flight at once (the server's slots);
    ``time_limit_s`` (set by the ELYZA job from measured speed) bounds one
    request, else ``timeout_s``; ``retry`` says how the cache wrapper retries a
    request that met a ``Retryable`` failure. Loglikelihood raises
    :class:`NotSupported` with ``no_loglik``.
    """

    info: BackendInfo
    retry = RetryPolicy()
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
