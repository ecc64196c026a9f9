"""A backend wrapper for models that think before they answer.

It sits between the raw backend and the cache, so the thinking text never
leaves the worker's memory: what is returned (and cached, and scored, and
written to samples) is the final answer, or "" when the output has none, plus
the thinking's sha256 and length from the one thinking parser. A model's stop
sequences apply to its answer, not to its thinking.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from ggufbench.backends._base import (
    Backend,
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
)
from ggufbench.thinking import ThinkingFormat, parse


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop)[0]
    return text


class ThinkingBackend:
    def __init__(self, inner: Backend, fmt: ThinkingFormat) -> None:
        self.inner = inner
        self.fmt = fmt
        settings = {**inner.info.settings, "thinking": str(fmt)}
        self.info = BackendInfo(inner.info.runner, inner.info.identity, settings)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        raw = self.inner.generate([replace(r, stop=()) for r in requests])
        out = []
        for request, result in zip(requests, raw, strict=True):
            parsed = parse(result.text, self.fmt, truncated=result.finish_reason == "length")
            answer = None if parsed.answer is None else cut_at_stops(parsed.answer, request.stop)
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
                    answer or "",
                    result.finish_reason,
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

    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str:
        return self.inner.apply_chat_template(messages)

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> object:  # chat_template, time_limit_s, ...
        return getattr(self.inner, name)
