"""A managed llama-server that never gets healthy is its job's error, in one sentence that
says what was awaited and what the server said, while the other models finish: a
program that is not llama-server (/bin/true as server_bin), and a model file the real
server cannot load (a GGUF whose architecture is one llama.cpp does not know; preflight
reads it as a valid file)."""

from __future__ import annotations

from pathlib import Path

from conftest import ggufbench, summary_of, write_suite


def unknown_architecture(smollm2: Path, to: Path) -> Path:
    """SmolLM2 with its general.architecture renamed from 'llama' to 'llamx'."""
    data = bytearray(smollm2.read_bytes())
    key = b"general.architecture"
    at = data.index(b"llama", data.index(key) + len(key))
    data[at : at + 5] = b"llamx"
    to.write_bytes(bytes(data))
    return to


def test_servers_that_never_get_healthy_fail_their_jobs_only(
    tmp_path: Path, smollm2: Path, server_bin: str, tasks_dir: Path
) -> None:
    broken = unknown_architecture(smollm2, tmp_path / "unknown-arch.gguf")
    suite = write_suite(
        tmp_path,
        f"""name: failures
models:
  - {{alias: fine, path: {smollm2}}}
  - {{alias: not_a_server, runner: llama-server, path: {smollm2}, server_bin: /bin/true}}
  - {{alias: unloadable, runner: llama-server, path: {broken}, server_bin: {server_bin}}}
defaults: {{n_ctx: 512, threads: 1}}
benchmarks:
  - lm_eval: {{tasks: [demo_gsm8k_cot], limit: 2, include_path: {tasks_dir}}}
execution: {{retries: 0}}
""",
    )
    done = ggufbench("run", str(suite))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout
    models = summary_of(tmp_path / "runs")[1]["models"]
    job = "demo_gsm8k_cot"
    assert models["fine"]["benchmarks"][job]["status"] == "done"

    not_a_server = models["not_a_server"]["benchmarks"][job]
    assert not_a_server["status"] == "failed"
    assert not_a_server["error"].startswith("llama-server exited (0) while waiting for http://")
    awaited = "/health to answer 200 (SmolLM2-135M-Instruct.Q4_1.gguf loaded by /bin/true)"
    assert awaited in not_a_server["error"]

    unloadable = models["unloadable"]["benchmarks"][job]
    assert unloadable["status"] == "failed"
    error = unloadable["error"]
    assert "while waiting for" in error and f"(unknown-arch.gguf loaded by {server_bin})" in error
    assert "llamx" in error.split("its last lines:", 1)[1]  # the server's own words
    assert "\n" not in error
