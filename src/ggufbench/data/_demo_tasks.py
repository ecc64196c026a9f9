"""The bundled demo lm-eval tasks: where they live and how their data loads.

Each task folder under ``tasks/`` keeps its documents in ``data/<split>.jsonl``
and names a loader in its YAML (``custom_dataset: !function <module>.load``).
lm-eval resolves that module next to the YAML file, so the loader finds the
data wherever the package is installed, whatever the working directory, and
without network access or the Hugging Face cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ggufbench.errors import TaskError

if TYPE_CHECKING:
    import datasets

DEMO_TASKS: tuple[str, ...] = (
    "demo_hellaswag",
    "demo_mmlu",
    "demo_gsm8k_cot",
    "demo_wikitext",
)
"""The demo task and group names, in the order the demo runs them."""

DEMO_GROUP = "ggufbench_demo"
"""A group that holds every task in ``DEMO_TASKS``."""


def demo_tasks_path() -> Path:
    """The folder of the bundled demo tasks, to pass to lm-eval as ``include_path``."""
    return Path(__file__).resolve().parent / "tasks"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSON Lines file, one per non-blank line."""
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TaskError(
                    f"{path}, line {number}, is not valid JSON ({exc.msg}); "
                    "fix or remove that line."
                ) from exc
            if not isinstance(row, dict):
                raise TaskError(
                    f"{path}, line {number}, is not a JSON object; each line must be one document."
                )
            rows.append(row)
    return rows


def load_jsonl_splits(folder: Path) -> datasets.DatasetDict:
    """Every ``<split>.jsonl`` file in ``folder`` as a split named after the file."""
    import datasets

    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise TaskError(
            f"No .jsonl data files in {folder}; reinstall ggufbench to restore the demo data."
        )
    return datasets.DatasetDict(
        {path.stem: datasets.Dataset.from_list(read_jsonl(path)) for path in files}
    )
