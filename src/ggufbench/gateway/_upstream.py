"""An upstream OpenAI-compatible server as the gateway's model.

Always streams (``POST {base_url}/chat/completions`` with ``stream: true``) and
reads the server-sent events itself. ``delta.content`` is the model's raw
output; fields such as ``reasoning_content`` (thinking the server split off
itself) are never read, so they can never reach a client. Errors name the URL
and the HTTP status only: an upstream's error body may echo model output.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from ggufbench.errors import ConfigError
from ggufbench.gateway._model import Finish, GenParams, ModelFailed, ModelTimeout

_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _public_url(url: str) -> str:
    """The URL without user:password, for the audit log and messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


class _Usage:
    def __init__(self) -> None:
        self.reason: str | None = None
        self.prompt_tokens: int | None = None
        self.completion_tokens: int | None = None
        self.done = False

    def finish(self) -> Finish:
        if self.reason == "length":
            return Finish("length", self.prompt_tokens, self.completion_tokens)
        return Finish("stop", self.prompt_tokens, self.completion_tokens)


class UpstreamModel:
    """The model served by an OpenAI-compatible server."""

    max_parallel: int | None = None

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        timeout_s: float = 600.0,
        max_connections: int = 64,
        served_name: str | None = None,
    ) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self.identity = f"{_public_url(base_url)} {model}"
        self.name = served_name or model
        headers = {"Accept": "text/event-stream"}
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(f"environment variable {api_key_env} (upstream key) is not set")
            headers["Authorization"] = f"Bearer {key}"
        limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=16)
        timeout = httpx.Timeout(timeout_s, connect=min(10.0, timeout_s))
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits)

    def _body(self, params: GenParams) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self._model,
            "messages": [{"role": r, "content": c} for r, c in params.messages],
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if params.seed is not None:
            body["seed"] = params.seed
        return body

    async def stream(self, params: GenParams) -> AsyncIterator[str | Finish]:
        where = _public_url(self._url)
        usage = _Usage()
        try:
            async with self._client.stream("POST", self._url, json=self._body(params)) as resp:
                if resp.status_code != 200:
                    raise ModelFailed(f"the upstream {where} answered HTTP {resp.status_code}")
                async for line in resp.aiter_lines():
                    for piece in _event(line, usage, where):
                        yield piece
                    if usage.done:
                        break
        except httpx.TimeoutException as exc:
            raise ModelTimeout(f"the upstream {where} did not answer in time") from exc
        except httpx.HTTPError as exc:
            name = type(exc).__name__
            raise ModelFailed(f"the upstream {where} could not be reached ({name})") from exc
        if not usage.done and usage.reason is None:
            raise ModelFailed(f"the upstream {where} ended its stream before finishing")
        yield usage.finish()

    async def aclose(self) -> None:
        await self._client.aclose()


def _event(line: str, usage: _Usage, where: str) -> list[str]:
    """Text pieces in one SSE line; updates ``usage``; ``[DONE]`` sets ``usage.done``."""
    if not line.startswith("data:"):
        return []  # comments, event names, blank separators
    data = line[5:].strip()
    if data == "[DONE]":
        usage.done = True
        return []
    try:
        event = json.loads(data)
    except json.JSONDecodeError:
        raise ModelFailed(f"the upstream {where} sent an event that is not JSON") from None
    if not isinstance(event, dict) or "error" in event:
        raise ModelFailed(f"the upstream {where} reported an error in its stream")
    _read_usage(event.get("usage"), usage)
    pieces = []
    for choice in event.get("choices") or []:
        if not isinstance(choice, dict) or choice.get("index", 0) != 0:
            continue
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str) and content:
            # a broken "\\ud800" escape: not text, and not encodable for the client
            pieces.append(_LONE_SURROGATE.sub("\ufffd", content))
        if choice.get("finish_reason"):
            usage.reason = str(choice["finish_reason"])
    return pieces


def _read_usage(raw: object, usage: _Usage) -> None:
    if not isinstance(raw, dict):
        return
    for field in ("prompt_tokens", "completion_tokens"):
        value = raw.get(field)
        if isinstance(value, int) and value >= 0:
            setattr(usage, field, value)
