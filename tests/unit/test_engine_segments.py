"""The chunking rule, stop sequences and prefix bookkeeping of the engine (no model)."""

from __future__ import annotations

from ggufbench.engine import TextTail, newline_shape, segment_ends, segments
from ggufbench.engine._generate import _Prefixes, _share_points

PIECES = {1: b"Q", 2: b" a", 3: b"\n", 4: b"\n\n", 5: b".\n\n", 6: b"b\n", 7: b""}


def shape(token: int) -> tuple[int, bool]:
    return newline_shape(PIECES[token])


def test_newline_shape() -> None:
    assert newline_shape(b"abc") == (0, False)
    assert newline_shape(b"a\n") == (1, False)
    assert newline_shape(b"\n\n") == (2, True)
    assert newline_shape(b"") == (0, False)


def test_segments_end_at_grid_marks_and_paragraph_breaks() -> None:
    tokens = [1, 2, 5, 1, 2, 2, 2, 2, 2, 2, 2]
    # a break after ".\n\n" (position 2 -> ends at 3), the grid of 8, the mark 5, the end
    assert segment_ends(tokens, grid=8, marks=(5,), shape=shape) == [3, 5, 8, 11]
    assert segments([3, 5, 8, 11]) == [(0, 3), (3, 5), (5, 8), (8, 11)]


def test_a_blank_line_made_of_two_tokens_is_a_break() -> None:
    assert segment_ends([1, 3, 3, 1], grid=64, shape=shape) == [3, 4]
    assert segment_ends([1, 6, 3, 1], grid=64, shape=shape) == [3, 4]  # "b\n" + "\n"
    assert segment_ends([1, 3, 7, 3, 1], grid=64, shape=shape) == [5]  # an empty piece resets
    assert segment_ends([1, 6, 1, 3, 1], grid=64, shape=shape) == [5]  # "b\nQ\n" is no break


def test_shared_prefix_gives_the_same_segments_up_to_where_prefixes_differ() -> None:
    shots = [1, 2, 4, 1, 2, 4]
    one, two = shots + [1, 2, 2], shots + [2, 1, 1, 1]
    a = segment_ends(one, grid=512, marks=(len(one),), shape=shape)
    b = segment_ends(two, grid=512, marks=(len(two),), shape=shape)
    assert a[:2] == b[:2] == [3, 6]


def test_text_tail_cuts_at_the_first_stop_and_holds_back_what_might_start_one() -> None:
    tail = TextTail(["Q:", "\n\n"])
    shown = [tail.feed(b"The answer"), tail.feed(b" is 4."), tail.feed(b"\n\nQ: next")]
    assert "".join(shown) + tail.finish() == "The answer is 4."
    assert tail.stopped
    open_end = TextTail(["###"])
    text = "".join(open_end.feed(p) for p in (b"ab", b"c#", b"#")) + open_end.finish()
    assert text == "abc##" and not open_end.stopped


def test_text_tail_keeps_multibyte_characters_whole() -> None:
    tail = TextTail([])
    raw = "日本".encode()
    text = "".join(tail.feed(raw[i : i + 1]) for i in range(len(raw))) + tail.finish()
    assert text == "日本"


def test_share_points_are_common_segment_ends_before_either_end() -> None:
    prompts = [(1, 2, 4, 1, 2), (1, 2, 4, 1, 1), (2, 2)]
    ends = [segment_ends(p, grid=512, shape=shape) for p in prompts]
    points = _share_points([0, 1, 2], prompts, ends)
    assert points == {0: 3, 1: 3, 2: 0}


def test_prefix_store_keeps_the_most_recent() -> None:
    store = _Prefixes(kept=2)
    store.put((1,), b"a")
    store.put((2,), b"b")
    assert store.get((1,)) == b"a"
    store.put((3,), b"c")
    assert store.get((2,)) is None and store.get((1,)) == b"a"


def test_thread_chooser_prefers_the_faster_and_rarely_retries_a_much_slower_one() -> None:
    from ggufbench.engine._threads import EXPLORE_EVERY, ThreadChooser

    chooser = ThreadChooser(2)
    picks = []
    for _ in range(400):
        t = chooser.pick(16)
        picks.append(t)
        chooser.observe(16, t, 0.016 * (20 if t == 2 else 1))  # two threads 20x slower
    assert picks[0] == 1 and picks[1] == 2  # each measured once
    assert picks.count(2) <= 1 + 400 // (EXPLORE_EVERY * 20) + 1
    assert chooser.pick(200) == 1  # a new size: the slow count is not tried first
    fast = ThreadChooser(2)
    for _ in range(100):
        t = fast.pick(64)
        fast.observe(64, t, 0.064 * (0.5 if t == 2 else 1))
    assert fast.pick(64) == 2 and ThreadChooser(1).pick(5) == 1
