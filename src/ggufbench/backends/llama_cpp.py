"""In-process llama.cpp through llama-cpp-python's low-level API.

Why not ``Llama.__call__``: it asks for logits at every position, sorts the
whole vocabulary in Python for each echoed token, and reuses the KV cache of
whatever prompt came before, so an answer would depend on the previous request.
Here every answer is a pure function of (model file, request, settings):

* Loglikelihood: requests are grouped by their context tokens. For a group the
  cache is cleared, the context is decoded in fixed chunks of ``n_batch`` tokens
  from position 0 with logits only at its last token, then each continuation is
  decoded on top (logits only at the positions it scores) and removed again.
  The chunking depends only on the context's length, never on which other
  requests are in the group or in the run.
* Generation: greedy argmax (or seeded sampling), prompt decoded the same way,
  then one token at a time.
"""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ggufbench.backends._base import (
    BackendInfo,
    GenRequest,
    GenResult,
    LoglikRequest,
    LoglikResult,
)
from ggufbench.errors import BackendError, BackendTimeout, ModelFileError

Tokens = tuple[int, ...]


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    top = x.max()
    return x - (top + np.log(np.exp(x - top).sum()))


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

        self._lib = llama_cpp
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(path),
                n_ctx=n_ctx,
                n_batch=n_batch,
                n_ubatch=n_batch,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_gpu_layers=n_gpu_layers,
                logits_all=False,
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"llama.cpp could not load {path}: {exc}") from exc
        self.path = path
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        model = self.llm._model
        self._ctx = self.llm._ctx.ctx
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._vocab = llama_cpp.llama_model_get_vocab(model.model)
        self.n_vocab = model.n_vocab()
        self.add_bos = bool(model.add_bos_token())
        bos, eos = model.token_bos(), model.token_eos()
        self.prefix_token = bos if bos >= 0 else eos
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        meta = self.llm.metadata
        self.chat_template = chat_template or meta.get("tokenizer.chat_template")
        self._bos_text = model.token_get_text(bos) if bos >= 0 else ""
        self._eos_text = model.token_get_text(eos) if eos >= 0 else ""
        template_id = hashlib.sha256((self.chat_template or "").encode()).hexdigest()[:16]
        self.info = BackendInfo(
            runner="llama-cpp",
            identity=identity or str(path),
            settings={
                "n_ctx": n_ctx,
                "n_batch": n_batch,
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

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
        self.llm.close()

    # -- tokens ----------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        bos = self.add_bos if add_bos is None else add_bos
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True))

    def _encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """Tokenize as lm-eval's HF model does: whole string, then split."""
        n_spaces = len(context) - len(context.rstrip())
        if n_spaces > 0:
            continuation = context[-n_spaces:] + continuation
            context = context[:-n_spaces]
        if context == "":
            return [self.prefix_token], self.tokenize(continuation, add_bos=False)
        whole = self.tokenize(context + continuation)
        ctx = self.tokenize(context)
        return ctx, whole[len(ctx) :]

    # -- decoding --------------------------------------------------------
    def _decode(self, tokens: Sequence[int], start: int, want: Sequence[bool]) -> list[np.ndarray]:
        """Decode tokens at positions start.. in fixed n_batch chunks; return wanted logits."""
        out: list[np.ndarray] = []
        batch = self._batch
        for lo in range(0, len(tokens), self.n_batch):
            chunk = tokens[lo : lo + self.n_batch]
            batch.n_tokens = len(chunk)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = start + lo + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = want[lo + i]
            rc = self._lib.llama_decode(self._ctx, batch)
            if rc != 0:
                raise BackendError(f"llama_decode failed with code {rc} on {self.path.name}")
            for i in range(len(chunk)):
                if want[lo + i]:
                    ptr = self._lib.llama_get_logits_ith(self._ctx, i)
                    out.append(np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy())
        return out

    def _clear(self) -> None:
        self._lib.llama_memory_clear(self._mem, True)

    def _trim(self, length: int) -> None:
        self._lib.llama_memory_seq_rm(self._mem, 0, length, -1)

    def score_tokens(self, context: Tokens, continuations: Sequence[Tokens]) -> list[LoglikResult]:
        """log P(cont | context) for each continuation, context decoded once."""
        self._clear()
        want = [False] * len(context)
        want[-1] = True
        (first,) = self._decode(context, 0, want)
        first_lp = _log_softmax(first)
        results = []
        for cont in continuations:
            rows = [first_lp]
            if len(cont) > 1:
                logits = self._decode(cont[:-1], len(context), [True] * (len(cont) - 1))
                rows += [_log_softmax(x) for x in logits]
                self._trim(len(context))
            total, greedy = 0.0, True
            for lp, tok in zip(rows, cont, strict=True):
                total += float(lp[tok])
                greedy = greedy and int(lp.argmax()) == tok
            results.append(LoglikResult(total, greedy, len(cont)))
        return results

    def _truncate(self, ctx: list[int], cont: list[int]) -> tuple[Tokens, Tokens]:
        """Keep the last n_ctx + 1 tokens of context + continuation, like lm-eval."""
        whole = (ctx + cont)[-(self.n_ctx + 1) :]
        if len(cont) >= len(whole):
            raise BackendError(
                f"a continuation of {len(cont)} tokens does not fit n_ctx={self.n_ctx}"
            )
        return tuple(whole[: len(whole) - len(cont)]), tuple(cont)

    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        pairs = [self._truncate(*self._encode_pair(r.context, r.continuation)) for r in requests]
        groups: dict[Tokens, list[int]] = {}
        for i, (ctx, _) in enumerate(pairs):
            groups.setdefault(ctx, []).append(i)
        results: list[LoglikResult | None] = [None] * len(requests)
        for ctx, members in groups.items():
            conts = [pairs[i][1] for i in members]
            scored = self.score_tokens(ctx, [c for c in conts if c])
            it = iter(scored)
            for i, cont in zip(members, conts, strict=True):
                results[i] = next(it) if cont else LoglikResult(0.0, True, 0)
        return [r for r in results if r is not None]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        from lm_eval import utils

        totals = []
        for text in texts:
            windows = map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tokenize(text, add_bos=False),
                    prefix_token=self.prefix_token,
                    max_seq_len=self.n_ctx,
                    context_len=1,
                ),
            )
            total = 0.0
            for ctx, cont in windows:
                total += self.score_tokens(tuple(ctx), [tuple(cont)])[0].logprob
            totals.append(total)
        return totals

    # -- generation ------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not self.chat_template:
            raise BackendError(
                f"{self.path.name} has no chat template; set chat_template for this model"
            )
        formatter = Jinja2ChatFormatter(self.chat_template, self._eos_text, self._bos_text)
        msgs: Any = [{"role": role, "content": content} for role, content in messages]
        return formatter(messages=msgs).prompt

    def _prompt_tokens(self, request: GenRequest) -> list[int]:
        if request.messages:
            tokens = self.tokenize(self.apply_chat_template(request.messages), add_bos=False)
        else:
            tokens = self.tokenize(request.prompt)
        room = self.n_ctx - max(1, min(request.max_tokens, self.n_ctx // 2))
        return tokens[-room:]

    def _tokens(self, request: GenRequest) -> Iterator[int]:
        """Yield generated token ids until an end-of-generation token or the limit."""
        prompt = self._prompt_tokens(request)
        self._clear()
        want = [False] * len(prompt)
        want[-1] = True
        (logits,) = self._decode(prompt, 0, want)
        rng = np.random.default_rng(request.seed)
        pos = len(prompt)
        limit = min(request.max_tokens, self.n_ctx - pos)
        give_up = time.monotonic() + self.time_limit_s if self.time_limit_s else None
        for _ in range(limit):
            if give_up is not None and time.monotonic() > give_up:
                raise BackendTimeout(
                    f"generation on {self.path.name} took longer than {self.time_limit_s:.0f} s"
                )
            tok = self._pick(logits, request, rng)
            if self._lib.llama_vocab_is_eog(self._vocab, tok):
                return
            yield tok
            (logits,) = self._decode([tok], pos, [True])
            pos += 1

    @staticmethod
    def _pick(logits: np.ndarray, request: GenRequest, rng: np.random.Generator) -> int:
        if request.temperature <= 0:
            return int(logits.argmax())
        probs = np.exp(_log_softmax(logits / request.temperature))
        order = np.argsort(-probs, kind="stable")
        keep = order[: int(np.searchsorted(np.cumsum(probs[order]), request.top_p)) + 1]
        p = probs[keep] / probs[keep].sum()
        return int(keep[rng.choice(len(keep), p=p)])

    def _piece(self, tok: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self._lib.llama_token_to_piece(self._vocab, tok, buf, len(buf), 0, False)
        return buf.raw[: max(n, 0)]

    def stream(self, request: GenRequest) -> Iterator[str]:
        """Yield text as it is generated, stop sequences cut and never shown."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        hold = max((len(s) for s in request.stop), default=0)
        text, sent, n = "", 0, 0
        self.last_finish_reason = "stop"
        for n, tok in enumerate(self._tokens(request), start=1):  # noqa: B007
            text += decoder.decode(self._piece(tok))
            cut = min(
                (i for s in request.stop if (i := text.find(s, max(0, sent - hold))) >= 0),
                default=-1,
            )
            if cut >= 0:
                self.last_n_tokens = n
                if cut > sent:
                    yield text[sent:cut]
                return
            safe = len(text) - hold if hold else len(text)
            if safe > sent:
                yield text[sent:safe]
                sent = safe
        text += decoder.decode(b"", final=True)
        self.last_n_tokens = n
        limit = min(request.max_tokens, self.n_ctx)
        self.last_finish_reason = "length" if n >= limit else "stop"
        if len(text) > sent:
            yield text[sent:]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        results = []
        for request in requests:
            text = "".join(self.stream(request))
            results.append(
                GenResult(text, self.last_finish_reason, 0, self.last_n_tokens)  # type: ignore[arg-type]
            )
        return results
