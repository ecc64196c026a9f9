"""A backend wrapper for models that think before they answer.

It sits between the raw backend and the cache, so the thinking text never
leaves the worker's memory: what is returned (and cached, and scored, and
written to samples) is the final answer, or "" when the output has none, plus
the thinking's sha256 and length from the one thinking parser. A request's
stop strings apply to the answer, not to the thinking: the backend below ends
the generation at the first stop string in the answer
(:class:`~ggufbench.backends._base.AnswerStopBackend`), and the answer cut
there is complete, even when the token limit came after it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from ggufbench.backends._base import (
    AnswerStopBackend,
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
)
from ggufbench.thinking import ThinkingFormat, parse

# Part of every cache key of a thinking model: answers cached when stop strings
# were applied after generation (to the stripped answer) are not served.
STOP_RULE = "stop strings end the generation in the answer"


class ThinkingBackend:
    def __init__(self, inner: AnswerStopBackend, fmt: ThinkingFormat) -> None:
        self.inner = inner
        self.fmt = fmt
        settings = {**inner.info.settings, "thinking": str(fmt), "stops": STOP_RULE}
        self.info = BackendInfo(inner.info.runner, inner.info.identity, settings)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        raw = self.inner.generate(requests, thinking=self.fmt)
        out = []
        for request, result in zip(requests, raw, strict=True):
            truncated = result.finish_reason == "length"
            parsed = parse(result.text, self.fmt, truncated=truncated, stops=request.stop)
            thinking = {
                "sha256": parsed.thinking_sha256,
                "length": parsed.thinking_length,
                "sections": [
                    {"name": s.name, "sha256": s.sha256, "length": s.length, "closed": s.closed}
                    for s in parsed.sections
                ],
                "withheld_reason": parsed.withheld_reason,
            }
            out.append(
                GenResult(
                    parsed.answer or "",
                    "stop" if parsed.at_stop else result.finish_reason,
                    result.n_prompt_tokens,
                    result.n_tokens,
                    thinking=thinking,
                )
            )
        return out

    def stream(self, request: GenRequest) -> Iterator[str]:
        yield from (r.text for r in self.generate([request]))

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        return self.inner.loglikelihood(requests)

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        return self.inner.loglikelihood_rolling(texts)

    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        return self.inner.apply_chat_template(messages, add_generation_prompt)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:  # chat_template, time_limit_s, ...
        return getattr(self.inner, name)
