"""The text and its windows, cut as llama-perplexity cuts them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ggufbench.errors import ConfigError
from ggufbench.fidelity import bundled_corpus, first_scored, read_text, skip_reason, windows


def test_one_trailing_newline_is_dropped_as_llama_perplexity_f_does(tmp_path: Path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"one\ntwo\n\n")
    assert read_text(path) == b"one\ntwo\n"


@pytest.mark.parametrize(
    ("content", "message"), [(None, "cannot be read"), (b"\n  \n", "is empty"), ("dir", "folder")]
)
def test_bad_texts_are_one_sentence(tmp_path: Path, content: bytes | str | None, message: str):
    path = tmp_path / "t.txt"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        read_text(path)


def test_windows_are_back_to_back_with_bos_first():
    tokens = np.arange(100, 1130, dtype=np.int32)  # 1030 tokens: 4 windows of 256
    cut = windows(tokens, 256, bos=1)
    assert [w.index for w in cut] == [0, 1, 2, 3]
    for w in cut:
        start = w.index * 256
        assert w.tokens[0] == 1
        assert w.tokens[1:].tolist() == tokens[start + 1 : start + 256].tolist()
        assert w.targets.tolist() == tokens[start + 129 : start + 256].tolist()
        assert len(w.targets) == 256 - 1 - first_scored(256) == 127
    assert tokens[0] == 100  # the text's tokens are not changed


def test_windows_without_bos_keep_the_first_token_and_chunks_takes_the_first_n():
    tokens = np.arange(2000, dtype=np.int32)
    cut = windows(tokens, 512, chunks=2)
    assert len(cut) == 2 and cut[1].tokens[0] == 512


@pytest.mark.parametrize(
    ("n_tokens", "n_ctx", "chunks", "message"),
    [
        (1000, 512, None, "fewer than 2 x n_ctx"),
        (5000, 511, None, "even"),
        (5000, 512, 0, "at least 1"),
    ],
)
def test_window_settings_that_cannot_work_are_one_sentence(n_tokens, n_ctx, chunks, message):
    with pytest.raises(ConfigError, match=message):
        windows(np.zeros(n_tokens, dtype=np.int32), n_ctx, chunks)


def test_the_bundled_corpus_is_plain_english_text_of_30_to_60_kb():
    data = read_text(bundled_corpus())
    assert 30_000 <= len(data) <= 60_000
    text = data.decode("utf-8")
    assert text.count("\n\n") > 20  # paragraphs of prose, UTF-8


def test_a_model_with_another_tokenizer_is_skipped_with_one_sentence():
    assert skip_reason("q4", "base", "abc", "abc") is None
    reason = skip_reason("other", "base", "abc", "xyz")
    assert reason is not None and reason.count(".") == 0 and "other" in reason and "base" in reason
