"""An lm-eval ``LM`` over any ggufbench backend, through the cache wrapper.

lm-eval's own evaluator builds the requests, applies filters and computes the
metrics; this class only answers requests. For thinking models the generated
text is split by the one thinking parser, lm-eval sees only the final answer,
and the thinking is kept as hashes and lengths for the samples.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lm_eval.api.model import LM

from ggufbench.backends._base import GenRequest, LoglikRequest
from ggufbench.cached import CachedBackend

DEFAULT_MAX_GEN_TOKS = 256


class GgufbenchLM(LM):
    def __init__(self, cached: CachedBackend, thinking: Any = "none") -> None:
        super().__init__()
        self.cached = cached
        self.thinking = thinking
        # prompt sha256 -> thinking record (hashes and lengths only), for samples
        self.thinking_records: dict[str, dict[str, Any]] = {}

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        reqs = [LoglikRequest(*instance.args) for instance in requests]
        return [(r.logprob, r.is_greedy) for r in self.cached.loglikelihood(reqs)]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        return self.cached.loglikelihood_rolling([instance.args[0] for instance in requests])

    def generate_until(self, requests: list[Any]) -> list[str]:
        reqs = [self._gen_request(*instance.args) for instance in requests]
        results = self.cached.generate([r for r, _ in reqs])
        return [
            self._answer(req.prompt, result.text, result.finish_reason == "length", until)
            for (req, until), result in zip(reqs, results, strict=True)
        ]

    def _gen_request(self, context: str, gen_kwargs: dict[str, Any]) -> tuple[GenRequest, tuple[str, ...]]:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or ()
        if isinstance(until, str):
            until = (until,)
        until = tuple(s for s in until if s)
        max_tokens = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0) or 0) > 0
        temperature = float(kwargs.get("temperature", 0) or 0) if sample else 0.0
        # A thinking model's stops apply to its answer, not to its thinking.
        stop = () if self.thinking != "none" else until
        req = GenRequest(prompt=context, max_tokens=max_tokens, stop=stop, temperature=temperature,
                         top_p=float(kwargs.get("top_p", 1.0) or 1.0))
        return req, until

    def _answer(self, prompt: str, text: str, truncated: bool, until: tuple[str, ...]) -> str:
        if self.thinking == "none":
            return text
        from ggufbench.thinking import parse, thinking_format

        parsed = parse(text, thinking_format(self.thinking), truncated=truncated)
        key = hashlib.sha256(prompt.encode("utf-8")).hexdigest()
        self.thinking_records[key] = {
            "thinking_sha256": parsed.thinking_sha256,
            "thinking_length": parsed.thinking_length,
            "sections": {s.name: s.sha256 for s in parsed.sections},
            "withheld_reason": parsed.withheld_reason,
        }
        answer = parsed.answer or ""
        for stop in until:
            answer = answer.split(stop)[0]
        return answer

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        messages = [(m["role"], m["content"]) for m in chat_history]
        return self.cached.backend.apply_chat_template(messages)

    @property
    def tokenizer_name(self) -> str:
        return f"ggufbench-{self.cached.backend.info.identity}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.cached.backend, "chat_template", None) or ""
