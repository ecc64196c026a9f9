"""The orchestrator loop: start workers, watch them, retry, stop cleanly.

One worker process per running job. A job attempt ends in one of four ways:
done (the worker wrote its result), failed (retried with exponential backoff up
to ``execution.retries`` times per driver, so a resumed job has its full budget
again; a permanent error such as a missing task is not retried), timed out (its
deadline or the job limit passed: killed, then retried), or interrupted (Ctrl-C,
SIGTERM: the job goes back to pending and resume picks it up). Nothing here
assumes one machine: a job is plain JSON in the ledger, and a worker needs only
the run directory and the job id.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ggufbench.ledger import JobRow, Ledger
from ggufbench.resources import Budget, Machine, slots, threads_per_job
from ggufbench.rundir import RunDir
from ggufbench.spare import Spare
from ggufbench.worker import ERROR_PREFIX, EXIT_NOT_OWNER, EXIT_USER_ERROR

BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
TERM_GRACE_S = 5.0


@dataclass
class Running:
    job: JobRow
    attempt: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float
    footprint: int
    gpu: int | None


@dataclass
class Settings:
    retries: int = 3
    max_parallel: int | str = "auto"
    job_timeout_s: float | None = None
    request_timeout_s: float | None = None  # None: deadlines the worker derives
    footprints: dict[str, int] = field(default_factory=dict)  # by job id, else model alias
    wants_gpu: dict[str, bool] = field(default_factory=dict)
    # The worker program; tests put a scripted fake worker here.
    worker_cmd: list[str] = field(
        default_factory=lambda: [sys.executable, "-m", "ggufbench.worker"]
    )


Listener = Callable[[str, dict[str, Any]], None]


class Scheduler:
    def __init__(
        self,
        run: RunDir,
        ledger: Ledger,
        owner: str,
        machine: Machine,
        settings: Settings,
        listener: Listener | None = None,
        spare: Spare | None = None,
    ) -> None:
        self.run = run
        self.ledger = ledger
        self.owner = owner
        self.machine = machine
        self.settings = settings
        self.listen = listener or (lambda event, data: None)
        self.running: dict[str, Running] = {}
        self.not_before: dict[str, float] = {}
        self.stop_signal: int | None = None
        self.budget = Budget(machine)
        # A spare must run the same program as a fresh worker would.
        self.spare = spare if spare and spare.worker_cmd == settings.worker_cmd else None

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
            if self.spare is not None:
                self.spare.close()

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
        limit = slots(self.machine, self.settings.max_parallel)
        now = time.time()
        for job in self.ledger.jobs():
            if len(self.running) >= limit:
                return
            if job.status != "pending" or job.id in self.running:
                continue
            if self.not_before.get(job.id, 0) > now:
                continue
            footprints = self.settings.footprints
            footprint = footprints.get(job.id, footprints.get(job.model, 0))
            wants_gpu = self.settings.wants_gpu.get(job.model, False)
            ok, gpu = self.budget.take(footprint, wants_gpu, alone=not self.running)
            if not ok:
                return  # wait for memory to free up; keep the plan's order
            self._start(job, footprint, gpu, threads_per_job(self.machine, limit))

    def _start(self, job: JobRow, footprint: int, gpu: int | None, threads: int) -> None:
        attempt = self.ledger.start_attempt(job.id, self.owner, "")
        log = self.run.log_path(job.id, attempt)
        log.parent.mkdir(parents=True, exist_ok=True)
        args = [str(self.run.path), job.id, self.owner, "--threads", str(threads)]
        if self.settings.request_timeout_s:
            args += ["--request-timeout", str(self.settings.request_timeout_s)]
        own_env = {} if gpu is None else {"CUDA_VISIBLE_DEVICES": str(gpu)}
        proc = self.spare.take(args, own_env, log) if self.spare is not None else None
        if proc is None:
            with open(log, "ab") as fh:
                proc = subprocess.Popen(
                    [*self.settings.worker_cmd, *args],
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    env={**worker_env(), **own_env},
                    stdin=subprocess.DEVNULL,
                )
        self.ledger.db.execute(
            "UPDATE attempts SET pid=?, log=? WHERE job_id=? AND n=?",
            (proc.pid, str(log.relative_to(self.run.path)), job.id, attempt),
        )
        self.running[job.id] = Running(job, attempt, proc, log, time.time(), footprint, gpu)
        self.listen("start", {"job": job.id, "attempt": attempt, "pid": proc.pid})
        if self.spare is not None and any(j.status == "pending" for j in self.ledger.jobs()):
            self.spare.start()  # the next job's worker imports while this one runs

    # -- endings ---------------------------------------------------------
    def _reap(self) -> None:
        for job_id, run in list(self.running.items()):
            code = run.proc.poll()
            if code is None:
                continue
            self._release(job_id)
            status = self.ledger.job(job_id).status
            if code == 0 and status == "done":
                self.ledger.end_attempt(job_id, run.attempt, "done")
                self.listen("done", {"job": job_id, "attempt": run.attempt})
                continue
            reason, permanent = _reason(code, run.log)
            self._fail(run, reason, permanent)

    def _enforce_deadlines(self) -> None:
        now = time.time()
        for job_id, run in list(self.running.items()):
            job = self.ledger.job(job_id)
            limit = self.settings.job_timeout_s
            if limit and now - run.started > limit:
                reason = f"the attempt ran past job_timeout_s={limit:g} and was stopped"
            elif job.deadline and now > job.deadline:
                reason = "a request ran past its deadline (the backend hung or is too slow)"
            else:
                continue
            _kill(run.proc)
            self._release(job_id)
            self._fail(run, reason, permanent=False)

    def _fail(self, run: Running, reason: str, permanent: bool) -> None:
        job_id = run.job.id
        self.ledger.end_attempt(job_id, run.attempt, "failed", reason)
        # Only this driver's failures count: a resumed job gets its full budget again.
        failures = sum(
            1
            for a in self.ledger.attempts(job_id)
            if a["status"] == "failed" and a["owner"] == self.owner
        )
        if permanent or failures > self.settings.retries:
            self.ledger.update_job(job_id, status="failed", error=reason)
            self.listen("failed", {"job": job_id, "attempt": run.attempt, "error": reason})
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (failures - 1))
        self.not_before[job_id] = time.time() + delay
        self.ledger.update_job(job_id, status="pending", error=reason)
        self.listen(
            "retry", {"job": job_id, "attempt": run.attempt, "error": reason, "delay": delay}
        )

    def _release(self, job_id: str) -> None:
        run = self.running.pop(job_id)
        self.budget.give(run.footprint, run.gpu)

    def _stop_all(self) -> None:
        for run in self.running.values():
            if run.proc.poll() is None:
                run.proc.send_signal(signal.SIGTERM)
        deadline = time.time() + TERM_GRACE_S
        for run in self.running.values():
            try:
                run.proc.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                _kill(run.proc)
        for job_id, run in list(self.running.items()):
            self.ledger.end_attempt(job_id, run.attempt, "interrupted", "stopped by a signal")
            if self.ledger.job(job_id).status != "done":
                self.ledger.update_job(job_id, status="pending")
            self._release(job_id)


def worker_env() -> dict[str, str]:
    """The environment of every worker, spares included."""
    return dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _reason(code: int, log: Path) -> tuple[str, bool]:
    """Why a worker ended badly, and whether retrying cannot help."""
    tail = _log_tail(log)
    said = [line[len(ERROR_PREFIX) :] for line in tail if line.startswith(ERROR_PREFIX)]
    if code == EXIT_USER_ERROR and said:
        return said[-1], True
    if code == EXIT_NOT_OWNER:
        return "the worker lost ownership of the run", False
    if said:
        return said[-1], False
    if code < 0:
        name = (
            signal.Signals(-code).name if -code in signal.Signals._value2member_map_ else str(-code)
        )
        hint = " (out of memory?)" if name == "SIGKILL" else ""
        return f"the worker died from {name}{hint}", False
    last = next((line for line in reversed(tail) if line.strip()), "no output")
    return f"the worker exited with code {code}: {last.strip()[:300]}", False


def _log_tail(log: Path, size: int = 8192) -> list[str]:
    try:
        with open(log, "rb") as fh:
            fh.seek(max(0, log.stat().st_size - size))
            return fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return []


def outcome(jobs: list[JobRow]) -> str:
    statuses = {j.status for j in jobs}
    if statuses <= {"done", "skipped"}:
        return "done"
    if "done" in statuses:
        return "partial"
    return "failed"
