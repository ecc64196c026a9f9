"""kill -9 at any moment, then resume: identical samples, answers served from the ledger."""

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from conftest import ggufbench, read_samples, start_ggufbench, suite_text

TASKS = ["demo_gsm8k_cot", "demo_hellaswag"]


def start(suite: Path) -> subprocess.Popen:
    """``ggufbench run SUITE`` in the background, what it prints kept in ``stdout``."""
    return start_ggufbench("run", str(suite), output=subprocess.PIPE)


def cached_answers(root: Path) -> int:
    for ledger in root.glob("*/ledger.sqlite"):
        try:
            db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
            try:
                return int(db.execute("SELECT COUNT(*) FROM cache").fetchone()[0])
            finally:
                db.close()
        except sqlite3.OperationalError:
            return 0
    return 0


def wait_for_answers(root: Path, proc: subprocess.Popen, at_least: int) -> None:
    deadline = time.time() + 300
    while cached_answers(root) < at_least:
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "no progress"
        time.sleep(0.2)


def partial_job(root: Path) -> bool:
    """Whether some job is running with part of its answers committed, and its current
    attempt's worker has said where it runs (a resumed job keeps its last ``done`` until
    then, and its worker may not have opened its log yet)."""
    for ledger in root.glob("*/ledger.sqlite"):
        try:
            db = sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)
            try:
                sql = (
                    "SELECT COUNT(*) FROM jobs j WHERE status='running' AND done > 0"
                    " AND done < total AND EXISTS (SELECT 1 FROM attempts a"
                    " WHERE a.job_id = j.id AND a.n = j.attempts AND a.host IS NOT NULL)"
                )
                return int(db.execute(sql).fetchone()[0]) > 0
            finally:
                db.close()
        except sqlite3.OperationalError:
            return False
    return False


def wait_for_partial(root: Path, proc: subprocess.Popen) -> list[int]:
    """Wait until a live worker is part way through a job (a killed run's rows don't count);
    return the workers that were alive then."""
    deadline = time.time() + 300
    while True:
        live = [pid for pid in worker_pids(root) if alive(pid)]
        if live and partial_job(root):
            return live
        assert proc.poll() is None, proc.communicate()[0]
        assert time.time() < deadline, "no progress"
        time.sleep(0.05)


def worker_pids(root: Path) -> list[int]:
    ledgers = list(root.glob("*/ledger.sqlite"))
    if not ledgers:
        return []
    try:
        db = sqlite3.connect(f"file:{ledgers[0]}?mode=ro", uri=True, timeout=5)
        try:
            sql = "SELECT pid FROM attempts WHERE status='running' AND pid IS NOT NULL"
            return [int(r[0]) for r in db.execute(sql)]
        finally:
            db.close()
    except sqlite3.OperationalError:  # the ledger is being created
        return []


def children(parent: int) -> list[int]:
    """The processes whose parent is ``parent`` (workers and a waiting spare)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_kill9_then_resume_gives_identical_samples(tmp_path, smollm2, tasks_dir):
    reference = tmp_path / "reference.yaml"
    reference.write_text(
        suite_text([("smol", smollm2)], TASKS, tasks_dir, tmp_path / "ref", limit=10)
    )
    done = ggufbench("run", str(reference))
    assert done.returncode == 0, done.stdout + done.stderr
    (ref_dir,) = (tmp_path / "ref").iterdir()

    root = tmp_path / "runs"
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text([("smol", smollm2)], TASKS, tasks_dir, root, limit=10))
    # 1: kill the whole process group while the first job is answering
    proc = start(suite)
    wait_for_partial(root, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # 2: kill only the orchestrator; its orphaned worker (and any spare) must stop by itself
    proc = start(suite)
    workers = wait_for_partial(root, proc)
    orphans = set(workers) | set(children(proc.pid))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 15
    while any(alive(pid) for pid in orphans) and time.time() < deadline:
        time.sleep(0.2)
    assert workers and not any(alive(pid) for pid in orphans), "an orphaned worker kept running"
    # 3: run the same suite again: it resumes and finishes
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming the unfinished run" in done.stdout
    (run_dir,) = root.iterdir()
    assert read_samples(run_dir) == read_samples(ref_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    benches = summary["models"]["smol"]["benchmarks"]
    for entry in benches.values():
        req = entry["requests"]
        assert req["from_cache"] + req["computed"] == req["total"]
    assert sum(e["requests"]["from_cache"] for e in benches.values()) > 0
    assert max(e["attempts"] for e in benches.values()) >= 2
    logs = {p.name for p in (run_dir / "logs").iterdir()}
    resumed = [name for name, e in benches.items() if e["attempts"] >= 2]
    assert all(f"smol__{name}.2.log" in logs for name in resumed)
    ref = json.loads((ref_dir / "summary.json").read_text())["models"]["smol"]["benchmarks"]
    for name, entry in summary["models"]["smol"]["benchmarks"].items():
        assert entry["metrics"] == ref[name]["metrics"]


def test_resume_command_and_status_of_a_dead_run(tmp_path, smollm2, tasks_dir):
    root = tmp_path / "runs"
    suite = tmp_path / "suite.yaml"
    # all 15 items: a few answers come at once, so with few items a fast CPU can finish the
    # job within one commit and leave no moment where it is part way through
    suite.write_text(suite_text([("smol", smollm2)], ["demo_gsm8k_cot"], tasks_dir, root, limit=15))
    proc = start(suite)
    wait_for_partial(root, proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (run_dir,) = root.iterdir()
    state = json.loads(ggufbench("status", str(run_dir), "--json").stdout)
    assert state["live"] is False and state["status"] == "interrupted"
    assert [j["status"] for j in state["jobs"]] == ["interrupted"]
    done = ggufbench("resume", str(run_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "done"
    assert summary["models"]["smol"]["benchmarks"]["demo_gsm8k_cot"]["requests"]["from_cache"] >= 1
