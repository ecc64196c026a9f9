"""Where a token sequence is cut into decode segments: the chunking rule.

llama.cpp's numbers for a position depend on the micro-batch it was decoded in
(which rows were with it, how many). So every sequence is decoded in
*segments* whose ends are a function of the sequence alone:

* every multiple of ``grid`` (``n_batch``), so no segment is longer;
* after a paragraph break: a token after which the text ends in a blank line
  (``"\\n\\n"``), where few-shot examples and task descriptions end;
* at the marks the request itself sets: the end of its context, and the end
  of what is decoded.

Two requests that share tokens up to a segment end share that segment's
computation exactly, because the segment's tokens, positions and everything
before them are the same. A few-shot prefix ends at a paragraph break, so it is
computed once for all the questions that follow it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

__all__ = ["newline_shape", "segment_ends", "segments"]


def newline_shape(piece: bytes) -> tuple[int, bool]:
    """(trailing newline count, whether the piece is nothing but newlines)."""
    stripped = piece.rstrip(b"\n")
    return len(piece) - len(stripped), bool(piece) and not stripped


def segment_ends(
    tokens: Sequence[int],
    *,
    grid: int,
    marks: Iterable[int] = (),
    shape: Callable[[int], tuple[int, bool]],
) -> list[int]:
    """The ends (exclusive) of the segments of ``tokens``, ascending; the last is len."""
    n = len(tokens)
    ends = {m for m in marks if 0 < m < n}
    ends.update(range(grid, n, grid))
    run = 0  # newlines at the end of the text so far
    for i in range(n - 1):
        tail, only_newlines = shape(tokens[i])
        run = run + tail if only_newlines else tail
        if tail and run >= 2:
            ends.add(i + 1)
    if n:
        ends.add(n)
    return sorted(ends)


def segments(ends: Sequence[int]) -> list[tuple[int, int]]:
    """[(start, end)] from the ends."""
    out, start = [], 0
    for end in ends:
        out.append((start, end))
        start = end
    return out
