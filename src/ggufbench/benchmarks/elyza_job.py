"""One model's ``elyza_tasks_100`` job: generate, judge, aggregate, write.

1. **Generate.** Each task's ``input`` is the one user message, rendered by the
   model's chat template (in-process) or by the server (HTTP). Requests go
   through the run's cache with a time limit that follows the measured speed,
   are retried, and a sample whose generation still fails is recorded as
   failed with its reason (:mod:`.elyza_requests`). For thinking models the
   backend has already split the answer from the thinking: only the final
   answer and the thinking's hashes and lengths are ever seen here.
2. **Judge.** The model is closed, then the judge is opened in this worker: an
   in-process GGUF model held to 1-5 by choice, or an HTTP endpoint with the
   score grammar and its own concurrency. Judge requests go through their own
   cache wrapper on the same ledger, so a resumed run never judges twice.
   Unparseable judgements are asked again (with a reminder) in rounds, up to
   ``JUDGE_ATTEMPTS`` per sample.
3. **Aggregate.** Mean score out of 5 ± stderr, the 1-5 distribution and the
   failure counts; samples/ gets one line per task.

A benchmark in which no generation (or no judgement) succeeded at all raises
:class:`BackendError`, so the job is retried from the cache instead of
reporting a score made of failures.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggufbench.backends._base import Backend, GenResult
from ggufbench.benchmarks._job import JobContext
from ggufbench.benchmarks.elyza import (
    JUDGE_ATTEMPTS,
    ElyzaTask,
    SampleScore,
    aggregate,
    failed_generation,
    generation_request,
    judge_identity,
    judge_request,
    load_tasks,
    parse_score,
    sample_record,
    score_without_judge,
)
from ggufbench.benchmarks.elyza_requests import Pace, RequestRunner, RequestStats, base_backend
from ggufbench.cached import CachedBackend
from ggufbench.config import ElyzaBenchmark, JudgeSpec
from ggufbench.errors import BackendError, ConfigError
from ggufbench.hub import read_from_cache_if_unreachable

__all__ = ["REQUEST_ATTEMPTS", "Generation", "judge_samples", "run_job"]

REQUEST_ATTEMPTS = 3
"""Tries per request, model or judge, before its sample is recorded as failed."""


@dataclass(frozen=True)
class Generation:
    """One task's generation: the final answer (None: none), or why it failed."""

    answer: str | None
    result: GenResult | None = None
    error: str | None = None


def run_job(ctx: JobContext) -> dict[str, Any]:
    bench = ElyzaBenchmark.model_validate(ctx.spec["benchmark"])
    if bench.judge is None:
        raise ConfigError(
            "elyza_tasks_100 needs a judge; add judge: {runner: llama-cpp, path: JUDGE.gguf} "
            "or judge: {runner: openai, base_url: ..., model: ...}"
        )
    read_from_cache_if_unreachable([bench.dataset])
    tasks = load_tasks(bench.dataset, limit=bench.limit, seed=bench.seed)
    start = time.monotonic()
    fixed_s = ctx.cached.timing.fixed_s  # the suite's request_timeout_s, if it sets one
    generations, model_stats = _generate(ctx, tasks, bench, fixed_s)
    ctx.cached.backend.close()  # free its memory before the judge loads
    scores, judge_stats, identity = _judge(ctx, bench.judge, tasks, generations, fixed_s)
    summary = aggregate(scores)
    rows = [_sample_row(t, g, s) for t, g, s in zip(tasks, generations, scores, strict=True)]
    ctx.write_jsonl(ctx.samples_path(), rows)
    ctx.write_json(
        ctx.result_path(),
        {
            "benchmark": "elyza_tasks_100",
            "dataset": bench.dataset,
            "settings": bench.model_dump(mode="json", exclude={"models", "judge"}),
            "judge": identity,
            "summary": summary.to_dict(),
            "requests": {"model": model_stats.to_dict(), "judge": judge_stats.to_dict()},
        },
    )
    return {
        "metrics": summary.metrics(),
        "n_samples": summary.n_samples,
        "n_scored": summary.n_scored,
        "wall_s": round(time.monotonic() - start, 3),
        "requests": _sum_requests(model_stats, judge_stats),
        "gen_tokens": model_stats.gen_tokens,
        "compute_s": round(model_stats.compute_s, 3),
        "judge": identity,
        "distribution": summary.to_dict()["distribution"],
        "failures": {
            "generation": summary.failed_generations,
            "judgement": summary.failed_judgements,
            "no_final_answer": sum(s.status == "no_answer" for s in scores),
        },
    }


# -- 1. generation ----------------------------------------------------------------


def _generate(
    ctx: JobContext, tasks: Sequence[ElyzaTask], bench: ElyzaBenchmark, fixed_s: float | None
) -> tuple[list[Generation], RequestStats]:
    runner = RequestRunner(
        ctx.cached,
        Pace.for_generation(fixed_s),
        attempts=REQUEST_ATTEMPTS,
        concurrency=_concurrency(ctx.cached.backend),
    )
    requests = [
        generation_request(t, max_tokens=bench.max_tokens, temperature=bench.temperature)
        for t in tasks
    ]
    generations = [_generation(outcome) for outcome in runner.run(requests)]
    errors = [g.error for g in generations if g.error is not None]
    if generations and len(errors) == len(generations):
        raise BackendError(
            f"none of the {len(generations)} generations succeeded; the last failure: {errors[-1]}"
        )
    return generations, runner.stats


def _generation(outcome: GenResult | BackendError) -> Generation:
    if isinstance(outcome, BackendError):
        return Generation(None, None, str(outcome))
    withheld = outcome.thinking is not None and outcome.thinking.get("withheld_reason")
    return Generation(None if withheld else outcome.text, outcome)


def _concurrency(backend: Backend) -> int:
    """Requests in flight: the HTTP backend's setting, one for in-process models."""
    return int(getattr(base_backend(backend), "concurrency", 1) or 1)


# -- 2. judging -------------------------------------------------------------------


def _judge(
    ctx: JobContext,
    spec: JudgeSpec,
    tasks: Sequence[ElyzaTask],
    generations: Sequence[Generation],
    fixed_s: float | None,
) -> tuple[list[SampleScore], RequestStats, dict[str, Any]]:
    """Open the judge in this worker, score every sample, close it."""
    from ggufbench.backends import make_judge_backend

    model = ctx.spec["model"]  # the judge takes the model's place in this worker
    threads = model.get("threads") or ctx.extra.get("threads")
    n_gpu_layers = int(model.get("n_gpu_layers", -1))
    judge: Backend = make_judge_backend(spec.model_dump(mode="json"), threads, n_gpu_layers)
    try:
        runner = RequestRunner(
            CachedBackend(judge, ctx.ledger, ctx.owner, ctx.job_id),
            Pace.for_judge(fixed_s),
            attempts=REQUEST_ATTEMPTS,
            concurrency=_concurrency(judge),
        )
        scores = judge_samples(runner, tasks, generations)
        return scores, runner.stats, judge_identity(judge.info, **_judge_details(spec))
    finally:
        judge.close()


def judge_samples(
    runner: RequestRunner, tasks: Sequence[ElyzaTask], generations: Sequence[Generation]
) -> list[SampleScore]:
    """Score every sample: without a judge where the rules say so, else in rounds.

    Round ``k`` sends the ``k``-th judge request (:func:`judge_request` with
    ``attempt=k``) of every sample whose judgement has not parsed yet, so each
    request is the same on every resume and is served from the cache.
    """
    scores: dict[int, SampleScore] = {}
    pending: list[int] = []
    for i, (task, gen) in enumerate(zip(tasks, generations, strict=True)):
        if gen.error is not None:
            scores[i] = failed_generation(task, gen.error)
        elif (settled := score_without_judge(task, gen.answer)) is not None:
            scores[i] = settled
        else:
            pending.append(i)
    asked, answered, last_error = bool(pending), False, ""
    for attempt in range(JUDGE_ATTEMPTS):
        if not pending:
            break
        requests = [
            judge_request(tasks[i], generations[i].answer or "", attempt=attempt) for i in pending
        ]
        retry = []
        for i, outcome in zip(pending, runner.run(requests), strict=True):
            task = tasks[i]
            if isinstance(outcome, BackendError):
                last_error = str(outcome)
                scores[i] = SampleScore(task.doc_id, "judge_failed", None, last_error, attempt + 1)
                continue
            answered = True
            score = parse_score(outcome.text)
            if score is not None:
                scores[i] = SampleScore(task.doc_id, "judged", score, None, attempt + 1)
            elif attempt + 1 < JUDGE_ATTEMPTS:
                retry.append(i)
            else:
                reason = f"the judge gave no 1-5 score in {JUDGE_ATTEMPTS} attempts"
                scores[i] = SampleScore(task.doc_id, "judge_failed", None, reason, attempt + 1)
        pending = retry
    if asked and not answered:
        raise BackendError(
            f"the judge answered none of its requests; the last failure: {last_error}"
        )
    return [scores[i] for i in range(len(tasks))]


def _judge_details(spec: JudgeSpec) -> dict[str, Any]:
    if spec.runner == "llama-cpp" and spec.path is not None:
        from ggufbench.benchmarks.elyza_choice import CONSTRAINT
        from ggufbench.gguf_file import validate

        info = validate(Path(spec.path))
        return {
            "file": Path(spec.path).name,
            "quant": info.quant,
            "n_params": info.n_params,
            "constraint": CONSTRAINT,
        }
    return {"constraint": "GBNF grammar [1-5] where the server accepts it; output parsed"}


# -- 3. results -------------------------------------------------------------------


def _sample_row(task: ElyzaTask, gen: Generation, score: SampleScore) -> dict[str, Any]:
    row = sample_record(task, gen.answer, score)
    if gen.result is not None:
        row["finish_reason"] = gen.result.finish_reason
        row["n_tokens"] = gen.result.n_tokens
        if gen.result.thinking is not None:
            row["thinking"] = gen.result.thinking
    return row


def _sum_requests(*stats: RequestStats) -> dict[str, int]:
    return {
        "total": sum(s.total for s in stats),
        "computed": sum(s.computed for s in stats),
        "from_cache": sum(s.from_cache for s in stats),
        "failed": sum(s.failed for s in stats),
    }
