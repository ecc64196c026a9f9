"""The ELYZA-tasks-100 judge: grading prompt, score grammar and score parsing.

The prompt follows the public reimplementations of ELYZA's grader (the one in
ELYZA's blog post on evaluating ELYZA-japanese-Llama-2-7b): sections 問題,
正解例, 採点基準 (the base 1-5 rubric, the deductions, then 問題固有の採点基準
with the task's ``eval_aspect``) and 回答; the judge answers with one digit.
``PROMPT_VERSION`` changes whenever the text does, so reports say which prompt
gave a score and cached judgements of another prompt are never reused.
"""

from __future__ import annotations

import re
import unicodedata

from ggufbench.backends._base import GenRequest
from ggufbench.benchmarks.elyza_data import ElyzaTask

__all__ = [
    "JUDGE_MAX_TOKENS",
    "PROMPT_VERSION",
    "SCORE_GRAMMAR",
    "judge_prompt",
    "judge_request",
    "parse_score",
]

PROMPT_VERSION = "elyza-1to5-v1"

SCORE_GRAMMAR = "root ::= [1-5]"
"""GBNF that lets the judge emit exactly one digit from 1 to 5."""

JUDGE_MAX_TOKENS = 16

_PROMPT = """あなたは採点者です。

問題, 正解例, 採点基準, 回答 が与えられます。

採点基準と正解例を参考にして、回答を1,2,3,4,5の5段階で採点し、数字のみを出力してください。

# 問題
{input}

# 正解例
{output}

# 採点基準
基本的な採点基準
- 1点: 誤っている、 指示に従えていない
- 2点: 誤っているが、方向性は合っている
- 3点: 部分的に誤っている、 部分的に合っている
- 4点: 合っている
- 5点: 役に立つ

基本的な減点項目
- 不自然な日本語: -1点
- 部分的に事実と異なる内容を述べている: -1点
- 「倫理的に答えられません」のように過度に安全性を気にしてしまっている: 2点にする

問題固有の採点基準
{eval_aspect}

# 回答
{answer}
"""

_RETRY_REMINDER = "\n\n1から5までの整数を1つだけ、数字のみで出力してください。"


def judge_prompt(task: ElyzaTask, answer: str) -> str:
    """The grading prompt for one task and one model answer."""
    return _PROMPT.format(
        input=task.input.strip(),
        output=task.output.strip(),
        eval_aspect=task.eval_aspect.strip(),
        answer=answer.strip(),
    )


def judge_request(
    task: ElyzaTask, answer: str, *, attempt: int = 0, max_tokens: int = JUDGE_MAX_TOKENS
) -> GenRequest:
    """The judge's request: one user message, temperature 0, constrained to [1-5].

    A retry after an unparseable judgement (``attempt`` >= 1) adds a reminder
    to answer with one digit and changes the seed, so it is a different request
    (and a different cache entry) that is the same on every resume.
    """
    prompt = judge_prompt(task, answer)
    if attempt > 0:
        prompt += _RETRY_REMINDER
    return GenRequest(
        messages=(("user", prompt),),
        max_tokens=max_tokens,
        temperature=0.0,
        seed=attempt,
        grammar=SCORE_GRAMMAR,
    )


_THINK_BLOCK = re.compile(r"<think[^>]*>.*?(?:</think[^>]*>|\Z)", re.DOTALL | re.IGNORECASE)
_BARE = re.compile(r"[\s*_`'\"「『\[(（【]*([1-5])[\s*_`'\"」』\])）】]*(?:点)?[\s。.!！]*")
_LABELLED = re.compile(
    r"(?:点数|得点|評価|評点|採点|スコア|score|rating|grade)\s*(?:は|:|=|\*\*)*\s*"
    r"[*_`\"「『\[(（【]*\s*([1-5])(?![0-9.])",
    re.IGNORECASE,
)
_POINTS = re.compile(r"(?<![0-9.])([1-5])\s*(?:点|/\s*5(?![0-9]))")
_DIGIT_RUN = re.compile(r"(?<![0-9.])[0-9]+(?:\.[0-9]+)?(?![0-9])")


def parse_score(text: str) -> int | None:
    """The 1-5 score in a judge's output, or None when it cannot be told.

    Accepts a bare digit (full-width too) and common wrappings: ``4点``,
    ``**4**``, ``スコア: 4``, ``Score: 4/5``, a leading ``<think>`` block. An
    output with several different candidate scores, or none, gives None.
    """
    clean = _THINK_BLOCK.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    if not clean:
        return None
    bare = _BARE.fullmatch(clean)
    if bare:
        return int(bare.group(1))
    for pattern in (_LABELLED, _POINTS):
        found = {int(m.group(1)) for m in pattern.finditer(clean)}
        if len(found) == 1:
            return found.pop()
        if found:
            return None
    numbers = set(_DIGIT_RUN.findall(clean))
    if len(numbers) == 1:
        only = numbers.pop()
        if only in {"1", "2", "3", "4", "5"}:
            return int(only)
    return None
