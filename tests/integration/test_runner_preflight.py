"""Preflight of the server runners (ggufbench.preflight.check): each problem one sentence,
what a job reserves, and what run.json records; with the real SmolLM2 file and the FAKE
Ollama server (fake_ollama.py), no llama-server started."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fake_ollama import FakeOllama

from ggufbench.backends._server_process import free_port
from ggufbench.backends.ollama import imported_name
from ggufbench.config import parse_suite
from ggufbench.footprint import footprint_bytes
from ggufbench.gguf_file import sha256_of, validate
from ggufbench.preflight import Report, check


@pytest.fixture
def preflight(tmp_path: Path, tasks_dir: Path) -> Callable[..., Report]:
    """Preflight of a suite of these models, on the demo's gsm8k-style and hellaswag tasks."""

    def check_models(*models: dict[str, Any]) -> Report:
        benchmark = {"tasks": ["demo_gsm8k_cot", "demo_hellaswag"], "include_path": str(tasks_dir)}
        data = {
            "name": "pre",
            "models": list(models),
            "defaults": {"n_ctx": 1024},
            "benchmarks": [{"lm_eval": benchmark}],
        }
        return check(parse_suite(data, tmp_path), datasets=False)

    return check_models


@pytest.fixture
def inproc(smollm2: Path) -> dict[str, Any]:
    """SmolLM2 on the in-process runner, as the suite names it."""
    return {"alias": "inproc", "path": str(smollm2)}


@pytest.fixture
def kept(fake_ollama: FakeOllama) -> dict[str, Any]:
    """A model the fake Ollama server has (kept:q4), as the suite names it."""
    fake_ollama.add_model("kept:q4")
    return {
        "alias": "kept",
        "runner": "ollama",
        "ollama_name": "kept:q4",
        "base_url": fake_ollama.url,
    }


def test_memory_is_reserved_only_where_the_model_loads(
    preflight: Callable[..., Report],
    smollm2: Path,
    inproc: dict[str, Any],
    kept: dict[str, Any],
    fake_ollama: FakeOllama,
) -> None:
    served = {"alias": "managed", "runner": "llama-server", "path": str(smollm2)}
    served |= {"parallel": 3, "server_bin": "/bin/true"}
    remote = {"alias": "remote", "runner": "openai", "base_url": "http://h:1/v1", "model": "m"}
    report = preflight(inproc, served, kept, remote)
    assert report.problems == []
    info = validate(smollm2)
    assert report.footprints == {
        "inproc": footprint_bytes(info, 1024),
        "managed": footprint_bytes(info, 1024, n_seq=3),  # the KV cache of every slot
    }
    managed = report.models["managed"]
    assert managed["runner"] == "llama-server" and managed["sha256"] == sha256_of(smollm2)
    assert managed["server"] == "/bin/true"
    assert report.models["kept"] == {
        "runner": "ollama",
        "base_url": fake_ollama.url,
        "ollama_name": "kept:q4",
        "digest": fake_ollama.models["kept:q4"].digest,
    }


def test_tasks_that_score_prompts_are_noted_for_runners_that_cannot(
    preflight: Callable[..., Report], inproc: dict[str, Any], kept: dict[str, Any]
) -> None:
    report = preflight(inproc, kept)
    assert report.problems == []
    assert report.notes == [
        "model 'kept' (runner ollama) cannot score the prompts of lm-eval task "
        "'demo_hellaswag' (multiple_choice), so that job will fail while the others go on; "
        "run it with runner: llama-cpp, or leave the model out of that benchmark with "
        "models: [...]"
    ]


def test_a_gguf_to_import_is_recorded_under_its_ollama_name(
    preflight: Callable[..., Report], smollm2: Path, fake_ollama: FakeOllama
) -> None:
    model = {"alias": "imp", "runner": "ollama", "path": str(smollm2), "base_url": fake_ollama.url}
    report = preflight(model)
    record = report.models["imp"]
    assert record["ollama_name"] == imported_name(sha256_of(smollm2))
    assert record["digest"] is None  # its first job imports it
    assert "imp" not in report.footprints


def test_server_problems_are_one_sentence_each(
    preflight: Callable[..., Report], tmp_path: Path, smollm2: Path, fake_ollama: FakeOllama
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    broken = tmp_path / "broken-server"
    broken.write_text("#!/bin/sh\necho 'Illegal instruction' >&2\nexit 132\n")
    broken.chmod(0o755)
    report = preflight(
        {"alias": "a", "runner": "llama-server", "path": str(smollm2), "server_bin": str(broken)},
        {"alias": "b", "runner": "llama-server", "path": str(smollm2), "server_bin": "/no/srv"},
        {"alias": "c", "runner": "llama-server", "base_url": nobody},
        {"alias": "d", "runner": "ollama", "ollama_name": "missing", "base_url": fake_ollama.url},
        {"alias": "e", "runner": "ollama", "ollama_name": "kept:q4", "base_url": nobody},
    )
    assert report.problems == [
        f"model 'a': {broken} --version failed (exit 132: Illegal instruction); set "
        "server_bin to a llama-server binary built for this machine",
        "model 'b': server_bin /no/srv is not an executable file; give the path of a "
        "llama-server binary, or leave server_bin out to use llama-server from PATH or "
        "ggufbench's own build",
        f"model 'c': cannot connect to {nobody}/health (ConnectError); start the server or "
        "correct base_url",
        f"model 'd': the Ollama server at {fake_ollama.url} has no model 'missing'; pull it "
        "('ollama pull missing'), correct ollama_name, or give path to import a GGUF file",
        f"model 'e': cannot connect to {nobody}/api/tags (ConnectError); start the server or "
        "correct base_url",
    ]
