"""The in-process engine ends a thinking model's generation at the first stop string in
its answer, on the real SmolLM2 model.

The output is forced, as a grammar would force it: every token is decoded by the
real model, and the engine's pick is held to a script (the model's own
tokenization of a thinking model's output), so nothing depends on the model's
unforced greedy text.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from ggufbench.backends._base import GenRequest, GenResult
from ggufbench.backends.llama_cpp import LlamaCppBackend
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.engine import Runtime
from ggufbench.thinking import thinking_format

STOPS = ("Question:", "\n\n")
NEXT_SHOT = "\n\nQuestion: Tom has 3 apples."
FILLER = " and"
MAX_TOKENS = 60


class Forced:
    """The real runtime, with the next token forced to a script (then FILLER for ever)."""

    def __init__(self, rt: Runtime, script: Sequence[int], filler: int) -> None:
        self._rt = rt
        self.script = list(script)
        self.filler = filler
        self.picked = 0

    def decode(
        self,
        tokens: Sequence[int],
        positions: Sequence[int],
        seqs: Sequence[int],
        outputs: Sequence[int],
    ) -> np.ndarray:
        logits = np.array(self._rt.decode(tokens, positions, seqs, outputs), copy=True)
        for row in logits:
            forced = self.script[self.picked] if self.picked < len(self.script) else self.filler
            row[forced] = row.max() + 1.0
            self.picked += 1
        return logits

    def __getattr__(self, name: str) -> object:
        return getattr(self._rt, name)


@pytest.fixture(scope="module")
def model(smollm2: Path) -> Iterator[LlamaCppBackend]:
    backend = LlamaCppBackend(smollm2, n_ctx=512, n_threads=2)
    yield backend
    backend.close()


def forced_run(model: LlamaCppBackend, output: str, fmt: str) -> tuple[GenResult, int]:
    """Generate ``output`` (forced, then FILLER) as a thinking model; return the
    result and the number of tokens the engine picked."""
    script = model.tokenize(output, add_bos=False)
    (filler,) = model.tokenize(FILLER, add_bos=False)
    real = model.rt
    forced = Forced(real, script, filler)
    model.rt = forced  # type: ignore[assignment]
    try:
        backend = ThinkingBackend(model, thinking_format(fmt))
        prompt = "Question: what is 6 times 7?\nAnswer:"
        request = GenRequest(prompt=prompt, max_tokens=MAX_TOKENS, stop=STOPS)
        [result] = backend.generate([request])
    finally:
        model.rt = real
    return result, forced.picked


def tokens_to(model: LlamaCppBackend, output: str, end: int) -> int:
    """How many of the output's tokens it takes to reach character ``end``."""
    script = model.tokenize(output, add_bos=False)
    text = b""
    for k, token in enumerate(script, 1):
        text += model.rt.piece(token)
        if len(text.decode("utf-8", "replace")) >= end:
            return k
    raise AssertionError("the output is shorter than that")


@pytest.mark.parametrize(
    ("fmt", "output"),
    [
        ("think", "<think>6 times 7\n\nQuestion: is it 42</think> The answer is 42." + NEXT_SHOT),
        ("think", "<think>6 times 7</think>\n\nThe answer is 42." + NEXT_SHOT),
        (
            "quad",
            "<think-task>6 times 7\n\nQuestion:</think-task><final>The answer is 42." + NEXT_SHOT,
        ),
    ],
)
def test_generation_ends_at_the_stop_in_the_answer(
    model: LlamaCppBackend, fmt: str, output: str
) -> None:
    script = model.tokenize(output, add_bos=False)
    assert b"".join(model.rt.piece(t) for t in script).decode() == output  # round-trips
    result, picked = forced_run(model, output, fmt)
    assert result.text == "The answer is 42."
    assert result.thinking is not None and result.thinking["withheld_reason"] is None
    assert result.finish_reason == "stop"
    # it ended at the token that completed "\n\n" after the answer, long before the limit
    needed = tokens_to(model, output, output.index(NEXT_SHOT) + 2)
    assert result.n_tokens == picked == needed < len(script) < MAX_TOKENS


def test_a_stop_only_in_the_thinking_does_not_end_generation(model: LlamaCppBackend) -> None:
    output = "<think>6 times 7\n\nQuestion: is it 42</think> The answer is 42"
    result, picked = forced_run(model, output, "think")
    assert result.n_tokens == picked == MAX_TOKENS and result.finish_reason == "length"
    assert result.thinking is not None and result.thinking["withheld_reason"] == "truncated"
    assert result.text == ""
