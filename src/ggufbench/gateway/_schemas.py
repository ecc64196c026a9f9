"""Request bodies, with a bound on every field, and the SSE/JSON answer shapes."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_MESSAGES = 64
MAX_MESSAGE_CHARS = 10_000
MAX_TOTAL_CHARS = 100_000


class ThinkRequest(BaseModel):
    """POST /think: the SO8T-compatible request."""

    model_config = ConfigDict(extra="forbid")

    user_id: str = Field(min_length=1, max_length=256)
    query: str = Field(min_length=1, max_length=10_000)
    max_new_tokens: int = Field(512, ge=1, le=2048)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str = Field(max_length=MAX_MESSAGE_CHARS)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | Annotated[list[TextPart], Field(max_length=MAX_MESSAGES)]

    @field_validator("content")
    @classmethod
    def _size(cls, content: str | list[TextPart]) -> str | list[TextPart]:
        size = len(content) if isinstance(content, str) else sum(len(p.text) for p in content)
        if size > MAX_MESSAGE_CHARS:
            raise ValueError(f"a message holds at most {MAX_MESSAGE_CHARS} characters")
        return content

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")

    include_usage: bool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions; fields not listed here are ignored."""

    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, max_length=256)
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_tokens: int | None = Field(None, ge=1, le=2048)
    max_completion_tokens: int | None = Field(None, ge=1, le=2048)
    temperature: float = Field(0.7, ge=0.0, le=2.0)
    top_p: float = Field(0.9, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=1)
    seed: int | None = Field(None, ge=0, le=2**31 - 1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(None, min_length=1, max_length=256)

    @field_validator("messages")
    @classmethod
    def _total_size(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if sum(len(m.text()) for m in messages) > MAX_TOTAL_CHARS:
            raise ValueError(f"the messages hold more than {MAX_TOTAL_CHARS} characters in all")
        return messages

    def token_limit(self) -> int:
        return self.max_completion_tokens or self.max_tokens or 512

    def pairs(self) -> tuple[tuple[str, str], ...]:
        return tuple(
            ("system" if m.role == "developer" else m.role, m.text()) for m in self.messages
        )


def error_body(message: str, kind: str, code: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def sse(payload: dict[str, Any] | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish: str | None = None
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` event's payload."""
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
