"""Preflight of the models that run behind a server: ``llama-server`` and ``ollama``.

Each check is one sentence in the report (:class:`ggufbench.preflight.Report`):

- a managed llama-server: its file is a GGUF model (as for the in-process runner), and
  its program exists and runs (``--version``); the job reserves the model plus the KV
  cache of all its slots (``n_ctx`` x ``parallel``);
- an attached llama-server: the URL answers with the model loaded, and serves the
  name when one is given; an Ollama model: the server answers and has the model (a
  ``path`` to import: the file is a GGUF model). Their jobs reserve no memory here.
- an lm-eval task that scores prompts (loglikelihood, multiple_choice,
  loglikelihood_rolling) on a runner that cannot: a note that its job will fail with
  that reason while the other jobs go on.

What run.json records of each model comes from here, the Ollama digest included, so
a resume can refuse a model that changed (:mod:`ggufbench.rundir`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ggufbench.errors import GgufbenchError
from ggufbench.preflight import Report, check_file

if TYPE_CHECKING:
    from ggufbench.config import ModelSpec

__all__ = ["SCORING_TYPES", "check_scoring", "check_server_model"]

SCORING_TYPES = frozenset({"loglikelihood", "multiple_choice", "loglikelihood_rolling"})
"""lm-eval output types answered by scoring a prompt's tokens, not by generating."""

SCORING_RUNNERS = frozenset({"llama-cpp"})


def check_server_model(model: ModelSpec, settings: dict[str, Any], report: Report) -> None:
    """Check a llama-server or ollama model; record it in ``report.models``."""
    try:
        if settings["runner"] == "ollama":
            record = _ollama(model, report)
        elif model.base_url is not None:
            record = _attached(model, settings)
        else:
            record = _managed(model, settings, report)
    except GgufbenchError as exc:
        report.problems.append(f"model '{model.alias}': {exc}")
        return
    if record is not None:
        report.models[model.alias] = {"runner": settings["runner"], **record}


def _managed(model: ModelSpec, settings: dict[str, Any], report: Report) -> dict[str, Any] | None:
    from ggufbench.backends.llama_server import find_server_binary, server_version
    from ggufbench.footprint import footprint_bytes

    found = check_file(model, report)
    binary = find_server_binary(model.server_bin, build=False)
    if binary is None:
        report.notes.append(
            f"model '{model.alias}': llama-server is not on PATH, so its first job builds "
            "it from the llama.cpp source of the installed llama-cpp-python (minutes); "
            "set server_bin to use a build of your own"
        )
        version = None
    else:
        version = server_version(binary)
    if found is None:
        return None
    info, record = found
    slots = int(settings.get("parallel") or 1)
    report.footprints[model.alias] = footprint_bytes(info, settings["n_ctx"], n_seq=slots)
    return {**record, "server": binary, "server_version": version}


def _attached(model: ModelSpec, settings: dict[str, Any]) -> dict[str, Any]:
    """The running server answers with its model loaded (and serves the name given)."""
    from ggufbench.backends import make_backend
    from ggufbench.backends.llama_server import LlamaServerBackend

    backend = make_backend({**settings, "thinking": None})
    try:
        assert isinstance(backend, LlamaServerBackend)
        identity, build = backend.info.identity, backend.build
    finally:
        backend.close()
    return {"base_url": model.base_url, "model": model.model, "identity": identity, "build": build}


def _ollama(model: ModelSpec, report: Report) -> dict[str, Any] | None:
    """The Ollama model and its digest; for a ``path`` to import, the file (its name is
    derived from the sha256, and its digest known once it is imported)."""
    from ggufbench.backends.ollama import default_base_url, imported_name, model_digest
    from ggufbench.errors import ConfigError

    base_url = model.base_url or default_base_url()
    if model.ollama_name is not None:
        named = model_digest(model.ollama_name, base_url)
        return {"base_url": base_url, "ollama_name": model.ollama_name, "digest": named}
    found = check_file(model, report)
    if found is None:
        return None
    record = found[1]
    name = imported_name(record["sha256"])
    try:
        digest: str | None = model_digest(name, base_url)
    except ConfigError:  # not imported yet: its first job imports it
        digest = None
    return {**record, "base_url": base_url, "ollama_name": name, "digest": digest}


def check_scoring(suite: Any, spec: Any, manager: Any, name: str, report: Report) -> None:
    """A note for each model of ``spec`` whose runner cannot score task ``name``."""
    from ggufbench.benchmarks.lm_eval import output_types
    from ggufbench.plan import model_settings

    scoring = sorted(set(output_types(manager, name)) & SCORING_TYPES)
    if not scoring:
        return
    for model in suite.models:
        if spec.models is not None and model.alias not in spec.models:
            continue
        runner = model_settings(suite, model)["runner"]
        if runner in SCORING_RUNNERS:
            continue
        report.notes.append(
            f"model '{model.alias}' (runner {runner}) cannot score the prompts of lm-eval "
            f"task '{name}' ({', '.join(scoring)}), so that job will fail while the others "
            "go on; run it with runner: llama-cpp, or leave the model out of that benchmark "
            "with models: [...]"
        )
