"""The ways a model runs (runners), and the one place their backends are built.

``RUNNERS`` maps each runner name a suite may give to its backend class, imported
only when a job uses it (the in-process one loads llama.cpp):

- ``llama-cpp``: the model file loaded in the job's process (:mod:`.llama_cpp`);
- ``llama-server``: llama.cpp's server, started for the job or already running
  (:mod:`.llama_server`);
- ``ollama``: a model kept in Ollama (:mod:`.ollama`);
- ``openai``: any OpenAI-compatible server (:mod:`.openai_http`).

Each class builds itself from a model's settings (``plan.model_settings``) with
``from_model``. :func:`make_backend` builds a job's model, wrapped so a thinking
model gives answers only; :func:`make_judge_backend` builds the ELYZA judge
(``JUDGES``: a GGUF file held to the scores 1-5, or an OpenAI-compatible endpoint).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from ggufbench.backends._base import (
    Backend,
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
    NotSupported,
    Retryable,
    RetryPolicy,
)
from ggufbench.errors import ConfigError

__all__ = [
    "JUDGES",
    "RUNNERS",
    "Backend",
    "BackendInfo",
    "GenRequest",
    "GenResult",
    "LoglikRequest",
    "LoglikResult",
    "NotSupported",
    "RetryPolicy",
    "Retryable",
    "make_backend",
    "make_judge_backend",
    "runner_class",
]

RUNNERS: dict[str, str] = {
    "llama-cpp": "ggufbench.backends.llama_cpp:LlamaCppBackend",
    "llama-server": "ggufbench.backends.llama_server:LlamaServerBackend",
    "ollama": "ggufbench.backends.ollama:OllamaBackend",
    "openai": "ggufbench.backends.openai_http:OpenAIBackend",
}


class FromModel(Protocol):
    """A backend class: builds itself from a model's settings."""

    def from_model(
        self, model: Mapping[str, Any], threads: int | None = None, log_path: Path | None = None
    ) -> Any: ...


def runner_class(runner: str) -> FromModel:
    """The backend class of ``runner`` (a canonical name, as the suite has it)."""
    where = RUNNERS.get(runner)
    if where is None:
        raise ConfigError(f"unknown runner '{runner}'; use one of {', '.join(RUNNERS)}")
    module, name = where.split(":")
    found: FromModel = getattr(importlib.import_module(module), name)
    return found


def make_backend(
    model: Mapping[str, Any],
    threads: int | None = None,
    *,
    sha256: str | None = None,
    log_path: Path | None = None,
) -> Any:
    """A job's backend from its model's settings; for thinking models wrapped so only
    answers come out. ``sha256``: the run's record of the model file (its identity);
    ``log_path``: where a server started for the job writes its output."""
    from ggufbench.thinking import thinking_format

    settings = dict(model) if sha256 is None else {**model, "sha256": sha256}
    backend = runner_class(str(model["runner"])).from_model(settings, threads, log_path)
    fmt = thinking_format(model.get("thinking"))
    if fmt.style == "none":
        return backend
    from ggufbench.backends.thinking import ThinkingBackend

    return ThinkingBackend(backend, fmt)


def _gguf_judge(judge: Mapping[str, Any], threads: int | None, n_gpu_layers: int) -> Any:
    """A GGUF judge, in this process, held to the scores 1-5 by choosing among them."""
    from ggufbench.backends.llama_cpp import LlamaCppBackend
    from ggufbench.benchmarks.elyza_choice import ChoiceJudge

    settings = {**judge, "n_gpu_layers": n_gpu_layers, "n_batch": 512}
    return ChoiceJudge(LlamaCppBackend.from_model(settings, threads))


def _http_judge(judge: Mapping[str, Any], threads: int | None, n_gpu_layers: int) -> Any:
    """An OpenAI-compatible judge: the score grammar in its requests, the suite's
    ``concurrency`` requests at once."""
    from ggufbench.backends.openai_http import OpenAIBackend

    return OpenAIBackend(
        str(judge["base_url"]),
        str(judge["model"]),
        api_key_env=judge.get("api_key_env"),
        concurrency=int(judge["concurrency"]),
    )


JUDGES: dict[str, Callable[[Mapping[str, Any], int | None, int], Any]] = {
    "llama-cpp": _gguf_judge,
    "openai": _http_judge,
}


def make_judge_backend(judge: Mapping[str, Any], threads: int | None, n_gpu_layers: int) -> Any:
    """The ELYZA judge from its settings (``JudgeSpec`` as JSON)."""
    build = JUDGES.get(str(judge["runner"]))
    if build is None:
        raise ConfigError(
            f"the ELYZA judge's runner {judge['runner']} cannot judge; use one of "
            f"{', '.join(JUDGES)}"
        )
    return build(judge, threads, n_gpu_layers)
