import sqlite3

import pytest

from ggufbench.backends._base import BackendInfo
from ggufbench.cache_key import cache_key
from ggufbench.errors import LedgerError
from ggufbench.ledger import MIGRATIONS, JobRow, Ledger, NotOwner, migrate


def test_migrations_on_blank_database(tmp_path):
    db = sqlite3.connect(tmp_path / "x.sqlite")
    assert migrate(db) == len(MIGRATIONS)
    assert migrate(db) == len(MIGRATIONS)  # idempotent
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"meta", "jobs", "attempts", "cache"} <= tables
    assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


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
