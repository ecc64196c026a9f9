"""Data loading for the ``demo_mmlu_*`` tasks: one folder of splits per subject."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import datasets

from ggufbench.data import load_jsonl_splits


def load(subject: str, **_task_metadata: Any) -> datasets.DatasetDict:
    """The ``dev`` and ``test`` splits of ``subject`` (set in the task's ``dataset_kwargs``)."""
    return load_jsonl_splits(Path(__file__).resolve().parent / "data" / subject)
