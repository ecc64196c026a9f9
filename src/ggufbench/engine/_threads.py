"""How many threads a micro-batch gets: measured, not guessed.

llama.cpp's threads meet at a barrier after every operation, hundreds of times
per decode. When another process takes a core, each barrier can wait for a
whole scheduler slice, and a small micro-batch on two threads runs several
times slower than on one. The thread count never changes a number (measured,
docs/engine.md), so the runtime may choose it freely: per size class of
micro-batch it keeps the measured time per row of the configured count and of
one thread, uses the faster, and now and then tries the other again.
"""

from __future__ import annotations

__all__ = ["ThreadChooser"]

EXPLORE_EVERY = 32
SMOOTHING = 0.3


def size_class(rows: int) -> int:
    """1 row, 2-7, 8-31, 32-127, 128 and more."""
    for limit, cls in ((2, 0), (8, 1), (32, 2), (128, 3)):
        if rows < limit:
            return cls
    return 4


class ThreadChooser:
    """Picks the configured thread count or one thread, per size class, by measured speed.

    Trying the slower choice again costs in proportion to how much slower it was,
    so it is tried again only every ``EXPLORE_EVERY`` times that ratio; a choice
    already seen to be three times slower in another size class is not tried
    first in a new one.
    """

    def __init__(self, threads: int) -> None:
        self.choices = (threads, 1) if threads > 1 else (1,)
        self.seconds_per_row: dict[tuple[int, int], float] = {}
        self.calls: dict[int, int] = {}

    def _ratio(self, cls: int) -> float | None:
        """How much slower the configured count is than one thread in ``cls``."""
        many = self.seconds_per_row.get((cls, self.choices[0]))
        one = self.seconds_per_row.get((cls, 1))
        return None if many is None or one is None or one <= 0 else many / one

    def pick(self, rows: int) -> int:
        many = self.choices[0]
        if many == 1:
            return 1
        cls = size_class(rows)
        n = self.calls.get(cls, 0)
        self.calls[cls] = n + 1
        if (cls, 1) not in self.seconds_per_row:
            return 1
        ratio = self._ratio(cls)
        if ratio is None:  # the configured count untried here
            worst = max((r for c in range(5) if (r := self._ratio(c)) is not None), default=1.0)
            if worst < 3.0:
                return many
            ratio = worst
        best, other = (many, 1) if ratio < 1.0 else (1, many)
        spread = max(ratio, 1.0 / ratio) if ratio > 0 else 1.0
        every = int(EXPLORE_EVERY * min(spread, 1000.0))
        return other if n % every == every - 1 else best

    def observe(self, rows: int, threads: int, seconds: float) -> None:
        key = (size_class(rows), threads)
        per_row = seconds / max(1, rows)
        old = self.seconds_per_row.get(key)
        self.seconds_per_row[key] = per_row if old is None else old + SMOOTHING * (per_row - old)
