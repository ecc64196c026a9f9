"""``create_app(settings)``: the gateway's routes, auth and error shapes.

Routes: ``POST /think`` (SO8T shape), ``POST /v1/chat/completions`` (OpenAI
shape, streamed or not), ``GET /v1/models`` and ``GET /health``. Every route
but ``/health`` needs ``Authorization: Bearer KEY``. Errors use OpenAI's JSON
shape and never carry model output. A response that has an audit row carries
its ``request_id`` and ``thinking_commitment``, never a plain thinking hash.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ggufbench.gateway._audit import AuditLog
from ggufbench.gateway._auth import ApiKeys
from ggufbench.gateway._commit import deployment_key
from ggufbench.gateway._model import GenParams, ModelClient
from ggufbench.gateway._schemas import ChatRequest, ThinkRequest, chunk, error_body, sse
from ggufbench.gateway._service import Call, Gateway, GatewayError, Outcome
from ggufbench.gateway._settings import GatewaySettings

log = logging.getLogger("ggufbench.gateway")


def create_app(
    settings: GatewaySettings, *, model: ModelClient | None = None, keys: ApiKeys | None = None
) -> FastAPI:
    """The gateway app; ``model`` and ``keys`` default to what ``settings`` names.

    A model passed in stays open when the app shuts down (its owner closes it);
    one made here from ``settings`` is closed with the app.
    """
    keys = keys or ApiKeys.from_env(settings.api_key_env)
    key = deployment_key(settings.audit_db, settings.commitment_key_env)
    owned = model is None
    client = model or _model_from(settings)
    audit = AuditLog(settings.audit_db)
    gateway = Gateway(settings, client, audit, key)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if owned:
            await client.aclose()
        audit.close()

    app = FastAPI(
        title="ggufbench gateway",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, gateway, keys)
    return app


def _model_from(settings: GatewaySettings) -> ModelClient:
    if settings.model_path is not None:
        from ggufbench.gateway._local import LocalModel

        return LocalModel.load(
            settings.model_path,
            n_ctx=settings.n_ctx,
            n_gpu_layers=settings.n_gpu_layers,
            n_threads=settings.n_threads,
            name=settings.served_model_name,
        )
    from ggufbench.gateway._upstream import UpstreamModel

    assert settings.base_url is not None and settings.upstream_model is not None
    return UpstreamModel(
        settings.base_url,
        settings.upstream_model,
        api_key_env=settings.upstream_api_key_env,
        timeout_s=settings.request_timeout_s,
        max_connections=settings.max_concurrency,
        served_name=settings.served_model_name,
    )


# --- errors ---------------------------------------------------------------------


def _json_error(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


_TYPE_TAGS = frozenset({"body", "str", "int", "float", "bool"})


def _field(loc: tuple[Any, ...]) -> str:
    """``messages[0].content`` from pydantic's loc, without union-member tags."""
    parts = [p for p in loc if isinstance(p, int) or (p.isidentifier() and p not in _TYPE_TAGS)]
    if parts and isinstance(parts[0], int):  # a position in a body that is not valid JSON
        return "body"
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "body"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = _field(tuple(first.get("loc", ())))
        message = f"{field}: {str(first.get('msg', 'invalid value')).removeprefix('Value error, ')}"
        return _json_error(
            422, error_body(message, "invalid_request_error", "invalid_value", field)
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        kind = "authentication_error" if exc.status_code == 401 else "invalid_request_error"
        body = error_body(str(exc.detail), kind, str(exc.status_code))
        return _json_error(exc.status_code, body, dict(exc.headers or {}))

    @app.exception_handler(GatewayError)
    async def gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        return _json_error(exc.status, _gateway_error_body(exc), _retry_headers(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s on %s", type(exc).__name__, request.url.path)
        return _json_error(500, error_body("internal error", "server_error", "internal_error"))


def _gateway_error_body(exc: GatewayError) -> dict[str, Any]:
    kind = "rate_limit_error" if exc.status == 429 else "server_error"
    body = error_body(exc.message, kind, exc.code)
    if exc.commitment is not None:  # the request has an audit row
        body["ggufbench"] = {"request_id": exc.request_id, "thinking_commitment": exc.commitment}
    return body


def _retry_headers(exc: GatewayError) -> dict[str, str]:
    headers = {"X-Request-Id": exc.request_id}
    if exc.retry_after:
        headers["Retry-After"] = str(exc.retry_after)
    return headers


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` with 413, before any route runs."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._refuse(scope, receive, send)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        await self.app(scope, _replay(bytes(body), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        text = f"the request body is larger than {self.max_bytes} bytes"
        response = JSONResponse(error_body(text, "invalid_request_error", "body_too_large"), 413)
        await response(scope, receive, send)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


# --- routes ---------------------------------------------------------------------


def _add_routes(app: FastAPI, gateway: Gateway, keys: ApiKeys) -> None:
    async def api_key(request: Request) -> str:
        ident = keys.check(request.headers.get("authorization"))
        if ident is None:
            log.warning(
                "401 on %s from %s", request.url.path, request.client and request.client.host
            )
            raise HTTPException(401, "a valid API key is required", {"WWW-Authenticate": "Bearer"})
        return ident

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(key: str = Depends(api_key)) -> dict[str, Any]:
        entry = {"id": gateway.model.name, "object": "model", "created": 0, "owned_by": "ggufbench"}
        return {"object": "list", "data": [entry]}

    @app.post("/think")
    async def think(body: ThinkRequest, key: str = Depends(api_key)) -> dict[str, Any]:
        params = GenParams(
            _with_system(gateway, (("user", body.query),)),
            body.max_new_tokens,
            body.temperature,
            body.top_p,
        )
        call = gateway.new_call("/think", key, body.user_id, body.query, params)
        await gateway.admit(call)
        outcome = await gateway.generate(call)
        return {**_extension(outcome), "answer": outcome.answer}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(
        body: ChatRequest, key: str = Depends(api_key)
    ) -> dict[str, Any] | StreamingResponse | JSONResponse:
        params = GenParams(
            _with_system(gateway, body.pairs()),
            body.token_limit(),
            body.temperature,
            body.top_p,
            body.seed,
        )
        query = json.dumps([list(p) for p in body.pairs()], ensure_ascii=False)
        call = gateway.new_call("/v1/chat/completions", key, body.user, query, params)
        await gateway.admit(call)
        if body.stream:
            return await _stream(gateway, call)
        outcome = await gateway.generate(call)
        return _completion(gateway, outcome)


def _with_system(
    gateway: Gateway, pairs: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, str], ...]:
    """The operator's system prompt first, merged with the client's system message."""
    prompt = gateway.settings.effective_system_prompt
    if not prompt:
        return pairs
    if pairs and pairs[0][0] == "system":
        return (("system", f"{prompt}\n\n{pairs[0][1]}"), *pairs[1:])
    return (("system", prompt), *pairs)


def _usage(outcome: Outcome) -> dict[str, int] | None:
    """Token counts, or None (as OpenAI sends it) when the model did not report them."""
    prompt = outcome.finish.prompt_tokens
    completion = outcome.finish.completion_tokens
    if prompt is None or completion is None:
        return None
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _extension(outcome: Outcome) -> dict[str, Any]:
    """What a client may know of a request beyond its answer: never a plain thinking hash."""
    return {
        "request_id": outcome.request_id,
        "status": outcome.status,
        "thinking_commitment": outcome.commitment,
    }


def _completion(gateway: Gateway, outcome: Outcome) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{outcome.request_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": gateway.model.name,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": outcome.answer},
                "finish_reason": outcome.finish.reason,
            }
        ],
        "usage": _usage(outcome),
        "ggufbench": _extension(outcome),
    }


async def _stream(gateway: Gateway, call: Call) -> StreamingResponse | JSONResponse:
    """Respond once answer text is certain, or the generation ended.

    So a failure before any answer text is an HTTP error in JSON, like a
    request that is not streamed; only a failure after it is an SSE error event.
    """
    queue: asyncio.Queue[object] = asyncio.Queue()
    ready = asyncio.Event()

    def release(text: str) -> None:
        queue.put_nowait(text)
        ready.set()

    async def produce() -> None:
        try:
            queue.put_nowait(await gateway.generate(call, release))
        except GatewayError as exc:
            queue.put_nowait(exc)
        except BaseException as exc:  # a bug or a cancel: the reader gets an end, never a hang
            queue.put_nowait(GatewayError(500, "internal_error", "internal error", call))
            if not isinstance(exc, Exception):
                raise
            log.error("unexpected %s in request %s", type(exc).__name__, call.request_id)
        finally:
            ready.set()

    task = asyncio.create_task(produce())
    await ready.wait()
    if task.done() and queue.qsize() == 1:
        item = queue.get_nowait()
        if isinstance(item, GatewayError):
            return _json_error(item.status, _gateway_error_body(item), _retry_headers(item))
        queue.put_nowait(item)
    events = _events(gateway, call, queue, task)
    return StreamingResponse(
        events, media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _events(
    gateway: Gateway, call: Call, queue: asyncio.Queue[object], task: asyncio.Task[None]
) -> AsyncGenerator[str, None]:
    cid, name = f"chatcmpl-{call.request_id}", gateway.model.name
    try:
        yield sse(chunk(cid, name, {"role": "assistant", "content": ""}))
        while True:
            item = await queue.get()
            if isinstance(item, str):
                yield sse(chunk(cid, name, {"content": item}))
            elif isinstance(item, GatewayError):
                yield sse(_gateway_error_body(item))
                break
            elif isinstance(item, Outcome):
                if len(item.answer) > len(item.released):
                    yield sse(chunk(cid, name, {"content": item.answer[len(item.released) :]}))
                final = chunk(cid, name, {}, item.finish.reason)
                final.update(usage=_usage(item), ggufbench=_extension(item))
                yield sse(final)
                break
        yield sse("[DONE]")
    finally:
        if not task.done():
            task.cancel()
