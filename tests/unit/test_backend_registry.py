"""One place builds backends: the registry in ggufbench.backends (no model, no server)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ggufbench
from ggufbench import backends
from ggufbench.backends import JUDGES, RUNNERS, make_backend, make_judge_backend, runner_class
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.backends.llama_server import LlamaServerBackend
from ggufbench.backends.ollama import OllamaBackend
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.config import RUNNER_ALIASES
from ggufbench.config import RUNNERS as SUITE_RUNNERS
from ggufbench.errors import ConfigError

SRC = Path(ggufbench.__file__).parent


def test_every_runner_a_suite_may_name_has_its_class() -> None:
    assert set(RUNNERS) == set(SUITE_RUNNERS) == set(RUNNER_ALIASES.values())
    assert runner_class("llama-cpp") is LlamaCppBackend
    assert runner_class("llama-server") is LlamaServerBackend
    assert runner_class("ollama") is OllamaBackend
    assert runner_class("openai") is OpenAIBackend
    with pytest.raises(ConfigError, match="unknown runner 'vllm'"):
        runner_class("vllm")


def openai_model(**extra: object) -> dict[str, object]:
    return {"runner": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", **extra}


def test_an_openai_model_is_identified_by_what_its_server_reports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, str]] = []

    def identity(url: str, name: str, **_: object) -> str:
        asked.append((url, name))
        return f'{url} {name} {{"id":"{name}","owned_by":"me"}}'

    monkeypatch.setattr("ggufbench.backends._server_http.openai_identity", identity)
    with make_backend(openai_model(concurrency=3)) as backend:
        assert isinstance(backend, OpenAIBackend) and backend.concurrency == 3
        assert backend.info.identity == 'http://127.0.0.1:9/v1 m {"id":"m","owned_by":"me"}'
    assert asked == [("http://127.0.0.1:9/v1", "m")]


def test_a_thinking_model_is_wrapped_so_only_answers_come_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        "ggufbench.backends._server_http.openai_identity", lambda url, name, **_: "id"
    )
    backend = make_backend(openai_model(thinking="quad"))
    try:
        assert isinstance(backend, ThinkingBackend) and isinstance(backend.inner, OpenAIBackend)
        assert backend.info.settings["thinking"].startswith("quad")
    finally:
        backend.close()


def test_judges_are_built_here_too() -> None:
    assert set(JUDGES) == {"llama-cpp", "openai"}
    judge = {"runner": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "j"}
    with make_judge_backend({**judge, "concurrency": 6}, None, -1) as http:
        assert isinstance(http, OpenAIBackend) and http.concurrency == 6
    with pytest.raises(ConfigError, match="the ELYZA judge's runner ollama cannot judge"):
        make_judge_backend({"runner": "ollama"}, None, 0)


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


@pytest.mark.parametrize("package", ["benchmarks", "executors", "backends"])
def test_no_benchmark_executor_or_backend_imports_the_worker(package: str) -> None:
    for path in sorted((SRC / package).rglob("*.py")):
        modules = imported_modules(path)
        assert "ggufbench.worker" not in modules, f"{path.relative_to(SRC)} imports the worker"
        assert not any(m.startswith("ggufbench.worker.") for m in modules)


def test_the_registry_is_the_only_place_backends_are_built() -> None:
    built = {"LlamaCppBackend(", "LlamaServerBackend(", "OllamaBackend(", "OpenAIBackend("}
    allowed = {SRC / "backends", SRC / "gateway"}  # the gateway serves an in-process model
    for path in sorted(SRC.rglob("*.py")):
        if any(place in path.parents for place in allowed):
            continue
        text = path.read_text(encoding="utf-8")
        found = [name for name in built if name in text]
        assert not found, f"{path.relative_to(SRC)} builds {found[0][:-1]} itself"
    assert backends.make_backend is make_backend
