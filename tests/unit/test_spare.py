"""Spare workers: started ahead of need, handed one job, never costing one."""

import json
import subprocess
import sys
from pathlib import Path

from ggufbench.executors import LocalExecutor, worker_env
from ggufbench.ledger import JobRow, Ledger
from ggufbench.resources import Machine
from ggufbench.rundir import RunDir
from ggufbench.scheduler import Scheduler, Settings
from ggufbench.spare import Spare

WORKER = [sys.executable, str(Path(__file__).with_name("scripted_worker.py"))]
REAL_WORKER = [sys.executable, "-m", "ggufbench.worker"]


def test_the_real_worker_waits_then_runs_the_job_it_is_given(tmp_path):
    spare = Spare(REAL_WORKER, worker_env())
    spare.start()
    log = tmp_path / "job.log"
    proc = spare.take(["--help"], {"CUDA_VISIBLE_DEVICES": ""}, log)
    assert proc is not None and proc.wait(timeout=60) == 0
    assert "usage: python -m ggufbench.worker" in log.read_text()
    assert spare.proc is None  # taken: the next job needs a new spare


def test_a_spare_that_died_is_not_handed_a_job(tmp_path):
    spare = Spare([sys.executable, "-c", "pass"], worker_env())
    spare.start()
    assert spare.proc is not None
    spare.proc.wait(timeout=30)
    assert spare.take(["x"], {}, tmp_path / "log") is None


def test_letting_a_waiting_spare_go_stops_it():
    spare = Spare(REAL_WORKER, worker_env())
    spare.start()
    proc = spare.proc
    assert proc is not None and proc.poll() is None
    spare.close()
    assert proc.poll() is not None and spare.proc is None


def scheduler(tmp_path, n_jobs: int, spare: Spare | None) -> tuple[Scheduler, Ledger]:
    run = RunDir(tmp_path)
    ledger = Ledger(run.ledger, create=True)
    owner = ledger.claim()
    ledger.add_jobs(
        [JobRow(f"m/j{i}", "m", f"j{i}", "lm_eval", {"behaviour": "ok"}) for i in range(n_jobs)]
    )
    machine = Machine(cores=8, total_ram=8 * 2**30, available_ram=8 * 2**30)
    executor = LocalExecutor(machine, 1, worker_cmd=WORKER, spare=spare)
    executor.attach(run.path, owner)
    return Scheduler(run, ledger, owner, executor, Settings()), ledger


def events(tmp_path) -> list[dict]:
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    starts = [e for e in map(json.loads, lines) if "start" in e]
    return sorted(starts, key=lambda e: e["start"])


class CountingSpare(Spare):
    started = 0

    def start(self) -> None:
        super().start()
        self.started += 1


def test_each_next_job_runs_in_a_spare_started_while_the_last_one_ran(tmp_path):
    spare = CountingSpare(WORKER, worker_env())
    spare.start()  # as the orchestrator does before its preflight
    s, ledger = scheduler(tmp_path, 3, spare)
    assert s.loop() == "done"
    assert [j.status for j in ledger.jobs()] == ["done"] * 3
    assert [e["spare"] for e in events(tmp_path)] == [True, True, True]
    assert spare.started == 3  # none once no job was left waiting


def test_a_spare_runs_its_job_with_the_job_s_own_environment(tmp_path):
    spare = Spare(WORKER, worker_env())
    spare.start()
    s, ledger = scheduler(tmp_path, 1, None)
    ledger.start_attempt("m/j0", s.owner, "")
    proc = spare.take(
        [str(tmp_path), "m/j0", s.owner], {"CUDA_VISIBLE_DEVICES": "3"}, tmp_path / "log"
    )
    assert proc is not None and proc.wait(timeout=60) == 0
    assert ledger.job("m/j0").status == "done"
    assert [(e["spare"], e["gpu"]) for e in events(tmp_path)] == [(True, "3")]


def test_a_spare_s_imports_leave_llama_cpp_unloaded():
    """llama.cpp reads CUDA_VISIBLE_DEVICES when it loads, so a spare must not load it early."""
    code = (
        "import sys; from ggufbench.worker import preload; "
        "print(preload() or 'llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_jobs_still_run_when_spares_cannot_start(tmp_path):
    broken = Spare([str(tmp_path / "no-such-python")], worker_env())
    broken.start()
    assert broken.proc is None
    s, ledger = scheduler(tmp_path, 2, broken)
    assert s.loop() == "done"
    assert all(j.status == "done" and j.attempts == 1 for j in ledger.jobs())
    assert [e["spare"] for e in events(tmp_path)] == [False, False]
