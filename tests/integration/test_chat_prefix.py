"""Chat prompts end where the model starts: after the template's generation prompt, or
right after a task's ``gen_prefix``, on the real SmolLM2 model and lm-eval's evaluator.

The tasks are written here (YAML and data in the test's folder, nothing from the
hub); a recording pass-through in front of the real backend keeps every prompt
the backend receives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from ggufbench.backends._base import GenRequest, GenResult, LoglikRequest, LoglikResult
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.benchmarks.lm_eval import quiet_lm_eval, task_manager
from ggufbench.cached import CachedBackend
from ggufbench.ledger import JobRow, Ledger
from ggufbench.lmeval_adapter import GgufbenchLM

JOB = "smollm2/prefix"
GENERATION_PROMPT = "<|im_start|>assistant\n"  # SmolLM2's template opens the answer so

TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "{{{{question}}}}"
doc_to_target: "{target}"
{extra}
metric_list:
  - metric: {metric}
"""


class Recording:
    """The real backend, passed through, keeping the prompts it receives."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        self.inner = inner
        self.info = inner.info
        self.chat_template = inner.chat_template
        self.prompts: list[str] = []
        self.contexts: list[str] = []

    def generate_iter(self, requests: Sequence[GenRequest]) -> Iterator[tuple[int, GenResult]]:
        self.prompts += [r.prompt for r in requests]
        return self.inner.generate_iter(requests)

    def loglikelihood_iter(
        self, requests: Sequence[LoglikRequest]
    ) -> Iterator[tuple[int, LoglikResult]]:
        self.contexts += [r.context for r in requests]
        return self.inner.loglikelihood_iter(requests)

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.inner.apply_chat_template(messages, add_generation_prompt)


def write_tasks(folder: Path) -> None:
    data = folder / "questions.jsonl"
    docs = [
        {"question": "What is 2 + 2?", "answer": "4", "choices": ["4", "5"], "label": 0},
        {
            "question": "What colour is the sky?",
            "answer": "blue",
            "choices": ["red", "blue"],
            "label": 1,
        },
    ]
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    generate = 'generation_kwargs: {until: ["\\n"], max_gen_toks: 2, do_sample: false}'
    tasks = {
        "prefix_gen": (
            "generate_until",
            "{{answer}}",
            f'gen_prefix: "Answer:"\n{generate}',
            "exact_match",
        ),
        "plain_gen": ("generate_until", "{{answer}}", generate, "exact_match"),
        "prefix_choice": (
            "multiple_choice",
            "{{label}}",
            'gen_prefix: "Answer:"\ndoc_to_choice: "{{choices}}"',
            "acc",
        ),
    }
    for name, (output_type, target, extra, metric) in tasks.items():
        text = TASK.format(
            name=name, data=data, output_type=output_type, target=target, extra=extra, metric=metric
        )
        (folder / f"{name}.yaml").write_text(text)


@pytest.fixture(scope="module")
def recorded(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    folder = tmp_path_factory.mktemp("tasks")
    write_tasks(folder)
    ledger = Ledger(folder / "ledger.sqlite", create=True)
    ledger.add_jobs([JobRow(JOB, "smollm2", "prefix", "lm_eval", {})])
    backend = Recording(LlamaCppBackend(smollm2, n_ctx=1024, n_threads=2))
    cached = CachedBackend(backend, ledger, ledger.owner() or ledger.claim(), JOB)  # type: ignore[arg-type]
    from lm_eval import simple_evaluate

    quiet_lm_eval()
    names = ["prefix_gen", "plain_gen", "prefix_choice"]
    out: Any = simple_evaluate(
        model=GgufbenchLM(cached),
        tasks=names,
        task_manager=task_manager(str(folder), names),
        apply_chat_template=True,
    )
    assert set(out["results"]) == set(names)
    yield backend
    backend.inner.close()
    ledger.close()


def test_a_gen_prefix_is_where_generation_starts(recorded: Recording) -> None:
    prefixed = [p for p in recorded.prompts if "Answer:" in p]
    assert len(prefixed) == 2
    for prompt in prefixed:
        assert prompt.endswith(GENERATION_PROMPT + "Answer:")
        assert prompt.count("<|im_start|>assistant") == 1  # no second, empty turn after it


def test_without_a_gen_prefix_the_prompt_ends_with_the_generation_prompt(
    recorded: Recording,
) -> None:
    plain = [p for p in recorded.prompts if "Answer:" not in p]
    assert len(plain) == 2
    assert all(p.endswith("<|im_end|>\n" + GENERATION_PROMPT) for p in plain)


def test_choices_are_scored_after_the_gen_prefix(recorded: Recording) -> None:
    assert len(recorded.contexts) == 4
    assert all(c.endswith(GENERATION_PROMPT + "Answer:") for c in recorded.contexts)
