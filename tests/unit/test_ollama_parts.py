"""The ollama runner's pure parts: the server address, names, and the streamed
lines with Ollama's separate thinking field put back between tags."""

from __future__ import annotations

import json

import pytest

from ggufbench.backends.ollama import _full_name, _Pieces, default_base_url, imported_name


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("", "http://127.0.0.1:11434"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("0.0.0.0:8080", "http://127.0.0.1:8080"),
        ("gpu-box", "http://gpu-box:11434"),
        ("https://gpu-box:443/", "https://gpu-box:443"),
    ],
)
def test_default_base_url_reads_ollama_host(
    host: str, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OLLAMA_HOST", host)
    assert default_base_url() == url


def test_names_get_the_default_tag() -> None:
    assert _full_name("smollm2") == "smollm2:latest"
    assert _full_name("smollm2:135m") == "smollm2:135m"
    assert _full_name("registry.local:5000/ns/model") == "registry.local:5000/ns/model:latest"
    assert imported_name("ab" * 32) == f"ggufbench-{'ab' * 8}:latest"


def lines(*objects: dict[str, object]) -> list[str]:
    return [json.dumps(o) for o in objects]


def test_thinking_goes_back_between_tags_in_arrival_order() -> None:
    pieces = _Pieces("http://x/api/generate", chat=False, tag="think")
    stream = lines(
        {"response": "", "thinking": "a b", "done": False},
        {"response": "", "thinking": " c", "done": False},
        {"response": "4", "done": False},
        {"response": "", "done": True, "done_reason": "stop", "eval_count": 5,
         "prompt_eval_count": 9},
    )  # fmt: skip
    chunks = [c for c in map(pieces, stream) if c is not None]
    assert "".join(c.text for c in chunks) == "<think>a b c</think>4"
    assert sum(c.n_tokens for c in chunks) == 5  # the server's count, once it ends
    assert chunks[-1].done and chunks[-1].finish == "stop" and chunks[-1].n_prompt == 9


def test_without_a_tag_thinking_is_dropped_and_chat_content_read() -> None:
    pieces = _Pieces("http://x/api/chat", chat=True, tag=None)
    stream = lines(
        {"message": {"role": "assistant", "content": "", "thinking": "secret"}, "done": False},
        {"message": {"role": "assistant", "content": "hi"}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length"},
    )
    chunks = [c for c in map(pieces, stream) if c is not None]
    assert "".join(c.text for c in chunks) == "hi"
    assert chunks[-1].finish == "length"


def test_an_error_line_is_a_sentence_without_its_text() -> None:
    from ggufbench.errors import BackendError

    pieces = _Pieces("http://x/api/generate", chat=False, tag=None)
    with pytest.raises(BackendError) as caught:
        pieces(json.dumps({"error": "prompt was: SECRET"}))
    assert "SECRET" not in str(caught.value) and "http://x/api/generate" in str(caught.value)
