"""A scripted fake OpenAI-compatible server on 127.0.0.1, for integration tests.

It is a real HTTP server (stdlib ``http.server``, one thread per request) that
answers ``POST /v1/chat/completions`` from scripts instead of a model:

- ``models[name](request_body) -> text`` gives a model's whole output;
- with ``"stream": true`` the output is sent as server-sent events in pieces of
  ``chunk_chars`` characters, so tags are split across chunks;
- every request is recorded (model name, last user message, whether streamed),
  and ``delay_s[name]`` slows a model down.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Script = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class Received:
    model: str
    prompt: str
    stream: bool


@dataclass
class ScriptedOpenAI:
    models: dict[str, Script]
    delay_s: dict[str, float] = field(default_factory=dict)
    chunk_chars: int = 3
    received: list[Received] = field(default_factory=list)
    base_url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def prompts(self, model: str) -> list[str]:
        with self._lock:
            return [r.prompt for r in self.received if r.model == model]

    def record(self, body: dict[str, Any]) -> Received:
        messages = body.get("messages") or [{"content": body.get("prompt", "")}]
        got = Received(
            str(body.get("model")), str(messages[-1]["content"]), bool(body.get("stream"))
        )
        with self._lock:
            self.received.append(got)
        return got


def _handler(server: ScriptedOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._json(200, {"object": "list", "data": [{"id": m} for m in server.models]})
            else:
                self._json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/v1/chat/completions" or body.get("model") not in server.models:
                self._json(404, {"error": {"message": "unknown model or path"}})
                return
            got = server.record(body)
            time.sleep(server.delay_s.get(got.model, 0.0))
            text = server.models[got.model](body)
            if got.stream:
                self._stream(got.model, text)
                return
            self._json(
                200,
                {
                    "object": "chat.completion",
                    "model": got.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 10, "completion_tokens": max(1, len(text) // 2)},
                },
            )

        def _stream(self, model: str, text: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            step = server.chunk_chars
            for start in range(0, len(text), step):
                delta = {"content": text[start : start + step]}
                event = {"object": "chat.completion.chunk", "model": model}
                event["choices"] = [{"index": 0, "delta": delta, "finish_reason": None}]
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()

        def _json(self, status: int, data: dict[str, Any]) -> None:
            raw = json.dumps(data).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

    return Handler


@contextmanager
def serve(server: ScriptedOpenAI) -> Iterator[ScriptedOpenAI]:
    """Run ``server`` on a free port of 127.0.0.1 until the block ends."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    httpd.daemon_threads = True
    server.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
