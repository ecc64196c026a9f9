"""The wrapper every backend is called through: cache, progress and deadlines.

Backends only compute. This wrapper looks each request up in the run's ledger
first, sends only what is missing to the backend, one group at a time, and
commits answers as they complete (buffered for at most ``FLUSH_S`` seconds).
Before each group it publishes a deadline; the orchestrator kills a worker
that passes it, and the retry serves everything finished from the cache.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ggufbench.backends._base import Backend, GenRequest, GenResult, LoglikRequest, LoglikResult
from ggufbench.cache_key import cache_key
from ggufbench.ledger import Ledger

FLUSH_S = 1.0
DEADLINE_FLOOR_S = 120.0
DEADLINE_FACTOR = 10.0


@dataclass
class Counts:
    total: int = 0
    computed: int = 0
    from_cache: int = 0
    gen_tokens: int = 0
    compute_s: float = 0.0


@dataclass
class Timing:
    """Measured speed, for deadlines that follow the model, not a fixed number."""

    fixed_s: float | None = None  # request_timeout_s from the suite, per request
    rates: dict[str, float] = field(default_factory=dict)  # units per second by kind

    def deadline(self, kind: str, units: float, n_requests: int) -> float:
        if self.fixed_s is not None:
            return time.time() + self.fixed_s * max(1, n_requests)
        rate = self.rates.get(kind)
        expected = units / rate if rate else 0.0
        return time.time() + max(DEADLINE_FLOOR_S, DEADLINE_FACTOR * expected)

    def observe(self, kind: str, units: float, seconds: float) -> None:
        if units > 0 and seconds > 0:
            old = self.rates.get(kind)
            new = units / seconds
            self.rates[kind] = new if old is None else min(old, new) * 0.5 + new * 0.5


class CachedBackend:
    def __init__(
        self,
        backend: Backend,
        ledger: Ledger,
        owner: str,
        job_id: str,
        timing: Timing | None = None,
    ) -> None:
        self.backend = backend
        self.ledger = ledger
        self.owner = owner
        self.job_id = job_id
        self.timing = timing or Timing()
        self.counts = Counts()
        self._pending: list[tuple[str, str, str, Any, Any]] = []
        self._last_flush = time.monotonic()
        self._done = 0
        self._total = 0

    # -- public kinds ----------------------------------------------------
    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        payloads = [{"context": r.context, "continuation": r.continuation} for r in requests]
        answers = self._run(
            "loglikelihood",
            payloads,
            group=lambda p: p["context"],
            units=lambda p: len(p["context"]) + len(p["continuation"]),
            compute=lambda ps: [
                asdict(r) for r in self.backend.loglikelihood([LoglikRequest(**p) for p in ps])
            ],
        )
        return [LoglikResult(**a) for a in answers]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        answers = self._run(
            "loglikelihood_rolling",
            [{"text": t} for t in texts],
            group=lambda p: p["text"],
            units=lambda p: len(p["text"]),
            compute=lambda ps: [
                {"logprob": x} for x in self.backend.loglikelihood_rolling([p["text"] for p in ps])
            ],
        )
        return [float(a["logprob"]) for a in answers]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        payloads = [asdict(r) for r in requests]

        def compute(ps: list[dict[str, Any]]) -> list[dict[str, Any]]:
            reqs = [GenRequest(**_tupled(p)) for p in ps]
            out = [asdict(r) for r in self.backend.generate(reqs)]
            self.counts.gen_tokens += sum(r["n_tokens"] for r in out)
            return out

        answers = self._run(
            "generate",
            payloads,
            group=lambda p: id(p),
            units=lambda p: p["max_tokens"],
            compute=compute,
        )
        return [GenResult(**a) for a in answers]

    def flush(self) -> None:
        if self._pending:
            self.ledger.cache_put(self.owner, self._pending)
            self._pending = []
        self._last_flush = time.monotonic()

    # -- the loop --------------------------------------------------------
    def _run(
        self,
        kind: str,
        payloads: list[dict[str, Any]],
        group: Callable[[dict[str, Any]], Any],
        units: Callable[[dict[str, Any]], float],
        compute: Callable[[list[dict[str, Any]]], list[dict[str, Any]]],
    ) -> list[Any]:
        info = self.backend.info
        keys = [cache_key(info, kind, p) for p in payloads]
        answers: dict[str, Any] = self.ledger.cache_get(list(dict.fromkeys(keys)))
        self.counts.total += len(keys)
        self.counts.from_cache += sum(1 for k in keys if k in answers)
        self._total += len(keys)
        self._done += sum(1 for k in keys if k in answers)
        multiplicity = Counter(keys)
        todo: dict[Any, dict[str, dict[str, Any]]] = {}
        seen: set[str] = set()
        for key, payload in zip(keys, payloads, strict=True):
            if key not in answers and key not in seen:
                seen.add(key)
                todo.setdefault(group(payload), {})[key] = payload
        self._report(None)
        for members in todo.values():
            work = sum(units(p) for p in members.values())
            self._report(self.timing.deadline(kind, work, len(members)))
            start = time.monotonic()
            out = compute(list(members.values()))
            seconds = time.monotonic() - start
            self.counts.compute_s += seconds
            self.timing.observe(kind, work, seconds)
            for (key, payload), answer in zip(members.items(), out, strict=True):
                answers[key] = answer
                self._pending.append((key, kind, info.identity, payload, answer))
            n_new = sum(multiplicity[k] for k in members)
            self.counts.computed += n_new
            self._done += n_new
            if time.monotonic() - self._last_flush >= FLUSH_S:
                self.flush()
        self.flush()
        self._report(None)
        return [answers[k] for k in keys]

    def _report(self, deadline: float | None) -> None:
        self.ledger.progress(self.owner, self.job_id, self._done, self._total, deadline)


def _tupled(payload: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; GenRequest is frozen and hashable."""
    out = dict(payload)
    out["stop"] = tuple(out.get("stop") or ())
    out["messages"] = tuple(tuple(m) for m in out.get("messages") or ())
    return out
