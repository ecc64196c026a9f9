"""What every runner that talks HTTP shares (``openai``, ``llama-server``, ``ollama``).

- Errors as one sentence that names the URL and never quotes the server's body
  (it may echo the prompt): a status (:func:`check_status`), a transport failure
  (:func:`transport_error`), a body that is not JSON (:func:`json_body`). Failures
  another attempt may not meet (429, 5xx, a connection lost before the answer
  began) are :class:`~ggufbench.backends._base.Retryable`, raised at once; the
  cache wrapper retries them (:mod:`ggufbench.retries`).
- A streamed answer: the response's lines parsed into :class:`Chunk` objects
  (:func:`stream_chunks`, with the request's time limit), and read up to the
  first stop string (:func:`read_generation`; in the answer only, for a thinking
  model). The caller closes the stream then, which ends the generation on the server.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Literal

import httpx

from ggufbench.backends._base import GenResult, Retryable
from ggufbench.errors import BackendError, BackendTimeout, ConfigError
from ggufbench.thinking import AnswerCut, ThinkingFormat, thinking_format

__all__ = [
    "RETRY_STATUS",
    "Chunk",
    "Finish",
    "check_status",
    "json_body",
    "json_line",
    "limits",
    "read_generation",
    "request_headers",
    "stream_chunks",
    "timeout_error",
    "transport_error",
]

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
Finish = Literal["stop", "length"]
PLAIN = thinking_format(None)


def request_headers(api_key_env: str | None, base_url: str) -> dict[str, str]:
    """JSON, and the bearer key from ``api_key_env`` when one is named."""
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


def limits(seconds: float) -> httpx.Timeout:
    """``seconds`` for the whole request; connecting gets at most 30 of them."""
    return httpx.Timeout(seconds, connect=min(seconds, 30.0))


def timeout_error(url: str, timeout_s: float) -> BackendTimeout:
    return BackendTimeout(
        f"the request to {url} took longer than {timeout_s:g} s; "
        "raise the timeout or lower max_tokens"
    )


def transport_error(exc: httpx.HTTPError, url: str, timeout_s: float) -> BackendError:
    """An httpx failure as a BackendTimeout, or a Retryable connection failure."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError):
        return Retryable(
            f"cannot connect to {url} ({type(exc).__name__}); start the server or correct base_url"
        )
    if isinstance(exc, httpx.TimeoutException):
        return timeout_error(url, timeout_s)
    if isinstance(exc, httpx.TransportError):
        return Retryable(
            f"the connection to {url} failed ({type(exc).__name__}); check that the server is up"
        )
    return BackendError(f"the request to {url} failed ({type(exc).__name__})")


def retry_after_s(headers: httpx.Headers) -> float | None:
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


def check_status(response: httpx.Response, url: str, hints: Mapping[int, str]) -> None:
    """An error status as one sentence, with the hint for its code (``hints``)."""
    code = response.status_code
    if code < 400:
        return
    if code in RETRY_STATUS:
        wait = retry_after_s(response.headers) if code in (429, 503) else None
        raise Retryable(f"{url} answered HTTP {code}; the server is busy, try again later", wait)
    hint = hints.get(code, "check the request settings (max_tokens, stop, model)")
    raise BackendError(f"{url} answered HTTP {code}; {hint}")


def json_body(response: httpx.Response, url: str, hint: str) -> dict[str, Any]:
    """The response's JSON object; otherwise a sentence ending in ``hint``."""
    try:
        data = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict):
        raise BackendError(f"{url} did not answer with a JSON object; {hint}")
    return data


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


@dataclass(frozen=True)
class Chunk:
    """One streamed event: text, the tokens it holds, and, on the last, how it ended."""

    text: str = ""
    n_tokens: int = 0
    finish: Finish | None = None
    n_prompt: int | None = None
    done: bool = False


def stream_chunks(
    opened: AbstractContextManager[httpx.Response],
    url: str,
    parse: Callable[[str], Chunk | None],
    deadline: float,
    timeout_s: float,
) -> Generator[Chunk, None, None]:
    """The chunks of the streamed response that ``opened`` gives (its status already
    checked), each line through ``parse``, until ``deadline`` (monotonic) passes.

    A transport failure before the first chunk is the failure itself (retryable); once
    the answer has begun it is a plain :class:`BackendError`.
    """
    started = False
    try:
        with opened as response:
            for line in response.iter_lines():
                if time.monotonic() > deadline:
                    raise timeout_error(url, timeout_s)
                chunk = parse(line)
                if chunk is not None:
                    started = True
                    yield chunk
    except httpx.HTTPError as exc:
        error = transport_error(exc, url, timeout_s)
        if started and isinstance(error, Retryable):
            raise BackendError(
                f"the stream from {url} broke off after it had started; retry the request"
            ) from exc
        raise error from exc


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
