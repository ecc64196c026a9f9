"""The gateway on a real uvicorn server with SmolLM2 run in-process.

The model is asked to copy a line holding ``<think>…</think><final>…</final>``;
at temperature 0 it does, so real thinking text comes out of a real model. The
gateway's answer and audited hashes must equal what the same backend generates
directly, parsed by the shared parser, and the thinking must reach no client,
log or audit database byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from ggufbench.backends._base import GenRequest
from ggufbench.gateway import ApiKeys, GatewaySettings, create_app, export, verify
from ggufbench.gateway._local import LocalModel
from ggufbench.testmodels import smollm2_path
from ggufbench.thinking import Parsed, parse, thinking_format

KEY = "smollm2-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = "Copy this line exactly:\n<think>two plus two</think><final>4</final>"
MAX_TOKENS = 64
QUAD = thinking_format("quad")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(scope="module")
def model() -> Iterator[LocalModel]:
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    path = smollm2_path()
    backend = LlamaCppBackend(path, n_ctx=1024, n_threads=2)
    local = LocalModel(backend, identity=f"test {path.name}", name="smollm2")
    yield local
    backend.close()


@pytest.fixture(scope="module")
def direct(model: LocalModel) -> tuple[str, Parsed]:
    """What the backend generates for QUERY without the gateway, and its parse."""
    backend: Any = model._backend
    request = GenRequest(messages=(("user", QUERY),), max_tokens=MAX_TOKENS, temperature=0.0)
    text = "".join(backend.stream(request))
    return text, parse(text, QUAD, truncated=backend.last_finish_reason == "length")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, model: LocalModel) -> Iterator[tuple]:
    db = tmp_path_factory.mktemp("smol") / "audit.sqlite"
    settings = GatewaySettings(
        model_path=Path("unused.gguf"), system_prompt="", audit_db=db, rate_limit_per_minute=0
    )
    app = create_app(settings, model=model, keys=ApiKeys([KEY]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}", db
    server.should_exit = True
    thread.join(timeout=10)


def rows(db: Path) -> list[dict[str, Any]]:
    out = io.StringIO()
    export(db, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def thinking_texts(text: str, parsed: Parsed) -> list[str]:
    """The thinking as emitted, checked against the parser's hashes."""
    inner = re.findall(r"<think>(.*?)</think>", text, flags=re.S)
    assert [sha(i) for i in inner] == [s.sha256 for s in parsed.sections]
    return inner


def assert_hidden(secrets: list[str], *places: str | bytes) -> None:
    for secret in secrets:
        for place in places:
            data = place if isinstance(place, bytes) else place.encode()
            assert secret.encode() not in data


def db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")


def test_the_model_really_thinks(direct: tuple[str, Parsed]) -> None:
    text, parsed = direct
    assert parsed.sections, f"SmolLM2 no longer copies the tags; pick another QUERY ({text!r})"


def test_think_route_matches_direct_generation(
    gateway: tuple, direct: tuple[str, Parsed], caplog: pytest.LogCaptureFixture
) -> None:
    url, db = gateway
    text, expected = direct
    body = {"user_id": "smol", "query": QUERY, "temperature": 0, "max_new_tokens": MAX_TOKENS}
    resp = httpx.post(f"{url}/think", json=body, headers=AUTH, timeout=60)
    assert resp.status_code == 200
    data = resp.json()
    assert data["status"] == ("answered" if expected.answer is not None else "withheld")
    if expected.answer is not None:
        assert data["answer"] == expected.answer
    assert data["internal_reasoning_hash"] == expected.thinking_sha256
    (row,) = [r for r in rows(db) if r["request_id"] == data["request_id"]]
    assert row["thinking_sha256"] == expected.thinking_sha256
    assert [s["sha256"] for s in row["sections"]] == [s.sha256 for s in expected.sections]
    assert row["model"] == "test SmolLM2-135M-Instruct.Q4_1.gguf"
    secrets = thinking_texts(text, expected)
    assert_hidden(secrets, resp.content, caplog.text, db_bytes(db))


def test_chat_stream_matches_direct_generation(
    gateway: tuple, direct: tuple[str, Parsed], caplog: pytest.LogCaptureFixture
) -> None:
    url, db = gateway
    text, expected = direct
    body = {
        "messages": [{"role": "user", "content": QUERY}],
        "temperature": 0,
        "max_tokens": MAX_TOKENS,
        "stream": True,
    }
    resp = httpx.post(f"{url}/v1/chat/completions", json=body, headers=AUTH, timeout=60)
    assert resp.status_code == 200
    events = [json.loads(x[6:]) for x in resp.text.splitlines() if x.startswith("data: {")]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    if expected.answer is not None:
        assert content == expected.answer
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    assert events[-1]["ggufbench"]["internal_reasoning_hash"] == expected.thinking_sha256
    assert_hidden(thinking_texts(text, expected), resp.content, caplog.text, db_bytes(db))


def test_concurrent_requests_share_one_model(gateway: tuple) -> None:
    url, db = gateway
    before = len(rows(db))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=120) as client:
            body = {"user_id": "u", "query": QUERY, "max_new_tokens": MAX_TOKENS, "temperature": 0}
            return await asyncio.gather(*(client.post("/think", json=body) for _ in range(3)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 3
    # greedy and one generation at a time: every answer and hash is the same
    assert len({(r.json()["answer"], r.json()["internal_reasoning_hash"]) for r in responses}) == 1
    assert len(rows(db)) == before + 3
    assert verify(db).rows == before + 3
