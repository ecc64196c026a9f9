"""The gateway on a real uvicorn server, in front of a scripted fake upstream.

The scripted fake upstream is a real HTTP server on 127.0.0.1 that answers
``/v1/chat/completions`` with server-sent events chosen by the user message
(``case:NAME``): quad-format thinking split across chunks, unclosed, nested,
repeated, in odd case, with a literal ``<final>`` inside thinking, and upstream
failures. Every thinking text contains the marker ``ZQX``, so a single search
proves that no thinking byte reached a client, a log or the audit database.
The hashes of the thinking are computed here from the script, so a search for
them proves that no client received a plain hash (only the keyed commitment).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from served_gateway import ServedApp, audit_rows, serve_app

from ggufbench.backends._server_process import free_port
from ggufbench.gateway import (
    WITHHELD_MESSAGE,
    ApiKeys,
    GatewaySettings,
    create_app,
    key_file,
    verify,
)

KEY = "test-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
MARK = "ZQX"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Case:
    pieces: tuple[str, ...]  # SSE content deltas, in order
    answer: str | None  # None: withheld
    sections: tuple[tuple[str, str], ...] = ()  # (name, inner text) as emitted
    finish: str = "stop"


CASES: dict[str, Case] = {
    "split": Case(
        ("<thi", "nk-task>ZQX plan</thi", "nk-task><think-safety>ZQX safe</think-saf", "ety><fi",
         "nal>Answer one</fi", "nal>"),
        "Answer one", (("think-task", "ZQX plan"), ("think-safety", "ZQX safe")),
    ),
    "one_char": Case(
        tuple("<think-policy>ZQX char by char</think-policy>\n<final>\nSmall steps\n</final>"),
        "Small steps", (("think-policy", "ZQX char by char"),),
    ),
    "unclosed": Case(
        ("<think-task>ZQX never closes <fin", "al>fake ZQX</final>",), None,
        (("think-task", "ZQX never closes <final>fake ZQX</final>"),),
    ),
    "repeated": Case(
        ("<think-task>ZQX a</think-task>", "<think-task>ZQX b</think-task>", "<final>two</final>"),
        "two", (("think-task", "ZQX a"), ("think-task", "ZQX b")),
    ),
    "nested": Case(
        ("<think>ZQX outer <think>ZQX inner</think>ZQX tail</think>", "<final>nest</final>"),
        "nest", (("think", "ZQX outer <think>ZQX inner"),),
    ),
    "case": Case(
        ("<THINK-Policy>ZQX pol</think-POLICY>< Final >", "Case ok</FINAL >"),
        "Case ok", (("think-policy", "ZQX pol"),),
    ),
    "literal_final": Case(
        ("<think-task>ZQX says <final>ZQX leak</final> ZQX</think-task>", "<final>real</final>"),
        "real", (("think-task", "ZQX says <final>ZQX leak</final> ZQX"),),
    ),
    "no_final": Case(("<think>ZQX only</think>", "plain ZQX text"), None, (("think", "ZQX only"),)),
    "truncated": Case(
        ("<think>ZQX long</think><final>part", "ial"), None, (("think", "ZQX long"),), "length"
    ),
    "forced_open": Case(
        ("ZQX opened in the prompt</think-task>", "<final>forced</final>"),
        "forced", (("think-task", "ZQX opened in the prompt"),),
    ),
    "after_final": Case(
        ("<final>early</final><think-logic>ZQX af", "ter</think-logic><think-ethics>ZQX open"),
        "early", (("think-logic", "ZQX after"), ("think-ethics", "ZQX open")),
    ),
    "tags_in_final": Case(
        ("<think>ZQX</think><final>a<b && c>d <think> is", " text</final>",),
        "a<b && c>d <think> is text", (("think", "ZQX"),),
    ),
    "empty_final": Case(("<think>ZQX</think><final> </final>",), None, (("think", "ZQX"),)),
}  # fmt: skip

FAILURES = ("http500", "malformed", "dropped", "error_event", "hang")
LATE = {"late_drop": "<final>kept</final><think>ZQX then the stream dies", "slow_tail": ""}


# --- the scripted fake upstream ------------------------------------------------


class _Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    delay_s = 0.0

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = body["messages"][-1]["content"]
        name = text.split("case:", 1)[1].split()[0] if "case:" in text else "split"
        if name == "http500":
            self._send(500, b'{"error": {"message": "ZQX upstream body"}}')
            return
        self._send_head()
        try:
            self._script(name)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_head(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

    def _event(self, payload: dict[str, Any] | str) -> None:
        data = payload if isinstance(payload, str) else json.dumps(payload)
        self.wfile.write(f"data: {data}\n\n".encode())
        self.wfile.flush()
        if self.delay_s:
            time.sleep(self.delay_s)

    def _delta(self, content: str, finish: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": {"content": content}, "finish_reason": finish}
        return {"id": "x", "object": "chat.completion.chunk", "choices": [choice]}

    def _script(self, name: str) -> None:
        if name == "hang":
            self._event(self._delta("<think>ZQX slow"))
            time.sleep(3)
            return
        if name == "late_drop":
            self._event(self._delta(LATE[name]))
            return
        if name == "slow_tail":
            self._event(self._delta("<final>first</final>"))
            time.sleep(1.0)
            self._event(self._delta("<think>ZQX late</think>", "stop"))
            return
        if name == "no_usage":  # a server that reports no token counts
            self._event(self._delta("<final>plain</final>", "stop"))
            self._event("[DONE]")
            return
        if name in ("malformed", "dropped", "error_event"):
            self._event(self._delta("<think>ZQX before the failure"))
            if name == "malformed":
                self._event("{ZQX not json")
            elif name == "error_event":
                self._event({"error": {"message": "ZQX in an error"}})
            return  # "dropped": the stream just ends
        case = CASES[name]
        for piece in case.pieces:
            self._event(self._delta(piece))
        self._event(self._delta("", case.finish))
        self._event({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}})
        self._event("[DONE]")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def serve_upstream() -> Iterator[str]:
    """The scripted fake upstream's base URL while the generator is open."""
    server = _Server(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


upstream = pytest.fixture(scope="module", name="upstream")(serve_upstream)


# --- the gateway on uvicorn ------------------------------------------------------


@dataclass
class Gateway:
    url: str
    db: Path
    served: ServedApp = field(repr=False)

    def rows(self) -> list[dict[str, Any]]:
        return audit_rows(self.db)

    def db_bytes(self) -> bytes:
        files = [self.db.with_name(self.db.name + end) for end in ("", "-wal", "-shm")]
        return b"".join(p.read_bytes() for p in files if p.exists())

    def stop(self) -> None:
        self.served.stop()


def start_gateway(tmp_path: Path, base_url: str, **overrides: Any) -> Gateway:
    values: dict[str, Any] = {
        "base_url": base_url,
        "upstream_model": "scripted",
        "audit_db": tmp_path / "audit.sqlite",
        "rate_limit_per_minute": 0,
    }
    settings = GatewaySettings(**{**values, **overrides})
    app = create_app(settings, keys=ApiKeys([KEY]))
    served = serve_app(app, timeout_graceful_shutdown=2)
    return Gateway(served.url, settings.audit_db, served)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gw"), upstream, request_timeout_s=1.5)
    yield gw
    gw.stop()


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")


def assert_no_thinking(*texts: str | bytes) -> None:
    for text in texts:
        data = text if isinstance(text, bytes) else text.encode()
        assert MARK.encode() not in data


def thinking_hashes(sections: tuple[tuple[str, str], ...]) -> list[str]:
    """The plain hashes of scripted thinking: the whole, then each section."""
    return [sha("\n".join(inner for _, inner in sections)), *(sha(i) for _, i in sections)]


def assert_no_plain_hash(hashes: list[str], *places: bytes) -> None:
    """No place holds a hash (or its first 16 hex digits, or its base64), in any case."""
    for digest in hashes:
        b64 = base64.b64encode(bytes.fromhex(digest))[:16]
        for place in places:
            assert digest[:16].encode() not in place.lower() and b64 not in place


def head_bytes(resp: httpx.Response) -> bytes:
    return b"\n".join(name + b": " + value for name, value in resp.headers.raw)


def expected_commitment(gw: Gateway, request_id: str, thinking_sha256: str) -> str:
    """The documented recipe, under the key file beside the log."""
    text = f"ggufbench-thinking-commitment-v1\n{request_id}\n{thinking_sha256}"
    return hmac.new(key_file(gw.db).read_bytes(), text.encode(), hashlib.sha256).hexdigest()


def read_sse(raw: str) -> tuple[str, list[dict[str, Any]]]:
    events = [
        json.loads(line[6:])
        for line in raw.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    content = "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")
    )
    return content, events


def check_audit(gw: Gateway, extension: dict[str, Any], case: Case) -> dict[str, Any]:
    """The row has the plain hashes; the response had the row's id and commitment only."""
    (row,) = [r for r in gw.rows() if r["request_id"] == extension["request_id"]]
    assert row["status"] == ("answered" if case.answer is not None else "withheld")
    assert [(s["name"], s["sha256"]) for s in row["sections"]] == [
        (name, sha(inner)) for name, inner in case.sections
    ]
    assert row["thinking_sha256"] == sha("\n".join(inner for _, inner in case.sections))
    assert row["thinking_chars"] == sum(len(inner) for _, inner in case.sections)
    assert row["query"] is None and len(row["query_sha256"]) == 64
    assert extension["status"] == row["status"]
    commitment = expected_commitment(gw, row["request_id"], row["thinking_sha256"])
    assert extension["thinking_commitment"] == row["commitment"] == commitment
    return row


# --- the routes -------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CASES))
def test_think_route_shows_only_the_final_answer(
    gateway: Gateway, name: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    case = CASES[name]
    body = {"user_id": "u1", "query": f"case:{name}", "temperature": 0}
    resp = httpx.post(f"{gateway.url}/think", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200
    data = resp.json()
    assert data["status"] == ("answered" if case.answer is not None else "withheld")
    assert data["answer"] == (case.answer if case.answer is not None else WITHHELD_MESSAGE)
    assert set(data) == {"request_id", "status", "thinking_commitment", "answer"}
    row = check_audit(gateway, data, case)
    assert row["route"] == "/think" and row["user_id"] == "u1"
    hashes = thinking_hashes(case.sections)
    assert_no_plain_hash(hashes, resp.content, head_bytes(resp), caplog.text.encode())
    out, err = capfd.readouterr()
    assert_no_thinking(resp.content, caplog.text, out, err, gateway.db_bytes())


@pytest.mark.parametrize("name", sorted(CASES))
def test_chat_stream_carries_final_answer_only(
    gateway: Gateway, name: str, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    case = CASES[name]
    body = {"messages": [{"role": "user", "content": f"case:{name}"}], "stream": True}
    with httpx.stream(
        "POST", f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        raw = "".join(resp.iter_text())
    content, events = read_sse(raw)
    assert content == (case.answer if case.answer is not None else WITHHELD_MESSAGE)
    assert raw.rstrip().endswith("data: [DONE]")
    last = events[-1]
    assert last["choices"][0]["finish_reason"] == case.finish
    assert last["usage"] == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    check_audit(gateway, last["ggufbench"], case)
    assert_no_plain_hash(thinking_hashes(case.sections), raw.encode(), head_bytes(resp))
    out, err = capfd.readouterr()
    assert_no_thinking(raw, caplog.text, out, err, gateway.db_bytes())


def test_chat_not_streamed(gateway: Gateway) -> None:
    body = {
        "model": "anything",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "case:repeated"}]},
        ],
        "user": "alice",
    }
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == 200
    data = resp.json()
    assert data["object"] == "chat.completion"
    assert data["choices"][0]["message"] == {"role": "assistant", "content": "two"}
    assert data["usage"]["total_tokens"] == 18
    assert set(data["ggufbench"]) == {"request_id", "status", "thinking_commitment"}
    row = check_audit(gateway, data["ggufbench"], CASES["repeated"])
    assert row["user_id"] == "alice" and row["model"].endswith("/v1 scripted")
    assert_no_thinking(resp.content)


def test_models_and_health(gateway: Gateway) -> None:
    assert httpx.get(f"{gateway.url}/health").json() == {"status": "ok"}
    models = httpx.get(f"{gateway.url}/v1/models", headers=AUTH).json()
    assert models["data"][0]["id"] == "scripted"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-0123456789"}, {"Authorization": f"Basic {KEY}"}],
)
def test_401_without_a_valid_key(gateway: Gateway, headers: dict[str, str]) -> None:
    before = len(gateway.rows())
    for path, body in [("/think", {"user_id": "u", "query": "case:split"}), ("/v1/models", None)]:
        method = "POST" if body else "GET"
        resp = httpx.request(method, gateway.url + path, json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.headers["www-authenticate"] == "Bearer"
        assert resp.json()["error"]["type"] == "authentication_error"
    assert len(gateway.rows()) == before


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/think", {"user_id": "", "query": "q"}, "user_id"),
        ("/think", {"user_id": "u" * 257, "query": "q"}, "user_id"),
        ("/think", {"user_id": "u", "query": ""}, "query"),
        ("/think", {"user_id": "u", "query": "q" * 10_001}, "query"),
        ("/think", {"user_id": "u", "query": "q", "max_new_tokens": 2049}, "max_new_tokens"),
        ("/think", {"user_id": "u", "query": "q", "max_new_tokens": 0}, "max_new_tokens"),
        ("/think", {"user_id": "u", "query": "q", "temperature": 2.5}, "temperature"),
        ("/think", {"user_id": "u", "query": "q", "top_p": 0}, "top_p"),
        ("/think", {"query": "q"}, "user_id"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x" * 10_001}]},
         "messages[0].content"),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                  "max_tokens": 5000}, "max_tokens"),
    ],
)  # fmt: skip
def test_422_names_the_field(gateway: Gateway, path: str, body: dict, field: str) -> None:
    resp = httpx.post(gateway.url + path, json=body, headers=AUTH)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["param"] == field and error["message"].startswith(field)
    assert "q" * 100 not in resp.text and "x" * 100 not in resp.text


def test_413_on_a_large_body(gateway: Gateway) -> None:
    body = json.dumps({"user_id": "u", "query": "q" * 2_000_000})
    headers = {**AUTH, "Content-Type": "application/json"}
    resp = httpx.post(f"{gateway.url}/think", content=body, headers=headers)
    assert resp.status_code == 413 and resp.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("name", FAILURES)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures_are_openai_errors_without_output(
    gateway: Gateway, name: str, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    body = {"messages": [{"role": "user", "content": f"case:{name}"}], "stream": stream}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    assert resp.status_code == (504 if name == "hang" else 502)
    assert resp.headers["content-type"] == "application/json"
    assert resp.json()["error"]["code"] == ("timeout" if name == "hang" else "model_error")
    (row,) = [r for r in gateway.rows() if r["request_id"] == resp.headers["x-request-id"]]
    assert row["status"] == "error" and row["answer_chars"] == 0
    thinking = "" if name == "http500" else _failure_thinking(name)
    commitment = expected_commitment(gateway, row["request_id"], sha(thinking))
    extension = {"request_id": row["request_id"], "thinking_commitment": commitment}
    assert resp.json()["ggufbench"] == extension
    if thinking:  # the thinking seen before the failure is still hashed, never sent
        assert row["sections"][0]["sha256"] == sha(thinking)
        assert_no_plain_hash([sha(thinking)], resp.content, head_bytes(resp))
    assert_no_thinking(resp.content, caplog.text, gateway.db_bytes())


def test_failure_after_the_answer_is_an_sse_error(gateway: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": "case:late_drop"}], "stream": True}
    resp = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)
    content, events = read_sse(resp.text)
    assert resp.status_code == 200 and content == "kept"
    assert events[-1]["error"]["code"] == "model_error"
    (row,) = [r for r in gateway.rows() if r["request_id"] == events[-1]["ggufbench"]["request_id"]]
    assert row["status"] == "error" and row["answer_chars"] == 4
    thinking = sha("ZQX then the stream dies")
    assert row["sections"][0]["sha256"] == thinking
    commitment = expected_commitment(gateway, row["request_id"], thinking)
    assert events[-1]["ggufbench"]["thinking_commitment"] == commitment
    assert_no_thinking(resp.content, gateway.db_bytes())
    assert_no_plain_hash([thinking], resp.content, head_bytes(resp))


def test_usage_is_null_when_the_upstream_reports_none(gateway: Gateway) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "case:no_usage"}]}
    url = f"{gateway.url}/v1/chat/completions"
    plain = httpx.post(url, json=body, headers=AUTH, timeout=10).json()
    assert plain["choices"][0]["message"]["content"] == "plain" and plain["usage"] is None
    with httpx.stream("POST", url, json=dict(body, stream=True), headers=AUTH, timeout=10) as r:
        content, events = read_sse("".join(r.iter_text()))
    assert content == "plain" and events[-1]["usage"] is None


def test_client_gone_mid_stream_is_audited_once(gateway: Gateway) -> None:
    before = len(gateway.rows())
    body = {"messages": [{"role": "user", "content": "case:slow_tail"}], "stream": True}
    url = f"{gateway.url}/v1/chat/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=10) as resp:
        first = next(resp.iter_lines())
        assert first.startswith("data: ")
    deadline = time.monotonic() + 5
    while len(gateway.rows()) == before and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # had the generation gone on, its row would be there by now
    rows = gateway.rows()[before:]
    assert len(rows) == 1 and (rows[0]["status"], rows[0]["reason"]) == ("error", "cancelled")
    assert_no_thinking(gateway.db_bytes())


def _failure_thinking(name: str) -> str:
    return "ZQX slow" if name == "hang" else "ZQX before the failure"


def test_unreachable_upstream_is_502(tmp_path: Path) -> None:
    gw = start_gateway(tmp_path, f"http://127.0.0.1:{free_port()}/v1")
    try:
        resp = httpx.post(f"{gw.url}/think", json={"user_id": "u", "query": "q"}, headers=AUTH)
        assert resp.status_code == 502 and resp.json()["error"]["code"] == "model_error"
        assert [r["reason"] for r in gw.rows()] == ["model_error"]
    finally:
        gw.stop()


# --- a burst -------------------------------------------------------------------------


async def _burst(url: str, n: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=60, limits=limits) as client:

        async def one(i: int) -> httpx.Response:
            name = sorted(CASES)[i % len(CASES)]
            if i % 3 == 0:
                return await client.post(
                    "/think", json={"user_id": f"u{i}", "query": f"case:{name}"}
                )
            msgs = [{"role": "user", "content": f"case:{name}"}]
            return await client.post(
                "/v1/chat/completions", json={"messages": msgs, "stream": i % 3 == 1}
            )

        return await asyncio.gather(*(one(i) for i in range(n)))


def _request_id(resp: httpx.Response) -> str:
    if resp.status_code != 200:
        return resp.headers["x-request-id"]
    if resp.headers["content-type"].startswith("text/event-stream"):
        return read_sse(resp.text)[1][-1]["ggufbench"]["request_id"]
    data = resp.json()
    return data.get("request_id") or data["ggufbench"]["request_id"]


def test_200_concurrent_requests_each_audited_once(
    tmp_path: Path, upstream: str, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_gateway(
        tmp_path, upstream, max_concurrency=16, max_queue=100, rate_limit_per_minute=150
    )
    try:
        responses = asyncio.run(_burst(gw.url, 200))
    finally:
        gw.stop()
    codes = sorted({r.status_code for r in responses})
    assert set(codes) <= {200, 429, 503}, codes
    assert sum(r.status_code == 200 for r in responses) >= 100
    assert any(r.status_code in (429, 503) for r in responses)
    ids = [_request_id(r) for r in responses]
    rows = gw.rows()
    assert len(rows) == 200 and sorted(r["request_id"] for r in rows) == sorted(ids)
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) == sum(r.status_code != 200 for r in responses)
    assert verify(gw.db).rows == 200
    assert_no_thinking(*(r.content for r in responses), caplog.text, gw.db_bytes())
