"""An lm-eval ``LM`` over any ggufbench backend, through the cache wrapper.

lm-eval's own evaluator builds the requests, applies filters and computes the
metrics; this class only answers requests. For thinking models the generated
text was split by the one thinking parser before it reached the cache
(``backends.thinking``): lm-eval sees only the final answer, and the thinking's
hashes and lengths are kept for the samples.
"""

from __future__ import annotations

import hashlib
from typing import Any

from lm_eval.api.model import LM

from ggufbench.backends._base import GenRequest, LoglikRequest
from ggufbench.cached import CachedBackend

DEFAULT_MAX_GEN_TOKS = 256


class GgufbenchLM(LM):
    def __init__(self, cached: CachedBackend) -> None:
        super().__init__()
        self.cached = cached
        # prompt sha256 -> thinking record (hashes and lengths only), for samples
        self.thinking_records: dict[str, dict[str, Any]] = {}

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        reqs = [LoglikRequest(*instance.args) for instance in requests]
        return [(r.logprob, r.is_greedy) for r in self.cached.loglikelihood(reqs)]

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        return self.cached.loglikelihood_rolling([instance.args[0] for instance in requests])

    def generate_until(self, requests: list[Any]) -> list[str]:
        reqs = [self._gen_request(*instance.args) for instance in requests]
        results = self.cached.generate(reqs)
        for req, result in zip(reqs, results, strict=True):
            if result.thinking is not None:
                key = hashlib.sha256(req.prompt.encode("utf-8")).hexdigest()
                self.thinking_records[key] = result.thinking
        return [r.text for r in results]

    @staticmethod
    def _gen_request(context: str, gen_kwargs: dict[str, Any]) -> GenRequest:
        kwargs = dict(gen_kwargs or {})
        until = kwargs.pop("until", None) or ()
        if isinstance(until, str):
            until = (until,)
        max_tokens = int(kwargs.pop("max_gen_toks", DEFAULT_MAX_GEN_TOKS))
        sample = bool(kwargs.get("do_sample")) and float(kwargs.get("temperature", 0) or 0) > 0
        temperature = float(kwargs.get("temperature", 0) or 0) if sample else 0.0
        return GenRequest(
            prompt=context,
            max_tokens=max_tokens,
            stop=tuple(s for s in until if s),
            temperature=temperature,
            top_p=float(kwargs.get("top_p", 1.0) or 1.0),
        )

    def apply_chat_template(
        self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The prompt ends where the model starts: after the template's generation
        prompt, or, with a task's ``gen_prefix`` (lm-eval then passes
        ``add_generation_prompt=False``), right after that prefix."""
        messages = [(m["role"], m["content"]) for m in chat_history]
        return self.cached.backend.apply_chat_template(messages, add_generation_prompt)

    @property
    def tokenizer_name(self) -> str:
        return f"ggufbench-{self.cached.backend.info.identity}"

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.cached.backend, "chat_template", None) or ""
