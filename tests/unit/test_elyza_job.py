"""The ELYZA job on scripted backends: judging rounds, results, samples, resume."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ggufbench.backends._base import BackendInfo, GenRequest, GenResult, LoglikResult
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.benchmarks import run_benchmark
from ggufbench.benchmarks._job import JobContext
from ggufbench.benchmarks.elyza import SCORE_GRAMMAR, ElyzaTask, judge_request
from ggufbench.benchmarks.elyza_choice import ChoiceJudge
from ggufbench.benchmarks.elyza_job import Generation, judge_samples
from ggufbench.benchmarks.elyza_requests import Pace, RequestRunner
from ggufbench.cached import CachedBackend
from ggufbench.errors import BackendError
from ggufbench.ledger import JobRow, Ledger
from ggufbench.thinking import thinking_format

JOB = "thinker/elyza_tasks_100"


class Scripted:
    """A fake backend answering ``answers[prompt text]`` (a list: one per call)."""

    def __init__(self, name: str, answers: dict[str, list[str | Exception]]) -> None:
        self.info = BackendInfo("fake", name, {})
        self.answers = answers
        self.requests: list[GenRequest] = []
        self.closed = False

    def generate(self, requests: Sequence[GenRequest], thinking: object = None) -> list[GenResult]:
        (request,) = requests
        self.requests.append(request)
        text = request.messages[-1][1] if request.messages else request.prompt
        key = next(k for k in self.answers if k in text)
        script = self.answers[key]
        out = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(out, Exception):
            raise out
        return [GenResult(out, "stop", 5, 7)]

    def close(self) -> None:
        self.closed = True


def judge_of(scores: dict[str, list[str | Exception]]) -> Scripted:
    """A judge whose answer depends on the model answer inside the grading prompt."""
    judge = Scripted("judge", {})

    def generate(requests: Sequence[GenRequest]) -> list[GenResult]:
        (request,) = requests
        judge.requests.append(request)
        answer = request.messages[0][1].split("# 回答\n", 1)[1]
        script = next(v for k, v in scores.items() if k in answer)
        out = script.pop(0) if len(script) > 1 else script[0]
        if isinstance(out, Exception):
            raise out
        return [GenResult(out, "stop")]

    judge.generate = generate  # type: ignore[method-assign]
    return judge


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite", create=True)
    ledger.claim()
    ledger.add_jobs([JobRow(JOB, "thinker", "elyza_tasks_100", "elyza_tasks_100", {})])
    yield ledger
    ledger.close()


def runner_for(backend: Scripted, ledger: Ledger) -> RequestRunner:
    owner = ledger.owner() or ""
    return RequestRunner(CachedBackend(backend, ledger, owner, JOB), Pace.for_judge())  # type: ignore[arg-type]


def task(doc_id: int) -> ElyzaTask:
    return ElyzaTask(doc_id, f"問題{doc_id}", f"正解{doc_id}", "- 正しければ5点")


def test_judging_rounds_retry_unparseable_judgements_and_skip_empty_answers(
    ledger: Ledger,
) -> None:
    judge = judge_of(
        {
            "回答A": ["4"],
            "回答B": ["よくわかりません", "3"],
            "回答C": ["とても良い", "たぶん良い", "良い"],
            "回答D": [BackendError("the judge server answered HTTP 500 on every attempt")],
        }
    )
    tasks = [task(i) for i in range(7)]
    generations = [
        Generation("回答A"),
        Generation("回答B"),
        Generation("回答C"),
        Generation("回答D"),
        Generation("  "),
        Generation(None),
        Generation(None, None, "generation took longer than 60 s"),
    ]
    scores = judge_samples(runner_for(judge, ledger), tasks, generations)
    got = [(s.status, s.score, s.judge_attempts) for s in scores]
    assert got == [
        ("judged", 4, 1),
        ("judged", 3, 2),
        ("judge_failed", None, 3),
        ("judge_failed", None, 1),
        ("empty_answer", 1, 0),
        ("no_answer", 1, 0),
        ("generation_failed", None, 0),
    ]
    assert "no 1-5 score in 3 attempts" in (scores[2].reason or "")
    assert "HTTP 500" in (scores[3].reason or "")
    assert scores[6].reason == "generation took longer than 60 s"
    # the retry of a judgement is the request judge_request makes for that attempt
    assert judge.requests[-1] == judge_request(tasks[2], "回答C", attempt=2)
    answers = [r.messages[0][1].split("# 回答\n", 1)[1] for r in judge.requests]
    assert all(a.strip() for a in answers)  # empty and missing answers never reach the judge


def test_a_judge_that_answers_nothing_fails_the_job(ledger: Ledger) -> None:
    judge = judge_of({"回答": [BackendError("cannot connect to http://127.0.0.1:9/v1")]})
    with pytest.raises(BackendError, match="the judge answered none of its requests"):
        judge_samples(runner_for(judge, ledger), [task(0)], [Generation("回答")])


class FakeLlama:
    """Enough of LlamaCppBackend for the choice judge: one token per character."""

    def __init__(self, favourite: str, n_ctx: int = 4096) -> None:
        self.info = BackendInfo("llama-cpp", "judge-sha", {"n_ctx": n_ctx})
        self.favourite = favourite
        self.n_ctx = n_ctx
        self.generated: list[GenRequest] = []

    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str:
        return "".join(f"<{role}>{text}" for role, text in messages) + "<assistant>"

    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return [ord(c) for c in text]

    def score_tokens(
        self, context: tuple[int, ...], continuations: Sequence[tuple[int, ...]]
    ) -> list[LoglikResult]:
        return [
            LoglikResult(0.0 if chr(c[0]) == self.favourite else -5.0, True, len(c))
            for c in continuations
        ]

    def generate(self, requests: Sequence[GenRequest], thinking: object = None) -> list[GenResult]:
        self.generated.extend(requests)
        return [GenResult("free text", "stop")]

    def close(self) -> None:
        pass


def test_choice_judge_picks_the_most_likely_score() -> None:
    request = judge_request(task(0), "回答")
    judge = ChoiceJudge(FakeLlama("4"))  # type: ignore[arg-type]
    assert judge.generate([request])[0].text == "4"
    assert judge.info.settings["judge_constraint"] == "choice-1to5"
    plain = GenRequest(messages=(("user", "hi"),))
    assert judge.generate([plain])[0].text == "free text"  # no score grammar: generated
    small = ChoiceJudge(FakeLlama("4", n_ctx=64))  # type: ignore[arg-type]
    with pytest.raises(BackendError, match="more than the judge's n_ctx 64"):
        small.generate([request])
    assert request.grammar == SCORE_GRAMMAR


# -- the whole job, on scripted backends -------------------------------------------

SECRET = "SECRET-THOUGHT"
OUTPUTS = {
    "東京": f"<think-task>{SECRET}-1</think-task><think-policy>{SECRET}-2</think-policy>"
    "<final>東京です。</final>",
    "計算": f"<think>{SECRET}-3</think><final>答えは4です。</final><think>{SECRET}-4</think>",
    "要約": f"<think-safety>{SECRET}-5 never closed <final>{SECRET}-6</final>",
    "遅い": "",
}


def write_tasks(path: Path) -> Path:
    rows = [
        {"input": f"{key}の問題です。", "output": "正解", "eval_aspect": "- 正しければ5点"}
        for key in OUTPUTS
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def context(tmp_path: Path, ledger: Ledger, model: Any, limit: float | None = None) -> JobContext:
    bench = {
        "dataset": str(write_tasks(tmp_path / "tasks.jsonl")),
        "max_tokens": 64,
        "seed": 0,
        "judge": {"runner": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "j"},
    }
    spec = {"model": {"n_gpu_layers": 0}, "benchmark": bench, "name": "elyza_tasks_100"}
    owner = ledger.owner() or ""
    cached = CachedBackend(model, ledger, owner, JOB)
    cached.timing.fixed_s = limit
    return JobContext(
        tmp_path, JOB, "thinker", "elyza_tasks_100", spec, ledger, owner, cached, {"threads": 1}
    )


def thinker() -> tuple[ThinkingBackend, Scripted]:
    answers: dict[str, list[str | Exception]] = {k: [v] for k, v in OUTPUTS.items()}
    answers["遅い"] = [BackendError("generation on the model took longer than 60 s")]
    raw = Scripted("thinker", answers)
    return ThinkingBackend(raw, thinking_format("quad")), raw  # type: ignore[arg-type]


def test_run_scores_final_answers_only_and_a_resume_recomputes_nothing(
    tmp_path: Path, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    judges: list[Scripted] = []
    events: list[str] = []

    def make_judge(spec: dict[str, Any], threads: int | None, n_gpu_layers: int) -> Scripted:
        events.append("judge opened")
        judges.append(judge_of({"東京です。": ["5"], "答えは4です。": ["**4**"]}))
        return judges[-1]

    monkeypatch.setattr("ggufbench.backends.make_judge_backend", make_judge)
    model, raw = thinker()
    raw.close = lambda: events.append("model closed")  # type: ignore[method-assign]
    ctx = context(tmp_path, ledger, model)
    result = run_benchmark("elyza_tasks_100", ctx)

    assert events == ["model closed", "judge opened"]
    assert result["metrics"]["score"]["value"] == pytest.approx(10 / 3)  # 5, 4 and 1
    assert result["distribution"] == {"1": 1, "2": 0, "3": 0, "4": 1, "5": 1}
    assert result["failures"] == {"generation": 2, "judgement": 0, "no_final_answer": 1}
    assert result["n_samples"] == 4 and result["n_scored"] == 3
    assert result["judge"]["runner"] == "fake" and result["judge"]["model"] == "judge"
    assert result["judge"]["prompt_version"] == "elyza-1to5-v1"
    assert result["requests"] == {"total": 6, "computed": 5, "from_cache": 0, "failed": 1}
    judged = [r.messages[0][1].split("# 回答\n", 1)[1].strip() for r in judges[0].requests]
    assert sorted(judged) == ["東京です。", "答えは4です。"]

    rows = [json.loads(line) for line in ctx.samples_path().read_text("utf-8").splitlines()]
    by_input = {r["input"][:2]: r for r in rows}
    assert by_input["東京"]["output"] == "東京です。" and by_input["東京"]["score"] == 5
    inner = [f"{SECRET}-1", f"{SECRET}-2"]
    thinking = by_input["東京"]["thinking"]
    assert thinking["sha256"] == hashlib.sha256("\n".join(inner).encode()).hexdigest()
    assert thinking["length"] == sum(map(len, inner))
    assert [s["name"] for s in thinking["sections"]] == ["think-task", "think-policy"]
    assert by_input["計算"]["thinking"]["length"] == 2 * len(f"{SECRET}-3")
    assert by_input["要約"]["status"] == "no_answer" and by_input["要約"]["output"] is None
    assert by_input["要約"]["thinking"]["withheld_reason"]
    assert by_input["遅い"]["status"] == "generation_failed"
    assert "took longer" in by_input["遅い"]["reason"]
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name != "tasks.jsonl":
            assert SECRET.encode() not in path.read_bytes(), path

    # the same job again, on the same ledger: nothing is generated or judged twice
    model2, raw2 = thinker()
    again = run_benchmark("elyza_tasks_100", context(tmp_path, ledger, model2))
    assert [r.messages[0][1][:2] for r in raw2.requests] == ["遅い"] * 3  # the failed one
    assert judges[1].requests == []
    assert again["metrics"] == result["metrics"]
    assert again["requests"]["from_cache"] == 5 and again["requests"]["computed"] == 0


def test_a_model_that_answers_nothing_fails_the_job(tmp_path: Path, ledger: Ledger) -> None:
    raw = Scripted("broken", {"": [BackendError("llama_decode failed with code 1")]})
    with pytest.raises(BackendError, match="none of the 4 generations succeeded"):
        run_benchmark("elyza_tasks_100", context(tmp_path, ledger, raw))
