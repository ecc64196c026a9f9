"""The legacy ``{"gguf_models": [...]}`` file shape, read as a suite.

Each entry of ``gguf_models`` becomes a model (``gguf_path`` becomes ``path``). An
entry with ``ollama_name`` and no ``gguf_path`` is a model kept in Ollama (runner
``ollama``, at ``OLLAMA_HOST``); with both, the file runs in-process and the name is
kept with the model (run.json records it).
Its ``tasks`` and ``limit`` become an lm_eval benchmark (entries with the same
tasks and limit share one) and its ``elyza_limit`` an elyza_tasks_100 benchmark
(entries with the same limit share one), judged by the top-level ``judge``.
The top-level ``name``, ``output_root``, ``defaults`` and ``execution`` are a
suite's own; the top-level ``lm_eval`` and ``elyza_tasks_100`` mappings give
the other settings of those benchmarks (include_path, dataset, ...).

Keys with no place in a suite are never dropped silently: ``read_legacy``
returns one sentence for each, and ``legacy_yaml`` writes the equivalent suite
file with comments that say where each part came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ggufbench.config import LEGACY_KEY, dump_yaml

__all__ = ["LEGACY_KEY", "LegacyImport", "is_legacy", "legacy_yaml", "read_legacy"]

# Keys of a suite that the legacy shape passes on as they are.
PASSED_ON = ("name", "output_root", "defaults", "execution")

IGNORED_MODEL_KEYS = {
    "batch_size": "ggufbench batches requests itself (defaults.n_batch sets tokens per decode)",
}


class LegacyModel(BaseModel):
    """One entry of ``gguf_models``."""

    model_config = ConfigDict(extra="allow", frozen=True)

    alias: str
    gguf_path: str | None = None
    ollama_name: str | None = None
    description: str | None = None
    tasks: list[str] | None = None
    batch_size: int | str | None = None
    n_gpu_layers: int | None = None
    limit: int | float | None = None
    elyza_limit: int | None = Field(None, ge=0, description="0 or none: no ELYZA")


class LegacyFile(BaseModel):
    """The whole legacy file; the suite's own keys are validated as a suite's."""

    model_config = ConfigDict(extra="allow", frozen=True)

    gguf_models: list[LegacyModel] = Field(min_length=1)
    name: Any = "legacy"
    output_root: Any = None
    defaults: Any = None
    execution: Any = None
    judge: dict[str, Any] | None = None
    lm_eval: dict[str, Any] | None = Field(None, description="settings of the lm_eval benchmarks")
    elyza_tasks_100: dict[str, Any] | None = Field(None, description="the same for ELYZA")

    @field_validator("lm_eval", "elyza_tasks_100")
    @classmethod
    def _per_model_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        taken = sorted(set(value or ()) & {"tasks", "limit", "models", "judge"})
        if taken:
            raise ValueError(
                f"'{taken[0]}' comes from each gguf_models entry (judge: from the top level); "
                "drop it here"
            )
        return value


@dataclass(frozen=True)
class LegacyImport:
    """A legacy file in the suite shape, and a sentence for each key it ignores."""

    suite: dict[str, Any]
    notes: list[str]


def is_legacy(data: Any) -> bool:
    return isinstance(data, dict) and LEGACY_KEY in data


def read_legacy(data: dict[str, Any]) -> LegacyImport:
    """The suite data of a legacy file; raises pydantic's ValidationError on bad values."""
    legacy = LegacyFile.model_validate(data)
    benchmarks = _lm_eval(legacy) + _elyza(legacy)
    suite: dict[str, Any] = {"name": legacy.name}
    for key in PASSED_ON[1:]:
        if getattr(legacy, key) is not None:
            suite[key] = getattr(legacy, key)
    suite["models"] = [_model(entry) for entry in legacy.gguf_models]
    suite["benchmarks"] = benchmarks
    return LegacyImport(_ordered(suite), _notes(legacy, benchmarks))


def _ordered(suite: dict[str, Any]) -> dict[str, Any]:
    order = ("name", "output_root", "models", "defaults", "benchmarks", "execution")
    return {key: suite[key] for key in order if key in suite}


def _model(entry: LegacyModel) -> dict[str, Any]:
    ollama_name = (entry.ollama_name or "").strip() or None  # a blank name is no name
    in_ollama = entry.gguf_path is None and ollama_name is not None
    model = {
        "alias": entry.alias,
        "runner": "ollama" if in_ollama else None,
        "path": entry.gguf_path,
        "ollama_name": ollama_name,
        "description": entry.description,
        "n_gpu_layers": entry.n_gpu_layers,
    }
    return {key: value for key, value in model.items() if value is not None}


def _lm_eval(legacy: LegacyFile) -> list[dict[str, Any]]:
    groups: dict[tuple[tuple[str, ...], int | float | None], list[str]] = {}
    for entry in legacy.gguf_models:
        if entry.tasks:
            groups.setdefault((tuple(entry.tasks), entry.limit), []).append(entry.alias)
    out = []
    for (tasks, limit), aliases in groups.items():
        body = {**(legacy.lm_eval or {}), "tasks": list(tasks), "limit": limit, "models": aliases}
        out.append({"lm_eval": {k: v for k, v in body.items() if v is not None}})
    return out


def _elyza(legacy: LegacyFile) -> list[dict[str, Any]]:
    groups: dict[int, list[str]] = {}
    for entry in legacy.gguf_models:
        if entry.elyza_limit:
            groups.setdefault(entry.elyza_limit, []).append(entry.alias)
    out = []
    for limit, aliases in groups.items():
        body = {**(legacy.elyza_tasks_100 or {}), "limit": limit}
        body.update(judge=legacy.judge, models=aliases)
        out.append({"elyza_tasks_100": {k: v for k, v in body.items() if v is not None}})
    return out


def _notes(legacy: LegacyFile, benchmarks: list[dict[str, Any]]) -> list[str]:
    """One sentence for each key that is read but has no effect."""
    notes = []
    for key, reason in IGNORED_MODEL_KEYS.items():
        aliases = [e.alias for e in legacy.gguf_models if getattr(e, key) is not None]
        if aliases:
            notes.append(f"{key} is ignored (set for {', '.join(aliases)}): {reason}")
    known_entry = ", ".join(LegacyModel.model_fields)
    for entry in legacy.gguf_models:
        for key in entry.model_extra or {}:
            notes.append(
                f"the key {key!r} of model {entry.alias!r} is ignored: "
                f"a gguf_models entry takes {known_entry}"
            )
        if not entry.tasks and not entry.elyza_limit:
            notes.append(f"model {entry.alias!r} has no tasks and no elyza_limit, so nothing runs")
    known_top = ", ".join(LegacyFile.model_fields)
    for key in legacy.model_extra or {}:
        notes.append(f"the top-level key {key!r} is ignored: the legacy shape takes {known_top}")
    for kind, keys, origin in (
        ("lm_eval", ("lm_eval",), "tasks"),
        ("elyza_tasks_100", ("judge", "elyza_tasks_100"), "elyza_limit"),
    ):
        if not any(kind in item for item in benchmarks):
            for key in keys:
                if getattr(legacy, key) is not None:
                    notes.append(f"{key} is ignored: no model sets {origin}")
    return notes


_HEADER = """\
# A ggufbench suite converted from {source} (the legacy {{"gguf_models": [...]}} shape).
# Relative paths are taken from the folder of this file: keep it beside {source}.
"""

_COMMENTS = {
    "name": "",
    "output_root": "# output_root: from the top-level output_root.",
    "models": (
        "# models: one per entry of gguf_models; gguf_path became path, and an entry with\n"
        "# ollama_name but no gguf_path runs on Ollama (runner: ollama, at OLLAMA_HOST)."
    ),
    "defaults": "# defaults: from the top-level defaults.",
    "benchmarks": (
        "# benchmarks: lm_eval from each model's tasks and limit (models with the same\n"
        "# tasks and limit share one); elyza_tasks_100 from elyza_limit, judged by the\n"
        "# top-level judge; their other settings from the top-level lm_eval and\n"
        "# elyza_tasks_100."
    ),
    "execution": "# execution: from the top-level execution.",
}


def legacy_yaml(imported: LegacyImport, source: str) -> str:
    """The suite as YAML, with comments on where each part came from."""
    parts = [_HEADER.format(source=_one_line(source))]
    if imported.notes:
        parts.append("# Ignored, with no place in a suite:\n")
        parts.extend(f"#   - {_one_line(note)}\n" for note in imported.notes)
    for key, value in imported.suite.items():
        comment = _COMMENTS[key]
        parts.append(f"\n{comment}\n" if comment else "\n")
        if key == "models":
            parts.append("models:\n")
            for number, model in enumerate(value):
                parts.append(f"# gguf_models[{number}]\n{_dump([model])}")
        elif key == "benchmarks":
            parts.append("benchmarks:\n")
            for item in value:
                ((kind, body),) = item.items()
                origin = "tasks and limit" if kind == "lm_eval" else "elyza_limit"
                parts.append(f"# the {origin} of {', '.join(body['models'])}\n{_dump([item])}")
        else:
            parts.append(_dump({key: value}))
    return "".join(parts)


def _one_line(text: str) -> str:
    """Text for a comment: a line break in it would end the comment."""
    return " ".join(text.splitlines())


def _dump(value: Any) -> str:
    # PyYAML writes no comments, so each block is dumped alone and the comments go between.
    return dump_yaml(value)
