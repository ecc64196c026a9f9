"""runner: llama-server through the real `ggufbench run`: a managed llama-server (the real
binary from llama_tools, the real SmolLM2) per job on the demo's gsm8k-style task and on
ELYZA; a loglikelihood task fails with its sentence while the other jobs go on; kill -9
of the orchestrator mid-job, then resume, gives the samples of an uninterrupted run.

Kept small for CI (2 cores): 2-3 items, n_ctx 1024, one thread.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from conftest import ggufbench, read_samples, start_ggufbench, summary_of, write_suite
from ggufbench.benchmarks.elyza_data import demo_dataset_path
from ggufbench.gguf_file import sha256_of


def served_suite(
    folder: Path, model: Path, server_bin: str, tasks_dir: Path, *, tasks: str, elyza: bool
) -> Path:
    """A suite with one model on a managed llama-server."""
    text = f"""name: served
models:
  - alias: served
    runner: llama-server
    path: {model}
    server_bin: {server_bin}
defaults: {{n_ctx: 1024, threads: 1}}
benchmarks:
  - lm_eval: {{tasks: [{tasks}], limit: 3, include_path: {tasks_dir}}}
"""
    if elyza:
        text += f"""  - elyza_tasks_100:
      dataset: {demo_dataset_path()}
      limit: 2
      max_tokens: 24
      judge: {{runner: llama-cpp, path: {model}, n_ctx: 1024}}
"""
    return write_suite(folder, text + "execution: {retries: 0}\n")


def test_gsm8k_and_elyza_on_a_managed_server_and_a_loglikelihood_task_refused(
    tmp_path: Path, smollm2: Path, server_bin: str, tasks_dir: Path
) -> None:
    suite = served_suite(
        tmp_path, smollm2, server_bin, tasks_dir, tasks="demo_gsm8k_cot, demo_hellaswag", elyza=True
    )
    done = ggufbench("run", str(suite))
    assert done.returncode == 1, done.stdout + done.stderr  # partial: hellaswag cannot run
    assert "cannot score the prompts of lm-eval task 'demo_hellaswag'" in done.stdout
    run_dir, summary = summary_of(tmp_path / "runs")
    model = summary["models"]["served"]
    assert model["sha256"] == sha256_of(smollm2) and model["quant"] == "Q4_1"
    jobs = model["benchmarks"]
    gsm8k, elyza = jobs["demo_gsm8k_cot"], jobs["elyza_tasks_100"]
    assert gsm8k["status"] == "done" and gsm8k["n_samples"] == 3
    assert gsm8k["requests"] == {"total": 3, "computed": 3, "from_cache": 0}
    assert elyza["status"] == "done" and elyza["n_samples"] == 2
    assert jobs["demo_hellaswag"]["status"] == "failed"
    error = jobs["demo_hellaswag"]["error"]
    assert error.startswith("llama-server cannot score") and error.endswith("runner: llama-cpp")
    result = json.loads((run_dir / "results/served/demo_gsm8k_cot.json").read_text())
    assert result["results"]["demo_gsm8k_cot"]["alias"] == "demo_gsm8k_cot"
    server_log = run_dir / "logs" / "served__demo_gsm8k_cot.1.server.log"
    assert str(smollm2) in server_log.read_text(errors="replace")  # the server's own output
    identities = {job["identity"] for job in ledger_results(run_dir).values()}
    assert identities == {sha256_of(smollm2)}  # as the in-process runner's


def ledger_results(run_dir: Path) -> dict[str, dict]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        rows = db.execute("SELECT id, result FROM jobs WHERE status = 'done'").fetchall()
    return {job: json.loads(result) for job, result in rows}


def committed(root: Path) -> int:
    for ledger in root.glob("*/ledger.sqlite"):
        try:
            with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5) as db:
                return int(db.execute("SELECT COUNT(*) FROM cache").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
    return 0


def test_kill_9_of_the_orchestrator_then_resume_gives_the_same_samples(
    tmp_path: Path, smollm2: Path, server_bin: str, tasks_dir: Path
) -> None:
    whole_dir, cut_dir = tmp_path / "whole", tmp_path / "cut"
    whole_dir.mkdir()
    cut_dir.mkdir()
    whole = served_suite(
        whole_dir, smollm2, server_bin, tasks_dir, tasks="demo_gsm8k_cot", elyza=False
    )
    done = ggufbench("run", str(whole))
    assert done.returncode == 0, done.stdout + done.stderr
    expected = read_samples(summary_of(whole_dir / "runs")[0])

    cut = served_suite(cut_dir, smollm2, server_bin, tasks_dir, tasks="demo_gsm8k_cot", elyza=False)
    proc = start_ggufbench("run", str(cut))
    try:
        deadline = time.monotonic() + 300
        while committed(cut_dir / "runs") < 1:
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    (run_dir,) = (cut_dir / "runs").iterdir()
    resumed = ggufbench("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    requests = summary["models"]["served"]["benchmarks"]["demo_gsm8k_cot"]["requests"]
    assert requests["from_cache"] >= 1 and requests["total"] == 3
    assert read_samples(run_dir) == expected
