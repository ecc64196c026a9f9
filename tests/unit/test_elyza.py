"""Scoring one sample and aggregating: pure functions, a scripted judge."""

from __future__ import annotations

import json
import math
import statistics

import pytest

from ggufbench.backends._base import BackendInfo, GenRequest
from ggufbench.benchmarks.elyza import (
    BENCHMARK,
    PROMPT_VERSION,
    ElyzaTask,
    SampleScore,
    aggregate,
    failed_generation,
    generation_request,
    judge_identity,
    sample_record,
    score_sample,
)
from ggufbench.errors import BackendTimeout

TASK = ElyzaTask(7, "日本の首都は？", "東京です。", "- 東京と答えていれば5点")


class ScriptedJudge:
    def __init__(self, *answers: str | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[GenRequest] = []

    def __call__(self, request: GenRequest) -> str:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_generation_request() -> None:
    request = generation_request(TASK)
    assert request.messages == (("user", "日本の首都は？"),)
    assert request.max_tokens == 1024 and request.temperature == 0.0 and request.grammar is None
    assert generation_request(TASK, max_tokens=64, temperature=0.7).max_tokens == 64


def test_judged_score() -> None:
    judge = ScriptedJudge("5")
    result = score_sample(TASK, "東京です。", judge)
    assert result == SampleScore(7, "judged", 5, None, 1)
    assert "東京です。" in judge.requests[0].messages[0][1]


@pytest.mark.parametrize("answer", ["", "  \n\t"])
def test_empty_answer_scores_one_without_a_judge_call(answer: str) -> None:
    judge = ScriptedJudge()
    assert score_sample(TASK, answer, judge) == SampleScore(7, "empty_answer", 1)
    assert judge.requests == []


def test_no_final_answer_scores_one_without_a_judge_call() -> None:
    judge = ScriptedJudge()
    result = score_sample(TASK, None, judge)
    assert result.status == "no_answer" and result.score == 1 and judge.requests == []


def test_unparseable_judgement_is_retried_then_fails() -> None:
    judge = ScriptedJudge("うーん", "4")
    result = score_sample(TASK, "東京", judge)
    assert result.score == 4 and result.judge_attempts == 2
    assert judge.requests[0] != judge.requests[1]
    judge = ScriptedJudge("?", "?", "?")
    result = score_sample(TASK, "東京", judge, attempts=3)
    assert (
        result.status == "judge_failed"
        and result.score is None
        and "3 attempts" in (result.reason or "")
    )


def test_judge_backend_error_is_a_failed_judgement() -> None:
    judge = ScriptedJudge(BackendTimeout("the request to http://x/v1 took longer than 5 s"))
    result = score_sample(TASK, "東京", judge)
    assert result.status == "judge_failed" and "http://x/v1" in (result.reason or "")


def test_aggregate_mean_stderr_distribution_and_failures() -> None:
    scores = [5, 4, 4, 1, 3]
    samples = [SampleScore(i, "judged", s) for i, s in enumerate(scores)]
    samples += [
        SampleScore(5, "empty_answer", 1),
        SampleScore(6, "no_answer", 1),
        failed_generation(ElyzaTask(7, "q", "", ""), "timed out"),
        SampleScore(8, "judge_failed", None, "no score"),
    ]
    summary = aggregate(samples)
    counted = scores + [1, 1]
    assert summary.n_samples == 9 and summary.n_scored == 7
    assert summary.mean == pytest.approx(statistics.fmean(counted))
    assert summary.stderr == pytest.approx(statistics.stdev(counted) / math.sqrt(7))
    assert summary.distribution == {1: 3, 2: 0, 3: 1, 4: 2, 5: 1}
    assert summary.failed_generations == 2 and summary.failed_judgements == 1
    assert summary.metrics() == {"score": {"value": summary.mean, "stderr": summary.stderr}}
    assert json.loads(json.dumps(summary.to_dict()))["distribution"]["1"] == 3


def test_aggregate_small_inputs() -> None:
    empty = aggregate([])
    assert empty.mean is None and empty.stderr is None and empty.n_samples == 0
    one = aggregate([SampleScore(0, "judged", 4)])
    assert one.mean == 4 and one.stderr is None


def test_judge_identity_and_sample_record() -> None:
    info = BackendInfo("openai", "http://h/v1 gpt-x", {"api": "openai-compatible"})
    assert judge_identity(info) == {
        "runner": "openai",
        "model": "http://h/v1 gpt-x",
        "prompt_version": PROMPT_VERSION,
    }
    record = sample_record(TASK, "東京", SampleScore(7, "judged", 5, None, 1))
    assert record["doc_id"] == 7 and record["target"] == "東京です。" and record["score"] == 5
    assert json.dumps(record, ensure_ascii=False)
    assert BENCHMARK == "elyza_tasks_100"
