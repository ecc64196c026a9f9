"""The suite file: pydantic models, runner aliases, and the legacy JSON shape.

A suite is read once (``load_suite``), merged with command-line overrides in one
place (``apply_overrides``) and then passed down as one frozen object.
"""

from __future__ import annotations

import difflib
import json
import math
import re
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ggufbench.errors import ConfigError, SuiteWarning

RUNNERS = ("llama-cpp", "llama-server", "ollama", "openai")
RUNNER_ALIASES = {
    "llama-cpp": "llama-cpp",
    "llama_cpp": "llama-cpp",
    "llama.cpp": "llama-cpp",
    "llamacpp": "llama-cpp",
    "gguf": "llama-cpp",
    "llama-server": "llama-server",
    "llama_server": "llama-server",
    "llamaserver": "llama-server",
    "ollama": "ollama",
    "openai": "openai",
}
ALIAS_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$"
LEGACY_KEY = "gguf_models"
"""The key that marks a file in the legacy shape (read by ggufbench.legacy)."""


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

    runner: str = Field(
        "llama-cpp", description="how models run: llama-cpp, llama-server, ollama or openai"
    )
    n_ctx: int = Field(4096, ge=128, description="context length in tokens")
    n_gpu_layers: int = Field(-1, ge=-1, description="layers offloaded to the GPU, -1 all")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: shared fairly")
    n_batch: int = Field(512, ge=16, description="tokens per decode call (fixes chunking)")

    _runner = field_validator("runner", mode="before")(lambda v: normalize_runner(str(v)))


ThinkingSpec = Literal["none", "think", "quad"] | list[str]


class ModelSpec(_Frozen):
    """One model to evaluate."""

    alias: str = Field(pattern=ALIAS_PATTERN, description="short unique name used in reports")
    path: Path | None = Field(
        None, description="the GGUF file (llama-cpp; llama-server managed; ollama to import)"
    )
    baseline: bool = Field(False, description="the model others are compared with")
    runner: str | None = Field(None, description="overrides defaults.runner")
    n_ctx: int | None = Field(None, ge=128)
    n_gpu_layers: int | None = Field(None, ge=-1)
    threads: int | None = Field(None, ge=1)
    chat_template: str | None = Field(None, description="Jinja chat template override")
    thinking: ThinkingSpec = Field("none", description="none | think | quad | [tag, ...]")
    description: str | None = None
    base_url: str | None = Field(
        None, description="the server: openai (ending in /v1), llama-server attached, ollama"
    )
    model: str | None = Field(None, description="model name at base_url")
    api_key_env: str | None = Field(None, description="environment variable with the API key")
    concurrency: int | None = Field(None, ge=1, description="requests at once (openai); 4")
    server_bin: str | None = Field(
        None, description="the llama-server program (managed); default: PATH, else a build"
    )
    parallel: int | None = Field(
        None, ge=1, description="server slots (llama-server) or requests in flight (ollama)"
    )
    cache_prompt: bool = Field(False, description="llama-server reuses a slot's KV cache")
    ollama_name: str | None = Field(None, min_length=1, description="the model's name in Ollama")

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
    models: list[str] | None = Field(None, min_length=1, description="run only on these aliases")
    shards: int | Literal["auto"] = Field(
        1, description="split each task's documents into this many jobs; auto: one per slot"
    )

    @field_validator("shards", mode="before")
    @classmethod
    def _shards(cls, value: Any) -> Any:
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError(f"shards is {value!r}; use a whole number of at least 1, or auto")


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
    models: list[str] | None = Field(None, min_length=1, description="run only on these aliases")


class FidelityBenchmark(_Frozen):
    """Quantization fidelity: each model's next-token distribution against the baseline's,
    on a plain text, with llama-perplexity's KL-divergence figures (docs/fidelity.md)."""

    text: Path | None = Field(
        None, description="plain UTF-8 text to score; default: the bundled corpus"
    )
    n_ctx: int = Field(512, description="tokens per chunk; the second half of each is scored")
    chunks: int | None = Field(None, description="score the first N chunks; default: all")
    # The core's DEFAULT_TOP_K and DEFAULT_TAIL_SAMPLES (ggufbench.fidelity), written out
    # so that reading a suite does not import numpy; a unit test keeps them equal.
    top_k: int = Field(256, ge=1, description="the baseline's most likely tokens kept per token")
    tail_samples: int = Field(
        256, ge=2, description="draws from the other tokens kept per token (the KLD's tail)"
    )
    models: list[str] | None = Field(
        None, min_length=1, description="compare only these models (the baseline always runs)"
    )

    @field_validator("n_ctx")
    @classmethod
    def _n_ctx(cls, value: int) -> int:
        if value < 4 or value % 2:
            raise ValueError(
                f"fidelity n_ctx is {value}; give an even number of at least 4 (each chunk's "
                "second half is scored), such as 512"
            )
        return value

    @field_validator("chunks")
    @classmethod
    def _chunks(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"fidelity chunks is {value}; give at least 1, or leave it out")
        return value


BENCHMARK_KINDS: dict[str, type[_Frozen]] = {
    "lm_eval": LmEvalBenchmark,
    "elyza_tasks_100": ElyzaBenchmark,
    "fidelity": FidelityBenchmark,
}


RAY_ADDRESS = re.compile(r"auto|(ray://)?[^\s:/]+:\d+")


class Execution(_Frozen):
    executor: Literal["local", "ray"] = Field("local", description="local processes, or Ray")
    address: str = Field("auto", description="the Ray cluster: auto, host:port, ray://host:10001")
    max_parallel_jobs: int | Literal["auto"] = "auto"
    retries: int = Field(3, ge=0, description="retries of a failed job attempt")
    request_timeout_s: float | Literal["auto"] = "auto"
    job_timeout_s: float | None = Field(None, gt=0, description="wall limit of one attempt")
    on_finish: str | None = Field(None, description="shell command run when the run ends")

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if not RAY_ADDRESS.fullmatch(value.strip()):
            raise ValueError(
                f"'{value}' is not a Ray address; use auto, host:port (the head's GCS port, "
                "6379 by default) or ray://host:10001"
            )
        return value.strip()


Benchmark = Annotated[
    LmEvalBenchmark | ElyzaBenchmark | FidelityBenchmark, Field(union_mode="left_to_right")
]


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
                raise ValueError("each benchmark is one key: lm_eval, elyza_tasks_100 or fidelity")
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
        for model in self.models:
            _check_runner_fields(model, self.runner_of(model))
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


def _check_runner_fields(model: ModelSpec, runner: str) -> None:
    """The keys a server runner cannot do without, in one sentence."""
    where = f"model '{model.alias}' uses runner {runner}"
    if runner == "llama-server" and (model.path is None) == (model.base_url is None):
        given = "both path and base_url" if model.path is not None else "neither path nor base_url"
        raise ValueError(
            f"{where} with {given}; give path (a server started for each job) "
            "or base_url (a server already running)"
        )
    if runner == "ollama" and model.ollama_name is None and model.path is None:
        raise ValueError(
            f"{where} with neither ollama_name nor path; give ollama_name (a model in "
            "Ollama) or path (a GGUF file to import)"
        )


def _first_error(exc: ValidationError, whole: str = "the suite") -> str:
    errors = exc.errors()
    first = errors[0]
    where = ".".join(str(p) for p in first["loc"]) or whole
    msg = str(first["msg"]).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}"


def parse_suite(data: Any, base_dir: Path, source: str = "suite") -> Suite:
    """Validate suite data; relative paths are taken from ``base_dir``.

    A file in the legacy ``{"gguf_models": [...]}`` shape is read too; each key
    it ignores is reported as a ``SuiteWarning``.
    """
    if data is None:
        raise ConfigError(f"{source} is empty; write its models and benchmarks")
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping with models and benchmarks")
    if LEGACY_KEY in data:
        data = _from_legacy(data, source)
    return _resolve_paths(validate_suite(data, source), base_dir, source)


def _from_legacy(data: dict[str, Any], source: str) -> dict[str, Any]:
    from ggufbench.legacy import read_legacy

    try:
        imported = read_legacy(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    for note in imported.notes:
        warnings.warn(f"{source}: {note}", SuiteWarning, stacklevel=3)
    if not imported.suite["benchmarks"]:
        raise ConfigError(
            f"{source}: no entry of gguf_models has tasks or elyza_limit; give one at least"
        )
    return imported.suite


def validate_suite(data: dict[str, Any], source: str) -> Suite:
    """The checks every suite passes, from a file or after command-line overrides."""
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_first_error(exc)}") from None
    known = {m.alias for m in suite.models}
    for n, item in enumerate(suite.benchmarks, 1):
        ((kind, body),) = item.items()
        what = f"{source}: benchmark {n} ({kind})"
        if body is not None and not isinstance(body, dict):
            raise ConfigError(f"{what} must be a mapping of settings")
        try:
            spec: Any = BENCHMARK_KINDS[kind].model_validate(body or {})
        except ValidationError as exc:
            raise ConfigError(f"{what}: {_first_error(exc, 'its settings')}") from None
        for alias in spec.models or ():
            if alias not in known:
                raise ConfigError(f"{what} names model '{alias}', which is not in models")
    return suite


def _resolve_paths(suite: Suite, base: Path, source: str) -> Suite:
    def fix(p: Path | None) -> Path | None:
        return None if p is None else _resolved(p, base, source)

    def program(name: str | None) -> str | None:
        """A program given as a path is taken from ``base``; a bare name is looked up on PATH."""
        return name if name is None or "/" not in name else str(fix(Path(name)))

    models = [
        m.model_copy(update={"path": fix(m.path), "server_bin": program(m.server_bin)})
        for m in suite.models
    ]
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
        if kind == "fidelity" and body.get("text"):
            body["text"] = str(fix(Path(body["text"])))
        benchmarks.append({kind: body})
    root = fix(suite.output_root)
    return suite.model_copy(
        update={"models": models, "benchmarks": benchmarks, "output_root": root}
    )


def _resolved(path: Path, base: Path, source: str) -> Path:
    """``path`` with ``~`` expanded, taken from ``base`` when it is relative."""
    if "\x00" in str(path):
        raise ConfigError(f"{source}: the path {str(path)!r} holds a NUL character; remove it")
    try:
        path = path.expanduser()
    except RuntimeError:
        raise ConfigError(
            f"{source}: the path {path} starts with ~ and a user this machine does not know; "
            "write the folder out in full"
        ) from None
    return path if path.is_absolute() else base / path


def _looks_local(dataset: Any) -> bool:
    return isinstance(dataset, str) and dataset.endswith((".csv", ".jsonl", ".json", ".parquet"))


def load_suite(path: Path) -> Suite:
    """Read a YAML or JSON suite file."""
    return parse_suite(read_suite_file(path), path.resolve().parent, source=str(path))


def read_suite_file(path: Path) -> Any:
    """The data of a YAML or JSON file, or a ConfigError that says what is wrong with it."""
    if path.is_dir():
        raise ConfigError(f"suite file {path} is a folder; give the path of a .yaml suite file")
    if path.exists() and not path.is_file():
        raise ConfigError(f"suite file {path} is not a regular file; give a .yaml suite file")
    if not path.is_file():
        raise ConfigError(f"suite file {path} does not exist; give the path of a .yaml suite")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid syntax"
        raise ConfigError(f"suite file {path} is not valid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"suite file {path} is not UTF-8 text; save it as UTF-8") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read the suite file {path} ({exc.strerror}); check its permissions"
        ) from None


def apply_overrides(
    suite: Suite,
    models: list[str] | None = None,
    benchmarks: list[str] | None = None,
    limit: float | None = None,
    executor: str | None = None,
    address: str | None = None,
) -> Suite:
    """The one place command-line options change a suite.

    The merged suite is validated as a suite file is, so a bad value is a
    ConfigError, never a half-checked suite.
    """
    data = suite.model_dump(mode="json")
    for key, given in (("executor", executor), ("address", address)):
        if given is not None:
            data["execution"][key] = given
    keep = {m.alias for m in suite.models}
    if models is not None:
        keep = _named("--models", models, [m.alias for m in suite.models], "model alias")
        data["models"] = [m for m in data["models"] if m["alias"] in keep]
    items = _select(data["benchmarks"], benchmarks, keep)
    if limit is not None:
        value = _limit(limit, {kind for item in items for kind in item})
        for item in items:
            for kind, body in item.items():
                if kind != "fidelity":
                    body["limit"] = value
                elif isinstance(value, int):  # a count of chunks; a fraction leaves them
                    body["chunks"] = min(body.get("chunks") or value, value)
    data["benchmarks"] = items
    return validate_suite(data, "the command-line options")


def _named(option: str, names: list[str], known: list[str], what: str) -> set[str]:
    """The names an option gives, each of them known, or a ConfigError with a 'did you mean'."""
    if not names:
        raise ConfigError(f"{option} names no {what}; give one or more, comma-separated")
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"did you mean '{near[0]}'?" if near else f"use one of {', '.join(known)}"
            raise ConfigError(f"{option} names '{name}', which is not in the suite; {hint}")
    return set(names)


def _select(
    items: list[dict[str, Any]], benchmarks: list[str] | None, keep: set[str]
) -> list[dict[str, Any]]:
    """The benchmarks (and lm-eval tasks) that --benchmarks picks, on the models kept."""
    names = None
    if benchmarks is not None:
        known = [t for item in items for kind, body in item.items() for t in _names(kind, body)]
        names = _named("--benchmarks", benchmarks, list(dict.fromkeys(known)), "task")
    out = []
    for item in items:
        ((kind, body),) = item.items()
        body = dict(body or {})
        if body.get("models") is not None:
            body["models"] = [alias for alias in body["models"] if alias in keep]
            if not body["models"]:
                continue
        if names is not None:
            if kind == "lm_eval":
                body["tasks"] = [task for task in body["tasks"] if task in names]
            if not set(_names(kind, body)) & names:
                continue
        out.append({kind: body})
    if not out:
        raise ConfigError(
            "--models and --benchmarks together select nothing: no benchmark of the suite "
            "runs those models; pick models and tasks that one benchmark has together"
        )
    return out


def _names(kind: str, body: dict[str, Any] | None) -> list[str]:
    return list((body or {}).get("tasks") or []) if kind == "lm_eval" else [kind]


def _limit(limit: float, kinds: set[str]) -> int | float:
    """--limit: a count of items, or for lm-eval tasks alone a fraction below 1."""
    shown = f"{limit:g}"
    if not math.isfinite(limit) or limit <= 0:
        raise ConfigError(f"--limit {shown} is not a positive number; give a count such as 10")
    if float(limit).is_integer():
        return int(limit)
    if limit > 1:
        raise ConfigError(
            f"--limit {shown} is neither a whole count nor a fraction below 1; give 10 or 0.5"
        )
    if "elyza_tasks_100" in kinds:
        raise ConfigError(
            f"--limit {shown} is a fraction, which lm-eval tasks take but elyza_tasks_100 "
            "does not (it needs a whole count of tasks); give a count such as 10, "
            "or pick lm-eval tasks alone with --benchmarks"
        )
    return limit


def suite_to_yaml(suite: Suite) -> str:
    """The suite exactly as it will run (paths resolved), for suite.yaml."""
    return dump_yaml(json.loads(suite.model_dump_json(exclude_defaults=False)))


class _Dumper(yaml.SafeDumper):
    """PyYAML's safe dumper, lossless for text that holds U+0085 (NEXT LINE).

    With allow_unicode, PyYAML writes U+0085 raw inside a plain or single-quoted
    scalar and reads it back as a line break; a double-quoted scalar escapes it.
    """

    def choose_scalar_style(self) -> str:
        event = self.event
        if isinstance(event, yaml.ScalarEvent) and "\x85" in event.value:
            return '"'
        return str(super().choose_scalar_style())


def dump_yaml(data: Any) -> str:
    """YAML that reads back to ``data``, in key order, with Unicode text kept readable."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True)
