"""No managed llama-server outlives its job: kill -9 of the job's worker, and kill -9 of
the orchestrator (its process group leader only, so the kernel signals nobody else),
each during a real `ggufbench run` with the real llama-server and SmolLM2.

The run's model file is a link of its own, so the servers of this run are told apart
from any other by the path on their command line (psutil).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import start_ggufbench, write_suite


def servers_of(model: Path) -> list[psutil.Process]:
    """The live llama-server processes serving ``model`` (zombies are gone already)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if str(model) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


@pytest.fixture
def running(tmp_path: Path, smollm2: Path, server_bin: str, tasks_dir: Path) -> Iterator[dict]:
    """A `ggufbench run` whose job has its llama-server up and answering."""
    model = tmp_path / "orphan-check.gguf"
    model.symlink_to(smollm2)
    suite = write_suite(
        tmp_path,
        f"""name: orphans
models:
  - {{alias: served, runner: llama-server, path: {model}, server_bin: {server_bin}}}
defaults: {{n_ctx: 512, threads: 1}}
benchmarks:
  - lm_eval: {{tasks: [demo_gsm8k_cot], limit: 3, include_path: {tasks_dir}}}
execution: {{retries: 0}}
""",
    )
    orchestrator = start_ggufbench("run", str(suite))  # the leader of a group of its own
    try:
        deadline = time.monotonic() + 240
        while not servers_of(model):
            assert orchestrator.poll() is None, "the run ended before its server started"
            assert time.monotonic() < deadline, "no llama-server was started"
            time.sleep(0.1)
        yield {"model": model, "orchestrator": orchestrator}
    finally:
        if orchestrator.poll() is None:
            os.killpg(orchestrator.pid, signal.SIGKILL)
        orchestrator.wait()
        for proc in servers_of(model):  # never leave one behind, whatever the test found
            proc.kill()


def gone_within(model: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while servers_of(model):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_kill_9_of_the_worker_leaves_no_server(running: dict) -> None:
    (server,) = servers_of(running["model"])
    worker = server.parent()
    assert worker is not None and "ggufbench.worker" in " ".join(worker.cmdline())
    worker.send_signal(signal.SIGKILL)
    assert gone_within(running["model"], 5.0)


def test_kill_9_of_the_orchestrator_leaves_no_server(running: dict) -> None:
    orchestrator: subprocess.Popen = running["orchestrator"]
    (server,) = servers_of(running["model"])
    assert server.ppid() != orchestrator.pid  # started by the job's worker, not the driver
    os.kill(orchestrator.pid, signal.SIGKILL)  # the group leader only: no one else signalled
    orchestrator.wait()
    assert gone_within(running["model"], 5.0)
