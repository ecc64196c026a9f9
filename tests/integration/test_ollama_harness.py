"""A job run end to end on the ollama runner, as a worker runs it (the harness of
test_llama_server_harness.py), against the FAKE Ollama server: the model imported
from its GGUF file, lm-eval's prompts sent raw, a thinking model's thinking kept out
of the samples, and the second run answered from the ledger."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fake_ollama import FakeOllama, Reply
from test_llama_server_harness import ALIAS, run_job

from ggufbench.backends.ollama import OllamaBackend
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.rundir import samples_file
from ggufbench.thinking import thinking_format

TASK = "demo_gsm8k_cot"


def test_a_job_on_an_imported_gguf_runs_raw_prompts_and_resumes(
    fake_ollama: FakeOllama, smollm2: Path, tasks_dir: Path, tmp_path: Path
) -> None:
    model = {"runner": "ollama", "path": str(smollm2), "base_url": fake_ollama.url, "n_ctx": 2048}
    fake_ollama.script = lambda body: Reply(text=" The answer is 42.\n\nQuestion: more")

    def make(settings: dict[str, Any]) -> OllamaBackend:
        return OllamaBackend.from_model(settings)

    first = run_job(tmp_path, model, TASK, tasks_dir, make, limit=2)
    assert first["requests"] == {"total": 2, "computed": 2, "from_cache": 0}
    bodies = fake_ollama.bodies("/api/generate")
    assert len(bodies) == 2 and all(b["raw"] and b["prompt"].endswith("\nA:") for b in bodies)
    again = run_job(tmp_path, model, TASK, tasks_dir, make, limit=2)
    assert again["requests"] == {"total": 2, "computed": 0, "from_cache": 2}
    assert len(fake_ollama.bodies("/api/generate")) == 2  # nothing sent the second time
    assert again["identity"] == first["identity"] and again["metrics"] == first["metrics"]


def test_a_thinking_models_samples_keep_the_hash_not_the_thinking(
    fake_ollama: FakeOllama, tasks_dir: Path, tmp_path: Path
) -> None:
    fake_ollama.add_model("thinker", capabilities=("completion", "thinking"))
    secret = "Let me think: SECRET-STEP, then 42."
    fake_ollama.script = lambda body: Reply(text="The answer is 42.", thinking=secret)
    model = {"runner": "ollama", "ollama_name": "thinker", "base_url": fake_ollama.url}

    def make(settings: dict[str, Any]) -> ThinkingBackend:
        return ThinkingBackend(OllamaBackend.from_model(settings), thinking_format("think"))

    run_job(tmp_path, model, TASK, tasks_dir, make, limit=2)
    text = samples_file(tmp_path, ALIAS, TASK).read_text()
    assert "SECRET-STEP" not in text
    assert hashlib.sha256(secret.encode()).hexdigest() in text
    assert all(b["think"] is True for b in fake_ollama.bodies("/api/generate"))
