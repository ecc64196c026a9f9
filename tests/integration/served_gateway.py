"""The gateway's app on the real uvicorn, served from a thread on 127.0.0.1, and the rows
of its audit database as ``ggufbench audit export`` writes them."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn

from ggufbench.gateway import export


@dataclass
class ServedApp:
    """An app uvicorn serves at ``url`` until ``stop()``."""

    url: str
    server: uvicorn.Server = field(repr=False)
    thread: threading.Thread = field(repr=False)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def serve_app(app: Any, **config: Any) -> ServedApp:
    """Serve ``app`` on a port the OS picks; return once uvicorn has started."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="on", **config))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "uvicorn did not start"
    return ServedApp(f"http://127.0.0.1:{sock.getsockname()[1]}", server, thread)


def audit_rows(db: Path) -> list[dict[str, Any]]:
    """The audit database's rows, one dict each, as the export writes them."""
    out = io.StringIO()
    export(db, out)
    return [json.loads(line) for line in out.getvalue().splitlines()]
