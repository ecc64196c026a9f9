"""The audit log: one append-only SQLite row per request, chained by sha256.

Each row stores ``prev_hash`` (the previous row's ``row_hash``, or 64 zeros for
the first row) and ``row_hash``: the sha256 of the row's canonical JSON, that
is every column except ``row_hash`` as stored, keys sorted, separators ``,``
and ``:``, UTF-8, non-ASCII kept; ``commitment`` only when set (rows written
before migration 2 have none). Triggers refuse UPDATE and DELETE; the chain
makes any edit, insertion or removal in the middle visible to :func:`verify`.
Removing rows from the end is visible only against a head hash recorded
earlier (``verify(path, head=...)``).

No thinking text is ever stored: sections are kept as name, sha256, length
and whether they were closed. ``commitment`` is the keyed commitment the
client received (see ``_commit``); :func:`verify` recomputes it with the key.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from ggufbench.errors import ConfigError, GgufbenchError
from ggufbench.gateway import _commit

GENESIS = "0" * 64

_COLUMNS = (
    "seq", "time", "request_id", "route", "user_id", "api_key_id", "model", "status", "reason",
    "sections", "thinking_sha256", "thinking_chars", "thinking_tokens", "answer_chars",
    "prompt_tokens", "completion_tokens", "query_sha256", "query", "latency_ms", "commitment",
    "prev_hash",
)  # fmt: skip

_SCHEMA_1 = (
    "CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time TEXT NOT NULL,
    request_id TEXT NOT NULL UNIQUE,
    route TEXT NOT NULL,
    user_id TEXT,
    api_key_id TEXT,
    model TEXT NOT NULL,
    status TEXT NOT NULL,
    reason TEXT,
    sections TEXT NOT NULL,
    thinking_sha256 TEXT NOT NULL,
    thinking_chars INTEGER NOT NULL,
    thinking_tokens INTEGER,
    answer_chars INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    query_sha256 TEXT NOT NULL,
    query TEXT,
    latency_ms INTEGER NOT NULL,
    prev_hash TEXT NOT NULL,
    row_hash TEXT NOT NULL
)""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
)


def m001_initial(conn: sqlite3.Connection) -> None:
    for statement in _SCHEMA_1:
        conn.execute(statement)


def m002_commitment(conn: sqlite3.Connection) -> None:
    """Each row keeps the keyed commitment its client received."""
    conn.execute("ALTER TABLE audit ADD COLUMN commitment TEXT")
    conn.execute("CREATE INDEX audit_commitment ON audit (commitment)")


# Numbered and append-only: never edit one that has shipped, add the next.
# audit_meta's 'schema' value records how many have been applied.
MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (m001_initial, m002_commitment)

_TRIGGERS = frozenset({"audit_no_update", "audit_no_delete"})


class AuditError(GgufbenchError):
    """The audit log cannot be written or read."""


class AuditTampered(GgufbenchError):
    """``audit verify`` found the log edited, reordered or cut."""

    exit_code = 1


@dataclass(frozen=True)
class AuditRecord:
    """One request as audited; ``sections`` is a list of name/sha256/length/closed."""

    time: str
    request_id: str
    route: str
    user_id: str | None
    api_key_id: str | None
    model: str
    status: str
    reason: str | None
    sections: tuple[dict[str, Any], ...]
    thinking_sha256: str
    thinking_chars: int
    thinking_tokens: int | None
    answer_chars: int
    prompt_tokens: int | None
    completion_tokens: int | None
    query_sha256: str
    query: str | None
    latency_ms: int
    commitment: str


def row_hash(row: dict[str, Any]) -> str:
    """sha256 of a row's canonical JSON (every column but ``row_hash``; ``commitment`` if set)."""
    body = {k: row[k] for k in _COLUMNS if k != "commitment" or row.get(k) is not None}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _connect(path: Path, *, read_only: bool = False) -> sqlite3.Connection:
    target = f"{path.resolve().as_uri()}?mode=ro" if read_only else str(path)
    conn = sqlite3.connect(
        target, uri=read_only, isolation_level=None, check_same_thread=False, timeout=30
    )
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


class AuditLog:
    """Appends rows; safe to share between threads and between processes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = _connect(path)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")
            _migrate(self._conn, path)
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(f"cannot open the audit log {path}: {exc}") from exc
        self._lock = threading.Lock()

    def append(self, record: AuditRecord) -> int:
        """Write one row at the end of the chain; return its sequence number."""
        row: dict[str, Any] = asdict(record)
        row["sections"] = json.dumps(list(record.sections), separators=(",", ":"))
        with self._lock:
            try:
                return self._append(row)
            except sqlite3.Error as exc:
                raise AuditError(f"cannot write the audit log {self.path}: {exc}") from exc

    def _append(self, row: dict[str, Any]) -> int:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute("SELECT seq, row_hash FROM audit ORDER BY seq DESC LIMIT 1")
            prev = last.fetchone()
            row["seq"] = prev[0] + 1 if prev else 1
            row["prev_hash"] = prev[1] if prev else GENESIS
            row["row_hash"] = row_hash(row)
            names = [*_COLUMNS, "row_hash"]
            conn.execute(
                f"INSERT INTO audit ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                [row[n] for n in names],
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return int(row["seq"])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Apply the migrations not yet applied, in one transaction that other writers wait for."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        found = (
            conn.execute("SELECT value FROM audit_meta WHERE key = 'schema'").fetchone()
            if "audit_meta" in tables
            else None
        )
        version = int(found[0]) if found else 0
        if version > len(MIGRATIONS):
            raise AuditError(
                f"the audit log {path} has schema {version}, newer than this ggufbench knows; "
                "upgrade ggufbench"
            )
        for step in MIGRATIONS[version:]:
            step(conn)
        conn.execute(
            "INSERT OR REPLACE INTO audit_meta VALUES ('schema', ?)", (str(len(MIGRATIONS)),)
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _open_existing(path: Path) -> sqlite3.Connection:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give the file passed to serve --audit-db")
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give the file passed to serve --audit-db")
    try:
        conn = _connect(path, read_only=True)
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        raise ConfigError(f"{path} is not a readable SQLite file: {exc}") from exc
    if "audit" not in names:
        raise ConfigError(f"{path} is not a ggufbench audit log (it has no audit table)")
    return conn


def rows(path: Path, commitment: str | None = None) -> Iterator[dict[str, Any]]:
    """Every row in order, as stored, or those with ``commitment``.

    A log not yet migrated (opened read-only) reads as if its rows had no commitment.
    """
    conn = _open_existing(path)
    try:
        stored = {r[1] for r in conn.execute("PRAGMA table_info(audit)")}
        names = [*_COLUMNS, "row_hash"]
        select = ", ".join(n if n in stored else f"NULL AS {n}" for n in names)
        if commitment is not None and "commitment" not in stored:
            return  # a log from before commitments: no row has one
        where, args = ("", ()) if commitment is None else ("WHERE commitment = ? ", (commitment,))
        for values in conn.execute(f"SELECT {select} FROM audit {where}ORDER BY seq", args):
            yield dict(zip(names, values, strict=True))
    finally:
        conn.close()


@dataclass(frozen=True)
class VerifyReport:
    rows: int
    head: str
    commitments: int  # rows whose commitment was recomputed with the key


def verify(path: Path, head: str | None = None, key: bytes | None = None) -> VerifyReport:
    """Check triggers, sequence, hash chain and commitments; raise :class:`AuditTampered`.

    ``key`` defaults to the key file beside the log; it is needed only when rows
    carry commitments (a log written before they existed has none).
    """
    conn = _open_existing(path)
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    if integrity != "ok":
        raise AuditTampered(f"the audit log {path} is damaged: SQLite integrity check failed")
    if missing := sorted(_TRIGGERS - names):
        raise AuditTampered(f"the audit log {path} lost its append-only trigger {missing[0]}")
    prev, count, committed, seen_head = GENESIS, 0, 0, head is None
    for row in rows(path):
        count += 1
        _check_row(path, row, count, prev)
        if row["commitment"] is not None:
            key = key or _key_beside(path)
            _check_commitment(path, row, key)
            committed += 1
        elif committed:
            raise AuditTampered(
                f"the audit log {path} is not intact at row {row['seq']}: "
                "it has no commitment though earlier rows have one"
            )
        prev = row["row_hash"]
        seen_head = seen_head or prev == head
    if not seen_head:
        raise AuditTampered(
            f"the audit log {path} no longer contains the head {head}; rows were cut"
        )
    return VerifyReport(count, prev, committed)


def _check_row(path: Path, row: dict[str, Any], expected_seq: int, prev: str) -> None:
    where = f"the audit log {path} is not intact at row {row['seq']}"
    if row["seq"] != expected_seq:
        raise AuditTampered(f"{where}: expected sequence number {expected_seq}")
    if row["prev_hash"] != prev:
        raise AuditTampered(f"{where}: prev_hash does not match the row before")
    if row["row_hash"] != row_hash(row):
        raise AuditTampered(f"{where}: row_hash does not match the row's content")


def _key_beside(path: Path) -> bytes:
    where = _commit.key_file(path)
    key = _commit.read_key_file(where)
    if key is None:
        raise ConfigError(
            f"the audit log {path} holds commitments but {where} does not exist; "
            "give the deployment's key with --commitment-key-env NAME"
        )
    return key


def _check_commitment(path: Path, row: dict[str, Any], key: bytes) -> None:
    if row["commitment"] != _commit.commitment(key, row["request_id"], row["thinking_sha256"]):
        raise AuditTampered(
            f"the audit log {path} is not intact at row {row['seq']}: its commitment does not "
            "match request_id and thinking_sha256 under this key (or the key is not the "
            "deployment's)"
        )


def export(path: Path, out: TextIO, commitment: str | None = None) -> int:
    """Write every row (or those with ``commitment``) as one JSON line; return the count.

    ``sections`` is decoded into a list.
    """
    count = 0
    for row in rows(path, commitment):
        row["sections"] = json.loads(row["sections"])
        out.write(json.dumps(row, ensure_ascii=False) + "\n")
        count += 1
    return count
