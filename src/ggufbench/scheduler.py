"""The orchestrator loop: start attempts, watch them, retry, stop cleanly.

A job attempt ends in one of four ways: done (the worker wrote its result),
failed (retried with exponential backoff up to ``execution.retries`` times per
driver, so a resumed job has its full budget again; a permanent error such as a
missing task is not retried), timed out (its deadline or the job limit passed:
killed, then retried), or interrupted (Ctrl-C, SIGTERM: the job goes back to
pending and resume picks it up). Where attempts run is the executor's business
(:mod:`ggufbench.executors`: local processes or Ray tasks); this loop, the
retries, the deadlines and the ledger are the same for every executor. A job is
plain JSON in the ledger, and a worker needs only the job and a way to the
ledger.

A job starts once the jobs it waits for (its shards, a fidelity variant's baseline
job; :mod:`ggufbench.plan`) have ended.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ggufbench.executors import Ending, Executor, Handle, Order
from ggufbench.ledger import JobRow, Ledger
from ggufbench.plan import is_shard, waits_for
from ggufbench.rundir import RunDir

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
TERM_GRACE_S = 5.0
ENDED = ("done", "failed", "skipped")


@dataclass
class Settings:
    retries: int = 3
    job_timeout_s: float | None = None
    request_timeout_s: float | None = None  # None: deadlines the worker derives
    footprints: dict[str, int] = field(default_factory=dict)  # by job id, else model alias
    wants_gpu: dict[str, bool] = field(default_factory=dict)  # by model alias
    sha256: dict[str, str] = field(default_factory=dict)  # the run's model files, by alias


Listener = Callable[[str, dict[str, Any]], None]


class Scheduler:
    def __init__(
        self,
        run: RunDir,
        ledger: Ledger,
        owner: str,
        executor: Executor,
        settings: Settings,
        listener: Listener | None = None,
    ) -> None:
        self.run = run
        self.ledger = ledger
        self.owner = owner
        self.executor = executor
        self.settings = settings
        self.listen = listener or (lambda event, data: None)
        self.running: dict[str, Handle] = {}
        self.placed: set[str] = set()  # jobs whose attempt said where it runs
        self.not_before: dict[str, float] = {}
        self.stop_signal: int | None = None

    # -- signals ---------------------------------------------------------
    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum

    def install_signals(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    # -- the loop --------------------------------------------------------
    def loop(self, tick: Callable[[], None] = lambda: None) -> str:
        """Run until every job is done or failed; 'done', 'partial', 'failed' or 'interrupted'."""
        try:
            return self._loop(tick)
        finally:
            self.executor.close()

    def _loop(self, tick: Callable[[], None]) -> str:
        while True:
            if self.stop_signal is not None:
                self._stop_all()
                return "interrupted"
            self._reap()
            self._enforce_deadlines()
            self._start_ready()
            tick()
            jobs = self.ledger.jobs()
            if not self.running and not any(j.status in ("pending", "running") for j in jobs):
                return outcome(jobs)
            time.sleep(0.2)

    def _start_ready(self) -> None:
        now = time.time()
        jobs = self.ledger.jobs()
        status = {j.id: j.status for j in jobs}
        for job in jobs:
            if job.status != "pending" or job.id in self.running:
                continue
            if self.not_before.get(job.id, 0) > now:
                continue
            if any(status.get(other, "done") not in ENDED for other in waits_for(job)):
                continue  # its shards, or a fidelity variant's baseline job, have not ended
            if not self._start(job):
                return  # no room now; keep the plan's order

    def _start(self, job: JobRow) -> bool:
        footprints = self.settings.footprints
        footprint = footprints.get(job.id, footprints.get(job.model, 0))
        wants_gpu = self.settings.wants_gpu.get(job.model, False)
        if not self.executor.has_room(footprint, wants_gpu, alone=not self.running):
            return False  # wait for room to free up
        attempt = self.ledger.start_attempt(job.id, self.owner, "")
        log = self.run.log_path(job.id, attempt)
        log.parent.mkdir(parents=True, exist_ok=True)
        order = Order(
            job=self.ledger.job(job.id),
            attempt=attempt,
            owner=self.owner,
            log=log,
            footprint=footprint,
            wants_gpu=wants_gpu,
            request_timeout_s=self.settings.request_timeout_s,
            sha256=self.settings.sha256.get(job.model),
        )
        handle = self.executor.start(order, alone=not self.running)
        self.ledger.db.execute(
            "UPDATE attempts SET pid=?, log=? WHERE job_id=? AND n=?",
            (handle.pid, str(log.relative_to(self.run.path)), job.id, attempt),
        )
        self.running[job.id] = handle
        self.placed.discard(job.id)
        data = {"job": job.id, "attempt": attempt, "pid": handle.pid, "node": handle.node}
        self.listen("start", data)
        if any(j.status == "pending" for j in self.ledger.jobs()):
            self.executor.expect_more()
        return True

    # -- endings ---------------------------------------------------------
    def _reap(self) -> None:
        for job_id, handle in list(self.running.items()):
            if handle.node and job_id not in self.placed:
                self.placed.add(job_id)
                self.listen(
                    "placed",
                    {
                        "job": job_id,
                        "attempt": handle.order.attempt,
                        "node": handle.node,
                        "pid": handle.pid,
                    },
                )
            ending = self.executor.poll(handle)
            if ending is None:
                continue
            del self.running[job_id]
            if ending.finished and self.ledger.job(job_id).status == "done":
                self.ledger.end_attempt(job_id, handle.order.attempt, "done")
                self.listen("done", {"job": job_id, "attempt": handle.order.attempt})
                continue
            if ending.finished:
                ending = Ending(False, "the worker ended without writing its result")
            self._fail(handle, ending.reason, ending.permanent)

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for job_id, handle in list(self.running.items()):
            job = self.ledger.job(job_id)
            limit = self.settings.job_timeout_s
            started = handle.started
            if limit and started is not None and now - started > limit:
                reason = f"the attempt ran past job_timeout_s={limit:g} and was stopped"
            elif job.deadline and now > job.deadline:
                reason = "a request ran past its deadline (the backend hung or is too slow)"
            else:
                continue
            self.executor.kill(handle)
            del self.running[job_id]
            self._fail(handle, reason, permanent=False)

    def _fail(self, handle: Handle, reason: str, permanent: bool) -> None:
        job_id, attempt = handle.order.job.id, handle.order.attempt
        self.ledger.end_attempt(job_id, attempt, "failed", reason)
        # Only this driver's failures count: a resumed job gets its full budget again.
        failures = sum(
            1
            for a in self.ledger.attempts(job_id)
            if a["status"] == "failed" and a["owner"] == self.owner
        )
        if permanent or failures > self.settings.retries:
            self.ledger.update_job(job_id, status="failed", error=reason)
            self.listen("failed", {"job": job_id, "attempt": attempt, "error": reason})
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 1))
        self.not_before[job_id] = time.time() + delay
        self.ledger.update_job(job_id, status="pending", error=reason)
        self.listen("retry", {"job": job_id, "attempt": attempt, "error": reason, "delay": delay})

    def _stop_all(self) -> None:
        self.executor.stop(list(self.running.values()), TERM_GRACE_S)
        for job_id, handle in list(self.running.items()):
            attempt = handle.order.attempt
            self.ledger.end_attempt(job_id, attempt, "interrupted", "stopped by a signal")
            if self.ledger.job(job_id).status != "done":
                self.ledger.update_job(job_id, status="pending")
        self.running.clear()


def outcome(jobs: list[JobRow]) -> str:
    """The run's status from its jobs' (a shard is part of its job, which speaks for it)."""
    statuses = {j.status for j in jobs if not is_shard(j)}
    if statuses <= {"done", "skipped"}:
        return "done"
    if "done" in statuses:
        return "partial"
    return "failed"
