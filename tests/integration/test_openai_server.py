"""The OpenAI-compatible backend against a real server on 127.0.0.1.

The server is llama-cpp-python's own (``python -m llama_cpp.server``) serving
SmolLM2-135M-Instruct; it needs llama-cpp-python's server extras
(sse-starlette, starlette-context, pydantic-settings).

What the model says depends on the CPU's kernels, so every request whose output a
test relies on carries a GBNF grammar that forces it: its shape (words, a newline,
a length the token limit cuts) or, where two answers are compared, its whole text.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ggufbench.backends._base import GenRequest
from ggufbench.backends._server_process import free_port
from ggufbench.backends.openai_http import OpenAIBackend
from ggufbench.benchmarks.elyza import ElyzaTask, judge_request, parse_score
from ggufbench.errors import BackendError, BackendTimeout, GgufbenchError

SERVER_EXTRAS = ("sse_starlette", "starlette_context", "pydantic_settings")
ALIAS = "smollm2"
START_TIMEOUT_S = 120.0


def model_path() -> Path:
    from ggufbench.testmodels import smollm2_path

    try:
        return smollm2_path()
    except GgufbenchError as exc:
        pytest.skip(str(exc))


def wait_until_up(process: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited early:\n{log.read_text(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start in {START_TIMEOUT_S:g} s")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    missing = [m for m in SERVER_EXTRAS if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server needs {', '.join(missing)}")
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(model_path()), "--model_alias", ALIAS,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--n_threads", "2", "--verbose", "false",
    ]  # fmt: skip
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_up(process, url, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture()
def backend(base_url: str) -> Iterator[OpenAIBackend]:
    # send_grammar=True: a grammar the server refused would be an error, never dropped
    with OpenAIBackend(
        base_url, ALIAS, timeout_s=60, concurrency=2, retries=1, send_grammar=True
    ) as client:
        yield client


def words(n: int, then: str = "", longest: int = 8) -> str:
    """GBNF: ``n`` words of letters one space apart, then ``then``: ``n`` tokens at least,
    as no token of this tokenizer spans two words. Words are grouped in tens: llama.cpp
    refuses a grammar that repeats a group hundreds of times, and nested groups are slow."""
    parts: list[str] = []
    for size in (10, 1):
        parts += [f"w{size}"] * (n // size)
        n %= size
    spaced = ' " " '.join(parts)
    return f'root ::= {spaced} {then}\nw1 ::= [a-zA-Z]{{1,{longest}}}\nw10 ::= w1 (" " w1){{9}}\n'


CHAT = GenRequest(
    messages=(("user", "What is the capital of France?"),),
    max_tokens=48,
    grammar=words(3, then="[.]"),
)
PARIS = "The capital of France is Paris."
# Two generations of one request are compared only where the grammar admits one text.
FORCED_CHAT = GenRequest(messages=CHAT.messages, max_tokens=48, grammar=f'root ::= "{PARIS}"')


def test_chat_and_text_generation(backend: OpenAIBackend) -> None:
    text_request = GenRequest(
        prompt="The capital of France is",
        max_tokens=24,
        stop=("\n",),
        grammar=words(2, then='"\\n" [a-z]{1,40}', longest=6),
    )
    chat, text = backend.generate([CHAT, text_request])
    assert len(chat.text.split()) == 3 and chat.finish_reason == "stop"
    assert chat.n_prompt_tokens > 0 and 3 <= chat.n_tokens <= 48
    assert text.finish_reason == "stop" and len(text.text.split()) == 2  # cut at the newline
    assert "\n" not in text.text


def test_length_limit_reported(backend: OpenAIBackend) -> None:
    request = GenRequest(prompt="Count: one, two, three,", max_tokens=3, grammar=words(8))
    result = backend.generate([request])[0]
    assert result.finish_reason == "length" and result.n_tokens == 3


def test_judge_request_is_constrained_to_one_digit(backend: OpenAIBackend) -> None:
    task = ElyzaTask(0, "日本の首都はどこですか。", "東京です。", "- 東京と答えていれば5点")
    result = backend.generate([judge_request(task, "東京です。")])[0]
    assert result.text.strip() in {"1", "2", "3", "4", "5"}
    assert parse_score(result.text) is not None


def test_stream_matches_generate(backend: OpenAIBackend) -> None:
    pieces = list(backend.stream(FORCED_CHAT))
    assert len(pieces) > 1
    assert "".join(pieces) == PARIS == backend.generate([FORCED_CHAT])[0].text


def test_timeout_names_the_url(base_url: str) -> None:
    story = (("user", "Write a long story about a lighthouse."),)
    # 400 tokens at least: seconds on any CPU, far past the 0.2 s allowed
    request = GenRequest(messages=story, max_tokens=400, grammar=words(400))
    with OpenAIBackend(base_url, ALIAS, timeout_s=0.2, retries=0, send_grammar=True) as slow:
        with pytest.raises(BackendTimeout, match=r"127\.0\.0\.1:\d+/v1/chat/completions"):
            slow.generate([request])


def test_unreachable_server_is_one_sentence() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    with OpenAIBackend(url, ALIAS, retries=1, backoff_s=0.01) as dead:
        with pytest.raises(BackendError, match=f"cannot connect to {url}/chat/completions"):
            dead.generate([CHAT])
