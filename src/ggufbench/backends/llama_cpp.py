"""In-process llama.cpp: the backend that scores and generates for a run.

Why not ``Llama.__call__``: it asks for logits at every position, sorts the
whole vocabulary in Python for each echoed token, and reuses the KV cache of
whatever prompt came before, so an answer would depend on the previous request.
Here the engine (:mod:`ggufbench.engine`, described in ``docs/engine.md``)
makes every answer a pure function of (model file, request, settings):

* Loglikelihood: requests are tokenized as lm-eval's HF model does, put in a
  prefix tree of canonical segments and scored depth first, each shared
  segment decoded once, logits read only where a token is scored.
* Generation: prompts are decoded in canonical segments, each in its own KV
  stream (shared few-shot prefixes copied, not decoded again), then stepped
  together, a token per prompt per decode, no wider than the width that was
  measured to leave every row unchanged.

The ``*_iter`` methods yield ``(index, answer)`` as answers complete, so the
cache wrapper commits them while the rest are still being computed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
)
from ggufbench.backends._chat import render_chat
from ggufbench.engine import (
    GenDone,
    GenJob,
    Runtime,
    generate,
    invariant_width,
    newline_shape,
    score,
)
from ggufbench.errors import BackendError
from ggufbench.thinking import ThinkingFormat

__all__ = ["GENERATION_WIDTH_LIMIT", "LlamaCppBackend"]

Tokens = tuple[int, ...]
GENERATION_WIDTH_LIMIT = 8
CHUNKING = "segments: n_batch grid, paragraph breaks, context end"


class LlamaCppBackend:
    """A GGUF model loaded in this process."""

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
        chat_template: str | None = None,
        identity: str | None = None,
    ) -> None:
        import llama_cpp

        self.path = Path(path)
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.rt = Runtime(
            self.path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_threads=n_threads,
            n_gpu_layers=n_gpu_layers,
        )
        rt = self.rt
        self.add_bos = rt.add_bos
        self.prefix_token = rt.bos if rt.bos >= 0 else rt.eos
        self.chat_template = chat_template or rt.metadata.get("tokenizer.chat_template")
        self._bos_text = rt.token_text(rt.bos)
        self._eos_text = rt.token_text(rt.eos)
        self._shapes: dict[int, tuple[int, bool]] = {}
        self._width: int | None = None
        template_id = hashlib.sha256((self.chat_template or "").encode()).hexdigest()[:16]
        self.info = BackendInfo(
            runner="llama-cpp",
            identity=identity or str(path),
            settings={
                "n_ctx": n_ctx,
                "n_batch": n_batch,
                "chunking": CHUNKING,
                "attention": "no flash attention, f16 KV cache",
                "add_bos": self.add_bos,
                "chat_template": template_id,
                "n_gpu_layers": n_gpu_layers,
                "llama_cpp": llama_cpp.__version__,
            },
        )
        self.last_finish_reason = "stop"
        self.last_n_tokens = 0
        # Seconds one generation may take; the caller sets it from measured speed.
        self.time_limit_s: float | None = None

    @classmethod
    def from_model(
        cls, model: Mapping[str, Any], threads: int | None = None, log_path: Path | None = None
    ) -> LlamaCppBackend:
        """The backend for a model's settings (plan.model_settings); ``sha256``, when the
        settings carry it, is the file's known identity (else it is computed)."""
        from ggufbench.gguf_file import sha256_of

        path = Path(model["path"])
        return cls(
            path,
            n_ctx=int(model["n_ctx"]),
            n_threads=model.get("threads") or threads,
            n_gpu_layers=int(model["n_gpu_layers"]),
            n_batch=int(model.get("n_batch") or 512),
            chat_template=model.get("chat_template"),
            identity=model.get("sha256") or sha256_of(path),
        )

    def close(self) -> None:
        self.rt.close()

    @property
    def generation_width(self) -> int:
        """Prompts stepped together: measured once, on first use (see engine._probe)."""
        if self._width is None:
            from ggufbench.build_info import runtime_identity
            from ggufbench.engine._widths import remembered_width
            from ggufbench.gguf_file import cache_root, sha256_of

            n_gpu_layers = self.info.settings["n_gpu_layers"]
            parts = {
                "model": sha256_of(self.path),
                "n_gpu_layers": n_gpu_layers,
                "runtime": runtime_identity(n_gpu_layers),
                "n_batch": self.n_batch,
                "limit": GENERATION_WIDTH_LIMIT,
            }
            self._width = remembered_width(
                cache_root(), parts, lambda: invariant_width(self.rt, GENERATION_WIDTH_LIMIT)
            )
        return self._width

    # -- tokens ----------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        return self.rt.tokenize(text, add_bos=self.add_bos if add_bos is None else add_bos)

    def _shape(self, token: int) -> tuple[int, bool]:
        found = self._shapes.get(token)
        if found is None:
            found = self._shapes[token] = newline_shape(self.rt.piece(token))
        return found

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokenize as lm-eval's HF model does: whole string, then split."""
        if context == "":
            return [self.prefix_token], self.tokenize(continuation, add_bos=False)
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        whole = self.tokenize(context + continuation)
        ctx = self.tokenize(context)
        return ctx, whole[len(ctx) :]

    def _truncate(self, ctx: Sequence[int], cont: Sequence[int]) -> tuple[Tokens, Tokens]:
        """Keep the last n_ctx + 1 tokens of context + continuation, like lm-eval."""
        whole = (list(ctx) + list(cont))[-(self.n_ctx + 1) :]
        if len(cont) >= len(whole):
            raise BackendError(
                f"a continuation of {len(cont)} tokens does not fit n_ctx={self.n_ctx}"
            )
        return tuple(whole[: len(whole) - len(cont)]), tuple(cont)

    # -- loglikelihood -----------------------------------------------------------
    def loglikelihood_iter(
        self, requests: Sequence[LoglikRequest]
    ) -> Iterator[tuple[int, LoglikResult]]:
        """Score requests; yield (index, result) as each completes."""
        pairs = [self._truncate(*self._encode_pair(r.context, r.continuation)) for r in requests]
        yield from self._score_pairs(pairs)

    def _score_pairs(
        self, pairs: Sequence[tuple[Tokens, Tokens]]
    ) -> Iterator[tuple[int, LoglikResult]]:
        """(index, result) of each (context, continuation) pair as it completes; the
        result's input tokens are the pair's (an empty continuation reads nothing)."""
        distinct: dict[tuple[Tokens, Tokens], list[int]] = {}
        for index, pair in enumerate(pairs):
            if pair[1]:
                distinct.setdefault(pair, []).append(index)
            else:
                yield index, LoglikResult(0.0, True)
        unique = list(distinct)
        for k, result in score(self.rt, unique, shape=self._shape):
            ctx, cont = unique[k]
            answer = LoglikResult(result.logprob, result.is_greedy, len(cont), len(ctx) + len(cont))
            for index in distinct[unique[k]]:
                yield index, answer

    def score_tokens(
        self, context: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[LoglikResult]:
        """log P(continuation | context) for token sequences (the context decoded once)."""
        pairs = [self._truncate(context, cont) for cont in continuations]
        out = dict(self._score_pairs(pairs))
        return [out[i] for i in range(len(pairs))]

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        out: dict[int, LoglikResult] = dict(self.loglikelihood_iter(requests))
        return [out[i] for i in range(len(requests))]

    def loglikelihood_rolling_iter(
        self, texts: Sequence[str]
    ) -> Iterator[tuple[int, LoglikResult]]:
        """Perplexity-style scores of whole texts in windows of n_ctx, like lm-eval: each
        text's log-probability summed over its windows, and the tokens they read (the
        text's, and each window's context: up to n_ctx + 1 a window)."""
        from lm_eval import utils

        pairs: list[tuple[Tokens, Tokens]] = []
        owner: list[int] = []
        for t, text in enumerate(texts):
            windows: Iterable[tuple[list[int], list[int]]] = map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tokenize(text, add_bos=False),
                    prefix_token=self.prefix_token,
                    max_seq_len=self.n_ctx,
                    context_len=1,
                ),
            )
            for ctx, cont in windows:
                pairs.append((tuple(ctx), tuple(cont)))
                owner.append(t)
        left = [0] * len(texts)
        for t in owner:
            left[t] += 1
        for t, n in enumerate(left):
            if n == 0:
                yield t, LoglikResult(0.0, True)
        parts: dict[int, dict[int, LoglikResult]] = {t: {} for t in range(len(texts))}
        for index, result in self._score_pairs(pairs):
            t = owner[index]
            parts[t][index] = result
            left[t] -= 1
            if left[t] == 0:
                done = parts.pop(t)
                yield t, _summed([done[i] for i in sorted(done)])

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        out = dict(self.loglikelihood_rolling_iter(texts))
        return [out[i].logprob for i in range(len(texts))]

    # -- generation ---------------------------------------------------------------
    def apply_chat_template(
        self, messages: Sequence[tuple[str, str]], add_generation_prompt: bool = True
    ) -> str:
        """The chat as the model's template renders it (:func:`._chat.render_chat`)."""
        return render_chat(
            self.chat_template,
            self._bos_text,
            self._eos_text,
            messages,
            add_generation_prompt,
            self.path.name,
        )

    def _job(self, request: GenRequest, thinking: ThinkingFormat | None) -> GenJob:
        if request.messages:
            tokens = self.tokenize(self.apply_chat_template(request.messages), add_bos=False)
        else:
            tokens = self.tokenize(request.prompt)
        room = self.n_ctx - max(1, min(request.max_tokens, self.n_ctx // 2))
        return GenJob(
            prompt=tuple(tokens[-room:] or [self.prefix_token]),
            max_new=min(request.max_tokens, self.n_ctx),
            stops=tuple(s for s in request.stop if s),
            thinking=thinking if thinking is not None and thinking.style != "none" else None,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
        )

    def _events(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> Iterator[tuple[int, str | GenDone]]:
        jobs = [self._job(r, thinking) for r in requests]
        width = self.generation_width if len(jobs) > 1 else 1
        yield from generate(
            self.rt, jobs, width=width, shape=self._shape, time_limit_s=self.time_limit_s
        )

    def generate_iter(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> Iterator[tuple[int, GenResult]]:
        """Generate for all requests together; yield (index, result) as each finishes.

        ``thinking``: stop strings end a generation only in its answer, and its
        text comes back whole (see ``AnswerStopBackend``).
        """
        for index, event in self._events(requests, thinking):
            if isinstance(event, GenDone):
                self.last_finish_reason = event.finish_reason
                self.last_n_tokens = event.n_new
                yield (
                    index,
                    GenResult(
                        event.text,
                        "length" if event.finish_reason == "length" else "stop",
                        event.n_prompt,
                        event.n_new,
                    ),
                )

    def generate(
        self, requests: Sequence[GenRequest], thinking: ThinkingFormat | None = None
    ) -> list[GenResult]:
        out = dict(self.generate_iter(requests, thinking))
        return [out[i] for i in range(len(requests))]

    def stream(self, request: GenRequest) -> Iterator[str]:
        """Yield text as it is generated, stop sequences cut and never shown."""
        self.last_finish_reason = "stop"
        self.last_n_tokens = 0
        for _, event in self._events([request]):
            if isinstance(event, GenDone):
                self.last_finish_reason = event.finish_reason
                self.last_n_tokens = event.n_new
            else:
                yield event


def _summed(windows: Sequence[LoglikResult]) -> LoglikResult:
    """A text's answer from its windows' (in order, so the sum is the same every time)."""
    return LoglikResult(
        sum(w.logprob for w in windows),
        all(w.is_greedy for w in windows),
        sum(w.n_tokens for w in windows),
        sum(w.n_input_tokens for w in windows),
    )
