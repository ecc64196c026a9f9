"""Batched greedy (or seeded) generation, one KV stream per prompt.

Prompts are decoded in canonical segments (:mod:`._segments`), each in its own
KV stream, so the prompt's numbers never depend on other prompts. A prompt that
shares a segment-aligned prefix with the prompt before it in token order gets
that prefix's KV state copied in instead of decoded again: the copy holds the
same bytes the decode would write (a few-shot prefix is decoded once for all
the questions that follow it).

Then each step decodes one token for every active prompt in one micro-batch.
A row's numbers can depend on how many rows share its micro-batch; the width
is capped at what :func:`._probe.invariant_width` measured to give every row
the numbers it gets alone, so a generation is the same text whatever else ran
beside it. A finished prompt's stream takes the next prompt at once.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ggufbench.engine._runtime import CELL_QUANTUM, Runtime
from ggufbench.engine._segments import segment_ends, segments
from ggufbench.engine._text import TextTail
from ggufbench.errors import BackendTimeout
from ggufbench.thinking import ThinkingFormat

__all__ = ["GenDone", "GenJob", "generate"]

Tokens = tuple[int, ...]
PREFIXES_KEPT = 4


@dataclass(frozen=True)
class GenJob:
    prompt: Tokens
    max_new: int
    stops: tuple[str, ...] = ()
    thinking: ThinkingFormat | None = None  # stops then count only in the answer (TextTail)
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0


@dataclass(frozen=True)
class GenDone:
    text: str
    finish_reason: str  # "stop" | "length"
    n_prompt: int
    n_new: int


@dataclass
class _Active:
    index: int
    job: GenJob
    limit: int
    started: float
    tail: TextTail
    rng: np.random.Generator
    pos: int = 0
    next_token: int = -1
    n_new: int = 0
    ended: bool = False  # the model produced an end-of-generation token
    pieces: list[str] = field(default_factory=list)


class _Prefixes:
    """Saved KV states of shared prompt prefixes, the most recent few."""

    def __init__(self, kept: int = PREFIXES_KEPT) -> None:
        self.kept = kept
        self.states: OrderedDict[Tokens, bytes] = OrderedDict()

    def get(self, key: Tokens) -> bytes | None:
        state = self.states.get(key)
        if state is not None:
            self.states.move_to_end(key)
        return state

    def put(self, key: Tokens, state: bytes) -> None:
        self.states[key] = state
        self.states.move_to_end(key)
        while len(self.states) > self.kept:
            self.states.popitem(last=False)


def _share_points(
    order: Sequence[int], prompts: Sequence[Tokens], ends: Sequence[list[int]]
) -> dict[int, int]:
    """For each prompt, the longest segment end it shares with a neighbour in order."""
    points: dict[int, int] = {}
    for a, b in zip(order, order[1:], strict=False):
        pa, pb = prompts[a], prompts[b]
        common = 0
        for x, y in zip(pa, pb, strict=False):
            if x != y:
                break
            common += 1
        shared = set(ends[a]) & set(ends[b])
        at = max((e for e in shared if e <= common and e < len(pa) and e < len(pb)), default=0)
        points[a] = max(points.get(a, 0), at)
        points[b] = max(points.get(b, 0), at)
    return points


def _pick(logits: np.ndarray, active: _Active) -> int:
    job = active.job
    if job.temperature <= 0:
        return int(logits.argmax())
    x = logits.astype(np.float64) / job.temperature
    probs = np.exp(x - x.max())
    probs /= probs.sum()
    order = np.argsort(-probs, kind="stable")
    keep = order[: int(np.searchsorted(np.cumsum(probs[order]), job.top_p)) + 1]
    p = probs[keep] / probs[keep].sum()
    return int(keep[active.rng.choice(len(keep), p=p)])


def generate(
    rt: Runtime,
    jobs: Sequence[GenJob],
    *,
    width: int,
    shape: Callable[[int], tuple[int, bool]],
    time_limit_s: float | None = None,
) -> Iterator[tuple[int, str | GenDone]]:
    """Yield (job index, shown text) as text is decided and (job index, GenDone) at the end."""
    if not jobs:
        return
    prompts = [j.prompt for j in jobs]
    need = max(len(j.prompt) + max(1, j.max_new) for j in jobs)
    cells = min(rt.n_ctx, -(-need // CELL_QUANTUM) * CELL_QUANTUM)
    streams = max(1, min(width, len(jobs), rt.n_ctx // cells))
    rt.use(streams, cells)
    ends = [segment_ends(p, grid=rt.n_batch, shape=shape) for p in prompts]
    order = sorted(range(len(jobs)), key=lambda i: prompts[i])
    share = _share_points(order, prompts, ends)
    prefixes = _Prefixes()
    queue = deque(order)
    active: dict[int, _Active] = {}
    while queue or active:
        for stream in range(streams):
            while stream not in active and queue:
                index = queue.popleft()
                job = jobs[index]
                limit = min(job.max_new, cells - len(job.prompt))
                tail = TextTail(job.stops, job.thinking)
                state = _Active(index, job, limit, time.monotonic(), tail, _rng(job))
                if limit <= 0:
                    yield index, GenDone("", "length", len(job.prompt), 0)
                    continue
                first = _prefill(rt, stream, job.prompt, ends[index], share.get(index, 0), prefixes)
                state.pos = len(job.prompt)
                yield from _advance(rt, state, _pick(first, state))
                if _finished(state):
                    yield from _finish(state)
                else:
                    active[stream] = state
        if not active:
            continue
        _check_time(rt, list(active.values()), time_limit_s)
        rows = sorted(active)
        logits = rt.decode(
            [active[s].next_token for s in rows],
            [active[s].pos for s in rows],
            rows,
            range(len(rows)),
        )
        picks = [_pick(logits[r], active[s]) for r, s in enumerate(rows)]
        for stream, token in zip(rows, picks, strict=True):
            state = active[stream]
            state.pos += 1
            yield from _advance(rt, state, token)
            if _finished(state):
                del active[stream]
                rt.trim(stream, 0)
                yield from _finish(state)
        if not queue:
            _compact(rt, active)


def _compact(rt: Runtime, active: dict[int, _Active]) -> None:
    """Keep the active streams numbered 0..n-1 once no prompt is waiting.

    llama.cpp splits a micro-batch of several KV streams wherever the stream ids
    are not consecutive, so a step over streams 0, 2 and 5 would run as three
    decodes. Moving a stream's KV state is a copy of its bytes and changes no
    number.
    """
    while active:
        hole = next(s for s in range(len(active) + 1) if s not in active)
        last = max(active)
        if last < hole:
            return
        rt.move(last, hole)
        active[hole] = active.pop(last)


def _rng(job: GenJob) -> np.random.Generator:
    return np.random.default_rng(job.seed)


def _prefill(
    rt: Runtime, stream: int, prompt: Tokens, ends: list[int], share_at: int, prefixes: _Prefixes
) -> np.ndarray:
    """Decode a prompt into an empty stream; return the logits after its last token."""
    rt.trim(stream, 0)
    start = 0
    for end in reversed(ends[:-1]):
        saved = prefixes.get(prompt[:end])
        if saved is not None:
            rt.load(stream, saved)
            start = end
            break
    last = np.empty(0, dtype=np.float32)
    for lo, hi in segments(ends):
        if hi <= start:
            continue
        outputs = [hi - 1 - lo] if hi == len(prompt) else []
        logits = rt.decode(prompt[lo:hi], range(lo, hi), [stream] * (hi - lo), outputs)
        if outputs:
            last = logits[0].copy()
        if hi == share_at and prefixes.get(prompt[:hi]) is None:
            prefixes.put(prompt[:hi], rt.save(stream))
    return last


def _advance(rt: Runtime, state: _Active, token: int) -> Iterator[tuple[int, str]]:
    """Take one generated token: end, or show its text and queue it for decoding."""
    if rt.is_end(token):
        state.ended = True
        return
    state.n_new += 1
    shown = state.tail.feed(rt.piece(token))
    if shown:
        state.pieces.append(shown)
        yield state.index, shown
    state.next_token = token


def _finished(state: _Active) -> bool:
    return state.ended or state.tail.stopped or state.n_new >= state.limit


def _finish(state: _Active) -> Iterator[tuple[int, str | GenDone]]:
    rest = state.tail.finish()
    if rest:
        state.pieces.append(rest)
        yield state.index, rest
    by_length = not state.ended and not state.tail.stopped
    yield (
        state.index,
        GenDone(
            "".join(state.pieces),
            "length" if by_length else "stop",
            len(state.job.prompt),
            state.n_new,
        ),
    )


def _check_time(rt: Runtime, states: Sequence[_Active], limit: float | None) -> None:
    if not limit:
        return
    now = time.monotonic()
    for state in states:
        if now - state.started > limit:
            raise BackendTimeout(f"generation on {rt.path.name} took longer than {limit:.0f} s")
