"""A legacy {"gguf_models": [...]} file whose entries name Ollama models, run by the real
`ggufbench run` against the FAKE Ollama server (fake_ollama.py) at OLLAMA_HOST: an entry
with only ollama_name runs on Ollama; one with gguf_path too runs in-process, its
Ollama name kept in run.json, and nothing is warned about."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_ollama import FakeOllama, Reply

from conftest import ggufbench, summary_of

JOB = "demo_gsm8k_cot"


def test_a_legacy_file_with_ollama_names_runs(
    tmp_path: Path,
    smollm2: Path,
    tasks_dir: Path,
    fake_ollama: FakeOllama,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_ollama.script = lambda body: Reply(text=" The answer is 4.\n\nQ:")
    fake_ollama.add_model("pipeline:base")
    monkeypatch.setenv("OLLAMA_HOST", fake_ollama.url.removeprefix("http://"))
    entry = {"tasks": [JOB], "limit": 2}
    legacy = {
        "gguf_models": [
            {"alias": "base", "ollama_name": "pipeline:base", **entry},
            {"alias": "local", "gguf_path": str(smollm2), "ollama_name": "pipeline:q4", **entry},
        ],
        "output_root": "runs",
        "defaults": {"n_ctx": 1024, "threads": 1},
        "execution": {"retries": 0},
        "lm_eval": {"include_path": str(tasks_dir)},
    }
    path = tmp_path / "models.json"
    path.write_text(json.dumps(legacy), encoding="utf-8")
    done = ggufbench("run", str(path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "warning" not in done.stderr and "ollama_name" not in done.stderr
    run_dir, summary = summary_of(tmp_path / "runs")
    for alias in ("base", "local"):
        assert summary["models"][alias]["benchmarks"][JOB]["status"] == "done", alias
    recorded = json.loads((run_dir / "run.json").read_text())["models"]
    assert recorded["base"]["runner"] == "ollama"
    assert recorded["base"]["digest"] == fake_ollama.models["pipeline:base"].digest
    assert recorded["local"]["runner"] == "llama-cpp"
    assert recorded["local"]["ollama_name"] == "pipeline:q4"
    bodies = fake_ollama.bodies("/api/generate")
    assert len(bodies) == 2 and {b["model"] for b in bodies} == {"pipeline:base"}
