"""resume runs a run directory's on_finish only for the user and host that created it."""

import getpass
import json
import os
import socket
from pathlib import Path

from conftest import ggufbench, suite_text


def edit_run_json(run_dir: Path, **fields: object) -> None:
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    meta.update(fields)
    path.write_text(json.dumps(meta))


def test_on_finish_runs_only_for_the_runs_creator(tmp_path, smollm2, tasks_dir):
    root = tmp_path / "runs"
    hook_file = tmp_path / "hook.txt"
    suite = tmp_path / "suite.yaml"
    hook = f"execution: {{on_finish: 'echo $GGUFBENCH_STATUS >> {hook_file}'}}\n"
    suite.write_text(
        suite_text([("smol", smollm2)], ["demo_hellaswag"], tasks_dir, root, limit=2, extra=hook)
    )
    first = ggufbench("run", str(suite))
    assert first.returncode == 0, first.stdout + first.stderr
    (run_dir,) = root.iterdir()
    meta = json.loads((run_dir / "run.json").read_text())
    me = {"uid": os.getuid(), "user": getpass.getuser(), "host": socket.gethostname()}
    assert meta["creator"] == me
    assert hook_file.read_text().split() == ["done"]

    own = ggufbench("resume", str(run_dir))
    assert own.returncode == 0, own.stdout + own.stderr
    assert hook_file.read_text().split() == ["done", "done"]

    edit_run_json(run_dir, creator={**me, "host": "elsewhere.example"})
    foreign = ggufbench("resume", str(run_dir))
    assert foreign.returncode == 0, foreign.stdout + foreign.stderr
    assert hook_file.read_text().split() == ["done", "done"]
    assert "on_finish was not run" in foreign.stdout and "elsewhere.example" in foreign.stdout
    assert f"echo $GGUFBENCH_STATUS >> {hook_file}" in foreign.stdout
    assert f"GGUFBENCH_RUN_DIR={run_dir.resolve()} GGUFBENCH_STATUS=done sh -c" in foreign.stdout

    edit_run_json(run_dir, creator={**me, "user": "someone-else", "uid": me["uid"] + 1})
    other_user = ggufbench("resume", str(run_dir))
    assert "on_finish was not run" in other_user.stdout and "someone-else" in other_user.stdout
    assert hook_file.read_text().split() == ["done", "done"]

    meta = json.loads((run_dir / "run.json").read_text())
    del meta["creator"]  # a run directory from before creators were recorded
    (run_dir / "run.json").write_text(json.dumps(meta))
    old = ggufbench("resume", str(run_dir))
    assert "does not record who created it" in old.stdout
    assert hook_file.read_text().split() == ["done", "done"]

    # run SUITE takes on_finish from the suite file given, so it runs on that run too
    edit_run_json(run_dir, status="interrupted")
    again = ggufbench("run", str(suite))
    assert again.returncode == 0 and "resuming" in again.stdout, again.stdout + again.stderr
    assert hook_file.read_text().split() == ["done", "done", "done"]
