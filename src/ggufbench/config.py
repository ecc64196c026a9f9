"""The suite file: pydantic models, runner aliases, and the legacy JSON shape.

A suite is read once (``load_suite``), merged with command-line overrides in one
place (``apply_overrides``) and then passed down as one frozen object.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ggufbench.errors import ConfigError

RUNNERS = ("llama-cpp", "openai")
RUNNER_ALIASES = {
    "llama-cpp": "llama-cpp",
    "llama_cpp": "llama-cpp",
    "llama.cpp": "llama-cpp",
    "llamacpp": "llama-cpp",
    "gguf": "llama-cpp",
    "openai": "openai",
}
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"


def normalize_runner(name: str) -> str:
    """Map a runner name or alias to its canonical name, with a 'did you mean'."""
    key = name.strip().lower()
    if key in RUNNER_ALIASES:
        return RUNNER_ALIASES[key]
    near = difflib.get_close_matches(key, list(RUNNER_ALIASES), n=1, cutoff=0.6)
    hint = f"; did you mean '{near[0]}'?" if near else f"; use one of {', '.join(RUNNERS)}"
    raise ValueError(f"unknown runner '{name}'{hint}")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Defaults(_Frozen):
    """Settings every model inherits unless it sets its own."""

    runner: str = Field("llama-cpp", description="how models run: llama-cpp or openai")
    n_ctx: int = Field(4096, ge=128, description="context length in tokens")
    n_gpu_layers: int = Field(-1, ge=-1, description="layers offloaded to the GPU, -1 all")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: shared fairly")
    n_batch: int = Field(512, ge=16, description="tokens per decode call (fixes chunking)")

    _runner = field_validator("runner", mode="before")(lambda v: normalize_runner(str(v)))


ThinkingSpec = Literal["none", "think", "quad"] | list[str]


class ModelSpec(_Frozen):
    """One model to evaluate."""

    alias: str = Field(pattern=ALIAS_PATTERN, description="short unique name used in reports")
    path: Path | None = Field(None, description="the GGUF file (llama-cpp runner)")
    baseline: bool = Field(False, description="the model others are compared with")
    runner: str | None = Field(None, description="overrides defaults.runner")
    n_ctx: int | None = Field(None, ge=128)
    n_gpu_layers: int | None = Field(None, ge=-1)
    threads: int | None = Field(None, ge=1)
    chat_template: str | None = Field(None, description="Jinja chat template override")
    thinking: ThinkingSpec = Field("none", description="none | think | quad | [tag, ...]")
    description: str | None = None
    base_url: str | None = Field(None, description="OpenAI-compatible URL ending in /v1")
    model: str | None = Field(None, description="model name at base_url")
    api_key_env: str | None = Field(None, description="environment variable with the API key")
    concurrency: int | None = Field(None, ge=1, description="requests at once (openai); 4")

    @field_validator("runner", mode="before")
    @classmethod
    def _runner(cls, value: Any) -> Any:
        return None if value is None else normalize_runner(str(value))

    @field_validator("thinking", mode="before")
    @classmethod
    def _thinking(cls, value: Any) -> Any:
        from ggufbench.thinking import thinking_format

        try:
            thinking_format(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value.lower() if isinstance(value, str) else value


class LmEvalBenchmark(_Frozen):
    """lm-evaluation-harness tasks, run through lm-eval's own evaluator."""

    tasks: list[str] = Field(min_length=1, description="lm-eval task or group names")
    num_fewshot: int | None = Field(None, ge=0)
    limit: int | float | None = Field(None, gt=0, description="items per task (or a fraction)")
    include_path: Path | None = Field(None, description="folder of custom task YAMLs")
    gen_kwargs: dict[str, Any] | None = Field(None, description="generation overrides")
    apply_chat_template: bool = False
    fewshot_as_multiturn: bool = False
    models: list[str] | None = Field(None, description="run only on these aliases")


class JudgeSpec(_Frozen):
    """Who scores ELYZA answers: a local GGUF model or an OpenAI-compatible endpoint."""

    runner: str = Field("llama-cpp", description="llama-cpp (a GGUF file) or openai")
    path: Path | None = Field(None, description="the judge's GGUF file (llama-cpp)")
    base_url: str | None = Field(None, description="OpenAI-compatible URL ending in /v1")
    model: str | None = Field(None, description="model name at base_url")
    api_key_env: str | None = Field(None, description="environment variable with the API key")
    concurrency: int = Field(4, ge=1, description="judge requests at once (openai)")
    n_ctx: int = Field(4096, ge=128, description="context length of a GGUF judge")

    _runner = field_validator("runner", mode="before")(lambda v: normalize_runner(str(v)))


class ElyzaBenchmark(_Frozen):
    """ELYZA-tasks-100 (or a local file in its schema), scored 1-5 by a judge."""

    dataset: str = "elyza/ELYZA-tasks-100"
    limit: int | None = Field(None, gt=0)
    seed: int | None = Field(None, description="with limit: a seeded subset, not the first N")
    max_tokens: int = Field(1024, ge=1)
    temperature: float = Field(0.0, ge=0)
    judge: JudgeSpec | None = None
    models: list[str] | None = None


BENCHMARK_KINDS: dict[str, type[_Frozen]] = {
    "lm_eval": LmEvalBenchmark,
    "elyza_tasks_100": ElyzaBenchmark,
}


class Execution(_Frozen):
    max_parallel_jobs: int | Literal["auto"] = "auto"
    retries: int = Field(3, ge=0, description="retries of a failed job attempt")
    request_timeout_s: float | Literal["auto"] = "auto"
    job_timeout_s: float | None = Field(None, gt=0, description="wall limit of one attempt")
    on_finish: str | None = Field(None, description="shell command run when the run ends")


Benchmark = Annotated[LmEvalBenchmark | ElyzaBenchmark, Field(union_mode="left_to_right")]


class Suite(_Frozen):
    name: str = Field("suite", pattern=ALIAS_PATTERN)
    output_root: Path = Path("runs")
    models: list[ModelSpec] = Field(min_length=1)
    defaults: Defaults = Defaults()
    benchmarks: list[dict[str, Any]] = Field(min_length=1)
    execution: Execution = Execution()

    @field_validator("benchmarks")
    @classmethod
    def _kinds(cls, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for item in items:
            if not isinstance(item, dict) or len(item) != 1:
                raise ValueError("each benchmark is one key: lm_eval or elyza_tasks_100")
            (kind,) = item
            if kind not in BENCHMARK_KINDS:
                near = difflib.get_close_matches(kind, list(BENCHMARK_KINDS), n=1)
                hint = f"; did you mean '{near[0]}'?" if near else ""
                raise ValueError(f"unknown benchmark kind '{kind}'{hint}")
        return items

    @model_validator(mode="after")
    def _models(self) -> Suite:
        aliases = [m.alias for m in self.models]
        dupes = sorted({a for a in aliases if aliases.count(a) > 1})
        if dupes:
            raise ValueError(f"model alias '{dupes[0]}' is used twice; aliases must be unique")
        if sum(m.baseline for m in self.models) > 1:
            raise ValueError("more than one model has baseline: true; mark only one")
        return self

    def benchmark_specs(self) -> list[tuple[str, Any]]:
        """Each benchmark as (kind, validated spec)."""
        out = []
        for item in self.benchmarks:
            ((kind, body),) = item.items()
            out.append((kind, BENCHMARK_KINDS[kind].model_validate(body or {})))
        return out

    def baseline(self) -> str:
        marked = [m.alias for m in self.models if m.baseline]
        return marked[0] if marked else self.models[0].alias

    def runner_of(self, model: ModelSpec) -> str:
        return model.runner or self.defaults.runner


def _legacy(data: dict[str, Any]) -> dict[str, Any]:
    """Read the legacy ``{"gguf_models": [...]}`` shape as a suite."""
    models: list[dict[str, Any]] = []
    groups: dict[tuple[tuple[str, ...], Any], list[str]] = {}
    for entry in data["gguf_models"]:
        models.append(
            {
                "alias": entry["alias"],
                "path": entry.get("gguf_path"),
                "description": entry.get("description"),
                "n_gpu_layers": entry.get("n_gpu_layers"),
            }
        )
        key = (tuple(entry.get("tasks") or ()), entry.get("limit"))
        if key[0]:
            groups.setdefault(key, []).append(entry["alias"])
    benchmarks: list[dict[str, Any]] = []
    for (tasks, limit), aliases in groups.items():
        spec = {"tasks": list(tasks), "limit": limit, "models": aliases}
        benchmarks.append({"lm_eval": {k: v for k, v in spec.items() if v is not None}})
    elyza = [e for e in data["gguf_models"] if e.get("elyza_limit")]
    if elyza:
        limit = max(int(e["elyza_limit"]) for e in elyza)
        benchmarks.append(
            {"elyza_tasks_100": {"limit": limit, "models": [e["alias"] for e in elyza]}}
        )
    clean = [{k: v for k, v in m.items() if v is not None} for m in models]
    return {"name": data.get("name", "legacy"), "models": clean, "benchmarks": benchmarks}


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or "the suite"
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_suite(data: Any, base_dir: Path, source: str = "suite") -> Suite:
    """Validate suite data; relative paths are taken from ``base_dir``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with models and benchmarks")
    if "gguf_models" in data:
        data = _legacy(data)
    try:
        suite = Suite.model_validate(data)
        specs = suite.benchmark_specs()
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    known = {m.alias for m in suite.models}
    for _, spec in specs:
        for alias in spec.models or ():
            if alias not in known:
                raise ConfigError(
                    f"{source}: benchmark names model '{alias}', which is not in models"
                )
    return _resolve_paths(suite, base_dir)


def _resolve_paths(suite: Suite, base: Path) -> Suite:
    def fix(p: Path | None) -> Path | None:
        return None if p is None else (p if p.expanduser().is_absolute() else base / p).expanduser()

    models = [m.model_copy(update={"path": fix(m.path)}) for m in suite.models]
    benchmarks = []
    for item in suite.benchmarks:
        ((kind, body),) = item.items()
        body = dict(body or {})
        if body.get("include_path"):
            body["include_path"] = str(fix(Path(body["include_path"])))
        judge = body.get("judge")
        if isinstance(judge, dict) and judge.get("path"):
            body["judge"] = {**judge, "path": str(fix(Path(judge["path"])))}
        if kind == "elyza_tasks_100" and _looks_local(body.get("dataset")):
            body["dataset"] = str(fix(Path(body["dataset"])))
        benchmarks.append({kind: body})
    root = fix(suite.output_root)
    return suite.model_copy(
        update={"models": models, "benchmarks": benchmarks, "output_root": root}
    )


def _looks_local(dataset: Any) -> bool:
    return isinstance(dataset, str) and dataset.endswith((".csv", ".jsonl", ".json", ".parquet"))


def load_suite(path: Path) -> Suite:
    """Read a YAML or JSON suite file."""
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist; give the path of a .yaml suite")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise ConfigError(f"suite file {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"suite file {path} is not UTF-8 text; save it as UTF-8") from None
    return parse_suite(data, path.resolve().parent, source=str(path))


def apply_overrides(
    suite: Suite,
    models: list[str] | None = None,
    benchmarks: list[str] | None = None,
    limit: float | None = None,
) -> Suite:
    """The one place command-line options change a suite."""
    update: dict[str, Any] = {}
    if models:
        known = [m.alias for m in suite.models]
        for alias in models:
            if alias not in known:
                near = difflib.get_close_matches(alias, known, n=1)
                hint = f"; did you mean '{near[0]}'?" if near else f"; known: {', '.join(known)}"
                raise ConfigError(f"--models names '{alias}', which is not in the suite{hint}")
        update["models"] = [m for m in suite.models if m.alias in models]
    items = []
    for item in suite.benchmarks:
        ((kind, body),) = item.items()
        body = dict(body or {})
        if benchmarks and kind == "lm_eval":
            body["tasks"] = [t for t in body["tasks"] if t in benchmarks]
            if not body["tasks"]:
                continue
        elif benchmarks and kind not in benchmarks:
            continue
        if limit is not None:
            body["limit"] = int(limit) if float(limit).is_integer() else limit
        items.append({kind: body})
    if not items:
        raise ConfigError(
            f"--benchmarks {','.join(benchmarks or [])} matches no benchmark in the suite"
        )
    update["benchmarks"] = items
    return suite.model_copy(update=update)


def suite_to_yaml(suite: Suite) -> str:
    """The suite exactly as it will run (paths resolved), for suite.yaml."""
    data = json.loads(suite.model_dump_json(exclude_defaults=False))
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
