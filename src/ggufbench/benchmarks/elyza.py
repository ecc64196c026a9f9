"""Benchmark ``elyza_tasks_100``: Japanese instruction following, judged 1-5.

The pieces, each a pure function the runner wires together::

    load_tasks(dataset, limit=, seed=)      -> [ElyzaTask]        (elyza_data)
    generation_request(task)                -> GenRequest for the model
    score_sample(task, answer, judge)       -> SampleScore        (judge called
                                               through a cache-aware callable)
    failed_generation(task, reason)         -> SampleScore
    aggregate([SampleScore])                -> ElyzaSummary (mean ± stderr,
                                               distribution, failure counts)

Scoring rules: an empty answer scores 1 without a judge call (the rule ELYZA's
grader states for blank answers); so does an output with no final answer (a
thinking model that never closed its thinking), which is also counted as a
failed generation. A generation that failed (timeout after its retries) and a
judgement that could not be parsed after its retries have no score: they are
counted, and left out of the mean.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ggufbench.backends._base import BackendInfo, GenRequest
from ggufbench.benchmarks.elyza_data import (
    HF_DATASET,
    ElyzaTask,
    demo_dataset_path,
    load_tasks,
    select_subset,
    tasks_from_rows,
)
from ggufbench.benchmarks.elyza_judge import (
    JUDGE_MAX_TOKENS,
    PROMPT_VERSION,
    SCORE_GRAMMAR,
    judge_prompt,
    judge_request,
    parse_score,
)
from ggufbench.errors import BackendError

if TYPE_CHECKING:
    from ggufbench.benchmarks._job import JobContext

__all__ = [
    "BENCHMARK",
    "HF_DATASET",
    "JUDGE_MAX_TOKENS",
    "PROMPT_VERSION",
    "SCORE_GRAMMAR",
    "ElyzaSummary",
    "ElyzaTask",
    "JudgeFn",
    "SampleScore",
    "SampleStatus",
    "aggregate",
    "demo_dataset_path",
    "failed_generation",
    "generation_request",
    "judge_identity",
    "judge_prompt",
    "judge_request",
    "load_tasks",
    "parse_score",
    "run",
    "sample_record",
    "score_sample",
    "score_without_judge",
    "select_subset",
    "tasks_from_rows",
]

BENCHMARK = "elyza_tasks_100"
DEFAULT_MAX_TOKENS = 1024
JUDGE_ATTEMPTS = 3

SampleStatus = Literal["judged", "empty_answer", "no_answer", "generation_failed", "judge_failed"]
JudgeFn = Callable[[GenRequest], str]
"""Sends one judge request (through the ledger's cache) and returns its text."""


@dataclass(frozen=True)
class SampleScore:
    """The outcome for one task: a 1-5 score, or None with the reason."""

    doc_id: int
    status: SampleStatus
    score: int | None
    reason: str | None = None
    judge_attempts: int = 0


def generation_request(
    task: ElyzaTask, *, max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0
) -> GenRequest:
    """The model's request: the task's input as the one user message."""
    return GenRequest(
        messages=(("user", task.input),), max_tokens=max_tokens, temperature=temperature
    )


def score_sample(
    task: ElyzaTask, answer: str | None, judge: JudgeFn, *, attempts: int = JUDGE_ATTEMPTS
) -> SampleScore:
    """Score one answer; ``answer`` None means the output had no final answer.

    The judge is asked up to ``attempts`` times until its output parses; a
    :class:`BackendError` from it ends the sample as a failed judgement.
    """
    settled = score_without_judge(task, answer)
    if settled is not None:
        return settled
    answer = answer or ""
    for attempt in range(attempts):
        try:
            text = judge(judge_request(task, answer, attempt=attempt))
        except BackendError as exc:
            return SampleScore(task.doc_id, "judge_failed", None, str(exc), attempt + 1)
        score = parse_score(text)
        if score is not None:
            return SampleScore(task.doc_id, "judged", score, None, attempt + 1)
    reason = f"the judge gave no 1-5 score in {attempts} attempts"
    return SampleScore(task.doc_id, "judge_failed", None, reason, attempts)


def score_without_judge(task: ElyzaTask, answer: str | None) -> SampleScore | None:
    """The score of an answer that needs no judge (none, or empty), else None."""
    if answer is None:
        return SampleScore(task.doc_id, "no_answer", 1, "the output has no final answer")
    if not answer.strip():
        return SampleScore(task.doc_id, "empty_answer", 1)
    return None


def failed_generation(task: ElyzaTask, reason: str) -> SampleScore:
    """A sample whose generation failed after its retries (e.g. a timeout)."""
    return SampleScore(task.doc_id, "generation_failed", None, reason)


@dataclass(frozen=True)
class ElyzaSummary:
    """Mean score out of 5 with its standard error, and what went wrong."""

    n_samples: int
    n_scored: int
    mean: float | None
    stderr: float | None
    distribution: dict[int, int] = field(default_factory=dict)
    failed_generations: int = 0
    failed_judgements: int = 0

    def metrics(self) -> dict[str, dict[str, float | None]]:
        """In the shape of summary.json's ``metrics``: the mean score out of 5."""
        return {"score": {"value": self.mean, "stderr": self.stderr}}

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready (distribution keys as "1".."5")."""
        return {
            "n_samples": self.n_samples,
            "n_scored": self.n_scored,
            "mean": self.mean,
            "stderr": self.stderr,
            "distribution": {str(k): v for k, v in self.distribution.items()},
            "failed_generations": self.failed_generations,
            "failed_judgements": self.failed_judgements,
        }


def aggregate(samples: Sequence[SampleScore]) -> ElyzaSummary:
    """Mean ± stderr (sample stdev / sqrt(n)) over scored samples, counts 1-5, failures."""
    scores = [s.score for s in samples if s.score is not None]
    distribution = {k: scores.count(k) for k in range(1, 6)}
    mean = statistics.fmean(scores) if scores else None
    stderr = statistics.stdev(scores) / math.sqrt(len(scores)) if len(scores) > 1 else None
    return ElyzaSummary(
        n_samples=len(samples),
        n_scored=len(scores),
        mean=mean,
        stderr=stderr,
        distribution=distribution,
        failed_generations=sum(s.status in ("no_answer", "generation_failed") for s in samples),
        failed_judgements=sum(s.status == "judge_failed" for s in samples),
    )


def judge_identity(info: BackendInfo, **details: Any) -> dict[str, Any]:
    """Who judged, for summary.json and the report: runner, model, prompt version.

    ``details`` (the judge file's name and size, how its output is constrained)
    are added as they are.
    """
    return {
        "runner": info.runner,
        "model": info.identity,
        "prompt_version": PROMPT_VERSION,
        **details,
    }


def sample_record(task: ElyzaTask, answer: str | None, result: SampleScore) -> dict[str, Any]:
    """One line of samples/<alias>/elyza_tasks_100.jsonl (thinking fields added by the caller)."""
    return {
        "doc_id": task.doc_id,
        "input": task.input,
        "target": task.output,
        "eval_aspect": task.eval_aspect,
        "output": answer,
        "score": result.score,
        "status": result.status,
        "reason": result.reason,
        "judge_attempts": result.judge_attempts,
    }


def run(ctx: JobContext) -> dict[str, Any]:
    """Run one model's ``elyza_tasks_100`` job (see :mod:`ggufbench.benchmarks.elyza_job`)."""
    from ggufbench.benchmarks.elyza_job import run_job

    return run_job(ctx)
