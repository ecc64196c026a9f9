"""Data bundled with ggufbench: the demo lm-eval tasks and their datasets.

The tasks are small datasets written for ggufbench in the schemas and prompt
formats of hellaswag, mmlu, gsm8k (chain of thought) and wikitext; see
``docs/demo-tasks.md``. Pass ``demo_tasks_path()`` to lm-eval as ``include_path``.
"""

from ggufbench.data._demo_tasks import (
    DEMO_GROUP,
    DEMO_TASKS,
    demo_tasks_path,
    load_jsonl_splits,
    read_jsonl,
)

__all__ = [
    "DEMO_GROUP",
    "DEMO_TASKS",
    "demo_tasks_path",
    "load_jsonl_splits",
    "read_jsonl",
]
