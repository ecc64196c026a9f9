"""The gateway's small parts: keys, limits, settings, SSE reading, request bounds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ggufbench.errors import BackendError, ConfigError
from ggufbench.gateway import QUAD_SYSTEM_PROMPT, ApiKeys, key_id, load_settings
from ggufbench.gateway._app import _field
from ggufbench.gateway._limits import Gate, RateLimiter
from ggufbench.gateway._local import LocalModel
from ggufbench.gateway._model import Finish, GenParams, ModelFailed
from ggufbench.gateway._schemas import ChatRequest
from ggufbench.gateway._upstream import _event, _public_url, _Usage

KEYS = ["first-key-0123456789", "second-key-0123456789"]


def test_keys_accept_only_bearer_of_a_known_key() -> None:
    keys = ApiKeys(KEYS)
    assert keys.check(f"Bearer {KEYS[1]}") == key_id(KEYS[1])
    assert keys.check(f"bearer  {KEYS[0]} ") == key_id(KEYS[0])
    for bad in [None, "", "Bearer", f"Basic {KEYS[0]}", f"Bearer {KEYS[0]}x", KEYS[0]]:
        assert keys.check(bad) is None
    assert KEYS[0] not in key_id(KEYS[0]) and len(key_id(KEYS[0])) == 16


def test_keys_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_KEYS", f" {KEYS[0]} ,{KEYS[1]},")
    assert ApiKeys.from_env("GW_KEYS").check(f"Bearer {KEYS[1]}")
    monkeypatch.setenv("GW_KEYS", " , ")
    with pytest.raises(ConfigError, match="GW_KEYS holds no API key"):
        ApiKeys.from_env("GW_KEYS")


def test_rate_limiter_per_key() -> None:
    limiter = RateLimiter(2)
    assert [limiter.retry_after("a") for _ in range(3)] == [0, 0, 30]
    assert limiter.retry_after("b") == 0
    assert all(RateLimiter(0).retry_after("a") == 0 for _ in range(100))


def test_gate_queues_then_refuses() -> None:
    async def scenario() -> list[bool]:
        gate = Gate(1, max_queue=1, timeout_s=0.2)
        assert await gate.enter()
        waiting = asyncio.create_task(gate.enter())
        await asyncio.sleep(0.01)
        refused = await gate.enter()  # the queue is full
        gate.leave()
        admitted = await waiting
        timed_out = await gate.enter()  # nobody leaves: waits 0.2 s then gives up
        return [refused, admitted, timed_out]

    assert asyncio.run(scenario()) == [False, True, False]


def test_settings_sentences() -> None:
    with pytest.raises(ConfigError, match="either --model"):
        load_settings()
    with pytest.raises(ConfigError, match="needs --upstream-model"):
        load_settings(base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ConfigError, match="--thinking none"):
        load_settings(model_path=Path("m.gguf"), thinking="none")
    with pytest.raises(ConfigError, match="not valid"):
        load_settings(model_path=Path("m.gguf"), thinking="<think>")
    with pytest.raises(ConfigError, match="max_concurrency"):
        load_settings(model_path=Path("m.gguf"), max_concurrency=0)


def test_system_prompt_defaults() -> None:
    quad = load_settings(model_path=Path("m.gguf"))
    assert quad.effective_system_prompt == QUAD_SYSTEM_PROMPT and quad.host == "127.0.0.1"
    assert load_settings(model_path=Path("m.gguf"), thinking="think").effective_system_prompt == ""
    own = load_settings(model_path=Path("m.gguf"), system_prompt="be kind")
    assert own.effective_system_prompt == "be kind"


def test_sse_lines() -> None:
    usage = _Usage()
    where = "http://h/v1"
    delta = '{"choices":[{"index":0,"delta":{"content":"<thi"},"finish_reason":null}]}'
    assert _event(f"data: {delta}", usage, where) == ["<thi"]
    assert _event(": keep-alive", usage, where) == []
    assert _event("event: message", usage, where) == []
    reasoning = '{"choices":[{"index":0,"delta":{"reasoning_content":"hidden"}}]}'
    assert _event(f"data: {reasoning}", usage, where) == []
    end = (
        '{"choices":[{"index":0,"delta":{},"finish_reason":"length"}],"usage":{"prompt_tokens":3}}'
    )
    assert _event(f"data:{end}", usage, where) == []
    assert usage.finish().reason == "length" and usage.finish().prompt_tokens == 3
    assert _event("data: [DONE]", usage, where) == [] and usage.done


@pytest.mark.parametrize(
    "line", ["data: {secret", 'data: {"error": {"message": "secret"}}', "data: 3"]
)
def test_sse_failures_never_quote_the_stream(line: str) -> None:
    with pytest.raises(ModelFailed) as info:
        _event(line, _Usage(), "http://h/v1")
    assert "secret" not in str(info.value)


def test_public_url_drops_credentials() -> None:
    assert _public_url("http://user:pw@host:8000/v1/") == "http://host:8000/v1"


def test_field_names_from_pydantic() -> None:
    with pytest.raises(ValidationError) as info:
        ChatRequest.model_validate({"messages": [{"role": "user", "content": 5}]})
    fields = {_field(("body", *e["loc"])) for e in info.value.errors()}
    assert fields <= {"messages[0].content", "messages[0].content[0]"} and fields
    assert _field(("body",)) == "body"


def test_chat_request_bounds() -> None:
    request = ChatRequest.model_validate(
        {"messages": [{"role": "developer", "content": [{"type": "text", "text": "hi"}]}]}
    )
    assert request.pairs() == (("system", "hi"),) and request.token_limit() == 512
    too_big = [{"role": "user", "content": "x" * 9_000}] * 12
    with pytest.raises(ValidationError, match="100000 characters"):
        ChatRequest.model_validate({"messages": too_big})


class FakeBackend:
    """Yields pieces from a list; records how far it got."""

    def __init__(self, pieces: list[str], fail: bool = False) -> None:
        self.pieces, self.fail, self.sent = pieces, fail, 0
        self.last_finish_reason, self.last_n_tokens = "length", len(pieces)

    def stream(self, request: object) -> Iterator[str]:
        for piece in self.pieces:
            self.sent += 1
            time.sleep(0.01)
            yield piece
        if self.fail:
            raise BackendError("native failure with <think>secret</think> in it")

    def apply_chat_template(self, messages: object) -> str:
        return "prompt"

    def tokenize(self, text: str, add_bos: bool = False) -> list[int]:
        return [1, 2, 3]

    def close(self) -> None:
        pass


async def collect(model: LocalModel, limit: int | None = None) -> list[object]:
    out: list[object] = []
    params = GenParams((("user", "q"),), 8, 0.0, 1.0)
    stream = model.stream(params)
    async for item in stream:
        out.append(item)
        if limit is not None and len(out) >= limit:
            await stream.aclose()  # type: ignore[attr-defined]
            break
    return out


def test_local_model_streams_then_finishes() -> None:
    model = LocalModel(FakeBackend(["a", "b"]), identity="x", name="x")  # type: ignore[arg-type]
    assert asyncio.run(collect(model)) == ["a", "b", Finish("length", 3, 2)]


def test_local_model_stops_when_the_reader_goes() -> None:
    backend = FakeBackend([str(i) for i in range(100)])
    model = LocalModel(backend, identity="x", name="x")  # type: ignore[arg-type]
    assert asyncio.run(collect(model, limit=2)) == ["0", "1"]
    time.sleep(0.1)
    assert backend.sent < 20


def test_local_model_failure_is_one_safe_sentence() -> None:
    model = LocalModel(FakeBackend(["a"], fail=True), identity="x", name="x")  # type: ignore[arg-type]
    with pytest.raises(ModelFailed) as info:
        asyncio.run(collect(model))
    assert "secret" not in str(info.value)


def test_sse_lone_surrogates_become_replacement_characters() -> None:
    line = 'data: {"choices":[{"index":0,"delta":{"content":"a\\ud800b\\ud83d\\ude00"}}]}'
    assert _event(line, _Usage(), "http://h/v1") == ["a\ufffdb\U0001f600"]
