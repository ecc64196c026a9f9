"""status.json: a progress snapshot, and reading a run's state, live or dead.

Each job says where its last attempt ran (``host``: the machine, and on Ray the
node) and, while it runs, its ``rate``: answers committed per second over the
last ``RATE_WINDOW_S`` seconds, measured by the driver, whichever executor runs it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from typing import Any

from ggufbench.ledger import JobRow, Ledger
from ggufbench.rundir import RunDir, attempt_records, write_json

WRITE_EVERY_S = 2.0
RATE_WINDOW_S = 30.0


def snapshot(
    run: RunDir,
    ledger: Ledger,
    run_status: str,
    live: bool,
    rates: dict[str, float] | None = None,
) -> dict[str, Any]:
    rates = rates or {}
    attempts = {(a["job_id"], a["n"]): a for a in ledger.attempts()}
    jobs = []
    for job in ledger.jobs():
        status = job.status
        last = attempts.get((job.id, job.attempts))
        if status == "running" and not live:
            status = "interrupted"  # its driver is gone, so is its worker
        skipped = (job.result or {}).get("skipped") if status == "done" else None
        if skipped:  # it ended at once, saying why (a fidelity variant of another vocabulary)
            status = "skipped"
        jobs.append(
            {
                "id": job.id,
                "model": job.model,
                "benchmark": job.benchmark,
                "status": status,
                "attempts": job.attempts,
                "done": job.done,
                "total": job.total,
                "heartbeat": job.heartbeat,
                "pid": last["pid"] if last and status == "running" else None,
                "host": last["host"] if last else None,
                "device": last["device"] if last else None,
                "rate": rates.get(job.id) if status == "running" else None,
                "error": skipped or job.error,
            }
        )
    counts: dict[str, int] = {}
    for job_row in jobs:
        key = str(job_row["status"])
        counts[key] = counts.get(key, 0) + 1
    if run_status == "running" and not live:
        run_status = "interrupted"
    return {
        "run_id": run.path.name,
        "status": run_status,
        "live": live,
        "updated": time.time(),
        "counts": counts,
        "jobs": jobs,
    }


class StatusWriter:
    """Rewrites status.json at most every WRITE_EVERY_S seconds while running, and
    run.json's ``attempts`` when an attempt started, moved on or said where it runs."""

    def __init__(self, run: RunDir, ledger: Ledger) -> None:
        self.run = run
        self.ledger = ledger
        self.last = 0.0
        self.attempts: list[dict[str, Any]] | None = None
        self.rates = Rates()

    def maybe_write(self, run_status: str = "running", force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= WRITE_EVERY_S:
            rates = self.rates.observe(self.ledger.jobs())
            state = snapshot(self.run, self.ledger, run_status, True, rates)
            write_json(self.run.path / "status.json", state)
            attempts = attempt_records(self.ledger.attempts())
            if attempts != self.attempts:
                self.run.update_meta(attempts=attempts)
                self.attempts = attempts
            self.last = now


class Rates:
    """Each running job's answers per second, over the last RATE_WINDOW_S seconds."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, int], deque[tuple[float, int]]] = {}

    def observe(self, jobs: list[JobRow]) -> dict[str, float]:
        now = time.monotonic()
        rates: dict[str, float] = {}
        for job in jobs:
            key = (job.id, job.attempts)  # a new attempt starts its own count
            if job.status != "running":
                self.seen.pop(key, None)
                continue
            points = self.seen.setdefault(key, deque())
            points.append((now, job.done))
            while len(points) > 2 and now - points[1][0] >= RATE_WINDOW_S:
                points.popleft()
            (t0, d0), (t1, d1) = points[0], points[-1]
            if t1 > t0:
                rates[job.id] = round((d1 - d0) / (t1 - t0), 3)
        return rates


def read_status(run: RunDir) -> dict[str, Any]:
    """The state of a run from its ledger, whether a process drives it or not; the rates of a
    live run come from its driver (status.json)."""
    meta = run.meta()
    live = run.is_live()
    ledger = Ledger(run.ledger)
    try:
        return snapshot(run, ledger, meta.get("status", "unknown"), live, _rates(run, live))
    finally:
        ledger.close()


def _rates(run: RunDir, live: bool) -> dict[str, float]:
    if not live:
        return {}
    try:
        jobs = json.loads((run.path / "status.json").read_text("utf-8"))["jobs"]
        return {j["id"]: j["rate"] for j in jobs if isinstance(j.get("rate"), int | float)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
