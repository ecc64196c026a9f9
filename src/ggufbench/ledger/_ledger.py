"""The ledger: jobs, attempts and the request cache of one run, in SQLite (WAL).

The orchestrator and every worker open their own connection. The run's driver
writes an owner token; a worker writes only while that token is still its own,
checked inside the same transaction, so a worker orphaned by a killed driver can
never write into a run that another process now drives.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufbench.errors import LedgerError
from ggufbench.ledger._migrations import migrate

ATTEMPT_COLUMNS = (
    "job_id",
    "n",
    "owner",
    "pid",
    "started",
    "ended",
    "status",
    "error",
    "log",
    "host",
    "device",
    "cuda_visible_devices",
)


class NotOwner(LedgerError):
    """Another process now drives this run; this one must stop writing."""


@dataclass(frozen=True)
class JobRow:
    id: str
    model: str
    benchmark: str
    kind: str
    spec: dict[str, Any]
    status: str = "pending"
    attempts: int = 0
    error: str | None = None
    result: dict[str, Any] | None = None
    done: int = 0
    total: int = 0
    heartbeat: float | None = None
    deadline: float | None = None


class Ledger:
    def __init__(self, path: Path, *, create: bool = False) -> None:
        if not create and not path.is_file():
            raise LedgerError(f"{path} does not exist; is {path.parent} a ggufbench run directory?")
        self.path = path
        try:
            self.db = sqlite3.connect(path, timeout=60, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=60000")
            migrate(self.db)
        except (sqlite3.DatabaseError, RuntimeError) as exc:
            raise LedgerError(f"cannot open ledger {path}: {exc}") from exc

    def close(self) -> None:
        self.db.close()

    # -- ownership -------------------------------------------------------
    def claim(self) -> str:
        token = uuid.uuid4().hex
        self._set_meta("owner", token)
        return token

    def owner(self) -> str | None:
        return self._meta("owner")

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def _set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    def _guard(self, owner: str) -> None:
        if self._meta("owner") != owner:
            raise NotOwner("this run is now driven by another process; stopping this worker")

    # -- jobs ------------------------------------------------------------
    def add_jobs(self, jobs: Iterable[JobRow]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            for job in jobs:
                self.db.execute(
                    "INSERT OR IGNORE INTO jobs(id, model, benchmark, kind, spec, updated)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (job.id, job.model, job.benchmark, job.kind, json.dumps(job.spec), time.time()),
                )

    def jobs(self) -> list[JobRow]:
        rows = self.db.execute(
            "SELECT id, model, benchmark, kind, spec, status, attempts, error, result,"
            " done, total, heartbeat, deadline FROM jobs ORDER BY rowid"
        ).fetchall()
        return [
            JobRow(
                r[0],
                r[1],
                r[2],
                r[3],
                json.loads(r[4]),
                r[5],
                r[6],
                r[7],
                json.loads(r[8]) if r[8] else None,
                r[9],
                r[10],
                r[11],
                r[12],
            )
            for r in rows
        ]

    def job(self, job_id: str) -> JobRow:
        for job in self.jobs():
            if job.id == job_id:
                return job
        raise LedgerError(f"job {job_id} is not in this run")

    def update_job(self, job_id: str, **fields: Any) -> None:
        if "result" in fields and fields["result"] is not None:
            fields["result"] = json.dumps(fields["result"])
        fields["updated"] = time.time()
        cols = ", ".join(f"{k}=?" for k in fields)
        self.db.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))

    def progress(
        self, owner: str, job_id: str, done: int, total: int, deadline: float | None
    ) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._guard(owner)
            self.db.execute(
                "UPDATE jobs SET done=?, total=?, heartbeat=?, deadline=? WHERE id=?",
                (done, total, time.time(), deadline, job_id),
            )

    def finish_job(self, owner: str, job_id: str, result: dict[str, Any]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._guard(owner)
            self.db.execute(
                "UPDATE jobs SET status='done', result=?, error=NULL, updated=? WHERE id=?",
                (json.dumps(result), time.time(), job_id),
            )

    # -- attempts --------------------------------------------------------
    def start_attempt(self, job_id: str, owner: str, log: str) -> int:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            n = (
                int(
                    self.db.execute("SELECT attempts FROM jobs WHERE id=?", (job_id,)).fetchone()[0]
                )
                + 1
            )
            self.db.execute(
                "UPDATE jobs SET attempts=?, status='running', heartbeat=?, deadline=NULL"
                " WHERE id=?",
                (n, time.time(), job_id),
            )
            self.db.execute(
                "INSERT INTO attempts(job_id, n, owner, started, log) VALUES (?, ?, ?, ?, ?)",
                (job_id, n, owner, time.time(), log),
            )
        return n

    def set_attempt_pid(self, job_id: str, n: int, pid: int) -> None:
        self.db.execute("UPDATE attempts SET pid=? WHERE job_id=? AND n=?", (pid, job_id, n))

    def record_place(self, owner: str, job_id: str, n: int, place: dict[str, Any]) -> None:
        """Where attempt ``n`` runs, as its worker sees it: host, pid, device,
        cuda_visible_devices (:func:`ggufbench.build_info.attempt_place`)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._guard(owner)
            self.db.execute(
                "UPDATE attempts SET host=?, pid=?, device=?, cuda_visible_devices=?"
                " WHERE job_id=? AND n=?",
                (
                    place["host"],
                    place["pid"],
                    place["device"],
                    place["cuda_visible_devices"],
                    job_id,
                    n,
                ),
            )

    def end_attempt(self, job_id: str, n: int, status: str, error: str | None = None) -> None:
        self.db.execute(
            "UPDATE attempts SET ended=?, status=?, error=? WHERE job_id=? AND n=?",
            (time.time(), status, error, job_id, n),
        )

    def attempts(self, job_id: str | None = None) -> list[dict[str, Any]]:
        keys = ATTEMPT_COLUMNS
        sql = f"SELECT {', '.join(keys)} FROM attempts"
        args: tuple[Any, ...] = ()
        if job_id:
            sql, args = sql + " WHERE job_id=?", (job_id,)
        return [
            dict(zip(keys, row, strict=True)) for row in self.db.execute(sql + " ORDER BY id", args)
        ]

    def interrupt_running(self, reason: str) -> int:
        """Mark attempts left 'running' by a dead driver as interrupted."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            cur = self.db.execute(
                "UPDATE attempts SET status='interrupted', ended=?, error=? WHERE status='running'",
                (time.time(), reason),
            )
            self.db.execute("UPDATE jobs SET status='pending' WHERE status='running'")
        return cur.rowcount

    # -- request cache ---------------------------------------------------
    def cache_get(self, keys: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT key, response FROM cache WHERE key IN ({marks})"
            for key, response in self.db.execute(sql, chunk):
                found[key] = json.loads(response)
        return found

    def cache_put(self, owner: str, rows: Sequence[tuple[str, str, str, Any, Any]]) -> None:
        """Commit answers: rows of (key, kind, model identity, request, response)."""
        if not rows:
            return
        now = time.time()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self._guard(owner)
            self.db.executemany(
                "INSERT OR IGNORE INTO cache(key, kind, model, request, response, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (k, kind, m, json.dumps(req), json.dumps(resp), now)
                    for k, kind, m, req, resp in rows
                ],
            )

    def cache_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM cache").fetchone()[0])
