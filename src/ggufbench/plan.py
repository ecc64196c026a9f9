"""From a suite to jobs with stable ids.

A job is one model on one benchmark (one lm-eval task, ELYZA, or fidelity). Its spec is
plain JSON holding everything a worker needs, so a job can be shipped to another
process or another machine as it is.

An lm-eval task with ``shards: N`` is also split into N shard jobs
(``alias/task#2-of-N``), each computing the answers of one range of every
(sub)task's documents, so that one large task runs on many nodes at once. The
job itself starts once its shards have ended: lm-eval then scores all documents
once, its answers served from the ledger, exactly as an unsharded run would
(a shard that failed leaves its documents to the job). A shard's spec names its
``shard`` (index, count) and ``parent``; the job's spec lists its ``shards``.

A fidelity benchmark is one job for the baseline (``baseline/fidelity``), which keeps a
compact record of each chunk of the text, and one job per other model
(``alias/fidelity``), which starts once the baseline's job has ended (its spec's
``after``) and measures against those records. Only in-process models take part
(:func:`fidelity_skip`); a fidelity job loads its model with the benchmark's ``n_ctx``.
"""

from __future__ import annotations

import json
from typing import Any

from ggufbench.config import FidelityBenchmark, ModelSpec, Suite
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
        "server_bin": model.server_bin,
        "parallel": model.parallel,
        "cache_prompt": model.cache_prompt,
        "ollama_name": model.ollama_name,
    }


def loads_here(settings: dict[str, Any]) -> bool:
    """Whether a job loads the model on its own machine: in-process, or in a llama-server
    started for the job. Other runners reach a server that holds the model already."""
    runner = settings.get("runner")
    return runner == "llama-cpp" or (runner == "llama-server" and not settings.get("base_url"))


def job_id(alias: str, benchmark: str) -> str:
    return f"{alias}/{benchmark}"


def shard_id(parent: str, index: int, count: int) -> str:
    return f"{parent}#{index + 1}-of-{count}"


def plan(suite: Suite, auto_shards: int = 1) -> list[JobRow]:
    """The suite's jobs; ``shards: auto`` means ``auto_shards`` (what the executor can run at
    once). Shards come before their job, so a job's own row is the last of its name."""
    jobs: list[JobRow] = []
    for model in suite.models:
        settings = model_settings(suite, model)
        for kind, spec in suite.benchmark_specs():
            if isinstance(spec, FidelityBenchmark):
                jobs += fidelity_jobs(suite, model, settings, spec)
                continue
            if spec.models is not None and model.alias not in spec.models:
                continue
            body = json.loads(spec.model_dump_json(exclude={"models"}))
            names = spec.tasks if kind == "lm_eval" else [kind]
            count = _shard_count(getattr(spec, "shards", 1), auto_shards)
            for name in names:
                job_spec: dict[str, Any] = {"model": settings, "benchmark": body, "name": name}
                jid = job_id(model.alias, name)
                if count > 1:
                    ids = [shard_id(jid, i, count) for i in range(count)]
                    for i, sid in enumerate(ids):
                        shard = {**job_spec, "shard": [i, count], "parent": jid}
                        jobs.append(JobRow(sid, model.alias, name, kind, shard))
                    job_spec["shards"] = ids
                jobs.append(JobRow(jid, model.alias, name, kind, job_spec))
    return jobs


FIDELITY = "fidelity"
FIDELITY_RUNNER = "llama-cpp"


def fidelity_skip(suite: Suite, model: ModelSpec) -> str | None:
    """Why ``model`` takes no part in a fidelity benchmark, in one sentence (None: it does)."""
    runner = suite.runner_of(model)
    if runner == FIDELITY_RUNNER:
        return None
    return (
        f"{model.alias} is skipped: fidelity reads every next-token distribution of the "
        f"model in its job's process, which runner {runner} does not give; run it with "
        f"runner {FIDELITY_RUNNER} to compare it with the baseline"
    )


def fidelity_skipped(suite: Suite) -> dict[str, str]:
    """{alias: why} of the models a fidelity benchmark of the suite names but leaves out for
    their runner (an out-of-process baseline is a preflight problem, not among them)."""
    out = {}
    for _, spec in suite.benchmark_specs():
        if not isinstance(spec, FidelityBenchmark):
            continue
        for model in suite.models:
            named = spec.models is None or model.alias in spec.models
            if model.alias != suite.baseline() and named:
                why = fidelity_skip(suite, model)
                if why:
                    out[model.alias] = why
    return out


def fidelity_jobs(
    suite: Suite, model: ModelSpec, settings: dict[str, Any], spec: FidelityBenchmark
) -> list[JobRow]:
    """``model``'s fidelity job: the baseline's, or a variant's that waits for it; none for a
    model the benchmark leaves out (``models``, or :func:`fidelity_skip`)."""
    base = suite.baseline()
    base_model = next(m for m in suite.models if m.alias == base)
    if fidelity_skip(suite, base_model) or fidelity_skip(suite, model):
        return []  # an out-of-process baseline is a preflight problem
    if model.alias != base and spec.models is not None and model.alias not in spec.models:
        return []
    job_spec: dict[str, Any] = {
        "model": {
            **settings,
            "n_ctx": spec.n_ctx,
            "n_batch": min(spec.n_ctx, int(settings["n_batch"])),
            "thinking": "none",  # plain text, scored token by token
        },
        "benchmark": json.loads(spec.model_dump_json(exclude={"models"})),
        "name": FIDELITY,
        "baseline": base,
    }
    if model.alias != base:
        job_spec["after"] = [job_id(base, FIDELITY)]
    return [JobRow(job_id(model.alias, FIDELITY), model.alias, FIDELITY, FIDELITY, job_spec)]


def _shard_count(shards: int | str, auto: int) -> int:
    return max(1, auto if shards == "auto" else int(shards))


def new_jobs(planned: list[JobRow], known: set[str]) -> list[JobRow]:
    """The planned jobs a run's ledger does not hold yet, less the shards of jobs it holds:
    a job keeps the shards it was planned with (``auto`` may count differently later)."""
    return [
        job
        for job in planned
        if job.id not in known and not (is_shard(job) and job.spec["parent"] in known)
    ]


def is_shard(job: JobRow) -> bool:
    return "shard" in job.spec


def waits_for(job: JobRow) -> list[str]:
    """The ids of the jobs that end before this one starts: a sharded job's shards, a
    fidelity variant's baseline job."""
    return list(job.spec.get("shards") or []) + list(job.spec.get("after") or [])
