"""One shard of an lm-eval task: the answers of one range of its documents.

A shard runs lm-eval's evaluator as the whole task does, so every request is
built exactly as in an unsharded run (few-shot examples drawn by a seeded
sampler depend on the documents before them, so a shard cannot build only its
own). It answers only the requests of its documents: in each (sub)task, the
``index``-th of ``count`` equal ranges of the documents in order. The others get
a stand-in answer, and lm-eval's scores of a shard are thrown away: the task's
own job scores every document once, with all answers served from the ledger.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from lm_eval.api.model import LM

from ggufbench.lmeval_adapter import GgufbenchLM


class ShardLM(LM):
    """An lm-eval model that computes only its shard's requests (through ``inner``)."""

    def __init__(self, inner: GgufbenchLM, index: int, count: int) -> None:
        super().__init__()
        self.inner = inner
        self.index = index
        self.count = count
        self.documents: set[tuple[str | None, int | None]] = set()

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        return self._answer(requests, self.inner.loglikelihood, (0.0, False))

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        return self._answer(requests, self.inner.loglikelihood_rolling, 0.0)

    def generate_until(self, requests: list[Any]) -> list[str]:
        return self._answer(requests, self.inner.generate_until, "")

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.inner.apply_chat_template(chat_history, add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        return self.inner.tokenizer_name

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return self.inner.chat_template(chat_template)

    def _answer(
        self, requests: list[Any], compute: Callable[[list[Any]], list[Any]], blank: Any
    ) -> list[Any]:
        mine = in_shard(requests, self.index, self.count)
        self.documents.update((requests[i].task_name, requests[i].doc_id) for i in mine)
        out = [blank] * len(requests)
        for i, answer in zip(mine, compute([requests[i] for i in mine]), strict=True):
            out[i] = answer
        return out


def in_shard(requests: Sequence[Any], index: int, count: int) -> list[int]:
    """The positions of the requests whose document is in shard ``index`` of ``count``: in
    each task, the documents in order, cut into ``count`` ranges as equal as can be."""
    docs: dict[Any, set[Any]] = defaultdict(set)
    for request in requests:
        docs[request.task_name].add(request.doc_id)
    chosen: dict[Any, set[Any]] = {}
    for task, ids in docs.items():
        ordered = sorted(ids)
        n = len(ordered)
        chosen[task] = set(ordered[n * index // count : n * (index + 1) // count])
    return [i for i, r in enumerate(requests) if r.doc_id in chosen[r.task_name]]
