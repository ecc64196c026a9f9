"""SIGTERM stops a run cleanly with exit 130; a live run cannot be driven twice."""

import json
import signal
import subprocess

from test_resume import start, wait_for_answers

from conftest import ggufbench, suite_text


def test_sigterm_exits_130_and_lock_refuses_a_second_driver(tmp_path, smollm2, tasks_dir):
    root = tmp_path / "runs"
    suite = tmp_path / "suite.yaml"
    hook = f"execution: {{on_finish: 'echo $GGUFBENCH_STATUS >> {tmp_path}/hook.txt'}}\n"
    suite.write_text(
        suite_text(
            [("smol", smollm2)],
            ["demo_gsm8k_cot", "demo_hellaswag", "demo_mmlu"],
            tasks_dir,
            root,
            limit=12,
            extra=hook,
        )
    )  # enough work that the run is still going after the first answer and two commands,
    # on any CPU: the rest of the first job and two more are left then
    proc = start(suite)
    wait_for_answers(root, proc, 1)
    (run_dir,) = root.iterdir()
    second = ggufbench("resume", str(run_dir))
    assert second.returncode == 2 and "driven by another ggufbench process" in second.stderr
    live = json.loads(ggufbench("status", str(run_dir), "--json").stdout)
    assert live["live"] is True
    assert "running" in [job["status"] for job in live["jobs"]], live
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 130, proc.stdout.read().decode()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert (tmp_path / "hook.txt").read_text().split() == ["interrupted"]
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming" in done.stdout
    assert (tmp_path / "hook.txt").read_text().split() == ["interrupted", "done"]
