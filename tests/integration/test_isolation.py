"""One job's worker dies (as under the out-of-memory killer); the other jobs finish."""

import json
import os
import signal

from test_resume import start, wait_for_partial

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
            limit=15,  # part way through is seen on any CPU (see test_resume.py)
            extra=extra,
        )
    )
    proc = start(suite)
    (pid,) = wait_for_partial(root, proc)  # the first model's job: one job at a time
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
