"""The one thinking parser: splits a model's output into thinking and answer.

Scoring and the gateway both use this module, so a sample's score and a gateway
answer are decided by the same rules: the design brief's "Thinking formats".

Formats (``thinking_format(spec)``):

- ``none``: no thinking; the answer is the whole output, even when truncated.
- ``think``: ``<think>`` sections; the answer follows the leading sections.
- ``quad``: ``<think>`` and any ``<think-NAME>`` sections; the answer is the
  text of the first ``<final>…</final>`` outside thinking.
- a custom list such as ``"reason,plan"`` or ``["reason", "check-*"]``: those
  are the thinking tags (``NAME*`` matches any longer name starting with
  ``NAME``). With ``final`` in the list the answer follows the ``quad`` rule,
  without it the ``think`` rule.

A tag is ``<`` NAME ``>`` or ``</`` NAME ``>``, at most 64 characters, with
optional whitespace (space, tab, newline) after ``<``, around ``/`` and before
``>``: ``< Think-Task >`` and ``</ FINAL>`` are tags; ``<think x="1">`` and
``<think/>`` are not. Names match case-insensitively and are reported in lower
case.

Rules (the contract):

1. An opening thinking tag starts a section that ends at the first closer with
   the same name; everything between is thinking, look-alikes included.
2. A section never closed runs to the end of the output.
3. Answer-tag style (``quad``): ``<final>`` outside thinking starts the answer,
   which ends at the first ``</final>``; inside it nothing is a tag. Without
   ``</final>`` there is no answer. After ``</final>`` nothing is answer, but
   thinking sections there are still hashed (``<final>`` there is plain text).
   Text outside sections and outside the final is neither thinking nor answer.
   A generation stopped by the token limit after ``</final>`` keeps its answer.
4. ``think`` style: the leading sections (only whitespace around them) are
   thinking; the answer is the rest, stripped. An empty answer, an unclosed
   section or a truncated generation means no answer. Rule 1 makes any
   thinking tag in the rest the start of thinking (or a stray closer of it), so
   such an output is withheld too (``thinking_after_answer``): the rest cannot
   be shown without showing thinking.
5. Forced open: if the first tag of the output is a thinking closer, the text
   from the start to it is a section of that name.
6. Otherwise the output is withheld: ``Parsed.answer`` is None and
   ``Parsed.withheld_reason`` says why. An empty final answer is withheld too.

Hashes: a section's ``sha256`` is the hex sha256 of its inner text exactly as
generated, UTF-8 encoded (for an unclosed section, up to the end of the
output; a lone surrogate, which only a broken JSON escape can produce, is
encoded as Python's ``surrogatepass`` does). ``thinking_sha256`` is the sha256
of all inner texts in order joined by ``"\\n"``; with no sections it is the
sha256 of the empty string. Lengths count characters (code points);
``thinking_length`` is the sum of the section lengths, without the joining
newlines.

Stop strings (a task's ``until``) count only in the answer: see
:class:`AnswerCut`. An output cut at a stop string there is complete (an open
``<final>`` ends at the cut), so ``parse(text, fmt, stops=...)`` scores it even
when the token limit ended the generation later.

The parser runs in linear time. :class:`StreamParser` takes the output in
chunks of any size; it keeps back only text it cannot classify yet (a possible
partial tag, and the text before the first tag, which a forced-open closer
would make thinking). :func:`parse` is the same parser fed once.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Literal

from ggufbench.errors import ConfigError

__all__ = [
    "EMPTY_SHA256",
    "AnswerCut",
    "MAX_TAG_CHARS",
    "WITHHELD_REASONS",
    "Parsed",
    "Section",
    "StreamParser",
    "ThinkingFormat",
    "answer_cut",
    "parse",
    "thinking_format",
]

MAX_TAG_CHARS = 64
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
ANSWER_TAG = "final"

WITHHELD_REASONS: dict[str, str] = {
    "truncated": "the generation was stopped by the token limit before a complete answer",
    "unclosed_thinking": "a thinking section was never closed",
    "unclosed_final": "the final answer was opened but never closed",
    "no_final": "there is no <final> answer outside thinking",
    "thinking_after_answer": "a thinking tag follows the start of the answer",
    "empty_answer": "the answer is empty",
}

_WS = "[ \t\r\n]*"
_NAME = "[A-Za-z][A-Za-z0-9_.:-]*"
_TAG = re.compile(f"<{_WS}(/?){_WS}({_NAME}){_WS}>")
_TAG_PREFIX = re.compile(f"<{_WS}(?:/{_WS})?(?:{_NAME}{_WS})?")
_SPEC_NAME = re.compile(r"[a-z][a-z0-9_.:-]{0,47}\*?")


@dataclass(frozen=True)
class Section:
    """One thinking section: its tag name, the sha256 and length of its text."""

    name: str
    sha256: str
    length: int
    closed: bool


@dataclass(frozen=True)
class Parsed:
    """The outcome of parsing one output. ``withheld_reason`` is None when answered;
    ``at_stop`` when the output was cut at a stop string in its answer."""

    answer: str | None
    sections: tuple[Section, ...]
    thinking_sha256: str
    thinking_length: int
    withheld_reason: str | None
    at_stop: bool = False


@dataclass(frozen=True)
class ThinkingFormat:
    """A validated thinking format; build it with :func:`thinking_format`."""

    spec: str
    style: Literal["none", "think", "final"]
    names: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def is_thinking(self, name: str) -> bool:
        """Whether ``name`` (lower case) is a thinking tag name of this format."""
        if name in self.names:
            return True
        return any(name.startswith(p) and len(name) > len(p) for p in self.prefixes)

    def is_tag(self, name: str) -> bool:
        """Whether ``name`` is any tag this format gives meaning to."""
        return self.is_thinking(name) or (self.style == "final" and name == ANSWER_TAG)

    def __str__(self) -> str:
        return self.spec


NONE = ThinkingFormat("none", "none")
THINK = ThinkingFormat("think", "think", frozenset({"think"}))
QUAD = ThinkingFormat("quad", "final", frozenset({"think"}), ("think-",))


def thinking_format(spec: str | list[str] | tuple[str, ...] | None) -> ThinkingFormat:
    """Validate a ``thinking`` option: none, think, quad, or a list of tag names."""
    if spec is None:
        return NONE
    if isinstance(spec, str):
        word = spec.strip().lower()
        known = {"none": NONE, "think": THINK, "quad": QUAD}
        if word in known:
            return known[word]
        if not word:
            raise ConfigError("thinking is empty; use none, think, quad or a list of tag names")
        return _custom(word.split(","), spec)
    if isinstance(spec, list | tuple) and all(isinstance(s, str) for s in spec):
        return _custom([s.strip().lower() for s in spec], ",".join(spec))
    raise ConfigError(f"thinking must be none, think, quad or a list of tag names, not {spec!r}")


def _custom(words: list[str], shown: str) -> ThinkingFormat:
    names: list[str] = []
    for word in (w.strip() for w in words):
        if not _SPEC_NAME.fullmatch(word):
            raise ConfigError(
                f"thinking tag name {word!r} in {shown!r} is not valid; use letters, digits "
                "and _.:- without angle brackets, optionally ending in * (e.g. 'think-*')"
            )
        if word not in names:
            names.append(word)
    prefixes = tuple(n[:-1] for n in names if n.endswith("*"))
    exact = frozenset(n for n in names if not n.endswith("*") and n != ANSWER_TAG)
    for prefix in prefixes:
        if ANSWER_TAG.startswith(prefix):
            raise ConfigError(f"thinking tag pattern '{prefix}*' in {shown!r} would match 'final'")
    if not exact and not prefixes:
        raise ConfigError(f"thinking {shown!r} names no thinking tag; add at least one tag name")
    style: Literal["think", "final"] = "final" if ANSWER_TAG in names else "think"
    return ThinkingFormat(",".join(names), style, exact, prefixes)


class _State(Enum):
    PRELUDE = "prelude"  # no tag seen yet: may become a forced-open section
    OUTSIDE = "outside"  # between sections, before any final answer
    SECTION = "section"  # inside a thinking section
    FINAL = "final"  # inside <final>…</final>
    AFTER = "after"  # after </final>: only thinking sections matter


class StreamParser:
    """Incremental parser: ``feed`` chunks, then ``finish`` once.

    ``feed`` returns the answer text that is now certain to be answer. Nothing
    is released early: with ``none`` every chunk at once, with an answer tag
    (``quad``) the whole answer when ``</final>`` arrives, and with the
    ``think`` style nothing before ``finish`` (a later tag or a truncation can
    still withhold it). What ``feed`` returned, joined, is either empty or
    exactly ``finish().answer``.

    ``answer_spans`` are the [start, end) offsets in the output of the text
    classified so far as answer, from its first non-whitespace character (for
    ``quad`` also the text after ``</final>`` outside thinking): where stop
    strings count (:class:`AnswerCut`).
    """

    def __init__(self, fmt: ThinkingFormat) -> None:
        self._fmt = fmt
        self._pending = ""  # unscanned tail: a possible partial tag
        self._base = 0  # offset in the output of the pending tail
        self._state = _State.PRELUDE
        self._prelude: list[str] = []
        self._answer: list[str] = []
        self._answer_from: int | None = None  # offset of the answer's first non-whitespace
        self.answer_spans: list[list[int]] = []
        self._tag_after_answer = False
        self._final_done = False
        self._released = False
        self._sections: list[Section] = []
        self._name = ""
        self._section_hash = hashlib.sha256()
        self._section_len = 0
        self._whole_hash = hashlib.sha256()
        self._whole_len = 0
        self._finished = False

    def feed(self, chunk: str) -> str:
        """Take the next piece of output; return answer text now certain."""
        if self._finished:
            raise RuntimeError("StreamParser.feed called after finish")
        if self._fmt.style == "none":
            self._answer.append(chunk)
            self._mark(chunk, self._base, skip_space=False)
            self._base += len(chunk)
            return chunk
        self._pending += chunk
        self._scan(final=False)
        return self._release()

    def finish(self, truncated: bool = False, at_stop: bool = False) -> Parsed:
        """End of output; ``truncated`` when the token limit stopped it, ``at_stop``
        when it was cut at a stop string in the answer (an open final ends there)."""
        if self._finished:
            raise RuntimeError("StreamParser.finish called twice")
        self._finished = True
        if self._fmt.style == "none":
            return Parsed("".join(self._answer), (), EMPTY_SHA256, 0, None, at_stop)
        self._scan(final=True)
        if self._state is _State.PRELUDE:
            self._leave_prelude()
        if self._state is _State.SECTION:
            self._close_section(closed=False)
        answer, reason = self._decide(truncated and not at_stop, at_stop)
        sections, whole = tuple(self._sections), self._whole_hash.hexdigest()
        return Parsed(answer, sections, whole, self._whole_len, reason, at_stop)

    # scanning -------------------------------------------------------------

    def _scan(self, final: bool) -> None:
        buf, i, n, base = self._pending, 0, len(self._pending), self._base
        while i < n:
            j = buf.find("<", i)
            if j < 0:
                self._text(buf[i:], base + i)
                i = n
                break
            if j > i:
                self._text(buf[i:j], base + i)
            match = _TAG.match(buf, j, min(n, j + MAX_TAG_CHARS))
            if match is not None:
                self._tag(match, base + j)
                i = match.end()
            elif not final and n - j < MAX_TAG_CHARS and _TAG_PREFIX.fullmatch(buf, j):
                i = j
                break
            else:
                self._text("<", base + j)
                i = j + 1
        self._pending = buf[i:]
        self._base = base + i

    def _text(self, text: str, at: int) -> None:
        """Classify ``text``, which starts at offset ``at`` of the output."""
        state = self._state
        if state is _State.SECTION:
            data = text.encode("utf-8", "surrogatepass")
            self._section_hash.update(data)
            self._section_len += len(text)
            self._whole_hash.update(data)
            self._whole_len += len(text)
        elif state is _State.PRELUDE:
            self._prelude.append(text)
        elif state is _State.FINAL or (state is _State.OUTSIDE and self._fmt.style == "think"):
            self._answer.append(text)
            self._mark(text, at, skip_space=True)
        elif state is _State.AFTER:  # neither thinking nor answer, but the answer is done
            self._mark(text, at, skip_space=False)
        # OUTSIDE with an answer tag: neither thinking nor answer

    def _mark(self, text: str, at: int, skip_space: bool) -> None:
        """Record ``text`` at ``at`` in ``answer_spans`` (from the answer's first
        non-whitespace character when ``skip_space``)."""
        if skip_space and self._answer_from is None:
            rest = text.lstrip()
            if not rest:
                return
            at += len(text) - len(rest)
            text, self._answer_from = rest, at
        if not text:
            return
        spans = self.answer_spans
        if spans and spans[-1][1] == at:
            spans[-1][1] = at + len(text)
        else:
            spans.append([at, at + len(text)])

    def _tag(self, match: re.Match[str], at: int) -> None:
        closing, name = match.group(1) == "/", match.group(2).lower()
        state, fmt = self._state, self._fmt
        if state is _State.PRELUDE and fmt.is_tag(name):
            if closing and fmt.is_thinking(name):
                self._forced_open(name)
                return
            self._leave_prelude()
            state = self._state
        raw = match.group(0)
        if state is _State.SECTION:
            if closing and name == self._name:
                self._close_section(closed=True)
            else:
                self._text(raw, at)
        elif state is _State.FINAL:
            if closing and name == ANSWER_TAG:
                self._final_done = True
                self._state = _State.AFTER
            else:
                self._text(raw, at)
        elif state is _State.PRELUDE:
            self._text(raw, at)
        else:
            self._outside_tag(closing, name, raw, at)

    def _outside_tag(self, closing: bool, name: str, raw: str, at: int) -> None:
        fmt = self._fmt
        if fmt.is_thinking(name):
            if fmt.style == "think" and (closing or self._answer_from is not None):
                self._tag_after_answer = True
            if not closing:
                self._open_section(name)
                return
        elif fmt.style == "final" and not closing and name == ANSWER_TAG:
            if self._state is _State.OUTSIDE:
                self._state = _State.FINAL
                return
        self._text(raw, at)

    # sections -------------------------------------------------------------

    def _leave_prelude(self) -> None:
        self._state = _State.OUTSIDE
        text, self._prelude = "".join(self._prelude), []
        self._text(text, 0)  # the prelude is the output from its start

    def _forced_open(self, name: str) -> None:
        text, self._prelude = "".join(self._prelude), []
        self._open_section(name)
        self._text(text, 0)
        self._close_section(closed=True)

    def _open_section(self, name: str) -> None:
        if self._sections:
            self._whole_hash.update(b"\n")
        self._state = _State.SECTION
        self._name = name
        self._section_hash = hashlib.sha256()
        self._section_len = 0

    def _close_section(self, closed: bool) -> None:
        section = Section(self._name, self._section_hash.hexdigest(), self._section_len, closed)
        self._sections.append(section)
        self._state = _State.AFTER if self._final_done else _State.OUTSIDE

    # the answer -----------------------------------------------------------

    def _release(self) -> str:
        if self._fmt.style == "final" and self._final_done and not self._released:
            self._released = True
            return "".join(self._answer).strip()
        return ""

    def _decide(self, truncated: bool, at_stop: bool) -> tuple[str | None, str | None]:
        unclosed = bool(self._sections) and not self._sections[-1].closed
        if self._fmt.style == "final":
            if self._final_done or (at_stop and self._state is _State.FINAL):
                answer = "".join(self._answer).strip()
                return (answer, None) if answer else (None, "empty_answer")
            if truncated:
                return None, "truncated"
            if unclosed:
                return None, "unclosed_thinking"
            return None, "unclosed_final" if self._state is _State.FINAL else "no_final"
        if truncated:
            return None, "truncated"
        if unclosed:
            return None, "unclosed_thinking"
        if self._tag_after_answer:
            return None, "thinking_after_answer"
        answer = "".join(self._answer).strip()
        return (answer, None) if answer else (None, "empty_answer")


class AnswerCut:
    """Where a stop string ends an output: only in its answer, never in its thinking.

    A stop string counts where it lies wholly in answer text
    (``StreamParser.answer_spans``): with ``think`` the text after the leading
    sections, from its first non-whitespace character; with an answer tag
    (``quad``) the text of ``<final>`` from its first non-whitespace character,
    and the text after ``</final>`` outside thinking; with ``none`` anywhere.
    Text before the first tag could still become thinking (rule 5), so a stop
    string there counts once a tag shows it is not, or once the model ended
    the output itself (:meth:`finish`). Feed the output as it is generated;
    ``at`` is the offset of the first stop string that counts, once known.
    """

    def __init__(self, fmt: ThinkingFormat, stops: Sequence[str]) -> None:
        self._parser = StreamParser(fmt)
        self._stops = tuple(s for s in stops if s)
        self._longest = max((len(s) for s in self._stops), default=0)
        self._text = ""
        self._span = 0  # answer spans before this one were searched in full
        self._searched_to = 0  # offset up to which that span was searched
        self.at: int | None = None

    def feed(self, chunk: str) -> int | None:
        """Take the next piece of output; return the cut offset once a stop counts."""
        if self.at is None and self._stops:
            self._text += chunk
            self._parser.feed(chunk)
            self.at = self._search()
        return self.at

    def finish(self) -> int | None:
        """The model ended the output (not the token limit): decide the rest."""
        if self.at is None and self._stops:
            self._parser.finish()
            self.at = self._search()
        return self.at

    def _search(self) -> int | None:
        spans, text = self._parser.answer_spans, self._text
        for k in range(self._span, len(spans)):
            start, end = spans[k]
            if k == self._span:
                start = max(start, self._searched_to - self._longest + 1)
            found = [i for s in self._stops if (i := text.find(s, start, end)) >= 0]
            if found:
                return min(found)
            self._span, self._searched_to = k, end
        return None


def answer_cut(
    text: str, fmt: ThinkingFormat, stops: Sequence[str], *, ended: bool = False
) -> int | None:
    """The offset where the first stop string in the answer cuts ``text``, or None.

    ``ended``: ``text`` is the whole output and the model ended it itself
    (not the token limit); otherwise it is the output so far (:class:`AnswerCut`).
    """
    cut = AnswerCut(fmt, stops)
    at = cut.feed(text)
    return cut.finish() if at is None and ended else at


def parse(
    text: str, fmt: ThinkingFormat, *, truncated: bool = False, stops: Sequence[str] = ()
) -> Parsed:
    """Parse a whole output at once (the same parser as :class:`StreamParser`).

    With ``stops`` the output ends at the first stop string in its answer
    (:func:`answer_cut`), and an answer cut there is complete, even when the
    token limit ended the generation after it.
    """
    cut = answer_cut(text, fmt, stops, ended=not truncated) if stops else None
    parser = StreamParser(fmt)
    if cut is None:
        parser.feed(text)
        return parser.finish(truncated=truncated)
    parser.feed(text[:cut])
    return parser.finish(at_stop=True)
