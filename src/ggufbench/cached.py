"""The wrapper every backend is called through: cache, progress and deadlines.

Backends only compute. This wrapper looks each request up in the run's ledger
first and sends only what is missing to the backend, sorted so that requests
sharing a prefix are adjacent:

* A backend whose class offers ``<kind>_iter`` (the in-process engine) gets all
  missing requests of a call at once and yields ``(index, answer)`` as each
  completes; it shares prefixes and batches across all of them.
* Any other backend gets them in chunks: whole context groups (loglikelihood)
  worth about ``CHUNK_S`` seconds of measured work, or ``generation_width``
  prompts (generation).

Either way answers are committed as they complete: a thread of its own commits
them, many to a transaction, at most ``FLUSH_S`` seconds after each was
computed, however long the backend then takes over the rest; whatever finished
is committed when a call fails. Progress counts committed answers only, and is
published after each commit and at most every ``REPORT_S`` seconds together
with a deadline for the next answers; the orchestrator kills a worker that
passes it, and the retry serves everything finished from the cache. The iterator is looked
up on the backend's class, never forwarded through a wrapper, so a wrapper that
rewrites answers (the thinking parser) is never bypassed.

A request that met a failure another attempt may not meet (``Retryable``: HTTP 429
or 5xx, a lost connection) is tried again here, as the backend's ``retry`` policy says
(:mod:`ggufbench.retries`), with only the requests not answered yet; backends never
retry themselves.

The ledger is reached through one interface (:class:`AnswerStore`): a local worker
reads and writes the run's SQLite file itself; a worker on another machine (Ray)
reaches it through the driver, which holds the file and commits for it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any, Protocol

from ggufbench import retries
from ggufbench.backends._base import Backend, GenRequest, GenResult, LoglikRequest, LoglikResult
from ggufbench.cache_key import cache_key
from ggufbench.ledger import JobRow, Ledger

FLUSH_S = 0.5  # the longest a computed answer waits for its commit to start
REPORT_S = 1.0
CHUNK_S = 2.0
DEADLINE_FLOOR_S = 120.0
DEADLINE_FACTOR = 10.0
LOGLIK_WINDOW = 16  # loglikelihood answers the next deadline covers

Payload = dict[str, Any]
Row = tuple[str, str, str, Payload, Any]  # key, kind, model identity, request, answer


class AnswerStore(Protocol):
    """The run's ledger as a worker reaches it: the cache, the job and its progress.

    Two implementations: :class:`~ggufbench.ledger.Ledger`, the SQLite file itself (local
    workers), and the Ray executor's store, whose every call is served by the driver
    (:mod:`ggufbench.executors._relay`). Writes carry the run's owner token.
    """

    def cache_get(self, keys: Sequence[str]) -> dict[str, Any]: ...

    def cache_put(self, owner: str, rows: Sequence[Row]) -> None: ...

    def progress(
        self, owner: str, job_id: str, done: int, total: int, deadline: float | None
    ) -> None: ...

    def job(self, job_id: str) -> JobRow: ...

    def record_place(self, owner: str, job_id: str, n: int, place: dict[str, Any]) -> None: ...

    def finish_job(self, owner: str, job_id: str, result: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _for_thread(store: AnswerStore) -> tuple[AnswerStore, Callable[[], None]]:
    """``store`` as another thread may use it, and how to let it go: a SQLite connection
    belongs to the thread that opened it, so that thread opens its own."""
    if isinstance(store, Ledger):
        own = Ledger(store.path)
        return own, own.close
    return store, lambda: None


@dataclass
class Counts:
    total: int = 0
    computed: int = 0
    from_cache: int = 0
    gen_tokens: int = 0
    input_tokens: int = 0  # read for the loglikelihood requests computed (not cached)
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


@dataclass
class _Kind:
    """How one request kind is cached and computed."""

    name: str
    units: Callable[[Payload], float]  # work estimate of one request
    order: Callable[[Payload], Any]  # sort key: shared prefixes adjacent
    group: Callable[[Payload], Any]  # requests that go to a chunked backend together
    batch: Callable[[list[Payload]], list[Any]]  # chunked: payloads -> answers
    stream: Callable[[list[Payload]], Iterable[tuple[int, Any]]] | None  # all at once
    window: Callable[[int], int]  # answers the next deadline covers, of n left


def _own_method(backend: object, name: str) -> Callable[..., Any] | None:
    """``backend.name`` if the backend's class defines it (never a forwarded attribute)."""
    if getattr(type(backend), name, None) is None:
        return None
    method: Callable[..., Any] = getattr(backend, name)
    return method


class CachedBackend:
    def __init__(
        self,
        backend: Backend,
        ledger: AnswerStore,
        owner: str,
        job_id: str,
        timing: Timing | None = None,
    ) -> None:
        self.backend = backend
        self.ledger = ledger
        self.owner = owner
        self.job_id = job_id
        self.timing = timing or Timing()
        self.retry = retries.policy_of(backend)
        self.counts = Counts()
        self._commits = _Commits(ledger, owner, self._committed)
        self._lock = threading.Lock()  # progress is written from two threads
        self._last_report = 0.0
        self._deadline: float | None = None
        self._done = 0  # answers in the ledger
        self._total = 0

    # -- public kinds ----------------------------------------------------
    def loglikelihood(self, requests: Sequence[LoglikRequest]) -> list[LoglikResult]:
        payloads = [{"context": r.context, "continuation": r.continuation} for r in requests]
        stream = _own_method(self.backend, "loglikelihood_iter")

        def asked(ps: list[Payload]) -> list[LoglikRequest]:
            return [LoglikRequest(**p) for p in ps]

        kind = _Kind(
            "loglikelihood",
            units=lambda p: len(p["context"]) + len(p["continuation"]),
            order=lambda p: (p["context"], p["continuation"]),
            group=lambda p: p["context"],
            batch=lambda ps: [asdict(self._read(r)) for r in self.backend.loglikelihood(asked(ps))],
            stream=None
            if stream is None
            else lambda ps: ((i, asdict(self._read(r))) for i, r in stream(asked(ps))),
            window=lambda n: min(n, LOGLIK_WINDOW),
        )
        return [LoglikResult(**a) for a in self._run(kind, payloads)]

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        # The engine's stream yields each text's LoglikResult (its input tokens counted);
        # the cached answer stays the log-probability alone.
        stream = _own_method(self.backend, "loglikelihood_rolling_iter")
        kind = _Kind(
            "loglikelihood_rolling",
            units=lambda p: len(p["text"]),
            order=lambda p: p["text"],
            group=lambda p: p["text"],
            batch=lambda ps: [
                {"logprob": x} for x in self.backend.loglikelihood_rolling([p["text"] for p in ps])
            ],
            stream=None
            if stream is None
            else lambda ps: (
                (i, {"logprob": self._read(r).logprob}) for i, r in stream([p["text"] for p in ps])
            ),
            window=lambda n: min(n, 1),
        )
        answers = self._run(kind, [{"text": t} for t in texts])
        return [float(a["logprob"]) for a in answers]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        stream = _own_method(self.backend, "generate_iter")

        def counted(result: GenResult) -> dict[str, Any]:
            self.counts.gen_tokens += result.n_tokens
            return asdict(result)

        def batch(ps: list[Payload]) -> list[Any]:
            return [counted(r) for r in self.backend.generate([_gen(p) for p in ps])]

        def streamed(ps: list[Payload]) -> Iterator[tuple[int, Any]]:
            assert stream is not None
            return ((i, counted(r)) for i, r in stream([_gen(p) for p in ps]))

        def window(n: int) -> int:
            if n <= 1:
                return 1
            return min(n, max(1, int(getattr(self.backend, "generation_width", 1))))

        kind = _Kind(
            "generate",
            units=lambda p: p["max_tokens"],
            order=lambda p: (p["prompt"], repr(p["messages"]), repr(sorted(p.items()))),
            group=lambda p: id(p),
            batch=batch,
            stream=None if stream is None else streamed,
            window=window,
        )
        return [GenResult(**a) for a in self._run(kind, [asdict(r) for r in requests])]

    def _read(self, result: LoglikResult) -> LoglikResult:
        """Count the input tokens of a computed answer (cached ones never pass here)."""
        self.counts.input_tokens += result.n_input_tokens
        return result

    # -- the loop --------------------------------------------------------
    def _run(self, kind: _Kind, payloads: list[Payload]) -> list[Any]:
        info = self.backend.info
        keys = [cache_key(info, kind.name, p) for p in payloads]
        answers: dict[str, Any] = self.ledger.cache_get(list(dict.fromkeys(keys)))
        self.counts.total += len(keys)
        self.counts.from_cache += sum(1 for k in keys if k in answers)
        with self._lock:
            self._total += len(keys)
            self._done += sum(1 for k in keys if k in answers)
        multiplicity = Counter(keys)
        todo: dict[str, Payload] = {}
        for key, payload in zip(keys, payloads, strict=True):
            if key not in answers:
                todo.setdefault(key, payload)
        ordered = sorted(todo.items(), key=lambda item: kind.order(item[1]))
        run = _Progress(self, kind, ordered, multiplicity, answers)
        self._report(None)
        if len(ordered) > 1:  # a single answer is committed as the call ends
            self._commits.start()
        try:
            if ordered and kind.stream is not None:
                run.stream()
            elif ordered:
                run.chunks()
        finally:
            self._commits.stop(self.ledger)
            self._report(None)
        return [answers[k] for k in keys]

    def _report(self, deadline: float | None) -> None:
        with self._lock:
            self._last_report = time.monotonic()
            self._deadline = deadline
            self._write_progress(self.ledger)

    def _committed(self, ledger: AnswerStore, n: int) -> None:
        """``n`` more answers are in the ledger (called on the committing thread)."""
        with self._lock:
            self._done += n
            self._write_progress(ledger)

    def _write_progress(self, ledger: AnswerStore) -> None:
        """Under ``_lock``, so a later write never carries older figures."""
        ledger.progress(self.owner, self.job_id, self._done, self._total, self._deadline)


class _Commits:
    """Computed answers on their way into the ledger, with their multiplicity.

    While a call computes more than one answer, a thread commits them, all that
    are buffered in one transaction, once the oldest has waited ``FLUSH_S``; so
    an answer never waits for the next one or for the rest of a batch, and kill
    -9 loses at most that much. The thread has its own connection to a SQLite
    ledger (:func:`_for_thread`); every write checks the
    owner token, and an error there (``NotOwner``) reaches the caller at its next
    answer. ``stop`` ends the thread and commits what is left on the caller's
    connection.
    """

    def __init__(
        self, store: AnswerStore, owner: str, committed: Callable[[AnswerStore, int], None]
    ) -> None:
        self.store = store
        self.owner = owner
        self.committed = committed
        self._rows: list[tuple[Row, int]] = []
        self._oldest = 0.0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._error: BaseException | None = None

    def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="ledger-commits", daemon=True)
        self._thread.start()

    def add(self, row: Row, n: int) -> None:
        with self._cond:
            if self._error is not None:
                raise self._error
            if not self._rows:
                self._oldest = time.monotonic()
                self._cond.notify()
            self._rows.append((row, n))

    def stop(self, ledger: AnswerStore) -> None:
        with self._cond:
            thread, self._thread = self._thread, None
            self._stopping = True
            self._cond.notify()
        if thread is not None:
            thread.join()
        rows, self._rows, self._error = self._rows, [], None
        self._commit(ledger, rows)

    def _loop(self) -> None:
        opened: tuple[AnswerStore, Callable[[], None]] | None = None
        rows: list[tuple[Row, int]] | None = None
        try:
            while (rows := self._due()) is not None:
                opened = opened or _for_thread(self.store)
                self._commit(opened[0], rows)
        except BaseException as exc:  # the caller commits what is left, or meets the error
            with self._cond:
                self._rows[:0] = rows or []
                self._error = exc
        finally:
            if opened is not None:
                opened[1]()

    def _due(self) -> list[tuple[Row, int]] | None:
        """All buffered rows once the oldest has waited FLUSH_S; None when stopping."""
        with self._cond:
            while not self._stopping:
                wait = self._oldest + FLUSH_S - time.monotonic() if self._rows else None
                if wait is not None and wait <= 0:
                    rows, self._rows = self._rows, []
                    return rows
                self._cond.wait(wait)
            return None

    def _commit(self, ledger: AnswerStore, rows: list[tuple[Row, int]]) -> None:
        """Commit ``rows`` in one transaction, empty the list, then count them done."""
        if rows:
            ledger.cache_put(self.owner, [row for row, _ in rows])
            n = sum(n for _, n in rows)
            rows.clear()
            self.committed(ledger, n)


class _Progress:
    """One call's uncached requests on their way through the backend."""

    def __init__(
        self,
        cached: CachedBackend,
        kind: _Kind,
        ordered: list[tuple[str, Payload]],
        multiplicity: Counter[str],
        answers: dict[str, Any],
    ) -> None:
        self.cached = cached
        self.kind = kind
        self.ordered = ordered
        self.multiplicity = multiplicity
        self.answers = answers
        self.left = len(ordered)
        self.mean_units = sum(kind.units(p) for _, p in ordered) / max(1, len(ordered))
        self.units_since = 0.0
        self.since = time.monotonic()

    def stream(self) -> None:
        assert self.kind.stream is not None
        payloads = [p for _, p in self.ordered]
        self._publish()
        start = time.monotonic()
        try:
            for index, answer in retries.each(self.kind.stream, payloads, self.cached.retry):
                self._record(*self.ordered[index], answer)
        finally:
            self.cached.counts.compute_s += time.monotonic() - start

    def chunks(self) -> None:
        for chunk in self._split():
            self._publish(len(chunk))
            start = time.monotonic()
            compute = partial(self.kind.batch, [p for _, p in chunk])
            out = retries.call(compute, self.cached.retry)
            self.cached.counts.compute_s += time.monotonic() - start
            for (key, payload), answer in zip(chunk, out, strict=True):
                self._record(key, payload, answer)

    def _split(self) -> Iterator[list[tuple[str, Payload]]]:
        """Consecutive groups, about CHUNK_S of measured work each (one group at first)."""
        groups: list[list[tuple[str, Payload]]] = []
        for item in self.ordered:
            if groups and self.kind.group(groups[-1][0][1]) == self.kind.group(item[1]):
                groups[-1].append(item)
            else:
                groups.append([item])
        width = self.kind.window(len(self.ordered)) if self.kind.name == "generate" else 0
        chunk: list[tuple[str, Payload]] = []
        for members in groups:
            chunk += members
            rate = self.cached.timing.rates.get(self.kind.name)
            work = sum(self.kind.units(p) for _, p in chunk)
            full = len(chunk) >= width if width else not rate or work / rate >= CHUNK_S
            if full:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _record(self, key: str, payload: Payload, answer: Any) -> None:
        cached = self.cached
        self.answers[key] = answer
        n = self.multiplicity[key]
        cached._commits.add((key, self.kind.name, cached.backend.info.identity, payload, answer), n)
        cached.counts.computed += n
        self.left -= 1
        self.units_since += self.kind.units(payload)
        now = time.monotonic()
        if now - cached._last_report >= REPORT_S and self.left:
            cached.timing.observe(self.kind.name, self.units_since, now - self.since)
            self.units_since, self.since = 0.0, now
            self._publish()

    def _publish(self, n: int | None = None) -> None:
        """Progress, and a deadline for the next answers."""
        n = n or self.kind.window(self.left)
        deadline = self.cached.timing.deadline(self.kind.name, self.mean_units * n, n)
        self.cached._report(deadline)


def _gen(payload: Payload) -> GenRequest:
    """JSON turns tuples into lists; GenRequest is frozen and hashable."""
    out = dict(payload)
    out["stop"] = tuple(out.get("stop") or ())
    out["messages"] = tuple(tuple(m) for m in out.get("messages") or ())
    return GenRequest(**out)
