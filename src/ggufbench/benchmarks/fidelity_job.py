"""Benchmark ``fidelity``: the baseline's compact records, then each model against them.

A fidelity benchmark is two kinds of job (:mod:`ggufbench.plan`). The baseline's job
reads the text, cuts it into chunks as llama-perplexity does and commits each
chunk's compact record (docs/fidelity.md) as it completes, then an index: the records'
keys, the vocabulary's identity and the text's details (``fidelity.index_key``). Every
other model's job starts once the baseline's has ended, reads the index and commits each
chunk's statistics against the record, which it reads from the ledger: one forward pass
over the text per model, the baseline's shared. A job reaches the ledger only through
its answer store, which on Ray serves its own job alone, so the index is in the cache.

Both commit through the job's answer store (the run's SQLite ledger, or on Ray the
driver's relay), chunk by chunk, so a killed job resumes at the chunk it was on and
gives the same figures. Each key is the request cache key (:mod:`ggufbench.cache_key`)
of the job's own model, so a variant's key holds both model files' identities, and
each pass's llama.cpp build and device. A model whose vocabulary differs from the
baseline's is skipped, with the sentence that says why.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

from ggufbench import fidelity
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.benchmarks._job import JobContext
from ggufbench.cache_key import cache_key
from ggufbench.errors import ConfigError, GgufbenchError
from ggufbench.plan import FIDELITY, job_id

__all__ = ["HIGHER_IS_BETTER", "METRICS", "run"]

# The figures of summary.json's metrics, each {value, stderr}; the rest go to details.
METRICS = (
    "kld",
    "same_top_p",
    "ppl",
    "ppl_base",
    "ppl_ratio",
    "ln_ppl_ratio",
    "delta_p",
    "rms_delta_p",
)
HIGHER_IS_BETTER = {
    "kld": False,
    "same_top_p": True,
    "ppl": False,
    "ppl_base": False,
    "ppl_ratio": False,
    "ln_ppl_ratio": False,
    "rms_delta_p": False,
}


def run(ctx: JobContext) -> dict[str, Any]:
    """Run one model's fidelity job: the baseline's records, or a model against them."""
    backend = ctx.cached.backend
    if not isinstance(backend, LlamaCppBackend):
        raise ConfigError(
            f"{ctx.alias}'s fidelity job needs the model in its own process; run it with "
            "runner llama-cpp"
        )
    if ctx.alias == ctx.spec["baseline"]:
        return _baseline(ctx, backend)
    return _variant(ctx, backend)


class _Chunks:
    """A job's chunks: each looked up in the ledger, else computed and committed at once,
    with the job's progress and a deadline for the chunk being computed."""

    def __init__(self, ctx: JobContext, backend: LlamaCppBackend, kind: str, total: int) -> None:
        self.ctx = ctx
        self.info = backend.info
        self.kind = kind
        self.chunk_tokens = backend.n_ctx  # tokens decoded per chunk (the benchmark's n_ctx)
        self.units = float(self.chunk_tokens)
        self.total = total
        self.done = self.computed = self.from_cache = 0
        self.compute_s = 0.0
        self._progress(None)

    def answer(self, request: dict[str, Any], compute: Callable[[], bytes]) -> tuple[str, bytes]:
        """(key, bytes) of one chunk: from the ledger, or computed and committed."""
        ctx = self.ctx
        key = cache_key(self.info, self.kind, request)
        found = ctx.ledger.cache_get([key]).get(key)
        if found is not None:
            data = _decode(found)
            self.from_cache += 1
        else:
            self._progress(self._deadline())
            start = time.monotonic()
            data = compute()
            seconds = time.monotonic() - start
            ctx.cached.timing.observe(self.kind, self.units, seconds)
            self.compute_s += seconds
            row = (key, self.kind, self.info.identity, request, _encode(data))
            ctx.ledger.cache_put(ctx.owner, [row])
            self.computed += 1
        self.done += 1
        self._progress(None)
        return key, data

    def _deadline(self) -> float | None:
        """When the chunk being computed must be done: from the suite's request_timeout_s,
        else from the measured speed; none for the first chunk, whose speed is not known
        (a chunk of a large model can take minutes; job_timeout_s still holds)."""
        timing = self.ctx.cached.timing
        if timing.fixed_s is None and self.kind not in timing.rates:
            return None
        return timing.deadline(self.kind, self.units, 1)

    def _progress(self, deadline: float | None) -> None:
        self.ctx.ledger.progress(self.ctx.owner, self.ctx.job_id, self.done, self.total, deadline)

    def work(self, start: float) -> dict[str, Any]:
        """The result's time and request counts (a request is a chunk), and the tokens
        decoded for the chunks computed."""
        return {
            "wall_s": round(time.monotonic() - start, 3),
            "compute_s": round(self.compute_s, 3),
            "input_tokens": self.computed * self.chunk_tokens,
            "requests": {
                "total": self.total,
                "computed": self.computed,
                "from_cache": self.from_cache,
            },
        }


def _encode(data: bytes) -> dict[str, str]:
    return {"data": base64.b64encode(data).decode("ascii")}


def _decode(answer: dict[str, str]) -> bytes:
    return base64.b64decode(answer["data"])


def _text_path(bench: dict[str, Any]) -> Path:
    return Path(bench["text"]) if bench.get("text") else fidelity.bundled_corpus()


def _baseline(ctx: JobContext, backend: LlamaCppBackend) -> dict[str, Any]:
    """Commit every chunk's record, then their index; the result has the baseline's PPL."""
    start = time.monotonic()
    rt, bench = backend.rt, ctx.spec["benchmark"]
    path = _text_path(bench)
    text = fidelity.read_text(path)
    sha = fidelity.text_sha256(text)
    n_ctx, k, m = int(bench["n_ctx"]), int(bench["top_k"]), int(bench["tail_samples"])
    tokens = fidelity.tokenize(rt, text)
    windows = fidelity.windows(tokens, n_ctx, bench.get("chunks"), bos=fidelity.bos_of(rt))
    chunks = _Chunks(ctx, backend, fidelity.BASELINE_KIND, len(windows))
    keys: list[str] = []

    def records() -> Iterator[fidelity.BaselineRecord]:
        for w in windows:
            request = fidelity.baseline_request(
                text_sha256=sha, n_ctx=n_ctx, chunk=w.index, k=k, m=m
            )
            key, data = chunks.answer(request, partial(fidelity.baseline_chunk, rt, w, k, m))
            keys.append(key)
            yield fidelity.BaselineRecord.from_bytes(data)

    own = fidelity.baseline_figures(records())  # one record in memory at a time
    details = {
        "baseline": ctx.alias,
        "text": str(path),
        "text_sha256": sha,
        "text_tokens": len(tokens),
        "n_ctx": n_ctx,
        "top_k": k,
        "tail_samples": m,
        "n_chunks": own["n_chunks"],
        "n_tokens": own["n_tokens"],
    }
    index = {"records": keys, "vocab": fidelity.vocab_identity(rt), "details": details}
    _commit_index(ctx, backend.info.identity, index)
    _write_results(ctx, details | own)
    return {
        "metrics": {"ppl": own["ppl"]},
        "n_samples": own["n_tokens"],
        **chunks.work(start),
        "details": details,
    }


def _index_key(ctx: JobContext) -> str:
    return fidelity.index_key(job_id(ctx.spec["baseline"], FIDELITY), ctx.spec["benchmark"])


def _commit_index(ctx: JobContext, identity: str, index: dict[str, Any]) -> None:
    """Commit the index of the baseline's records (``identity``: its model's), unless this
    run's ledger holds it already."""
    key = _index_key(ctx)
    found = ctx.ledger.cache_get([key]).get(key)
    if found is None:
        row = (key, fidelity.INDEX_KIND, identity, ctx.spec["benchmark"], index)
        ctx.ledger.cache_put(ctx.owner, [row])
    elif found != index:
        raise GgufbenchError(
            f"the fidelity text {index['details']['text']} has changed since this run "
            "measured other models against it; start a fresh run (ggufbench run --fresh)"
        )


def _baseline_index(ctx: JobContext) -> dict[str, Any]:
    """The index of the baseline's records, or why this model cannot be compared."""
    key = _index_key(ctx)
    found: dict[str, Any] | None = ctx.ledger.cache_get([key]).get(key)
    if found is not None:
        return found
    raise GgufbenchError(
        f"{ctx.alias} is not compared: the baseline's fidelity job "
        f"{job_id(ctx.spec['baseline'], FIDELITY)} did not finish (the report gives its "
        "reason); fix that and resume the run"
    )


def _variant(ctx: JobContext, backend: LlamaCppBackend) -> dict[str, Any]:
    """Commit every chunk's statistics against the baseline's records; the figures."""
    start = time.monotonic()
    base = _baseline_index(ctx)
    details = dict(base["details"])
    rt = backend.rt
    base_alias = details["baseline"]
    reason = fidelity.skip_reason(ctx.alias, base_alias, fidelity.vocab_identity(rt), base["vocab"])
    if reason is not None:
        details = {"baseline": base_alias}
        return {"skipped": reason, "metrics": {}, "n_samples": 0, "details": details}
    chunks = _Chunks(ctx, backend, fidelity.VARIANT_KIND, len(base["records"]))
    stats = []
    for chunk, record_key in enumerate(base["records"]):
        request = fidelity.variant_request(
            baseline_key=record_key,
            text_sha256=details["text_sha256"],
            n_ctx=details["n_ctx"],
            chunk=chunk,
        )
        _, data = chunks.answer(request, partial(_measure, ctx, backend, record_key))
        stats.append(fidelity.ChunkStats.from_bytes(data))
    figures = fidelity.combine(stats)
    _write_results(ctx, details | figures)
    return {
        "metrics": {name: figures[name] for name in METRICS},
        "n_samples": figures["n_tokens"],
        **chunks.work(start),
        "details": details | {k: v for k, v in figures.items() if k not in METRICS},
    }


def _measure(ctx: JobContext, backend: LlamaCppBackend, record_key: str) -> bytes:
    """One chunk of this model against the baseline's record, read from the ledger."""
    found = ctx.ledger.cache_get([record_key]).get(record_key)
    if found is None:
        raise GgufbenchError(
            f"a record of the baseline's fidelity job ({ctx.spec['baseline']}) is missing "
            "from the ledger; run the baseline's fidelity job again with a fresh run"
        )
    record = _decode(found)
    return fidelity.variant_chunk(backend.rt, fidelity.window_of(record), record)


def _write_results(ctx: JobContext, figures: dict[str, Any]) -> None:
    """results/<alias>/fidelity.json: every figure, and which way each metric is better."""
    flags = {k: v for k, v in HIGHER_IS_BETTER.items() if k in figures}
    ctx.write_json(ctx.result_path(), {FIDELITY: figures, "higher_is_better": {FIDELITY: flags}})
