"""The judge prompt, its grammar and the parsing of its answer."""

from __future__ import annotations

import pytest

from ggufbench.benchmarks.elyza_data import ElyzaTask
from ggufbench.benchmarks.elyza_judge import (
    PROMPT_VERSION,
    SCORE_GRAMMAR,
    judge_prompt,
    judge_request,
    parse_score,
)

TASK = ElyzaTask(3, "1+1は？", "2です。", "- 2と答えていれば5点")


def test_prompt_sections_in_order() -> None:
    prompt = judge_prompt(TASK, "  答えは2です。 ")
    headings = ["# 問題", "# 正解例", "# 採点基準", "問題固有の採点基準", "# 回答"]
    positions = [prompt.index(h) for h in headings]
    assert positions == sorted(positions)
    for rubric in (
        "1点: 誤っている",
        "5点: 役に立つ",
        "不自然な日本語: -1点",
        "部分的に事実と異なる内容を述べている: -1点",
        "2点にする",
    ):
        assert rubric in prompt
    assert "数字のみを出力" in prompt
    assert prompt.index("1+1は？") < prompt.index("2です。") < prompt.index("2と答えていれば5点")
    assert prompt.rstrip().endswith("答えは2です。")
    assert PROMPT_VERSION


def test_judge_request_is_deterministic_and_constrained() -> None:
    first = judge_request(TASK, "2")
    assert first == judge_request(TASK, "2")
    assert first.temperature == 0.0 and first.grammar == SCORE_GRAMMAR
    assert first.messages[0][0] == "user" and first.messages[0][1] == judge_prompt(TASK, "2")
    retry = judge_request(TASK, "2", attempt=1)
    assert retry != first and retry.seed == 1 and "数字のみ" in retry.messages[0][1]


def test_grammar_allows_exactly_one_digit() -> None:
    assert SCORE_GRAMMAR == "root ::= [1-5]"


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("4", 4),
        (" 5\n", 5),
        ("３", 3),
        ("4点", 4),
        ("**2**", 2),
        ("「1」", 1),
        ("評価: 4", 4),
        ("スコア：5点です。", 5),
        ("Score: 3/5", 3),
        ("採点結果は4点です。", 4),
        ("この回答は正しく、役に立つので 5", 5),
        ("<think>基準では1点か2点か迷う</think>3", 3),
        ("[[4]]", 4),
    ],
)
def test_parse_score_accepts(text: str, score: int) -> None:
    assert parse_score(text) == score


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "0",
        "6",
        "10",
        "4.5",
        "1,2,3,4,5の5段階で採点します",
        "よくわかりません",
        "2点か3点",
        "評価: 2、スコア: 4",
        "<think>5</think>",
        "<think>4",
    ],
)
def test_parse_score_rejects(text: str) -> None:
    assert parse_score(text) is None
