"""The keyed commitment: its key, its audit column, the migration and the checks."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import sqlite3
import stat
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest
from test_gateway_audit import KEY, behind_the_trigger, four_rows, raw, record, write_key

from ggufbench.errors import ConfigError
from ggufbench.gateway import (
    AuditError,
    AuditLog,
    AuditTampered,
    commitment,
    export,
    key_file,
    key_from_env,
    row_hash,
    verify,
)
from ggufbench.gateway._audit import GENESIS, MIGRATIONS
from ggufbench.gateway._commit import deployment_key

OTHER_KEY = bytes(range(1, 33))


db = pytest.fixture(name="db")(four_rows)


def rows_of(db: Path, commitment: str | None = None) -> list[dict]:
    out = io.StringIO()
    export(db, out, commitment)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_the_documented_recipe() -> None:
    text = "ggufbench-thinking-commitment-v1\nreq1\n" + "ab" * 32
    expected = hmac.new(KEY, text.encode(), hashlib.sha256).hexdigest()
    assert commitment(KEY, "req1", "ab" * 32) == expected
    assert commitment(KEY, "req2", "ab" * 32) != expected  # same thinking, other request
    assert commitment(OTHER_KEY, "req1", "ab" * 32) != expected


def test_the_key_file_is_made_0600_and_reused(tmp_path: Path) -> None:
    audit_db = tmp_path / "logs" / "audit.sqlite"
    first = deployment_key(audit_db, None)
    path = key_file(audit_db)
    assert path.name == "audit.sqlite.commitment-key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_bytes() == first
    assert len(first) == 32 and deployment_key(audit_db, None) == first
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left


def test_a_key_file_of_the_wrong_size_is_refused(tmp_path: Path) -> None:
    audit_db = tmp_path / "audit.sqlite"
    key_file(audit_db).write_bytes(KEY[:31])
    with pytest.raises(ConfigError, match=r"holds 31 bytes instead of 32; restore"):
        deployment_key(audit_db, None)
    assert key_file(audit_db).read_bytes() == KEY[:31]  # never replaced


def test_an_unreadable_key_file_is_refused(tmp_path: Path) -> None:
    audit_db = tmp_path / "audit.sqlite"
    key_file(audit_db).mkdir()  # unreadable as a file, even for root
    with pytest.raises(ConfigError, match="cannot read the commitment key .*; give this user"):
        deployment_key(audit_db, None)


def test_the_key_from_an_env_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GW_COMMIT", KEY.hex().upper())
    assert key_from_env("GW_COMMIT") == KEY
    assert deployment_key(tmp_path / "audit.sqlite", "GW_COMMIT") == KEY
    assert not key_file(tmp_path / "audit.sqlite").exists()
    for bad in ["abc", KEY.hex()[:-2], "zz" * 32]:
        monkeypatch.setenv("GW_COMMIT", bad)
        with pytest.raises(ConfigError, match="GW_COMMIT must hold the commitment key as 64 hex"):
            key_from_env("GW_COMMIT")
    monkeypatch.delenv("GW_COMMIT")
    with pytest.raises(ConfigError, match="variable GW_COMMIT given to --commitment-key-env"):
        key_from_env("GW_COMMIT")


def test_rows_hold_plain_hashes_and_the_commitment(db: Path) -> None:
    (row,) = rows_of(db, commitment(KEY, "req2", "ab" * 32))
    assert row["request_id"] == "req2" and row["thinking_sha256"] == "ab" * 32
    assert row["sections"][0]["sha256"] == "ab" * 32
    assert rows_of(db, "00" * 32) == []
    assert verify(db).commitments == 4


def test_a_commitment_that_does_not_match_is_found(db: Path) -> None:
    log = AuditLog(db)
    log.append(record(5, commitment=commitment(KEY, "req5", "ef" * 32)))
    log.close()
    with pytest.raises(AuditTampered, match="row 5: its commitment does not match"):
        verify(db)


def test_the_wrong_key_is_found(db: Path) -> None:
    with pytest.raises(AuditTampered, match="row 1: its commitment does not match"):
        verify(db, key=OTHER_KEY)
    assert verify(db, key=KEY).rows == 4


def test_a_chain_rewritten_without_the_key_is_found(db: Path) -> None:
    """Someone changes a thinking hash and recomputes every row_hash after it."""
    rows = rows_of(db)
    rows[1]["thinking_sha256"] = "ef" * 32
    prev = rows[0]["row_hash"]
    conn = raw(db)
    (trigger,) = conn.execute(
        "SELECT sql FROM sqlite_master WHERE name='audit_no_update'"
    ).fetchone()
    conn.execute("DROP TRIGGER audit_no_update")
    for row in rows[1:]:
        row["sections"] = json.dumps(row["sections"], separators=(",", ":"))
        row["prev_hash"] = prev
        row["row_hash"] = prev = row_hash(row)
        conn.execute(
            "UPDATE audit SET thinking_sha256 = ?, prev_hash = ?, row_hash = ? WHERE seq = ?",
            (row["thinking_sha256"], row["prev_hash"], row["row_hash"], row["seq"]),
        )
    conn.execute(trigger)
    conn.close()
    with pytest.raises(AuditTampered, match="row 2: its commitment does not match"):
        verify(db)


def test_an_edited_commitment_is_found(db: Path) -> None:
    sql = f"UPDATE audit SET commitment = '{'00' * 32}' WHERE seq = 2"
    behind_the_trigger(db, "audit_no_update", sql)
    with pytest.raises(AuditTampered, match="row 2: row_hash"):
        verify(db)


def test_a_row_without_commitment_after_one_is_found(db: Path) -> None:
    log = AuditLog(db)
    log.append(record(5, commitment=None))
    log.close()
    with pytest.raises(AuditTampered, match="row 5: it has no commitment though earlier rows"):
        verify(db)


def test_commitments_without_a_key_are_a_config_error(db: Path) -> None:
    key_file(db).unlink()
    with pytest.raises(ConfigError, match="holds commitments but .*commitment-key does not"):
        verify(db)


def old_log(path: Path) -> None:
    """An audit log as the gateway wrote it before commitments (schema 1)."""
    conn = raw(path)
    MIGRATIONS[0](conn)
    conn.execute("INSERT INTO audit_meta VALUES ('schema', '1')")
    prev = GENESIS
    for i in (1, 2):
        row = asdict(record(i))
        del row["commitment"]
        row["sections"] = json.dumps(list(row["sections"]), separators=(",", ":"))
        row.update(seq=i, prev_hash=prev)
        row["row_hash"] = prev = row_hash({**row, "commitment": None})
        conn.execute(
            f"INSERT INTO audit ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
            list(row.values()),
        )
    conn.close()


def test_an_old_log_reads_then_migrates(tmp_path: Path) -> None:
    db = tmp_path / "old.sqlite"
    old_log(db)
    report = verify(db)  # no key needed
    assert (report.rows, report.commitments) == (2, 0)
    assert [r["commitment"] for r in rows_of(db)] == [None, None]
    assert rows_of(db, "00" * 32) == []
    for row in rows_of(db):  # the documented recipe drops a null commitment
        body = {k: v for k, v in row.items() if k not in ("row_hash", "commitment")}
        body["sections"] = json.dumps(body["sections"], separators=(",", ":"))
        text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert hashlib.sha256(text.encode()).hexdigest() == row["row_hash"]
    write_key(db)
    log = AuditLog(db)
    log.append(record(3))
    log.close()
    meta = raw(db).execute("SELECT value FROM audit_meta WHERE key = 'schema'").fetchone()
    assert meta == (str(len(MIGRATIONS)),)
    report = verify(db)
    assert (report.rows, report.commitments) == (3, 1)
    assert [r["seq"] for r in rows_of(db, commitment(KEY, "req3", "ab" * 32))] == [3]


def test_a_newer_log_is_refused(db: Path) -> None:
    raw(db).execute("UPDATE audit_meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(AuditError, match="schema 99, newer than this ggufbench knows"):
        AuditLog(db)


# --- the command line ----------------------------------------------------------------


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-c", "from ggufbench.cli import main; main()", *args]
    environ = {**os.environ, "COLUMNS": "300", **env}
    return subprocess.run(command, capture_output=True, text=True, env=environ, timeout=60)


def one_sentence(result: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert result.returncode == code and text in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_cli_verify_and_look_up(db: Path) -> None:
    ok = cli("audit", "verify", str(db))
    assert ok.returncode == 0 and "4 rows intact, 4 commitments checked" in ok.stdout
    key_file(db).rename(db.with_name("elsewhere"))
    one_sentence(cli("audit", "verify", str(db)), 2, "give the deployment's key with")
    ok = cli("audit", "verify", str(db), "--commitment-key-env", "K", K=KEY.hex())
    assert ok.returncode == 0 and "4 commitments checked" in ok.stdout
    wrong = cli("audit", "verify", str(db), "--commitment-key-env", "K", K=OTHER_KEY.hex())
    one_sentence(wrong, 1, "row 1: its commitment does not match")
    one_sentence(cli("audit", "verify", str(db), "--commitment-key-env", "UNSET_K"), 2, "UNSET_K")
    shown = commitment(KEY, "req2", "ab" * 32)
    found = cli("audit", "export", str(db), "--commitment", shown.upper())
    assert found.returncode == 0 and json.loads(found.stdout)["request_id"] == "req2"
    one_sentence(cli("audit", "export", str(db), "--commitment", "0" * 64), 1, "no row of")
    one_sentence(cli("audit", "export", str(db), "--commitment", "12ab"), 2, "is not a commitment")


def test_cli_verify_fails_on_a_tampered_hash(db: Path) -> None:
    sql = f"UPDATE audit SET thinking_sha256 = '{'ef' * 32}' WHERE seq = 3"
    behind_the_trigger(db, "audit_no_update", sql)
    one_sentence(cli("audit", "verify", str(db)), 1, "not intact at row 3")
    assert sqlite3.connect(db).execute("SELECT count(*) FROM audit").fetchone() == (4,)
