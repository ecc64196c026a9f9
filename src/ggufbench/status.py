"""status.json: a progress snapshot, and reading a run's state, live or dead."""

from __future__ import annotations

import time
from typing import Any

from ggufbench.ledger import Ledger
from ggufbench.rundir import RunDir, attempt_records, write_json

WRITE_EVERY_S = 2.0


def snapshot(run: RunDir, ledger: Ledger, run_status: str, live: bool) -> dict[str, Any]:
    attempts = {(a["job_id"], a["n"]): a for a in ledger.attempts()}
    jobs = []
    for job in ledger.jobs():
        status = job.status
        last = attempts.get((job.id, job.attempts))
        if status == "running" and not live:
            status = "interrupted"  # its driver is gone, so is its worker
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
                "error": job.error,
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

    def maybe_write(self, run_status: str = "running", force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last >= WRITE_EVERY_S:
            write_json(
                self.run.path / "status.json", snapshot(self.run, self.ledger, run_status, True)
            )
            attempts = attempt_records(self.ledger.attempts())
            if attempts != self.attempts:
                self.run.update_meta(attempts=attempts)
                self.attempts = attempts
            self.last = now


def read_status(run: RunDir) -> dict[str, Any]:
    """The state of a run from its ledger, whether a process drives it or not."""
    meta = run.meta()
    live = run.is_live()
    ledger = Ledger(run.ledger)
    try:
        return snapshot(run, ledger, meta.get("status", "unknown"), live)
    finally:
        ledger.close()
