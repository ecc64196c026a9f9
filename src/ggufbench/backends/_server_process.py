"""A server program run as a child of this process, which never outlives it.

A managed ``llama-server`` is started for one job and must be gone when the job
ends, however it ends:

- Normally: :meth:`ServerProcess.stop` sends SIGTERM to the server's process
  group, then SIGKILL after a grace period.
- The owner is killed (``kill -9``, the out-of-memory killer, the orchestrator
  ending its worker): on Linux the child is started with a parent-death signal
  (``prctl(PR_SET_PDEATHSIG, SIGKILL)``), so the kernel kills it the moment its
  parent goes. The signal fires when the *thread* that forked the child exits,
  so children are always forked from a thread that lives as long as the
  process: the main thread, or else a daemon launcher thread kept for that.
- The server runs in its own process group (a new session), so a terminal's
  Ctrl-C reaches the owner, which stops the server in order, and the group can
  be signalled as a whole.

The server's stdout and stderr go to a log file (a temporary one unless the
caller names it); :meth:`ServerProcess.tail` gives its last lines for error
messages. :meth:`ServerProcess.wait_ready` polls a readiness probe and says
what it waited for when it gives up or the server dies first.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from queue import SimpleQueue
from typing import Any, TypeVar

from ggufbench.errors import BackendError, BackendTimeout

__all__ = ["ServerProcess", "free_port", "port_is_free", "process_gone"]

HOST = "127.0.0.1"
TAIL_LINES = 8
STOP_GRACE_S = 10.0
_PR_SET_PDEATHSIG = 1
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
T = TypeVar("T")


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = HOST) -> bool:
    """Whether nobody listens on ``port`` (connections closing there do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def process_gone(pid: int, within_s: float) -> bool:
    """Whether process ``pid`` ends within ``within_s`` seconds (a zombie counts as
    ended): for watching a server whose owner, not this process, started it."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat.rsplit(") ", 1)[-1][:1] in ("Z", "X"):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# -- the parent-death signal ------------------------------------------------------

# Resolved once, in the parent: the child between fork and exec only calls it.
_prctl: Any = None
if sys.platform.startswith("linux"):
    with contextlib.suppress(OSError, AttributeError):
        _prctl = ctypes.CDLL(None, use_errno=True).prctl


def _child_setup(parent: int) -> Callable[[], None] | None:
    """What the child runs before exec: die with ``parent`` (Linux), or nothing."""
    if _prctl is None:
        return None

    def setup() -> None:
        _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return setup


class _Launcher:
    """A daemon thread that lives as long as the process and forks children for
    other threads: the parent-death signal follows the forking thread."""

    def __init__(self) -> None:
        self._jobs: SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = SimpleQueue()
        threading.Thread(target=self._loop, name="server-launcher", daemon=True).start()

    def _loop(self) -> None:
        while True:
            call, future = self._jobs.get()
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the caller's thread
                future.set_exception(exc)

    def run(self, call: Callable[[], T]) -> T:
        future: Future[T] = Future()
        self._jobs.put((call, future))
        return future.result()


_launcher: _Launcher | None = None
_launcher_lock = threading.Lock()


def _on_lasting_thread(call: Callable[[], T]) -> T:
    global _launcher
    if threading.current_thread() is threading.main_thread():
        return call()
    with _launcher_lock:
        if _launcher is None:
            _launcher = _Launcher()
    return _launcher.run(call)


# -- the process ------------------------------------------------------------------


class ServerProcess:
    """One server child: started at construction, stopped by :meth:`stop`.

    ``name`` is how messages call it (e.g. "llama-server"); ``log_path`` keeps
    its output (a temporary file, removed on stop, when None).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        name: str,
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.argv = [str(a) for a in argv]
        self.name = name
        self._own_log = log_path is None
        if log_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
            os.close(fd)
            log_path = Path(tmp)
        self.log_path = Path(log_path)
        self._proc = _on_lasting_thread(lambda: self._spawn(env))

    def _spawn(self, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            try:
                return subprocess.Popen(
                    self.argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,
                    preexec_fn=_child_setup(os.getpid()),
                )
            except OSError as exc:
                self._drop_log()
                raise BackendError(
                    f"cannot start {self.name} from {self.argv[0]} ({exc.strerror or exc}); "
                    "check that the file exists and is an executable llama-server"
                ) from exc

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def alive(self) -> bool:
        return self._proc.poll() is None

    def tail(self, lines: int = TAIL_LINES) -> str:
        """The last lines of its output, joined by " | " (empty when it wrote nothing)."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - 16384))
                text = log.read().decode("utf-8", "replace")
        except OSError:
            return ""
        kept = [_ANSI.sub("", line).strip() for line in text.splitlines()]
        return " | ".join([line for line in kept if line][-lines:])

    def exit_message(self, when: str) -> str:
        """That it is gone and ``when`` ("while ..."), with its last lines: for errors."""
        code = self.returncode
        how = (
            f"was killed by signal {-code}" if code is not None and code < 0 else f"exited ({code})"
        )
        tail = self.tail()
        return f"{self.name} {how} {when}" + (f"; its last lines: {tail}" if tail else "")

    def wait_ready(
        self, probe: Callable[[], bool], *, timeout_s: float, what: str, poll_s: float = 0.2
    ) -> None:
        """Return once ``probe()`` is true; ``what`` ("URL to answer 200") names what
        is awaited, in messages.

        The server dying first is a :class:`BackendError`; the timeout passing is
        a :class:`BackendTimeout` (the server is stopped then). Both carry its
        last log lines.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            if not self.alive():
                raise BackendError(self.exit_message(f"while waiting for {what}"))
            if probe():
                return
            if time.monotonic() > deadline:
                tail = self.tail()
                self.stop()
                raise BackendTimeout(
                    f"{self.name} ({self.argv[0]}) was not ready after {timeout_s:g} s "
                    f"of waiting for {what}"
                    + (f"; its last lines: {tail}" if tail else "; it wrote nothing")
                    + "; check the binary and the model, or allow more time to start"
                )
            time.sleep(poll_s)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to its process group, SIGKILL after ``grace_s``; idempotent.

        The group is signalled only while its leader is not yet reaped, so its
        id cannot have passed to another process.
        """
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self._proc.wait()
        self._drop_log()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    def _drop_log(self) -> None:
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()
