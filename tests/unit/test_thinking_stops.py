"""Stop strings of a thinking model count only in its answer (no model, no server).

The rule (``ggufbench.thinking.AnswerCut``), the parse of an output cut there,
and the in-process engine's stop logic (``TextTail``) fed a scripted stream of
token bytes.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggufbench.engine import TextTail
from ggufbench.thinking import AnswerCut, answer_cut, parse, thinking_format

THINK = thinking_format("think")
QUAD = thinking_format("quad")
NONE = thinking_format("none")
STOPS = ("Question:", "\n\n")

# A few-shot gsm8k answer by a model without a chat template: it goes on with the next shot.
NEXT_SHOT = "\n\nQuestion: Tom has 3 apples. How many"


@pytest.mark.parametrize(
    ("fmt", "text", "cut_before"),
    [
        # a stop string inside the thinking, then the answer and the next shot
        (THINK, "<think>a\n\nQuestion: b</think>\n\nThe answer is 42." + NEXT_SHOT, NEXT_SHOT),
        # right after the thinking: whitespace before the answer is not the answer
        (THINK, "<think>a</think>\n\nThe answer is 42." + NEXT_SHOT, NEXT_SHOT),
        (THINK, "<think>a</think>Question: 42", "Question: 42"),
        # forced open: the closer shows the text before it was thinking
        (THINK, "a\n\nQuestion: b</think> The answer is 42." + NEXT_SHOT, NEXT_SHOT),
        (QUAD, "<think-task>a\n\nQuestion:</think-task><final>\n42" + NEXT_SHOT, NEXT_SHOT),
        (QUAD, "<think>a</think><final>42</final>" + NEXT_SHOT, NEXT_SHOT),
        (NONE, "\n\n42", "\n\n42"),
    ],
)
def test_the_first_stop_string_in_the_answer_cuts(fmt, text, cut_before) -> None:
    assert answer_cut(text, fmt, STOPS) == text.rindex(cut_before)


@pytest.mark.parametrize(
    ("fmt", "text"),
    [
        (THINK, "<think>a\n\nQuestion: b</think>\n\nThe answer is 42."),  # never in the answer
        (THINK, "<think>a\n\nQuestion: b"),  # unclosed thinking
        (THINK, "42\n\nQuestion: b"),  # no tag yet: may still be forced-open thinking
        (QUAD, "<think>a</think>\n\nQuestion: b <final>"),  # before the final answer
        (QUAD, "<final>42</final><think-task>\n\nQuestion: b"),  # thinking after it
    ],
)
def test_stop_strings_outside_the_answer_do_not_cut(fmt, text) -> None:
    assert answer_cut(text, fmt, STOPS) is None


def test_text_before_any_tag_is_decided_when_the_model_ends() -> None:
    text = "42\n\nQuestion: b"
    assert answer_cut(text, THINK, STOPS, ended=True) == 2
    # stopped by the token limit, it may be thinking whose closer never came: withheld
    out = parse(text, THINK, truncated=True, stops=STOPS)
    assert out.answer is None and out.withheld_reason == "truncated"


def test_an_answer_cut_at_a_stop_is_complete_even_after_the_token_limit() -> None:
    text = "<think>a\n\nQuestion: b</think>\n\nThe answer is 42." + NEXT_SHOT
    out = parse(text, THINK, truncated=True, stops=STOPS)
    assert (out.answer, out.withheld_reason, out.at_stop) == ("The answer is 42.", None, True)
    assert out.sections[0].length == len("a\n\nQuestion: b")
    # without the stop strings the same truncated output has no answer
    assert parse(text, THINK, truncated=True).withheld_reason == "truncated"


def test_a_final_answer_cut_at_a_stop_needs_no_closer() -> None:
    text = "<think-task>plan\n\nQuestion:</think-task><final>\n42 " + NEXT_SHOT
    out = parse(text, QUAD, truncated=True, stops=STOPS)
    assert (out.answer, out.withheld_reason) == ("42", None)
    assert parse(text, QUAD).withheld_reason == "unclosed_final"


def test_without_a_stop_in_the_answer_nothing_changes() -> None:
    text = "<think>a\n\nQuestion: b</think> 42"
    assert parse(text, THINK, stops=STOPS) == parse(text, THINK)
    assert not parse(text, THINK, stops=STOPS).at_stop


@st.composite
def think_output(draw: st.DrawFn) -> tuple[str, int | None]:
    """An output and where its first stop string in the answer starts (by construction)."""
    bits = st.sampled_from(["a", " ", "\n", "\n\n", "Question:", "<", "</think-x>", "ü"])
    inner = "".join(draw(st.lists(bits, max_size=6))).replace("</think>", "")
    space = draw(st.sampled_from(["", " ", "\n\n", " \n\n "]))
    answer = draw(st.sampled_from(["", "4", "The answer is 4."]))
    rest = "".join(draw(st.lists(st.sampled_from(["x", " ", "\n\n", "Question:"]), max_size=4)))
    text = f"<think>{inner}</think>{space}{answer}{rest}"
    start = len(text) - len(rest) - len(answer)
    if not answer:
        start += len(rest) - len(rest.lstrip())
    found = [i for s in STOPS if (i := text.find(s, start)) >= 0]
    return text, min(found) if found else None


@settings(max_examples=300, deadline=None)
@given(think_output(), st.data())
def test_any_chunking_finds_the_first_stop_in_the_answer(case, data) -> None:
    text, expected = case
    cuts = sorted(data.draw(st.lists(st.integers(0, len(text)), max_size=8)))
    cut = AnswerCut(THINK, STOPS)
    seen = None
    for lo, hi in zip([0, *cuts], [*cuts, len(text)], strict=True):
        seen = cut.feed(text[lo:hi])
        if seen is not None:
            break
    assert seen == expected == answer_cut(text, THINK, STOPS)


# -- the engine's stop logic, fed token bytes -----------------------------------


def feed_tokens(tail: TextTail, pieces: list[bytes]) -> tuple[str, int]:
    """Feed pieces until the tail stops; return the text shown and the pieces taken."""
    shown = []
    for n, piece in enumerate(pieces, 1):
        shown.append(tail.feed(piece))
        if tail.stopped:
            return "".join(shown), n
    shown.append(tail.finish())
    return "".join(shown), len(pieces)


def tokens(text: str) -> list[bytes]:
    """Two bytes a token, so multi-byte characters are split across tokens."""
    data = text.encode()
    return [data[i : i + 2] for i in range(0, len(data), 2)]


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("<think>ü\n\nQuestion: b</think>\n\nThe answer is 42.", "The answer is 42."),
        ("<think>ü</think>The answer is 42.", "The answer is 42."),
        ("<think>ü</think>\n\nThe answer is 42.", "The answer is 42."),
    ],
)
def test_the_engine_stops_only_at_a_stop_string_in_the_answer(text, answer) -> None:
    pieces = tokens(text + NEXT_SHOT + " and many more tokens of the next shot")
    tail = TextTail(STOPS, THINK)
    shown, taken = feed_tokens(tail, pieces)
    assert tail.stopped
    cut = len((text + NEXT_SHOT[:2]).encode())  # the token that completes "\n\n"
    assert taken == -(-cut // 2) < len(pieces)
    assert shown.startswith(text)  # shown whole: the caller parses it by the same rule
    out = parse(shown, THINK, stops=STOPS)
    assert (out.answer, out.withheld_reason) == (answer, None)


def test_the_engine_runs_on_when_no_stop_string_is_in_the_answer() -> None:
    text = "<think>ü\n\nQuestion: b</think> The answer is 42."
    tail = TextTail(STOPS, THINK)
    shown, taken = feed_tokens(tail, tokens(text))
    assert not tail.stopped and shown == text and taken == len(tokens(text))


def test_without_thinking_the_engine_cuts_anywhere_and_hides_the_stop() -> None:
    tail = TextTail(STOPS)
    shown, _ = feed_tokens(tail, tokens("<think>a\n\nb</think>"))
    assert tail.stopped and shown == "<think>a"
