"""The executor contract: how the scheduler starts, watches, kills and reaps job attempts.

The scheduler owns everything that is the same wherever a job runs: the order of
jobs, retries and their backoff, deadlines, the ledger's job and attempt rows,
and the reports. An executor owns only the processes: whether an attempt can
start now, where it runs, how it is stopped, and how it ended.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ggufbench.ledger import JobRow

ERROR_PREFIX = "ggufbench-error: "
"""A worker's last word on why it failed, one sentence on a line of its log."""

EXIT_USER_ERROR = 3  # retrying cannot help: a bad task, a bad file
EXIT_NOT_OWNER = 4  # another process drives the run now
EXIT_BACKEND_ERROR = 5  # may pass on a retry
EXIT_NODE_FILE = 6  # the model file on this node is missing or differs from the run's


@dataclass(frozen=True)
class Order:
    """One attempt of one job, as the scheduler hands it to an executor."""

    job: JobRow  # as the ledger holds it after the attempt was started
    attempt: int
    owner: str  # the run's owner token: every ledger write is checked against it
    log: Path  # the attempt's log, under the run directory
    footprint: int  # bytes: weights, KV cache and buffers (and an in-process judge)
    wants_gpu: bool
    request_timeout_s: float | None = None
    sha256: str | None = None  # the run's record of the model file


@dataclass
class Handle:
    """A started attempt. ``node`` and ``started`` are set once it runs somewhere."""

    order: Order
    started: float | None
    node: str | None = None
    pid: int | None = None
    private: Any = field(default=None, repr=False)  # the executor's own state


@dataclass(frozen=True)
class Ending:
    """How an attempt ended: ``finished`` when its worker ran to the end."""

    finished: bool
    reason: str = ""
    permanent: bool = False  # a retry cannot help


class Executor(Protocol):
    """Where job attempts run: local processes (:mod:`._local`) or Ray tasks (:mod:`._ray`)."""

    name: str

    def attach(self, run_dir: Path, owner: str) -> None:
        """Serve this run, driven under the owner token ``owner``, from now on."""
        ...

    def slots(self) -> int:
        """How many attempts can run at once: what ``shards: auto`` splits a task into."""
        ...

    def has_room(self, footprint: int, wants_gpu: bool, alone: bool) -> bool:
        """Whether an attempt of this size can start now (``alone``: nothing else runs)."""
        ...

    def start(self, order: Order, alone: bool) -> Handle:
        """Start an attempt that :meth:`has_room` said fits."""
        ...

    def expect_more(self) -> None:
        """More attempts will follow: prepare for the next one."""
        ...

    def poll(self, handle: Handle) -> Ending | None:
        """How the attempt ended, or None while it runs. Called until it returns an Ending."""
        ...

    def kill(self, handle: Handle) -> None:
        """Stop an attempt at once (its deadline passed); it frees what it held."""
        ...

    def stop(self, handles: list[Handle], grace_s: float) -> None:
        """Ask every attempt to stop, kill those still running after ``grace_s``."""
        ...

    def close(self) -> None:
        """Let go of everything held for attempts to come."""
        ...


def ending_of(code: int, log_tail: list[str]) -> Ending:
    """How a worker that exited with ``code`` ended, from its code and the end of its log."""
    said = [line[len(ERROR_PREFIX) :] for line in log_tail if line.startswith(ERROR_PREFIX)]
    if code == 0:
        return Ending(True)
    if code in (EXIT_USER_ERROR, EXIT_NODE_FILE) and said:
        return Ending(False, said[-1], permanent=True)
    if code == EXIT_NOT_OWNER:
        return Ending(False, "the worker lost ownership of the run")
    if said:
        return Ending(False, said[-1])
    if code < 0:
        known = -code in signal.Signals._value2member_map_
        name = signal.Signals(-code).name if known else str(-code)
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return Ending(False, f"the worker died from {name}{hint}")
    last = next((line for line in reversed(log_tail) if line.strip()), "no output")
    return Ending(False, f"the worker exited with code {code}: {last.strip()[:300]}")


def log_tail(log: Path, size: int = 8192) -> list[str]:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, log.stat().st_size - size))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []
