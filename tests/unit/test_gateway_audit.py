"""The audit log: append-only, hash-chained, verifiable and exportable.

Commitments, the key and migrations: ``test_gateway_commit.py``.
"""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from ggufbench.cli import audit_cmd
from ggufbench.errors import ConfigError
from ggufbench.gateway import (
    AuditLog,
    AuditRecord,
    AuditTampered,
    commitment,
    export,
    key_file,
    verify,
)
from ggufbench.gateway._audit import GENESIS

KEY = bytes(range(32))


def record(i: int, **changes: object) -> AuditRecord:
    values: dict[str, object] = {
        "time": f"2026-01-01T00:00:0{i}.000+00:00",
        "request_id": f"req{i}",
        "route": "/think",
        "user_id": "ユーザー",
        "api_key_id": "0123456789abcdef",
        "model": "http://127.0.0.1:1/v1 m",
        "status": "answered",
        "reason": None,
        "sections": ({"name": "think", "sha256": "ab" * 32, "length": 3, "closed": True},),
        "thinking_sha256": "ab" * 32,
        "thinking_chars": 3,
        "thinking_tokens": 1,
        "answer_chars": 2,
        "prompt_tokens": 5,
        "completion_tokens": 4,
        "query_sha256": "cd" * 32,
        "query": None,
        "latency_ms": 12,
    }
    values.update(changes)
    values.setdefault(
        "commitment", commitment(KEY, str(values["request_id"]), str(values["thinking_sha256"]))
    )
    return AuditRecord(**values)  # type: ignore[arg-type]


def write_key(audit_db: Path) -> None:
    """The deployment key beside the log, private as ``serve`` makes it."""
    key_file(audit_db).write_bytes(KEY)
    key_file(audit_db).chmod(0o600)


def four_rows(tmp_path: Path) -> Path:
    """A log of four honest rows, its key beside it."""
    path = tmp_path / "audit.sqlite"
    write_key(path)
    log = AuditLog(path)
    for i in range(1, 5):
        assert log.append(record(i)) == i
    log.close()
    return path


db = pytest.fixture(name="db")(four_rows)


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_verify_reports_rows_and_head(db: Path) -> None:
    report = verify(db)
    assert report.rows == 4 and len(report.head) == 64 and report.commitments == 4
    assert verify(db, head=report.head) == report


@pytest.mark.parametrize("sql", ["UPDATE audit SET status = 'x'", "DELETE FROM audit"])
def test_triggers_refuse_changes(db: Path, sql: str) -> None:
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        raw(db).execute(sql)


def behind_the_trigger(db: Path, trigger: str, sql: str) -> None:
    """Change the table as an attacker with file access would, then restore the trigger."""
    conn = raw(db)
    (create,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (trigger,)).fetchone()
    conn.execute(f"DROP TRIGGER {trigger}")
    conn.execute(sql)
    conn.execute(create)
    conn.close()


def test_an_edited_row_is_found(db: Path) -> None:
    behind_the_trigger(db, "audit_no_update", "UPDATE audit SET answer_chars = 99 WHERE seq = 2")
    with pytest.raises(AuditTampered, match="row 2: row_hash"):
        verify(db)


def test_a_removed_row_is_found(db: Path) -> None:
    behind_the_trigger(db, "audit_no_delete", "DELETE FROM audit WHERE seq = 3")
    with pytest.raises(AuditTampered, match="row 4: expected sequence number 3"):
        verify(db)


def test_a_dropped_trigger_is_found(db: Path) -> None:
    raw(db).execute("DROP TRIGGER audit_no_delete")
    with pytest.raises(AuditTampered, match="lost its append-only trigger audit_no_delete"):
        verify(db)


def test_a_cut_tail_is_found_against_a_recorded_head(db: Path) -> None:
    head = verify(db).head
    behind_the_trigger(db, "audit_no_delete", "DELETE FROM audit WHERE seq = 4")
    assert verify(db).rows == 3
    with pytest.raises(AuditTampered, match="rows were cut"):
        verify(db, head=head)


def test_export_and_the_documented_recipe(db: Path) -> None:
    out = io.StringIO()
    assert export(db, out) == 4
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    prev = GENESIS
    for row in lines:
        # the recipe in docs/gateway.md
        body = {k: v for k, v in row.items() if k != "row_hash"}
        body["sections"] = json.dumps(body["sections"], separators=(",", ":"))
        if body["commitment"] is None:
            del body["commitment"]
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row["prev_hash"] == prev
        assert hashlib.sha256(text.encode()).hexdigest() == row["row_hash"]
        prev = row["row_hash"]
    assert lines[0]["sections"][0]["name"] == "think" and lines[0]["query"] is None


def test_not_an_audit_log(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        verify(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    raw(other).execute("CREATE TABLE t (x)")
    with pytest.raises(ConfigError, match="not a ggufbench audit log"):
        verify(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(ConfigError, match="not a readable SQLite file"):
        verify(junk)


def test_cli_verify_and_export(db: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    audit_cmd.register(app)
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "verify", str(db)])
    assert result.exit_code == 0 and "4 rows intact" in result.output
    out = tmp_path / "audit.jsonl"
    result = runner.invoke(app, ["audit", "export", str(db), "--output", str(out)])
    assert result.exit_code == 0 and len(out.read_text().splitlines()) == 4
    result = runner.invoke(app, ["audit", "export", str(db)])
    assert [json.loads(x)["seq"] for x in result.output.splitlines()] == [1, 2, 3, 4]
    result = runner.invoke(app, ["audit", "verify", str(db), "--head", "f" * 64])
    assert isinstance(result.exception, AuditTampered) and result.exception.exit_code == 1
