"""The ollama runner end to end over HTTP: against the FAKE Ollama server
(tests/integration/fake_ollama.py), or a real Ollama when OLLAMA_HOST is set.

Tests marked ``fake_only`` need the fake's script or its record of requests;
the others hold against any Ollama (they import the real SmolLM2 file).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from fake_ollama import FakeOllama, Reply

from ggufbench.backends._base import GenRequest, LoglikRequest, NotSupported
from ggufbench.backends._server_http import NativeClient, openai_identity
from ggufbench.backends.ollama import (
    OllamaBackend,
    check_unchanged,
    default_base_url,
    import_gguf,
    imported_name,
    model_digest,
)
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.errors import BackendError, ConfigError
from ggufbench.gguf_file import sha256_of
from ggufbench.thinking import thinking_format

REAL = bool(os.environ.get("OLLAMA_HOST"))
fake_only = pytest.mark.skipif(REAL, reason="needs the fake server's script and records")


@pytest.fixture
def ollama_url(request: pytest.FixtureRequest) -> str:
    """A real Ollama at OLLAMA_HOST, else a fresh fake one."""
    if REAL:
        return default_base_url()
    server: FakeOllama = request.getfixturevalue("fake_ollama")
    return server.url


@pytest.fixture
def imported(ollama_url: str, smollm2: Path) -> str:
    """SmolLM2 imported into the server; its Ollama name."""
    messages: list[str] = []
    backend = OllamaBackend(base_url=ollama_url, path=smollm2, say=messages.append)
    backend.close()
    return backend.name


def test_a_gguf_is_imported_under_a_name_from_its_sha256_and_said_once(
    ollama_url: str, smollm2: Path
) -> None:
    said: list[str] = []
    with OllamaBackend(base_url=ollama_url, path=smollm2, say=said.append) as backend:
        expected = imported_name(sha256_of(smollm2))
        assert backend.name == expected
        assert backend.info.identity == f"ollama {model_digest(expected, ollama_url)}"
    with OllamaBackend(base_url=ollama_url, path=smollm2, say=said.append):
        pass
    if not REAL or len(said) == 1:  # a real server may hold it from an earlier session
        assert len(said) == 1 and expected in said[0] and str(smollm2) in said[0]


@fake_only
def test_import_pushes_the_blob_then_creates_from_files(
    fake_ollama: FakeOllama, smollm2: Path
) -> None:
    sha = sha256_of(smollm2)
    client = NativeClient(fake_ollama.url)
    try:
        name = import_gguf(client, smollm2, say=lambda _: None)
    finally:
        client.close()
    assert fake_ollama.blobs[sha] == smollm2.stat().st_size
    (create,) = fake_ollama.bodies("/api/create")
    assert create == {"model": name, "files": {smollm2.name: f"sha256:{sha}"}, "stream": False}


@fake_only
def test_a_server_before_files_gets_a_modelfile(smollm2: Path) -> None:
    with FakeOllama(files_api=False) as old:
        with OllamaBackend(base_url=old.url, path=smollm2, say=lambda _: None) as backend:
            assert backend.name in old.models
        modelfiles = [b["modelfile"] for b in old.bodies("/api/create") if "modelfile" in b]
        assert modelfiles == [f"FROM @sha256:{sha256_of(smollm2)}"]


def test_generation_keeps_to_the_token_limit(ollama_url: str, imported: str) -> None:
    with OllamaBackend(imported, base_url=ollama_url) as backend:
        (result,) = backend.generate([GenRequest(prompt="Once upon a time", max_tokens=5)])
    assert 0 < result.n_tokens <= 5
    if result.finish_reason == "length":
        assert result.n_tokens == 5


@fake_only
def test_lm_eval_prompts_go_raw_with_the_options(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("m1")
    request = GenRequest(prompt="Q: 1+1?\nA:", max_tokens=7, stop=("\n\n",), seed=3)
    with OllamaBackend("m1", base_url=fake_ollama.url, n_ctx=2048) as backend:
        (result,) = backend.generate([request])
    (body,) = fake_ollama.bodies("/api/generate")
    assert body["raw"] is True and body["prompt"] == request.prompt and "think" not in body
    assert body["options"] == {
        "num_predict": 7, "temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0,
        "repeat_penalty": 1.0, "seed": 3, "num_ctx": 2048, "stop": ["\n\n"],
    }  # fmt: skip
    assert result.text == "The answer is 42." and result.finish_reason == "stop"


@fake_only
def test_chat_requests_go_to_api_chat(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("m1")
    request = GenRequest(messages=(("user", "hi"),), max_tokens=3)
    with OllamaBackend("m1", base_url=fake_ollama.url) as backend:
        (result,) = backend.generate([request])
    (body,) = fake_ollama.bodies("/api/chat")
    assert body["messages"] == [{"role": "user", "content": "hi"}] and "raw" not in body
    assert result.finish_reason == "length" and result.n_tokens == 3


@fake_only
def test_thinking_comes_back_between_tags_and_is_parsed_and_hashed(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("thinker", capabilities=("completion", "thinking"))
    thought = "Add one and one.\n\nStop here? No."
    fake_ollama.script = lambda body: Reply(
        text="2\n\nQuestion: next?", thinking=thought, delay_s=0.01
    )
    with OllamaBackend("thinker", base_url=fake_ollama.url) as raw:
        backend = ThinkingBackend(raw, thinking_format("think"))
        request = GenRequest(prompt="Q: 1+1?", max_tokens=50, stop=("\n\n",))
        (result,) = backend.generate([request])
    (body,) = fake_ollama.bodies("/api/generate")
    assert body["think"] is True and "stop" not in body["options"]
    assert result.text == "2"  # the stop string in the thinking did not end it
    assert result.thinking is not None
    assert result.thinking["sha256"] == hashlib.sha256(thought.encode()).hexdigest()
    assert result.thinking["length"] == len(thought)


@fake_only
def test_the_stream_is_closed_at_the_stop_string(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("thinker", capabilities=("completion", "thinking"))
    long_tail = " filler" * 200
    fake_ollama.script = lambda body: Reply(
        text="4\n\nQ:" + long_tail, thinking="2+2", delay_s=0.005
    )
    with OllamaBackend("thinker", base_url=fake_ollama.url) as raw:
        backend = ThinkingBackend(raw, thinking_format("think"))
        (result,) = backend.generate([GenRequest(prompt="2+2?", max_tokens=500, stop=("\n\n",))])
    assert result.text == "4"
    assert fake_ollama.streams_ended(1)[0] < 100  # of about 205 lines


@fake_only
def test_a_model_that_cannot_think_gets_no_think_flag(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("plain")
    fake_ollama.script = lambda body: Reply(text="ok", thinking="hmm")
    with OllamaBackend("plain", base_url=fake_ollama.url) as raw:
        (result,) = ThinkingBackend(raw, thinking_format("think")).generate(
            [GenRequest(prompt="x", max_tokens=20)]
        )
    assert "think" not in fake_ollama.bodies("/api/generate")[0]
    assert result.text == "ok"
    assert result.thinking is not None
    assert result.thinking["sha256"] == hashlib.sha256(b"hmm").hexdigest()


def test_a_changed_model_behind_the_name_refuses_the_resume(ollama_url: str, imported: str) -> None:
    name = "ggufbench-test-digest"
    client = NativeClient(ollama_url)
    try:
        client.post_json("/api/create", {"model": name, "from": imported, "stream": False})
        digest = model_digest(name, ollama_url)
        check_unchanged(name, digest, ollama_url)
        params = {"model": name, "from": imported, "parameters": {"num_ctx": 1024}}
        client.post_json("/api/create", {**params, "stream": False})
        with pytest.raises(ConfigError) as caught:
            check_unchanged(name, digest, ollama_url)
    finally:
        client.request("DELETE", "/api/delete", body={"model": name}, ok=lambda code: True)
        client.close()
    message = str(caught.value)
    assert name in message and digest[:12] in message and "--fresh" in message
    assert "\n" not in message


def test_a_missing_model_is_one_sentence(ollama_url: str) -> None:
    with pytest.raises(ConfigError, match="has no model 'no-such-model-here'; pull it"):
        OllamaBackend("no-such-model-here", base_url=ollama_url)


def test_loglikelihood_is_not_supported(ollama_url: str, imported: str) -> None:
    with OllamaBackend(imported, base_url=ollama_url) as backend:
        with pytest.raises(NotSupported, match="runner: llama-cpp"):
            backend.loglikelihood([LoglikRequest("a", " b")])


def test_nothing_listening_is_a_backend_error() -> None:
    from ggufbench.backends._server_process import free_port

    with pytest.raises(BackendError, match="cannot connect"):
        OllamaBackend("x", base_url=f"http://127.0.0.1:{free_port()}", retries=0)


def test_openai_identity_holds_what_v1_models_reports(ollama_url: str, imported: str) -> None:
    first = openai_identity(f"{ollama_url}/v1", imported)
    assert first == openai_identity(f"{ollama_url}/v1", imported)  # "created" left out
    assert imported in first and '"owned_by"' in first
    other = "ggufbench-test-second"  # a server listing one model serves it under any name
    client = NativeClient(ollama_url)
    try:
        client.post_json("/api/create", {"model": other, "from": imported, "stream": False})
        with pytest.raises(ConfigError, match="does not serve model 'no-such-model'"):
            openai_identity(f"{ollama_url}/v1", "no-such-model")
    finally:
        client.request("DELETE", "/api/delete", body={"model": other}, ok=lambda code: True)
        client.close()


@fake_only
def test_a_model_removed_during_the_run_is_a_sentence(fake_ollama: FakeOllama) -> None:
    fake_ollama.add_model("brief")
    with OllamaBackend("brief", base_url=fake_ollama.url) as backend:
        fake_ollama.models.clear()
        with pytest.raises(BackendError, match="answered HTTP 404; check base_url and that the"):
            backend.generate([GenRequest(prompt="x", max_tokens=2)])
