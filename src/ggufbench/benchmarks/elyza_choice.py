"""An in-process judge held to the scores 1-5 by choosing among them.

The in-process backend decodes without a grammar sampler. A judge request
carrying the score grammar (``root ::= [1-5]``) is answered here by scoring the
five digits as continuations of the chat-templated prompt, in one pass over the
prompt, and taking the most likely one. For digits that are single tokens (as in
the tokenizers of common models) that is exactly what greedy decoding under the
grammar would give; in every case the answer is one digit from 1 to 5, so it
always parses. Other requests go to the model unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
)
from ggufbench.benchmarks.elyza_judge import SCORE_GRAMMAR
from ggufbench.errors import BackendError

if TYPE_CHECKING:
    from ggufbench.backends.llama_cpp import LlamaCppBackend

__all__ = ["CHOICES", "CONSTRAINT", "ChoiceJudge"]

CHOICES = ("1", "2", "3", "4", "5")
CONSTRAINT = "choice of 1-5 by log-probability"


class ChoiceJudge:
    """Wraps an in-process model so judge requests are answered with a score 1-5."""

    def __init__(self, inner: LlamaCppBackend) -> None:
        self.inner = inner
        settings = {**inner.info.settings, "judge_constraint": "choice-1to5"}
        self.info = BackendInfo(inner.info.runner, inner.info.identity, settings)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results = []
        for request in requests:
            if request.grammar == SCORE_GRAMMAR and request.messages:
                results.append(self._choose(request))
            else:
                results.extend(self.inner.generate([request]))
        return results

    def _choose(self, request: GenRequest) -> GenResult:
        text = self.inner.apply_chat_template(request.messages)
        prompt = self.inner.tokenize(text, add_bos=False)
        if len(prompt) + 2 > self.inner.n_ctx:
            raise BackendError(
                f"the judge prompt has {len(prompt)} tokens, more than the judge's n_ctx "
                f"{self.inner.n_ctx}; raise n_ctx in the judge's settings"
            )
        continuations = []
        for choice in CHOICES:
            whole = self.inner.tokenize(text + choice, add_bos=False)
            if whole[: len(prompt)] == prompt and len(whole) > len(prompt):
                continuations.append(tuple(whole[len(prompt) :]))
            else:
                continuations.append(tuple(self.inner.tokenize(choice, add_bos=False)))
        scored = self.inner.score_tokens(tuple(prompt), continuations)
        best = max(range(len(CHOICES)), key=lambda k: scored[k].logprob)
        return GenResult(CHOICES[best], "stop", len(prompt), len(continuations[best]))

    def stream(self, request: GenRequest) -> Iterator[str]:
        yield from (r.text for r in self.generate([request]))

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        return self.inner.loglikelihood(requests)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        return self.inner.loglikelihood_rolling(texts)

    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str:
        return self.inner.apply_chat_template(messages)

    def close(self) -> None:
        self.inner.close()
