"""How many generation rows can share a micro-batch without changing any row.

llama.cpp picks its matrix kernels by the number of rows in a micro-batch
(a vector kernel for one row, blocked kernels for more; some quantization
types repack weights for blocks of 4 or 8 rows). Different kernels add in
different orders, so a row's logits can change with the company it is
decoded in. This measures it on the model and machine at hand: a few short
prompts, each in its own stream, take one step alone and then together with
1..limit-1 others; every row is compared. The width is the largest n for which every
row at every width up to n equals its step alone, bit for bit. Generation
never puts more rows in a micro-batch than that.
"""

from __future__ import annotations

import numpy as np

from ggufbench.engine._runtime import CELL_QUANTUM, Runtime

__all__ = ["invariant_width"]

PROBE_TEXT = (
    "The committee met on a rainy Tuesday to decide where the new library would stand, "
    "and after a long argument about parking, trees and the old railway bridge, "
    "they voted to build it beside the river."
)


def invariant_width(rt: Runtime, limit: int) -> int:
    """The largest step width <= ``limit`` that leaves every row unchanged (at least 1)."""
    if limit <= 1:
        return 1
    text = rt.tokenize(PROBE_TEXT, add_bos=rt.add_bos)
    if len(text) < limit + 8:
        text = text * (1 + (limit + 8) // max(1, len(text)))
    # One thread: the count never changes a number, and a probe of tiny micro-batches
    # on a busy machine is much faster without waiting on a second thread.
    rt.use(limit, CELL_QUANTUM, threads=1)
    prompts = [text[s : s + 4 + s % 3] for s in range(limit)]
    for stream, prompt in enumerate(prompts):
        rt.decode(prompt, range(len(prompt)), [stream] * len(prompt), [])
    steps = [text[s + 4 + s % 3] for s in range(limit)]

    def step(streams: list[int]) -> np.ndarray:
        logits = rt.decode(
            [steps[s] for s in streams],
            [len(prompts[s]) for s in streams],
            streams,
            range(len(streams)),
        ).copy()
        for s in streams:
            rt.trim(s, len(prompts[s]))
        return logits

    alone = [step([s])[0] for s in range(limit)]
    if not np.array_equal(step([0])[0], alone[0]):
        return 1  # not even repeatable
    width = 1
    for n in range(2, limit + 1):
        first = (n * 3) % (limit - n + 1)  # vary which streams fill the slots
        streams = list(range(first, first + n))
        rows = step(streams)
        if not all(np.array_equal(rows[i], alone[s]) for i, s in enumerate(streams)):
            return width
        width = n
    return width
