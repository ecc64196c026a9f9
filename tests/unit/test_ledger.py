import sqlite3

import pytest

from ggufbench.backends._base import BackendInfo
from ggufbench.cache_key import cache_key
from ggufbench.errors import LedgerError
from ggufbench.ledger import MIGRATIONS, JobRow, Ledger, NotOwner, migrate
from ggufbench.ledger._migrations import m001_initial


def test_migrations_on_blank_database(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite")
    assert migrate(db) == len(MIGRATIONS)
    assert migrate(db) == len(MIGRATIONS)  # idempotent
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "jobs", "attempts", "cache"} <= tables
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


ATTEMPT_PLACE = ("host", "device", "cuda_visible_devices")


def attempt_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(attempts)")}


def test_blank_database_has_where_attempts_ran(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite")
    migrate(db)
    assert set(ATTEMPT_PLACE) <= attempt_columns(db)


def test_an_m001_ledger_is_migrated_keeping_its_rows(tmp_path):
    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    m001_initial(db)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO jobs(id, model, benchmark, kind, spec, attempts)"
        " VALUES ('m/t', 'm', 't', 'x', '{}', 1)"
    )
    db.execute(
        "INSERT INTO attempts(job_id, n, owner, pid, started, status)"
        " VALUES ('m/t', 1, 'o', 42, 1.0, 'done')"
    )
    db.commit()
    assert not set(ATTEMPT_PLACE) & attempt_columns(db)
    db.close()
    ledger = Ledger(path)
    assert ledger.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    (old,) = ledger.attempts("m/t")
    assert (old["pid"], old["status"], old["host"], old["device"]) == (42, "done", None, None)
    owner = ledger.claim()
    assert ledger.start_attempt("m/t", owner, "log") == 2
    place = {"host": "h", "pid": 7, "device": "CUDA0 NVIDIA H200", "cuda_visible_devices": "1"}
    ledger.record_place(owner, "m/t", 2, place)
    new = ledger.attempts("m/t")[1]
    assert {k: new[k] for k in place} == place


def test_a_migration_cut_short_completes(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite")
    m001_initial(db)
    db.execute("ALTER TABLE attempts ADD COLUMN host TEXT")  # m002 stopped after one column
    db.execute("PRAGMA user_version = 1")
    assert migrate(db) == len(MIGRATIONS)
    assert set(ATTEMPT_PLACE) <= attempt_columns(db)


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path, create=True).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(LedgerError, match="newer"):
        Ledger(path)


def test_wal_mode_and_missing_ledger(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(LedgerError, match="does not exist"):
        Ledger(tmp_path / "none.sqlite")


def test_owner_guard_stops_orphans(tmp_path):
    path = tmp_path / "l.sqlite"
    first = Ledger(path, create=True)
    old = first.claim()
    first.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {"x": 1})])
    first.cache_put(old, [("k1", "loglikelihood", "sha", {"a": 1}, {"b": 2})])
    second = Ledger(path)
    second.claim()  # a new driver takes the run over
    with pytest.raises(NotOwner):
        first.cache_put(old, [("k2", "loglikelihood", "sha", {}, {})])
    with pytest.raises(NotOwner):
        first.progress(old, "m/t", 1, 2, None)
    with pytest.raises(NotOwner):
        first.finish_job(old, "m/t", {"metrics": {}})
    place = {"host": "h", "pid": 1, "device": "cpu", "cuda_visible_devices": None}
    with pytest.raises(NotOwner):
        first.record_place(old, "m/t", 1, place)
    assert second.cache_get(["k1", "k2"]) == {"k1": {"b": 2}}


def test_jobs_attempts_and_interrupts(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    owner = ledger.claim()
    ledger.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {})])
    ledger.add_jobs([JobRow("m/t", "m", "t", "lm_eval", {"changed": True})])  # ignored
    assert ledger.job("m/t").spec == {}
    n = ledger.start_attempt("m/t", owner, "log")
    assert n == 1 and ledger.job("m/t").status == "running"
    assert ledger.interrupt_running("driver died") == 1
    assert ledger.job("m/t").status == "pending"
    assert ledger.attempts("m/t")[0]["status"] == "interrupted"
    assert ledger.start_attempt("m/t", owner, "log") == 2
    ledger.finish_job(owner, "m/t", {"metrics": {"acc": 1}})
    assert ledger.job("m/t").result == {"metrics": {"acc": 1}}


def test_cache_get_many_keys(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite", create=True)
    owner = ledger.claim()
    rows = [(f"k{i}", "generate", "sha", {"i": i}, {"text": str(i)}) for i in range(1200)]
    ledger.cache_put(owner, rows)
    found = ledger.cache_get([f"k{i}" for i in range(0, 1300, 1)])
    assert len(found) == 1200 and found["k1199"] == {"text": "1199"}


def test_cache_key_includes_identity_settings_and_request():
    a = BackendInfo("llama-cpp", "sha-a", {"n_ctx": 2048})
    b = BackendInfo("llama-cpp", "sha-b", {"n_ctx": 2048})
    c = BackendInfo("llama-cpp", "sha-a", {"n_ctx": 4096})
    req = {"context": "x", "continuation": " y"}
    keys = {
        cache_key(a, "loglikelihood", req),
        cache_key(b, "loglikelihood", req),
        cache_key(c, "loglikelihood", req),
        cache_key(a, "generate", req),
        cache_key(a, "loglikelihood", {"context": "x", "continuation": " z"}),
    }
    assert len(keys) == 5
    assert cache_key(a, "loglikelihood", dict(reversed(req.items()))) == cache_key(
        a, "loglikelihood", req
    )
