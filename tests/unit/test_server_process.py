"""A child server never outlives its owner: stop, readiness, and kill -9 of the owner.

The "servers" here are small Python programs (a real HTTP server for the ready
case), so these tests need no model and no llama.cpp build.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import httpx
import pytest

from ggufbench.backends._server_process import (
    ServerProcess,
    free_port,
    port_is_free,
    process_gone,
)
from ggufbench.errors import BackendError, BackendTimeout

PY = sys.executable
HEALTH_SERVER = textwrap.dedent(
    """
    import http.server, sys
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200); self.send_header("Content-Length", "0"); self.end_headers()
        def log_message(self, *a): pass
    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_free_port_is_free() -> None:
    port = free_port()
    assert port_is_free(port)


def test_a_ready_server_is_stopped_with_its_group(tmp_path: Path) -> None:
    port = free_port()
    script = tmp_path / "serve.py"
    script.write_text(HEALTH_SERVER)
    server = ServerProcess([PY, str(script), str(port)], name="test-server")
    try:
        server.wait_ready(
            lambda: healthy(f"http://127.0.0.1:{port}/"), timeout_s=30, what="the test URL"
        )
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)  # a group of its own
        assert "serving" in server.tail()
        log = server.log_path
    finally:
        server.stop()
    assert process_gone(server.pid, 10.0) and not server.alive()
    assert not log.exists()  # its temporary log goes with it


def test_a_server_that_dies_first_says_so_with_its_last_lines() -> None:
    argv = [PY, "-c", "import sys; print('cannot load model file x.gguf'); sys.exit(3)"]
    server = ServerProcess(argv, name="test-server")
    try:
        with pytest.raises(BackendError) as caught:
            server.wait_ready(lambda: False, timeout_s=30, what="/health to answer 200")
    finally:
        server.stop()
    message = str(caught.value)
    assert "test-server exited (3) while waiting for /health to answer 200" in message
    assert "cannot load model file x.gguf" in message


def test_a_server_never_ready_times_out_naming_what_was_awaited() -> None:
    argv = [PY, "-c", "import time; print('listening nowhere', flush=True); time.sleep(300)"]
    server = ServerProcess(argv, name="test-server")
    with pytest.raises(BackendTimeout) as caught:
        server.wait_ready(lambda: False, timeout_s=1.5, what="http://x/health to answer 200")
    message = str(caught.value)
    assert "not ready after 1.5 s of waiting for http://x/health to answer 200" in message
    assert "listening nowhere" in message
    assert process_gone(server.pid, 10.0)  # stopped when the wait gave up


def test_stop_kills_a_server_that_ignores_sigterm() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"
    server = ServerProcess([PY, "-c", code], name="stubborn")
    time.sleep(0.5)  # let it install its handler
    server.stop(grace_s=0.5)
    assert server.returncode == -signal.SIGKILL


def test_a_missing_binary_is_one_sentence(tmp_path: Path) -> None:
    with pytest.raises(BackendError, match="cannot start test-server from .*no-such-binary"):
        ServerProcess([str(tmp_path / "no-such-binary")], name="test-server")


OWNER = textwrap.dedent(
    """
    import sys, threading, time
    from ggufbench.backends._server_process import ServerProcess
    argv = [sys.executable, "-c", "import time; time.sleep(300)"]
    started = []
    def start():
        started.append(ServerProcess(argv, name="child"))
    if sys.argv[1] == "thread":  # started from a thread that then ends
        t = threading.Thread(target=start); t.start(); t.join()
    else:
        start()
    print(started[0].pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.parametrize("where", ["main", "thread"])
def test_the_server_dies_with_an_owner_killed_by_sigkill(where: str) -> None:
    owner = subprocess.Popen([PY, "-c", OWNER, where], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None
        child = int(owner.stdout.readline())
        time.sleep(1.0)
        assert not process_gone(child, 0.1)  # alive while its owner lives, thread ended or not
        owner.kill()
        owner.wait()
        assert process_gone(child, 5.0)
    finally:
        owner.kill()
        owner.wait()


def test_a_server_started_off_the_main_thread_is_owned_by_a_lasting_thread() -> None:
    out: list[ServerProcess] = []
    worker = threading.Thread(
        target=lambda: out.append(
            ServerProcess([PY, "-c", "import time; time.sleep(60)"], name="c")
        )
    )
    worker.start()
    worker.join()
    try:
        time.sleep(0.5)
        assert out[0].alive()  # the forking thread is gone, the server is not
    finally:
        out[0].stop()


def test_a_named_log_is_kept(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "job.server.log"
    log.parent.mkdir()
    server = ServerProcess([PY, "-c", "print('model loaded', flush=True)"], name="s", log_path=log)
    assert process_gone(server.pid, 10.0)
    server.stop()
    assert "model loaded" in log.read_text()
