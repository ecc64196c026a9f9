"""The llama-server runner with the real llama-server binary and the real SmolLM2.

The binary is llama-server on PATH, else ggufbench's shared build in the user's
cache (read, never written), else it is built once into this session's cache
(minutes). Outputs are forced with grammars where a test needs known text, so
no test depends on the model's own greedy choices.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from ggufbench.backends._base import GenRequest, LoglikRequest, NotSupported
from ggufbench.backends._server_http import openai_identity
from ggufbench.backends._server_process import process_gone
from ggufbench.backends.llama_server import LlamaServerBackend, ServerLaunch, server_version
from ggufbench.backends.thinking import ThinkingBackend
from ggufbench.errors import BackendError, BackendTimeout
from ggufbench.gguf_file import sha256_of
from ggufbench.thinking import thinking_format

THREADS = 2
ENDLESS_A = 'root ::= "a" root'  # never complete, so the end token is never allowed


@pytest.fixture(scope="module")
def managed(server_bin: str, smollm2: Path) -> Iterator[LlamaServerBackend]:
    launch = ServerLaunch(smollm2, server_bin=server_bin, n_ctx=1024, threads=THREADS, parallel=2)
    with LlamaServerBackend(launch) as backend:
        yield backend


def test_the_binary_runs(server_bin: str) -> None:
    assert server_version(server_bin).startswith("version")


def test_a_managed_server_has_the_files_identity_and_n_ctx_per_slot(
    managed: LlamaServerBackend, smollm2: Path
) -> None:
    assert managed.info.runner == "llama-server"
    assert managed.info.identity == sha256_of(smollm2)
    assert managed.n_ctx == 1024 and managed.concurrency == 2
    assert managed.info.settings["build"] and managed.info.settings["slots"] == 2
    assert managed.info.settings["server"].startswith("sha256:")


def test_prompts_are_the_in_process_runners_token_ids(
    managed: LlamaServerBackend, smollm2: Path
) -> None:
    from llama_cpp import Llama

    prompt = "Question: what is 2 + 2?<|im_end|>\nAnswer:"
    vocab = Llama(str(smollm2), vocab_only=True, verbose=False)
    expected = vocab.tokenize(prompt.encode(), add_bos=vocab.metadata.get(
        "tokenizer.ggml.add_bos_token", "false") == "true", special=True)  # fmt: skip
    assert managed.tokenize(prompt) == expected
    (result,) = managed.generate([GenRequest(prompt=prompt, max_tokens=1)])
    assert result.n_prompt_tokens == len(expected)


def test_generation_returns_the_tokens_requested(managed: LlamaServerBackend) -> None:
    requests = [
        GenRequest(prompt=f"Count {i}:", max_tokens=n, grammar=ENDLESS_A)
        for i, n in enumerate((1, 7, 16, 33))
    ]
    results = managed.generate(requests)
    assert [r.n_tokens for r in results] == [1, 7, 16, 33]
    assert all(r.finish_reason == "length" and set(r.text) == {"a"} for r in results)


def test_generation_stops_at_the_first_stop_string(managed: LlamaServerBackend) -> None:
    grammar = 'root ::= "one two three. four five." [a-z ]*'
    request = GenRequest(prompt="Say:", max_tokens=40, stop=("five", "three."), grammar=grammar)
    (result,) = managed.generate([request])
    assert (result.text, result.finish_reason) == ("one two ", "stop")


def test_a_thinking_model_stops_only_in_its_answer(managed: LlamaServerBackend) -> None:
    thought = "a. b"
    grammar = f'root ::= "<think>{thought}</think>It is 4. Then" [a-z ]*'
    request = GenRequest(prompt="Q:", max_tokens=60, stop=(".",), grammar=grammar)
    (result,) = ThinkingBackend(managed, thinking_format("think")).generate([request])
    assert result.text == "It is 4" and result.finish_reason == "stop"
    assert result.thinking is not None
    assert result.thinking["sha256"] == hashlib.sha256(thought.encode()).hexdigest()


def test_chat_is_rendered_as_in_process(managed: LlamaServerBackend, smollm2: Path) -> None:
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    messages = (("system", "Be brief."), ("user", "Hi"), ("assistant", "The answer is"))
    local = LlamaCppBackend(smollm2, n_ctx=512, n_threads=THREADS)
    try:
        for start in (True, False):
            expected = local.apply_chat_template(messages, start)
            assert managed.apply_chat_template(messages, start) == expected
    finally:
        local.close()


def test_loglikelihood_is_refused_in_one_sentence(managed: LlamaServerBackend) -> None:
    with pytest.raises(NotSupported, match=r"runner: llama-cpp$"):
        managed.loglikelihood([LoglikRequest("The sky is", " blue")])


def test_an_attached_server_is_identified_by_what_it_exposes(
    managed: LlamaServerBackend, smollm2: Path
) -> None:
    assert managed.client is not None
    url = managed.client.base_url
    with LlamaServerBackend(f"{url}/v1") as first, LlamaServerBackend(url) as second:
        assert first.info.identity == second.info.identity
        assert str(smollm2) in first.info.identity and managed.build in first.info.identity
        assert first.concurrency == 2  # the server's slots
        request = GenRequest(prompt="x", max_tokens=3, grammar=ENDLESS_A)
        assert first.generate([request])[0].n_tokens == 3
    named = openai_identity(f"{url}/v1", "any-name")  # one model, served under any name
    assert named == openai_identity(f"{url}/v1", "any-name") and '"n_params"' in named


def test_a_wrong_binary_is_named_with_its_last_lines(smollm2: Path, tmp_path: Path) -> None:
    launch = ServerLaunch(smollm2, server_bin=sys.executable, start_timeout_s=60)
    with pytest.raises(BackendError) as caught:
        LlamaServerBackend(launch)
    message = str(caught.value)
    assert "llama-server exited (2) while waiting for http://127.0.0.1:" in message
    assert "--model" in message  # python's own complaint about the arguments


def test_a_server_that_never_answers_times_out_saying_what_it_waited_for(
    smollm2: Path, tmp_path: Path
) -> None:
    silent = tmp_path / "silent-server"
    silent.write_text("#!/bin/sh\necho starting up\nexec sleep 300\n")
    silent.chmod(0o755)
    launch = ServerLaunch(smollm2, server_bin=str(silent), start_timeout_s=2)
    with pytest.raises(BackendTimeout) as caught:
        LlamaServerBackend(launch)
    message = str(caught.value)
    assert "was not ready after 2 s of waiting for http://127.0.0.1:" in message
    assert f"/health to answer 200 (SmolLM2-135M-Instruct.Q4_1.gguf loaded by {silent})" in message
    assert "starting up" in message


def test_a_model_it_cannot_load_is_named_with_the_servers_words(
    server_bin: str, smollm2: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(smollm2.read_bytes()[: 1 << 20])  # a GGUF cut off after 1 MiB
    launch = ServerLaunch(broken, server_bin=server_bin, threads=THREADS, start_timeout_s=120)
    with pytest.raises(BackendError) as caught:
        LlamaServerBackend(launch)
    message = str(caught.value)
    assert (
        "llama-server exited (1) while waiting for" in message
        and f"(broken.gguf loaded by {server_bin})" in message
    )
    assert "load" in message.split("its last lines:", 1)[1]


OWNER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from ggufbench.backends.llama_server import LlamaServerBackend, ServerLaunch
    launch = ServerLaunch(Path(sys.argv[1]), server_bin=sys.argv[2], n_ctx=512, threads=1)
    backend = LlamaServerBackend(launch)
    print(backend.server.pid, flush=True)
    time.sleep(300)
    """
)


def test_kill_9_of_the_owning_process_leaves_no_server(server_bin: str, smollm2: Path) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(smollm2), server_bin],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ),
    )
    try:
        assert owner.stdout is not None
        pid = int(owner.stdout.readline())
        assert not process_gone(pid, 0.5)
        owner.kill()
        owner.wait()
        assert process_gone(pid, 5.0)
    finally:
        owner.kill()
        owner.wait()
