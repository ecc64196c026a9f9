"""llama-server's pure parts: its stream events, and answers read to the first stop."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufbench.backends._http import Chunk, read_generation
from ggufbench.backends.llama_server import NO_LOGLIK, ServerLaunch, _chunk, _server_root
from ggufbench.thinking import thinking_format


def events(*texts: str, finish: str = "eos") -> Iterator[Chunk]:
    for text in texts:
        chunk = _chunk("data: " + json.dumps({"content": text, "tokens": [1], "stop": False}), "u")
        assert chunk is not None
        yield chunk
    last = {"content": "", "tokens": [], "stop": True, "stop_type": finish}
    end = _chunk("data: " + json.dumps(last), "u")
    assert end is not None
    yield end


def test_pings_and_comments_are_skipped() -> None:
    assert _chunk(":", "u") is None and _chunk("", "u") is None


def test_a_plain_answer_is_cut_before_the_first_stop_string() -> None:
    result = read_generation(events("4", "2\n", "\nQ", ":"), ("\n\n", "Q:"), None, 7)
    assert (result.text, result.finish_reason, result.n_tokens) == ("42", "stop", 3)
    assert result.n_prompt_tokens == 7


def test_the_token_limit_is_length_and_an_end_token_stop() -> None:
    assert read_generation(events("a", "b", finish="limit"), (), None).finish_reason == "length"
    assert read_generation(events("a", "b", finish="eos"), (), None).finish_reason == "stop"


def test_a_thinking_answer_comes_back_whole_cut_only_in_the_answer() -> None:
    fmt = thinking_format("think")
    chunks = events("<think>x\n\ny", "</think>", "4\n", "\nmore", "never read")
    result = read_generation(chunks, ("\n\n",), fmt)
    assert result.text == "<think>x\n\ny</think>4\n\nmore"  # whole, up to the chunk with the stop
    assert result.finish_reason == "stop"


def test_an_error_event_is_a_backend_error() -> None:
    from ggufbench.errors import BackendError

    with pytest.raises(BackendError, match="error in the middle"):
        _chunk('data: {"error": {"code": 500, "message": "prompt SECRET"}}', "u")


def test_a_managed_server_gets_n_ctx_per_slot_and_all_layers() -> None:
    launch = ServerLaunch(Path("m.gguf"), n_ctx=2048, n_gpu_layers=-1, threads=3, parallel=4)
    argv = launch.argv("llama-server", 8081)
    assert argv[argv.index("--ctx-size") + 1] == "8192"
    assert argv[argv.index("--parallel") + 1] == "4"
    assert argv[argv.index("--n-gpu-layers") + 1] == "999"
    assert argv[argv.index("--threads") + 1] == "3"
    assert argv[argv.index("--host") + 1] == "127.0.0.1"


def test_base_url_may_end_in_v1() -> None:
    assert _server_root("http://h:8080/v1/") == "http://h:8080"
    assert _server_root("http://h:8080") == "http://h:8080"


def test_the_loglikelihood_refusal_is_one_sentence_naming_the_runner_to_use() -> None:
    assert NO_LOGLIK.count(". ") == 0 and NO_LOGLIK.endswith("runner: llama-cpp")
