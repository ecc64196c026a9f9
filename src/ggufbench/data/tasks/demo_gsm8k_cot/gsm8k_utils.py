"""Data loading and chain-of-thought exemplars for ``demo_gsm8k_cot``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import datasets

from ggufbench.data import load_jsonl_splits, read_jsonl

DATA = Path(__file__).resolve().parent / "data"
_CALCULATOR_NOTE = re.compile(r"<<[^>]*>>")


def load(**_task_metadata: Any) -> datasets.DatasetDict:
    """The ``train`` and ``test`` splits (lm-eval passes metadata, unused here)."""
    return load_jsonl_splits(DATA)


def cot_target(answer: str) -> str:
    """A gsm8k answer ("steps\\n#### N") as a one-paragraph "... The answer is N." target."""
    steps, _, final = answer.rpartition("####")
    lines = (line.strip() for line in _CALCULATOR_NOTE.sub("", steps).splitlines())
    reasoning = " ".join(line for line in lines if line)
    return f"{reasoning} The answer is {final.strip()}."


def cot_fewshot_samples() -> list[dict[str, str]]:
    """The train items as ``{question, target}`` exemplars, in file order."""
    return [
        {"question": row["question"], "target": cot_target(row["answer"])}
        for row in read_jsonl(DATA / "train.jsonl")
    ]
