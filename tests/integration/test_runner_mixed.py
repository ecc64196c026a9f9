"""One suite on three runners through the real `ggufbench run`: in-process llama.cpp, a
managed llama-server (found on PATH, as a user's would be) and Ollama (the FAKE Ollama
server of fake_ollama.py: none can be installed here). Then the Ollama model changes
behind its name, and the resume refuses in one sentence, before anything is computed."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from fake_ollama import FakeOllama, Reply

from conftest import ggufbench, summary_of, write_suite
from ggufbench.gguf_file import sha256_of

JOB = "demo_gsm8k_cot"


def test_a_suite_on_three_runners_runs_to_done_and_a_changed_ollama_model_stops_resume(
    tmp_path: Path,
    smollm2: Path,
    server_bin: str,
    tasks_dir: Path,
    fake_ollama: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_ollama.script = lambda body: Reply(text=" 6 + 7 = 13. The answer is 13.\n\nQ:")
    fake_ollama.add_model("smollm2:135m")
    monkeypatch.setenv("PATH", f"{Path(server_bin).parent}{os.pathsep}{os.environ['PATH']}")
    suite = write_suite(
        tmp_path,
        f"""name: mixed
models:
  - {{alias: inproc, path: {smollm2}, baseline: true}}
  - {{alias: served, runner: llama_server, path: {smollm2}}}
  - {{alias: kept, runner: ollama, ollama_name: "smollm2:135m", base_url: "{fake_ollama.url}"}}
defaults: {{n_ctx: 1024, threads: 1}}
benchmarks:
  - lm_eval: {{tasks: [{JOB}], limit: 2, include_path: {tasks_dir}}}
execution: {{retries: 0}}
""",
    )
    done = ggufbench("run", str(suite))
    assert done.returncode == 0, done.stdout + done.stderr
    run_dir, summary = summary_of(tmp_path / "runs")
    assert summary["status"] == "done"
    for alias in ("inproc", "served", "kept"):
        entry = summary["models"][alias]["benchmarks"][JOB]
        assert entry["status"] == "done" and entry["n_samples"] == 2, alias
    bodies = fake_ollama.bodies("/api/generate")
    assert len(bodies) == 2 and all(b["model"] == "smollm2:135m" and b["raw"] for b in bodies)

    digest = fake_ollama.models["smollm2:135m"].digest
    recorded = json.loads((run_dir / "run.json").read_text())["models"]
    assert recorded["kept"]["digest"] == digest and recorded["kept"]["runner"] == "ollama"
    assert recorded["served"]["sha256"] == recorded["inproc"]["sha256"] == sha256_of(smollm2)
    identities = job_identities(run_dir)
    assert identities["served"] == identities["inproc"] == sha256_of(smollm2)
    assert identities["kept"] == f"ollama {digest}"

    with sqlite3.connect(run_dir / "ledger.sqlite") as db:  # as a crash would leave it
        db.execute("UPDATE jobs SET status='pending', result=NULL WHERE model='kept'")
    fake_ollama.add_model("smollm2:135m", digest="0" * 64)  # pulled again: another model
    refused = ggufbench("resume", str(run_dir))
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the Ollama model 'smollm2:135m' at" in refused.stderr
    assert "has changed since this run started" in refused.stderr
    assert "Traceback" not in refused.stderr and len(fake_ollama.bodies("/api/generate")) == 2

    fake_ollama.add_model("smollm2:135m", digest=digest)  # restored: the run goes on
    resumed = ggufbench("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    requests = summary["models"]["kept"]["benchmarks"][JOB]["requests"]
    assert requests == {"total": 2, "computed": 0, "from_cache": 2}


def job_identities(run_dir: Path) -> dict[str, str]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        rows = db.execute("SELECT model, result FROM jobs WHERE status = 'done'").fetchall()
    return {model: json.loads(result)["identity"] for model, result in rows}
