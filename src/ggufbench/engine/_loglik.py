"""Loglikelihood scoring over a prefix tree of canonical segments.

Each request is a token sequence ``context + continuation``. What is decoded is
``context + continuation[:-1]``; the logits at positions ``len(context) - 1``
onward score the continuation tokens. The sequence is cut into segments by the
chunking rule (:mod:`._segments`), with a mark at the end of the context.

All requests go into one tree whose nodes are segments: a node is identified by
its parent, its tokens, and the positions whose logits are read in it. Two
requests share a node only when its computation would be identical for both,
so sharing never changes a number. The tree is walked depth first with one
sequence in the KV cache: going down decodes a node's segment on top of its
parent, going to a sibling first drops the positions after the parent. The
cache therefore always holds exactly the path being computed, cell ``i`` at
position ``i``, and a micro-batch never holds tokens of another request.

A node's logits are reduced at once (row max, arg max, log-sum-exp) and every
request that reads them adds its token's log-probability; a request is yielded
as soon as its last node is done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ggufbench.engine._runtime import Runtime
from ggufbench.engine._segments import segment_ends

__all__ = ["Scored", "score"]

Tokens = tuple[int, ...]


@dataclass(frozen=True)
class Scored:
    """log P(continuation | context), and whether every token was the arg max."""

    logprob: float
    is_greedy: bool


@dataclass
class _Node:
    start: int
    tokens: Tokens
    wants: tuple[int, int]  # [lo, hi) positions whose logits are read
    children: dict[tuple[Tokens, tuple[int, int]], _Node] = field(default_factory=dict)
    # (request, [(row in the node's logits, target token)]) in position order
    uses: list[tuple[int, list[tuple[int, int]]]] = field(default_factory=list)
    finishing: list[int] = field(default_factory=list)


def _tree(
    pairs: Sequence[tuple[Tokens, Tokens]], grid: int, shape: Callable[[int], tuple[int, bool]]
) -> _Node:
    root = _Node(0, (), (0, 0))
    for index, (context, continuation) in enumerate(pairs):
        full = context + continuation
        seq = full[:-1]
        first = len(context) - 1  # the first position whose logits are read
        node, start = root, 0
        for end in segment_ends(seq, grid=grid, marks=(len(context),), shape=shape):
            lo = max(start, first)
            wants = (lo, end) if lo < end else (end, end)
            key = (seq[start:end], wants)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(start, seq[start:end], wants)
            if wants[0] < wants[1]:
                child.uses.append((index, [(p - lo, full[p + 1]) for p in range(lo, end)]))
            node, start = child, end
        node.finishing.append(index)
    return root


def score(
    rt: Runtime,
    pairs: Sequence[tuple[Tokens, Tokens]],
    *,
    shape: Callable[[int], tuple[int, bool]],
) -> Iterator[tuple[int, Scored]]:
    """Score (context, continuation) token pairs; yield (index, result) as each is done.

    Every context has at least one token and every continuation at least one.
    """
    root = _tree(pairs, rt.n_batch, shape)
    totals = [0.0] * len(pairs)
    greedy = [True] * len(pairs)
    rt.use(1, rt.n_ctx)
    stack = [iter(sorted(root.children.items()))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
            continue
        node = entry[1]
        _compute(rt, node, totals, greedy)
        for index in node.finishing:
            yield index, Scored(totals[index], greedy[index])
        if node.children:
            stack.append(iter(sorted(node.children.items())))


def _compute(rt: Runtime, node: _Node, totals: list[float], greedy: list[bool]) -> None:
    """Decode one segment on top of its parent and add its log-probabilities."""
    start, n = node.start, len(node.tokens)
    lo, hi = node.wants
    rt.trim(0, start)
    logits = rt.decode(
        node.tokens,
        range(start, start + n),
        [0] * n,
        range(lo - start, hi - start),
    )
    if not node.uses:
        return
    lse, best = _reduce(logits)
    for index, reads in node.uses:
        total, all_best = totals[index], greedy[index]
        for row, target in reads:
            total += float(logits[row, target]) - float(lse[row])
            all_best = all_best and int(best[row]) == target
        totals[index], greedy[index] = total, all_best


def _reduce(logits: np.ndarray) -> tuple[list[float], list[int]]:
    """Per row: log-sum-exp (exp in float32, the sum in float64) and the arg max.

    Row by row through one buffer per call, which stays in the CPU cache: on a
    262k vocabulary this takes about 40% less time than whole-array numpy, with
    the same bits.
    """
    buf = np.empty(logits.shape[1], dtype=logits.dtype)
    lse: list[float] = []
    best: list[int] = []
    for row in logits:
        top = int(row.argmax())
        np.subtract(row, row[top], out=buf)
        np.exp(buf, out=buf)
        lse.append(float(row[top]) + float(np.log(buf.sum(dtype=np.float64))))
        best.append(top)
    return lse, best
