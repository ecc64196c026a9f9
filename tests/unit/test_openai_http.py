"""The OpenAI-compatible backend against httpx.MockTransport: no server, no sleeping.

The backend raises a failure another attempt may not meet (``Retryable``) at once;
the retry layer the cache wrapper calls it through (:mod:`ggufbench.retries`) tries
again as the backend's ``retry`` policy says: :func:`retried` calls it that way.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import pytest

from ggufbench import retries
from ggufbench.backends._base import (
    Backend,
    GenRequest,
    GenResult,
    LoglikRequest,
    NotSupported,
    Retryable,
)
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.errors import BackendError, BackendTimeout, ConfigError

BASE = "http://judge.test/v1"
CHAT = GenRequest(messages=(("user", "こんにちは"),), max_tokens=8, grammar="root ::= [1-5]")
TEXT = GenRequest(prompt="1 + 1 =", max_tokens=4, stop=("\n",))
SECRET = "MODEL-OUTPUT-THAT-MUST-NOT-LEAK"

Handler = Callable[[httpx.Request], httpx.Response]


def chat_body(text: str = "4", finish: str = "stop") -> dict[str, object]:
    return {
        "choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 1},
    }


def make(handler: Handler, **kwargs: object) -> tuple[OpenAIBackend, list[float]]:
    sleeps: list[float] = []
    options: dict[str, object] = {"retries": 3, "backoff_s": 0.5, **kwargs}
    backend = OpenAIBackend(
        BASE,
        "judge-model",
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
        **options,  # type: ignore[arg-type]
    )
    return backend, sleeps


def retried(backend: OpenAIBackend, request: GenRequest) -> GenResult:
    """One answer, through the retry layer as the cache wrapper calls the backend."""
    (result,) = retries.call(lambda: backend.generate([request]), retries.policy_of(backend))
    return result


def scripted(
    script: Sequence[httpx.Response | Exception],
) -> tuple[Handler, list[httpx.Request]]:
    responses = list(script)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = responses.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


def test_chat_request_body_and_result() -> None:
    handler, seen = scripted([httpx.Response(200, json=chat_body("5", "length"))])
    backend, _ = make(handler)
    [result] = backend.generate([CHAT])
    assert result == GenResult("5", "length", n_prompt_tokens=11, n_tokens=1)
    assert str(seen[0].url) == f"{BASE}/chat/completions"
    body = json.loads(seen[0].content)
    assert body["model"] == "judge-model"
    assert body["messages"] == [{"role": "user", "content": "こんにちは"}]
    assert body["max_tokens"] == 8 and body["temperature"] == 0.0
    assert body["grammar"] == "root ::= [1-5]"
    assert "stop" not in body


def test_text_request_goes_to_completions() -> None:
    reply = {"choices": [{"text": " 2", "finish_reason": "stop"}]}
    handler, seen = scripted([httpx.Response(200, json=reply)])
    backend, _ = make(handler)
    assert backend.generate([TEXT])[0].text == " 2"
    assert str(seen[0].url) == f"{BASE}/completions"
    body = json.loads(seen[0].content)
    assert body["prompt"] == "1 + 1 =" and body["stop"] == ["\n"]


def test_info_and_contract() -> None:
    backend, _ = make(scripted([])[0])
    assert isinstance(backend, Backend)
    assert backend.info.runner == "openai"
    assert backend.info.identity == f"{BASE} judge-model"
    with pytest.raises(NotSupported, match="judge.test"):
        backend.loglikelihood([LoglikRequest("a", "b")])
    with pytest.raises(NotSupported):
        backend.loglikelihood_rolling(["a"])


def test_429_honours_retry_after_seconds() -> None:
    handler, seen = scripted(
        [httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=chat_body())]
    )
    backend, sleeps = make(handler)
    assert retried(backend, CHAT).text == "4"
    assert sleeps == [7.0] and len(seen) == 2


def test_429_honours_retry_after_http_date() -> None:
    when = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    handler, _ = scripted(
        [httpx.Response(429, headers={"Retry-After": when}), httpx.Response(200, json=chat_body())]
    )
    backend, sleeps = make(handler)
    retried(backend, CHAT)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31


def test_5xx_retried_with_exponential_backoff() -> None:
    handler, seen = scripted(
        [httpx.Response(500), httpx.Response(502), httpx.Response(503)]
        + [httpx.Response(200, json=chat_body())]
    )
    backend, sleeps = make(handler)
    assert retried(backend, CHAT).text == "4"
    assert sleeps == [0.5, 1.0, 2.0] and len(seen) == 4


def test_5xx_gives_up_after_retries_with_the_url() -> None:
    handler, seen = scripted([httpx.Response(500, text=SECRET) for _ in range(3)])
    backend, sleeps = make(handler, retries=2)
    with pytest.raises(Retryable) as info:
        retried(backend, CHAT)
    message = str(info.value)
    assert f"{BASE}/chat/completions" in message and "500" in message
    assert SECRET not in message
    assert len(seen) == 3 and sleeps == [0.5, 1.0]


def test_connection_error_retried() -> None:
    handler, seen = scripted(
        [httpx.ConnectError("refused"), httpx.Response(200, json=chat_body("3"))]
    )
    backend, sleeps = make(handler)
    assert retried(backend, CHAT).text == "3"
    assert sleeps == [0.5]


def test_connection_error_exhausted_names_url() -> None:
    handler, _ = scripted([httpx.ConnectError("refused") for _ in range(2)])
    backend, _ = make(handler, retries=1)
    with pytest.raises(Retryable, match=r"cannot connect to http://judge\.test/v1"):
        retried(backend, CHAT)


def test_read_timeout_is_backend_timeout_and_not_retried() -> None:
    handler, seen = scripted([httpx.ReadTimeout("slow")])
    backend, sleeps = make(handler, timeout_s=5)
    with pytest.raises(BackendTimeout, match=r"judge\.test/v1/chat/completions.*5 s"):
        retried(backend, CHAT)
    assert len(seen) == 1 and sleeps == []


def test_4xx_not_retried_and_body_not_quoted() -> None:
    handler, seen = scripted([httpx.Response(404, json={"error": {"message": SECRET}})])
    backend, _ = make(handler)
    with pytest.raises(BackendError) as info:
        retried(backend, TEXT)
    assert "404" in str(info.value) and "/v1" in str(info.value)
    assert SECRET not in str(info.value) and len(seen) == 1


def test_not_openai_json() -> None:
    handler, _ = scripted([httpx.Response(200, text="<html>" + SECRET)])
    backend, _ = make(handler)
    with pytest.raises(BackendError, match="JSON object") as info:
        backend.generate([CHAT])
    assert SECRET not in str(info.value)
    handler, _ = scripted([httpx.Response(200, json={"result": SECRET})])
    backend, _ = make(handler)
    with pytest.raises(BackendError, match="without choices"):
        backend.generate([CHAT])


def test_grammar_dropped_after_rejection_in_auto_mode() -> None:
    handler, seen = scripted(
        [
            httpx.Response(400),
            httpx.Response(200, json=chat_body()),
            httpx.Response(200, json=chat_body()),
        ]
    )
    backend, _ = make(handler)
    backend.generate([CHAT])
    backend.generate([CHAT])
    assert ["grammar" in json.loads(r.content) for r in seen] == [True, False, False]


def test_grammar_never_sent_when_off_and_kept_when_on() -> None:
    handler, seen = scripted([httpx.Response(200, json=chat_body())])
    backend, _ = make(handler, send_grammar=False)
    backend.generate([CHAT])
    assert "grammar" not in json.loads(seen[0].content)
    handler, seen = scripted([httpx.Response(400)])
    backend, _ = make(handler, send_grammar=True)
    with pytest.raises(BackendError, match="400"):
        backend.generate([CHAT])
    assert len(seen) == 1


def test_api_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GGUFBENCH_TEST_KEY", "sk-test")
    handler, seen = scripted([httpx.Response(200, json=chat_body())])
    backend, _ = make(handler, api_key_env="GGUFBENCH_TEST_KEY")
    backend.generate([CHAT])
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert "sk-test" not in json.dumps(backend.info.settings) + backend.info.identity
    monkeypatch.delenv("GGUFBENCH_TEST_KEY")
    with pytest.raises(ConfigError, match="GGUFBENCH_TEST_KEY"):
        make(handler, api_key_env="GGUFBENCH_TEST_KEY")


def test_invalid_limits_and_url() -> None:
    with pytest.raises(ConfigError, match="http"):
        OpenAIBackend("127.0.0.1:8000/v1", "m")
    with pytest.raises(ConfigError, match="concurrency"):
        OpenAIBackend(BASE, "m", concurrency=0)


def test_generate_runs_up_to_concurrency_in_parallel() -> None:
    lock = threading.Lock()
    state = {"now": 0, "peak": 0}

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.02)
        with lock:
            state["now"] -= 1
        prompt = json.loads(request.content)["prompt"]
        return httpx.Response(200, json={"choices": [{"text": prompt.upper()}]})

    backend, _ = make(handler, concurrency=3)
    requests = [GenRequest(prompt=f"p{i}") for i in range(9)]
    results = backend.generate(requests)
    assert [r.text for r in results] == [f"P{i}" for i in range(9)]
    assert 2 <= state["peak"] <= 3


def test_generate_each_keeps_failures_in_place() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        prompt = json.loads(request.content)["prompt"]
        if prompt == "bad":
            return httpx.Response(422)
        return httpx.Response(200, json={"choices": [{"text": "ok"}]})

    done: list[int] = []
    backend, _ = make(handler, concurrency=2)
    requests = [GenRequest(prompt=p) for p in ("a", "bad", "c")]
    outcomes = backend.generate_each(requests, on_done=lambda i, _: done.append(i))
    assert isinstance(outcomes[1], BackendError) and not isinstance(outcomes[0], BackendError)
    assert sorted(done) == [0, 1, 2]
    with pytest.raises(BackendError, match="422"):
        backend.generate(requests)


def sse(events: list[object]) -> bytes:
    lines = [f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events]
    return ("".join(lines) + "data: [DONE]\n\n").encode()


def test_stream_chat_pieces() -> None:
    events: list[object] = [
        {"choices": [{"delta": {"role": "assistant"}}]},
        {"choices": [{"delta": {"content": "<thi"}}]},
        {"choices": [{"delta": {"content": "nk>x</think>答え"}}]},
        {"choices": [{"delta": {}, "finish_reason": "stop"}]},
    ]
    script = [httpx.Response(503), httpx.Response(503), httpx.Response(200, content=sse(events))]
    handler, seen = scripted(script)
    backend, sleeps = make(handler)
    with pytest.raises(Retryable, match="503"):
        list(backend.stream(CHAT))  # raised at once: the retry layer tries again
    pieces: Iterator[str] = retries.call(lambda: list(backend.stream(CHAT)), backend.retry)
    assert list(pieces) == ["<thi", "nk>x</think>答え"]
    assert json.loads(seen[2].content)["stream"] is True and sleeps == [0.5]


def test_stream_text_and_error_event() -> None:
    events: list[object] = [{"choices": [{"text": "a"}]}, {"choices": [{"text": "b"}]}]
    handler, _ = scripted([httpx.Response(200, content=sse(events))])
    backend, _ = make(handler)
    assert "".join(backend.stream(TEXT)) == "ab"
    handler, _ = scripted([httpx.Response(200, content=sse([{"error": {"message": SECRET}}]))])
    backend, _ = make(handler)
    with pytest.raises(BackendError, match="error event") as info:
        list(backend.stream(TEXT))
    assert SECRET not in str(info.value)


def test_stream_resends_without_a_rejected_grammar() -> None:
    events: list[object] = [{"choices": [{"delta": {"content": "4"}}]}]
    handler, seen = scripted([httpx.Response(422), httpx.Response(200, content=sse(events))])
    backend, sleeps = make(handler)
    assert list(backend.stream(CHAT)) == ["4"]
    assert ["grammar" in json.loads(r.content) for r in seen] == [True, False] and sleeps == []


def test_stream_read_timeout() -> None:
    handler, _ = scripted([httpx.ReadTimeout("slow")])
    backend, _ = make(handler, timeout_s=2)
    with pytest.raises(BackendTimeout, match="2 s"):
        list(backend.stream(TEXT))
