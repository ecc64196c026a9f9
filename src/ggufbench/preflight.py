"""Everything that can fail before compute starts, checked at once.

``ggufbench check`` and the start of ``run`` share this: every problem is one
sentence, all of them are listed, and nothing is started while any remains.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ggufbench.config import FidelityBenchmark, ModelSpec, Suite
from ggufbench.errors import GgufbenchError
from ggufbench.footprint import fidelity_footprint, footprint_bytes, with_judge
from ggufbench.plan import (
    FIDELITY,
    fidelity_skip,
    fidelity_skipped,
    loads_here,
    model_settings,
    plan,
)

if TYPE_CHECKING:
    from ggufbench.gguf_file import GgufInfo
    from ggufbench.resources import Machine

SMALL_JUDGE_PARAMS = 7_000_000_000
"""Below this many parameters a judge's 1-5 scores are noted as meaning little."""


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # alias -> identity
    # bytes a job reserves: by model alias, and by job id for each ELYZA job with an
    # in-process judge (footprint.with_judge) and each fidelity job (its own n_ctx)
    footprints: dict[str, int] = field(default_factory=dict)


def check(
    suite: Suite, *, datasets: bool = True, say: Callable[[str], None] = lambda s: None
) -> Report:
    report = Report()
    say("checking model files")
    _check_models(suite, report)
    say("checking tasks")
    _check_tasks(suite, report, datasets, say)
    _check_elyza(suite, report, datasets, say)
    _check_fidelity(suite, report)
    _check_memory(suite, report)
    return report


def _check_models(suite: Suite, report: Report) -> None:
    from ggufbench.preflight_servers import check_server_model

    for model in suite.models:
        settings = model_settings(suite, model)
        runner = settings["runner"]
        if runner == "openai":
            if not (model.base_url and model.model):
                report.problems.append(
                    f"model '{model.alias}' uses runner openai; set its base_url and model"
                )
            report.models[model.alias] = {
                "runner": "openai",
                "base_url": model.base_url,
                "model": model.model,
            }
            continue
        if runner in ("llama-server", "ollama"):
            check_server_model(model, settings, report)
            continue
        found = check_file(model, report)
        if found is not None:
            info, record = found
            report.footprints[model.alias] = footprint_bytes(info, settings["n_ctx"])
            if model.ollama_name:  # a legacy entry's name, kept for the record
                record["ollama_name"] = model.ollama_name
            report.models[model.alias] = {"runner": "llama-cpp", **record}


def check_file(model: ModelSpec, report: Report) -> tuple[GgufInfo, dict[str, Any]] | None:
    """The model's GGUF file and what run.json records of it; None (a problem) if unusable."""
    from ggufbench.gguf_file import sha256_of, validate

    if model.path is None:
        report.problems.append(f"model '{model.alias}' has no path; set path to its .gguf file")
        return None
    try:
        info = validate(model.path)
    except GgufbenchError as exc:
        report.problems.append(f"model '{model.alias}': {exc}")
        return None
    record = {
        "path": str(model.path),
        "sha256": sha256_of(model.path),
        "quant": info.quant,
        "size_bytes": info.size_bytes,
        "architecture": info.architecture,
        "n_params": info.n_params,
    }
    return info, record


def _check_tasks(suite: Suite, report: Report, datasets: bool, say: Callable[[str], None]) -> None:
    specs = [spec for kind, spec in suite.benchmark_specs() if kind == "lm_eval"]
    if not specs:
        return  # lm-eval takes seconds to import
    from ggufbench.benchmarks.lm_eval import hub_datasets, quiet_lm_eval, task_manager
    from ggufbench.hub import unreachable
    from ggufbench.preflight_servers import check_scoring

    quiet_lm_eval()
    cut_off: dict[str, list[str]] = {}  # hub dataset -> the tasks that read it
    reason = ""
    for spec in specs:
        include = str(spec.include_path) if spec.include_path else None
        if include and not spec.include_path.is_dir():
            report.problems.append(f"include_path {include} is not a folder of task YAML files")
            continue
        manager = task_manager(include, spec.tasks)
        known = set(manager.all_tasks)
        for name in spec.tasks:
            if name in known:
                check_scoring(suite, spec, manager, name, report)
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
                where = f" (looked in lm-eval and {include})" if include else ""
                report.problems.append(f"lm-eval task '{name}' does not exist{where}{hint}")
            elif datasets:
                on_hub = hub_datasets(manager, name)
                if why := unreachable(on_hub):
                    reason = why
                    for dataset in on_hub:
                        cut_off.setdefault(dataset, []).append(name)
                    continue
                say(f"loading the dataset of {name}")
                _load_task(name, manager, report)
    for dataset, names in cut_off.items():
        report.problems.append(_cut_off(dataset, names, reason))


def _cut_off(dataset: str, tasks: list[str], reason: str) -> str:
    from ggufbench.hub import unreachable_problem

    used_by = f"lm-eval task{'s' if len(tasks) > 1 else ''} {', '.join(map(repr, tasks))}"
    local = "point the task at local data files (dataset_path: json with data_files)"
    return unreachable_problem(dataset, used_by, reason, local)


def _load_task(name: str, manager: Any, report: Report) -> None:
    from lm_eval.tasks import get_task_dict

    try:
        get_task_dict([name], manager)
    except Exception as exc:  # noqa: BLE001 - any dataset failure becomes one sentence
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        report.problems.append(
            f"the dataset of lm-eval task '{name}' does not load ({first[:300]}); "
            "check the network or the local data files"
        )


def _check_elyza(suite: Suite, report: Report, datasets: bool, say: Callable[[str], None]) -> None:
    """ELYZA benchmarks: the dataset loads, the judge is usable, models can chat."""
    from ggufbench.config import ElyzaBenchmark

    for kind, spec in suite.benchmark_specs():
        if kind != "elyza_tasks_100" or not isinstance(spec, ElyzaBenchmark):
            continue
        if datasets:
            _load_elyza(spec, report, say)
        if spec.judge is None:
            report.problems.append(
                "elyza_tasks_100 has no judge; add judge: {runner: llama-cpp, path: JUDGE.gguf} "
                "or judge: {runner: openai, base_url: URL ending in /v1, model: NAME}"
            )
        else:
            _check_judge(spec.judge, report)
        _check_chat_templates(suite, spec, report)


def _load_elyza(spec: Any, report: Report, say: Callable[[str], None]) -> None:
    from ggufbench.benchmarks.elyza_data import load_tasks
    from ggufbench.hub import unreachable, unreachable_problem

    if reason := unreachable([spec.dataset]):
        local = "give a local .csv, .jsonl, .json or .parquet file as its dataset"
        problem = unreachable_problem(spec.dataset, "benchmark elyza_tasks_100", reason, local)
        report.problems.append(problem)
        return
    say(f"loading the ELYZA dataset {spec.dataset}")
    try:
        load_tasks(spec.dataset, limit=spec.limit, seed=spec.seed)
    except GgufbenchError as exc:
        report.problems.append(f"elyza_tasks_100: {exc}")


def _check_judge(judge: Any, report: Report) -> None:
    """The judge's settings fit its runner; its file is a GGUF model that can chat."""
    if judge.runner == "openai":
        if judge.path is not None:
            report.problems.append(
                "the ELYZA judge uses runner openai but sets path; drop path, or use "
                "runner llama-cpp for a local GGUF judge"
            )
        if not (judge.base_url and judge.model):
            report.problems.append(
                "the ELYZA judge uses runner openai; set its base_url (ending in /v1) and model"
            )
        elif not judge.base_url.startswith(("http://", "https://")):
            report.problems.append(
                f"the ELYZA judge's base_url {judge.base_url!r} is not an http(s) URL; "
                "give it as OpenAI clients take it, e.g. https://host/v1"
            )
        if judge.api_key_env and not os.environ.get(judge.api_key_env, "").strip():
            report.problems.append(
                f"the environment variable {judge.api_key_env} (the ELYZA judge's api_key_env) "
                "is not set; export it with the API key"
            )
        return
    if judge.base_url is not None:
        report.problems.append(
            "the ELYZA judge uses runner llama-cpp but sets base_url; use runner openai "
            "for an HTTP judge, or give path to a local GGUF file"
        )
    if judge.path is None:
        report.problems.append("the ELYZA judge has no path; set path to the judge's .gguf file")
        return
    from ggufbench.gguf_file import validate

    try:
        info = validate(judge.path)
    except GgufbenchError as exc:
        report.problems.append(f"the ELYZA judge: {exc}")
        return
    if not info.has_chat_template:
        report.problems.append(
            f"the ELYZA judge {judge.path.name} has no chat template in its metadata; "
            "use a judge model with a chat template"
        )
    if info.n_params < SMALL_JUDGE_PARAMS:
        report.notes.append(
            f"the ELYZA judge {judge.path.name} has {info.n_params / 1e9:.2g}B parameters: "
            "too small for its scores to mean much"
        )


def _check_chat_templates(suite: Suite, spec: Any, report: Report) -> None:
    """In-process models render ELYZA's chat messages with their chat template."""
    from ggufbench.gguf_file import validate

    for model in suite.models:
        if spec.models is not None and model.alias not in spec.models:
            continue
        if model.chat_template or model.path is None:
            continue
        if not loads_here(model_settings(suite, model)):
            continue  # the server renders the chat with its own template
        try:
            info = validate(model.path)
        except GgufbenchError:
            continue  # already reported with the model
        if not info.has_chat_template:
            report.problems.append(
                f"model '{model.alias}' has no chat template in its metadata, and "
                "elyza_tasks_100 prompts are chat messages; set chat_template for it"
            )


def _check_fidelity(suite: Suite, report: Report) -> None:
    """A fidelity benchmark: one, a baseline in this process, its text; each job's memory."""
    specs = [s for _, s in suite.benchmark_specs() if isinstance(s, FidelityBenchmark)]
    if not specs:
        return
    if len(specs) > 1:
        report.problems.append(
            f"the suite has {len(specs)} fidelity benchmarks; keep one (each model has one "
            "fidelity result)"
        )
    spec = specs[0]
    base = next((m for m in suite.models if m.baseline), None)
    if base is None:
        report.problems.append(
            "fidelity compares every model with the baseline, and no model of the suite has "
            "baseline: true; mark the model to compare with (or leave fidelity out with "
            "--benchmarks)"
        )
    elif fidelity_skip(suite, base):
        report.problems.append(
            f"fidelity needs the baseline '{base.alias}' in this process, but it uses runner "
            f"{suite.runner_of(base)}; run the baseline with runner llama-cpp"
        )
    report.notes += fidelity_skipped(suite).values()
    _check_fidelity_text(spec, report)
    for job in plan(suite):
        if job.kind == FIDELITY and (info := _info(job.spec["model"]["path"])) is not None:
            settings = job.spec["model"]
            report.footprints[job.id] = fidelity_footprint(
                info, settings["n_ctx"], settings["n_batch"]
            )


def _check_fidelity_text(spec: FidelityBenchmark, report: Report) -> None:
    """The text is a readable UTF-8 file long enough for two chunks (at least a byte a
    token; the baseline's job counts the tokens)."""
    from ggufbench import fidelity

    path = spec.text or fidelity.bundled_corpus()
    try:
        data = fidelity.read_text(path)
    except GgufbenchError as exc:
        report.problems.append(str(exc))
        return
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.problems.append(
            f"fidelity text {path} is not UTF-8 text (byte {exc.start} is not); save it as UTF-8"
        )
        return
    if len(data) < 2 * spec.n_ctx:
        report.problems.append(
            f"fidelity text {path} has {len(data)} bytes, and n_ctx {spec.n_ctx} needs at least "
            f"{2 * spec.n_ctx} tokens; give a longer text or a smaller n_ctx"
        )


def _info(path: str | None) -> GgufInfo | None:
    """A model file's metadata; None when it does not validate (reported with the model)."""
    from ggufbench.gguf_file import validate

    if not path:
        return None
    try:
        return validate(Path(path))
    except GgufbenchError:
        return None


def _check_memory(suite: Suite, report: Report) -> None:
    """Each model, and each ELYZA job's in-process judge, fits in the memory it loads into.

    On Ray the jobs load on the cluster's nodes, not here: their footprints are reserved
    there, and a job that fits no node fails with its sizes (ggufbench.executors._ray).
    """
    from ggufbench.resources import probe

    judges = list(_judge_footprints(suite))
    for job_id, alias, _, need in judges:
        report.footprints[job_id] = with_judge(report.footprints.get(alias, 0), need)
    if suite.execution.executor != "local":
        return
    machine = probe()
    for model in suite.models:
        size = report.footprints.get(model.alias)
        have, where = _memory_for(suite, model, machine)
        if size is not None and size > have:
            report.problems.append(
                f"model '{model.alias}' needs about {_gib(size)} GiB but this machine has "
                f"{_gib(have)} GiB of {where}; lower n_ctx or use a smaller quantization"
            )
    for _, alias, judge, need in judges:
        model = next(m for m in suite.models if m.alias == alias)
        have, where = _memory_for(suite, model, machine)
        problem = (
            f"the ELYZA judge {judge.name} needs about {_gib(need)} GiB but this machine has "
            f"{_gib(have)} GiB of {where}; lower the judge's n_ctx or use a smaller judge"
        )
        if need > have and problem not in report.problems:
            report.problems.append(problem)


def _judge_footprints(suite: Suite) -> Iterator[tuple[str, str, Path, int]]:
    """(job id, model alias, judge file, judge footprint) of each ELYZA job whose judge is a
    GGUF file loaded in the job's worker; a judge file that does not validate is left out
    (it is reported with the judge)."""
    from ggufbench.footprint import footprint_bytes
    from ggufbench.gguf_file import validate

    for job in plan(suite):
        judge = job.spec["benchmark"].get("judge") if job.kind == "elyza_tasks_100" else None
        if not judge or judge.get("runner") != "llama-cpp" or not judge.get("path"):
            continue
        path = Path(judge["path"])
        try:
            info = validate(path)
        except GgufbenchError:
            continue
        yield job.id, job.model, path, footprint_bytes(info, judge["n_ctx"])


def _memory_for(suite: Suite, model: ModelSpec, machine: Machine) -> tuple[int, str]:
    """The memory a model's job loads into (its own, or its judge's): bytes and its name."""
    gpu_total = max((g.total_bytes for g in machine.gpus), default=0)
    if model_settings(suite, model)["n_gpu_layers"] != 0 and gpu_total > 0:
        return gpu_total, "GPU memory"
    return machine.total_ram, "RAM"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f}"
