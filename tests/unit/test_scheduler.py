import json
import sys
import threading
import time
from pathlib import Path

import pytest

from ggufbench import scheduler as sched
from ggufbench.executors import LocalExecutor
from ggufbench.ledger import JobRow, Ledger
from ggufbench.resources import Machine
from ggufbench.rundir import RunDir
from ggufbench.scheduler import Scheduler, Settings

WORKER = [sys.executable, str(Path(__file__).with_name("scripted_worker.py"))]
MACHINE = Machine(cores=8, total_ram=8 * 2**30, available_ram=8 * 2**30)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(sched, "BACKOFF_BASE_S", 0.01)


def make(tmp_path, behaviours, max_parallel="auto", **settings):
    run = RunDir(tmp_path)
    ledger = Ledger(run.ledger, create=True)
    owner = ledger.claim()
    ledger.add_jobs(
        [JobRow(f"m/{name}", "m", name, "lm_eval", spec) for name, spec in behaviours.items()]
    )
    events: list[tuple[str, dict]] = []
    executor = LocalExecutor(MACHINE, max_parallel, worker_cmd=WORKER)
    executor.attach(run.path, owner)
    s = Scheduler(
        run,
        ledger,
        owner,
        executor,
        Settings(**settings),
        listener=lambda e, d: events.append((e, d)),
    )
    return s, ledger, events


def test_retries_failures_and_isolation(tmp_path):
    s, ledger, events = make(
        tmp_path,
        {
            "ok": {"behaviour": "ok"},
            "crash": {"behaviour": "crash"},
            "flaky": {"behaviour": "fail_once"},
            "bad": {"behaviour": "permanent"},
        },
        retries=2,
        max_parallel=2,
    )
    assert s.loop() == "partial"
    jobs = {j.benchmark: j for j in ledger.jobs()}
    assert jobs["ok"].status == "done" and jobs["ok"].attempts == 1
    assert jobs["flaky"].status == "done" and jobs["flaky"].attempts == 2
    assert jobs["crash"].status == "failed" and jobs["crash"].attempts == 3
    assert "SIGABRT" in jobs["crash"].error
    assert jobs["bad"].status == "failed" and jobs["bad"].attempts == 1
    assert jobs["bad"].error == "lm-eval task 'nope' does not exist"
    assert [d["job"] for e, d in events if e == "retry"].count("m/crash") == 2
    # every attempt has its own log
    logs = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert "m__crash.1.log" in logs and "m__crash.3.log" in logs


def test_deadline_kills_a_hung_worker(tmp_path):
    s, ledger, _ = make(tmp_path, {"hang": {"behaviour": "hang"}}, retries=1)
    start = time.time()
    assert s.loop() == "failed"
    assert time.time() - start < 30
    job = ledger.job("m/hang")
    assert job.attempts == 2 and "deadline" in job.error


def test_job_timeout(tmp_path):
    s, ledger, _ = make(
        tmp_path, {"slow": {"behaviour": "ok", "sleep": 30}}, retries=0, job_timeout_s=0.5
    )
    assert s.loop() == "failed"
    assert "job_timeout_s" in ledger.job("m/slow").error


def test_parallel_jobs_overlap_and_share_threads(tmp_path):
    behaviours = {f"j{i}": {"behaviour": "ok", "sleep": 1.0} for i in range(4)}
    s, ledger, _ = make(tmp_path, behaviours, max_parallel=2)
    assert s.loop() == "done"
    rows = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    starts = sorted(r["start"] for r in rows if "start" in r)
    assert starts[1] - starts[0] < 0.9  # the first two ran together
    assert {r["threads"] for r in rows if "threads" in r} == {4}  # 8 cores / 2 jobs


def test_stop_signal_interrupts_and_leaves_jobs_pending(tmp_path):
    s, ledger, _ = make(tmp_path, {"long": {"behaviour": "ok", "sleep": 30}})
    threading.Timer(1.0, lambda: setattr(s, "stop_signal", 2)).start()
    assert s.loop() == "interrupted"
    job = ledger.job("m/long")
    assert job.status == "pending"
    assert ledger.attempts("m/long")[-1]["status"] == "interrupted"


def test_a_resumed_job_gets_its_full_retry_budget_again(tmp_path):
    retries = 2
    behaviour = {"behaviour": "fail_until", "ok_from": 2 * (retries + 1)}
    s, ledger, _ = make(tmp_path, {"flaky": behaviour}, retries=retries)
    # An earlier driver used up the whole budget: retries + 1 failed attempts.
    for _ in range(retries + 1):
        n = ledger.start_attempt("m/flaky", "an-earlier-driver", "")
        ledger.end_attempt("m/flaky", n, "failed", "the worker exited with code 1")
    ledger.update_job("m/flaky", status="pending")  # as resume leaves a failed job
    assert s.loop() == "done"
    mine = [a["status"] for a in ledger.attempts("m/flaky") if a["owner"] == s.owner]
    assert mine == ["failed"] * retries + ["done"]
