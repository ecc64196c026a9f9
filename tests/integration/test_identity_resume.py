"""A run resumed on the same machine and build finds every answer in the ledger, and
run.json shows where each attempt ran."""

import json
import socket
import sqlite3

from conftest import ggufbench, suite_text, summary_of
from ggufbench.build_info import describe_device


def test_resume_on_the_same_machine_hits_the_cache(tmp_path, smollm2, tasks_dir):
    root = tmp_path / "runs"
    suite = tmp_path / "suite.yaml"
    suite.write_text(suite_text([("smol", smollm2)], ["demo_hellaswag"], tasks_dir, root))
    first = ggufbench("run", str(suite))
    assert first.returncode == 0, first.stdout + first.stderr
    run_dir, computed = summary_of(root)
    job = "smol/demo_hellaswag"
    requests = computed["models"]["smol"]["benchmarks"]["demo_hellaswag"]["requests"]
    assert requests["computed"] == requests["total"] > 0

    db = sqlite3.connect(run_dir / "ledger.sqlite")
    with db:  # the job as a crash would leave it: its answers committed, the job not done
        db.execute("UPDATE jobs SET status='pending', result=NULL WHERE id=?", (job,))
    db.close()
    again = ggufbench("resume", str(run_dir))
    assert again.returncode == 0, again.stdout + again.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    served = summary["models"]["smol"]["benchmarks"]["demo_hellaswag"]["requests"]
    assert served == {"total": requests["total"], "computed": 0, "from_cache": requests["total"]}

    attempts = json.loads((run_dir / "run.json").read_text())["attempts"]
    assert [(a["job"], a["attempt"], a["status"]) for a in attempts] == [
        (job, 1, "done"),
        (job, 2, "done"),
    ]
    for attempt in attempts:
        assert attempt["host"] == socket.gethostname()
        assert attempt["device"] == describe_device(-1)  # the suite's default n_gpu_layers
        assert attempt["pid"] > 0 and attempt["log"].startswith("logs/")
        log = (run_dir / attempt["log"]).read_text()
        assert f"on {attempt['host']}, pid {attempt['pid']}, device: {attempt['device']}" in log
    status = json.loads(ggufbench("status", str(run_dir), "--json").stdout)
    assert status["jobs"][0]["device"] == attempts[-1]["device"]
