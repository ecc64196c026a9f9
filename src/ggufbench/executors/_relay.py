"""The run's ledger for workers on other machines: every call is served by the driver.

The ledger is a SQLite file on the driver's disk, which a worker on another node
cannot open. Such a worker reaches it through a relay, a Ray actor placed on the
driver's node, that only passes messages; the driver alone reads and writes the
file::

    worker on any node                relay actor                 driver
    RelayStore.cache_put  --call-->   inbox   --take (waits)-->   LedgerService: a batch,
                          <--answer-- futures <-----answers-----  one transaction

A worker's call returns once the driver has handled it: a lookup with what the
ledger holds, an answer once it is committed. The driver takes everything
waiting at once, so the answers of many workers share one transaction. Messages
of an attempt the driver no longer runs (stopped, timed out) are refused, except
answers: those are right whoever computed them, and are kept.

Ray's own actor tasks would serve too, but an actor cannot call into the driver
process; the driver asks the relay for work instead (a long poll), which also
works when the driver is a Ray client outside the cluster.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufbench.errors import LedgerError
from ggufbench.ledger import JobRow, Ledger, NotOwner

TAKE_WAIT_S = 0.5  # how long the driver's long poll waits for the first message
JOB_FILES = ("results", "samples")  # the folders a job writes into the run directory


class LedgerRelay:
    """The mailbox between workers and the driver (an asyncio Ray actor; no state of record)."""

    def __init__(self) -> None:
        self.inbox: list[tuple[int, str, tuple[Any, ...]]] = []
        self.waiting: dict[int, asyncio.Future[tuple[bool, Any]]] = {}
        self.arrived = asyncio.Event()
        self.next_id = 0

    async def call(self, kind: str, args: tuple[Any, ...]) -> tuple[bool, Any]:
        """A worker's call: (True, value) once the driver has served it, or (False, why)."""
        future: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self.next_id += 1
        self.waiting[self.next_id] = future
        self.inbox.append((self.next_id, kind, args))
        self.arrived.set()
        return await future

    async def take(self, wait_s: float) -> list[tuple[int, str, tuple[Any, ...]]]:
        """The driver's long poll: every waiting call, after at most ``wait_s`` for the first."""
        if not self.inbox:
            try:
                await asyncio.wait_for(self.arrived.wait(), wait_s)
            except asyncio.TimeoutError:
                pass
        batch, self.inbox = self.inbox, []
        self.arrived.clear()
        return batch

    async def answer(self, answers: list[tuple[int, bool, Any]]) -> None:
        for call_id, ok, value in answers:
            future = self.waiting.pop(call_id, None)
            if future is not None and not future.done():
                future.set_result((ok, value))


class RelayStore:
    """The ledger as a worker on a Ray node reaches it (:class:`ggufbench.cached.AnswerStore`).

    ``scratch`` is the run directory the job writes its files into; they go to the driver
    with the job's result.
    """

    def __init__(self, relay: Any, job: JobRow, attempt: int, scratch: Path) -> None:
        self.relay = relay
        self.job_row = job
        self.attempt = attempt
        self.scratch = scratch

    def _call(self, kind: str, *args: Any) -> Any:
        import ray

        ok, value = ray.get(self.relay.call.remote(kind, args))
        if not ok:
            raise NotOwner(value)
        return value

    def job(self, job_id: str) -> JobRow:
        if job_id != self.job_row.id:
            raise LedgerError(f"this worker runs job {self.job_row.id}, not {job_id}")
        return self.job_row

    def cache_get(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = self._call("lookup", list(keys))
        return found

    def cache_put(self, owner: str, rows: Sequence[tuple[str, str, str, Any, Any]]) -> None:
        if rows:
            self._call("put", list(rows))

    def progress(
        self, owner: str, job_id: str, done: int, total: int, deadline: float | None
    ) -> None:
        self._call("progress", job_id, self.attempt, done, total, deadline)

    def record_place(self, owner: str, job_id: str, n: int, place: dict[str, Any]) -> None:
        self._call("place", job_id, n, place)

    def finish_job(self, owner: str, job_id: str, result: dict[str, Any]) -> None:
        self._call("finish", job_id, self.attempt, result, job_files(self.scratch))

    def close(self) -> None:
        pass


def job_files(run_dir: Path) -> dict[str, bytes]:
    """The files a job wrote under a run directory, by path relative to it."""
    files = {}
    for folder in JOB_FILES:
        for path in sorted((run_dir / folder).rglob("*")):
            if path.is_file():
                files[path.relative_to(run_dir).as_posix()] = path.read_bytes()
    return files


@dataclass(frozen=True)
class Placed:
    """Where an attempt said it runs."""

    job_id: str
    attempt: int
    place: dict[str, Any]


class LedgerService:
    """The driver's side: a thread that serves the relay's calls from the run's ledger.

    ``on_place`` hears of each attempt that says where it runs (called on this thread).
    """

    def __init__(
        self, relay: Any, run_dir: Path, owner: str, on_place: Callable[[Placed], None]
    ) -> None:
        self.relay = relay
        self.run_dir = run_dir
        self.owner = owner
        self.on_place = on_place
        self.stopping = threading.Event()
        self.stopped: set[tuple[str, int]] = set()  # attempts told to stop: (job id, n)
        self.commits = 0  # transactions that committed answers
        self.answers = 0
        self.thread = threading.Thread(target=self._loop, name="ledger-service", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop_attempts(self, attempts: list[tuple[str, int]]) -> None:
        """Refuse these attempts' calls from now on, but their answers: a worker stops at its
        next call (within about a second), committing what it computed."""
        self.stopped.update(attempts)

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=10)

    def _loop(self) -> None:
        import ray

        ledger = Ledger(self.run_dir / "ledger.sqlite")
        try:
            while not self.stopping.is_set():
                try:
                    batch = ray.get(self.relay.take.remote(TAKE_WAIT_S))
                except ray.exceptions.RayError:
                    time.sleep(TAKE_WAIT_S)  # shutting down, or the relay restarts
                    continue
                if batch:
                    self.relay.answer.remote(self.serve(ledger, batch))
        except ConnectionError:
            pass  # Ray's client gave up reconnecting; the driver's next call to Ray says so
        finally:
            ledger.close()

    def serve(
        self, ledger: Ledger, batch: list[tuple[int, str, tuple[Any, ...]]]
    ) -> list[tuple[int, bool, Any]]:
        """Answer a batch of calls: all answers in one transaction, then the rest in order."""
        answers: list[tuple[int, bool, Any]] = []
        puts = [(call_id, args[0]) for call_id, kind, args in batch if kind == "put"]
        if puts:
            answers += self._put(ledger, puts)
        # Of an attempt's progress reports only the last one counts.
        last = {(args[0], args[1]): call_id for call_id, kind, args in batch if kind == "progress"}
        for call_id, kind, args in batch:
            if kind == "put":
                continue
            if kind == "progress" and last[(args[0], args[1])] != call_id:
                answers.append((call_id, True, None))
                continue
            try:
                answers.append((call_id, True, self._one(ledger, kind, args)))
            except LedgerError as exc:  # NotOwner, or an attempt this driver stopped
                answers.append((call_id, False, str(exc)))
        return answers

    def _put(self, ledger: Ledger, puts: list[tuple[int, Any]]) -> list[tuple[int, bool, Any]]:
        rows = [row for _, part in puts for row in part]
        try:
            ledger.cache_put(self.owner, rows)
        except NotOwner as exc:
            return [(call_id, False, str(exc)) for call_id, _ in puts]
        self.commits += 1
        self.answers += len(rows)
        return [(call_id, True, None) for call_id, _ in puts]

    def _one(self, ledger: Ledger, kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "lookup":
            return ledger.cache_get(args[0])
        job_id, attempt = args[0], args[1]
        if (job_id, attempt) in self.stopped or not _current(ledger, self.owner, job_id, attempt):
            raise NotOwner(f"attempt {attempt} of {job_id} was stopped by the driver")
        if kind == "progress":
            ledger.progress(self.owner, job_id, *args[2:])
        elif kind == "place":
            ledger.record_place(self.owner, job_id, attempt, args[2])
            self.on_place(Placed(job_id, attempt, args[2]))
        elif kind == "finish":
            write_job_files(self.run_dir, args[3])
            ledger.finish_job(self.owner, job_id, args[2])
        else:
            raise LedgerError(f"unknown ledger call {kind}")
        return None


def _current(ledger: Ledger, owner: str, job_id: str, attempt: int) -> bool:
    """Whether this driver still runs attempt ``attempt`` of the job."""
    row = ledger.db.execute(
        "SELECT status, owner FROM attempts WHERE job_id=? AND n=?", (job_id, attempt)
    ).fetchone()
    return row is not None and row[0] == "running" and row[1] == owner


def write_job_files(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write a job's files into the run directory, each whole or not at all."""
    root = run_dir.resolve()
    for name, data in files.items():
        path = (root / name).resolve()
        if path.parent == root or root not in path.parents or name.split("/")[0] not in JOB_FILES:
            raise LedgerError(f"a job may not write {name} into the run directory")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
