"""Data loading and document preprocessing for ``demo_hellaswag``.

``preprocess`` and ``process_docs`` do what lm-eval's ``hellaswag/utils.py``
does, so prompts and choices render exactly as in the upstream task.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import datasets

from ggufbench.data import load_jsonl_splits


def load(**_task_metadata: Any) -> datasets.DatasetDict:
    """The ``train`` and ``validation`` splits (lm-eval passes metadata, unused here)."""
    return load_jsonl_splits(Path(__file__).resolve().parent / "data")


def preprocess(text: str) -> str:
    """Drop the WikiHow bracket markup ([header], [title], [step]) as hellaswag does."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


def process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Add ``query``, ``choices`` and ``gold`` to each document."""

    def _process_doc(doc: dict[str, Any]) -> dict[str, Any]:
        ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
        return {
            "query": preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [preprocess(ending) for ending in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process_doc)
