"""ELYZA runs against a scripted fake OpenAI-compatible server, through the real CLI.

The model behind the server thinks in the quad format; the judge behind it
grades by a rule the test knows. Nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scripted_openai import ScriptedOpenAI, serve

from conftest import ggufbench, start_ggufbench, write_suite
from ggufbench.backends._base import GenRequest
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.thinking import StreamParser, thinking_format

SECRET = "SECRET-"  # in every piece of thinking and every withheld text
WITHHELD_JA = "偽の答え"

# (task input, what the model emits, the final answer or None, the thinking sections' inner texts)
THINKING = [
    (
        "問1: 日本の首都はどこですか。",
        "<think-task>SECRET-A1 課題を読む</think-task>\n<think-safety>SECRET-A2</think-safety>"
        "<think-policy>SECRET-A3</think-policy>\n<final>東京です。</final>",
        "東京です。",
        ["SECRET-A1 課題を読む", "SECRET-A2", "SECRET-A3"],
    ),
    (  # repeated blocks, and thinking after the answer
        "問2: 6かける7は？",
        "<think>SECRET-B1</think><think-task>SECRET-B2</think-task><think>SECRET-B3</think>"
        "<final>42です。</final><think-logic>SECRET-B4</think-logic>",
        "42です。",
        ["SECRET-B1", "SECRET-B2", "SECRET-B3", "SECRET-B4"],
    ),
    (  # a section never closed: no answer
        "問3: 短い詩を書いてください。",
        f"<think-task>SECRET-C1 閉じない <final>SECRET-C2 {WITHHELD_JA}</final>",
        None,
        [f"SECRET-C1 閉じない <final>SECRET-C2 {WITHHELD_JA}</final>"],
    ),
    (  # <final> never closed: no answer
        "問4: 月曜日の次は？",
        "<think>SECRET-D1</think><final>SECRET-D2 途中まで",
        None,
        ["SECRET-D1"],
    ),
    (  # case and whitespace variants; tags inside the answer are answer text
        "問5: 不等号を使って書いてください。",
        '< THINK-Safety >SECRET-E1</think-safety ><FINAL>a<b && c>d、"<think>" は文字です</Final>',
        'a<b && c>d、"<think>" は文字です',
        ["SECRET-E1"],
    ),
    (  # forced open: the opening tag was in the prompt
        "問6: はいかいいえで答えてください。",
        "SECRET-F1 前半</think-policy>\n<final>はい。</final>",
        "はい。",
        ["SECRET-F1 前半"],
    ),
    (  # look-alikes inside thinking: a <final> and a misspelt closer
        "問7: 本当の答えは？",
        "<think-task>SECRET-G1 <final>SECRET-G2</final> </think-taks> SECRET-G3</think-task>"
        "<final>本当の答え</final>",
        "本当の答え",
        ["SECRET-G1 <final>SECRET-G2</final> </think-taks> SECRET-G3"],
    ),
]


def judge_score(answer: str) -> int:
    return 1 + len(answer) % 5


def answer_in(grading_prompt: str) -> str:
    return grading_prompt.split("# 回答\n", 1)[1].strip()


def script_by_input(scripts: dict[str, str]) -> Any:
    return lambda body: scripts[body["messages"][-1]["content"]]


def judge(body: dict[str, Any]) -> str:
    return str(judge_score(answer_in(body["messages"][-1]["content"])))


def write_tasks(path: Path, inputs: list[str]) -> Path:
    rows = [{"input": i, "output": "正解例", "eval_aspect": "- 正しければ5点"} for i in inputs]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    return path


def http_suite(tmp_path: Path, base_url: str, model: str, extra: str, judge: str) -> Path:
    return write_suite(
        tmp_path,
        f"""name: http
models:
  - alias: {model}
    runner: openai
    base_url: {base_url}
    model: {model}
{extra}benchmarks:
  - elyza_tasks_100:
      dataset: {tmp_path / "tasks.jsonl"}
      max_tokens: 256
      judge: {{runner: openai, base_url: "{base_url}", model: judge, {judge}}}
""",
    )


@pytest.fixture
def server() -> Iterator[ScriptedOpenAI]:
    scripts = {task: output for task, output, _, _ in THINKING}
    fake = ScriptedOpenAI(
        models={
            "thinker": script_by_input(scripts),
            "plain": lambda body: "答え: " + body["messages"][-1]["content"][:8],
            "judge": judge,
        },
        delay_s={"judge": 0.0},
    )
    with serve(fake) as running:
        yield running


def every_file(run_dir: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(run_dir.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def test_quad_thinking_model_is_scored_on_final_answers_only(
    tmp_path: Path, server: ScriptedOpenAI
) -> None:
    write_tasks(tmp_path / "tasks.jsonl", [t for t, _, _, _ in THINKING])
    suite = http_suite(
        tmp_path, server.base_url, "thinker", "    thinking: quad\n", "concurrency: 3"
    )
    done = ggufbench("run", str(suite), timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    (run_dir,) = (tmp_path / "runs").iterdir()

    rows = [json.loads(x) for x in (run_dir / "samples/thinker/elyza_tasks_100.jsonl").open()]
    assert [r["input"] for r in rows] == [t for t, _, _, _ in THINKING]
    for row, (_, _, answer, sections) in zip(rows, THINKING, strict=True):
        assert row["output"] == answer  # the final answer only, or None
        joined = "\n".join(sections)
        assert row["thinking"]["sha256"] == hashlib.sha256(joined.encode()).hexdigest()
        assert row["thinking"]["length"] == sum(len(s) for s in sections)
        hashes = [s["sha256"] for s in row["thinking"]["sections"]]
        assert hashes == [hashlib.sha256(s.encode()).hexdigest() for s in sections]
        if answer is None:
            assert (row["status"], row["score"]) == ("no_answer", 1)
            assert row["thinking"]["withheld_reason"]
        else:
            assert (row["status"], row["score"]) == ("judged", judge_score(answer))

    # the judge saw the final answers, and only them; withheld outputs were never judged
    judged = sorted(answer_in(p) for p in server.prompts("judge"))
    assert judged == sorted(a for _, _, a, _ in THINKING if a is not None)
    assert not [r for r in server.received if r.stream]  # whole answers were asked for

    summary = json.loads((run_dir / "summary.json").read_text())
    entry = summary["models"]["thinker"]["benchmarks"]["elyza_tasks_100"]
    scores = [judge_score(a) for _, _, a, _ in THINKING if a is not None] + [1, 1]
    assert entry["metrics"]["score"]["value"] == pytest.approx(sum(scores) / len(scores))
    assert entry["failures"] == {"generation": 2, "judgement": 0, "no_final_answer": 2}
    assert entry["judge"]["runner"] == "openai"
    assert entry["judge"]["model"] == f"{server.base_url} judge"
    assert entry["judge"]["prompt_version"] == "elyza-1to5-v1"

    # no thinking, and no withheld text, anywhere in the run directory or on the console
    forbidden = [SECRET.encode(), WITHHELD_JA.encode(), json.dumps(WITHHELD_JA).encode()[1:-1]]
    for path, data in every_file(run_dir):
        for needle in forbidden:
            assert needle not in data, f"{needle!r} found in {path}"
    for needle in forbidden:
        assert needle.decode() not in done.stdout + done.stderr

    # the same outputs streamed in 3-character pieces (tags split) parse the same way
    with OpenAIBackend(server.base_url, "thinker") as backend:
        for row, (task, _, _, _) in zip(rows, THINKING, strict=True):
            parser = StreamParser(thinking_format("quad"))
            pieces = list(backend.stream(GenRequest(messages=(("user", task),))))
            assert any("<" in p and ">" not in p for p in pieces)
            shown = "".join(parser.feed(p) for p in pieces)
            parsed = parser.finish()
            assert (
                parsed.answer == row["output"]
                and parsed.thinking_sha256 == (row["thinking"]["sha256"])
            )
            assert SECRET not in shown


def wait_for_workers_to_stop(run_dir: Path, timeout_s: float = 20.0) -> None:
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        pids = [r[0] for r in db.execute("SELECT pid FROM attempts") if r[0]]
    assert pids
    deadline = time.monotonic() + timeout_s
    for pid in pids:
        while running(pid):
            assert time.monotonic() < deadline, f"worker {pid} is still running"
            time.sleep(0.05)


def running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def committed_judgements(run_dir: Path, identity: str) -> set[str]:
    with sqlite3.connect(run_dir / "ledger.sqlite") as db:
        rows = db.execute("SELECT request FROM cache WHERE model = ?", (identity,)).fetchall()
    return {json.loads(r[0])["messages"][-1][1] for r in rows}


def test_kill_during_judging_then_resume_judges_nothing_twice(
    tmp_path: Path, server: ScriptedOpenAI
) -> None:
    inputs = [f"問{n}: {n}たす{n}は？" for n in range(1, 9)]
    write_tasks(tmp_path / "tasks.jsonl", inputs)
    suite = http_suite(tmp_path, server.base_url, "plain", "", "concurrency: 1")
    server.delay_s["judge"] = 0.4
    log = (tmp_path / "run.log").open("wb")
    proc = start_ggufbench("run", str(suite), output=log)
    try:
        deadline = time.monotonic() + 60
        while len(server.prompts("judge")) < 3:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "judging never started"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    (run_dir,) = (tmp_path / "runs").iterdir()
    wait_for_workers_to_stop(run_dir)  # orphaned, they notice and stop by themselves
    before = server.prompts("judge")
    committed = committed_judgements(run_dir, f"{server.base_url} judge")
    assert 2 <= len(committed) < len(inputs)
    assert committed <= set(before)

    resumed = ggufbench("resume", str(run_dir), timeout=120)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = server.prompts("judge")[len(before) :]
    assert not set(after) & committed  # nothing already judged was judged again
    assert len(after) == len(set(after)) == len(inputs) - len(committed)
    assert len(server.prompts("plain")) == len(inputs)  # each task generated once

    summary = json.loads((run_dir / "summary.json").read_text())
    entry = summary["models"]["plain"]["benchmarks"]["elyza_tasks_100"]
    assert summary["status"] == "done" and entry["n_scored"] == len(inputs)
    result = json.loads((run_dir / "results/plain/elyza_tasks_100.json").read_text())
    assert result["requests"]["judge"]["from_cache"] == len(committed)
    assert result["requests"]["model"]["from_cache"] == len(inputs)  # all generated before
    rows = [json.loads(x) for x in (run_dir / "samples/plain/elyza_tasks_100.jsonl").open()]
    assert [r["score"] for r in rows] == [judge_score("答え: " + i[:8]) for i in inputs]
