"""From a suite to jobs with stable ids.

A job is one model on one benchmark (one lm-eval task, or ELYZA). Its spec is
plain JSON holding everything a worker needs, so a job can be shipped to another
process or another machine as it is.
"""

from __future__ import annotations

import json
from typing import Any

from ggufbench.config import ModelSpec, Suite
from ggufbench.ledger import JobRow


def model_settings(suite: Suite, model: ModelSpec) -> dict[str, Any]:
    """A model's settings with the suite defaults filled in."""
    d = suite.defaults
    return {
        "alias": model.alias,
        "runner": suite.runner_of(model),
        "path": str(model.path) if model.path else None,
        "n_ctx": model.n_ctx or d.n_ctx,
        "n_gpu_layers": d.n_gpu_layers if model.n_gpu_layers is None else model.n_gpu_layers,
        "threads": model.threads or d.threads,
        "n_batch": d.n_batch,
        "chat_template": model.chat_template,
        "thinking": model.thinking,
        "base_url": model.base_url,
        "model": model.model,
        "api_key_env": model.api_key_env,
        "concurrency": model.concurrency,
    }


def job_id(alias: str, benchmark: str) -> str:
    return f"{alias}/{benchmark}"


def plan(suite: Suite) -> list[JobRow]:
    jobs: list[JobRow] = []
    for model in suite.models:
        settings = model_settings(suite, model)
        for kind, spec in suite.benchmark_specs():
            if spec.models is not None and model.alias not in spec.models:
                continue
            body = json.loads(spec.model_dump_json(exclude={"models"}))
            names = spec.tasks if kind == "lm_eval" else [kind]
            for name in names:
                job_spec = {"model": settings, "benchmark": body, "name": name}
                jobs.append(JobRow(job_id(model.alias, name), model.alias, name, kind, job_spec))
    return jobs
