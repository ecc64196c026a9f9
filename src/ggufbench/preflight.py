"""Everything that can fail before compute starts, checked at once.

``ggufbench check`` and the start of ``run`` share this: every problem is one
sentence, all of them are listed, and nothing is started while any remains.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ggufbench.config import Suite
from ggufbench.errors import GgufbenchError
from ggufbench.plan import model_settings


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    models: dict[str, dict[str, Any]] = field(default_factory=dict)  # alias -> identity
    footprints: dict[str, int] = field(default_factory=dict)


def check(
    suite: Suite, *, datasets: bool = True, say: Callable[[str], None] = lambda s: None
) -> Report:
    report = Report()
    say("checking model files")
    _check_models(suite, report)
    say("checking tasks")
    _check_tasks(suite, report, datasets, say)
    _check_memory(suite, report)
    return report


def _check_models(suite: Suite, report: Report) -> None:
    from ggufbench.footprint import footprint_bytes
    from ggufbench.gguf_file import sha256_of, validate

    for model in suite.models:
        settings = model_settings(suite, model)
        if settings["runner"] == "openai":
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
        if model.path is None:
            report.problems.append(f"model '{model.alias}' has no path; set path to its .gguf file")
            continue
        try:
            info = validate(model.path)
        except GgufbenchError as exc:
            report.problems.append(f"model '{model.alias}': {exc}")
            continue
        report.footprints[model.alias] = footprint_bytes(info, settings["n_ctx"])
        report.models[model.alias] = {
            "runner": "llama-cpp",
            "path": str(model.path),
            "sha256": sha256_of(model.path),
            "quant": info.quant,
            "size_bytes": info.size_bytes,
            "architecture": info.architecture,
            "n_params": info.n_params,
        }


def _check_tasks(suite: Suite, report: Report, datasets: bool, say: Callable[[str], None]) -> None:
    from ggufbench.benchmarks.lm_eval import task_manager

    for kind, spec in suite.benchmark_specs():
        if kind != "lm_eval":
            continue
        include = str(spec.include_path) if spec.include_path else None
        if include and not spec.include_path.is_dir():
            report.problems.append(f"include_path {include} is not a folder of task YAML files")
            continue
        manager = task_manager(include, spec.tasks)
        known = set(manager.all_tasks)
        for name in spec.tasks:
            if name not in known:
                near = difflib.get_close_matches(name, sorted(known), n=3)
                hint = f"; did you mean {', '.join(repr(n) for n in near)}?" if near else ""
                where = f" (looked in lm-eval and {include})" if include else ""
                report.problems.append(f"lm-eval task '{name}' does not exist{where}{hint}")
            elif datasets:
                say(f"loading the dataset of {name}")
                _load_task(name, manager, report)


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


def _check_memory(suite: Suite, report: Report) -> None:
    from ggufbench.resources import probe

    machine = probe()
    gpu_total = max((g.total_bytes for g in machine.gpus), default=0)
    for alias, need in report.footprints.items():
        model = next(m for m in suite.models if m.alias == alias)
        on_gpu = model_settings(suite, model)["n_gpu_layers"] != 0 and gpu_total > 0
        have = gpu_total if on_gpu else machine.total_ram
        where = "GPU memory" if on_gpu else "RAM"
        if need > have:
            report.problems.append(
                f"model '{alias}' needs about {need / 2**30:.1f} GiB but this machine has "
                f"{have / 2**30:.1f} GiB of {where}; lower n_ctx or use a smaller quantization"
            )
