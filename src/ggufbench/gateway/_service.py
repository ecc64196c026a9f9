"""One request from admission to audit row, for every route.

``admit`` applies the rate limit and the concurrency gate; ``generate`` runs
the model through the thinking parser, writes exactly one audit row whatever
happens (answered, withheld, failed, cancelled) and only then returns. Failures
become :class:`GatewayError` with an HTTP status and a fixed sentence: no model
output is ever part of an error, a log line or an audit row. What a client gets
about the thinking is the row's keyed commitment, never a plain hash.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

import anyio

from ggufbench.gateway._audit import AuditError, AuditLog, AuditRecord
from ggufbench.gateway._commit import commitment
from ggufbench.gateway._limits import Gate, RateLimiter
from ggufbench.gateway._model import Finish, GenParams, ModelClient, ModelFailed, ModelTimeout
from ggufbench.gateway._settings import WITHHELD_MESSAGE, GatewaySettings
from ggufbench.thinking import EMPTY_SHA256, Parsed, StreamParser

log = logging.getLogger("ggufbench.gateway")


class GatewayError(Exception):
    """A request that ends in an HTTP error; ``message`` is safe to show and log.

    ``commitment`` is the audit row's, or None when no row was written.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        call: Call,
        retry_after: int | None = None,
        commitment: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.request_id = call.request_id
        self.retry_after = retry_after
        self.commitment = commitment


@dataclass(frozen=True)
class Call:
    """One request as the gateway sees it (the query only as a hash unless stored)."""

    request_id: str
    route: str
    key_id: str
    user_id: str | None
    query_sha256: str
    query: str | None
    params: GenParams
    when: str  # ISO 8601, UTC
    started: float = field(default_factory=time.perf_counter)


@dataclass(frozen=True)
class Outcome:
    request_id: str
    status: Literal["answered", "withheld"]
    answer: str  # the final answer, or the fixed withheld message
    parsed: Parsed
    finish: Finish
    released: str  # answer text already sent while streaming
    commitment: str  # the audit row's keyed commitment


@dataclass
class _Run:
    pieces: int = 0
    chars: int = 0
    released: list[str] = field(default_factory=list)
    finish: Finish | None = None


_EMPTY = Parsed(None, (), EMPTY_SHA256, 0, None)


class Gateway:
    def __init__(
        self, settings: GatewaySettings, model: ModelClient, audit: AuditLog, key: bytes
    ) -> None:
        self.settings = settings
        self.model = model
        self.audit = audit
        self.key = key  # the deployment's commitment key
        self.fmt = settings.thinking_format
        self.limiter = RateLimiter(settings.rate_limit_per_minute)
        limit = min(settings.max_concurrency, model.max_parallel or settings.max_concurrency)
        self.gate = Gate(limit, settings.max_queue, settings.queue_timeout_s)

    def new_call(
        self, route: str, key_id: str, user_id: str | None, query: str, params: GenParams
    ) -> Call:
        return Call(
            request_id=uuid.uuid4().hex,
            route=route,
            key_id=key_id,
            user_id=user_id,
            query_sha256=hashlib.sha256(query.encode("utf-8")).hexdigest(),
            query=query if self.settings.audit_store_query else None,
            params=params,
            when=datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        )

    async def admit(self, call: Call) -> None:
        """Take a generation slot, or audit the refusal and raise 429 / 503."""
        wait = self.limiter.retry_after(call.key_id)
        if wait:
            done = await self._write(call, "refused", "rate_limited", _EMPTY, _Run())
            message = f"rate limit reached; retry in {wait} s"
            raise GatewayError(429, "rate_limit_exceeded", message, call, wait, done)
        if not await self.gate.enter():
            done = await self._write(call, "refused", "busy", _EMPTY, _Run())
            message = "the gateway is busy; retry later"
            raise GatewayError(503, "server_busy", message, call, 5, done)

    async def generate(
        self,
        call: Call,
        on_release: Callable[[str], None] | None = None,
    ) -> Outcome:
        """Run an admitted call; audit it exactly once; return or raise GatewayError."""
        parser, run = StreamParser(self.fmt), _Run()
        try:
            try:
                with anyio.fail_after(self.settings.request_timeout_s):
                    await self._consume(call, parser, run, on_release)
            except (TimeoutError, ModelTimeout):
                parsed = parser.finish(truncated=True)
                done = await self._write(call, "error", "timeout", parsed, run)
                message = "the model did not answer in time"
                raise GatewayError(504, "timeout", message, call, commitment=done) from None
            except ModelFailed:
                parsed = parser.finish(truncated=True)
                done = await self._write(call, "error", "model_error", parsed, run)
                message = "the model failed to answer"
                raise GatewayError(502, "model_error", message, call, commitment=done) from None
            except BaseException as exc:  # cancelled (client gone) or a bug: audited all the same
                reason = "internal_error" if isinstance(exc, Exception) else "cancelled"
                await self._write(call, "error", reason, parser.finish(truncated=True), run)
                raise
            return await self._settle(call, parser, run)
        finally:
            self.gate.leave()

    async def _consume(
        self,
        call: Call,
        parser: StreamParser,
        run: _Run,
        on_release: Callable[[str], None] | None,
    ) -> None:
        async for item in self.model.stream(call.params):
            if isinstance(item, Finish):
                run.finish = item
                continue
            run.pieces += 1
            run.chars += len(item)
            text = parser.feed(item)
            if text:
                run.released.append(text)
                if on_release is not None:
                    on_release(text)
        if run.finish is None:
            raise ModelFailed("the model stream ended without finishing")

    async def _settle(self, call: Call, parser: StreamParser, run: _Run) -> Outcome:
        assert run.finish is not None
        parsed = parser.finish(truncated=run.finish.reason == "length")
        status: Literal["answered", "withheld"] = (
            "answered" if parsed.answer is not None else "withheld"
        )
        done = await self._write(call, status, parsed.withheld_reason, parsed, run)
        answer = parsed.answer if parsed.answer is not None else WITHHELD_MESSAGE
        released = "".join(run.released)
        return Outcome(call.request_id, status, answer, parsed, run.finish, released, done)

    async def _write(
        self, call: Call, status: str, reason: str | None, parsed: Parsed, run: _Run
    ) -> str:
        """Append the call's audit row; return its commitment."""
        record = self._record(call, status, reason, parsed, run)
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(self.audit.append, record)
            except AuditError as exc:
                log.error("request %s not audited: %s", call.request_id, exc)
                message = "the audit log could not be written"
                raise GatewayError(500, "audit_failed", message, call) from None
        log.info(
            "request %s %s %s%s in %d ms, thinking %d chars, commitment %s",
            call.request_id, call.route, status, f" ({reason})" if reason else "",
            record.latency_ms, parsed.thinking_length, record.commitment,
        )  # fmt: skip
        return record.commitment

    def _record(
        self, call: Call, status: str, reason: str | None, parsed: Parsed, run: _Run
    ) -> AuditRecord:
        finish = run.finish or Finish("stop")
        completion = (
            finish.completion_tokens if finish.completion_tokens is not None else run.pieces
        )
        thinking_tokens = round(completion * parsed.thinking_length / run.chars) if run.chars else 0
        answer = parsed.answer if parsed.answer is not None else "".join(run.released)
        return AuditRecord(
            time=call.when,
            request_id=call.request_id,
            route=call.route,
            user_id=call.user_id,
            api_key_id=call.key_id,
            model=self.model.identity,
            status=status,
            reason=reason,
            sections=tuple(
                {"name": s.name, "sha256": s.sha256, "length": s.length, "closed": s.closed}
                for s in parsed.sections
            ),
            thinking_sha256=parsed.thinking_sha256,
            thinking_chars=parsed.thinking_length,
            thinking_tokens=thinking_tokens,
            answer_chars=len(answer),
            prompt_tokens=finish.prompt_tokens,
            completion_tokens=completion,
            query_sha256=call.query_sha256,
            query=call.query,
            latency_ms=round((time.perf_counter() - call.started) * 1000),
            commitment=commitment(self.key, call.request_id, parsed.thinking_sha256),
        )
