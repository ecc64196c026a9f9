"""A FAKE Ollama server: the documented API subset, answering from a script.

No Ollama server can be installed on the machines these tests run on, so the
``ollama`` runner is tested against this stand-in, which serves on 127.0.0.1
from a thread. It implements what the runner uses, as Ollama documents it:

- ``GET /api/version``, ``GET /api/tags``, ``POST /api/show`` (with
  ``capabilities``), ``DELETE /api/delete``, ``GET /v1/models``;
- ``HEAD``/``POST /api/blobs/sha256:DIGEST`` (the digest is checked) and
  ``POST /api/create`` with ``files`` (servers since 0.5.5), ``from`` or a
  ``FROM @sha256:DIGEST`` Modelfile (``files_api=False``: an older server that
  takes only the Modelfile);
- ``POST /api/generate`` and ``POST /api/chat``, streamed as JSON lines or
  whole: the answer is ``script(request body)``, a :class:`Reply` sent a word
  at a time, honouring ``num_predict`` and ``stop``; with ``think`` the
  thinking comes in its own field (models without the ``thinking`` capability
  refuse ``think``), without it the thinking is inline between ``<think>``
  tags, as a raw model writes it.

Every request body is kept in ``requests``; ``sent`` counts the answer lines
written before the client closed the stream. Tests that must run against a
real Ollama use the ``ollama_url`` fixture, which takes ``OLLAMA_HOST`` when set.

The ``fake_ollama`` fixture (offered to every integration test by conftest.py)
is a fresh server for each test: no models, the default script; a test adds
its models and sets ``script`` itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

VERSION = "0.12.0-fake"
WORD = re.compile(r"\s*\S+|\s+")


@dataclass
class Reply:
    """What the fake model says: thinking (may be empty) and the answer text."""

    text: str = "The answer is 42.\n\nQuestion: and the next one?"
    thinking: str = ""
    delay_s: float = 0.0  # between words, so a client's early close is seen


@dataclass
class FakeModel:
    name: str
    digest: str
    capabilities: tuple[str, ...] = ("completion",)
    size: int = 0


def full_name(name: str) -> str:
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


@dataclass
class FakeOllama:
    """The fake server; ``with FakeOllama() as fake:`` serves at ``fake.url``."""

    files_api: bool = True
    script: Callable[[dict[str, Any]], Reply] = field(default=lambda body: Reply())
    models: dict[str, FakeModel] = field(default_factory=dict)
    blobs: dict[str, int] = field(default_factory=dict)  # sha256 hex -> size
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # answer lines written, per stream

    def __post_init__(self) -> None:
        fake = self

        class Handler(_Handler):
            server_fake = fake

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._http.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._http.server_address[1]}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> FakeOllama:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._http.shutdown()
        self._http.server_close()

    def add_model(
        self, name: str, capabilities: tuple[str, ...] = ("completion",), digest: str = ""
    ) -> FakeModel:
        name = full_name(name)
        digest = digest or hashlib.sha256(name.encode()).hexdigest()
        model = self.models[name] = FakeModel(name, digest, capabilities)
        return model

    def bodies(self, path: str) -> list[dict[str, Any]]:
        return [body for p, body in self.requests if p == path]

    def streams_ended(self, n: int, timeout_s: float = 10.0) -> list[int]:
        """``sent`` once ``n`` streams have ended (a closed one ends at the next write)."""
        deadline = time.monotonic() + timeout_s
        while len(self.sent) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.sent


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A fresh fake server for one test, stopped after it."""
    with FakeOllama() as server:
        yield server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_fake: FakeOllama

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing -----------------------------------------------------------------

    def _body_bytes(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _json_body(self) -> dict[str, Any]:
        raw = self._body_bytes()
        body = json.loads(raw) if raw else {}
        self.server_fake.requests.append((self.path, body))
        return body if isinstance(body, dict) else {}

    def _send(self, code: int, data: Any = None) -> None:
        payload = b"" if data is None else json.dumps(data).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _error(self, code: int, message: str) -> None:
        self._send(code, {"error": message})

    # -- routes -------------------------------------------------------------------

    def do_HEAD(self) -> None:
        digest = self.path.removeprefix("/api/blobs/sha256:")
        self._send(200 if digest in self.server_fake.blobs else 404)

    def do_GET(self) -> None:
        fake = self.server_fake
        if self.path == "/api/version":
            self._send(200, {"version": VERSION})
        elif self.path == "/api/tags":
            models = [
                {"name": m.name, "model": m.name, "size": m.size, "digest": m.digest,
                 "modified_at": "2026-01-01T00:00:00Z", "details": {"format": "gguf"}}
                for m in fake.models.values()
            ]  # fmt: skip
            self._send(200, {"models": models})
        elif self.path == "/v1/models":
            now = int(time.time() * 1000)  # changes with every request, as on real servers
            data = [
                {"id": m.name, "object": "model", "created": now, "owned_by": "library"}
                for m in fake.models.values()
            ]
            self._send(200, {"object": "list", "data": data})
        else:
            self._error(404, "not found")

    def do_DELETE(self) -> None:
        body = self._json_body()
        found = self.server_fake.models.pop(full_name(str(body.get("model"))), None)
        self._send(200 if found else 404, {} if found else {"error": "model not found"})

    def do_POST(self) -> None:
        if self.path.startswith("/api/blobs/sha256:"):
            return self._blob(self.path.removeprefix("/api/blobs/sha256:"))
        body = self._json_body()
        routes = {
            "/api/show": self._show,
            "/api/create": self._create,
            "/api/generate": self._generate,
            "/api/chat": self._generate,
        }
        route = routes.get(self.path)
        if route is None:
            return self._error(404, "not found")
        route(body)

    def _blob(self, digest: str) -> None:
        data = self._body_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            return self._error(400, "digest mismatch")
        self.server_fake.blobs[digest] = len(data)
        self._send(201)

    def _show(self, body: dict[str, Any]) -> None:
        model = self.server_fake.models.get(full_name(str(body.get("model"))))
        if model is None:
            return self._error(404, f"model '{body.get('model')}' not found")
        self._send(200, {"capabilities": list(model.capabilities), "details": {"format": "gguf"}})

    def _create(self, body: dict[str, Any]) -> None:
        fake = self.server_fake
        name = full_name(str(body.get("model") or ""))
        files = body.get("files") if fake.files_api else None
        parts: list[str] = []
        if isinstance(files, dict) and files:
            parts = [str(d).removeprefix("sha256:") for d in files.values()]
        elif isinstance(body.get("modelfile"), str):
            parts = re.findall(r"FROM @sha256:([0-9a-f]+)", body["modelfile"])
        elif body.get("from") and fake.files_api:
            base = fake.models.get(full_name(str(body["from"])))
            if base is None:
                return self._error(404, "base model not found")
            parts = [base.digest, json.dumps(body.get("parameters"), sort_keys=True)]
            return self._made(name, parts, base.capabilities)
        if not parts:
            return self._error(400, "neither 'from' or 'files' was specified")
        if any(p not in fake.blobs for p in parts):
            return self._error(400, "blob not found")
        self._made(name, parts, ("completion",))

    def _made(self, name: str, parts: list[str], capabilities: tuple[str, ...]) -> None:
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        self.server_fake.add_model(name, capabilities, digest)
        self._send(200, {"status": "success"})

    # -- answers --------------------------------------------------------------------

    def _generate(self, body: dict[str, Any]) -> None:
        fake = self.server_fake
        model = fake.models.get(full_name(str(body.get("model"))))
        if model is None:
            return self._error(404, f"model '{body.get('model')}' not found")
        if body.get("think") and "thinking" not in model.capabilities:
            return self._error(400, f'"{model.name}" does not support thinking')
        lines = list(self._answer(body, fake.script(body)))
        if body.get("stream", True) is False:
            return self._send(200, _whole(lines, self.path == "/api/chat"))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        written = 0
        try:
            for delay, line in lines:
                time.sleep(delay)
                data = json.dumps(line).encode() + b"\n"
                self.wfile.write(f"{len(data):X}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
                written += 1
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        fake.sent.append(written)

    def _answer(self, body: dict[str, Any], reply: Reply) -> Iterator[tuple[float, dict[str, Any]]]:
        options = body.get("options") or {}
        limit = int(options.get("num_predict") or -1)
        think = bool(body.get("think"))
        thinking = WORD.findall(reply.thinking) if think else []
        inline = f"<think>{reply.thinking}</think>" if reply.thinking and not think else ""
        text = inline + reply.text
        stops = options.get("stop") or []
        cuts = [i for s in stops if (i := text.find(s)) >= 0]
        reason = "stop"
        if cuts:
            text = text[: min(cuts)]
        words = [("thinking", w) for w in thinking] + [("text", w) for w in WORD.findall(text)]
        if 0 <= limit < len(words):
            words, reason = words[:limit], "length"
        chat = self.path == "/api/chat"
        for kind, word in words:
            yield (
                reply.delay_s,
                _line(chat, word if kind == "text" else "", word if kind != "text" else ""),
            )
        final = _line(chat, "", "")
        final.update(done=True, done_reason=reason, eval_count=len(words))
        final["prompt_eval_count"] = len(str(body.get("prompt") or body.get("messages")).split())
        yield 0.0, final


def _line(chat: bool, text: str, thinking: str) -> dict[str, Any]:
    line: dict[str, Any] = {"model": "fake", "created_at": "2026-01-01T00:00:00Z", "done": False}
    part: dict[str, Any] = {"content" if chat else "response": text}
    if thinking:
        part["thinking"] = thinking
    if chat:
        line["message"] = {"role": "assistant", **part}
    else:
        line.update(part)
    return line


def _whole(lines: list[tuple[float, dict[str, Any]]], chat: bool) -> dict[str, Any]:
    final = dict(lines[-1][1])
    key = "content" if chat else "response"
    parts = [(line.get("message") or {}) if chat else line for _, line in lines]
    text = "".join(str(p.get(key) or "") for p in parts)
    thinking = "".join(str(p.get("thinking") or "") for p in parts)
    part = {key: text, **({"thinking": thinking} if thinking else {})}
    if chat:
        final["message"] = {"role": "assistant", **part}
    else:
        final.update(part)
    return final
