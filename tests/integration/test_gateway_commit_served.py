"""The keyed commitment end to end: responses, restarts, the key variable, the CLI.

Uses the scripted fake upstream and the in-process gateway of ``test_gateway``;
the thinking hashes are computed here from the scripts, never taken from the
gateway.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_gateway import (
    AUTH,
    CASES,
    KEY,
    Gateway,
    assert_no_plain_hash,
    assert_no_thinking,
    check_audit,
    expected_commitment,
    head_bytes,
    serve_upstream,
    sha,
    start_gateway,
    thinking_hashes,
)

from ggufbench.backends._server_process import free_port
from ggufbench.gateway import key_file, verify

COMMIT_KEY = bytes(range(100, 132))

upstream = pytest.fixture(scope="module", name="upstream")(serve_upstream)


def ask(gw: Gateway, name: str) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": f"case:{name}"}]}
    return httpx.post(f"{gw.url}/v1/chat/completions", json=body, headers=AUTH, timeout=10)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Gateway]:
    gw = start_gateway(tmp_path_factory.mktemp("gwc"), upstream)
    yield gw
    gw.stop()


@pytest.mark.parametrize("name", sorted(CASES))
def test_chat_not_streamed_gives_no_plain_hash(gateway: Gateway, name: str) -> None:
    resp = ask(gateway, name)
    assert resp.status_code == 200
    extension = resp.json()["ggufbench"]
    assert set(extension) == {"request_id", "status", "thinking_commitment"}
    check_audit(gateway, extension, CASES[name])
    assert_no_plain_hash(thinking_hashes(CASES[name].sections), resp.content, head_bytes(resp))


def test_the_key_file_is_private_and_kept_across_restarts(tmp_path: Path, upstream: str) -> None:
    seen = []
    for _ in range(2):
        gw = start_gateway(tmp_path, upstream)
        try:
            seen.append((key_file(gw.db).read_bytes(), ask(gw, "split").json()["ggufbench"]))
        finally:
            gw.stop()
    assert seen[0][0] == seen[1][0] and len(seen[0][0]) == 32
    assert stat.S_IMODE(key_file(gw.db).stat().st_mode) == 0o600
    assert [e["thinking_commitment"] for _, e in seen] == [r["commitment"] for r in gw.rows()]
    whole = sha("\n".join(inner for _, inner in CASES["split"].sections))
    for _, extension in seen:
        commitment = expected_commitment(gw, extension["request_id"], whole)
        assert extension["thinking_commitment"] == commitment
    assert verify(gw.db).commitments == 2


def test_the_key_from_an_env_variable(
    tmp_path: Path,
    upstream: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GW_COMMIT_KEY", COMMIT_KEY.hex())
    gw = start_gateway(tmp_path, upstream, commitment_key_env="GW_COMMIT_KEY")
    try:
        extension = ask(gw, "case").json()["ggufbench"]
    finally:
        gw.stop()
    assert not key_file(gw.db).exists()
    text = f"ggufbench-thinking-commitment-v1\n{extension['request_id']}\n{sha('ZQX pol')}"
    mac = hmac.new(COMMIT_KEY, text.encode(), hashlib.sha256).hexdigest()
    assert extension["thinking_commitment"] == mac
    assert verify(gw.db, key=COMMIT_KEY).commitments == 1
    ok = _cli("audit", "verify", str(gw.db), "--commitment-key-env", "GW_COMMIT_KEY")
    assert ok.returncode == 0 and "1 commitments checked" in ok.stdout


def test_a_refusal_carries_its_commitment(tmp_path: Path, upstream: str) -> None:
    gw = start_gateway(tmp_path, upstream, rate_limit_per_minute=2, audit_store_query=True)
    try:
        codes = [
            httpx.post(f"{gw.url}/think", json={"user_id": "u", "query": "q"}, headers=AUTH)
            for _ in range(3)
        ]
        assert [r.status_code for r in codes] == [200, 200, 429]
        assert int(codes[2].headers["retry-after"]) >= 1
        assert [(r["status"], r["query"]) for r in gw.rows()] == [
            ("answered", "q"),
            ("answered", "q"),
            ("refused", "q"),
        ]
        rid = codes[2].headers["x-request-id"]
        extension = {
            "request_id": rid,
            "thinking_commitment": expected_commitment(gw, rid, sha("")),
        }
        assert codes[2].json()["ggufbench"] == extension
    finally:
        gw.stop()
    assert verify(gw.db).rows == 3


# --- as a new user starts it -------------------------------------------------------


CLI = (sys.executable, "-c", "from ggufbench.cli import main; main()")


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=60)


def test_serve_command_end_to_end(tmp_path: Path, upstream: str) -> None:
    db, port = tmp_path / "served.sqlite", free_port()
    env = {**os.environ, "GW_TEST_KEY": KEY}
    args = ["serve", "--base-url", upstream, "--upstream-model", "scripted", "--port", str(port)]
    args += ["--api-key-env", "GW_TEST_KEY", "--audit-db", str(db)]
    proc = subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.post(f"{url}/think", json={"user_id": "u", "query": "q"}).status_code == 401
        body = {"user_id": "u", "query": "case:literal_final"}
        resp = httpx.post(f"{url}/think", json=body, headers=AUTH, timeout=10)
        assert resp.json()["answer"] == "real"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=20)
    assert b"Uvicorn running on http://127.0.0.1:" in output
    assert_no_thinking(resp.content, output, db.read_bytes())
    assert stat.S_IMODE(key_file(db).stat().st_mode) == 0o600
    verified = _cli("audit", "verify", str(db))
    assert verified.returncode == 0 and "1 rows intact, 1 commitments checked" in verified.stdout
    shown = resp.json()["thinking_commitment"]
    exported = _cli("audit", "export", str(db), "--commitment", shown)
    row = json.loads(exported.stdout)
    assert (row["request_id"], row["status"]) == (resp.json()["request_id"], "answered")
    assert row["thinking_sha256"] == sha("ZQX says <final>ZQX leak</final> ZQX")


def test_serve_refuses_to_start_without_a_key(tmp_path: Path, upstream: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "GGUFBENCH_API_KEY"}
    result = _cli("serve", "--base-url", upstream, "--upstream-model", "m", env=env)
    assert result.returncode == 2 and "GGUFBENCH_API_KEY holds no API key" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("problem", ["unset variable", "short key file"])
def test_serve_refuses_a_bad_commitment_key(tmp_path: Path, upstream: str, problem: str) -> None:
    db = tmp_path / "audit.sqlite"
    args = ["serve", "--base-url", upstream, "--upstream-model", "m", "--audit-db", str(db)]
    env = {**os.environ, "GGUFBENCH_API_KEY": KEY, "COLUMNS": "300"}
    env.pop("GW_UNSET_KEY", None)
    if problem == "unset variable":
        args += ["--commitment-key-env", "GW_UNSET_KEY"]
        expected = "the variable GW_UNSET_KEY given to --commitment-key-env is not set"
    else:
        key_file(db).write_bytes(b"short")
        expected = "holds 5 bytes instead of 32"
    result = _cli(*args, env=env)
    assert result.returncode == 2 and expected in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not db.exists()  # refused before the audit log was touched
