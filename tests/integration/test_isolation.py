"""One job's worker dies (as under the out-of-memory killer); the other jobs finish."""

import json
import os
import signal
import subprocess
import sys
import time

from test_resume import cached_answers, worker_pids

from conftest import suite_text


def test_a_dead_worker_fails_only_its_job(tmp_path, smollm2, tasks_dir):
    root = tmp_path / "runs"
    suite = tmp_path / "suite.yaml"
    extra = "execution: {retries: 0, max_parallel_jobs: 1}\n"
    suite.write_text(
        suite_text(
            [("first", smollm2), ("second", smollm2)],
            ["demo_gsm8k_cot"],
            tasks_dir,
            root,
            limit=2,
            extra=extra,
        )
    )
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ggufbench", "run", str(suite)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    deadline = time.time() + 300
    while cached_answers(root) < 1:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    (pid,) = worker_pids(root)
    os.kill(pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    (run_dir,) = root.iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "partial"
    first = summary["models"]["first"]["benchmarks"]["demo_gsm8k_cot"]
    second = summary["models"]["second"]["benchmarks"]["demo_gsm8k_cot"]
    assert first["status"] == "failed" and "SIGKILL" in first["error"]
    assert second["status"] == "done" and second["metrics"]
    report = (run_dir / "report.md").read_text()
    assert "## Failed jobs" in report and "SIGKILL" in report
