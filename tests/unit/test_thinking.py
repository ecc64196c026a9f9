"""The thinking parser against the design brief's "Thinking formats" contract."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggufbench.errors import ConfigError
from ggufbench.thinking import (
    EMPTY_SHA256,
    Parsed,
    StreamParser,
    ThinkingFormat,
    parse,
    thinking_format,
)

QUAD = thinking_format("quad")
THINK = thinking_format("think")
NONE = thinking_format("none")


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def whole(*inner: str) -> str:
    return sha("\n".join(inner))


# --- formats -----------------------------------------------------------------


@pytest.mark.parametrize("spec", [None, "none", " NONE "])
def test_none_spellings(spec: str | None) -> None:
    assert thinking_format(spec).style == "none"


def test_custom_lists() -> None:
    fmt = thinking_format("Reason, plan-*")
    assert (fmt.style, fmt.spec) == ("think", "reason,plan-*")
    assert fmt.is_thinking("reason") and fmt.is_thinking("plan-a")
    assert not fmt.is_thinking("plan-") and not fmt.is_thinking("final")
    listed = thinking_format(["think", "think-*", "final"])
    assert listed.style == "final" and listed.is_thinking("think-task")


@pytest.mark.parametrize("spec", ["", "<think>", "think,", "final", "f*", "a b", ["x", 3]])
def test_bad_specs_are_one_sentence(spec: object) -> None:
    with pytest.raises(ConfigError) as info:
        thinking_format(spec)  # type: ignore[arg-type]
    assert "\n" not in str(info.value)


# --- the contract, rule by rule ------------------------------------------------


def test_rule1_lookalikes_inside_thinking_are_thinking() -> None:
    inner = "plan <final>x</final> </think-taks> <think-task> more"
    out = parse(f"<think-task>{inner}</think-task><final>42</final>", QUAD)
    assert out.answer == "42"
    assert [(s.name, s.sha256, s.length, s.closed) for s in out.sections] == [
        ("think-task", sha(inner), len(inner), True)
    ]


def test_rule2_unclosed_section_runs_to_end() -> None:
    out = parse("<think>abc <final>no</final>", QUAD)
    assert out.answer is None and out.withheld_reason == "unclosed_thinking"
    assert out.sections[0].sha256 == sha("abc <final>no</final>")
    assert not out.sections[0].closed


def test_rule3_nothing_inside_final_is_a_tag() -> None:
    out = parse("<final>a<b && c>d and a quoted <think> tag</final>", QUAD)
    assert out.answer == "a<b && c>d and a quoted <think> tag"
    assert out.sections == () and out.thinking_sha256 == EMPTY_SHA256


def test_rule3_after_final_thinking_is_still_hashed() -> None:
    out = parse("<think>a</think><final> ok </final>tail<final>no</final><think-x>b", QUAD)
    assert out.answer == "ok"
    assert [s.name for s in out.sections] == ["think", "think-x"]
    assert out.thinking_sha256 == whole("a", "b") and out.thinking_length == 2


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("<think>a</think>no final", "no_final"),
        ("<think>a</think><final>open", "unclosed_final"),
        ("<final>   </final>", "empty_answer"),
    ],
)
def test_rule3_withheld(text: str, reason: str) -> None:
    out = parse(text, QUAD)
    assert (out.answer, out.withheld_reason) == (None, reason)


def test_rule3_truncation_after_final_keeps_answer() -> None:
    assert parse("<final>x</final><think>y", QUAD, truncated=True).answer == "x"
    assert parse("<think>y</think><final>x", QUAD, truncated=True).withheld_reason == "truncated"


def test_rule4_think_leading_blocks() -> None:
    out = parse(" <think>a</think>\n<THINK >b</think>\n The answer. ", THINK)
    assert out.answer == "The answer."
    assert out.thinking_sha256 == whole("a", "b")


@pytest.mark.parametrize(
    ("text", "truncated", "reason"),
    [
        ("<think>a</think>   ", False, "empty_answer"),
        ("<think>a", False, "unclosed_thinking"),
        ("<think>a</think>answer", True, "truncated"),
        ("<think>a</think>ans<think>b</think>wer", False, "thinking_after_answer"),
        ("<think>a<think>b</think>c</think>ans", False, "thinking_after_answer"),
    ],
)
def test_rule4_withheld(text: str, truncated: bool, reason: str) -> None:
    out = parse(text, THINK, truncated=truncated)
    assert (out.answer, out.withheld_reason) == (None, reason)


def test_rule4_no_thinking_at_all_is_an_answer() -> None:
    assert parse("  4  ", THINK).answer == "4"


def test_rule5_forced_open() -> None:
    out = parse("was in the prompt</Think-Safety>\n<final>ok</final>", QUAD)
    assert out.answer == "ok"
    assert out.sections[0].name == "think-safety"
    assert out.sections[0].sha256 == sha("was in the prompt")
    think = parse("reasoning</think>answer", THINK)
    assert think.answer == "answer" and think.thinking_sha256 == sha("reasoning")


def test_rule5_only_when_first_tag() -> None:
    out = parse("<final>x</final> y</think>", QUAD)
    assert out.answer == "x" and out.sections == ()


def test_none_format_is_everything() -> None:
    out = parse("<think>a</think>b", NONE, truncated=True)
    assert out.answer == "<think>a</think>b" and out.withheld_reason is None


def test_tag_variants() -> None:
    out = parse("< think-TASK\t>a</ Think-task >< final >b</FINAL\n>", QUAD)
    assert out.answer == "b" and out.sections[0].sha256 == sha("a")
    assert parse("<think x='1'>a<final>b</final>", QUAD).answer == "b"


def test_overlong_tag_is_text() -> None:
    spaced = "<" + " " * 70 + "think>"
    assert parse(spaced + "<final>b</final>", QUAD).answer == "b"


def test_stream_holds_back_partial_tags() -> None:
    parser = StreamParser(QUAD)
    released = [parser.feed(c) for c in ["<thi", "nk>x</th", "ink><fin", "al> a</fi", "nal", ">"]]
    assert released == ["", "", "", "", "", "a"]
    assert parser.finish().answer == "a"


def test_stream_none_releases_at_once() -> None:
    parser = StreamParser(NONE)
    assert parser.feed("<th") == "<th"
    assert parser.finish().answer == "<th"


def test_linear_time_on_hostile_input() -> None:
    text = "<think>" + "< /thin" * 40_000 + "<" * 100_000 + "</think><final>ok</final>"
    parser = StreamParser(QUAD)
    for i in range(0, len(text), 7):
        parser.feed(text[i : i + 7])
    assert parser.finish().answer == "ok"


# --- a reference parser, written over the whole string -----------------------

TAG = re.compile(r"<[ \t\r\n]*(/?)[ \t\r\n]*([A-Za-z][A-Za-z0-9_.:-]*)[ \t\r\n]*>")


@dataclass
class Tag:
    start: int
    end: int
    closing: bool
    name: str


def _tags(text: str, fmt: ThinkingFormat) -> list[Tag]:
    found = (
        Tag(m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in TAG.finditer(text)
    )
    return [t for t in found if t.end - t.start <= 64 and fmt.is_tag(t.name)]


def _closer(tags: list[Tag], k: int, name: str) -> int:
    return next((i for i in range(k, len(tags)) if tags[i].closing and tags[i].name == name), -1)


def reference(text: str, fmt: ThinkingFormat, truncated: bool = False) -> tuple:
    """(answer, reason, [(name, inner, closed)]) by walking the list of tags."""
    tags, sections = _tags(text, fmt), []
    k, lead_end, leading, after_answer, final = 0, 0, True, False, None
    if tags and tags[0].closing and fmt.is_thinking(tags[0].name):
        sections.append((tags[0].name, text[: tags[0].start], True))
        k, lead_end = 1, tags[0].end
    while k < len(tags):
        tag = tags[k]
        if fmt.is_thinking(tag.name) and not tag.closing:
            c = _closer(tags, k + 1, tag.name)
            end = tags[c].start if c >= 0 else len(text)
            sections.append((tag.name, text[tag.end : end], c >= 0))
            leading = leading and text[lead_end : tag.start].strip() == ""
            after_answer = after_answer or not leading
            lead_end = (tags[c].end if c >= 0 else len(text)) if leading else lead_end
            k = c + 1 if c >= 0 else len(tags)
        elif fmt.is_thinking(tag.name):
            after_answer, k = True, k + 1
        elif not tag.closing and final is None and fmt.style == "final":
            c = _closer(tags, k + 1, "final")
            final = (text[tag.end : tags[c].start], True) if c >= 0 else ("", False)
            k = c + 1 if c >= 0 else len(tags)
        else:
            k += 1
    unclosed = bool(sections) and not sections[-1][2]
    if fmt.style == "final":
        if final is not None and final[1]:
            body = final[0].strip()
            return (body, None, sections) if body else (None, "empty_answer", sections)
        reason = "truncated" if truncated else "unclosed_thinking" if unclosed else None
        reason = reason or ("unclosed_final" if final is not None else "no_final")
        return None, reason, sections
    rest = text[lead_end:].strip()
    for reason, bad in [
        ("truncated", truncated),
        ("unclosed_thinking", unclosed),
        ("thinking_after_answer", after_answer),
        ("empty_answer", not rest),
    ]:
        if bad:
            return None, reason, sections
    return rest, None, sections


def check_against_reference(text: str, fmt: ThinkingFormat, out: Parsed, truncated: bool) -> None:
    answer, reason, sections = reference(text, fmt, truncated)
    assert (out.answer, out.withheld_reason) == (answer, reason)
    assert [(s.name, s.sha256, s.length, s.closed) for s in out.sections] == [
        (name, sha(inner), len(inner), closed) for name, inner, closed in sections
    ]
    assert out.thinking_sha256 == whole(*(inner for _, inner, _ in sections))


# --- property tests -----------------------------------------------------------

PIECES = [
    "<think>", "</think>", "<think-task>", "</think-task>", "<Think-Safety>", "</THINK-safety>",
    "< think >", "</ think>", "<final>", "</final>", "< FINAL >", "</final >", "</think-taks>",
    "<think/>", "<b>", "a", "b", " ", "\n", "<", ">", "/", "<th", "ink>", "&&", "é", "日本",
]  # fmt: skip


def stream(text: str, fmt: ThinkingFormat, cuts: list[int], truncated: bool) -> tuple:
    parser, released, last = StreamParser(fmt), [], 0
    for cut in [*sorted(cuts), len(text)]:
        released.append(parser.feed(text[last:cut]))
        last = cut
    return "".join(released), parser.finish(truncated=truncated)


@st.composite
def chunked(draw: st.DrawFn, texts: st.SearchStrategy[str]) -> tuple[str, list[int]]:
    text = draw(texts)
    cuts = draw(st.lists(st.integers(0, len(text)), max_size=12))
    return text, cuts


SOUP = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)
FORMATS = st.sampled_from([QUAD, THINK, thinking_format("reason,final"), NONE])


@settings(max_examples=300, deadline=None)
@given(chunked(SOUP), FORMATS, st.booleans())
def test_stream_equals_one_shot_and_reference(
    case: tuple, fmt: ThinkingFormat, trunc: bool
) -> None:
    text, cuts = case
    released, streamed = stream(text, fmt, cuts, trunc)
    one_shot = parse(text, fmt, truncated=trunc)
    assert streamed == one_shot
    assert released in ("", one_shot.answer)
    if fmt.style != "none":
        check_against_reference(text, fmt, one_shot, trunc)


# Structured outputs whose thinking is known: thinking text is made of "θ"
# and look-alike tags, so no thinking character may show in an answer.

NAMES = ["think", "think-task", "think-safety", "think-policy", "think-logic"]
NOISE = st.lists(st.sampled_from(["a", " ", "<", ">", "/", "&", "\n", "<b>", "</x>"]), max_size=6)
ANSWER = st.lists(
    st.sampled_from(["α", " ", "<", "<think>", "</think-task>", "<final>"]), max_size=6
)


def _variants(name: str) -> st.SearchStrategy[tuple[str, str]]:
    opens = [f"<{name}>", f"< {name.upper()} >", f"<{name.title()}\n>"]
    closes = [f"</{name}>", f"</ {name.upper()}>", f"< /{name} >"]
    return st.tuples(st.sampled_from(opens), st.sampled_from(closes))


@st.composite
def inner_text(draw: st.DrawFn, name: str) -> str:
    others = [f"<{n}>" for n in NAMES] + [f"</{n}>" for n in NAMES if n != name]
    others += ["<final>", "</final>", "</think-taks>", "θ", "θθ", " ", "<", "/"]
    return "".join(draw(st.lists(st.sampled_from(others), max_size=8)))


@st.composite
def quad_output(draw: st.DrawFn) -> tuple[str, str | None, list[tuple[str, str, bool]]]:
    parts: list[str] = []
    sections: list[tuple[str, str, bool]] = []
    if draw(st.booleans()):  # forced open
        name = draw(st.sampled_from(NAMES))
        inner = draw(inner_text(name)).replace("<", "&")  # no tag before the closer
        parts += [inner, draw(_variants(name))[1]]
        sections.append((name, inner, True))
    answer = None
    for place in ("before", "final", "after"):
        if place == "final" and draw(st.booleans()):
            body = "".join(draw(ANSWER))
            parts += [draw(st.sampled_from(["<final>", "< Final >"])), body, "</final>"]
            answer = body.strip() or None
            continue
        for _ in range(draw(st.integers(0, 2))):
            name = draw(st.sampled_from(NAMES))
            opener, closer = draw(_variants(name))
            inner = draw(inner_text(name))
            parts += ["".join(draw(NOISE)), opener, inner, closer]
            sections.append((name, inner, True))
    if draw(st.booleans()):
        name = draw(st.sampled_from(NAMES))
        inner = draw(inner_text(name))
        parts += [f"<{name}>", inner]
        sections.append((name, inner, False))
    return "".join(parts), answer, sections


@settings(max_examples=300, deadline=None)
@given(quad_output(), st.data())
def test_quad_ground_truth(case: tuple, data: st.DataObject) -> None:
    text, answer, sections = case
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    released, out = stream(text, QUAD, cuts, truncated=False)
    assert out.answer == answer
    assert "θ" not in (out.answer or "") and "θ" not in released
    assert [(s.name, s.sha256, s.closed) for s in out.sections] == [
        (n, sha(i), c) for n, i, c in sections
    ]
    assert out.thinking_sha256 == whole(*(i for _, i, _ in sections))
    assert out.thinking_length == sum(len(i) for _, i, _ in sections)


@settings(max_examples=200, deadline=None)
@given(st.lists(inner_text("think"), max_size=3), ANSWER, st.data())
def test_think_ground_truth(inners: list, body: list, data: st.DataObject) -> None:
    text = "".join(f"<think>{i}</think>\n" for i in inners) + "".join(body)
    expected = parse(text, THINK)
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=10))
    assert stream(text, THINK, cuts, truncated=False)[1] == expected
    assert "θ" not in (expected.answer or "")
    check_against_reference(text, THINK, expected, truncated=False)


def test_lone_surrogate_does_not_break_hashing() -> None:
    out = parse("<think>a\ud800</think><final>ok</final>", QUAD)
    assert out.answer == "ok"
    assert (
        out.sections[0].sha256
        == hashlib.sha256("a\ud800".encode("utf-8", "surrogatepass")).hexdigest()
    )
