"""The gateway on a real uvicorn server with SmolLM2 run in-process.

Two real backends behind the gateway's in-process model:

- ``forced``: llama-cpp-python's own generator with a GBNF grammar that admits only
  ``<think-task>Task: …</think-task><think-safety>Safety: …</think-safety>
  <think-policy>Policy: …</think-policy><final>…</final>``. The model chooses every
  free character, so its thinking is real, but that it thinks, in which sections,
  and that it answers is forced on every CPU. No ``:`` is allowed in the free text,
  so no section (each holds its label's ``:``) can show up inside an answer.
- ``engine``: ggufbench's own backend, unconstrained. What it says depends on the
  CPU's kernels, so only the agreement between the gateway and the same backend
  run directly is checked, never what it says.

The gateway's answer and audited hashes must equal what the same backend generates
directly, parsed by the shared parser, and the thinking must reach no client, log
or audit database byte.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from served_gateway import audit_rows, serve_app

from ggufbench.backends._base import GenRequest
from ggufbench.gateway import ApiKeys, GatewaySettings, create_app, verify
from ggufbench.gateway._commit import commitment, key_file
from ggufbench.gateway._local import LocalModel
from ggufbench.gateway._settings import WITHHELD_MESSAGE
from ggufbench.testmodels import smollm2_path
from ggufbench.thinking import Parsed, parse, thinking_format

KEY = "smollm2-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
QUERY = "How many legs does a spider have? Think first, then answer."
QUAD = thinking_format("quad")
LABELS = {"think-task": "Task: ", "think-safety": "Safety: ", "think-policy": "Policy: "}
QUAD_GRAMMAR = (
    "root ::= "
    + " ".join(f'"<{tag}>{label}" free "</{tag}>"' for tag, label in LABELS.items())
    + ' "<final>" answer "</final>"\n'
    + "free ::= [^<:]{8,32}\n"
    + "answer ::= [^<: \\t\\n] [^<:]{0,24}\n"
)
# The grammar admits 241 characters at most, so every forced output is complete.
MAX_TOKENS = {"forced": 256, "engine": 64}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class GrammarBackend:
    """SmolLM2 on llama-cpp-python's ``Llama``, every output held to ``grammar``.

    The parts of the backend contract the gateway's in-process model uses: chat
    messages in, text pieces out, the finish reason and token counts after.
    """

    def __init__(self, path: Path, grammar: str) -> None:
        from llama_cpp import Llama, LlamaGrammar
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        # one thread: a busy machine slows waiting threads far more than it slows one
        self.llm = Llama(str(path), n_ctx=1024, n_threads=1, n_threads_batch=1, verbose=False)
        self.grammar = LlamaGrammar.from_string(grammar)
        special = [self.llm.token_eos(), self.llm.token_bos()]
        eos, bos = (self.llm.detokenize([t], special=True).decode() for t in special)
        template = self.llm.metadata["tokenizer.chat_template"]
        self.formatter = Jinja2ChatFormatter(template, eos, bos)
        self.last_finish_reason = "stop"
        self.last_n_tokens = 0

    def apply_chat_template(self, messages: Sequence[tuple[str, str]]) -> str:
        msgs: Any = [{"role": role, "content": content} for role, content in messages]
        return self.formatter(messages=msgs).prompt

    def tokenize(self, text: str, *, add_bos: bool = False) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=add_bos, special=True)

    def stream(self, request: GenRequest) -> Iterator[str]:
        prompt = self.tokenize(self.apply_chat_template(request.messages))
        # Forget the previous prompt: every generation decodes its whole prompt the same
        # way, so the same request gives the same text on this machine.
        self.llm.reset()
        chunks: Any = self.llm.create_completion(
            prompt,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            seed=request.seed,
            grammar=self.grammar,
            stream=True,
        )
        text = ""
        for chunk in chunks:
            choice = chunk["choices"][0]
            text += choice["text"]
            if choice["text"]:
                yield choice["text"]
            if choice["finish_reason"]:
                self.last_finish_reason = choice["finish_reason"]
        self.last_n_tokens = len(self.tokenize(text))

    def close(self) -> None:
        self.llm.close()


def load(kind: str) -> Any:
    path = smollm2_path()
    if kind == "forced":
        return GrammarBackend(path, QUAD_GRAMMAR)
    from ggufbench.backends.llama_cpp import LlamaCppBackend

    return LlamaCppBackend(path, n_ctx=1024, n_threads=2)


@dataclass(frozen=True)
class Served:
    kind: str
    max_tokens: int
    url: str
    db: Path
    text: str  # what the backend generates for QUERY without the gateway
    parsed: Parsed

    @property
    def secrets(self) -> list[str]:
        """The thinking as emitted, where the grammar makes its sections certain."""
        if self.kind != "forced":
            return []
        inner = [m[1] for m in re.findall(r"<(think-\w+)>([^<]*)</\1>", self.text)]
        assert [sha(i) for i in inner] == [s.sha256 for s in self.parsed.sections]
        return inner


def direct(backend: Any, max_tokens: int) -> tuple[str, Parsed]:
    """What the backend generates for QUERY without the gateway, and its parse."""
    request = GenRequest(messages=(("user", QUERY),), max_tokens=max_tokens, temperature=0.0)
    text = "".join(backend.stream(request))
    return text, parse(text, QUAD, truncated=backend.last_finish_reason == "length")


@pytest.fixture(scope="module", params=["forced", "engine"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    kind, max_tokens = request.param, MAX_TOKENS[request.param]
    backend = load(kind)
    text, parsed = direct(backend, max_tokens)
    model = LocalModel(backend, identity=f"test {smollm2_path().name}", name="smollm2")
    db = tmp_path_factory.mktemp("smol") / "audit.sqlite"
    settings = GatewaySettings(
        model_path=Path("unused.gguf"), system_prompt="", audit_db=db, rate_limit_per_minute=0
    )
    app = create_app(settings, model=model, keys=ApiKeys([KEY]))
    app_server = serve_app(app)
    yield Served(kind, max_tokens, app_server.url, db, text, parsed)
    app_server.stop()
    backend.close()


def assert_hidden(secrets: list[str], *places: str | bytes) -> None:
    for secret in secrets:
        for place in places:
            data = place if isinstance(place, bytes) else place.encode()
            assert secret.encode() not in data


def db_bytes(db: Path) -> bytes:
    return b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))


@pytest.fixture(autouse=True)
def _capture_all_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")


@pytest.mark.parametrize("served", ["forced"], indirect=True)
def test_the_model_really_thinks(served: Served) -> None:
    parsed = served.parsed
    assert [s.name for s in parsed.sections] == list(LABELS)
    assert all(s.closed and s.length > len(LABELS[s.name]) for s in parsed.sections)
    assert parsed.answer and parsed.withheld_reason is None
    assert len(served.secrets) == 3


def shown(parsed: Parsed) -> str:
    """What a client is shown for an output: its answer, else the withheld message."""
    return parsed.answer if parsed.answer is not None else WITHHELD_MESSAGE


def audited(served: Served, extension: dict[str, Any]) -> dict[str, Any]:
    """The request's audit row: the plain hashes of the direct generation; the client
    got the row's keyed commitment to them and never the plain hash."""
    expected = served.parsed
    (row,) = [r for r in audit_rows(served.db) if r["request_id"] == extension["request_id"]]
    assert row["thinking_sha256"] == expected.thinking_sha256
    assert [s["sha256"] for s in row["sections"]] == [s.sha256 for s in expected.sections]
    assert row["model"] == "test SmolLM2-135M-Instruct.Q4_1.gguf"
    key = key_file(served.db).read_bytes()
    assert extension["thinking_commitment"] == row["commitment"]
    assert row["commitment"] == commitment(key, row["request_id"], expected.thinking_sha256)
    return row


def test_think_route_matches_direct_generation(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    expected = served.parsed
    body = {"user_id": "smol", "query": QUERY, "temperature": 0}
    body["max_new_tokens"] = served.max_tokens
    resp = httpx.post(f"{served.url}/think", json=body, headers=AUTH, timeout=300)
    assert resp.status_code == 200
    data = resp.json()
    assert data["status"] == ("answered" if expected.answer is not None else "withheld")
    assert data["answer"] == shown(expected)
    audited(served, data)
    assert_hidden([*served.secrets, expected.thinking_sha256], resp.content)
    assert_hidden(served.secrets, caplog.text, db_bytes(served.db))


def test_chat_stream_matches_direct_generation(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    expected = served.parsed
    body = {
        "messages": [{"role": "user", "content": QUERY}],
        "temperature": 0,
        "max_tokens": served.max_tokens,
        "stream": True,
    }
    resp = httpx.post(f"{served.url}/v1/chat/completions", json=body, headers=AUTH, timeout=300)
    assert resp.status_code == 200
    events = [json.loads(x[6:]) for x in resp.text.splitlines() if x.startswith("data: {")]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
    assert content == shown(expected)
    usage = events[-1]["usage"]
    assert usage["completion_tokens"] > 0 and usage["prompt_tokens"] > 0
    audited(served, events[-1]["ggufbench"])
    assert_hidden([*served.secrets, expected.thinking_sha256], resp.content)
    assert_hidden(served.secrets, caplog.text, db_bytes(served.db))


def test_concurrent_requests_share_one_model(served: Served) -> None:
    before = len(audit_rows(served.db))

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=served.url, headers=AUTH, timeout=600) as client:
            body = {"user_id": "u", "query": QUERY, "temperature": 0}
            body["max_new_tokens"] = served.max_tokens
            return await asyncio.gather(*(client.post("/think", json=body) for _ in range(3)))

    responses = asyncio.run(burst())
    assert [r.status_code for r in responses] == [200] * 3
    # greedy and one generation at a time: every answer and thinking is the same
    assert {r.json()["answer"] for r in responses} == {shown(served.parsed)}
    ids = {r.json()["request_id"] for r in responses}
    assert {r["thinking_sha256"] for r in audit_rows(served.db) if r["request_id"] in ids} == {
        served.parsed.thinking_sha256
    }
    assert len(audit_rows(served.db)) == before + 3
    assert verify(served.db).rows == before + 3
